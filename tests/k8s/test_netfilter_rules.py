"""The REDIRECT rules as rendered text (pure functions) and backend selection."""

from __future__ import annotations

import subprocess

import pytest

from proxy.netfilter import (
    NetfilterError,
    RedirectSettings,
    apply_rules,
    detect_backend,
    render_iptables,
    render_nft,
)


def test_iptables_rules_return_for_proxy_uid_loopback_and_exclusions_before_redirect():
    settings = RedirectSettings(exclude_cidrs=("10.96.0.10", "192.168.0.0/16"), exclude_ports=(15020,))
    lines = render_iptables(settings).splitlines()
    assert lines[:2] == ["*nat", ":SESAME_OUTPUT - [0:0]"]
    assert lines[2:-1] == [
        "-A SESAME_OUTPUT -m owner --uid-owner 16001 -j RETURN",
        "-A SESAME_OUTPUT -o lo -j RETURN",
        "-A SESAME_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A SESAME_OUTPUT -d 10.96.0.10/32 -j RETURN",
        "-A SESAME_OUTPUT -d 192.168.0.0/16 -j RETURN",
        "-A SESAME_OUTPUT -p tcp --dport 15020 -j RETURN",
        "-A SESAME_OUTPUT -p tcp -j REDIRECT --to-ports 16001",
    ]
    assert lines[-1] == "COMMIT"


def test_iptables_v6_rules_use_v6_loopback_and_only_v6_exclusions():
    settings = RedirectSettings(exclude_cidrs=("10.0.0.0/8", "fd00::/8"), ipv6=True, proxy_port=16000)
    text = render_iptables(settings, version=6)
    assert "-d ::1/128 -j RETURN" in text
    assert "-d fd00::/8 -j RETURN" in text
    assert "10.0.0.0/8" not in text
    assert "REDIRECT --to-ports 16000" in text


def test_nft_script_recreates_only_its_own_table_atomically():
    settings = RedirectSettings(exclude_cidrs=("10.96.0.10",), exclude_ports=(15020, 8443), proxy_uid=4242)
    script = render_nft(settings)
    assert script.startswith("table ip sesame\ndelete table ip sesame\ntable ip sesame {\n")
    assert "type nat hook output priority -110; policy accept;" in script
    assert "meta l4proto tcp jump SESAME_OUTPUT" in script
    body = script.split("chain SESAME_OUTPUT {")[1]
    rules = [line.strip() for line in body.splitlines() if line.strip() and line.strip() != "}"]
    assert rules == [
        "meta skuid 4242 return",
        'oifname "lo" return',
        "ip daddr 127.0.0.0/8 return",
        "ip daddr { 10.96.0.10/32 } return",
        "tcp dport { 15020, 8443 } return",
        "meta l4proto tcp redirect to :16001",
    ]


def test_nft_ipv6_uses_inet_family_and_v6_exclusions():
    script = render_nft(RedirectSettings(exclude_cidrs=("fd00::/8",), ipv6=True))
    assert "table inet sesame {" in script
    assert "ip6 daddr ::1/128 return" in script
    assert "ip6 daddr { fd00::/8 } return" in script


def test_nft_without_ipv6_ignores_v6_exclusions():
    script = render_nft(RedirectSettings(exclude_cidrs=("fd00::/8",)))
    assert "fd00" not in script
    assert "ip6" not in script


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"proxy_port": 0}, "proxy_port"),
        ({"proxy_port": 70000}, "proxy_port"),
        ({"exclude_ports": (0,)}, "exclude_ports"),
        ({"exclude_cidrs": ("not-a-cidr",)}, "invalid exclude CIDR"),
        ({"proxy_uid": -1}, "proxy_uid"),
        ({"chain": "BAD CHAIN; flush"}, "invalid chain"),
    ],
)
def test_invalid_settings_are_rejected(kwargs, needle):
    with pytest.raises(NetfilterError, match=needle):
        RedirectSettings(**kwargs)


def test_backend_prefers_nft_then_iptables():
    assert detect_backend(which=lambda name: f"/usr/sbin/{name}") == "nft"
    assert detect_backend(which=lambda name: None if name == "nft" else f"/sbin/{name}") == "iptables"
    with pytest.raises(NetfilterError, match="neither nft nor iptables"):
        detect_backend(which=lambda name: None)


def test_unknown_backend_is_rejected():
    with pytest.raises(NetfilterError, match="unknown backend"):
        apply_rules(RedirectSettings(), backend="pf")


def test_failing_command_raises_with_its_stderr():
    def run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 1, "", "Operation not permitted (you must be root)")

    with pytest.raises(NetfilterError, match="Operation not permitted"):
        apply_rules(RedirectSettings(), backend="nft", run=run)


@pytest.mark.parametrize(("jump_present", "appended"), [(True, False), (False, True)])
def test_iptables_apply_adds_the_output_jump_only_when_missing(jump_present, appended):
    """The jump is inserted first in OUTPUT, ahead of a service mesh's (see test_mesh_coexistence)."""
    calls: list[list[str]] = []

    def run(argv, **kwargs):
        calls.append(argv)
        code = 1 if "-C" in argv and not jump_present else 0
        return subprocess.CompletedProcess(argv, code, "", "")

    apply_rules(RedirectSettings(), backend="iptables", netns="podns", run=run)
    assert calls[0] == ["ip", "netns", "exec", "podns", "iptables-restore", "--noflush"]
    assert calls[1][4:] == ["iptables", "-t", "nat", "-C", "OUTPUT", "-p", "tcp", "-j", "SESAME_OUTPUT"]
    append = [
        "ip",
        "netns",
        "exec",
        "podns",
        "iptables",
        "-t",
        "nat",
        "-I",
        "OUTPUT",
        "1",
        "-p",
        "tcp",
        "-j",
        "SESAME_OUTPUT",
    ]
    assert (append in calls) is appended


def test_excluded_uids_return_before_the_redirect_in_both_backends():
    settings = RedirectSettings(proxy_uid=16001, exclude_uids=(1337, 2102))
    lines = render_iptables(settings).splitlines()
    assert lines[3:5] == [
        "-A SESAME_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A SESAME_OUTPUT -m owner --uid-owner 2102 -j RETURN",
    ]
    assert "meta skuid { 1337, 2102 } return" in render_nft(settings)
    with pytest.raises(NetfilterError, match="exclude_uids"):
        RedirectSettings(exclude_uids=(-5,))
