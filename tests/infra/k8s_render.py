"""Render the k8s/*.yaml.tftpl templates the way terraform's templatefile() does.

The templates use only `${name}` interpolation (no `%{}` directives, no expressions), so this
renderer is exact for them and refuses anything else. Terraform passes the same variable names
(`local.receiver_template_vars` and `local.worker_template_vars` in terraform/modules/receiver);
the tests check that the two sets agree.

Run as a script to write the rendered example manifests to a directory, one object per file:
    python tests/infra/k8s_render.py OUT_DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_TEMPLATE_SYNTAX = re.compile(r"[$%]\{")

SOURCE_RANGES = ["10.20.0.0/16", "192.168.10.0/24"]

# What terraform computes for an example deployment (store mode).
RECEIVER_VALUES: dict[str, str] = {
    "namespace": "dicom-ingest",
    "name": "dicom-ingest-receiver",
    "google_service_account": "dicom-ingest-receiver@example-project.iam.gserviceaccount.com",
    "image": (
        "europe-west4-docker.pkg.dev/example-project/dicom-ingest/receiver@sha256:" + "0" * 64
    ),
    "bucket": "example-project-dicom-ingest",
    "object_prefix": "dicom",
    "topic": "projects/example-project/topics/dicom-ingest",
    "ack_after": "store",
    "max_associations": "32",
    "shutdown_grace_seconds": "30",
    "prestop_seconds": "30",
    "termination_grace_seconds": "75",
    "allowed_calling_aets": "",
    "cpu": "1",
    "memory": "1Gi",
    "spool_size": "8Gi",
    "ephemeral_storage": "9Gi",
    "storage_class": "standard-rwo",
    "load_balancer_ip": "10.20.0.50",
    "allow_global_access": "false",
    "source_ranges": json.dumps(SOURCE_RANGES),
    "source_peers": json.dumps([{"ipBlock": {"cidr": r}} for r in SOURCE_RANGES]),
    "workload_kind": "Deployment",
    "headless_service": "dicom-ingest-receiver-headless",
    "min_replicas": "2",
    "max_replicas": "6",
    "scale_down_policy": "Max",
}

WORKER_VALUES: dict[str, str] = {
    "namespace": "dicom-ingest",
    "name": "dicom-ingest-worker",
    "google_service_account": "dicom-ingest-worker@example-project.iam.gserviceaccount.com",
    "image": (
        "europe-west4-docker.pkg.dev/example-project/dicom-ingest/uploader@sha256:" + "1" * 64
    ),
    "replicas": "1",
    "subscription": "projects/example-project/subscriptions/dicom-ingest-oversize",
    "dicomweb_address": (
        "https://healthcare.googleapis.com/v1/projects/example-project/locations/europe-west4"
        "/datasets/dicom-ingest/dicomStores/dicom-ingest/dicomWeb"
    ),
    "dead_letter_topic": "projects/example-project/topics/dicom-ingest-dead-letter",
    "keep_uploaded": "true",
    "cpu": "1",
    "memory": "2Gi",
}


# Applied only with --ack_after=spool (terraform/modules/receiver, local.receiver_templates).
SPOOL_MODE_TEMPLATES = {"receiver-statefulset.yaml.tftpl", "receiver-headless-service.yaml.tftpl"}


def templates() -> list[Path]:
    return sorted(K8S_DIR.glob("*.yaml.tftpl"))


def values_for(template: Path) -> dict[str, str]:
    """The example values of the component a template belongs to (by its file name)."""
    if template.name.startswith("worker-"):
        return WORKER_VALUES
    if template.name in SPOOL_MODE_TEMPLATES:
        return spool_mode_values()
    return RECEIVER_VALUES


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def render_text(text: str, values: dict[str, str]) -> str:
    missing = placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for {sorted(missing)}")
    rendered = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
    leftover = _ANY_TEMPLATE_SYNTAX.search(_PLACEHOLDER.sub("", text))
    if leftover:
        raise ValueError(f"unsupported template syntax at offset {leftover.start()}")
    return rendered


def render(template: Path, values: dict[str, str] | None = None) -> str:
    return render_text(template.read_text(), values_for(template) if values is None else values)


def spool_mode_values() -> dict[str, str]:
    """What terraform passes with --ack_after=spool (the StatefulSet variant)."""
    return RECEIVER_VALUES | {
        "ack_after": "spool",
        "ephemeral_storage": "1Gi",
        "workload_kind": "StatefulSet",
        "scale_down_policy": "Disabled",
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    for template in templates():
        name = template.name.removesuffix(".tftpl")
        (out / name).write_text(render(template))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
