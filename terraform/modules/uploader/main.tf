# The uploader on Cloud Run: functions-framework serving dicom_ingest/function.py:upload for Pub/Sub push.
# Internal ingress (Pub/Sub push from the same project counts as internal), and only the push
# invoker account may call it: Cloud Run checks the OIDC token before the request reaches the code.

locals {
  optional_env = {
    for k, v in {
      DICOM_INGEST_OVERSIZE_TOPIC = var.oversize_topic
      DICOM_INGEST_PUSH_MAX_BYTES = tostring(var.push_max_bytes)
    } : k => v if var.oversize_topic != null
  }
  env = merge({
    DICOM_INGEST_DICOMWEB_ADDRESS  = var.dicomweb_address
    DICOM_INGEST_AUTH              = "adc"
    DICOM_INGEST_DEAD_LETTER_TOPIC = var.dead_letter_topic
    DICOM_INGEST_KEEP_UPLOADED     = tostring(var.keep_uploaded)
    DICOM_INGEST_LOG_FORMAT        = "json"
    # The allow-list: only objects the receiver writes (this bucket, under this prefix) are
    # uploaded; a message naming any other object is dead-lettered with that reason.
    DICOM_INGEST_BUCKET        = var.bucket
    DICOM_INGEST_OBJECT_PREFIX = var.object_prefix
    # Each wait for the DICOM store (connect, then each read) well inside the request timeout,
    # so that a stalled store answers 503 (redelivery) before Cloud Run cuts the request off.
    DICOM_INGEST_HTTP_TIMEOUT = tostring(var.http_timeout_seconds)
    # And each whole request to it (a store that drips its answer included): cut before
    # Cloud Run cuts the push request, so the message is redelivered, not lost to a timeout.
    DICOM_INGEST_REQUEST_DEADLINE = tostring(floor(var.timeout_seconds * 0.9))
    # functions-framework's server runs this many threads: one per concurrent request.
    THREADS = tostring(var.concurrency)
  }, local.optional_env)
}

resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = var.deletion_protection
  labels              = merge({ app = "dicom-ingest" }, var.labels)

  template {
    service_account                  = var.service_account_email
    timeout                          = "${var.timeout_seconds}s"
    max_instance_request_concurrency = var.concurrency
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      startup_probe {
        tcp_socket {
          port = 8080
        }
        period_seconds    = 2
        failure_threshold = 30
      }
    }
  }
}

resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  project  = var.project_id
  location = google_cloud_run_v2_service.this.location
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.invoker_email}"
}
