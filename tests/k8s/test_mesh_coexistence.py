"""Sesame's REDIRECT rules beside Istio's in one network namespace: the combined rule set.

The Istio rules are what ``istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*'`` (istio-init)
writes to the nat table (its golden output, trimmed to the chains that see locally generated TCP);
Istio itself cannot run here. Whichever init container runs first, the ordering rule must hold:
the app's connections reach Sesame's proxy, Sesame's upstream connections reach Istio's outbound
port, and Istio's own connections leave the pod (they must not loop back through Sesame: the
injector excludes the meshes' UIDs by default).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from controlplane.injector_spec import InjectorSettings, init_container
from proxy.init_container import InitSettings, _parser
from proxy.netfilter import apply_rules

from .conftest import APP_UID, NetnsPair

pytestmark = pytest.mark.root

ISTIO_UID = 1337
ISTIO_NAT = """*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 \
-m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"""
# What sesame-init installs with the chart's defaults: the injector's args, parsed by the init container.
_ARGS = init_container(
    InjectorSettings(),
    mode="transparent",
    exclude_cidrs=(),
    exclude_ports=(),
    exclude_uids=InjectorSettings().exclude_uids,
)["args"][1:]
SESAME = InitSettings.from_namespace(_parser({}).parse_args(_ARGS)).redirect


def _istio_init(pair: NetnsPair) -> None:
    subprocess.run(
        ["ip", "netns", "exec", pair.pod, "iptables-restore", "--noflush"],
        input=ISTIO_NAT,
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.parametrize("backend", ["nft", "iptables"])
@pytest.mark.parametrize("sesame_first", [False, True], ids=["istio-init-first", "sesame-init-first"])
def test_app_goes_to_sesame_and_sesame_goes_through_istio(netns_pair: NetnsPair, backend, sesame_first):
    if not shutil.which("iptables-restore") or (backend == "nft" and not shutil.which("nft")):
        pytest.skip("needs iptables-restore and nft")
    netns_pair.serve(netns_pair.remote, "upstream", "0.0.0.0:80")
    netns_pair.serve(netns_pair.pod, "sesame", f"127.0.0.1:{SESAME.proxy_port}")
    netns_pair.serve(netns_pair.pod, "istio", "127.0.0.1:15001")
    if sesame_first:
        apply_rules(SESAME, backend=backend, netns=netns_pair.pod)
        _istio_init(netns_pair)
    else:
        _istio_init(netns_pair)
        apply_rules(SESAME, backend=backend, netns=netns_pair.pod)

    sesame_port = SESAME.proxy_port
    assert netns_pair.connect("10.231.0.2", 80, uid=APP_UID) == f"sesame {sesame_port} 10.231.0.2:80"
    assert netns_pair.connect("10.231.0.2", 80, uid=SESAME.proxy_uid) == "istio 15001 10.231.0.2:80"
    assert netns_pair.connect("10.231.0.2", 80, uid=ISTIO_UID) == "upstream 80 -"
