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
    assert len(list(tmp_path.glob("*.yaml"))) == len(TEMPLATES)


def test_templates_use_only_plain_interpolation() -> None:
    for template in TEMPLATES:
        k8s_render.render_text(template.read_text(), k8s_render.values_for(template))
    with pytest.raises(ValueError, match="unsupported"):
        k8s_render.render_text("%{ if x }a%{ endif }", {})
    with pytest.raises(KeyError):
        k8s_render.render_text("${missing}", {})


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


def test_deployment_and_statefulset_run_the_same_pod() -> None:
    values = k8s_render.RECEIVER_VALUES
    deployment = _load("receiver-deployment", values)["spec"]["template"]
    statefulset = _load("receiver-statefulset", values)["spec"]["template"]
    deployment["spec"].pop("volumes")
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
