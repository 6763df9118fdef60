"""One `kubernetes` API client (kubeconfig or in-cluster), shared by TokenReview and pod lookups."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ["KubeApi"]


class KubeApi:
    """Builds the synchronous `kubernetes` ApiClient on first use; call `client()` off the event loop."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The ApiClient: from `kubeconfig` (and `context`) when set, else the in-cluster configuration."""
        with self._lock:
            if self._client is None:
                from kubernetes import client, config

                if self._kubeconfig:
                    self._client = config.new_client_from_config(
                        config_file=self._kubeconfig, context=self._context
                    )
                else:
                    configuration = client.Configuration()
                    config.load_incluster_config(client_configuration=configuration)
                    self._client = client.ApiClient(configuration)
            return self._client

    async def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
