"""`sesame-proxy init`: flags, control plane exclusion, and a real run inside a network namespace."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.init_container import InitSettings, _parser, control_plane_cidrs, main
from proxy.netfilter import DEFAULT_PROXY_PORT, list_rules
from tests.netfilter_tools import require_netfilter

from .conftest import APP_UID, NetnsPair


def settings_of(argv: list[str], env: dict[str, str] | None = None) -> InitSettings:
    return InitSettings.from_namespace(_parser(env or {}).parse_args(argv))


def test_flags_and_env_build_the_settings():
    settings = settings_of(
        [
            "--mode=transparent",
            "--proxy-port=16001",
            "--exclude-cidrs=10.96.0.10/32, 10.0.0.0/8",
            "--exclude-ports=5432,6379",
            "--ca-dir=/x/ca",
            "--trust-dir=/x/trust",
        ],
        env={"SESAME_PROXY_UID": "4242", "SESAME_NETFILTER_BACKEND": "iptables"},
    )
    assert settings.mode == "transparent" and settings.backend == "iptables"
    assert settings.redirect.proxy_port == 16001 and settings.redirect.proxy_uid == 4242
    assert settings.redirect.exclude_cidrs == ("10.96.0.10/32", "10.0.0.0/8")
    assert settings.redirect.exclude_ports == (5432, 6379)
    assert (settings.ca_dir, settings.trust_dir) == (Path("/x/ca"), Path("/x/trust"))


@pytest.mark.parametrize(
    "argv", [["--mode=magic"], ["--netfilter-backend=pf"], ["--proxy-port=http"], ["--exclude-cidrs=nope"]]
)
def test_bad_flags_exit_2(argv, tmp_path):
    assert main([*argv, f"--ca-dir={tmp_path}/ca", f"--trust-dir={tmp_path}/trust"], env={}) == 2
    assert not (tmp_path / "ca").exists()


def test_control_plane_addresses_are_resolved_to_host_cidrs():
    assert control_plane_cidrs("https://10.96.0.10:443") == ("10.96.0.10/32",)
    assert control_plane_cidrs("https://[fd00::1]:8443") == ("fd00::1/128",)
    resolved = control_plane_cidrs(
        "https://sesame.sesame-system.svc:443",
        resolve=lambda host, port: ["10.96.7.7", "10.96.7.7", "fd00::7"],
    )
    assert resolved == ("10.96.7.7/32", "fd00::7/128")
    assert control_plane_cidrs("") == ()


def test_unresolvable_control_plane_is_skipped_not_fatal(caplog):
    def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    assert control_plane_cidrs("https://nowhere.invalid", resolve=fail) == ()
    assert "cannot resolve control plane host nowhere.invalid" in caplog.text


def test_explicit_mode_creates_the_ca_and_trust_bundles_only(tmp_path):
    ca_dir, trust_dir = tmp_path / "ca", tmp_path / "trust"
    assert (
        main(
            [
                "--mode=explicit",
                f"--ca-dir={ca_dir}",
                f"--trust-dir={trust_dir}",
                "--netfilter-backend=iptables",
            ],
            env={},
        )
        == 0
    )
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "sesame-ca-cert.pem").read_bytes())
    bundle = (trust_dir / "ca-bundle.pem").read_text()
    assert ca_cert.public_bytes(serialization.Encoding.PEM).decode() in bundle
    assert bundle.count("BEGIN CERTIFICATE") > 1  # system roots + the pod CA
    assert (trust_dir / "truststore.p12").stat().st_size > 0
    assert stat.S_IMODE((ca_dir / "sesame-ca.pem").stat().st_mode) == 0o600


def _init(pair: NetnsPair, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    code = "import sys; from proxy.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.pod,
            sys.executable,
            "-c",
            code,
            "init",
            f"--ca-dir={tmp}/ca",
            f"--trust-dir={tmp}/trust",
            "--proxy-uid=1337",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.mark.root
@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_transparent_init_installs_rules_and_hands_the_ca_to_the_proxy(
    netns_pair: NetnsPair, tmp_path, backend
):
    require_netfilter(backend)
    tmp_path.chmod(0o755)
    proc = _init(
        netns_pair,
        tmp_path,
        "--mode=transparent",
        f"--netfilter-backend={backend}",
        "--control-plane=https://10.231.0.3:443",
        "--exclude-ports=81",
    )
    assert proc.returncode == 0, proc.stderr
    assert "REDIRECT rules installed" in proc.stderr

    ca_dir = tmp_path / "ca"
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    for path in (ca_dir, *ca_dir.iterdir()):
        assert (path.stat().st_uid, path.stat().st_gid) == (1337, 1337), path
    assert (tmp_path / "trust" / "ca-bundle.pem").exists()

    settings = InitSettings().redirect
    rules = list_rules(settings, backend=backend, netns=netns_pair.pod)
    assert "10.231.0.3" in rules  # the control plane's address is excluded

    netns_pair.serve(netns_pair.remote, "upstream", "0.0.0.0:80", "0.0.0.0:81")
    netns_pair.serve(netns_pair.pod, "proxy", f"127.0.0.1:{DEFAULT_PROXY_PORT}")  # init's default port
    assert netns_pair.connect("10.231.0.2", 80, uid=APP_UID) == f"proxy {DEFAULT_PROXY_PORT} 10.231.0.2:80"
    assert netns_pair.connect("10.231.0.2", 80, uid=1337) == "upstream 80 -"
    assert netns_pair.connect("10.231.0.3", 80, uid=APP_UID) == "upstream 80 -"
    assert netns_pair.connect("10.231.0.2", 81, uid=APP_UID) == "upstream 81 -"


@pytest.mark.root
def test_explicit_init_installs_no_rules(netns_pair: NetnsPair, tmp_path):
    require_netfilter("nft")  # lists the ruleset with nft
    proc = _init(netns_pair, tmp_path, "--mode=explicit")
    assert proc.returncode == 0, proc.stderr
    ruleset = subprocess.run(
        ["ip", "netns", "exec", netns_pair.pod, "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "sesame" not in ruleset and "SESAME_OUTPUT" not in ruleset


@pytest.mark.root
def test_failing_rules_make_init_fail(netns_pair: NetnsPair):
    """Without NET_ADMIN (here: an unprivileged user) init fails, so the pod never starts unprotected."""
    code = "import sys; from proxy.main import main; sys.exit(main(sys.argv[1:]))"
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        for sub in ("", "ca", "trust"):  # world-writable like the emptyDir volumes
            (Path(tmp) / sub).mkdir(exist_ok=True)
            (Path(tmp) / sub).chmod(0o777)
        proc = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns_pair.pod,
                "setpriv",
                f"--reuid={APP_UID}",
                f"--regid={APP_UID}",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
                "init",
                "--mode=transparent",
                "--netfilter-backend=nft",
                f"--ca-dir={tmp}/ca",
                f"--trust-dir={tmp}/trust",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "HOME": tmp},
        )
    assert proc.returncode == 1, proc.stderr
    assert "netfilter_failed" in proc.stderr


@pytest.mark.parametrize("mode", ["transparent", "explicit"])
def test_the_webhooks_init_container_args_parse_as_intended(mode):
    """Contract between controlplane.injector_spec (writes the args) and this module (reads them)."""
    from controlplane.injector_spec import InjectorSettings, init_container

    spec = init_container(
        InjectorSettings(control_plane_url="https://sesame.sesame-system.svc:443"),
        mode=mode,
        exclude_cidrs=("10.96.0.0/12",),
        exclude_ports=(5432,),
    )
    assert spec["command"] == ["sesame-proxy"] and spec["args"][0] == "init"
    settings = settings_of(spec["args"][1:])
    assert settings.mode == mode and settings.backend == "auto"
    assert settings.redirect.proxy_port == 16001 and settings.redirect.proxy_uid == 16001
    assert settings.redirect.exclude_cidrs == ("10.96.0.0/12",) and settings.redirect.exclude_ports == (5432,)
    assert settings.control_plane == "https://sesame.sesame-system.svc:443"
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert {str(settings.ca_dir), str(settings.trust_dir)} == mounts
