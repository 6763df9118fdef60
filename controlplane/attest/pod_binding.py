"""Optional pod binding: a verified token must name a live pod that is really its pod.

For clusters with `pod_binding: true` the control plane reads the pod named in the token's
`kubernetes.io.pod` claim (`get pods`, granted by the chart's ClusterRole) and requires that it
exists, has the token's pod uid, runs as the token's service account and is not terminating.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

from controlplane.attest.identity import Identity, InvalidSubjectToken
from controlplane.attest.kube import KubeApi
from controlplane.clock import Clock, SystemClock
from controlplane.errors import StartupError

__all__ = [
    "DEFAULT_POD_CACHE_ENTRIES",
    "DEFAULT_POD_CACHE_SECONDS",
    "DEFAULT_POD_LOOKUP_TIMEOUT_SECONDS",
    "MAX_POD_CACHE_SECONDS",
    "KubePodLookup",
    "PodBinder",
    "PodBindingSettings",
    "PodLookup",
]

DEFAULT_POD_CACHE_SECONDS = 30.0
MAX_POD_CACHE_SECONDS = 30.0
DEFAULT_POD_CACHE_ENTRIES = 10_000
DEFAULT_POD_LOOKUP_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, kw_only=True)
class PodBindingSettings:
    """How long a pod that matched is trusted without another GET (≤ 30 s), and how many are kept."""

    cache_seconds: float = DEFAULT_POD_CACHE_SECONDS
    cache_entries: int = DEFAULT_POD_CACHE_ENTRIES
    timeout_seconds: float = DEFAULT_POD_LOOKUP_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not 0 <= self.cache_seconds <= MAX_POD_CACHE_SECONDS:
            raise StartupError(f"pod binding cache seconds must be between 0 and {MAX_POD_CACHE_SECONDS:g}")
        if self.cache_entries < 1:
            raise StartupError("pod binding cache entries must be at least 1")
        if self.timeout_seconds <= 0:
            raise StartupError("pod lookup timeout must be positive")


class PodLookup(Protocol):
    """Reads one pod: its v1 Pod JSON, None when the API answers 404 NotFound.

    Any other failure raises InvalidSubjectToken("pod_lookup_failed", ...).
    """

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class KubePodLookup:
    """`GET /api/v1/namespaces/{ns}/pods/{name}` through the `kubernetes` client, off the event loop."""

    def __init__(self, *, kube: KubeApi, timeout_seconds: float = DEFAULT_POD_LOOKUP_TIMEOUT_SECONDS) -> None:
        self._kube = kube
        self._timeout = timeout_seconds

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get, namespace, name)

    def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            api = client.CoreV1Api(self._kube.client())
            # Raw JSON: only four fields are read, and V1Pod deserialisation is costly and strict.
            resp = api.read_namespaced_pod(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            )
            pod = json.loads(resp.data)
        except ApiException as exc:
            if exc.status == 404 and _is_not_found(exc.body):
                return None
            raise _lookup_failed(f"the Kubernetes API answered {exc.status} to a pod read") from None
        except Exception:
            raise _lookup_failed("the Kubernetes API could not be reached for a pod read") from None
        if not isinstance(pod, dict) or pod.get("kind") != "Pod":
            raise _lookup_failed("the Kubernetes API did not answer a v1 Pod")
        return pod


@dataclass(frozen=True)
class _Bound:
    namespace: str
    name: str
    service_account: str


class PodBinder:
    """Checks a verified identity against its live pod; pods that matched are cached by uid."""

    def __init__(
        self,
        *,
        lookup: PodLookup,
        settings: PodBindingSettings = PodBindingSettings(),
        clock: Clock = SystemClock(),
    ) -> None:
        self._lookup = lookup
        self._settings = settings
        self._bound: TTLCache[tuple[str, str], _Bound] = TTLCache(
            maxsize=settings.cache_entries, ttl=settings.cache_seconds, timer=clock.time
        )
        self.lookups = 0

    def forget(self) -> None:
        self._bound.clear()

    async def check(self, identity: Identity) -> None:
        """Raise InvalidSubjectToken (401) unless the token's pod exists and is this identity's pod."""
        name, uid = identity.pod_name, identity.pod_uid
        if not name or not uid:
            raise InvalidSubjectToken(
                "pod_claims_missing", "the cluster requires pod binding and the token names no pod"
            )
        key = (identity.cluster_id or identity.cluster, uid)
        wanted = _Bound(identity.namespace, name, identity.service_account)
        if self._settings.cache_seconds > 0 and self._bound.get(key) == wanted:
            return
        self.lookups += 1
        pod = await self._lookup.get_pod(identity.namespace, name)
        _require_match(pod, identity, uid)
        if self._settings.cache_seconds > 0:
            self._bound[key] = wanted


def _require_match(pod: dict[str, Any] | None, identity: Identity, uid: str) -> None:
    where = f"{identity.namespace}/{identity.pod_name}"
    if pod is None:
        raise InvalidSubjectToken("pod_not_found", f"pod {where} does not exist")
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    if metadata.get("uid") != uid:
        raise InvalidSubjectToken("pod_uid_mismatch", f"pod {where} is not the pod the token was issued to")
    if spec.get("serviceAccountName") != identity.service_account:
        raise InvalidSubjectToken(
            "pod_service_account_mismatch", f"pod {where} does not run as the token's service account"
        )
    if metadata.get("deletionTimestamp"):
        raise InvalidSubjectToken("pod_terminating", f"pod {where} is terminating")


def _is_not_found(body: Any) -> bool:
    """A 404 is "no such pod" only when it is the apiserver's NotFound Status (not a wrong URL)."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return False
    return isinstance(status, dict) and status.get("kind") == "Status" and status.get("reason") == "NotFound"


def _lookup_failed(message: str) -> InvalidSubjectToken:
    return InvalidSubjectToken("pod_lookup_failed", message)
