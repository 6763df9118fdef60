"""A local Kubernetes-style cluster issuer for tests and `make demo`.

No kube-apiserver can run here, so this serves the exact wire format one serves: the OIDC
discovery document at `/.well-known/openid-configuration`, the JWKS at `/openid/v1/jwks`,
projected service-account tokens with the apiserver's claim layout, the
`authentication.k8s.io/v1` TokenReview API, and `GET /api/v1/namespaces/{ns}/pods/{name}` (v1 Pod
JSON, or the apiserver's 404 NotFound Status), both reachable through the real `kubernetes` client
with the kubeconfig from `write_kubeconfig`.

Pods: `mint(...)` registers the token's pod (like the apiserver, which binds tokens to existing
pods) unless `register_pod=False`; `add_pod`, `delete_pod`, `terminate_pod` and `recreate_pod`
change them afterwards, `pod_requests` counts the pod GETs, `forbid_pod_reads` makes them 403.

    async with ClusterIssuer() as issuer:
        token = issuer.mint(namespace="shop", service_account="checkout", audience="sesame")

    with ClusterIssuer.in_thread() as issuer:      # from synchronous code (the demo)
        issuer.write_token(path, namespace="shop", service_account="checkout")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["DEFAULT_AUDIENCE", "DEFAULT_TTL_SECONDS", "ClusterIssuer", "SigningKey"]

DEFAULT_AUDIENCE = "sesame"
DEFAULT_TTL_SECONDS = 3600
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
TOKENREVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
POD_PATH = "/api/v1/namespaces/{namespace}/pods/{name}"

Clock = Callable[[], float]


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    """One service-account signing key; `kid` is derived like the apiserver's (SHA-256 of the DER key)."""

    alg: str
    private_key: Any
    kid: str

    @classmethod
    def generate(cls, alg: str) -> SigningKey:
        if alg == "RS256":
            private_key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"unsupported alg {alg!r}: the issuer signs with RS256 or ES256")
        der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
        return cls(alg=alg, private_key=private_key, kid=kid)

    def jwk(self) -> dict[str, str]:
        """The public JWK exactly as kube-apiserver lists it (use, kty, kid, alg, key material)."""
        public = self.private_key.public_key()
        if self.alg == "RS256":
            numbers = public.public_numbers()
            return {
                "use": "sig",
                "kty": "RSA",
                "kid": self.kid,
                "alg": self.alg,
                "n": _b64_uint(numbers.n),
                "e": _b64_uint(numbers.e),
            }
        numbers = public.public_numbers()
        return {
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": self.alg,
            "x": _b64_uint(numbers.x, 32),
            "y": _b64_uint(numbers.y, 32),
        }


@dataclass
class _Review:
    """What the TokenReview endpoint remembers: its caller credential and revoked token ids."""

    bearer: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    revoked_jti: set[str] = field(default_factory=set)
    requests: int = 0
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pod_requests: int = 0


class ClusterIssuer:
    """A cluster's service-account issuer served over HTTP on an ephemeral port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        issuer: str | None = None,
        algs: Sequence[str] = ("RS256", "ES256"),
        clock: Clock = time.time,
    ) -> None:
        self._host = host
        self._port = port
        self._issuer = issuer
        self._clock = clock
        self.keys: list[SigningKey] = [SigningKey.generate(alg) for alg in algs]
        self._review = _Review()
        self._runner: web.AppRunner | None = None
        self.forbid_pod_reads = False  # True: pod GETs answer 403 Forbidden (no `get pods` RBAC)
        self.url = ""

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> ClusterIssuer:
        app = web.Application()
        app.router.add_get(DISCOVERY_PATH, self._discovery)
        app.router.add_get(JWKS_PATH, self._jwks)
        app.router.add_post(TOKENREVIEW_PATH, self._tokenreview)
        app.router.add_get(POD_PATH, self._pod)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ClusterIssuer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, **kwargs: Any) -> Iterator[ClusterIssuer]:
        """Run the issuer on its own event loop in a daemon thread (for synchronous callers)."""
        issuer = cls(**kwargs)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sesame-cluster-issuer", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(issuer.start(), loop).result(timeout=30)
            yield issuer
        finally:
            asyncio.run_coroutine_threadsafe(issuer.close(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()

    # what a control plane registers ------------------------------------------------------------
    @property
    def issuer(self) -> str:
        """The `iss` claim; defaults to the served URL so discovery works from it."""
        return self._issuer or self.url

    @property
    def jwks_uri(self) -> str:
        return self.url + JWKS_PATH

    @property
    def reviewer_token(self) -> str:
        """The bearer credential the TokenReview endpoint requires (written into the kubeconfig)."""
        return self._review.bearer

    @property
    def tokenreview_requests(self) -> int:
        return self._review.requests

    @property
    def pod_requests(self) -> int:
        """How many `GET .../pods/{name}` requests the API served (any answer)."""
        return self._review.pod_requests

    def discovery_document(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted({k.alg for k in self.keys}),
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.keys]}

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Add a new signing key (published next to the old ones, like a multi-key apiserver)."""
        key = SigningKey.generate(alg)
        self.keys.append(key)
        return key

    def revoke(self, token: str) -> None:
        """Make TokenReview answer `authenticated: false` for this token (like a deleted pod)."""
        claims = jwt.decode(token, options={"verify_signature": False})
        self._review.revoked_jti.add(claims["jti"])

    # pods --------------------------------------------------------------------------------------
    def add_pod(
        self, *, namespace: str, name: str, service_account: str = "default", uid: str | None = None
    ) -> dict[str, Any]:
        """Create (or replace) a running pod; returns its v1 Pod object."""
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid or str(uuid.uuid4()),
                "resourceVersion": str(secrets.randbelow(10**9)),
                "creationTimestamp": _rfc3339(self._clock()),
                "labels": {"app": service_account},
            },
            "spec": {
                "serviceAccountName": service_account,
                "serviceAccount": service_account,  # the deprecated alias the apiserver still fills in
                "nodeName": "node-1",
                "containers": [{"name": "app", "image": "registry.example/app:1"}],
            },
            "status": {"phase": "Running"},
        }
        self._review.pods[(namespace, name)] = pod
        return pod

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._review.pods.get((namespace, name))

    def delete_pod(self, namespace: str, name: str) -> None:
        """The pod is gone: GETs answer 404 NotFound."""
        self._review.pods.pop((namespace, name), None)

    def terminate_pod(self, namespace: str, name: str, *, grace_seconds: int = 30) -> None:
        """Graceful deletion has begun: the pod is still served, with `deletionTimestamp` set."""
        metadata = self._review.pods[(namespace, name)]["metadata"]
        metadata["deletionTimestamp"] = _rfc3339(self._clock() + grace_seconds)
        metadata["deletionGracePeriodSeconds"] = grace_seconds

    def recreate_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """Same name, new uid (a StatefulSet pod replaced): old tokens name the old uid."""
        old = self._review.pods[(namespace, name)]
        return self.add_pod(
            namespace=namespace, name=name, service_account=old["spec"]["serviceAccountName"]
        )

    # tokens ------------------------------------------------------------------------------------
    def mint(
        self,
        *,
        namespace: str,
        service_account: str,
        audience: str | Sequence[str] = DEFAULT_AUDIENCE,
        ttl: int = DEFAULT_TTL_SECONDS,
        alg: str = "RS256",
        pod_name: str | None = None,
        pod_uid: str | None = None,
        node_name: str = "node-1",
        now: float | None = None,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: Sequence[str] = (),
        register_pod: bool = True,
    ) -> str:
        """A projected service-account token with the apiserver's claim layout.

        `claims` overrides or adds top-level claims and `drop` removes them (for negative tests).
        The token's pod is registered (served by the pods API) unless `register_pod=False`.
        """
        signer = key or self._key_for(alg)
        issued = int(self._clock() if now is None else now)
        pod_name = pod_name or f"{service_account}-{secrets.token_hex(3)}"
        pod_uid = pod_uid or str(uuid.uuid4())
        if register_pod:
            self.add_pod(namespace=namespace, name=pod_name, service_account=service_account, uid=pod_uid)
        body: dict[str, Any] = {
            "aud": [audience] if isinstance(audience, str) else list(audience),
            "exp": issued + ttl,
            "iat": issued,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": node_name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, node_name))},
                "pod": {"name": pod_name, "uid": pod_uid},
                "serviceaccount": {
                    "name": service_account,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{service_account}")),
                },
            },
            "nbf": issued,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
        }
        body.update(claims or {})
        for name in drop:
            body.pop(name, None)
        return jwt.encode(
            body, signer.private_key, algorithm=signer.alg, headers={"kid": signer.kid, **(headers or {})}
        )

    def write_token(self, path: str | Path, **mint_kwargs: Any) -> Path:
        """Mint a token into `path` the way the kubelet writes the projected token file."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(self.mint(**mint_kwargs))
        tmp.chmod(0o600)
        tmp.replace(target)
        return target

    def write_kubeconfig(self, path: str | Path) -> Path:
        """A kubeconfig that points the `kubernetes` client at this issuer's TokenReview API."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: local\n  cluster:\n    server: {self.url}\n"
            f"users:\n- name: reviewer\n  user:\n    token: {self._review.bearer}\n"
            "contexts:\n- name: local\n  context:\n    cluster: local\n    user: reviewer\n"
            "current-context: local\n"
        )
        target.chmod(0o600)
        return target

    def _key_for(self, alg: str) -> SigningKey:
        for key in reversed(self.keys):
            if key.alg == alg:
                return key
        raise ValueError(f"the issuer has no {alg} key")

    # handlers ----------------------------------------------------------------------------------
    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(self.discovery_document())

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks(), content_type="application/jwk-set+json")

    async def _tokenreview(self, request: web.Request) -> web.Response:
        self._review.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self._review.bearer}":
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        try:
            review = await request.json()
            spec = review["spec"]
            token = spec["token"]
        except (ValueError, KeyError, TypeError):
            return web.json_response(_status(400, "BadRequest", "invalid TokenReview"), status=400)
        audiences = spec.get("audiences") or []
        status = self._review_token(token, audiences)
        return web.json_response(
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
            status=201,
        )

    async def _pod(self, request: web.Request) -> web.Response:
        """`GET /api/v1/namespaces/{ns}/pods/{name}`: the v1 Pod, or the apiserver's Status on failure."""
        self._review.pod_requests += 1
        if request.headers.get("Authorization") != f"Bearer {self._review.bearer}":
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        details = {"name": name, "kind": "pods"}
        if self.forbid_pod_reads:
            message = (
                f'pods "{name}" is forbidden: User "system:serviceaccount:sesame:sesame" cannot get '
                f'resource "pods" in API group "" in the namespace "{namespace}"'
            )
            return web.json_response(_status(403, "Forbidden", message, details), status=403)
        pod = self._review.pods.get((namespace, name))
        if pod is None:
            missing = _status(404, "NotFound", f'pods "{name}" not found', details)
            return web.json_response(missing, status=404)
        return web.json_response(pod)

    def _review_token(self, token: str, audiences: list[str]) -> dict[str, Any]:
        """Authenticate like the apiserver: signature, expiry, audience intersection, revocation."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(k for k in self.keys if k.kid == kid)
            claims = jwt.decode(
                token,
                key.private_key.public_key(),
                algorithms=[key.alg],
                issuer=self.issuer,
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except (StopIteration, jwt.PyJWTError):
            return {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        now = self._clock()
        if claims.get("exp", 0) <= now or claims.get("nbf", 0) > now:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token, token has expired"}
        token_aud = claims.get("aud") or []
        token_aud = [token_aud] if isinstance(token_aud, str) else token_aud
        granted = [a for a in audiences if a in token_aud] if audiences else token_aud
        if not granted:
            return {
                "authenticated": False,
                "user": {},
                "error": "token audiences are invalid for the target audiences",
            }
        if claims.get("jti") in self._review.revoked_jti:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token, pod does not exist"}
        k8s = claims["kubernetes.io"]
        namespace = k8s["namespace"]
        extra = {
            "authentication.kubernetes.io/credential-id": [f"JTI={claims['jti']}"],
            "authentication.kubernetes.io/node-name": [k8s["node"]["name"]],
            "authentication.kubernetes.io/node-uid": [k8s["node"]["uid"]],
        }
        if k8s.get("pod"):  # tokens not bound to a pod carry no pod extras
            extra["authentication.kubernetes.io/pod-name"] = [k8s["pod"]["name"]]
            extra["authentication.kubernetes.io/pod-uid"] = [k8s["pod"]["uid"]]
        return {
            "authenticated": True,
            "user": {
                "username": claims["sub"],
                "uid": k8s["serviceaccount"]["uid"],
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                ],
                "extra": extra,
            },
            "audiences": granted,
        }


def _rfc3339(epoch: float) -> str:
    """A `metav1.Time` as the apiserver writes it (UTC, second precision, `Z`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `meta/v1` Status body, as the apiserver returns for request-level failures."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _b64_uint(value: int, length: int | None = None) -> str:
    size = length or max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()
