"""Fleet reports to the control plane: heartbeats and batched observations (counts only, no content)."""

from __future__ import annotations

import asyncio
import logging

from proxy.controlplane_client import ControlPlaneClient
from proxy.errors import ProxyError

__all__ = ["MAX_BATCH", "MAX_OBSERVED_KEYS", "Observations", "Reporter"]

MAX_OBSERVED_KEYS = 10_000
MAX_BATCH = 500  # the control plane accepts up to 500 observations per request
log = logging.getLogger("sesame.proxy.reporter")


class Observations:
    """Counts of (host, port, governed) since the last batch; bounded in distinct keys."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int, bool], int] = {}

    def record(self, host: str, port: int, governed: bool) -> None:
        key = (host, port, governed)
        count = self._counts.get(key)
        if count is not None:
            self._counts[key] = count + 1
        elif len(self._counts) < MAX_OBSERVED_KEYS:
            self._counts[key] = 1

    def take(self) -> list[dict]:
        counts, self._counts = self._counts, {}
        return [{"host": h, "port": p, "count": c, "governed": g} for (h, p, g), c in counts.items()]

    def give_back(self, batch: list[dict]) -> None:
        for item in batch:
            key = (item["host"], item["port"], item["governed"])
            if key in self._counts or len(self._counts) < MAX_OBSERVED_KEYS:
                self._counts[key] = self._counts.get(key, 0) + item["count"]


class Reporter:
    """Background tasks that send heartbeats and observation batches; failures are logged and retried."""

    def __init__(
        self,
        client: ControlPlaneClient,
        observations: Observations,
        *,
        pod: str,
        version: str,
        heartbeat_interval: float,
        observations_interval: float,
    ) -> None:
        self._client = client
        self.observations = observations
        self._pod, self._version = pod, version
        self._intervals = (heartbeat_interval, observations_interval)
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self._intervals[0], self.heartbeat), name="sesame-heartbeat"),
            asyncio.create_task(self._every(self._intervals[1], self.flush), name="sesame-observations"),
        ]

    async def heartbeat(self) -> None:
        await self._client.heartbeat(self._pod, self._version)

    async def flush(self) -> None:
        batch = self.observations.take()
        for start in range(0, len(batch), MAX_BATCH):
            try:
                await self._client.observations(batch[start : start + MAX_BATCH])
            except ProxyError:
                self.observations.give_back(batch[start:])
                raise

    async def _every(self, interval: float, job) -> None:
        while True:
            try:
                await job()
            except ProxyError as exc:
                log.info(
                    "report failed", extra={"job": job.__name__, "error": exc.code, "reason": exc.message}
                )
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except (ProxyError, TimeoutError):
            pass
