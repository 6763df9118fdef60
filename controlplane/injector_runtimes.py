"""What each app runtime needs to trust the pod CA and, in explicit mode, to use the proxy.

- Trust (both modes): OpenSSL-based runtimes (Python, curl, Go via SSL_CERT_FILE), Node
  (NODE_EXTRA_CA_CERTS) and Java (JAVA_TOOL_OPTIONS trust store: the system roots plus the pod CA).
- Proxy (explicit mode): HTTP(S)_PROXY/NO_PROXY in both spellings; NODE_USE_ENV_PROXY=1 (Node 24+,
  22.21+: http, https and fetch honour them); Java system properties (Java ignores the variables),
  with NO_PROXY translated to ``http.nonProxyHosts``.
- NO_PROXY: loopback, ``kubernetes.default.svc``, ``.svc``, ``.<cluster domain>`` and the cluster's
  pod/service CIDRs, plus ``injector.noProxy``.

A container that sets any proxy variable itself keeps its own proxy settings (see
``controlplane.injector``: no proxy variable or property is added to it, in either spelling).
"""

from __future__ import annotations

import ipaddress

from controlplane.injector_spec import TRUST_BUNDLE, TRUST_STORE, InjectorSettings

__all__ = [
    "JAVA_PROXY_PROPERTIES",
    "PROXY_VARIABLES",
    "explicit_env",
    "java_non_proxy_hosts",
    "java_options",
    "no_proxy",
    "trust_env",
]

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
JAVA_PROXY_PROPERTIES = ("-Dhttp.proxyHost=", "-Dhttps.proxyHost=", "-Djava.net.useSystemProxies=")
CLUSTER_NAMES = ("kubernetes.default.svc", ".svc")
_MAX_JAVA_PATTERNS = 64  # a CIDR that needs more octet patterns is widened (it bypasses the proxy)


def no_proxy(settings: InjectorSettings) -> tuple[str, ...]:
    """The NO_PROXY entries, without duplicates, in a stable order."""
    entries = (
        *settings.no_proxy,
        *CLUSTER_NAMES,
        f".{settings.cluster_domain}",
        *settings.cluster_cidrs,
    )
    return tuple(dict.fromkeys(entries))


def trust_env(settings: InjectorSettings) -> dict[str, str]:
    """Variables that point app runtimes at the trust bundle (JAVA_TOOL_OPTIONS is appended to)."""
    return {
        "SSL_CERT_FILE": TRUST_BUNDLE,
        "REQUESTS_CA_BUNDLE": TRUST_BUNDLE,
        "CURL_CA_BUNDLE": TRUST_BUNDLE,
        "NODE_EXTRA_CA_CERTS": TRUST_BUNDLE,
    }


def java_options(settings: InjectorSettings, *, proxy: bool) -> str:
    """JAVA_TOOL_OPTIONS: the trust store, and with ``proxy`` the proxy system properties."""
    options = [
        f"-Djavax.net.ssl.trustStore={TRUST_STORE}",
        "-Djavax.net.ssl.trustStoreType=PKCS12",
        f"-Djavax.net.ssl.trustStorePassword={settings.truststore_password}",
    ]
    if proxy:
        port = settings.proxy_port
        options += [
            "-Dhttp.proxyHost=127.0.0.1",
            f"-Dhttp.proxyPort={port}",
            "-Dhttps.proxyHost=127.0.0.1",
            f"-Dhttps.proxyPort={port}",
            f"-Dhttp.nonProxyHosts={'|'.join(java_non_proxy_hosts(no_proxy(settings)))}",
        ]
    return " ".join(options)


def explicit_env(settings: InjectorSettings) -> dict[str, str]:
    """HTTP(S)_PROXY/NO_PROXY in both spellings, and NODE_USE_ENV_PROXY, for explicit mode."""
    url = f"http://127.0.0.1:{settings.proxy_port}"
    env: dict[str, str] = {}
    excluded = ",".join(no_proxy(settings))
    for name, value in (("HTTP_PROXY", url), ("HTTPS_PROXY", url), ("NO_PROXY", excluded)):
        env[name] = value
        env[name.lower()] = value
    env["NODE_USE_ENV_PROXY"] = "1"
    return env


def java_non_proxy_hosts(entries: tuple[str, ...]) -> list[str]:
    """NO_PROXY entries as ``http.nonProxyHosts`` patterns (``*`` at either end; no CIDRs in Java).

    ``.svc`` → ``*.svc``; ``::1`` → ``[::1]``; a CIDR → the octet patterns covering it
    (``10.96.0.0/12`` → ``10.96.*`` … ``10.111.*``), widened to fewer patterns past a bound.
    """
    patterns: list[str] = []
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            patterns.append(f"*{entry}" if entry.startswith(".") else entry)
            continue
        if net.version == 6:
            patterns.append(f"[{net.network_address}]" if net.prefixlen == 128 else f"[{_v6_prefix(net)}*")
            continue
        patterns += _v4_patterns(net)
    return list(dict.fromkeys(patterns))


def _v4_patterns(net: ipaddress.IPv4Network) -> list[str]:
    if net.prefixlen == 32:
        return [str(net.network_address)]
    octets = (net.prefixlen + 7) // 8  # whole octets that a pattern must fix
    while octets > 0 and 2 ** (8 * octets - net.prefixlen) > _MAX_JAVA_PATTERNS:
        octets -= 1
    if octets == 0:
        return ["*"]
    widened = net.supernet(new_prefix=min(net.prefixlen, 8 * octets))
    subnets = widened.subnets(new_prefix=8 * octets) if widened.prefixlen < 8 * octets else [widened]
    return [".".join(str(sub.network_address).split(".")[:octets]) + ".*" for sub in subnets]


def _v6_prefix(net: ipaddress.IPv6Network) -> str:
    """The fixed leading groups of an IPv6 network, as Java sees the host (``[fd00:10:...``)."""
    groups = net.network_address.exploded.split(":")[: max(1, net.prefixlen // 16)]
    return ":".join(g.lstrip("0") or "0" for g in groups) + ":"
