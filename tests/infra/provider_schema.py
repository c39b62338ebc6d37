"""An offline check of terraform/ against the Google provider's schema.

`terraform validate` needs the provider binary, which cannot be downloaded here. Instead, every
`google_*` resource and data source is checked against the provider's schema, kept in
tests/infra/fixtures/google-provider-schema.json (written by scripts/gen_provider_schema.py,
which says where the schema comes from and which provider release it describes): each argument
and block, at every nesting level, inside `dynamic "x" { content { ... } }` too, must exist in the
schema; a block must be written as a block and an argument as an argument; a block the schema
allows once must appear once; every required argument and block must be there. Meta-arguments
(count, for_each, depends_on, provider, lifecycle, ...) are Terraform's, not the provider's.

Run as a script to check directories of .tf files (terraform/ by default):
`.venv/bin/python tests/infra/provider_schema.py [DIR...]`.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCHEMA_FILE = FIXTURES / "google-provider-schema.json"
REGENERATE = ".venv/bin/python scripts/gen_provider_schema.py"

META_ARGUMENTS = {
    "resource": {
        "count",
        "for_each",
        "depends_on",
        "provider",
        "lifecycle",
        "provisioner",
        "connection",
    },
    "data": {"count", "for_each", "depends_on", "provider", "lifecycle"},
}
DYNAMIC_ARGUMENTS = {"for_each", "iterator", "labels", "content"}
KIND_WORD = {"resource": "resource", "data": "data source"}
_MARKERS = ("__is_block__", "__comments__", "__inline_comments__")


def _bare(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _is_block(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and item.get("__is_block__") for item in value)
    )


def _is_dynamic(value: Any) -> bool:
    """`dynamic "x" { ... }`: python-hcl2 gives [{'"x"': {..., '__is_block__': True}}]."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(item, dict) and all(_is_block([body]) for body in item.values())
            for item in value
        )
    )


@dataclass(frozen=True)
class GoogleBlock:
    """One `resource` or `data` block of a Google provider, with its raw python-hcl2 body."""

    kind: str  # "resource" or "data"
    type: str
    name: str
    body: dict[str, Any]
    path: Path
    source: str  # the provider's source address, e.g. "hashicorp/google-beta"

    @property
    def address(self) -> str:
        return f"{'data.' if self.kind == 'data' else ''}{self.type}.{self.name}"

    def where(self) -> str:
        """'terraform/modules/x/main.tf:12' for messages."""
        pattern = rf'^\s*{self.kind}\s+"{re.escape(self.type)}"\s+"{re.escape(self.name)}"'
        text = self.path.read_text().splitlines()
        line = next((n for n, row in enumerate(text, 1) if re.match(pattern, row)), 0)
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{line}"


@cache
def _parse(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        parsed: dict[str, Any] = hcl2.load(handle)
    return parsed


def _sources(directory: Path) -> dict[str, str]:
    """Provider local name -> source address, from the directory's required_providers."""
    sources: dict[str, str] = {}
    for path in sorted(directory.glob("*.tf")):
        for terraform in _parse(path).get("terraform", []):
            for required in terraform.get("required_providers", []):
                for local, spec in required.items():
                    if isinstance(spec, dict) and "source" in spec:
                        sources[local] = _bare(spec["source"]).lower()
    return sources


def tf_directories(*roots: Path) -> list[Path]:
    """Every directory holding .tf files under the roots."""
    return sorted({p.parent for r in roots for p in r.rglob("*.tf") if ".terraform" not in p.parts})


def google_blocks(directories: Iterable[Path]) -> Iterator[GoogleBlock]:
    """Every resource and data source of hashicorp/google or hashicorp/google-beta."""
    for directory in directories:
        sources = _sources(directory)
        for path in sorted(directory.glob("*.tf")):
            for kind in ("resource", "data"):
                for block in _parse(path).get(kind, []):
                    for quoted_type, by_name in block.items():
                        rtype = _bare(quoted_type)
                        for name, body in by_name.items():
                            provider = _bare(str(body.get("provider", rtype.split("_")[0])))
                            local = provider.removeprefix("${").removesuffix("}").split(".")[0]
                            source = sources.get(local, f"hashicorp/{local}")
                            if source in ("hashicorp/google", "hashicorp/google-beta"):
                                yield GoogleBlock(kind, rtype, _bare(name), body, path, source)


@cache
def schema() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return document


def _unknown(name: str, node: dict[str, Any], what: str) -> str:
    known = [*node["attributes"], *node["blocks"]]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unsupported {what} {name!r}{hint}"


def _check_body(body: dict[str, Any], node: dict[str, Any], at: str, meta: set[str]) -> list[str]:
    """Problems in one body against its schema node; `at` names the body for messages."""
    problems: list[str] = []
    present: set[str] = set()
    prefix = f"{at}: " if at else ""
    inside = f"{at}." if at else ""
    for key, value in body.items():
        if key in _MARKERS or key in meta:
            continue
        if key == "dynamic" and _is_dynamic(value) and "dynamic" not in node["blocks"]:
            for dynamic in value:
                for label, dynamic_body in dynamic.items():
                    if label in _MARKERS:
                        continue
                    name = _bare(label)
                    present.add(name)
                    problems += _check_dynamic(
                        name, dynamic_body, node, f"{inside}dynamic {name!r}"
                    )
            continue
        present.add(key)
        if _is_block(value):
            if key not in node["blocks"]:
                if key in node["attributes"]:
                    problems.append(f"{prefix}{key!r} is an argument: write `{key} = ...`")
                else:
                    problems.append(prefix + _unknown(key, node, "block"))
                continue
            block = node["blocks"][key]
            if block["max_one"] and len(value) > 1:
                problems.append(f"{prefix}block {key!r} may appear once, found {len(value)}")
            for index, item in enumerate(value):
                problems += _check_body(item, block, f"{inside}{key}[{index}]", set())
        elif key in node["blocks"]:
            problems.append(f"{prefix}{key!r} is a block: write `{key} {{ ... }}`, not `{key} =`")
        elif key not in node["attributes"]:
            problems.append(prefix + _unknown(key, node, "argument"))
    for name, required in node["attributes"].items():
        if required and name not in present:
            problems.append(f"{prefix}required argument {name!r} is missing")
    for name, block in node["blocks"].items():
        if block["required"] and name not in present:
            problems.append(f"{prefix}required block {name!r} is missing")
    return problems


def _check_dynamic(name: str, body: dict[str, Any], node: dict[str, Any], at: str) -> list[str]:
    if name not in node["blocks"]:
        return [f"{at}: " + _unknown(name, node, "block")]
    problems = [
        f"{at}: {key!r} is not an argument of a dynamic block"
        for key in body
        if key not in _MARKERS and key not in DYNAMIC_ARGUMENTS
    ]
    contents: list[dict[str, Any]] = body.get("content", [])
    if not _is_block(contents) or len(contents) != 1:
        return [*problems, f"{at}: needs one content block"]
    return problems + _check_body(contents[0], node["blocks"][name], f"{at}.content", set())


def check(block: GoogleBlock) -> list[str]:
    """Problems of one resource or data source, each naming its file, line and address."""
    provider = schema()["providers"][block.source]
    head = f"{block.where()}: {KIND_WORD[block.kind]} {block.address}"
    node = provider["schemas"][block.kind].get(block.type)
    if node is None:
        if block.type in provider["names"][block.kind]:
            return [
                f"{head}: {block.type} is not in {SCHEMA_FILE.relative_to(ROOT)}; run {REGENERATE}"
            ]
        close = difflib.get_close_matches(block.type, provider["names"][block.kind], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [
            f"{head}: {block.source} {provider['version']} has no {KIND_WORD[block.kind]} "
            f"type {block.type!r}{hint}"
        ]
    return [f"{head}: {p}" for p in _check_body(block.body, node, "", META_ARGUMENTS[block.kind])]


def check_directories(directories: Iterable[Path]) -> list[str]:
    return [problem for block in google_blocks(directories) for problem in check(block)]


def main(argv: list[str]) -> int:
    roots = [Path(a).resolve() for a in argv] or [TERRAFORM]
    problems = check_directories(tf_directories(*roots))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
