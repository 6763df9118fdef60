"""Gauges computed when Prometheus scrapes /metrics: sidecars reporting (from the shared store, so
every replica answers the same) and the serving certificate's expiry (re-read when its file
changes)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web
from cryptography import x509

from controlplane.appkeys import CLOCK, CONFIG, METRICS
from controlplane.clock import format_ts

__all__ = ["REPORTING_SECONDS", "SEEN_SECONDS", "refresh_gauges"]

log = logging.getLogger(__name__)

# A sidecar heartbeats every 30 s: one silent for 5 minutes is not reporting. Silent ones are
# counted for a day (then they are taken for gone: deleted pods are not removed from the list).
REPORTING_SECONDS, SEEN_SECONDS = 300, 86_400
QUERY_TIMEOUT_SECONDS = 2.0
_EXPIRY_CACHE: dict[tuple[str, int, int], float] = {}


async def refresh_gauges(app: web.Application) -> None:
    metrics, now = app[METRICS], app[CLOCK].time()
    from controlplane.exchange_services import EXCHANGE

    exchange = app.get(EXCHANGE)
    if exchange is not None:
        try:
            reporting, seen = await asyncio.wait_for(
                asyncio.gather(
                    exchange.store.count_proxies(since=format_ts(now - REPORTING_SECONDS)),
                    exchange.store.count_proxies(since=format_ts(now - SEEN_SECONDS)),
                ),
                QUERY_TIMEOUT_SECONDS,
            )
            metrics.proxies.labels("reporting").set(reporting)
            metrics.proxies.labels("silent").set(seen - reporting)
        except Exception as exc:  # the scrape still answers; the gauges keep their last values
            log.warning("cannot count proxies for /metrics: %s", exc)
    cert = app[CONFIG].tls_cert
    if cert is not None:
        expiry = _not_after(cert)
        if expiry is not None:
            metrics.certificate_expiry.labels("serving").set(expiry)


def _not_after(path: Path) -> float | None:
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in _EXPIRY_CACHE:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            _EXPIRY_CACHE.clear()
            _EXPIRY_CACHE[key] = cert.not_valid_after_utc.timestamp()
        return _EXPIRY_CACHE[key]
    except (OSError, ValueError) as exc:
        log.warning("cannot read the serving certificate %s for /metrics: %s", path, exc)
        return None
