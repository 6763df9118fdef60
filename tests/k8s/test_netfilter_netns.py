"""The REDIRECT rules applied for real in a network namespace, for both backends.

A "pod" namespace (10.231.0.1) is joined to a "remote" namespace serving ``upstream`` on
10.231.0.2/.3 ports 80/81. In the pod namespace a ``proxy`` listener sits on 127.0.0.1:15001 and
reports the connection's SO_ORIGINAL_DST; a ``loopback`` server sits on 127.0.0.1:9000. Dual stack:
the pod is fd00:231::1, ``upstream`` also serves [fd00:231::2]/[::3]:80/81, and with ``ipv6`` the
``proxy`` also listens on [::1]:15001 (IP6T_SO_ORIGINAL_DST) and ``loopback`` on [::1]:9000.
"""

from __future__ import annotations

import shutil

import pytest

from proxy.netfilter import RedirectSettings, apply_rules, list_rules, remove_rules

from .conftest import APP_UID, NetnsPair

pytestmark = pytest.mark.root

PROXY_UID = 1337
SETTINGS = RedirectSettings(
    proxy_port=15001, proxy_uid=PROXY_UID, exclude_cidrs=("10.231.0.3/32",), exclude_ports=(81,)
)
SETTINGS6 = RedirectSettings(
    proxy_port=15001,
    proxy_uid=PROXY_UID,
    exclude_cidrs=("10.231.0.3/32", "fd00:231::3/128"),
    exclude_ports=(81,),
    ipv6=True,
)


@pytest.fixture(params=["nft", "iptables"])
def backend(request) -> str:
    tool = "nft" if request.param == "nft" else "iptables-restore"
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")
    return request.param


@pytest.fixture
def pod(netns_pair: NetnsPair, backend: str) -> NetnsPair:
    netns_pair.serve(netns_pair.remote, "upstream", "0.0.0.0:80", "0.0.0.0:81", "[::]:80")
    netns_pair.serve(netns_pair.pod, "proxy", "127.0.0.1:15001")
    netns_pair.serve(netns_pair.pod, "loopback", "127.0.0.1:9000")
    apply_rules(SETTINGS, backend=backend, netns=netns_pair.pod)
    return netns_pair


@pytest.fixture
def pod6(netns_pair: NetnsPair, backend: str) -> NetnsPair:
    netns_pair.serve(netns_pair.remote, "upstream", "0.0.0.0:80", "0.0.0.0:81", "[::]:80", "[::]:81")
    netns_pair.serve(netns_pair.pod, "proxy", "127.0.0.1:15001", "[::1]:15001")
    netns_pair.serve(netns_pair.pod, "loopback", "127.0.0.1:9000", "[::1]:9000")
    apply_rules(SETTINGS6, backend=backend, netns=netns_pair.pod)
    return netns_pair


def test_rules_are_listed_after_apply(pod: NetnsPair, backend: str):
    text = list_rules(SETTINGS, backend=backend, netns=pod.pod)
    if backend == "nft":
        assert "meta skuid 1337 return" in text
        assert "redirect to :15001" in text
    else:
        assert "-A OUTPUT -p tcp -j SESAME_OUTPUT" in text
        assert "--uid-owner 1337 -j RETURN" in text
        assert "-j REDIRECT --to-ports 15001" in text


def test_app_uid_connection_is_redirected_to_the_proxy_with_its_original_destination(pod: NetnsPair):
    assert pod.connect("10.231.0.2", 80, uid=APP_UID) == "proxy 15001 10.231.0.2:80"


def test_root_in_the_app_is_redirected_too(pod: NetnsPair):
    assert pod.connect("10.231.0.2", 80, uid=0).startswith("proxy 15001 ")


def test_proxy_uid_connection_goes_straight_upstream(pod: NetnsPair):
    assert pod.connect("10.231.0.2", 80, uid=PROXY_UID) == "upstream 80 -"


def test_loopback_is_not_redirected(pod: NetnsPair):
    assert pod.connect("127.0.0.1", 9000, uid=APP_UID) == "loopback 9000 -"


def test_excluded_cidr_and_port_are_not_redirected(pod: NetnsPair):
    assert pod.connect("10.231.0.3", 80, uid=APP_UID) == "upstream 80 -"
    assert pod.connect("10.231.0.2", 81, uid=APP_UID) == "upstream 81 -"


def test_apply_is_idempotent_and_remove_restores_direct_traffic(pod: NetnsPair, backend: str):
    apply_rules(SETTINGS, backend=backend, netns=pod.pod)
    text = list_rules(SETTINGS, backend=backend, netns=pod.pod)
    if backend == "iptables":
        assert text.count("-A OUTPUT -p tcp -j SESAME_OUTPUT") == 1
    assert text.count("redirect to :15001") + text.count("REDIRECT --to-ports 15001") == 1
    assert pod.connect("10.231.0.2", 80, uid=APP_UID).startswith("proxy ")

    remove_rules(SETTINGS, backend=backend, netns=pod.pod)
    remove_rules(SETTINGS, backend=backend, netns=pod.pod)  # a second removal is a no-op
    assert pod.connect("10.231.0.2", 80, uid=APP_UID) == "upstream 80 -"


def test_ipv6_is_left_untouched_unless_enabled(pod: NetnsPair):
    assert pod.connect("fd00:231::2", 80, uid=APP_UID) == "upstream 80 -"


def test_ipv6_app_connection_is_redirected_to_the_ipv6_proxy_listener(pod6: NetnsPair):
    assert pod6.connect("fd00:231::2", 80, uid=APP_UID) == "proxy 15001 [fd00:231::2]:80"
    assert pod6.connect("10.231.0.2", 80, uid=APP_UID) == "proxy 15001 10.231.0.2:80"


def test_ipv6_proxy_uid_loopback_and_exclusions_are_not_redirected(pod6: NetnsPair):
    assert pod6.connect("fd00:231::2", 80, uid=PROXY_UID) == "upstream 80 -"
    assert pod6.connect("::1", 9000, uid=APP_UID) == "loopback 9000 -"
    assert pod6.connect("fd00:231::3", 80, uid=APP_UID) == "upstream 80 -"
    assert pod6.connect("fd00:231::2", 81, uid=APP_UID) == "upstream 81 -"


def test_ipv6_rules_render_for_both_families(pod6: NetnsPair, backend: str):
    text = list_rules(SETTINGS6, backend=backend, netns=pod6.pod)
    if backend == "nft":
        assert "table inet sesame" in text
        assert "ip6 daddr ::1 return" in text
    else:
        assert text.count("-A OUTPUT -p tcp -j SESAME_OUTPUT") == 2  # iptables and ip6tables
        assert "-d ::1/128 -j RETURN" in text
        assert "-d fd00:231::3/128 -j RETURN" in text
    remove_rules(SETTINGS6, backend=backend, netns=pod6.pod)
    assert pod6.connect("fd00:231::2", 80, uid=APP_UID) == "upstream 80 -"
