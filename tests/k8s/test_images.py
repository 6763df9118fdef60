"""Dockerfile.cp and Dockerfile.proxy: hadolint, and their install steps replayed in a fresh virtualenv.

No Docker engine runs here, so the install test repeats what the Dockerfiles do with the same
requirement specs read from them: build each image's project wheel from the same files its builder
stage copies (``pip wheel``), resolve its runtime install (``pip install --find-links``) in a new
virtualenv with ``--dry-run --report`` under the versions of requirements/lock.txt, and install the
project wheel itself (``--no-deps``).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).with_name("hadolint")
DOCKERFILES = {"cp": ROOT / "Dockerfile.cp", "proxy": ROOT / "Dockerfile.proxy"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
WHEEL_SPEC = re.compile(r'pip wheel --no-deps --wheel-dir /wheels "([^"]+)"')
INSTALL_SPEC = re.compile(r'pip install --no-index --find-links /wheels "([^"=]+)==\$\{SESAME_VERSION\}"')
LOCK = ROOT / "requirements" / "lock.txt"
LOCK_STEP = "pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements/lock.txt"
DIGEST = re.compile(r"^ARG PYTHON_IMAGE=(python:3\.11-slim-bookworm)@sha256:([0-9a-f]{64})$", re.MULTILINE)
# What each image installs on top of the base dependencies, and what it must never carry.
EXTRAS = {"cp": "[controlplane,postgres]", "proxy": "[proxy]"}
PACKAGES = {"cp": "controlplane", "proxy": "proxy"}


def hadolint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HADOLINT), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def stages(dockerfile: Path) -> list[str]:
    return re.split(r"^FROM ", dockerfile.read_text(), flags=re.MULTILINE)[1:]


def test_dockerfiles_are_hadolint_clean():
    proc = hadolint(*DOCKERFILES.values())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_hadolint_flags_a_careless_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install gcc\nRUN pip install requests\n"
    )
    proc = hadolint(bad)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3015"):
        assert rule in proc.stdout


@pytest.mark.parametrize(("image", "uid"), [("cp", "10001"), ("proxy", "16001")])
def test_images_are_multi_stage_slim_non_root_and_versioned(image: str, uid: str):
    text = DOCKERFILES[image].read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert f"ARG SESAME_VERSION={VERSION}\n" in text, "the image's version must follow pyproject.toml"
    builder, final = stages(DOCKERFILES[image])
    assert builder.startswith("${PYTHON_IMAGE} AS builder")
    assert WHEEL_SPEC.search(builder).group(1) == "."
    assert INSTALL_SPEC.search(final).group(1) == f"sesame{EXTRAS[image]}"
    assert re.findall(r"^USER (\S+)", final, flags=re.MULTILINE) == [f"{uid}:{uid}"]
    for compiler in ("gcc", "build-essential", "g++", "python3-dev"):
        assert compiler not in final
    if image == "proxy":
        assert "iptables nftables" in final  # the init container installs REDIRECT rules
    else:
        instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        assert "mitmproxy" not in instructions and "iptables" not in instructions


def test_base_images_are_pinned_by_digest_and_the_same_in_both():
    pins = {image: DIGEST.findall(path.read_text()) for image, path in DOCKERFILES.items()}
    assert all(len(found) == 1 for found in pins.values()), pins
    assert pins["cp"] == pins["proxy"]


@pytest.mark.parametrize("image", ["cp", "proxy"])
def test_builders_take_every_dependency_from_the_hashed_lock_and_copy_only_their_package(image: str):
    builder, _ = stages(DOCKERFILES[image])
    lock_at = builder.index(LOCK_STEP)
    assert "COPY requirements/lock.txt requirements/lock.txt" in builder[:lock_at]
    copied = {line.split()[0] for line in re.findall(r"^COPY (.+)$", builder, flags=re.MULTILINE)}
    # each image's own package, and the standard-library SigV4 signer both share
    assert copied == {"requirements/lock.txt", "pyproject.toml", f"{PACKAGES[image]}/", "sesame_sigv4/"}
    assert builder.index(WHEEL_SPEC.search(builder).group(0)) > lock_at  # the project itself: --no-deps


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name → (version, sha256 hashes) of requirements/lock.txt."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", LOCK.read_text()):
        head = re.match(r"([a-z0-9][a-z0-9._-]*)==([^\s;\\]+)", block)
        if head:
            pins[re.sub(r"[-_.]+", "-", head.group(1))] = (
                head.group(2),
                re.findall(r"--hash=sha256:(\w{64})", block),
            )
    return pins


def test_lock_pins_every_package_with_hashes():
    pins = _lock()
    assert len(pins) > 30
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash"
    for needed in ("mitmproxy", "cryptography", "aiohttp", "kubernetes", "asyncpg", "uvloop"):
        assert needed in pins


def _import_roots(package: str) -> set[str]:
    roots = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots - set(sys.stdlib_module_names) - {"__future__"}


def test_the_proxy_imports_only_the_base_dependencies_and_its_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["proxy"]]
    names = {re.match(r"[A-Za-z0-9_-]+", d).group(0).lower() for d in declared}
    # sesame_sigv4: the standard-library SigV4 signer both images ship (it imports nothing else)
    assert _import_roots("proxy") <= {"proxy", *names, "certifi", "sesame_sigv4"}  # certifi: mitmproxy's
    assert "controlplane" not in _import_roots("proxy") and "kubernetes" not in names
    assert "proxy" not in _import_roots("controlplane")
    assert _import_roots("sesame_sigv4") == set()


@pytest.fixture(scope="module")
def project_wheels(tmp_path_factory) -> dict[str, Path]:
    """Each builder stage's project wheel, built from exactly the files it COPYs."""
    return {image: _wheel(image, tmp_path_factory) for image in DOCKERFILES}


def _wheel(image: str, tmp_path_factory) -> Path:
    src, wheels = tmp_path_factory.mktemp(f"src-{image}"), tmp_path_factory.mktemp(f"wheels-{image}")
    builder = stages(DOCKERFILES[image])[0]
    for line in re.findall(r"^COPY (.+)$", builder, flags=re.MULTILINE):
        *sources, dest = line.split()
        for source in sources:
            path, target = ROOT / source.rstrip("/"), src / dest.rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, target if not dest.endswith("/") and dest != "./" else src / path.name)
    spec = WHEEL_SPEC.search(builder).group(1)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), spec],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = wheels.glob("sesame-*.whl")
    return wheel


def _dry_run(venv: Path, wheel: Path, requirement: str, report: Path, constraints: Path):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--report",
            str(report),
            "--find-links",
            str(wheel.parent),
            "--constraint",
            str(constraints),
            requirement,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


CONTROL_PLANE_ONLY = ("aiohttp", "aiosqlite", "pyjwt", "kubernetes", "prometheus-client", "asyncpg")


@pytest.mark.slow
def test_runtime_install_steps_resolve_in_a_fresh_virtualenv(project_wheels: dict[str, Path], tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    pins = _lock()
    constraints = tmp_path / "constraints.txt"  # the lock's versions (pip ignores hashes in constraints)
    constraints.write_text("".join(f"{name}=={version}\n" for name, (version, _) in pins.items()))
    requirements = {
        image: f"{INSTALL_SPEC.search(stages(path)[1]).group(1)}=={VERSION}"
        for image, path in DOCKERFILES.items()
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {
            image: pool.submit(
                _dry_run, venv, project_wheels[image], req, tmp_path / f"{image}.json", constraints
            )
            for image, req in requirements.items()
        }
        results = {image: future.result() for image, future in runs.items()}
    installed: dict[str, dict[str, str]] = {}
    for image, proc in results.items():
        assert proc.returncode == 0, f"{image}: {proc.stderr[-3000:]}"
        report = json.loads((tmp_path / f"{image}.json").read_text())
        installed[image] = {
            re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"]
            for i in report["install"]
        }
        assert installed[image].pop("sesame") == VERSION
        for name, version in installed[image].items():
            assert pins.get(name, (None,))[0] == version, f"{image}: {name}=={version} is not the locked one"
        for dep in ("cryptography", "cachetools", "uvloop"):
            assert dep in installed[image], f"{image} image lacks {dep}"
    assert "mitmproxy" in installed["proxy"]
    assert "mitmproxy" not in installed["cp"], "the control plane image must not carry mitmproxy"
    for dep in CONTROL_PLANE_ONLY:
        assert dep in installed["cp"], f"the control plane image lacks {dep}"
        assert dep not in installed["proxy"], f"the proxy image must not carry {dep}"

    for image, wheel in project_wheels.items():
        target = tmp_path / f"{image}-venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "--no-deps",
             "--quiet", str(wheel)],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        site = next((target / "lib").glob("python3*/site-packages"))
        assert (site / PACKAGES[image] / "__init__.py").is_file()
        other = "controlplane" if image == "proxy" else "proxy"
        assert not (site / other).exists(), f"the {image} image must not carry {other}/"
    site = next((tmp_path / "proxy-venv" / "lib").glob("python3*/site-packages"))
    for module in ("proxy/netfilter.py", "proxy/init_container.py", "proxy/main.py", "proxy/tls.py"):
        assert (site / module).is_file(), module
    site = next((tmp_path / "cp-venv" / "lib").glob("python3*/site-packages"))
    for module in ("controlplane/injector.py", "controlplane/api/admission.py", "controlplane/main.py",
                   "controlplane/k8s_bootstrap.py"):  # fmt: skip
        assert (site / module).is_file(), module
    # The scripts whose code is not in an image are removed by its Dockerfile.
    proxy_final, cp_final = stages(DOCKERFILES["proxy"])[1], stages(DOCKERFILES["cp"])[1]
    for script in ("sesame-controlplane", "sesamectl", "sesame-k8s-bootstrap"):
        assert f"/usr/local/bin/{script}" in proxy_final
    assert "rm -f /usr/local/bin/sesame-proxy" in cp_final


def _download_hashed(requirements: Path, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "--require-hashes", "--no-deps", "--quiet", "--dest",
         str(dest), "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_lock_hashes_match_what_the_index_serves(tmp_path):
    """pip's hash-checking mode accepts a locked package (the builders run the same mode on all)."""
    version, _ = _lock()["cachetools"]
    block = next(b for b in re.split(r"\n(?=[a-z0-9])", LOCK.read_text()) if b.startswith("cachetools=="))
    (tmp_path / "one.txt").write_text(block + "\n")
    proc = _download_hashed(tmp_path / "one.txt", tmp_path / "dl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [downloaded] = (tmp_path / "dl").iterdir()
    assert downloaded.name.startswith(f"cachetools-{version}")
    tampered = re.sub(r"--hash=sha256:\w{64}", "--hash=sha256:" + "0" * 64, block)
    (tmp_path / "bad.txt").write_text(tampered + "\n")
    proc = _download_hashed(tmp_path / "bad.txt", tmp_path / "dl2")
    assert proc.returncode != 0 and "HASHES" in proc.stderr.upper()
