"""sesamectl's command line: resources, verbs and their options."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from controlplane.cli.commands import RESOURCES, VIEWS

__all__ = ["SHELLS", "build_parser", "sesame_version"]

SHELLS = ("bash", "zsh", "fish")
ID_HELP = "the object's id or its name"


def sesame_version() -> str:
    try:
        return version("sesame")
    except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesamectl", description="Sesame admin CLI")
    parser.add_argument("--version", action="version", version=f"sesamectl {sesame_version()}")
    _common_args(parser, None)
    # Sub-commands accept the same options anywhere; SUPPRESS keeps them from resetting the top level.
    common = argparse.ArgumentParser(add_help=False)
    _common_args(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="resource", required=True)
    for name in RESOURCES:
        res = sub.add_parser(name, parents=[common], help=f"manage {name}")
        verbs = res.add_subparsers(dest="verb", required=True)
        _list_args(verbs.add_parser("list", parents=[common], help=f"list {name}"))
        # The API has no GET /v1/api-keys/{id}: keys are listed (prefix only), never fetched one by one.
        for verb in ("delete",) if name == "api-keys" else ("get", "delete"):
            verbs.add_parser(verb, parents=[common], help=f"{verb} one").add_argument("id", help=ID_HELP)
        create = verbs.add_parser("create", parents=[common], help="create one")
        create.add_argument(
            "name", nargs="?" if name == "policies" else None, help="its name (unique among " + name + ")"
        )
        _body_args(create)
        if name == "workloads":
            create.add_argument("--namespace", help="the pods' Kubernetes namespace")
            create.add_argument("--service-account", help="the pods' Kubernetes service account")
            create.add_argument("--cluster", help="name of the registered cluster the pods run in")
        if name == "api-keys":
            create.add_argument(
                "--role", choices=("viewer", "admin", "owner"), default="viewer", help="what the key may do"
            )
        if name != "api-keys":
            patch = verbs.add_parser("update", parents=[common], help="change fields of one")
            patch.add_argument("id", help=ID_HELP)
            _body_args(patch)
        if name == "credential-providers":
            rotate = verbs.add_parser("rotate", parents=[common], help="replace the secret config fields")
            rotate.add_argument("id", help=ID_HELP)
            _body_args(rotate)
    for name in VIEWS:
        view = sub.add_parser(name, parents=[common], help=f"show {name} (reported by the proxies)")
        _list_args(
            view.add_subparsers(dest="verb", required=True).add_parser(
                "list", parents=[common], help=f"list {name}"
            )
        )
    approvals = sub.add_parser("approvals", parents=[common], help="list, approve or deny approvals")
    verbs = approvals.add_subparsers(dest="verb", required=True)
    _list_args(
        verbs.add_parser("list", parents=[common], help="list approvals"), filter_help="e.g. status=pending"
    )
    for verb in ("approve", "deny"):
        decide = verbs.add_parser(verb, parents=[common], help=f"{verb} a pending request")
        decide.add_argument("id", help="the approval's id")
        decide.add_argument("--window-seconds", type=int, help="how long the decision holds")
        decide.add_argument("--comment", help="why (kept in the audit log)")
    keys = sub.add_parser("keys", parents=[common], help="signing keys of the control plane's JWTs")
    keys.add_subparsers(dest="verb", required=True).add_parser(
        "rotate", parents=[common], help="make a new current signing key (owner)"
    )
    audit = sub.add_parser("audit", parents=[common], help="read, export, verify, prune the audit log")
    audit.add_argument(
        "action",
        nargs="?",
        choices=("list", "export", "verify", "prune"),
        default="list",
        help="list events (default), export them, verify the hash chain, or prune old ones",
    )
    for flag, text in (
        ("workload-id", "only events of this workload (id or name)"),
        ("target", "only events of this target (name)"),
        ("type", "only events of this type, e.g. token.issued"),
        ("actor", "only events of this actor (API key id, workload id, ...)"),
        ("correlation-id", "only events of this request"),
        ("since", "only events at or after this time (RFC 3339)"),
        ("until", "only events before this time (RFC 3339)"),
    ):
        audit.add_argument(f"--{flag}", help=text)
    audit.add_argument("--limit", type=int, help="events per page (list) or per export")
    audit.add_argument("--all", action="store_true", help="follow next_cursor to the end")
    audit.add_argument("--format", choices=("json", "csv"), default="json", help="export format")
    audit.add_argument("--cursor", help="export: continue where the previous export stopped")
    audit.add_argument("--days", type=int, help="prune: delete events older than this")
    sub.add_parser("permissions", parents=[common], help="show the permission catalog")
    _declarative(sub, common)
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    return parser


def _declarative(sub: Any, common: argparse.ArgumentParser) -> None:
    for verb, text in (
        ("apply", "create or update the objects the documents describe (idempotent)"),
        ("diff", "show what apply would change; exit status 1 when something would"),
    ):
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument(
            "-f",
            "--filename",
            action="append",
            required=True,
            metavar="FILE|DIR",
            help="a YAML file or a directory of them (recursively); repeatable",
        )
        p.add_argument(
            "--prune",
            action="store_true",
            help="also delete objects labelled sesame.dev/managed-by=sesamectl that no document names",
        )
        p.add_argument(
            "-l",
            "--selector",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="prune only objects that also carry these labels",
        )
    export = sub.add_parser("export", parents=[common], help="print every object as documents (YAML)")
    export.add_argument(
        "--kind",
        action="append",
        choices=("Cluster", "Target", "CredentialProvider", "Workload", "Policy"),
        help="only objects of this kind; repeatable",
    )


def _common_args(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--url", default=default, help="control plane URL (env SESAME_URL)")
    p.add_argument("--api-key", default=default, help="admin API key (env SESAME_API_KEY)")
    p.add_argument("--ca-cert", default=default, help="PEM file of a CA to trust (env SESAME_CA_CERT)")
    p.add_argument(
        "--tls-server-name",
        default=default,
        help="name to verify the server certificate against, e.g. through a port-forward "
        "(env SESAME_TLS_SERVER_NAME)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default=default,
        help="output format (default: table; export: yaml)",
    )
    p.add_argument(
        "--json",
        action="store_const",
        const="json",
        dest="output",
        default=default,
        help="same as -o json",
    )


def _list_args(p: argparse.ArgumentParser, *, filter_help: str | None = None) -> None:
    p.add_argument("--limit", type=int, default=100, help="objects per page")
    p.add_argument("--all", action="store_true", help="follow next_cursor to the end")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=filter_help or "only objects whose field KEY equals VALUE; repeatable",
    )


def _body_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a field; dotted keys nest (config.client_id=x); JSON values are parsed",
    )
    p.add_argument("--data", help="JSON body (merged under --set)")
    p.add_argument("--data-file", help="file with a JSON body, or - for stdin (keeps secrets out of argv)")
