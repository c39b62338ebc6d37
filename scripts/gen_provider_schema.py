#!/usr/bin/env python3
"""Regenerate tests/infra/fixtures/google-provider-schema.json from the Google provider's schema.

`terraform init` cannot download providers here (no access to the Terraform registry), so the
schema comes from the npm packages `@cdktf/provider-google` and `@cdktf/provider-google-beta`,
which are generated from the provider's own schema: their `.jsii` assembly describes every
resource's and data source's configuration struct, each argument (required or optional) and each
nested block, recursively. The package version below was built from the provider release in
PROVIDER_VERSION (the package's `cdktf.provider.version`), the newest 6.x release; the project's
constraint is `~> 6.14`.

The packages unpack to about 300 MB each, too much for every CI run, so this script extracts
once, into a small JSON file committed next to the tests:
- the names of every resource and data source of both providers (so that a misspelled type is
  told apart from a type this file has not extracted yet);
- the full schema of each `google_*` type used under terraform/ and tests/infra/fixtures/
  (with google-beta, each type some resource uses through a `google-beta` provider).

Run from the repository root after adding a resource of a new type:
    .venv/bin/python scripts/gen_provider_schema.py
It needs `npm` and the npm registry (it runs `npm pack`), or `--jsii-dir DIR` holding
`google.jsii` and `google-beta.jsii` taken from the two packages.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from infra import provider_schema  # noqa: E402  (tests/infra reads the HCL the same way)

PACKAGE_VERSION = "16.12.1"
PROVIDER_VERSION = "6.50.0"
PACKAGES = {
    "hashicorp/google": "@cdktf/provider-google",
    "hashicorp/google-beta": "@cdktf/provider-google-beta",
}
OUTPUT = provider_schema.SCHEMA_FILE
# "Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/
# 6.50.0/docs/resources/monitoring_alert_policy#display_name MonitoringAlertPolicy#display_name}"
_ANCHOR = re.compile(
    r"\{@link https://registry\.terraform\.io/providers/hashicorp/[\w-]+/[\d.]+/"
    r"docs/[\w-]+/\w+#(\w+) "
)
_TYPE_LINK = re.compile(
    r"\{@link https://registry\.terraform\.io/providers/hashicorp/[\w-]+/"
    r"([\d.]+)/docs/(resources|data-sources)/\w+ (google_\w+)\}"
)


def _jsii(source: str, jsii_dir: Path | None, work: Path) -> dict[str, Any]:
    name = source.removeprefix("hashicorp/")
    if jsii_dir is not None:
        path = jsii_dir / f"{name}.jsii"
    else:
        package = f"{PACKAGES[source]}@{PACKAGE_VERSION}"
        print(f"npm pack {package}", file=sys.stderr)
        out = (
            subprocess.run(
                ["npm", "pack", "--silent", "--pack-destination", str(work), package],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        with tarfile.open(work / out) as tar:
            member = tar.extractfile("package/.jsii")
            assert member is not None, f"{package} has no .jsii"
            path = work / f"{name}.jsii"
            path.write_bytes(member.read())
    assembly: dict[str, Any] = json.loads(path.read_text())
    assert assembly["version"] == PACKAGE_VERSION, (path, assembly["version"])
    built_from = assembly["metadata"].get("cdktf", {}).get("provider", {}).get("version")
    if built_from not in (None, PROVIDER_VERSION):
        raise SystemExit(f"{path}: built from provider {built_from}, not {PROVIDER_VERSION}")
    return assembly


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _struct_of(kind: dict[str, Any]) -> tuple[str | None, bool]:
    """The struct a property's type names, and whether it is a list (several blocks allowed)."""
    if "fqn" in kind:
        return (None if kind["fqn"].startswith("cdktf.") else kind["fqn"]), False
    if "collection" in kind:
        struct, _ = _struct_of(kind["collection"]["elementtype"])
        return struct, True
    for member in kind.get("union", {}).get("types", []):
        struct, many = _struct_of(member)
        if struct is not None:
            return struct, many
    return None, False


def _node(types: dict[str, Any], fqn: str) -> dict[str, Any]:
    attributes: dict[str, bool] = {}
    blocks: dict[str, Any] = {}
    for prop in types[fqn].get("properties", []):
        docs = prop.get("docs", {})
        anchors = _ANCHOR.findall(docs.get("summary", "") + " " + docs.get("remarks", ""))
        name = anchors[-1] if anchors else _snake(prop["name"])
        if name == "id" and "automatically added" in docs.get("remarks", ""):
            continue  # cdktf lists the SDK's computed `id`; the provider does not accept it
        required = not prop.get("optional", False)
        struct, many = _struct_of(prop["type"])
        if struct is None:
            attributes[name] = required
        else:
            block = {"required": required, "max_one": not many}
            blocks[name] = block | _node(types, struct)
    return {"attributes": dict(sorted(attributes.items())), "blocks": dict(sorted(blocks.items()))}


def _catalogue(assembly: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{"resource"|"data": {type name: config struct fqn}} for every type in the assembly."""
    found: dict[str, dict[str, str]] = {"resource": {}, "data": {}}
    for entry in assembly["types"].values():
        if entry.get("base") not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
            continue
        match = _TYPE_LINK.search(entry["docs"]["summary"])
        assert match, entry["fqn"]
        assert match.group(1) == PROVIDER_VERSION, (entry["fqn"], match.group(1))
        kind = "resource" if match.group(2) == "resources" else "data"
        (config,) = (p for p in entry["initializer"]["parameters"] if p["name"] == "config")
        found[kind][match.group(3)] = config["type"]["fqn"]
    return found


def _used() -> dict[str, set[tuple[str, str]]]:
    """{provider source: {(kind, type)}} of every google type the configurations use."""
    used: dict[str, set[tuple[str, str]]] = {source: set() for source in PACKAGES}
    for block in provider_schema.google_blocks(
        provider_schema.tf_directories(provider_schema.TERRAFORM, provider_schema.FIXTURES)
    ):
        used[block.source].add((block.kind, block.type))
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jsii-dir", type=Path, help="google.jsii and google-beta.jsii")
    args = parser.parse_args()
    used = _used()
    providers: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        for source, package in PACKAGES.items():
            assembly = _jsii(source, args.jsii_dir, Path(work))
            catalogue = _catalogue(assembly)
            schemas: dict[str, dict[str, Any]] = {"resource": {}, "data": {}}
            for kind, rtype in sorted(used[source]):
                if rtype in catalogue[kind]:
                    schemas[kind][rtype] = _node(assembly["types"], catalogue[kind][rtype])
            providers[source] = {
                "version": PROVIDER_VERSION,
                "from": f"npm {package}@{PACKAGE_VERSION} (.jsii)",
                "names": {kind: sorted(names) for kind, names in catalogue.items()},
                "schemas": schemas,
            }
    document = {
        "generated_by": "scripts/gen_provider_schema.py",
        "providers": providers,
    }
    OUTPUT.write_text(json.dumps(document, indent=0, sort_keys=False) + "\n")
    counts = {s: {k: len(v) for k, v in p["schemas"].items()} for s, p in providers.items()}
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {counts}")


if __name__ == "__main__":
    main()
