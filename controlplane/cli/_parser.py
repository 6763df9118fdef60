"""sesamectl's command line: resources, verbs and their options."""

from __future__ import annotations

import argparse
from typing import Any

from controlplane.cli.commands import RESOURCES, VIEWS

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesamectl", description="Sesame admin CLI")
    _common_args(parser, None)
    # Sub-commands accept the same options anywhere; SUPPRESS keeps them from resetting the top level.
    common = argparse.ArgumentParser(add_help=False)
    _common_args(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="resource", required=True)
    for name in RESOURCES:
        res = sub.add_parser(name, parents=[common], help=f"manage {name}")
        verbs = res.add_subparsers(dest="verb", required=True)
        _list_args(verbs.add_parser("list", parents=[common]))
        # The API has no GET /v1/api-keys/{id}: keys are listed (prefix only), never fetched one by one.
        for verb in ("delete",) if name == "api-keys" else ("get", "delete"):
            verbs.add_parser(verb, parents=[common]).add_argument("id")
        create = verbs.add_parser("create", parents=[common])
        create.add_argument("name", nargs="?" if name == "policies" else None)
        _body_args(create)
        if name == "workloads":
            create.add_argument("--namespace")
            create.add_argument("--service-account")
            create.add_argument("--cluster")
        if name == "api-keys":
            create.add_argument("--role", choices=("viewer", "admin", "owner"), default="viewer")
        if name != "api-keys":
            patch = verbs.add_parser("update", parents=[common])
            patch.add_argument("id")
            _body_args(patch)
        if name == "credential-providers":
            rotate = verbs.add_parser("rotate", parents=[common], help="replace the secret config fields")
            rotate.add_argument("id")
            _body_args(rotate)
    for name in VIEWS:
        view = sub.add_parser(name, parents=[common], help=f"show {name} (reported by the proxies)")
        _list_args(view.add_subparsers(dest="verb", required=True).add_parser("list", parents=[common]))
    approvals = sub.add_parser("approvals", parents=[common], help="list, approve or deny approvals")
    verbs = approvals.add_subparsers(dest="verb", required=True)
    _list_args(verbs.add_parser("list", parents=[common]), filter_help="e.g. status=pending")
    for verb in ("approve", "deny"):
        decide = verbs.add_parser(verb, parents=[common])
        decide.add_argument("id")
        decide.add_argument("--window-seconds", type=int, help="how long the decision holds")
        decide.add_argument("--comment")
    keys = sub.add_parser("keys", parents=[common], help="signing keys of the control plane's JWTs")
    keys.add_subparsers(dest="verb", required=True).add_parser(
        "rotate", parents=[common], help="make a new current signing key (owner)"
    )
    audit = sub.add_parser("audit", parents=[common], help="read, export, verify, prune the audit log")
    audit.add_argument("action", nargs="?", choices=("list", "export", "verify", "prune"), default="list")
    for flag in ("workload-id", "target", "type", "actor", "correlation-id", "since", "until"):
        audit.add_argument(f"--{flag}")
    audit.add_argument("--limit", type=int)
    audit.add_argument("--all", action="store_true")
    audit.add_argument("--format", choices=("json", "csv"), default="json", help="export format")
    audit.add_argument("--cursor", help="export: continue where the previous export stopped")
    audit.add_argument("--days", type=int, help="prune: delete events older than this")
    sub.add_parser("permissions", parents=[common], help="show the permission catalog")
    return parser


def _common_args(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--url", default=default, help="control plane URL (env SESAME_URL)")
    p.add_argument("--api-key", default=default, help="admin API key (env SESAME_API_KEY)")
    p.add_argument("--ca-cert", default=default, help="PEM file of a CA to trust (env SESAME_CA_CERT)")
    p.add_argument(
        "--json", action="store_true", default=False if default is None else default, help="print raw JSON"
    )


def _list_args(p: argparse.ArgumentParser, *, filter_help: str | None = None) -> None:
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--all", action="store_true", help="follow next_cursor to the end")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help=filter_help)


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
