"""`sesamectl`: the admin CLI over the REST API (SESAME_URL, SESAME_API_KEY).

    sesamectl apply -f config/ [--prune]  |  diff -f config/  |  export > config.yaml
    sesamectl workloads list [--all] [--limit N] [--filter namespace=prod]
    sesamectl workloads create NAME --namespace NS --service-account SA [--cluster C]
    sesamectl targets create NAME --set host=api.example.com --set injection.type=bearer
    sesamectl credential-providers create NAME --set type=static --data-file secret.json
    sesamectl credential-providers rotate ID_OR_NAME --data-file new-secret.json
    sesamectl policies create NAME --set workload_id=payments --set target_id=stripe ...
    sesamectl policies delete ID_OR_NAME
    sesamectl audit [--workload-id ID_OR_NAME] [--type T] [--since TS] ... | audit verify | export | prune
    sesamectl api-keys create NAME --role admin
    sesamectl approvals list [--filter status=pending]  |  approvals approve ID [--window-seconds N]
    sesamectl approvals deny ID [--comment TEXT]
    sesamectl proxies list  |  discovery list [--filter governed=false]  |  keys rotate
    sesamectl completion bash|zsh|fish  |  sesamectl --version

Objects are named by id or name wherever one is taken. HTTPS with a private CA: `--ca-cert FILE`
(env SESAME_CA_CERT); through a port-forward, `--tls-server-name NAME` (env SESAME_TLS_SERVER_NAME).
Tables by default, `-o json|yaml` otherwise. API errors print one line and exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import argcomplete

from controlplane.cli._http import Api, CliError
from controlplane.cli._parser import build_parser
from controlplane.cli._tables import print_result, render_table
from controlplane.cli.commands import run

__all__ = ["CliError", "main", "render_table"]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = build_parser()
    argcomplete.autocomplete(parser)  # answers the completion scripts' requests, then exits
    args = parser.parse_args(argv)
    if args.resource == "completion":
        print(argcomplete.shellcode(["sesamectl"], shell=args.shell))
        return 0
    url = args.url or env.get("SESAME_URL")
    key = args.api_key or env.get("SESAME_API_KEY")
    ca_cert = args.ca_cert or env.get("SESAME_CA_CERT")
    server_name = args.tls_server_name or env.get("SESAME_TLS_SERVER_NAME")
    try:
        if not url or not key:
            raise CliError("set SESAME_URL and SESAME_API_KEY (or pass --url/--api-key)", 2)
        outcome = run(args, Api(url, key, ca_cert=ca_cert, tls_server_name=server_name))
        print_result(outcome.result, outcome.columns, args.output)
    except CliError as exc:
        print(f"sesamectl: error: {exc}", file=sys.stderr)
        return exc.status
    return outcome.status
