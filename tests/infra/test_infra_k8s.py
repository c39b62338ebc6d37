"""k8s/: the receiver's manifests, rendered as terraform renders them, against the runtime contract.

Schema validation (kubernetes-validate --strict) and checkov's Kubernetes checks run in
scripts/check-infra.sh; these tests check what the schemas cannot: that the manifests fit the
receiver (the guide's flags, the health port, the spool directory, the drain time).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import k8s_render

TEMPLATES = k8s_render.templates()


def _load(name: str, values: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        k8s_render.render(k8s_render.K8S_DIR / f"{name}.yaml.tftpl", values)
    )
    return doc


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def _flags(container: dict[str, Any]) -> dict[str, str]:
    flags: dict[str, str] = {}
    for arg in container["args"]:
        assert arg.startswith("--") and "=" in arg, f"not --flag=value: {arg}"
        name, value = arg[2:].split("=", 1)
        flags[name] = value
    return flags


@pytest.fixture(params=["receiver-deployment", "receiver-statefulset"])
def receiver(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def test_every_template_renders_to_one_object(tmp_path: Path) -> None:
    assert len(TEMPLATES) >= 8
    for template in TEMPLATES:
        docs = list(yaml.safe_load_all(k8s_render.render(template)))
        assert len(docs) == 1, f"{template.name}: kubectl_manifest applies one object per file"
        assert {"apiVersion", "kind", "metadata"} <= set(docs[0])
    assert k8s_render.main(["k8s_render", str(tmp_path)]) == 0
    with_tls = {"receiver-deployment", "receiver-statefulset", "receiver-service"}
    with_tls |= {"receiver-headless-service", "receiver-networkpolicy"}
    assert {p.name for p in tmp_path.glob("*-tls.yaml")} == {f"{n}-tls.yaml" for n in with_tls}
    assert len(list(tmp_path.glob("*.yaml"))) == len(TEMPLATES) + len(with_tls)
    for path in tmp_path.glob("*.yaml"):
        assert len(list(yaml.safe_load_all(path.read_text()))) == 1, path.name


def test_templates_use_interpolation_and_whole_line_directives() -> None:
    for template in TEMPLATES:
        for values in k8s_render.variants(template).values():
            k8s_render.render_text(template.read_text(), values)
    flag = {"x": "true", "y": "false", "v": "V"}
    text = "a\n%{ if x ~}\nb ${v}\n%{ if !y ~}\nc\n%{ else ~}\nd\n%{ endif ~}\n%{ endif ~}\ne\n"
    assert k8s_render.render_text(text, flag) == "a\nb V\nc\ne\n"
    assert k8s_render.render_text(text, flag | {"x": "false"}) == "a\ne\n"
    for unsupported in (
        "%{ if x }a%{ endif }",  # directives inside a line
        "  %{ if x ~}\na\n  %{ endif ~}\n",  # indented: terraform would keep the spaces
        "%{ if x }\na\n%{ endif }\n",  # no strip marker: terraform would keep the newline
        "%{ for v in x ~}\n%{ endfor ~}\n",
        "${x ? 1 : 2}\n",
    ):
        with pytest.raises(ValueError, match="unsupported"):
            k8s_render.render_text(unsupported, flag)
    for unbalanced in ("%{ if x ~}\na\n", "a\n%{ endif ~}\n", "%{ else ~}\n"):
        with pytest.raises(ValueError, match="without"):
            k8s_render.render_text(unbalanced, flag)
    with pytest.raises(ValueError, match="boolean"):
        k8s_render.render_text("%{ if v ~}\na\n%{ endif ~}\n", flag)
    with pytest.raises(KeyError):
        k8s_render.render_text("${missing}", {})
    with pytest.raises(KeyError):  # as templatefile(): also where the branch is not taken
        k8s_render.render_text("%{ if y ~}\n${missing}\n%{ endif ~}\n", flag)


def test_guide_args_plus_bucket_and_topic(receiver: dict[str, Any]) -> None:
    args = _container(receiver)["args"]
    assert args[:2] == ["--dimse_aet=IMPORTADAPTER", "--dimse_port=2575"]
    flags = _flags(_container(receiver))
    assert flags["bucket"] == k8s_render.RECEIVER_VALUES["bucket"]
    assert flags["topic"].startswith("projects/") and "/topics/" in flags["topic"]
    assert flags["log_format"] == "json"


def test_ack_mode_matches_the_workload_kind() -> None:
    assert _flags(_container(_load("receiver-deployment")))["ack_after"] == "store"
    statefulset = _load("receiver-statefulset")
    assert _flags(_container(statefulset))["ack_after"] == "spool"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    hpa = _load("receiver-hpa", k8s_render.spool_mode_values())
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"


@pytest.mark.parametrize("variant", ["default", "tls", "mtls", "mtls-only"])
def test_deployment_and_statefulset_run_the_same_pod(variant: str) -> None:
    template = k8s_render.K8S_DIR / "receiver-deployment.yaml.tftpl"
    values = k8s_render.variants(template)[variant]
    deployment = _load("receiver-deployment", values)["spec"]["template"]
    statefulset = _load("receiver-statefulset", values)["spec"]["template"]
    # the spool: an emptyDir here, a volume claim template there
    volumes = [v for v in deployment["spec"].pop("volumes") if v["name"] != "spool"]
    assert volumes == statefulset["spec"].pop("volumes", [])
    assert deployment == statefulset


def test_probes_use_the_health_port(receiver: dict[str, Any]) -> None:
    container = _container(receiver)
    health_port = int(_flags(container)["health_port"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"dimse": 2575, "health": health_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["startupProbe"]["httpGet"]["port"] == "health"


def test_stopping_replica_leaves_the_load_balancer_then_drains(receiver: dict[str, Any]) -> None:
    """preStop keeps the listener open while the load balancer's health check (8 s x 3) takes
    the replica out; then SIGTERM drains for --shutdown_grace; the grace period covers both."""
    container = _container(receiver)
    pre_stop = container["lifecycle"]["preStop"]
    assert set(pre_stop) == {"sleep"}, "no exec: the sleep action needs nothing in the image"
    sleep = pre_stop["sleep"]["seconds"]
    assert sleep == int(k8s_render.RECEIVER_VALUES["prestop_seconds"]) >= 24
    drain = int(_flags(container)["shutdown_grace"])
    grace = receiver["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == sleep + drain + 15


def test_store_mode_ephemeral_storage_holds_the_spool_and_headroom() -> None:
    def gib(quantity: str) -> int:
        assert quantity.endswith("Gi"), quantity
        return int(quantity.removesuffix("Gi"))

    deployment = _load("receiver-deployment")
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    resources = _container(deployment)["resources"]
    for key in ("requests", "limits"):
        assert gib(resources[key]["ephemeral-storage"]) == gib(volume["emptyDir"]["sizeLimit"]) + 1
    # In spool mode the spool is a persistent volume: only logs and scratch count.
    statefulset = _load("receiver-statefulset")
    assert _container(statefulset)["resources"]["limits"]["ephemeral-storage"] == "1Gi"


def test_statefulset_is_governed_by_a_headless_service() -> None:
    statefulset = _load("receiver-statefulset")
    service = _load("receiver-headless-service")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["name"] != _load("receiver-service")["metadata"]["name"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_locked_down_container_with_a_writable_spool(receiver: dict[str, Any]) -> None:
    pod = receiver["spec"]["template"]["spec"]
    container = _container(receiver)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["runAsUser"] >= 10000
    spool = _flags(container)["spool_dir"]
    assert {"name": "spool", "mountPath": spool} in container["volumeMounts"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TMPDIR"] == spool
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][key])
    assert container["image"].count("@sha256:") == 1


def test_store_mode_spool_is_a_sized_empty_dir() -> None:
    volumes = _load("receiver-deployment")["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "spool", "emptyDir": {"sizeLimit": "8Gi"}}]


def test_workload_identity_service_account() -> None:
    account = _load("receiver-serviceaccount")
    annotation = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert annotation.endswith(".iam.gserviceaccount.com")
    pod = _load("receiver-deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_internal_load_balancer_on_2575() -> None:
    service = _load("receiver-service")
    assert service["metadata"]["annotations"]["networking.gke.io/load-balancer-type"] == (
        "Internal"
    )
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [
        {"name": "dimse", "port": 2575, "targetPort": "dimse", "protocol": "TCP"}
    ]
    assert service["spec"]["loadBalancerSourceRanges"] == k8s_render.SOURCE_RANGES
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    pod_labels = _load("receiver-deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


GMP_COLLECTORS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "collector"}},
}


def test_network_policy_admits_only_the_pacs_ranges_and_the_metrics_scraper() -> None:
    policy = _load("receiver-networkpolicy")
    dimse, metrics = policy["spec"]["ingress"]
    assert [peer["ipBlock"]["cidr"] for peer in dimse["from"]] == k8s_render.SOURCE_RANGES
    assert dimse["ports"] == [{"port": 2575, "protocol": "TCP"}]
    assert metrics == {"from": [GMP_COLLECTORS], "ports": [{"port": 8080, "protocol": "TCP"}]}


@pytest.mark.parametrize(
    ("monitoring", "workload"),
    [
        ("receiver-podmonitoring", "receiver-deployment"),
        ("receiver-podmonitoring", "receiver-statefulset"),
        ("worker-podmonitoring", "worker-deployment"),
    ],
)
def test_managed_prometheus_scrapes_metrics_on_the_health_port(
    monitoring: str, workload: str
) -> None:
    """A PodMonitoring per component selects its pods and scrapes /metrics on the named port
    the workload declares, the port its --health_port flag serves; the network policy lets
    the collectors in on it."""
    pod_monitoring = _load(monitoring)
    assert pod_monitoring["apiVersion"] == "monitoring.googleapis.com/v1"
    assert pod_monitoring["kind"] == "PodMonitoring"
    pod = _load(workload)["spec"]["template"]
    selector = pod_monitoring["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (endpoint,) = pod_monitoring["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("health", "/metrics")
    container = _container(_load(workload))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == int(_flags(container)["health_port"])
    policy = _load(workload.split("-", maxsplit=1)[0] + "-networkpolicy")
    admitted = [
        rule["ports"][0]["port"]
        for rule in policy["spec"]["ingress"]
        if rule["from"] == [GMP_COLLECTORS]
    ]
    assert admitted == [ports["health"]]


def test_worker_probes_use_its_health_port() -> None:
    container = _container(_load("worker-deployment"))
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_disruption_budget_and_autoscaler_target_the_receiver() -> None:
    deployment = _load("receiver-deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = _load("receiver-pdb")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = _load("receiver-hpa")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


def test_everything_is_namespaced() -> None:
    namespace = _load("namespace")["metadata"]["name"]
    for template in TEMPLATES:
        doc = yaml.safe_load(k8s_render.render(template))
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, template.name


def test_worker_finishes_long_uploads_and_is_disrupted_one_at_a_time() -> None:
    worker = _load("worker-deployment")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 3600
    pdb = _load("worker-pdb")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    receiver_pdb = _load("receiver-pdb")
    assert not receiver_pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_worker_runs_the_uploader_image_as_a_pull_worker() -> None:
    worker = _load("worker-deployment")
    container = _container(worker)
    # The uploader image's umask 077 wrapper, kept where `command` replaces its entry point.
    assert container["command"] == [
        "/bin/sh",
        "-c",
        'umask 077 && exec "$0" "$@"',
        "dicom-ingest",
        "work",
    ]
    assert _flags(container)["subscription"].startswith("projects/")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DICOM_INGEST_AUTH"] == "adc"
    assert env["DICOM_INGEST_DICOMWEB_ADDRESS"].endswith("/dicomWeb")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# The PodMonitoring CRD (monitoring.googleapis.com/v1, Google Managed Prometheus) is not in
# kubernetes-validate's bundled schemas, which only warns about it: these are the CRD's rules
# for the fields, checked strictly (no field the CRD does not define).
POD_MONITORING_SPEC = {"endpoints", "selector", "filterRunning", "limits", "targetLabels"}
SCRAPE_ENDPOINT = {
    "port", "path", "interval", "timeout", "scheme", "params", "proxyUrl", "metricRelabeling",
    "authorization", "basicAuth", "oauth2", "tls",
}  # fmt: skip
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")


def _seconds(duration: str) -> float:
    match = _DURATION.fullmatch(duration)
    assert match and duration, f"not a Prometheus duration: {duration!r}"
    hours, minutes, seconds, millis = (int(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


@pytest.mark.parametrize("name", ["receiver-podmonitoring", "worker-podmonitoring"])
def test_pod_monitoring_follows_its_crd(name: str) -> None:
    doc = _load(name)
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert {"endpoints", "selector"} <= set(spec) <= POD_MONITORING_SPEC
    assert set(spec["selector"]) <= {"matchLabels", "matchExpressions"}
    assert all(isinstance(v, str) for v in spec["selector"]["matchLabels"].values())
    assert 1 <= len(spec["endpoints"]) <= 10
    for endpoint in spec["endpoints"]:
        assert {"port", "interval"} <= set(endpoint) <= SCRAPE_ENDPOINT
        assert isinstance(endpoint["port"], (int, str))
        assert _seconds(endpoint["timeout"]) <= _seconds(endpoint["interval"])


# --- DICOM TLS -----------------------------------------------------------------------------------

TLS_VARIANTS = ["tls", "mtls", "mtls-only"]
WORKLOADS = ["receiver-deployment", "receiver-statefulset"]


def _variant(name: str, template: str = "receiver-deployment") -> dict[str, str]:
    return k8s_render.variants(k8s_render.K8S_DIR / f"{template}.yaml.tftpl")[name]


def _ports(doc: dict[str, Any]) -> list[int]:
    return [p["port"] for p in doc["spec"]["ports"]]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_tls_is_off_by_default(workload: str) -> None:
    doc = _load(workload)
    pod, container = doc["spec"]["template"]["spec"], _container(doc)
    assert not [a for a in container["args"] if a.startswith("--tls")]
    assert [p["containerPort"] for p in container["ports"]] == [2575, 8080]
    assert [m["name"] for m in container["volumeMounts"]] == ["spool"]
    assert [v["name"] for v in pod.get("volumes", [])] in ([], ["spool"])
    assert _ports(_load("receiver-service")) == [2575]
    assert _ports(_load("receiver-headless-service", k8s_render.spool_mode_values())) == [2575]
    rule, metrics = _load("receiver-networkpolicy")["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [2575]
    assert metrics["from"] == [GMP_COLLECTORS]


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("variant", TLS_VARIANTS)
def test_tls_flags_name_the_files_of_a_read_only_secret_volume(workload: str, variant: str) -> None:
    values = _variant(variant, workload)
    doc = _load(workload, values)
    pod, container = doc["spec"]["template"]["spec"], _container(doc)
    flags = _flags(container)
    mutual = values["tls_client_ca"] == "true"
    expected = {"tls_cert", "tls_key", "tls_port"} | ({"tls_ca"} if mutual else set())
    assert {f for f in flags if f.startswith("tls_") and f != "tls_only"} == expected
    assert flags["tls_port"] == str(k8s_render.TLS_PORT)
    # Each file flag points into the TLS mount, at a file one of its Secrets projects there.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert mount == {"name": "tls", "mountPath": k8s_render.TLS_MOUNT, "readOnly": True}
    assert "subPath" not in mount, "a subPath mount never sees a renewed Secret"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert volume["projected"]["defaultMode"] == 0o440
    files = {
        item["path"]: (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    server, client_ca = values["tls_secret"], values["tls_client_ca_secret"]
    wanted = {"tls.crt": (server, "tls.crt"), "tls.key": (server, "tls.key")}
    if mutual:
        wanted["ca.crt"] = (client_ca, "ca.crt")
    assert files == wanted
    for flag, name in (("tls_cert", "tls.crt"), ("tls_key", "tls.key"), ("tls_ca", "ca.crt")):
        if flag in flags:
            assert flags[flag] == f"{k8s_render.TLS_MOUNT}/{name}"
    # The readiness probe is the health port's, whatever DIMSE ports are served.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("variant", TLS_VARIANTS)
def test_tls_port_on_the_pod_the_load_balancer_and_the_network_policy(variant: str) -> None:
    values = _variant(variant)
    only = values["tls_only"] == "true"
    wanted = [2762] if only else [2575, 2762]
    container = _container(_load("receiver-deployment", values))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == ({} if only else {"dimse": 2575}) | {"dicom-tls": 2762, "health": 8080}
    assert ("tls_only" in _flags(container)) is only
    if only:
        assert _flags(container)["tls_only"] == "true"
    for name in ("receiver-service", "receiver-headless-service"):
        service = _load(name, _variant(variant, name))
        assert _ports(service) == wanted, name
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], name
    rule, metrics = _load("receiver-networkpolicy", values)["spec"]["ingress"]
    assert rule["ports"] == [{"port": p, "protocol": "TCP"} for p in wanted]
    assert metrics["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert [peer["ipBlock"]["cidr"] for peer in rule["from"]] == k8s_render.SOURCE_RANGES
