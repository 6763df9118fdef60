"""`sesame-proxy`: run the sidecar, create the pod CA, or run the init container's setup."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from proxy.config import DEFAULT_CA_DIR, DEFAULT_TRUST_DIR, ProxySettings, add_run_arguments
from proxy.errors import ProxyError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    import os

    parser = argparse.ArgumentParser(prog="sesame-proxy", description="Sesame sidecar proxy")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="run the proxy"))
    ca = sub.add_parser("init-ca", help="create the pod CA and write the trust bundle")
    ca.add_argument(
        "--ca-dir",
        default=os.environ.get("SESAME_CA_DIR", str(DEFAULT_CA_DIR)),
        help="private CA directory (env SESAME_CA_DIR)",
    )
    ca.add_argument(
        "--trust-dir",
        default=os.environ.get("SESAME_TRUST_DIR", str(DEFAULT_TRUST_DIR)),
        help="trust bundle directory for the apps (env SESAME_TRUST_DIR)",
    )
    sub.add_parser("init", help="init container: REDIRECT rules and pod CA", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["init"]:
        from proxy import init_container  # the K8s module; imported lazily

        return int(init_container.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    try:
        if args.command == "init-ca":
            from proxy.pod_ca import init_pod_ca

            paths = init_pod_ca(Path(args.ca_dir), Path(args.trust_dir))
            print(json.dumps({k: str(v) for k, v in paths.items()}))
            return 0
        settings = ProxySettings.from_namespace(args)
    except ProxyError as exc:
        print(json.dumps(exc.body()), file=sys.stderr)
        return 2
    from proxy.app import run
    from proxy.logs import configure_logging

    configure_logging(settings.log_level)
    try:
        import uvloop

        uvloop.run(run(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
