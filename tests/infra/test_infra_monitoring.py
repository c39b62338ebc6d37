"""terraform/modules/monitoring: the dashboard's and the alerts' queries name real metrics.

The PromQL is written once, in the module's locals; here it is rendered (locals and variables
substituted) and every metric it selects is checked against the metric catalogue: the
dicom_ingest_* names and labels the receiver and the worker export, the uploader's log-based
metrics declared beside them, and the few Google-provided metrics the module relies on.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pytest
from support.fakes import RecordingPublisher
from support.messages import make_message

from infra import hcl
from ingest.contracts import metrics
from ingest.contracts.logs import JsonFormatter
from ingest.contracts.message import encode
from ingest.contracts.outcome import Action, Outcome
from uploader import pubsub_handler

MODULE = hcl.TERRAFORM / "modules" / "monitoring"
EXAMPLE = hcl.TERRAFORM / "envs" / "example"

# The catalogue (issue 8): name -> (kind, labels and their values; None = any value).
# The label values the code records (ingest/contracts/metrics.py), as the queries may name them.
ASSOCIATION_OUTCOMES = set(metrics.ASSOCIATION_OUTCOMES)
UPLOAD_OUTCOMES = set(metrics.UPLOAD_OUTCOMES)
CATALOGUE: dict[str, tuple[str, dict[str, set[str] | None]]] = {
    "dicom_ingest_associations_total": ("counter", {"outcome": ASSOCIATION_OUTCOMES}),
    "dicom_ingest_instances_received_total": ("counter", {"status": None}),
    "dicom_ingest_received_bytes_total": ("counter", {"status": None}),
    "dicom_ingest_receive_seconds": ("histogram", {}),
    "dicom_ingest_queue_messages": ("gauge", {"state": {"ready", "leased", "retrying", "dead"}}),
    "dicom_ingest_queue_oldest_age_seconds": ("gauge", {}),
    "dicom_ingest_uploads_total": ("counter", {"outcome": UPLOAD_OUTCOMES}),
    "dicom_ingest_stow_seconds": ("histogram", {}),
    "dicom_ingest_dead_letters_total": ("counter", {}),
    "dicom_ingest_spool_free_bytes": ("gauge", {}),
    "dicom_ingest_early_uploads_total": ("counter", {"outcome": None}),
    "dicom_ingest_shipper_backlog": ("gauge", {}),
    "dicom_ingest_store_reachable": ("gauge", {}),
}
# Only the local deployment's embedded queue has these; on Google Cloud, Pub/Sub's own metrics.
LOCAL_ONLY = {"dicom_ingest_queue_messages", "dicom_ingest_queue_oldest_age_seconds"}
# Labels Google Managed Prometheus adds to every scraped series.
TARGET_LABELS = {"namespace", "pod", "cluster", "location", "job", "instance", "le"}
# Google-provided metrics, as PromQL names them, with the labels the module uses.
GOOGLE: dict[str, set[str]] = {
    "pubsub_googleapis_com:subscription_oldest_unacked_message_age": {
        "monitored_resource",
        "subscription_id",
    },
    "pubsub_googleapis_com:subscription_num_undelivered_messages": {
        "monitored_resource",
        "subscription_id",
    },
    "run_googleapis_com:request_count": {
        "monitored_resource",
        "service_name",
        "response_code",
        "response_code_class",
    },
    "run_googleapis_com:request_latencies_bucket": {"monitored_resource", "service_name", "le"},
    # GKE's managed kube state metrics package (on by default on Autopilot and recent Standard).
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
    "kube_statefulset_status_replicas_ready": {"namespace", "statefulset"},
}
# Values for the locals that are function calls, and the example root's subscription names.
COMPUTED = {
    "push_subscription": "dicom-ingest-push",
    "dead_letter_subscription": "dicom-ingest-dead-letter-sub",
    "backlog_regex": "dicom-ingest-push|dicom-ingest-oversize-sub",
    "metric_prefix": "dicom_ingest",
}
VARIABLES = {
    "name_prefix": "dicom-ingest",
    "uploader_service_name": "dicom-ingest-uploader",
    "receiver_namespace": "dicom-ingest",
    "receiver_name": "dicom-ingest-receiver",
    "refusal_rate_threshold": "0",
    "backlog_age_threshold_seconds": "1800",
    "uploader_error_ratio_threshold": "0.1",
}

_REF = re.compile(r"\$\{(local|var|google_logging_metric)\.([a-z_]+)(?:\.([a-z_]+))?\}")
_SELECTOR = re.compile(r'([A-Za-z_][A-Za-z0-9_:]*)\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}')
_MATCHER = re.compile(r'\s*([a-z_]+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')


def _locals() -> dict[str, Any]:
    return hcl.locals_(MODULE)


def _log_metric_names() -> dict[str, str]:
    return {
        r.name: _render(r.body["name"])
        for r in hcl.resources(MODULE)
        if r.type == "google_logging_metric"
    }


def _render(text: str) -> str:
    local = _locals()

    def value(match: re.Match[str]) -> str:
        kind, name, attribute = match.groups()
        if kind == "var":
            return VARIABLES[name]
        if kind == "google_logging_metric":
            assert attribute == "name", match.group(0)
            return _log_metric_names()[name]
        if name in COMPUTED:
            return COMPUTED[name]
        found = local[name] if attribute is None else local[name][attribute]
        assert isinstance(found, str), f"local.{name} is not a string"
        return found

    for _ in range(10):
        rendered = _REF.sub(value, text)
        if rendered == text:
            break
        text = rendered
    assert "${" not in text, f"unrendered reference in {text}"
    return text.replace('\\"', '"')  # HCL's escaped quotes


def _queries() -> dict[str, str]:
    """Every PromQL query of the module: the dashboard's and the alerts', rendered."""
    local = _locals()
    found = {f"chart {k}": _render(v) for k, v in local["promql"].items()}
    found |= {f"alert {k}": _render(v["query"]) for k, v in local["alerts"].items()}
    return found


def _selectors(query: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    result = []
    for name, inside in _SELECTOR.findall(query):
        matchers: dict[str, tuple[str, str]] = {}
        for part in filter(None, re.split(r',(?=\s*[a-z_]+\s*(?:=~|!~|!=|=)\s*")', inside)):
            match = _MATCHER.fullmatch(part)
            assert match, f"cannot read matcher {part!r} in {query}"
            matchers[match.group(1)] = (match.group(2), match.group(3))
        result.append((name, matchers))
    return result


QUERIES = _queries()


def test_queries_render_to_promql() -> None:
    assert len(QUERIES) >= 20
    assert QUERIES["alert receiver_refusing"] == (
        'sum(rate(dicom_ingest_instances_received_total{namespace="dicom-ingest",'
        'status=~"0xA7[0-9A-F]{2}"}[5m])) > 0'
    )
    for where, query in QUERIES.items():
        assert query.count("(") == query.count(")"), where
        assert _selectors(query), f"{where} selects no metric"


@pytest.mark.parametrize("where", sorted(QUERIES))
def test_every_query_names_catalogue_metrics_and_their_labels(where: str) -> None:
    query = QUERIES[where]
    log_metrics = {f"logging_googleapis_com:user_{n}" for n in _log_metric_names().values()}
    for name, matchers in _selectors(query):
        if name.startswith("dicom_ingest_"):
            base = name.removesuffix("_bucket")
            assert base in CATALOGUE, f"{where}: {name} is not in the metric catalogue"
            kind, labels = CATALOGUE[base]
            assert (kind == "histogram") == (name != base), f"{where}: {name} as a {kind}"
            assert "namespace" in matchers, f"{where}: {name} not filtered to the namespace"
            for label, (op, text) in matchers.items():
                assert label in set(labels) | TARGET_LABELS, f"{where}: {name} has no {label}"
                allowed = labels.get(label)
                if allowed is not None:
                    values = text.split("|") if op == "=~" else [text]
                    assert set(values) <= allowed, f"{where}: {label} {values}"
            by_labels = re.findall(r"by \(([^)]*)\)", query)
            for group in by_labels:
                for label in (g.strip() for g in group.split(",")):
                    assert label in set(labels) | TARGET_LABELS, f"{where}: by {label}"
        elif name.startswith("logging_googleapis_com:"):
            assert name in log_metrics, f"{where}: {name} is no log-based metric of the module"
            assert set(matchers) <= {"monitored_resource", "service_name", "outcome"}, where
            if "outcome" in matchers:
                assert matchers["outcome"][1] in UPLOAD_OUTCOMES, where
        else:
            assert name in GOOGLE, f"{where}: unknown metric {name}"
            assert set(matchers) <= GOOGLE[name], f"{where}: {name} {sorted(matchers)}"


def test_status_labels_are_four_hex_digits_upper_case() -> None:
    matchers = [m["status"] for q in QUERIES.values() for _, m in _selectors(q) if "status" in m]
    exact = [text for op, text in matchers if op == "="]
    patterns = [re.compile(text) for op, text in matchers if op == "=~"]
    assert exact and patterns
    for text in exact:
        assert re.fullmatch(r"0x[0-9A-F]{4}", text), text
    for pattern in patterns:  # the refusals: 0xA7xx, out of resources
        assert pattern.fullmatch("0xA700") and pattern.fullmatch("0xA7FF")
        for other in ("0x0000", "0xC000", "0xa700", "0xA900", "0x0122", "0xA70"):
            assert not pattern.fullmatch(other), other


def test_every_cloud_metric_of_the_catalogue_is_on_the_dashboard() -> None:
    charted = {
        name.removesuffix("_bucket")
        for where, q in QUERIES.items()
        if where.startswith("chart ")
        for name, _ in _selectors(q)
    }
    assert set(CATALOGUE) - LOCAL_ONLY <= charted, sorted(set(CATALOGUE) - LOCAL_ONLY - charted)
    for google in ("pubsub_googleapis_com:subscription_oldest_unacked_message_age",):
        assert google in charted
    assert any(n.startswith("logging_googleapis_com:user_") for n in charted)


def test_dashboard_charts_every_query_and_only_defined_ones() -> None:
    local = _locals()
    named = [name for chart in local["charts"] for name in chart["queries"]]
    assert sorted(set(named)) == sorted(local["promql"]), "a query no chart shows, or a typo"
    for chart in local["charts"]:
        assert chart["title"] and chart["unit"]
    (dashboard,) = [r for r in hcl.resources(MODULE) if r.type == "google_monitoring_dashboard"]
    body = dashboard.body["dashboard_json"]
    assert body.startswith("${jsonencode(")
    assert "for i, chart in local.charts" in body
    assert "prometheusQuery = local.promql[name]" in body
    assert "mosaicLayout" in body


ALERTS = {
    "dead_letters",
    "backlog_age",
    "receiver_refusing",
    "receiver_not_ready",
    "uploader_errors",
}


def test_alerts_exist_and_notify_the_channel_variable() -> None:
    alerts = _locals()["alerts"]
    assert set(alerts) == ALERTS
    for name, alert in alerts.items():
        assert alert["severity"] in {"CRITICAL", "ERROR", "WARNING"}, name
        assert re.fullmatch(r"[0-9]+s", alert["duration"]), name
        assert len(alert["documentation"]) > 80 and alert["condition"], name
    (policy,) = [
        r.body for r in hcl.resources(MODULE) if r.type == "google_monitoring_alert_policy"
    ]
    assert policy["for_each"] == "${local.alerts}"
    assert policy["notification_channels"] == "${var.notification_channels}"
    assert policy["user_labels"] == "${var.labels}"
    (condition,) = policy["conditions"]
    promql = hcl.first(condition, "condition_prometheus_query_language")
    assert promql["query"] == "${each.value.query}"
    # Created before the first scrape or log line: the metric does not exist yet.
    assert promql["disable_metric_validation"] is True
    assert hcl.first(policy, "documentation")["content"] == "${each.value.documentation}"
    variables = hcl.named(MODULE, "variable")
    channels = variables["notification_channels"]
    assert channels["type"] == "${list(string)}"
    assert channels["default"] == [], "no channel is allowed"
    call = hcl.named(EXAMPLE, "module")["monitoring"]
    assert call["notification_channels"] == "${var.notification_channels}"
    assert hcl.named(EXAMPLE, "variable")["notification_channels"]["default"] == []


def test_dead_letter_alert_fires_on_one_waiting_message() -> None:
    query = QUERIES["alert dead_letters"]
    assert query.endswith(" > 0")
    ((name, matchers),) = _selectors(query)
    assert name == "pubsub_googleapis_com:subscription_num_undelivered_messages"
    assert matchers["subscription_id"] == ("=", COMPUTED["dead_letter_subscription"])
    assert "var.dead_letter_subscription_id" in _locals()["dead_letter_subscription"]


def test_thresholds_are_variables() -> None:
    alerts = _locals()["alerts"]
    for alert, variable in (
        ("backlog_age", "backlog_age_threshold_seconds"),
        ("receiver_refusing", "refusal_rate_threshold"),
        ("uploader_errors", "uploader_error_ratio_threshold"),
    ):
        assert alerts[alert]["query"].endswith(f"> ${{var.{variable}}}"), alert
        assert "default" in hcl.named(MODULE, "variable")[variable], variable
    backlog = QUERIES["alert backlog_age"]
    ((name, matchers),) = _selectors(backlog)
    assert name == "pubsub_googleapis_com:subscription_oldest_unacked_message_age"
    assert matchers["subscription_id"] == ("=~", COMPUTED["backlog_regex"])
    assert "local.backlog_subscriptions" in _locals()["backlog_regex"]
    call = hcl.named(EXAMPLE, "module")["monitoring"]
    assert call["backlog_age_threshold_seconds"] == "${var.backlog_age_alert_seconds}"
    assert call["uploader_error_ratio_threshold"] == "${var.uploader_error_ratio_alert}"


def test_no_ready_receiver_counts_deployment_or_statefulset_and_fires_on_no_data() -> None:
    query = QUERIES["alert receiver_not_ready"]
    assert query.endswith("or vector(0)) < 1")
    workloads = {m.get("deployment", m.get("statefulset")) for _, m in _selectors(query)}
    assert workloads == {("=", "dicom-ingest-receiver")}
    call = hcl.named(EXAMPLE, "module")["monitoring"]
    assert call["receiver_name"] == "${module.receiver.name}"
    assert call["receiver_namespace"] == "${module.receiver.namespace}"


def test_uploader_error_ratio_counts_redeliveries_and_dead_letters_over_all_requests() -> None:
    query = QUERIES["alert uploader_errors"]
    numerator, denominator = query.rsplit(" / ", 1)
    assert 'response_code_class="5xx"' in numerator
    assert 'outcome="dead"' in numerator
    assert "logging_googleapis_com:user_dicom_ingest_uploader_outcomes" in numerator
    assert denominator.startswith("sum(rate(run_googleapis_com:request_count{")
    assert "response_code" not in denominator


def _log_metric(name: str) -> dict[str, Any]:
    (found,) = [
        r.body
        for r in hcl.resources(MODULE)
        if r.type == "google_logging_metric" and r.name == name
    ]
    return found


def test_log_metric_reads_the_outcome_field_the_uploader_writes() -> None:
    metric = _log_metric("uploader_outcomes")
    assert metric["filter"].endswith("AND jsonPayload.outcome:*")
    assert 'resource.type=\\"cloud_run_revision\\"' in _locals()["uploader_logs"]
    assert metric["label_extractors"] == {"outcome": "EXTRACT(jsonPayload.outcome)"}
    descriptor = hcl.first(metric, "metric_descriptor")
    assert descriptor["metric_kind"] == "DELTA" and descriptor["value_type"] == "INT64"
    assert [label["key"] for label in descriptor["labels"]] == ["outcome"]
    # Log-based metric names become PromQL names unchanged only without hyphens.
    assert re.fullmatch(r"[a-z0-9_]+", _log_metric_names()["uploader_outcomes"])
    assert {action.value for action in Action} == UPLOAD_OUTCOMES


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@dataclass
class _Answering:
    """The upload service's two calls, answering every message with one outcome."""

    outcome: Outcome

    def process(self, messages: list[Any]) -> list[Outcome]:
        return [self.outcome for _ in messages]

    def finish(self, message: Any, outcome: Outcome) -> None:
        pass


@pytest.mark.parametrize(
    ("action", "severity"),
    [(Action.RETRY, "WARNING"), (Action.DEAD, "ERROR"), (Action.CONFLICT, "ERROR")],
)
def test_uploader_outcome_line_carries_the_field_the_metric_extracts(
    action: Action, severity: str
) -> None:
    """What the uploader logs of a message that is not simply stored: its first failure, or
    its dead letter, each one line with the ``outcome`` field."""
    handler = _Lines()
    logger = logging.getLogger()
    logger.addHandler(handler)
    message = make_message()
    received = pubsub_handler.Received("7", encode(message), message.attributes, 1)
    try:
        pubsub_handler.PubSubHandler(
            _Answering(Outcome(action, "why")),  # type: ignore[arg-type]
            dead_letters=RecordingPublisher(),
        ).handle(received)
    finally:
        logger.removeHandler(handler)
    (line,) = [line for line in handler.lines if line["severity"] in {"WARNING", "ERROR"}]
    assert line["outcome"] == action.value
    assert line["severity"] == severity


def test_dead_letter_metric_reads_the_reason_field() -> None:
    metric = _log_metric("uploader_dead_letters")
    field = pubsub_handler.REASON_ATTRIBUTE
    assert metric["filter"].endswith(f"AND severity>=ERROR AND jsonPayload.{field}:*")


def test_example_root_enables_the_apis_and_passes_the_pipeline_names() -> None:
    apis = hcl.locals_(EXAMPLE)["apis"]
    assert "monitoring.googleapis.com" in apis and "logging.googleapis.com" in apis
    call = hcl.named(EXAMPLE, "module")["monitoring"]
    assert call["push_subscription_id"] == "${module.pubsub.push_subscription_id}"
    assert call["dead_letter_subscription_id"] == "${module.pubsub.dead_letter_subscription_id}"
    assert call["oversize_subscription_id"] == "${module.pubsub.oversize_subscription_id}"
    assert call["uploader_service_name"] == "${module.uploader.name}"
