# Sesame — developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint demo bench clean lock

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: $(BIN)/.installed lint
	$(BIN)/pytest -q

demo: $(BIN)/.installed
	$(BIN)/python -m devkit.demo

# Benchmarks report ratios against a reference measured in the same run; they assert nothing.
bench: $(BIN)/.installed
	$(BIN)/python -m bench.controlplane_pages
	$(BIN)/python -m bench.token_exchange
	$(BIN)/python -m bench.proxy_throughput

# requirements/lock.txt: every dependency of both images, pinned with hashes (Dockerfile.proxy and
# Dockerfile.cp install only from it). Regenerate after changing dependencies in pyproject.toml.
lock: $(BIN)/.installed
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile -q --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--extra controlplane --extra proxy --extra postgres --no-header -o requirements/lock.txt pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
