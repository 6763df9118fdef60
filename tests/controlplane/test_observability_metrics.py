"""The metrics behind the chart's dashboard and alerts, read from a real control plane's /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from controlplane.clock import format_ts
from controlplane.exchange_services import EXCHANGE
from controlplane.exchange_settings import ExchangeSettings
from tests.controlplane.exchange_support import Env, allow, exchange_env


@pytest.fixture
async def env(tmp_path) -> AsyncIterator[Env]:
    async with exchange_env(tmp_path, ExchangeSettings(rate_limit_per_minute=1000)) as env:
        yield env


async def test_issued_credentials_expiry_per_target(env: Env) -> None:
    await allow(env, ttl=120)
    assert (await env.exchange()).status_code == 200
    issued_at = env.clock.time()
    got = await metric_samples(env.http)
    expiry = got[("sesame_credential_expiry_timestamp_seconds", (("target", "example-api"),))]
    assert expiry == pytest.approx(issued_at + 120)
    env.clock.advance(60)
    assert (await env.exchange()).status_code == 200  # a refresh moves it forward
    got = await metric_samples(env.http)
    assert got[("sesame_credential_expiry_timestamp_seconds", (("target", "example-api"),))] == pytest.approx(
        issued_at + 180
    )


async def metric_samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await client.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_proxies_reporting_and_silent_come_from_the_store(control_plane, admin, clock) -> None:
    store = control_plane.app[EXCHANGE].store
    now = clock.time()
    for pod, seen in (
        ("fresh-0", now - 10),
        ("fresh-1", now - 200),
        ("silent-0", now - 3600),
        ("gone", now - 90_000),
    ):
        await store.heartbeat(workload_id="wl_x", pod=pod, pod_uid=None, version="t", now=format_ts(seen))
    got = await metric_samples(admin)
    assert got[("sesame_proxies", (("state", "reporting"),))] == 2
    assert got[("sesame_proxies", (("state", "silent"),))] == 1


async def test_audit_chain_verification_and_lag(control_plane, admin, clock) -> None:
    got = await metric_samples(admin)
    assert not [k for k in got if k[0] == "sesame_audit_chain_valid"]  # never verified yet
    assert (await admin.post("/v1/api-keys", json={"name": "k", "role": "viewer"})).status_code == 201
    verified = await admin.get("/v1/audit/verify")
    assert verified.status_code == 200 and verified.json()["ok"] is True
    got = await metric_samples(admin)
    assert got[("sesame_audit_chain_valid", ())] == 1
    assert got[("sesame_audit_chain_verified_timestamp_seconds", ())] == pytest.approx(clock.time())
    assert got[("sesame_audit_lag_seconds_count", ())] >= 1  # api_key.created went through the queue


async def test_serving_certificate_expiry_is_read_from_the_file_and_follows_renewal(tmp_path, clock) -> None:
    from cryptography import x509

    from controlplane.appkeys import CLOCK, CONFIG, METRICS
    from controlplane.config import Config
    from controlplane.metrics import Metrics
    from controlplane.scrape_gauges import refresh_gauges
    from devkit.certs import DevCA

    cert = DevCA("metrics test CA").issue(["cp.example"], tmp_path / "tls")
    app = web.Application()
    app[METRICS], app[CLOCK] = Metrics(), clock
    app[CONFIG] = Config(tls_cert=cert.cert_file, tls_key=cert.key_file)

    def expiry() -> float:
        [value] = [
            s.value
            for family in text_string_to_metric_families(app[METRICS].render().decode())
            for s in family.samples
            if s.name == "sesame_certificate_expiry_timestamp_seconds"
        ]
        return value

    await refresh_gauges(app)
    leaf = x509.load_pem_x509_certificate(cert.cert_file.read_bytes())
    assert expiry() == leaf.not_valid_after_utc.timestamp()
    await asyncio.sleep(1.1)  # certificate times have whole seconds: the renewal must end later
    renewed = DevCA("another CA").issue(["cp.example"], tmp_path / "tls2")
    cert.cert_file.write_bytes(renewed.cert_file.read_bytes() + b"\n")  # a renewal rewrites the file
    await refresh_gauges(app)
    again = x509.load_pem_x509_certificate(renewed.cert_file.read_bytes())
    assert again.not_valid_after_utc > leaf.not_valid_after_utc
    assert expiry() == again.not_valid_after_utc.timestamp()
