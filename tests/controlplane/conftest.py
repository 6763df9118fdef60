"""Shared fixtures: a real control plane (aiohttp on 127.0.0.1:0, real SQLite file in tmp_path)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from controlplane.attest.attestor import Attestor
from controlplane.attest.identity import ClusterTrust, InvalidSubjectToken
from controlplane.clock import FakeClock
from devkit.controlplane_server import ControlPlane, running_control_plane
from devkit.issuer import ClusterIssuer
from devkit.postgres_server import PostgresServer, PostgresUnavailable, postgres_server
from devkit.registry_bodies import service_account_workload

# High enough that ordinary tests never meet the limit; test_rate_limit uses the default.
TEST_RATE_LIMIT = 100_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def issuer(clock: FakeClock) -> AsyncIterator[ClusterIssuer]:
    """A cluster issuer (discovery, JWKS, TokenReview) on port 0 whose tokens follow `clock`."""
    async with ClusterIssuer(clock=clock.time) as issuer:
        yield issuer


@pytest.fixture
async def control_plane(tmp_path, clock) -> AsyncIterator[ControlPlane]:
    async with running_control_plane(
        tmp_path / "cp.db", clock=clock, rate_limit_per_minute=TEST_RATE_LIMIT
    ) as cp:
        yield cp


def client_for(cp: ControlPlane, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=cp.url, headers=headers, timeout=30)


@pytest.fixture
async def admin(control_plane) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client authenticated with the owner key."""
    async with client_for(control_plane, control_plane.owner_key) as client:
        yield client


async def new_key(admin: httpx.AsyncClient, role: str, name: str = "k") -> str:
    resp = await admin.post("/v1/api-keys", json={"name": name, "role": role})
    assert resp.status_code == 201, resp.text
    return resp.json()["key"]


def workload_body(name: str = "inventory-service", namespace: str = "production", sa: str = "inventory-svc"):
    return service_account_workload(name, namespace=namespace, service_account=sa)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (skipped only when no server binaries exist)."""
    try:
        server = postgres_server()
        pg = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield pg
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
async def pg_dsn(postgres) -> AsyncIterator[str]:
    """A fresh, empty database on the session's server."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield postgres.dsn(name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_config(request, tmp_path) -> dict[str, Any]:
    """Config fields selecting a fresh database of each backend (`running_control_plane(**db_config)`)."""
    if request.param == "sqlite":
        return {"db_path": tmp_path / "cp.db"}
    return {"db_path": tmp_path / "unused.db", "db_dsn": request.getfixturevalue("pg_dsn")}


async def refusal(verifier: Any, token: str, cluster: ClusterTrust) -> InvalidSubjectToken:
    """The error `verifier` (JWKS or TokenReview) refuses `token` with; the verifier is closed either way."""
    try:
        with pytest.raises(InvalidSubjectToken) as info:
            await verifier.verify(token, cluster)
    finally:
        await verifier.close()
    return info.value


async def reason_of(attestor: Attestor, token: str) -> str:
    """Why `attestor` refuses `token` (always a 401 invalid_subject_token)."""
    with pytest.raises(InvalidSubjectToken) as info:
        await attestor.attest(token)
    assert info.value.code == "invalid_subject_token" and info.value.status == 401
    return info.value.reason


class Clusters:
    """The clusters the attestor may look up by issuer (the registry, without a store)."""

    def __init__(self, *clusters: ClusterTrust) -> None:
        self.by_issuer = {c.issuer: c for c in clusters}

    async def cluster_by_issuer(self, issuer: str) -> ClusterTrust | None:
        return self.by_issuer.get(issuer)
