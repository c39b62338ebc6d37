"""terraform/: module layout, typed and validated variables, and the project's invariants.

`terraform validate` needs the providers, which cannot be fetched offline; these tests check
what can be read from the parsed HCL. checkov (scripts/check-infra.sh) checks the rest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra import hcl, k8s_render

MODULES = hcl.modules()
CONFIGS = hcl.configurations()
EXAMPLE = hcl.TERRAFORM / "envs" / "example"
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(hcl.TERRAFORM)) for p in paths]


def test_expected_modules_exist() -> None:
    names = {m.name for m in MODULES}
    assert {"storage", "pubsub", "uploader", "receiver", "healthcare", "gke", "network"} <= names
    assert EXAMPLE in CONFIGS


@pytest.mark.parametrize("module", MODULES, ids=_ids(MODULES))
def test_module_layout(module: Path) -> None:
    files = {p.name for p in module.glob("*.tf")}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= files


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_provider_versions_pinned(config: Path) -> None:
    (terraform,) = hcl.blocks(config, "terraform")
    providers = hcl.first(terraform, "required_providers")
    google = providers["google"]
    assert google["source"] == "hashicorp/google"
    assert re.fullmatch(r"~> 6\.\d+", google["version"]), google["version"]
    for name, spec in providers.items():
        assert spec.get("version", "").startswith("~>"), f"provider {name} is not pinned"
    assert terraform["required_version"].startswith(">= 1.")


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_every_variable_is_typed_described_and_validated(config: Path) -> None:
    variables = hcl.named(config, "variable")
    assert variables, f"{config} declares no variables"
    for name, body in variables.items():
        assert body.get("type"), f"{name}: no type"
        assert len(body.get("description", "")) >= 10, f"{name}: no description"
        validations = body.get("validation", [])
        assert validations, f"{name}: no validation"
        for validation in validations:
            assert f"var.{name}" in validation["condition"], f"{name}: validation ignores it"
            assert validation["error_message"].endswith("."), f"{name}: error message"


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_every_output_is_described(config: Path) -> None:
    for name, body in hcl.named(config, "output").items():
        assert len(body.get("description", "")) >= 10, f"output {name}: no description"


def test_example_root_outputs_what_a_user_needs() -> None:
    outputs = hcl.named(EXAMPLE, "output")
    assert {"load_balancer_ip", "uploader_url", "dcmsend_command"} <= set(outputs)
    receiver_outputs = hcl.named(hcl.TERRAFORM / "modules" / "receiver", "output")
    dcmsend = receiver_outputs["dcmsend_command"]["value"]
    assert "dcmsend" in dcmsend and "2575 -aec IMPORTADAPTER" in dcmsend


def test_module_calls_pass_every_required_variable_and_no_unknown_one() -> None:
    """What `terraform validate` would say about the example root's module calls."""
    meta = {"source", "count", "for_each", "depends_on", "providers"}
    for name, call in hcl.named(EXAMPLE, "module").items():
        source = (EXAMPLE / call["source"]).resolve()
        assert source.is_dir(), f"module {name}: {call['source']} does not exist"
        declared = hcl.named(source, "variable")
        passed = set(call) - meta
        unknown = passed - set(declared)
        assert not unknown, f"module {name}: unknown arguments {sorted(unknown)}"
        required = {v for v, body in declared.items() if "default" not in body}
        missing = required - passed
        assert not missing, f"module {name}: missing {sorted(missing)}"


def test_no_primitive_roles_and_nothing_public() -> None:
    for resource in hcl.resources():
        if "_iam_" not in resource.type:
            continue
        where = f"{resource.type}.{resource.name} in {resource.path}"
        assert resource.body.get("role") not in PRIMITIVE_ROLES, where
        members = [resource.body.get("member", ""), *resource.body.get("members", [])]
        assert not PUBLIC_MEMBERS & set(members), where
        assert not resource.type.endswith("_iam_policy"), f"authoritative policy: {where}"


def test_no_service_account_keys_or_acls() -> None:
    forbidden = re.compile(r"^google_(service_account_key|storage_\w*(acl|access_control))$")
    for resource in hcl.resources():
        assert not forbidden.match(resource.type), f"{resource.type}.{resource.name}"


def _one(directory: str, rtype: str, name: str) -> dict[str, object]:
    path = hcl.TERRAFORM / "modules" / directory
    found = [r for r in hcl.resources(path) if r.type == rtype and r.name == name]
    assert len(found) == 1, f"{rtype}.{name} not in {path}"
    return found[0].body


def test_push_subscription_has_oidc_dead_letter_backoff_and_retention() -> None:
    push = _one("pubsub", "google_pubsub_subscription", "push")
    push_config = hcl.first(push, "push_config")
    oidc = hcl.first(push_config, "oidc_token")
    assert oidc["service_account_email"] == "${var.push_service_account_email}"
    assert oidc["audience"] == push_config["push_endpoint"]
    dead_letter = hcl.first(push, "dead_letter_policy")
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert dead_letter["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    retry = hcl.first(push, "retry_policy")
    assert {"minimum_backoff", "maximum_backoff"} <= set(retry)
    assert push["ack_deadline_seconds"] == "${var.ack_deadline_seconds}"
    assert push["retain_acked_messages"] is True
    assert "message_retention_duration" in push

    variables = hcl.named(hcl.TERRAFORM / "modules" / "pubsub", "variable")
    assert variables["ack_deadline_seconds"]["default"] == 600
    assert (
        "var.max_delivery_attempts >= 5"
        in variables["max_delivery_attempts"]["validation"][0]["condition"]
    )


def test_every_push_subscription_anywhere_is_authenticated_and_dead_letters() -> None:
    subscriptions = [r for r in hcl.resources() if r.type == "google_pubsub_subscription"]
    assert subscriptions
    for sub in subscriptions:
        if "push_config" in sub.body:
            assert "oidc_token" in hcl.first(sub.body, "push_config"), sub.name
            assert "dead_letter_policy" in sub.body, sub.name


def test_pubsub_service_agent_can_dead_letter() -> None:
    main = (hcl.TERRAFORM / "modules" / "pubsub" / "main.tf").read_text()
    assert "@gcp-sa-pubsub.iam.gserviceaccount.com" in main
    publisher = _one("pubsub", "google_pubsub_topic_iam_member", "agent_dead_letter_publisher")
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["topic"] == "${google_pubsub_topic.dead_letter.name}"
    subscriber = _one("pubsub", "google_pubsub_subscription_iam_member", "agent_push_subscriber")
    assert subscriber["role"] == "roles/pubsub.subscriber"
    dead_letter_sub = _one("pubsub", "google_pubsub_subscription", "dead_letter")
    assert "push_config" not in dead_letter_sub, "the dead-letter subscription is pulled by replay"


def test_bucket_is_never_public_and_ages_objects_out() -> None:
    bucket = _one("storage", "google_storage_bucket", "this")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    actions = [hcl.first(rule, "action")["type"] for rule in bucket["lifecycle_rule"]]
    assert "Delete" in actions
    assert "encryption" in bucket.get("dynamic", [{}])[0], "optional CMEK"


def test_receiver_may_create_and_overwrite_objects_but_not_read_them() -> None:
    role = _one("storage", "google_project_iam_custom_role", "object_writer")
    assert sorted(role["permissions"]) == ["storage.objects.create", "storage.objects.delete"]
    grant = _one("storage", "google_storage_bucket_iam_member", "receiver_writer")
    assert grant["role"] == "${google_project_iam_custom_role.object_writer.id}"
    reader = _one("storage", "google_storage_bucket_iam_member", "reader")
    assert reader["role"] == "roles/storage.objectViewer"


def test_grants_are_scoped_to_resources_not_the_project() -> None:
    project_wide = [r for r in hcl.resources() if r.type.startswith("google_project_iam_")]
    assert [r.type for r in project_wide] == ["google_project_iam_custom_role"] * len(project_wide)


def test_roles_per_component() -> None:
    topic_publisher = _one("pubsub", "google_pubsub_topic_iam_member", "publisher")
    assert topic_publisher["topic"] == "${google_pubsub_topic.main.name}"
    dicom = _one("healthcare", "google_healthcare_dicom_store_iam_member", "editor")
    assert dicom["role"] == "roles/healthcare.dicomEditor"
    invoker = _one("uploader", "google_cloud_run_v2_service_iam_member", "push_invoker")
    assert invoker["role"] == "roles/run.invoker"
    assert invoker["member"] == "serviceAccount:${var.invoker_email}"
    example = hcl.named(EXAMPLE, "module")
    assert example["pubsub"]["publishers"] == {
        "receiver": "${module.service_accounts.receiver_email}"
    }


def test_uploader_is_internal_with_a_600_second_timeout() -> None:
    service = _one("uploader", "google_cloud_run_v2_service", "this")
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    assert "invoker_iam_disabled" not in service
    template = hcl.first(service, "template")
    assert template["timeout"] == "${var.timeout_seconds}s"
    assert template["service_account"] == "${var.service_account_email}"
    assert "scaling" in template and "max_instance_request_concurrency" in template
    variables = hcl.named(hcl.TERRAFORM / "modules" / "uploader", "variable")
    assert variables["timeout_seconds"]["default"] == 600
    env = hcl.locals_(hcl.TERRAFORM / "modules" / "uploader")["env"]
    for name in ("DICOM_INGEST_DICOMWEB_ADDRESS", "DICOM_INGEST_DEAD_LETTER_TOPIC"):
        assert name in env


def test_workload_identity_binds_the_receiver_service_account() -> None:
    binding = _one("receiver", "google_service_account_iam_member", "receiver_workload_identity")
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    wi = hcl.locals_(hcl.TERRAFORM / "modules" / "receiver")["wi_member"]
    assert ".svc.id.goog[${var.namespace}/${var.name}]" in wi


@pytest.mark.parametrize(
    ("local", "prefix"),
    [
        ("receiver_template_vars", ("namespace", "receiver-")),
        ("worker_template_vars", ("worker-",)),
    ],
)
def test_template_variables_match_the_k8s_templates(local: str, prefix: tuple[str, ...]) -> None:
    """templatefile() fails on a missing variable at apply time: catch it here."""
    keys = set(hcl.locals_(hcl.TERRAFORM / "modules" / "receiver")[local])
    used: set[str] = set()
    for template in k8s_render.templates():
        if template.name.startswith(prefix):
            used |= k8s_render.placeholders(template.read_text())
    assert used == keys
    sample = (
        k8s_render.RECEIVER_VALUES if local.startswith("receiver") else k8s_render.WORKER_VALUES
    )
    assert set(sample) == keys, "tests/infra/k8s_render.py example values are out of date"


def test_templates_named_by_the_module_exist() -> None:
    main = (hcl.TERRAFORM / "modules" / "receiver" / "main.tf").read_text()
    names = set(re.findall(r'"((?:receiver|worker)-[a-z]+)"', main))
    assert names
    for name in names:
        assert (k8s_render.K8S_DIR / f"{name}.yaml.tftpl").is_file(), name


def test_apis_enabled() -> None:
    apis = hcl.locals_(EXAMPLE)["apis"]
    for api in ("healthcare", "pubsub", "run", "container", "storage", "iamcredentials"):
        assert f"{api}.googleapis.com" in apis
