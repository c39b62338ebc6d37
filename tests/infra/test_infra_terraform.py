"""terraform/: module layout, typed and validated variables, and the project's invariants.

`terraform validate` needs the providers, which cannot be fetched offline; these tests check
what can be read from the parsed HCL, test_infra_provider_schema.py checks the google resources
against the provider's schema, and checkov (scripts/check-infra.sh) checks the rest.
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
    if "google-beta" in providers:
        assert providers["google-beta"]["source"] == "hashicorp/google-beta"
        assert providers["google-beta"]["version"] == google["version"], "one provider release"
    for name, spec in providers.items():
        if name == "kubectl":
            continue  # a range with a floor, checked below
        assert spec.get("version", "").startswith("~>"), f"provider {name} is not pinned"
    assert terraform["required_version"].startswith(">= 1.")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _kubectl_range(constraint: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The floor (>=) and ceiling (<) of a kubectl provider constraint; both are required."""
    floor: tuple[int, ...] | None = None
    ceiling: tuple[int, ...] | None = None
    for part in constraint.split(","):
        match = re.fullmatch(r"\s*(>=|<)\s*(\d+(?:\.\d+)*)\s*", part)
        assert match, f"kubectl constraint {constraint!r}: only >= and < terms are expected"
        if match.group(1) == ">=":
            floor = _version(match.group(2))
        else:
            ceiling = _version(match.group(2))
    assert floor is not None and ceiling is not None, f"kubectl {constraint!r} needs >= and <"
    return floor, ceiling


KUBECTL_USERS = [
    c
    for c in CONFIGS
    if "kubectl" in hcl.first(hcl.blocks(c, "terraform")[0], "required_providers")
]


@pytest.mark.parametrize("config", KUBECTL_USERS, ids=_ids(KUBECTL_USERS))
def test_kubectl_provider_is_a_release_with_lazy_load(config: Path) -> None:
    # alekc/kubectl 2.3.0 began building its client when the provider is configured, which fails
    # on the first apply (the cluster is created in the same apply); 2.4.0 and later defer it
    # with lazy_load. Below 3.0.0: a major release may change the provider's arguments.
    (terraform,) = hcl.blocks(config, "terraform")
    spec = hcl.first(terraform, "required_providers")["kubectl"]
    assert spec["source"] == "alekc/kubectl"
    floor, ceiling = _kubectl_range(spec["version"])
    assert floor >= (2, 4, 0), spec["version"]
    assert ceiling <= (3, 0, 0), spec["version"]


def test_kubectl_provider_is_configured_lazily() -> None:
    assert any(c == EXAMPLE for c in KUBECTL_USERS)
    configured = [
        (config, body)
        for config in CONFIGS
        for block in hcl.blocks(config, "provider")
        for name, body in block.items()
        if name == "kubectl"
    ]
    assert [config for config, _ in configured] == [EXAMPLE], "the root module configures it"
    for _, body in configured:
        assert body.get("lazy_load") is True, body


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_every_variable_is_typed_described_and_validated(config: Path) -> None:
    variables = hcl.named(config, "variable")
    assert variables, f"{config} declares no variables"
    for name, body in variables.items():
        assert body.get("type"), f"{name}: no type"
        assert len(body.get("description", "")) >= 10, f"{name}: no description"
        validations = body.get("validation", [])
        # A bool is checked by its type: a validation could only restate `true || false`.
        assert validations or body["type"] == "bool", f"{name}: no validation"
        for validation in validations:
            condition = validation["condition"]
            assert f"var.{name}" in condition, f"{name}: validation ignores it"
            assert not re.search(r"== true \|\||== false \|\|", condition), f"{name}: tautology"
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


def test_dead_letters_are_kept_and_never_lost_to_a_missing_subscription() -> None:
    topic = _one("pubsub", "google_pubsub_topic", "dead_letter")
    assert topic["message_retention_duration"] == "${var.dead_letter_topic_retention}"
    variables = hcl.named(hcl.TERRAFORM / "modules" / "pubsub", "variable")
    assert variables["dead_letter_topic_retention"]["default"] == "2678400s"  # 31 days, the max
    subscription = _one("pubsub", "google_pubsub_subscription", "dead_letter")
    assert subscription["message_retention_duration"] == "604800s"  # 7 days, the max
    assert hcl.first(subscription, "expiration_policy")["ttl"] == ""
    for name in ("push", "oversize"):
        dead_lettering = _one("pubsub", "google_pubsub_subscription", name)
        assert "dead_letter_policy" in dead_lettering
        assert dead_lettering["depends_on"] == ["${google_pubsub_subscription.dead_letter}"]


def test_pubsub_service_agent_is_created_before_its_grants() -> None:
    pubsub = hcl.TERRAFORM / "modules" / "pubsub"
    identity = _one("pubsub", "google_project_service_identity", "pubsub")
    assert identity["service"] == "pubsub.googleapis.com"
    assert identity["provider"] == "google-beta"
    granted = [r for r in hcl.resources(pubsub) if r.body.get("member") == "${local.pubsub_agent}"]
    assert len(granted) >= 4
    for grant in granted:
        assert "${google_project_service_identity.pubsub}" in grant.body.get("depends_on", []), (
            grant.name
        )
    (terraform,) = hcl.blocks(EXAMPLE, "terraform")
    assert "google-beta" in hcl.first(terraform, "required_providers")
    assert "google-beta" in {label for p in hcl.blocks(EXAMPLE, "provider") for label in p}


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
    """The one project-level grant: the node role GKE requires of the nodes' own account."""
    project_wide = [
        r
        for r in hcl.resources()
        if r.type.startswith("google_project_iam_") and r.type != "google_project_iam_custom_role"
    ]
    assert [(r.type, r.name, r.path.parent.name) for r in project_wide] == [
        ("google_project_iam_member", "nodes_default", "gke")
    ]
    (grant,) = project_wide
    assert grant.body["role"] == "roles/container.defaultNodeServiceAccount"
    assert grant.body["member"] == "serviceAccount:${var.node_service_account_email}"


def test_autopilot_nodes_run_as_their_own_account() -> None:
    cluster = _one("gke", "google_container_cluster", "this")
    defaults = hcl.first(hcl.first(cluster, "cluster_autoscaling"), "auto_provisioning_defaults")
    assert defaults["service_account"] == "${var.node_service_account_email}"
    assert "google_project_iam_member.nodes_default" in " ".join(cluster["depends_on"])
    reader = _one("gke", "google_artifact_registry_repository_iam_member", "nodes_reader")
    assert reader["role"] == "roles/artifactregistry.reader"
    assert reader["member"] == "serviceAccount:${var.node_service_account_email}"
    assert {"project", "location", "repository"} <= set(reader)
    accounts = hcl.TERRAFORM / "modules" / "service-accounts"
    nodes = [r for r in hcl.resources(accounts) if r.name == "nodes"]
    assert nodes and nodes[0].body["count"] == "${var.create_nodes ? 1 : 0}"
    calls = hcl.named(EXAMPLE, "module")
    assert calls["service_accounts"]["create_nodes"] == "${local.create_cluster}"
    assert calls["gke"]["node_service_account_email"] == "${module.service_accounts.nodes_email}"
    assert calls["gke"]["image_repositories"] == "${local.image_repositories}"
    repositories = hcl.locals_(EXAMPLE)["image_repositories"]
    assert "var.receiver_image" in repositories and "var.uploader_image" in repositories
    assert "distinct(" in repositories, "one grant per repository (for_each keys are unique)"


def _prefix_pattern(directory: Path) -> re.Pattern[str]:
    condition = hcl.named(directory, "variable")["name_prefix"]["validation"][0]["condition"]
    (pattern,) = re.findall(r'regex\("([^"]+)", var\.name_prefix\)', condition)
    return re.compile(pattern.replace("\\\\", "\\"))


@pytest.mark.parametrize(
    "directory", [EXAMPLE, hcl.TERRAFORM / "modules" / "service-accounts"], ids=["root", "module"]
)
def test_every_service_account_id_derived_from_name_prefix_fits(directory: Path) -> None:
    """Account ids are 6-30 characters: the longest accepted prefix plus the longest suffix."""
    accounts = hcl.TERRAFORM / "modules" / "service-accounts"
    suffixes = [
        r.body["account_id"].removeprefix("${var.name_prefix}")
        for r in hcl.resources(accounts)
        if r.type == "google_service_account"
    ]
    assert len(suffixes) >= 5 and all(s.startswith("-") for s in suffixes), suffixes
    pattern = _prefix_pattern(directory)
    accepted = [n for n in range(1, 64) if pattern.search("a" * n)]
    assert accepted, "name_prefix accepts nothing"
    longest = max(len(s) for s in suffixes)
    assert max(accepted) + longest <= 30, f"{max(accepted)}-character prefixes overflow"
    assert min(accepted) + min(len(s) for s in suffixes) >= 6
    assert max(accepted) + longest == 30, "the limit is not needlessly tight"
    assert pattern.search("dicom-ingest")
    for bad in ("dicom-ingest-", "1dicom", "Dicom-ingest", "dicom_ingest"):
        assert not pattern.search(bad), bad
    assert _prefix_pattern(EXAMPLE).pattern == _prefix_pattern(accounts).pattern


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


def test_uploader_is_internal_and_answers_within_the_ack_deadline() -> None:
    service = _one("uploader", "google_cloud_run_v2_service", "this")
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    assert "invoker_iam_disabled" not in service
    template = hcl.first(service, "template")
    assert template["timeout"] == "${var.timeout_seconds}s"
    assert template["service_account"] == "${var.service_account_email}"
    assert "scaling" in template and "max_instance_request_concurrency" in template
    env = hcl.locals_(hcl.TERRAFORM / "modules" / "uploader")["env"]
    for name in ("DICOM_INGEST_DICOMWEB_ADDRESS", "DICOM_INGEST_DEAD_LETTER_TOPIC"):
        assert name in env
    assert "DICOM_INGEST_HTTP_TIMEOUT = tostring(var.http_timeout_seconds)" in env
    assert "DICOM_INGEST_REQUEST_DEADLINE = tostring(floor(var.timeout_seconds * 0.9))" in env


def test_uploader_serves_only_the_receivers_bucket_and_prefix() -> None:
    env = hcl.locals_(hcl.TERRAFORM / "modules" / "uploader")["env"]
    assert "DICOM_INGEST_BUCKET = var.bucket" in env
    assert "DICOM_INGEST_OBJECT_PREFIX = var.object_prefix" in env
    calls = hcl.named(EXAMPLE, "module")
    assert calls["uploader"]["bucket"] == calls["receiver"]["bucket"] == "${module.storage.name}"
    assert calls["uploader"]["object_prefix"] == calls["receiver"]["object_prefix"]
    assert calls["uploader"]["object_prefix"] == "${var.object_prefix}"


def test_cloud_run_ends_a_push_request_before_its_ack_deadline() -> None:
    """Otherwise Pub/Sub redelivers a message whose first upload still runs."""
    uploader = hcl.named(hcl.TERRAFORM / "modules" / "uploader", "variable")
    pubsub = hcl.named(hcl.TERRAFORM / "modules" / "pubsub", "variable")
    timeout = uploader["timeout_seconds"]["default"]
    http_timeout = uploader["http_timeout_seconds"]["default"]
    ack_deadline = pubsub["ack_deadline_seconds"]["default"]
    assert http_timeout * 4 <= timeout < ack_deadline <= 600
    assert "< 600" in uploader["timeout_seconds"]["validation"][0]["condition"]
    # The example root: the values it passes, through its locals.
    calls = hcl.named(EXAMPLE, "module")
    assert calls["uploader"]["timeout_seconds"] == "${local.uploader_timeout_seconds}"
    assert calls["pubsub"]["ack_deadline_seconds"] == "${local.ack_deadline_seconds}"
    root = hcl.locals_(EXAMPLE)
    assert root["uploader_timeout_seconds"] < root["ack_deadline_seconds"] <= 600
    assert root["uploader_timeout_seconds"] == 540


def test_oversize_instances_go_to_the_pull_worker_by_default() -> None:
    variables = hcl.named(EXAMPLE, "variable")
    threshold = variables["oversize_threshold_bytes"]["default"]
    assert threshold == 512 * 1024 * 1024
    assert hcl.locals_(EXAMPLE)["oversize"] == "${var.oversize_threshold_bytes != null}"
    calls = hcl.named(EXAMPLE, "module")
    assert calls["uploader"]["oversize_topic"] == "${module.pubsub.oversize_topic_id}"
    assert calls["pubsub"]["enable_oversize"] == "${local.oversize}"
    module = hcl.named(hcl.TERRAFORM / "modules" / "uploader", "variable")
    assert module["push_max_bytes"]["default"] == threshold
    env = hcl.locals_(hcl.TERRAFORM / "modules" / "uploader")["optional_env"]
    assert "DICOM_INGEST_PUSH_MAX_BYTES" in env and "DICOM_INGEST_OVERSIZE_TOPIC" in env


def test_allow_global_access_reaches_the_service_annotation() -> None:
    variables = hcl.named(EXAMPLE, "variable")
    assert variables["allow_global_access"]["default"] is False
    call = hcl.named(EXAMPLE, "module")["receiver"]
    assert call["allow_global_access"] == "${var.allow_global_access}"
    template_vars = hcl.locals_(hcl.TERRAFORM / "modules" / "receiver")["receiver_template_vars"]
    assert template_vars["allow_global_access"] == "${tostring(var.allow_global_access)}"


def test_healthcare_ids_use_only_the_characters_the_api_accepts() -> None:
    variables = hcl.named(hcl.TERRAFORM / "modules" / "healthcare", "variable")
    for name in ("dataset_name", "dicom_store_name"):
        condition = variables[name]["validation"][0]["condition"]
        (pattern,) = re.findall(r'regex\("([^"]+)"', condition)
        compiled = re.compile(pattern)
        assert compiled.search("dicom-ingest_2") and compiled.search("A" * 256)
        for bad in ("dicom.ingest", "a/b", "", "A" * 257):
            assert not compiled.search(bad), bad


def test_store_mode_ephemeral_storage_is_the_spool_plus_headroom() -> None:
    receiver = hcl.TERRAFORM / "modules" / "receiver"
    local = hcl.locals_(receiver)
    assert local["spool_gib"] == '${tonumber(trimsuffix(var.spool_size, "Gi"))}'
    assert local["ephemeral_gib"] == "${local.spool ? 1 : local.spool_gib + 1}"
    assert local["receiver_template_vars"]["ephemeral_storage"] == "${local.ephemeral_gib}Gi"
    variables = hcl.named(receiver, "variable")
    (pattern,) = re.findall(
        r'regex\("([^"]+)"', variables["spool_size"]["validation"][0]["condition"]
    )
    compiled = re.compile(pattern)
    assert compiled.search("8Gi") and compiled.search("1024Gi")
    for bad in ("8G", "500Mi", "1Ti", "0Gi", "08Gi", "8 Gi"):
        assert not compiled.search(bad), bad
    (output,) = [o for n, o in hcl.named(receiver, "output").items() if n == "manifests"]
    (precondition,) = output["precondition"]
    assert "local.ephemeral_gib <= var.max_ephemeral_storage_gib" in precondition["condition"]
    assert variables["max_ephemeral_storage_gib"]["default"] == 10  # Autopilot's limit per pod


def test_receiver_grace_period_covers_pre_stop_drain_and_margin() -> None:
    local = hcl.locals_(hcl.TERRAFORM / "modules" / "receiver")
    assert local["termination_grace"] == (
        "${var.prestop_seconds + var.shutdown_grace_seconds + 15}"
    )
    template_vars = local["receiver_template_vars"]
    assert template_vars["termination_grace_seconds"] == "${local.termination_grace}"
    assert template_vars["prestop_seconds"] == "${var.prestop_seconds}"


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
    names = set(re.findall(r'"((?:receiver|worker)-[a-z-]+)"', main))
    assert names
    for name in names:
        assert (k8s_render.K8S_DIR / f"{name}.yaml.tftpl").is_file(), name


def test_apis_enabled() -> None:
    apis = hcl.locals_(EXAMPLE)["apis"]
    for api in ("healthcare", "pubsub", "run", "container", "storage", "iamcredentials"):
        assert f"{api}.googleapis.com" in apis


def _secret_name_pattern(directory: Path, variable: str) -> re.Pattern[str]:
    condition = hcl.named(directory, "variable")[variable]["validation"][0]["condition"]
    (pattern,) = re.findall(r'regex\("([^"]+)", name\)', condition)
    return re.compile(pattern)


def test_dicom_tls_is_off_by_default_and_names_existing_secrets() -> None:
    receiver = hcl.TERRAFORM / "modules" / "receiver"
    module_var = hcl.named(receiver, "variable")["tls"]
    root_var = hcl.named(EXAMPLE, "variable")["receiver_tls"]
    assert module_var["default"] is None and root_var["default"] is None
    assert module_var["type"] == root_var["type"]
    for field in ("secret_name = string", "client_ca_secret_name = optional(string)"):
        assert field in module_var["type"]
    assert "tls_only = optional(bool, false)" in module_var["type"]
    assert "pem" not in module_var["type"].lower(), "no key material in terraform state"
    assert hcl.named(EXAMPLE, "module")["receiver"]["tls"] == "${var.receiver_tls}"
    for directory, variable in ((receiver, "tls"), (EXAMPLE, "receiver_tls")):
        pattern = _secret_name_pattern(directory, variable)
        for good in ("dicom-ingest-receiver-tls", "pacs-ca", "a", "tls.example.org"):
            assert pattern.search(good), good
        for bad in ("", "Receiver-TLS", "tls_secret", "-tls", "tls-", "a" * 254):
            assert not pattern.search(bad), bad


def test_dicom_tls_variables_reach_the_templates() -> None:
    receiver = hcl.TERRAFORM / "modules" / "receiver"
    local = hcl.locals_(receiver)
    assert local["tls"] == "${var.tls != null}"
    assert local["tls_only"].startswith("${local.tls && ")
    assert "var.tls.tls_only" in local["tls_only"]
    assert local["tls_client_ca"].startswith("${local.tls && ")
    assert "var.tls.client_ca_secret_name" in local["tls_client_ca"]
    assert local["dimse_ports"] == (
        "${concat(local.tls_only ? [] : [2575], local.tls ? [2762] : [])}"
    )
    template_vars = local["receiver_template_vars"]
    for name in ("tls", "tls_only", "tls_client_ca"):
        assert template_vars[name] == f"${{local.{name}}}", name
    assert template_vars["tls_secret"] == '${local.tls ? var.tls.secret_name : ""}'
    assert template_vars["tls_client_ca_secret"] == (
        '${local.tls_client_ca ? var.tls.client_ca_secret_name : ""}'
    )
    outputs = hcl.named(receiver, "output")
    assert outputs["dcmsend_command"]["value"].startswith("${local.tls_only ? null : ")
    storescu = outputs["storescu_tls_command"]["value"]
    assert storescu.startswith("${(local.tls") and " 2762 " in storescu
    assert "+tls CLIENT.key CLIENT.crt" in storescu and "+tla" in storescu
    root_outputs = hcl.named(EXAMPLE, "output")
    assert root_outputs["storescu_tls_command"]["value"] == (
        "${module.receiver.storescu_tls_command}"
    )
    # The address's description forces a new address when it changes: TLS must not touch it.
    address = _one("receiver", "google_compute_address", "load_balancer")
    assert "${" not in str(address["description"])
