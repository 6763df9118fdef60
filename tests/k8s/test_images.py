"""Dockerfile.cp and Dockerfile.proxy: hadolint, and their install steps replayed in a fresh virtualenv.

No Docker engine runs here, so the install test repeats what the Dockerfiles do with the same
requirement specs read from them: build the project wheel from the same files the builder stage
copies (``pip wheel``), resolve the runtime install (``pip install --find-links``) in a new
virtualenv with ``--dry-run --report``, and install the project wheel itself (``--no-deps``).
"""

from __future__ import annotations

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
WHEEL_SPEC = re.compile(r'pip wheel --wheel-dir /wheels "([^"]+)"')
INSTALL_SPEC = re.compile(r'pip install --no-index --find-links /wheels "([^"=]+)==\$\{SESAME_VERSION\}"')


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


@pytest.mark.parametrize(
    ("image", "uid", "extra"), [("cp", "10001", "[postgres]"), ("proxy", "1337", "[proxy]")]
)
def test_images_are_multi_stage_slim_non_root_and_versioned(image: str, uid: str, extra: str):
    text = DOCKERFILES[image].read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert f"ARG SESAME_VERSION={VERSION}\n" in text, "the image's version must follow pyproject.toml"
    builder, final = stages(DOCKERFILES[image])
    assert builder.startswith("${PYTHON_IMAGE} AS builder")
    assert WHEEL_SPEC.search(builder).group(1) == f".{extra}"
    assert INSTALL_SPEC.search(final).group(1) == f"sesame{extra}"
    assert re.findall(r"^USER (\S+)", final, flags=re.MULTILINE) == [f"{uid}:{uid}"]
    for compiler in ("gcc", "build-essential", "g++", "python3-dev"):
        assert compiler not in final
    if image == "proxy":
        assert "iptables nftables" in final  # the init container installs REDIRECT rules
    else:
        instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        assert "mitmproxy" not in instructions and "iptables" not in instructions


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory) -> Path:
    """The builder stage's wheel, built from exactly the files it COPYs."""
    src, wheels = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheels")
    builder = stages(DOCKERFILES["proxy"])[0]
    for line in re.findall(r"^COPY (.+)$", builder, flags=re.MULTILINE):
        *sources, _dest = line.split()
        for source in sources:
            path = ROOT / source.rstrip("/")
            if path.is_dir():
                shutil.copytree(path, src / path.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, src / path.name)
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


def _dry_run(venv: Path, wheel: Path, requirement: str, report: Path) -> subprocess.CompletedProcess:
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
            requirement,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_runtime_install_steps_resolve_in_a_fresh_virtualenv(project_wheel: Path, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    requirements = {
        image: f"{INSTALL_SPEC.search(stages(path)[1]).group(1)}=={VERSION}"
        for image, path in DOCKERFILES.items()
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {
            image: pool.submit(_dry_run, venv, project_wheel, req, tmp_path / f"{image}.json")
            for image, req in requirements.items()
        }
        results = {image: future.result() for image, future in runs.items()}
    installed: dict[str, dict[str, str]] = {}
    for image, proc in results.items():
        assert proc.returncode == 0, f"{image}: {proc.stderr[-3000:]}"
        report = json.loads((tmp_path / f"{image}.json").read_text())
        installed[image] = {
            re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["download_info"]["url"]
            for i in report["install"]
        }
        assert installed[image]["sesame"].endswith(project_wheel.name)
        for dep in ("aiohttp", "aiosqlite", "cryptography", "pyjwt", "kubernetes", "prometheus-client"):
            assert dep in installed[image], f"{image} image lacks {dep}"
    assert "mitmproxy" in installed["proxy"]
    assert "mitmproxy" not in installed["cp"], "the control plane image must not carry mitmproxy"
    assert "asyncpg" in installed["cp"], "the control plane image must speak PostgreSQL (database.type)"

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--quiet",
            str(project_wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for script in ("sesame-proxy", "sesame-controlplane", "sesamectl"):
        assert (venv / "bin" / script).exists(), script
    site = next((venv / "lib").glob("python3*/site-packages"))
    for module in (
        "proxy/netfilter.py",
        "proxy/init_container.py",
        "controlplane/injector.py",
        "controlplane/api/admission.py",
        "controlplane/main.py",
        "proxy/main.py",
    ):
        assert (site / module).is_file(), module
