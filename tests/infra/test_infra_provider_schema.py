"""terraform/ against the Google provider's schema, offline (tests/infra/provider_schema.py).

A misspelled argument or block of a google resource would otherwise surface only at
`terraform apply` on a real project: `terraform validate` needs the provider, which cannot be
downloaded here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra import hcl, provider_schema

CONFIGS = hcl.configurations()
FIXTURE = provider_schema.FIXTURES / "schema-errors"


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(hcl.TERRAFORM)) for p in paths]


# The insecure fixture too: checkov's policies must fail on a configuration terraform accepts.
CHECKED = [*CONFIGS, provider_schema.FIXTURES / "insecure"]


@pytest.mark.parametrize("config", CHECKED, ids=[str(p.relative_to(hcl.ROOT)) for p in CHECKED])
def test_terraform_matches_the_provider_schema(config: Path) -> None:
    assert provider_schema.check_directories([config]) == []


def test_every_google_resource_and_data_source_is_checked() -> None:
    # The checker finds the same google blocks as a plain read of the HCL: none is skipped
    # because of its provider meta-argument, its kind or its module.
    checked = {(b.kind, b.type, b.name, b.path) for b in provider_schema.google_blocks(CONFIGS)}
    declared = {
        (kind, r.type, r.name, r.path)
        for kind in ("resource", "data")
        for r in hcl.resources(kind=kind)
        if r.type.startswith("google_")
    }
    assert checked == declared
    kinds = {kind for kind, *_ in checked}
    assert kinds == {"resource", "data"}
    beta = {b.type for b in provider_schema.google_blocks(CONFIGS) if "beta" in b.source}
    assert beta, "a google-beta resource is checked against the google-beta schema"


def _accepts(constraint: str, version: str) -> bool:
    """Terraform's pessimistic constraint '~> X.Y' (>= X.Y, < X+1)."""
    match = re.fullmatch(r"~> (\d+)\.(\d+)", constraint)
    assert match, f"unexpected constraint {constraint!r}"
    major, minor = int(match.group(1)), int(match.group(2))
    have = tuple(int(part) for part in version.split("."))
    return have[0] == major and have[1] >= minor


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_the_schema_is_of_a_release_the_configuration_accepts(config: Path) -> None:
    (terraform,) = hcl.blocks(config, "terraform")
    required = hcl.first(terraform, "required_providers")
    for spec in required.values():
        source = spec["source"]
        if source in ("hashicorp/google", "hashicorp/google-beta"):
            version = provider_schema.schema()["providers"][source]["version"]
            assert _accepts(spec["version"], version), (config, source, spec["version"], version)


# Each deliberate mistake of tests/infra/fixtures/schema-errors/main.tf: the line of its
# resource, its address and what must be said about it.
EXPECTED = [
    (
        "google_project_service_identity.without_beta",
        "hashicorp/google 6.50.0 has no resource type 'google_project_service_identity'",
    ),
    (
        "google_pubsub_subscription.misspelled",
        "unsupported argument 'ack_deadline_second' (did you mean 'ack_deadline_seconds'?)",
    ),
    (
        "google_pubsub_subscription.misspelled",
        "block 'dead_letter_policy' may appear once, found 2",
    ),
    (
        "google_monitoring_alert_policy.nested",
        "conditions[0].condition_prometheus_query_language[0]: "
        "unsupported argument 'duraton' (did you mean 'duration'?)",
    ),
    (
        "google_storage_bucket.missing_location",
        "dynamic 'lifecycle_rule'.content.condition[0]: "
        "unsupported argument 'ag' (did you mean 'age'?)",
    ),
    ("google_storage_bucket.missing_location", "required argument 'location' is missing"),
    (
        "google_logging_metric.block_as_argument",
        "'metric_descriptor' is a block: write `metric_descriptor { ... }`",
    ),
    (
        "data.google_projectt.misspelled_type",
        "has no data source type 'google_projectt' (did you mean 'google_project'?)",
    ),
]


def _line_of(address: str) -> int:
    parts = address.split(".")
    kind = "data" if parts[0] == "data" else "resource"
    rtype, name = parts[-2:]
    text = (FIXTURE / "main.tf").read_text().splitlines()
    header = f'{kind} "{rtype}" "{name}" {{'
    (line,) = [n for n, row in enumerate(text, 1) if row.startswith(header)]
    return line


def test_each_mistake_is_reported_with_file_resource_and_argument() -> None:
    problems = provider_schema.check_directories([FIXTURE])
    assert len(problems) == len(EXPECTED), "\n".join(problems)
    for problem, (address, said) in zip(problems, EXPECTED, strict=True):
        where = f"tests/infra/fixtures/schema-errors/main.tf:{_line_of(address)}: "
        assert problem.startswith(where), problem
        assert f" {address}: " in problem, problem
        assert said in problem, problem
    valid = [b.address for b in provider_schema.google_blocks([FIXTURE]) if b.name == "valid"]
    assert len(valid) == 3
    assert not any(f" {address}: " in p for p in problems for address in valid)


def test_the_command_fails_on_a_mistake_and_passes_on_terraform() -> None:
    script = Path(provider_schema.__file__)
    bad = subprocess.run(
        [sys.executable, script, FIXTURE], check=False, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1
    assert "unsupported argument 'ack_deadline_second'" in bad.stderr
    good = subprocess.run(
        [sys.executable, script], check=False, capture_output=True, text=True, timeout=120
    )
    assert (good.returncode, good.stderr) == (0, "")
