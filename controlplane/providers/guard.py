"""Every call to a credential provider goes through one guard, so a slow or failing provider costs
its own callers a bounded wait and nobody else anything.

- Single flight per provider and flight key: concurrent calls that would fetch the same thing
  (an OAuth2 provider's upstream token) share one fetch and its outcome, success or failure.
- A per-call timeout (`provider_timeout`, 504): a caller stops waiting; the shared fetch goes on
  and fills the provider's cache for the next caller. It is shorter than the proxy's own timeout
  for the control plane, so the proxy hears which side failed.
- A circuit breaker per provider: after `failures_to_open` consecutive provider-side failures it
  opens and calls fail at once with `provider_unavailable` (503); after `cooldown_seconds` one
  probe call goes through (half-open) and its outcome closes or re-opens it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.clock import Clock
from controlplane.errors import StartupError
from controlplane.providers.base import IssuedCredential, ProviderTimeout, ProviderUnavailable

__all__ = [
    "DEFAULT_BREAKER_COOLDOWN_SECONDS",
    "DEFAULT_BREAKER_FAILURES",
    "DEFAULT_PROVIDER_TIMEOUT_SECONDS",
    "GuardSettings",
    "ProviderGuard",
]

DEFAULT_PROVIDER_TIMEOUT_SECONDS = 4.0  # below the proxy's 5 s timeout for the control plane
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_COOLDOWN_SECONDS = 30.0

_ENV = {
    "timeout_seconds": "SESAME_PROVIDER_TIMEOUT",
    "failures_to_open": "SESAME_PROVIDER_BREAKER_FAILURES",
    "cooldown_seconds": "SESAME_PROVIDER_BREAKER_COOLDOWN",
}


@dataclass(frozen=True, kw_only=True)
class GuardSettings:
    timeout_seconds: float = DEFAULT_PROVIDER_TIMEOUT_SECONDS
    failures_to_open: int = DEFAULT_BREAKER_FAILURES
    cooldown_seconds: float = DEFAULT_BREAKER_COOLDOWN_SECONDS

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0 or self.failures_to_open < 1 or self.cooldown_seconds <= 0:
            raise StartupError(f"{', '.join(_ENV.values())} must be positive")

    @classmethod
    def build(cls, env: Mapping[str, str]) -> GuardSettings:
        values: dict[str, Any] = {}
        for name, var in _ENV.items():
            if env.get(var):
                try:
                    values[name] = int(env[var]) if name == "failures_to_open" else float(env[var])
                except ValueError:
                    raise StartupError(f"{var} must be a number") from None
        return cls(**values)


class _Breaker:
    """Closed → open after N consecutive failures → half-open (one probe) after the cooldown."""

    def __init__(self) -> None:
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    def admit(self, now: float, settings: GuardSettings) -> bool:
        """Whether a call may go out now; in half-open state only the one probe may."""
        if self.opened_at is None:
            return True
        if self.probing or now - self.opened_at < settings.cooldown_seconds:
            return False
        self.probing = True
        return True


class ProviderGuard:
    """Runs provider calls under single flight, a timeout and a breaker per provider."""

    def __init__(self, settings: GuardSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._flights: dict[tuple[str, str], asyncio.Task[IssuedCredential]] = {}

    async def call(
        self,
        provider_id: str,
        flight_key: str | None,
        issue: Callable[[], Awaitable[IssuedCredential]],
    ) -> IssuedCredential:
        """`issue()` once per (provider, flight key) at a time; None as key: no sharing."""
        key = (provider_id, flight_key) if flight_key is not None else None
        task = self._flights.get(key) if key is not None else None
        if task is None:
            breaker = self._breakers.setdefault(provider_id, _Breaker())
            if not breaker.admit(self._clock.time(), self._settings):
                raise ProviderUnavailable(
                    f"credential provider {provider_id} is failing: calls are paused (circuit open)"
                )
            task = asyncio.create_task(
                self._run(provider_id, breaker, issue), name=f"sesame-mint-{provider_id}"
            )
            task.add_done_callback(_retrieve)  # every waiter may have timed out already
            if key is not None:
                self._flights[key] = task
                task.add_done_callback(lambda _: self._flights.pop(key, None))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._settings.timeout_seconds)
        except TimeoutError:
            limit = self._settings.timeout_seconds
            message = f"credential provider {provider_id} did not answer within {limit:g} s"
            raise ProviderTimeout(message) from None

    async def _run(
        self, provider_id: str, breaker: _Breaker, issue: Callable[[], Awaitable[IssuedCredential]]
    ) -> IssuedCredential:
        try:
            result = await issue()
        except (ProviderTimeout, ProviderUnavailable):
            breaker.failures += 1
            if breaker.probing or breaker.failures >= self._settings.failures_to_open:
                breaker.opened_at = self._clock.time()
            breaker.probing = False
            raise
        except BaseException:
            breaker.probing = False  # not the provider's fault (misconfiguration, refusal): no count
            raise
        breaker.failures, breaker.opened_at, breaker.probing = 0, None, False
        return result


def _retrieve(task: asyncio.Task[IssuedCredential]) -> None:
    if not task.cancelled():
        task.exception()
