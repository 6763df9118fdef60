"""`sesamectl`: the admin CLI over the REST API (SESAME_URL, SESAME_API_KEY).

    sesamectl workloads list [--all] [--limit N] [--filter namespace=prod]
    sesamectl workloads create NAME --namespace NS --service-account SA [--cluster C]
    sesamectl targets create NAME --set host=api.example.com --set injection.type=bearer
    sesamectl credential-providers create NAME --set type=static --data-file secret.json
    sesamectl credential-providers rotate ID --data-file new-secret.json
    sesamectl policies delete ID
    sesamectl audit [--workload-id ID] [--type T] [--since TS] ...  |  audit verify | export | prune --days N
    sesamectl api-keys create NAME --role admin
    sesamectl approvals list [--filter status=pending]  |  approvals approve ID [--window-seconds N]
    sesamectl approvals deny ID [--comment TEXT]
    sesamectl proxies list  |  discovery list [--filter governed=false]  |  keys rotate

HTTPS with a private CA: `--ca-cert FILE` (env SESAME_CA_CERT).
Tables by default, `--json` for raw JSON. API errors print one line and exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from controlplane.cli._http import Api, CliError
from controlplane.cli._parser import build_parser
from controlplane.cli._tables import print_result, render_table
from controlplane.cli.commands import run

__all__ = ["CliError", "main", "render_table"]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    url = args.url or env.get("SESAME_URL")
    key = args.api_key or env.get("SESAME_API_KEY")
    ca_cert = args.ca_cert or env.get("SESAME_CA_CERT")
    try:
        if not url or not key:
            raise CliError("set SESAME_URL and SESAME_API_KEY (or pass --url/--api-key)", 2)
        result, columns = run(args, Api(url, key, ca_cert=ca_cert))
        print_result(result, columns, args.json)
    except CliError as exc:
        print(f"sesamectl: error: {exc}", file=sys.stderr)
        return exc.status
    return 0
