"""A small declarative schema for JSON bodies and query strings.

One schema both validates (400 `invalid_request` naming the `field`) and documents
(`json_schema()` feeds /openapi.json). Unknown fields are rejected.

    WORKLOAD_IN = Obj({"name": Str(max_len=200), "tags": Dict(required=False)})
    body = parse(WORKLOAD_IN, data)             # -> dict, defaults filled in
    changes = parse(WORKLOAD_IN.partial(), data)  # PATCH: every field optional, no defaults
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from controlplane.errors import InvalidRequest

__all__ = [
    "HTTPS_URL_HINT",
    "HTTPS_URL_PATTERN",
    "MAX_JSON_DEPTH",
    "URL_PATTERN",
    "Bool",
    "Dict",
    "Int",
    "List",
    "Obj",
    "Spec",
    "Str",
    "decode_json",
    "parse",
    "parse_json",
    "parse_query",
]

# An absolute http(s) URL: a DNS name or a bracketed IPv6 literal, an optional port, then printable
# ASCII. Written with classes that mean the same in Python and ECMA-262 (no `\s`, `\w`, `\d`),
# so the OpenAPI pattern admits exactly what the server does.
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6_PATTERN = (  # RFC 4291 text forms (no embedded IPv4, no zone)
    rf"(?:{_H16}:){{7}}{_H16}|(?:{_H16}:){{1,7}}:|(?:{_H16}:){{1,6}}:{_H16}"
    rf"|(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}|(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}"
    rf"|(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}|(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}"
    rf"|{_H16}:(?::{_H16}){{1,6}}|:(?:(?::{_H16}){{1,7}}|:)"
)
_URL_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[(?:" + _IPV6_PATTERN + r")\])"
_URL_REST = r"(?::[0-9]{1,5})?(?:[/?#][!-~]*)?"
URL_PATTERN = r"https?://" + _URL_HOST + _URL_REST
# Where the control plane fetches from or trusts an issuer: https, or http on a loopback host
# (development: a local issuer or token endpoint on this machine).
_LOOPBACK_HOST = r"(?:localhost|127(?:\.[0-9]{1,3}){3}|\[::1\])"
HTTPS_URL_PATTERN = r"(?:https://" + _URL_HOST + r"|http://" + _LOOPBACK_HOST + r")" + _URL_REST
HTTPS_URL_HINT = "an absolute https URL (http only on a loopback host: localhost, 127.0.0.0/8, [::1])"
_MISSING: Any = object()
MAX_JSON_DEPTH = 64  # a Pod in an AdmissionReview nests ~15 deep; deeper bodies are abuse
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Base of every field spec. `default` applies when the field is absent."""

    required: bool = True
    default: Any = _MISSING
    nullable: bool = False
    description: str = ""
    # Extra JSON Schema keywords for /openapi.json: rules `check` (or the handler) enforces that the
    # basic keywords cannot say, e.g. a `format`, or `if`/`then` between fields.
    openapi: dict[str, Any] = field(default_factory=dict)

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        out = {**self.schema(), **self.openapi}
        if self.description:
            out["description"] = self.description
        if self.default is not _MISSING:
            out["default"] = self.default
        if self.nullable:
            out = {"anyOf": [out, {"type": "null"}]}
        return out

    def from_query(self, text: str, path: str) -> Any:
        return self.check(text, path)


@dataclass(frozen=True, kw_only=True)
class Str(Spec):
    min_len: int = 1
    max_len: int = 256
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    # What a value that does not match `pattern` should be, for the 400's message ("an absolute ...").
    pattern_hint: str = ""
    secret: bool = False  # write-only: never echoed back in errors

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise InvalidRequest(f"{path} must be a string", field=path)
        if self.choices is not None and value not in self.choices:
            raise InvalidRequest(f"{path} must be one of: {', '.join(self.choices)}", field=path)
        if not self.min_len <= len(value) <= self.max_len:
            raise InvalidRequest(f"{path} must be {self.min_len}..{self.max_len} characters long", field=path)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            if self.pattern_hint:
                raise InvalidRequest(f"{path} must be {self.pattern_hint}", field=path)
            raise InvalidRequest(f"{path} has an invalid format", field=path)
        return value

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "minLength": self.min_len, "maxLength": self.max_len}
        if self.choices is not None:
            out["enum"] = list(self.choices)
        if self.pattern is not None:
            # JSON Schema patterns match anywhere (ECMA-262 search); `check` uses fullmatch.
            out["pattern"] = f"^(?:{self.pattern})$"
        if self.secret:
            out["writeOnly"] = True
        return out


@dataclass(frozen=True, kw_only=True)
class Int(Spec):
    min: int | None = None
    max: int | None = None

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 443.0 is the integer 443 (JSON Schema agrees)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{path} must be an integer", field=path)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise InvalidRequest(f"{path} must be between {self.min} and {self.max}", field=path)
        return value

    def from_query(self, text: str, path: str) -> Any:
        try:
            value = int(text)
        except ValueError:
            raise InvalidRequest(f"{path} must be an integer", field=path) from None
        return self.check(value, path)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.min is not None:
            out["minimum"] = self.min
        if self.max is not None:
            out["maximum"] = self.max
        return out


@dataclass(frozen=True, kw_only=True)
class Bool(Spec):
    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise InvalidRequest(f"{path} must be a boolean", field=path)
        return value

    def from_query(self, text: str, path: str) -> Any:
        if text not in ("true", "false"):
            raise InvalidRequest(f"{path} must be true or false", field=path)
        return text == "true"

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True, kw_only=True)
class Dict(Spec):
    """A free-form JSON object of bounded size (e.g. extra claims)."""

    max_bytes: int = 8192

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise InvalidRequest(f"{path} must be an object", field=path)
        if len(json.dumps(value)) > self.max_bytes:
            raise InvalidRequest(f"{path} is larger than {self.max_bytes} bytes", field=path)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "object"}


@dataclass(frozen=True, kw_only=True)
class List(Spec):
    item: Spec
    max_items: int = 100

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise InvalidRequest(f"{path} must be an array", field=path)
        if len(value) > self.max_items:
            raise InvalidRequest(f"{path} has more than {self.max_items} items", field=path)
        return [_check(self.item, v, f"{path}[{i}]") for i, v in enumerate(value)]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.json_schema(), "maxItems": self.max_items}


@dataclass(frozen=True, kw_only=True)
class Obj(Spec):
    """A JSON object with known fields; anything else is rejected."""

    fields: dict[str, Spec] = field(default_factory=dict)

    def __init__(self, fields: dict[str, Spec], **kw: Any) -> None:  # positional fields for brevity
        object.__setattr__(self, "fields", fields)
        for name in ("required", "default", "nullable", "description"):
            object.__setattr__(self, name, kw.pop(name, getattr(Spec, name, _MISSING)))
        object.__setattr__(self, "openapi", kw.pop("openapi", {}))
        if kw:
            raise TypeError(f"unknown options {sorted(kw)}")

    def partial(self) -> Obj:
        """The same fields, all optional and without defaults (for PATCH)."""
        fields = {k: dataclasses.replace(v, required=False, default=_MISSING) for k, v in self.fields.items()}
        return Obj(fields, description=self.description)

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise InvalidRequest(f"{path or 'body'} must be a JSON object", field=path or None)
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in self.fields:
                raise InvalidRequest(f"unknown field {prefix}{key}", field=f"{prefix}{key}")
        out: dict[str, Any] = {}
        for name, spec in self.fields.items():
            if name in value:
                out[name] = _check(spec, value[name], prefix + name)
            elif spec.default is not _MISSING:
                out[name] = spec.default
            elif spec.required:
                raise InvalidRequest(f"{prefix}{name} is required", field=prefix + name)
        return out

    def schema(self) -> dict[str, Any]:
        required = [n for n, s in self.fields.items() if s.required and s.default is _MISSING]
        out: dict[str, Any] = {
            "type": "object",
            "properties": {n: s.json_schema() for n, s in self.fields.items()},
            "additionalProperties": False,
        }
        if required:
            out["required"] = required
        return out


def _check(spec: Spec, value: Any, path: str) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise InvalidRequest(f"{path} must not be null", field=path)
    return spec.check(value, path)


def parse(schema: Obj, data: Any) -> dict[str, Any]:
    """Validate decoded JSON against `schema`; raise 400 invalid_request naming the field."""
    return schema.check(data, "")


def decode_json(raw: bytes | str) -> Any:
    """Decode a JSON request body (empty → None); 400 invalid_request unless it is valid JSON of
    Unicode text (no lone surrogates, which no store or log can encode) nested at most
    `MAX_JSON_DEPTH` deep."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
            _check_depth(text)
        data = json.loads(text or "null")
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(data, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    except (ValueError, UnicodeError):
        raise InvalidRequest("request body is not valid JSON") from None
    return data


def _check_depth(text: str) -> None:
    """Reject nesting beyond MAX_JSON_DEPTH before the recursive decoder sees it."""
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")


def parse_json(raw: bytes, schema: Obj) -> dict[str, Any]:
    """Decode and validate a request body."""
    return parse(schema, decode_json(raw))


def parse_query(schema: Obj, query: Any) -> dict[str, Any]:
    """Validate a query string (a multidict of strings); unknown parameters are rejected."""
    out: dict[str, Any] = {}
    for key in query:
        if key not in schema.fields:
            raise InvalidRequest(f"unknown query parameter {key}", field=key)
    for name, spec in schema.fields.items():
        if name in query:
            out[name] = spec.from_query(query[name], name)
        elif spec.default is not _MISSING:
            out[name] = spec.default
        elif spec.required:
            raise InvalidRequest(f"{name} is required", field=name)
    return out
