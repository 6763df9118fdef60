"""/v1/credential-providers: secrets are write-only, sealed at rest, and never logged."""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest

from controlplane.api.credential_providers import secret_fields
from controlplane.appkeys import ENVELOPE, STORE
from controlplane.config import Config
from controlplane.errors import StartupError
from controlplane.main import main
from controlplane.provider_secrets import load_provider
from controlplane.providers import SECRET_FIELDS
from devkit.controlplane_server import new_kek, running_control_plane
from tests.controlplane.conftest import client_for

SECRET = "sk_live_SUPER-secret-value-0123456789"
ROTATED = "sk_live_ROTATED-secret-value-9876543210"


def oauth_body(secret: str = SECRET) -> dict:
    return {
        "name": "stripe",
        "type": "oauth2-client-credentials",
        "config": {"token_url": "https://auth.example/token", "client_id": "cid", "client_secret": secret},
    }


def _db_bytes(cp) -> bytes:
    path = cp.config.db_path
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_secret_is_in_no_response_no_log_line_and_not_in_the_database(admin, control_plane, caplog):
    caplog.set_level(logging.DEBUG)
    created = await admin.post("/v1/credential-providers", json=oauth_body())
    assert created.status_code == 201
    body = created.json()
    assert body["secret_fields"] == ["client_secret"] and "client_secret" not in body["config"]
    pid = body["id"]
    responses = [
        created,
        await admin.get(f"/v1/credential-providers/{pid}"),
        await admin.get("/v1/credential-providers"),
        await admin.patch(f"/v1/credential-providers/{pid}", json={"config": {"client_id": "cid2"}}),
        await admin.post(
            f"/v1/credential-providers/{pid}/rotate", json={"config": {"client_secret": ROTATED}}
        ),
        await admin.get("/v1/audit", params={"limit": 100}),
        await admin.get("/v1/audit/export"),
        await admin.post("/v1/credential-providers", json=oauth_body()),  # 409 conflict
        await admin.post("/v1/credential-providers", json={**oauth_body(), "name": "x", "bad": SECRET}),
    ]
    assert responses[7].status_code == 409 and responses[8].status_code == 400
    for resp in responses:
        assert SECRET not in resp.text and ROTATED not in resp.text
    for record in caplog.records:
        assert SECRET not in record.getMessage() and ROTATED not in record.getMessage()
    db = _db_bytes(control_plane)
    assert SECRET.encode() not in db and ROTATED.encode() not in db

    record, secret = await load_provider(control_plane.app[STORE].registry, control_plane.app[ENVELOPE], pid)
    assert secret == {"client_secret": ROTATED}
    assert record["config"]["client_id"] == "cid2"


async def test_secret_fields_cannot_be_patched_and_rotate_validates(admin):
    pid = (await admin.post("/v1/credential-providers", json=oauth_body())).json()["id"]
    resp = await admin.patch(f"/v1/credential-providers/{pid}", json={"config": {"client_secret": "x"}})
    assert resp.status_code == 400 and resp.json()["field"] == "config.client_secret"
    resp = await admin.post(f"/v1/credential-providers/{pid}/rotate", json={"config": {"client_id": "x"}})
    assert resp.status_code == 400 and resp.json()["field"] == "config.client_id"
    assert (
        await admin.post(
            "/v1/credential-providers/cp_missing/rotate", json={"config": {"client_secret": "x"}}
        )
    ).status_code == 404
    types = [e["type"] for e in (await admin.get("/v1/audit")).json()["events"]]
    assert "credential_provider.created" in types


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "s", "type": "static", "config": {}}, "config.value"),
        ({"name": "s", "type": "ldap", "config": {}}, "type"),
        (
            {"name": "s", "type": "oauth2-client-credentials", "config": {"client_id": "c"}},
            "config.token_url",
        ),
        ({"name": "s", "type": "signed-jwt", "config": {"ttl_seconds": "5"}}, "config.ttl_seconds"),
        ({"name": "s", "type": "static", "config": {"value": "v", "other": 1}}, "config.other"),
    ],
)
async def test_config_is_validated_per_type(admin, body, field):
    resp = await admin.post("/v1/credential-providers", json=body)
    assert resp.status_code == 400 and resp.json()["field"] == field


def test_secret_fields_match_the_provider_implementations():
    for ptype, fields in SECRET_FIELDS.items():
        assert set(secret_fields(ptype)) == set(fields)


async def test_starting_without_kek_when_secrets_exist_is_a_clear_error(tmp_path, capsys):
    db = tmp_path / "cp.db"
    kek = new_kek()
    async with running_control_plane(db, kek=kek) as cp:
        async with client_for(cp, cp.owner_key) as c:
            resp = await c.post(
                "/v1/credential-providers", json={"name": "s", "type": "static", "config": {"value": SECRET}}
            )
            assert resp.status_code == 201
    with pytest.raises(StartupError, match="SESAME_KEK"):
        async with running_control_plane(db, kek=b""):
            pass
    with pytest.raises(StartupError, match="did not seal"):
        async with running_control_plane(db, kek=new_kek()):
            pass
    async with running_control_plane(db, kek=kek) as cp:  # the right KEK still works
        async with client_for(cp, cp.owner_key) as c:
            assert (await c.get("/v1/credential-providers")).json()["data"][0]["secret_fields"] == ["value"]


def test_cli_serve_without_kek_exits_with_one_line(tmp_path, capsys):
    db = tmp_path / "cp.db"

    async def seed() -> None:
        async with running_control_plane(db) as cp, client_for(cp, cp.owner_key) as c:
            body = {"name": "s", "type": "static", "config": {"value": "v"}}
            assert (await c.post("/v1/credential-providers", json=body)).status_code == 201

    asyncio.run(seed())
    code = main(["serve", "--db", str(db), "--listen", "127.0.0.1:0"], env={})
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("sesame-controlplane: error:") and "SESAME_KEK" in err[-1]


async def test_creating_a_secret_without_kek_is_503(tmp_path):
    async with running_control_plane(tmp_path / "cp.db", kek=b"") as cp:
        async with client_for(cp, cp.owner_key) as c:
            resp = await c.post(
                "/v1/credential-providers", json={"name": "s", "type": "static", "config": {"value": "v"}}
            )
            assert resp.status_code == 503 and resp.json()["error"] == "kek_unavailable"


def test_kek_from_env_must_be_32_bytes_base64():
    ok = Config.build({}, {"SESAME_KEK": base64.b64encode(b"k" * 32).decode()})
    assert ok.kek == b"k" * 32 and "k" * 8 not in repr(ok)
    for bad in ("not base64!!", base64.b64encode(b"short").decode()):
        with pytest.raises(StartupError):
            Config.build({}, {"SESAME_KEK": bad})
