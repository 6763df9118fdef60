"""sesamectl's output: aligned tables, key/value blocks, JSON or YAML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

__all__ = ["print_result", "render_table"]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return ",".join(map(str, value)) if isinstance(value, list) else json.dumps(value)
    return str(value)


def render_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[c.upper() for c in columns]] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def print_result(result: Any, columns: tuple[str, ...] | None, output: str | None) -> None:
    """Print `result` as JSON, YAML, or (default) a table of `columns` / a key-value block."""
    if result is None:
        return
    if output == "json":
        print(json.dumps(result, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(result, sort_keys=False), end="")
    elif columns is not None:
        print(render_table(result, columns))
    else:
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            print(f"{key.ljust(width)}  {_cell(value)}")
