"""Render the k8s/*.yaml.tftpl templates the way terraform's templatefile() does.

The templates use `${name}` interpolation and one directive form, a line of its own that is
exactly `%{ if NAME ~}`, `%{ if !NAME ~}`, `%{ else ~}` or `%{ endif ~}` (NAME a boolean
variable): terraform drops such a line whole, and so does this renderer. It refuses anything
else, and scripts/check-infra.sh compares its output with terraform's own templatefile() for
every template and every variant below. Terraform passes the same variable names
(`local.receiver_template_vars` and `local.worker_template_vars` in terraform/modules/receiver);
the tests check that the two sets agree.

Run as a script to write the rendered example manifests to a directory, one object per file,
the DICOM TLS variants of the templates that have one as `<name>-tls.yaml`:
    python tests/infra/k8s_render.py OUT_DIR
or to compare this renderer with terraform's templatefile() ($TERRAFORM, default terraform):
    python tests/infra/k8s_render.py --compare-with-terraform
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_TEMPLATE_SYNTAX = re.compile(r"[$%]\{")
_DIRECTIVE_LINE = re.compile(
    r"^%\{ (if (!?)([A-Za-z_][A-Za-z0-9_]*)|else|endif) ~\}(?:\n|\Z)", re.MULTILINE
)

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
    # DICOM TLS, off by default (terraform: var.tls = null).
    "tls": "false",
    "tls_only": "false",
    "tls_secret": "",
    "tls_client_ca": "false",
    "tls_client_ca_secret": "",
}

# Where the receiver's pod mounts its TLS Secret(s), and the flags' file names in it.
TLS_MOUNT = "/etc/dicom-ingest/tls"
TLS_PORT = 2762

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
    """The variables a template uses: interpolated, or the condition of a directive."""
    conditions = {m.group(3) for m in _DIRECTIVE_LINE.finditer(text) if m.group(3)}
    return set(_PLACEHOLDER.findall(text)) | conditions


def _condition(values: dict[str, str], name: str) -> bool:
    value = values.get(name)
    if value not in ("true", "false"):
        raise ValueError(f"%{{ if {name} }} needs a boolean, not {value!r}")
    return value == "true"


def _apply_directives(text: str, values: dict[str, str]) -> str:
    """Keep or drop the lines between directive lines; the directive lines themselves go."""
    kept: list[str] = []
    taken: list[bool] = []  # one per open %{ if }: is the branch we are in taken?
    for line in text.splitlines(keepends=True):
        directive = _DIRECTIVE_LINE.fullmatch(line)
        if directive is None:
            if all(taken):
                kept.append(line)
            continue
        keyword = directive.group(1).split(" ", 1)[0]
        if keyword == "if":
            taken.append(_condition(values, directive.group(3)) != (directive.group(2) == "!"))
        elif not taken:
            raise ValueError(f"%{{ {keyword} }} without %{{ if }}")
        elif keyword == "else":
            taken.append(not taken.pop())
        else:
            taken.pop()
    if taken:
        raise ValueError("%{ if } without %{ endif }")
    return "".join(kept)


def render_text(text: str, values: dict[str, str]) -> str:
    missing = placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for {sorted(missing)}")
    without_directives = _DIRECTIVE_LINE.sub("", text)
    leftover = _ANY_TEMPLATE_SYNTAX.search(_PLACEHOLDER.sub("", without_directives))
    if leftover:
        raise ValueError(f"unsupported template syntax at offset {leftover.start()}")
    kept = _apply_directives(text, values)
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], kept)


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


def tls_values(
    base: dict[str, str] | None = None, client_ca: bool = True, only: bool = False
) -> dict[str, str]:
    """What terraform passes with var.tls set: a kubernetes.io/tls Secret, optionally a Secret
    with the CA bundle client certificates must chain to, optionally no plain port."""
    return (RECEIVER_VALUES if base is None else base) | {
        "tls": "true",
        "tls_only": "true" if only else "false",
        "tls_secret": "dicom-ingest-receiver-tls",
        "tls_client_ca": "true" if client_ca else "false",
        "tls_client_ca_secret": "dicom-ingest-pacs-ca" if client_ca else "",
    }


def variants(template: Path) -> dict[str, dict[str, str]]:
    """Every set of values terraform may pass to this template, by a short name."""
    base = values_for(template)
    if template.name.startswith("worker-"):
        return {"default": base}
    return {
        "default": base,
        "tls": tls_values(base, client_ca=False),
        "mtls": tls_values(base),
        "mtls-only": tls_values(base, only=True),
    }


def _terraform_value(value: str) -> object:
    # terraform passes booleans as booleans; a number or a string interpolates the same
    return {"true": True, "false": False}.get(value, value)


def compare_with_terraform(terraform: str) -> list[str]:
    """Render every template and variant with terraform's templatefile(); the differences."""
    cases = [(t, name, values) for t in templates() for name, values in variants(t).items()]
    with tempfile.TemporaryDirectory() as work:  # no configuration, no providers
        calls = []
        for number, (template, _, values) in enumerate(cases):
            path = Path(work) / f"{number}.json"
            path.write_text(json.dumps({k: _terraform_value(v) for k, v in values.items()}))
            calls.append(f'templatefile("{template}", jsondecode(file("{path}")))')
        # terraform console evaluates one expression from a pipe: all of them, as one list
        done = subprocess.run(
            [terraform, "console"],
            input=f"base64encode(jsonencode([{', '.join(calls)}]))\n",
            capture_output=True,
            text=True,
            cwd=work,
            env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"},
            timeout=300,
            check=False,
        )
    try:
        outputs = json.loads(base64.b64decode(done.stdout.strip().strip('"')))
    except ValueError:
        outputs = None
    if done.returncode != 0 or not isinstance(outputs, list) or len(outputs) != len(cases):
        return [f"terraform console failed ({done.returncode}): {done.stderr.strip()}"]
    problems = []
    for (template, name, values), output in zip(cases, outputs, strict=True):
        if output != render(template, values):
            problems.append(f"{template.name} ({name}): this renderer and terraform differ")
    return problems


def main(argv: list[str]) -> int:
    if argv[1:] == ["--compare-with-terraform"]:
        problems = compare_with_terraform(os.environ.get("TERRAFORM", "terraform"))
        print("\n".join(problems) or f"{len(templates())} templates render as terraform does")
        return 1 if problems else 0
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR | --compare-with-terraform", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    for template in templates():
        name = template.name.removesuffix(".yaml.tftpl")
        default = render(template)
        (out / f"{name}.yaml").write_text(default)
        tls = render(template, variants(template).get("mtls", values_for(template)))
        if tls != default:
            (out / f"{name}-tls.yaml").write_text(tls)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
