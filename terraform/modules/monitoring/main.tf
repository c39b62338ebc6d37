# What an operator watches on Google Cloud: one dashboard, the alert policies, and the log-based
# metrics of the uploader.
#   - receiver and pull worker (GKE): the dicom_ingest_* metrics Google Managed Prometheus scrapes
#     (PodMonitoring), queried with PromQL, filtered to the pipeline's namespace;
#   - uploader (Cloud Run, no /metrics): Cloud Run's own request count and latencies (200 = done
#     or settled, 5xx = Pub/Sub redelivers) and log-based metrics of its JSON outcome lines;
#   - Pub/Sub's own subscription metrics: backlog, oldest unacknowledged message, dead letters;
#   - the receiver's ready replicas from the kube state metrics GKE collects by default.

locals {
  push_subscription        = element(split("/", var.push_subscription_id), 3)
  dead_letter_subscription = element(split("/", var.dead_letter_subscription_id), 3)
  backlog_subscriptions = compact([
    local.push_subscription,
    var.oversize_subscription_id == null ? "" : element(split("/", coalesce(var.oversize_subscription_id, "x/x/x/x")), 3),
  ])
  backlog_regex = join("|", local.backlog_subscriptions)
  metric_prefix = replace(var.name_prefix, "-", "_")

  # PromQL selectors. Log-based metrics appear as logging_googleapis_com:user_<name>, built-in
  # metrics as <service>_googleapis_com:<path with _>, the scraped ones under their own names.
  ns          = "namespace=\"${var.receiver_namespace}\""
  run         = "monitored_resource=\"cloud_run_revision\",service_name=\"${var.uploader_service_name}\""
  backlog     = "monitored_resource=\"pubsub_subscription\",subscription_id=~\"${local.backlog_regex}\""
  dead_letter = "monitored_resource=\"pubsub_subscription\",subscription_id=\"${local.dead_letter_subscription}\""
  outcomes    = "logging_googleapis_com:user_${google_logging_metric.uploader_outcomes.name}"
  dead_logged = "logging_googleapis_com:user_${google_logging_metric.uploader_dead_letters.name}"
  refusals    = "status=~\"0xA7[0-9A-F]{2}\""
  aborts      = "outcome=~\"aborted|aborted_by_peer|aborted_at_shutdown|timed_out|evicted|refused|rejected\""

  # Every chart's queries, by name (tests/infra check each name against the metric catalogue).
  promql = {
    instances_received   = "sum by (status) (rate(dicom_ingest_instances_received_total{${local.ns}}[5m]))"
    bytes_received       = "sum(rate(dicom_ingest_received_bytes_total{${local.ns},status=\"0x0000\"}[5m]))"
    associations         = "sum by (outcome) (rate(dicom_ingest_associations_total{${local.ns}}[5m]))"
    refusals             = "sum by (status) (rate(dicom_ingest_instances_received_total{${local.ns},${local.refusals}}[5m]))"
    aborts               = "sum by (outcome) (rate(dicom_ingest_associations_total{${local.ns},${local.aborts}}[5m]))"
    receive_p50          = "histogram_quantile(0.5, sum by (le) (rate(dicom_ingest_receive_seconds_bucket{${local.ns}}[5m])))"
    receive_p95          = "histogram_quantile(0.95, sum by (le) (rate(dicom_ingest_receive_seconds_bucket{${local.ns}}[5m])))"
    receive_p99          = "histogram_quantile(0.99, sum by (le) (rate(dicom_ingest_receive_seconds_bucket{${local.ns}}[5m])))"
    backlog_age          = "max by (subscription_id) (pubsub_googleapis_com:subscription_oldest_unacked_message_age{${local.backlog}})"
    backlog_messages     = "sum by (subscription_id) (pubsub_googleapis_com:subscription_num_undelivered_messages{${local.backlog}})"
    shipper_backlog      = "sum(dicom_ingest_shipper_backlog{${local.ns}})"
    uploader_responses   = "sum by (response_code) (rate(run_googleapis_com:request_count{${local.run}}[5m]))"
    uploader_outcomes    = "sum by (outcome) (rate(${local.outcomes}{${local.run}}[5m]))"
    worker_outcomes      = "sum by (outcome) (rate(dicom_ingest_uploads_total{${local.ns}}[5m]))"
    early_uploads        = "sum by (outcome) (rate(dicom_ingest_early_uploads_total{${local.ns}}[5m]))"
    dead_letters_waiting = "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{${local.dead_letter}})"
    dead_letters_logged  = "sum(increase(${local.dead_logged}{${local.run}}[10m]))"
    dead_letters_worker  = "sum(increase(dicom_ingest_dead_letters_total{${local.ns}}[10m]))"
    stow_p50             = "histogram_quantile(0.5, sum by (le) (rate(dicom_ingest_stow_seconds_bucket{${local.ns}}[5m])))"
    stow_p95             = "histogram_quantile(0.95, sum by (le) (rate(dicom_ingest_stow_seconds_bucket{${local.ns}}[5m])))"
    stow_p99             = "histogram_quantile(0.99, sum by (le) (rate(dicom_ingest_stow_seconds_bucket{${local.ns}}[5m])))"
    uploader_p95         = "histogram_quantile(0.95, sum by (le) (rate(run_googleapis_com:request_latencies_bucket{${local.run}}[5m])))"
    spool_free           = "min by (pod) (dicom_ingest_spool_free_bytes{${local.ns}})"
    store_reachable      = "min(dicom_ingest_store_reachable{${local.ns}})"
    ready_replicas       = "sum(kube_deployment_status_replicas_available{${local.ns},deployment=\"${var.receiver_name}\"}) or sum(kube_statefulset_status_replicas_ready{${local.ns},statefulset=\"${var.receiver_name}\"})"
  }

  # The dashboard, two charts a row, in the order of an instance's path.
  charts = [
    { title = "Instances received per second, by DIMSE status", unit = "1/s", queries = ["instances_received"] },
    { title = "Bytes received per second (stored instances)", unit = "By/s", queries = ["bytes_received"] },
    { title = "Associations per second, by outcome", unit = "1/s", queries = ["associations"] },
    { title = "Receiver refusals (0xA7xx) and aborted associations per second", unit = "1/s", queries = ["refusals", "aborts"] },
    { title = "Receive latency, C-STORE request to response (p50, p95, p99)", unit = "s", queries = ["receive_p50", "receive_p95", "receive_p99"] },
    { title = "Receiver: ready replicas, DICOM store reachable (1/0)", unit = "1", queries = ["ready_replicas", "store_reachable"] },
    { title = "Queue age: oldest unacknowledged message", unit = "s", queries = ["backlog_age"] },
    { title = "Queue backlog: messages waiting, instances not yet shipped", unit = "1", queries = ["backlog_messages", "shipper_backlog"] },
    { title = "Uploader (Cloud Run) responses per second: 200 settled, 5xx redelivered", unit = "1/s", queries = ["uploader_responses"] },
    { title = "Upload outcomes per second (Cloud Run log lines, pull worker)", unit = "1/s", queries = ["uploader_outcomes", "worker_outcomes", "early_uploads"] },
    { title = "Dead letters: waiting in the subscription, new in 10 minutes", unit = "1", queries = ["dead_letters_waiting", "dead_letters_logged", "dead_letters_worker"] },
    { title = "STOW-RS latency (pull worker p50, p95, p99; Cloud Run request p95)", unit = "s", queries = ["stow_p50", "stow_p95", "stow_p99", "uploader_p95"] },
    { title = "Free spool space per receiver pod", unit = "By", queries = ["spool_free"] },
  ]

  # The alert policies, each one PromQL condition; every threshold but "any" is a variable.
  alerts = {
    dead_letters = {
      name      = "dead letters waiting"
      severity  = "ERROR"
      condition = "${local.dead_letter_subscription} is not empty"
      query     = "${local.promql.dead_letters_waiting} > 0"
      duration  = "60s"
      documentation = join(" ", [
        "Instances the pipeline could not store in the DICOM store wait in `${var.dead_letter_subscription_id}`, each with its `dead_letter_reason` attribute.",
        "The PACS has had its success: nothing is lost. Read the reasons (`gcloud pubsub subscriptions pull ${local.dead_letter_subscription} --limit 5`),",
        "fix the cause, then `dicom-ingest replay drain`.",
      ])
    }
    backlog_age = {
      name      = "uploads falling behind"
      severity  = "WARNING"
      condition = "Oldest unacknowledged message older than ${var.backlog_age_threshold_seconds} s"
      query     = "max(pubsub_googleapis_com:subscription_oldest_unacked_message_age{${local.backlog}}) > ${var.backlog_age_threshold_seconds}"
      duration  = "300s"
      documentation = join(" ", [
        "A message has waited longer than ${var.backlog_age_threshold_seconds} s for its upload: the DICOM store is refusing or slow, or the uploader cannot keep up.",
        "The uploader's log (`resource.type=\"cloud_run_revision\"`, service `${var.uploader_service_name}`) says why each retry happened.",
      ])
    }
    receiver_refusing = {
      name      = "receiver refusing instances (0xA7xx)"
      severity  = "ERROR"
      condition = "0xA7xx answers above ${var.refusal_rate_threshold}/s over 5 minutes"
      query     = "sum(rate(dicom_ingest_instances_received_total{${local.ns},${local.refusals}}[5m])) > ${var.refusal_rate_threshold}"
      duration  = "60s"
      documentation = join(" ", [
        "The receivers answer C-STORE with 0xA7xx (out of resources): the object could not be written to Cloud Storage (0xA700) or its message not published (0xA701), or the spool is full.",
        "The PACS keeps the instances and retries. The receiver log (namespace `${var.receiver_namespace}`) names the cause.",
      ])
    }
    receiver_not_ready = {
      name      = "no receiver ready"
      severity  = "CRITICAL"
      condition = "No ready replica of ${var.receiver_namespace}/${var.receiver_name}"
      query     = "(${local.promql.ready_replicas} or vector(0)) < 1"
      duration  = "300s"
      documentation = join(" ", [
        "No replica of the receiver is ready: the PACS cannot associate. `kubectl -n ${var.receiver_namespace} get pods` and `kubectl describe pod` show why (readiness probe, eviction, image pull).",
        "The figure comes from the kube state metrics GKE collects by default (Autopilot 1.27.4-gke.900 and later, Standard 1.29.2-gke.2000 and later); on a cluster without them this alert fires until they are enabled.",
      ])
    }
    uploader_errors = {
      name      = "uploader error ratio"
      severity  = "WARNING"
      condition = "Retried or dead-lettered push requests above ${var.uploader_error_ratio_threshold * 100}% over 10 minutes"
      query     = "((sum(rate(run_googleapis_com:request_count{${local.run},response_code_class=\"5xx\"}[10m])) or vector(0)) + (sum(rate(${local.outcomes}{${local.run},outcome=\"dead\"}[10m])) or vector(0))) / sum(rate(run_googleapis_com:request_count{${local.run}}[10m])) > ${var.uploader_error_ratio_threshold}"
      duration  = "300s"
      documentation = join(" ", [
        "More than ${var.uploader_error_ratio_threshold * 100}% of the uploader's push requests were answered 5xx (Pub/Sub redelivers them) or ended in a dead letter.",
        "Its WARNING and ERROR lines carry the outcome and the reason; the dashboard's upload outcomes chart shows which.",
      ])
    }
  }

  uploader_logs = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${var.uploader_service_name}\"",
  ])
}

# The uploader logs one JSON line per instance that did not simply upload (retry, dead, conflict,
# split, superseded, skipped, or done with a note); a plain success is DEBUG, not logged in
# production. Each line carries "outcome".
resource "google_logging_metric" "uploader_outcomes" {
  project     = var.project_id
  name        = "${local.metric_prefix}_uploader_outcomes"
  description = "The uploader's per-instance outcome lines, by outcome (plain successes are not logged: Cloud Run's 200 responses count them)."
  filter      = "${local.uploader_logs} AND jsonPayload.outcome:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix} uploader outcomes"
    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "retry, dead, conflict, split, superseded or skipped."
    }
  }

  label_extractors = {
    outcome = "EXTRACT(jsonPayload.outcome)"
  }
}

# One ERROR line per dead letter, carrying its reason (the reason is not a label: it is free text).
resource "google_logging_metric" "uploader_dead_letters" {
  project     = var.project_id
  name        = "${local.metric_prefix}_uploader_dead_letters"
  description = "Dead letters the uploader published, one ERROR log line each with dead_letter_reason."
  filter      = "${local.uploader_logs} AND severity>=ERROR AND jsonPayload.dead_letter_reason:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.name_prefix} uploader dead letters"
  }
}

resource "google_monitoring_dashboard" "this" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "${var.name_prefix}: PACS to DICOM store"
    mosaicLayout = {
      columns = 48
      tiles = [
        for i, chart in local.charts : {
          xPos   = (i % 2) * 24
          yPos   = floor(i / 2) * 16
          width  = 24
          height = 16
          widget = {
            title = chart.title
            xyChart = {
              chartOptions = { mode = "COLOR" }
              yAxis        = { label = chart.unit, scale = "LINEAR" }
              dataSets = [
                for name in chart.queries : {
                  plotType       = "LINE"
                  targetAxis     = "Y1"
                  legendTemplate = name
                  timeSeriesQuery = {
                    prometheusQuery = local.promql[name]
                    unitOverride    = chart.unit
                  }
                }
              ]
            }
          }
        }
      ]
    }
  })
}

resource "google_monitoring_alert_policy" "this" {
  for_each              = local.alerts
  project               = var.project_id
  display_name          = "${var.name_prefix}: ${each.value.name}"
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = var.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = each.value.condition
    condition_prometheus_query_language {
      query               = each.value.query
      duration            = each.value.duration
      evaluation_interval = "60s"
      # The metrics appear only once scraped (or logged): the policy is created before that.
      disable_metric_validation = true
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = each.value.documentation
  }

  depends_on = [google_logging_metric.uploader_outcomes]
}
