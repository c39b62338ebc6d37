"""Terraform files parsed with python-hcl2, normalised to plain Python values.

python-hcl2 keeps string literals quoted ('"x"'), wraps expressions as '${...}' and marks blocks
with '__is_block__'. Here a literal becomes its bare text, an expression keeps its '${...}', and
a block is a list of dicts, as in the Terraform JSON syntax.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"


_MARKERS = ("__is_block__", "__comments__", "__inline_comments__")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k not in _MARKERS}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@cache
def load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        result: dict[str, Any] = _clean(hcl2.load(handle))
    return result


def configurations() -> list[Path]:
    """Every directory of .tf files: the modules and the example root."""
    return sorted({p.parent for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts})


def modules() -> list[Path]:
    return sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    body: dict[str, Any]
    path: Path


def blocks(directory: Path, kind: str) -> list[dict[str, Any]]:
    """All top-level blocks of one kind ('variable', 'output', 'module', ...) in a directory."""
    found: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.tf")):
        found.extend(load(path).get(kind, []))
    return found


def named(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Labelled blocks (variable "x" {...}) as {label: body}."""
    result: dict[str, dict[str, Any]] = {}
    for block in blocks(directory, kind):
        for label, body in block.items():
            assert label not in result, f"{kind} {label} declared twice in {directory}"
            result[label] = body
    return result


def resources(directory: Path | None = None, kind: str = "resource") -> list[Resource]:
    """Resources (or data sources) in one directory, or in every configuration."""
    dirs = configurations() if directory is None else [directory]
    found: list[Resource] = []
    for d in dirs:
        for path in sorted(d.glob("*.tf")):
            for block in load(path).get(kind, []):
                for rtype, by_name in block.items():
                    for name, body in by_name.items():
                        found.append(Resource(rtype, name, body, path))
    return found


def first(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The one nested block `key` of a body."""
    value = body.get(key)
    assert isinstance(value, list), f"no {key} block"
    assert len(value) == 1, f"{len(value)} {key} blocks"
    block: dict[str, Any] = value[0]
    return block


def locals_(directory: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in blocks(directory, "locals"):
        merged.update(block)
    return merged
