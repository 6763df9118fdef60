"""The chart's `database` section: SQLite (one replica, a volume) or PostgreSQL (replicas, no volume).

helm template renders the chart (no cluster: see chart.py); the control plane's own Config parses
the rendered environment, with Secret references resolved the way the kubelet resolves them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.config import Config

from .chart import FULLNAME, TESTDATA, container_env, find, kinds, literal_env, render, template_process

PG_VALUES = "values-postgres-replicas.yaml"
BUILT_DSN = (
    "database.type=postgresql",
    "database.postgresql.host=db.internal",
    "database.postgresql.user=sesame@corp",
    "database.postgresql.passwordSecret.name=sesame-db-password",
    "database.postgresql.sslMode=require",
)
SQLITE_REPLICAS_MESSAGE = (
    "replicaCount=3 needs database.type=postgresql: SQLite lives on one volume and serves exactly one "
    "control plane replica"
)
FAKE_SECRET = "correct horse battery staple"


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def resolved_env(deployment: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's env as the kubelet builds it: secretKeyRefs read from ``secrets``."""
    env = {}
    for name, value in container_env(deployment).items():
        if isinstance(value, dict) and "secretKeyRef" in value:
            ref = value["secretKeyRef"]
            if (ref["name"], ref["key"]) not in secrets:
                continue
            value = secrets[(ref["name"], ref["key"])]
        env[name] = value
    return env


def assert_no_inline_secret(docs: list[dict[str, Any]]) -> None:
    """No literal env value anywhere carries a DSN with a password (user:password@)."""
    for doc in docs:
        if doc["kind"] == "Deployment":
            for value in literal_env(doc).values():
                assert not re.match(r"^postgres(ql)?://[^/@]*:[^/@]*@", value), value


def test_postgres_replicas_get_the_dsn_from_a_secret_and_no_volume(helm: Path):
    docs = render(helm, PG_VALUES)
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    env = container_env(deployment)
    assert env["SESAME_DB"] == {"secretKeyRef": {"name": "sesame-db", "key": "dsn"}}
    assert_no_inline_secret(docs)
    assert "PersistentVolumeClaim" not in kinds(docs)
    spec = pod_spec(deployment)
    assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v or v["name"] == "data"]
    [cp] = spec["containers"]
    assert "/var/lib/sesame" not in {m["mountPath"] for m in cp["volumeMounts"]}
    # The server's CA is mounted read-only and named by PGSSLROOTCERT (asyncpg reads it like libpq).
    [ca] = [v for v in spec["volumes"] if v["name"] == "postgres-ca"]
    assert ca["secret"] == {
        "secretName": "sesame-db-ca",
        "defaultMode": 0o444,
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    [mount] = [m for m in cp["volumeMounts"] if m["name"] == "postgres-ca"]
    assert mount["readOnly"] is True
    assert env["PGSSLROOTCERT"] == f"{mount['mountPath']}/ca.crt"

    dsn = "postgresql://sesame:s3cret@db.internal:5432/sesame?sslmode=verify-full"
    config = Config.build({}, resolved_env(deployment, {("sesame-db", "dsn"): dsn}))
    assert config.db_dsn == dsn and config.db_location == dsn


def test_postgres_replicas_spread_over_nodes_and_keep_one_up_during_drains(helm: Path, tmp_path):
    docs = render(helm, PG_VALUES)
    deployment = find(docs, "Deployment")
    [term] = pod_spec(deployment)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )
    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]

    # Explicit affinity replaces the default; a single replica has none.
    pool = {"key": "pool", "operator": "In", "values": ["system"]}
    custom = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [pool]}}
            ]
        }
    }
    values = tmp_path / "affinity.yaml"  # an absolute path: chart.values_args takes it as is
    values.write_text(
        yaml.safe_dump({**yaml.safe_load((TESTDATA / PG_VALUES).read_text()), "affinity": custom})
    )
    pinned = find(render(helm, str(values)), "Deployment")
    assert pod_spec(pinned)["affinity"] == custom
    single = find(render(helm, PG_VALUES, "replicaCount=1"), "Deployment")
    assert "affinity" not in pod_spec(single)


def test_single_replica_pdb_keeps_drains_possible_and_explicit_values_win(helm: Path):
    assert find(render(helm), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in find(render(helm), "PodDisruptionBudget")["spec"]
    spec = find(render(helm, PG_VALUES, "podDisruptionBudget.maxUnavailable=2"), "PodDisruptionBudget")[
        "spec"
    ]
    assert spec["maxUnavailable"] == 2 and "minAvailable" not in spec
    spec = find(render(helm, "values-custom-resources.yaml"), "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 1


def test_built_dsn_has_no_password_and_takes_it_from_the_secret_as_pgpassword(helm: Path):
    docs = render(helm, None, *BUILT_DSN, "replicaCount=2")
    deployment = find(docs, "Deployment")
    env = container_env(deployment)
    assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "sesame-db-password", "key": "password"}}
    # The user name is URL-escaped; no password, no CA (sslmode=require).
    assert env["SESAME_DB"] == "postgresql://sesame%40corp@db.internal:5432/sesame?sslmode=require"
    assert "PGSSLROOTCERT" not in env
    assert_no_inline_secret(docs)
    assert FAKE_SECRET not in str(docs)
    names = [e["name"] for e in pod_spec(deployment)["containers"][0]["env"]]
    assert names.index("PGPASSWORD") < names.index("SESAME_DB")
    config = Config.build({}, resolved_env(deployment, {("sesame-db-password", "password"): FAKE_SECRET}))
    assert config.db_dsn == env["SESAME_DB"]
    assert FAKE_SECRET not in repr(config)


def test_sqlite_keeps_one_replica_on_a_volume_with_recreate(helm: Path):
    deployment = find(render(helm), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container_env(deployment)["SESAME_DB"] == "/var/lib/sesame/sesame.db"
    assert "PGPASSWORD" not in container_env(deployment)
    [data] = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-data"
    assert "affinity" not in pod_spec(deployment)


@pytest.mark.parametrize("persistence", ["true", "false"])
def test_sqlite_with_several_replicas_fails_to_render(helm: Path, persistence: str):
    proc = template_process(helm, None, "replicaCount=3", f"persistence.enabled={persistence}")
    assert proc.returncode != 0
    assert SQLITE_REPLICAS_MESSAGE in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("database.type=postgresql",),
            "database.type=postgresql needs database.postgresql.dsnSecret.name (a Secret holding the DSN) "
            "or database.postgresql.host and database.postgresql.passwordSecret.name",
        ),
        (
            ("database.type=postgresql", "database.postgresql.host=db.internal"),
            "or database.postgresql.host and database.postgresql.passwordSecret.name",
        ),
        (
            (*BUILT_DSN[:-1], "database.postgresql.sslMode=verify-full"),
            "database.postgresql.sslMode=verify-full verifies the server against a CA: "
            "set database.postgresql.caSecret.name",
        ),
    ],
    ids=["nothing", "no-password", "verify-without-ca"],
)
def test_incomplete_postgres_settings_fail_to_render(helm: Path, sets: tuple[str, ...], message: str):
    proc = template_process(helm, None, *sets)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_verify_full_with_a_ca_secret_renders(helm: Path):
    env = container_env(
        find(
            render(
                helm,
                None,
                *BUILT_DSN[:-1],
                "database.postgresql.sslMode=verify-full",
                "database.postgresql.caSecret.name=db-ca",
            ),
            "Deployment",
        )
    )
    assert env["SESAME_DB"].endswith("?sslmode=verify-full")
    assert env["PGSSLROOTCERT"] == "/etc/sesame/postgres/ca.crt"
