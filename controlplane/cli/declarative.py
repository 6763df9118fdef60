"""`sesamectl apply`, `diff` and `export`: converge the control plane on a set of documents.

A plan compares each document with the object of the same kind and name. Only the spec fields a
document sets are compared (fields it leaves out keep the value the server has, e.g. defaults);
labels are compared whole and always include `sesame.dev/managed-by: sesamectl`. Secrets cannot be
read back: they are sent when a CredentialProvider is created and when a change of its
destination fields requires them again (`sesamectl credential-providers rotate` replaces them).
With `--prune`, objects that carry the managed-by label (and the `--selector` labels) but that no
document names are deleted, Policies first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from controlplane.cli._http import Api, CliError
from controlplane.cli.documents import KINDS, MANAGED_BY, Document, KindModel, read_secret, to_document

__all__ = ["Change", "State", "apply", "export", "plan", "render_plan"]

PAGE_LIMIT = 100  # the API's largest page


@dataclass
class State:
    """Every registry object, per kind, by name (unnamed Policies by id)."""

    records: dict[str, dict[str, dict[str, Any]]]
    names: dict[str, dict[str, str]]  # kind -> id -> name

    @classmethod
    def read(cls, api: Api) -> State:
        records: dict[str, dict[str, dict[str, Any]]] = {}
        names: dict[str, dict[str, str]] = {}
        for kind, model in KINDS.items():
            rows = api.pages(model.path, {"limit": PAGE_LIMIT}, key="data", follow=True)
            records[kind] = {r.get("name") or r["id"]: r for r in rows}
            names[kind] = {r["id"]: r.get("name") or r["id"] for r in rows}
        return cls(records, names)


@dataclass
class Change:
    action: str  # create | update | delete | unchanged
    kind: str
    name: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (current, desired)
    doc: Document | None = None
    id: str | None = None
    error: str | None = None  # an in-place change the API does not allow

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def _covers(desired: Any, current: Any) -> bool:
    """True when `current` already has every value `desired` sets (mappings compared key by key)."""
    if isinstance(desired, dict) and isinstance(current, dict):
        return all(_covers(v, current.get(k)) for k, v in desired.items())
    return desired == current


def desired_labels(doc: Document) -> dict[str, str]:
    return {**doc.labels, MANAGED_BY[0]: MANAGED_BY[1]}


def _compare(model: KindModel, doc: Document, record: dict[str, Any], state: State) -> Change:
    current = model.spec(record, state.names)
    desired = {k: v for k, v in doc.spec.items() if k != "secrets"}
    for key in model.nullable:
        desired.setdefault(key, None)
    fields = {k: (current.get(k), v) for k, v in desired.items() if not _covers(v, current.get(k))}
    labels = desired_labels(doc)
    if (record.get("labels") or {}) != labels:
        fields["metadata.labels"] = (record.get("labels") or {}, labels)
    stuck = [k for k in fields if k in model.immutable]
    change = Change("update" if fields else "unchanged", doc.kind, doc.name, fields, doc, record["id"])
    if stuck:
        change.error = (
            f"{change.ref}: {', '.join('spec.' + k for k in stuck)} cannot change in place "
            "(delete the object, then apply again)"
        )
    return change


def _matches(record: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = record.get("labels") or {}
    return labels.get(MANAGED_BY[0]) == MANAGED_BY[1] and all(labels.get(k) == v for k, v in selector.items())


def plan(docs: list[Document], state: State, *, prune: bool, selector: dict[str, str]) -> list[Change]:
    """What applying `docs` would do: creates and updates in dependency order, then deletions."""
    changes = []
    for doc in docs:
        model = KINDS[doc.kind]
        record = state.records[doc.kind].get(doc.name)
        if record is None:
            spec = {k: (None, v) for k, v in doc.spec.items() if k != "secrets"}
            changes.append(Change("create", doc.kind, doc.name, spec, doc))
        else:
            changes.append(_compare(model, doc, record, state))
    if prune:
        named = {(d.kind, d.name) for d in docs}
        for kind in reversed(KINDS):
            for name, record in state.records[kind].items():
                if (kind, name) not in named and _matches(record, selector):
                    changes.append(Change("delete", kind, name, id=record["id"]))
    return changes


def render_plan(changes: Iterable[Change]) -> list[str]:
    """diff's output: `+` create, `~` update (one line per field), `-` delete, `!` not possible."""
    lines = []
    for c in changes:
        if c.action == "unchanged":
            continue
        mark = {"create": "+", "update": "~", "delete": "-"}[c.action]
        lines.append(f"{'!' if c.error else mark} {c.ref}{' (prune)' if c.action == 'delete' else ''}")
        if c.error:
            lines.append(f"    {c.error}")
        for key, (was, now) in c.fields.items():
            label = key if key.startswith("metadata.") else f"spec.{key}"
            lines.append(
                f"    {label}: {_show(was)} -> {_show(now)}"
                if c.action == "update"
                else f"    {label}: {_show(now)}"
            )
    return lines


def _show(value: Any) -> str:
    import json

    return "-" if value is None else json.dumps(value, sort_keys=True)


def _secrets_needed(change: Change) -> bool:
    doc = change.doc
    if doc is None or doc.kind != "CredentialProvider" or not doc.spec.get("secrets"):
        return False
    if change.action == "create":
        return True
    if change.action != "update":
        return False
    from controlplane.providers import DESTINATION_FIELDS

    changed = change.fields.get("config", (None, {}))[1] or {}
    return bool(set(changed) & set(DESTINATION_FIELDS.get(doc.spec["type"], ())))


def _create(api: Api, change: Change, secret: dict[str, str]) -> None:
    doc = change.doc
    assert doc is not None
    model = KINDS[doc.kind]
    spec = {k: v for k, v in doc.spec.items() if k not in ("secrets", *model.after_create)}
    body = {"name": doc.name, "labels": desired_labels(doc), **model.body(spec)}
    if secret:
        body["config"].update(secret)
    created = api.request("POST", model.path, body=body)
    later = {k: doc.spec[k] for k in model.after_create if k in doc.spec and doc.spec[k] != created.get(k)}
    if later:
        api.request("PATCH", f"{model.path}/{created['id']}", body=model.patch_body(later))


def _update(api: Api, change: Change, secret: dict[str, str]) -> None:
    doc = change.doc
    assert doc is not None
    model = KINDS[doc.kind]
    changed = {k: now for k, (_, now) in change.fields.items() if not k.startswith("metadata.")}
    body = model.patch_body(changed)
    if secret:  # a changed destination: the secret must go with it (or the server clears it)
        body["config"] = {**body["config"], **secret}
    if "metadata.labels" in change.fields:
        body["labels"] = change.fields["metadata.labels"][1]
    api.request("PATCH", f"{model.path}/{change.id}", body=body)


def apply(api: Api, changes: list[Change]) -> list[str]:
    """Carry out a plan; one `kind/name action` line per object. Nothing is written when a change
    is impossible in place or a secret cannot be read."""
    errors = [c.error for c in changes if c.error]
    if errors:
        raise CliError("; ".join(errors))
    secrets = {c.ref: read_secret(c.doc) for c in changes if c.doc is not None and _secrets_needed(c)}
    policies_gone = [c for c in changes if c.action == "delete" and c.kind == "Policy"]
    others_gone = [c for c in changes if c.action == "delete" and c.kind != "Policy"]
    out = []
    # Policies go first (a replacement may take the scope of one pruned), other objects last.
    for change in [*policies_gone, *(c for c in changes if c.action != "delete"), *others_gone]:
        if change.action == "create":
            _create(api, change, secrets.get(change.ref, {}))
            out.append(f"{change.ref} created")
        elif change.action == "update":
            _update(api, change, secrets.get(change.ref, {}))
            out.append(f"{change.ref} configured")
        elif change.action == "delete":
            api.request("DELETE", f"{KINDS[change.kind].path}/{change.id}")
            out.append(f"{change.ref} pruned")
        else:
            out.append(f"{change.ref} unchanged")
    return out


def export(state: State) -> list[dict[str, Any]]:
    """Every object as a document, in dependency order."""
    return [
        to_document(KINDS[kind], {**record, "name": name}, state.names)
        for kind, by_name in state.records.items()
        for name, record in by_name.items()
    ]
