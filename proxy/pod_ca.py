"""The pod CA: created once per pod, signs the leaf certificates of intercepted hosts.

cryptography and mitmproxy's CertStore (~17 MB of RSS) are loaded here only: by `sesame-proxy
init-ca` and the init container, and in the short-lived child the running proxy forks to sign
leaves (proxy/tls.py); the proxy process itself never imports this module.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from mitmproxy import certs

from proxy.tls import (
    BUNDLE_NAME,
    CA_BASENAME,
    DEFAULT_LEAF_LIFETIME,
    TRUSTSTORE_NAME,
    TRUSTSTORE_PASSWORD,
    system_roots_file,
)

__all__ = ["CA_KEY_SIZE", "init_pod_ca", "load_pod_ca", "sign_leaves"]

CA_KEY_SIZE = 2048
# mitmproxy signs leaves valid for a year (module constant); pod-CA leaves are short-lived and
# renewed by LeafCertificates at half-life, so lower it once here.
certs.CERT_EXPIRY = datetime.timedelta(seconds=DEFAULT_LEAF_LIFETIME)


def load_pod_ca(ca_dir: Path) -> certs.CertStore:
    """Load the pod CA from `ca_dir`, creating it (private files, umask 077) when missing."""
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return certs.CertStore.from_store(ca_dir, CA_BASENAME, CA_KEY_SIZE)


def init_pod_ca(
    ca_dir: Path, trust_dir: Path, *, truststore_password: str = TRUSTSTORE_PASSWORD
) -> dict[str, Path]:
    """`sesame-proxy init-ca`: create (or reuse) the pod CA in the private `ca_dir`, and write the apps'
    trust material to `trust_dir`: ca-bundle.pem (system roots + pod CA) and truststore.p12 (Java)."""
    from proxy import pkcs12_truststore

    store = load_pod_ca(ca_dir)
    ca_pem = store.default_ca.to_pem()
    trust_dir.mkdir(parents=True, exist_ok=True)
    roots = Path(system_roots_file()).read_bytes()
    bundle, truststore = trust_dir / BUNDLE_NAME, trust_dir / TRUSTSTORE_NAME
    _write_public(bundle, roots.rstrip(b"\n") + b"\n" + ca_pem)
    entries = pkcs12_truststore.trust_entries(roots, ca_pem)  # Java: public roots too, not only ours
    _write_public(truststore, pkcs12_truststore.serialize(entries, truststore_password))
    return {"ca": ca_dir / f"{CA_BASENAME}-ca-cert.pem", "bundle": bundle, "truststore": truststore}


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def sign_leaves(ca_dir: Path, hosts: list[str]) -> dict[str, str]:
    """PEM leaf certificates for `hosts` (DNS names or IP addresses), signed by the pod CA; the leaves
    use the CA's key (mitmproxy's scheme), so only certificates leave this process."""
    store = load_pod_ca(ca_dir)
    out: dict[str, str] = {}
    for host in hosts:
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        out[host] = store.get_cert(host, [san]).cert.to_pem().decode()
    return out
