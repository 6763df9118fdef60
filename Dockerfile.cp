# syntax=docker/dockerfile:1.7
# Sesame control plane (`sesame-controlplane serve`) and the chart's bootstrap Job
# (`sesame-k8s-bootstrap`). The control-plane package with the `controlplane` and `postgres` extras
# (asyncpg, for SESAME_DB=postgresql://...); no proxy code, no mitmproxy.
# The base image is pinned by digest (refresh: docker buildx imagetools inspect python:3.11-slim-bookworm).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
# Must equal [project] version in pyproject.toml (tests/k8s/test_images.py checks it).
ARG SESAME_VERSION=0.1.0

# --- builder: every dependency as a wheel, each checked against requirements/lock.txt's hashes
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/lock.txt requirements/lock.txt
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements/lock.txt
COPY pyproject.toml README.md ./
COPY controlplane/ controlplane/
COPY sesame_sigv4/ sesame_sigv4/
RUN pip wheel --no-deps --wheel-dir /wheels "."

# --- runtime: install the wheels only, run as an unprivileged user
FROM ${PYTHON_IMAGE}
ARG SESAME_VERSION
LABEL org.opencontainers.image.title="sesame-controlplane" \
      org.opencontainers.image.description="Sesame control plane and admission webhook" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${SESAME_VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SESAME_DB=/var/lib/sesame/sesame.db SESAME_LISTEN=0.0.0.0:8443
# --no-index: only the hash-checked wheels; the proxy's console script has no code here.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "sesame[controlplane,postgres]==${SESAME_VERSION}" \
    && rm -f /usr/local/bin/sesame-proxy \
    && groupadd --system --gid 10001 sesame \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sesame \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/sesame
WORKDIR /var/lib/sesame
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["sesame-controlplane"]
CMD ["serve"]
