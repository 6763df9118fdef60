"""`sesame-k8s-bootstrap`: create the chart's stable Secrets in the cluster, once (a Helm hook Job).

GitOps tools render the chart with `helm template`, where `lookup` finds nothing, so nothing that
must stay the same may be generated at render time. The chart runs this command as a
pre-install/pre-upgrade and a post-install/post-upgrade hook Job (Argo CD: PreSync/PostSync):

- the KEK and bootstrap API key Secrets: created when missing, never changed afterwards;
- the webhook's serving Secret (unless cert-manager issues it): a CA that outlives its leaves and a
  leaf, renewed by `controlplane.serving_ca.plan` (the control plane reloads the files, no restart);
- the MutatingWebhookConfiguration's caBundle: set to that CA bundle when the configuration exists.

Idempotent: a second run changes nothing. Created Secrets carry no Helm ownership, so Helm never
deletes them (uninstalling keeps them; delete them by hand to wipe the data for good).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import logging
import os
import secrets
import string
import sys
from collections.abc import Callable, Sequence
from typing import Any

from controlplane.attest.kube import KubeApi
from controlplane.serving_ca import load_authorities, load_leaf, plan

__all__ = ["main", "run"]

log = logging.getLogger("sesame.bootstrap")

CREATED_BY = {"sesame.dev/created-by": "sesame-k8s-bootstrap"}
_ALPHANUM = string.ascii_letters + string.digits


def new_kek() -> dict[str, str]:
    """Key ``kek``: base64 of 32 random bytes (SESAME_KEK's format)."""
    return {"kek": base64.b64encode(secrets.token_bytes(32)).decode()}


def new_api_key() -> dict[str, str]:
    """Key ``api-key``: an owner API key in the control plane's ``ses_`` format."""
    return {"api-key": "ses_" + "".join(secrets.choice(_ALPHANUM) for _ in range(40))}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesame-k8s-bootstrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="default: in-cluster")
    parser.add_argument("--kek-secret", default="", help="create this Secret (key kek) when missing")
    parser.add_argument(
        "--bootstrap-secret", default="", help="create this Secret (key api-key) when missing"
    )
    parser.add_argument("--tls-secret", default="", help="keep this kubernetes.io/tls Secret current")
    parser.add_argument("--ca-secret", default="", help="where the CA keys live (default: <tls-secret>-ca)")
    parser.add_argument("--dns-names", default="", help="comma-separated names of the serving certificate")
    parser.add_argument("--ca-days", type=int, default=3650)
    parser.add_argument("--leaf-days", type=int, default=365)
    parser.add_argument("--webhook", default="", help="MutatingWebhookConfiguration whose caBundle to set")
    parser.add_argument("--labels", default="", help="k=v,... labels for the Secrets it creates")
    return parser


class Cluster:
    """The few API calls the bootstrap makes (CoreV1 Secrets, AdmissionregistrationV1 webhooks)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)

    def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def create_secret(
        self, namespace: str, name: str, data: dict[str, bytes], *, kind: str, labels: dict[str, str]
    ) -> bool:
        """False when another run created it first (409)."""
        from kubernetes.client.exceptions import ApiException

        body = _secret_body(name, data, kind=kind, labels=labels)
        try:
            self.core.create_namespaced_secret(namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def replace_secret(
        self, namespace: str, name: str, data: dict[str, bytes], *, kind: str, labels: dict[str, str]
    ) -> None:
        self.core.replace_namespaced_secret(
            name, namespace, _secret_body(name, data, kind=kind, labels=labels)
        )

    def set_ca_bundle(self, webhook: str, bundle: bytes) -> bool:
        """Patch every webhook's clientConfig.caBundle; False when the configuration does not exist yet."""
        from kubernetes.client.exceptions import ApiException

        try:
            current = self.admission.read_mutating_webhook_configuration(webhook)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        encoded = base64.b64encode(bundle).decode()
        hooks = current.webhooks or []
        if all(h.client_config.ca_bundle == encoded for h in hooks):
            return True
        ops = [
            {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
            for i in range(len(hooks))
        ]
        self.admission.patch_mutating_webhook_configuration(webhook, ops)
        return True


def _secret_body(name: str, data: dict[str, bytes], *, kind: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels, "annotations": dict(CREATED_BY)},
        "type": kind,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def run(
    args: argparse.Namespace,
    cluster: Cluster,
    *,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> dict[str, str]:
    """Do everything `args` asks; returns what happened per object (for the log and the tests)."""
    labels = dict(p.split("=", 1) for p in args.labels.split(",") if "=" in p)
    done: dict[str, str] = {}
    ns = args.namespace
    for name, factory in ((args.kek_secret, new_kek), (args.bootstrap_secret, new_api_key)):
        if not name:
            continue
        if cluster.read_secret(ns, name) is not None:
            done[name] = "kept"
            continue
        data = {k: v.encode() for k, v in factory().items()}
        created = cluster.create_secret(ns, name, data, kind="Opaque", labels=labels)
        done[name] = "created" if created else "kept"
    bundle = b""
    if args.tls_secret:
        bundle, done[args.tls_secret] = _serving(args, cluster, labels, now())
    if args.webhook and bundle:
        done[args.webhook] = "ca-bundle-set" if cluster.set_ca_bundle(args.webhook, bundle) else "absent"
    return done


def _serving(
    args: argparse.Namespace, cluster: Cluster, labels: dict[str, str], now: datetime.datetime
) -> tuple[bytes, str]:
    ns, tls_name = args.namespace, args.tls_secret
    ca_name = args.ca_secret or f"{tls_name}-ca"
    names = [n.strip() for n in args.dns_names.split(",") if n.strip()]
    if not names:
        raise SystemExit("sesame-k8s-bootstrap: --tls-secret needs --dns-names")
    stored_ca = cluster.read_secret(ns, ca_name) or {}
    stored_tls = cluster.read_secret(ns, tls_name)
    tls = stored_tls or {}
    result = plan(
        now=now,
        authorities=load_authorities(stored_ca.get("ca.crt", b""), stored_ca.get("ca.key", b"")),
        leaf=load_leaf(tls.get("tls.crt", b""), tls.get("tls.key", b"")),
        names=names,
        common_name=names[-2] if len(names) > 1 else names[0],
        ca_days=args.ca_days,
        leaf_days=args.leaf_days,
    )
    bundle = result.ca_bundle()
    if not result.changed and tls.get("ca.crt") == bundle:
        return bundle, "kept"
    ca_data = {"ca.crt": bundle, "ca.key": result.ca_keys()}
    if stored_ca:
        cluster.replace_secret(ns, ca_name, ca_data, kind="Opaque", labels=labels)
    else:
        cluster.create_secret(ns, ca_name, ca_data, kind="Opaque", labels=labels)
    cert, key = result.leaf_pem()
    # The CA Secret is written first: a crash here leaves a leaf that the next run re-issues.
    tls_data = {"tls.crt": cert, "tls.key": key, "ca.crt": bundle}
    if stored_tls is None:
        cluster.create_secret(ns, tls_name, tls_data, kind="kubernetes.io/tls", labels=labels)
        return bundle, "created"
    cluster.replace_secret(ns, tls_name, tls_data, kind="kubernetes.io/tls", labels=labels)
    return bundle, "renewed"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sesame-bootstrap %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    api = KubeApi(kubeconfig=args.kubeconfig)
    try:
        done = run(args, Cluster(api.client()))
    except Exception as exc:  # the Job's log is all an operator sees: say what failed, exit non-zero
        log.error("bootstrap failed: %s: %s", type(exc).__name__, exc)
        return 1
    for name, what in done.items():
        log.info("%s: %s", name, what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
