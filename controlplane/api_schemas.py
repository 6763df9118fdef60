"""Component schemas of the API's responses, referenced from the routes (`Route.response`).

`component(name, schema)` registers a schema under `#/components/schemas/<name>` and returns the
reference; `page_of(name)` the list response of a collection. `build_openapi` publishes every
registered component. Field names are snake_case throughout.
"""

from __future__ import annotations

from typing import Any

from controlplane.validation import Obj

__all__ = [
    "COMPONENTS",
    "TIMESTAMP",
    "component",
    "nullable",
    "page_of",
    "record_schema",
]

COMPONENTS: dict[str, dict[str, Any]] = {}
TIMESTAMP = {"type": "string", "format": "date-time", "description": "RFC 3339 UTC, milliseconds"}
ID = {"type": "string", "description": "stable id, e.g. wl_…"}
LABELS_OUT = {"type": "object", "additionalProperties": {"type": "string"}}


def component(name: str, schema: dict[str, Any]) -> dict[str, str]:
    """Register `schema` as `name` (once; the same schema again is fine) and return its `$ref`."""
    if COMPONENTS.get(name, schema) != schema:
        raise ValueError(f"component schema {name} is defined twice, differently")
    COMPONENTS[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def page_of(name: str, *, key: str = "data") -> dict[str, str]:
    """`{<key>: [<name>], next_cursor}` registered as `<name>List` (or `<name>Page` for `events`)."""
    suffix = "List" if key == "data" else "Page"
    return component(
        f"{name}{suffix}",
        {
            "type": "object",
            "required": [key, "next_cursor"],
            "properties": {
                key: {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
                "next_cursor": {**nullable({"type": "string"}), "description": "?cursor= of the next page"},
            },
        },
    )


def _response_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A request field's schema as it is answered: no write-only fields' defaults or limits."""
    return {k: v for k, v in schema.items() if k not in ("default", "minLength", "writeOnly")}


def record_schema(create: Obj, *, always: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A registry record as GET answers it: id, the create body's fields, labels, timestamps.

    Required: the fields the create body requires or defaults, and `always` (set by the server)."""
    props: dict[str, Any] = {"id": ID}
    required = ["id"]
    for name, spec in create.fields.items():
        if name in drop or getattr(spec, "secret", False):
            continue
        props[name] = _response_field(spec.json_schema())
        if (spec.required or "default" in spec.json_schema()) or name in always:
            required.append(name)
    props.update(labels=LABELS_OUT, created_at=TIMESTAMP, updated_at=TIMESTAMP)
    required += ["labels", "created_at", "updated_at"]
    return {"type": "object", "required": required, "properties": props}
