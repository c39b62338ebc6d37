# The queue between the receiver and the uploader:
#   <name>                  the receiver publishes one message per stored object
#   <name>-push             pushes each message to the uploader with an OIDC token; failed
#                           deliveries back off, and after max_delivery_attempts go to
#   <name>-dead-letter      also where the uploader publishes permanent failures with a reason
#   <name>-dead-letter-sub  pull subscription that `dicom-ingest replay drain` empties
#   <name>-oversize(-sub)   optional: instances too large for one push, for the pull worker
# Subscriptions keep acknowledged messages for retention_seconds (`dicom-ingest replay seek`).
# Dead letters are kept longest: the dead-letter topic retains every message for 31 days (a
# subscription can seek back over that), its subscription holds unacknowledged ones for 7 days
# (the maximum) and never expires.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  retention    = "${var.retention_seconds}s"
  labels       = merge({ app = "dicom-ingest" }, var.labels)
}

# The Pub/Sub service agent (service-<number>@gcp-sa-pubsub) exists only once Pub/Sub has been
# used in the project; granting a role to it before fails. This creates it if need be (and is a
# no-op otherwise), and every grant below waits for it.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta
  project  = var.project_id
  service  = "pubsub.googleapis.com"
}

resource "google_kms_crypto_key_iam_member" "pubsub_cmek" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_agent
  depends_on    = [google_project_service_identity.pubsub]
}

resource "google_pubsub_topic" "main" {
  # checkov:skip=CKV_GCP_83: CMEK is optional (var.kms_key_name); messages carry object pointers and UIDs, never pixel data or patient identifiers
  project      = var.project_id
  name         = var.name
  kms_key_name = var.kms_key_name
  labels       = local.labels
  depends_on   = [google_kms_crypto_key_iam_member.pubsub_cmek]
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: CMEK is optional (var.kms_key_name); messages carry object pointers and UIDs, never pixel data or patient identifiers
  project      = var.project_id
  name         = "${var.name}-dead-letter"
  kms_key_name = var.kms_key_name
  labels       = local.labels
  # Topic retention: every dead letter stays seekable for 31 days (the maximum), acknowledged
  # or not, whatever happens to the subscriptions.
  message_retention_duration = var.dead_letter_topic_retention
  depends_on                 = [google_kms_crypto_key_iam_member.pubsub_cmek]
}

resource "google_pubsub_topic" "oversize" {
  # checkov:skip=CKV_GCP_83: CMEK is optional (var.kms_key_name); messages carry object pointers and UIDs, never pixel data or patient identifiers
  count        = var.enable_oversize ? 1 : 0
  project      = var.project_id
  name         = "${var.name}-oversize"
  kms_key_name = var.kms_key_name
  labels       = local.labels
  depends_on   = [google_kms_crypto_key_iam_member.pubsub_cmek]
}

resource "google_pubsub_subscription" "push" {
  project              = var.project_id
  name                 = "${var.name}-push"
  topic                = google_pubsub_topic.main.id
  labels               = local.labels
  ack_deadline_seconds = var.ack_deadline_seconds

  push_config {
    push_endpoint = var.push_endpoint
    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = var.push_endpoint
    }
  }

  retry_policy {
    minimum_backoff = "${var.min_backoff_seconds}s"
    maximum_backoff = "${var.max_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retain_acked_messages      = true
  message_retention_duration = local.retention

  expiration_policy {
    ttl = ""
  }

  # A message dead-lettered before the dead-letter subscription exists reaches no subscription.
  depends_on = [google_pubsub_subscription.dead_letter]
}

# Dead letters wait here for `dicom-ingest replay drain`: 7 days (the maximum) unacknowledged,
# and the subscription never expires, however long nobody pulls it.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-dead-letter-sub"
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = local.labels
  ack_deadline_seconds       = 60
  retain_acked_messages      = true
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "oversize" {
  count                = var.enable_oversize ? 1 : 0
  project              = var.project_id
  name                 = "${var.name}-oversize-sub"
  topic                = google_pubsub_topic.oversize[0].id
  labels               = local.labels
  ack_deadline_seconds = var.ack_deadline_seconds

  retry_policy {
    minimum_backoff = "${var.min_backoff_seconds}s"
    maximum_backoff = "${var.max_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retain_acked_messages      = true
  message_retention_duration = local.retention

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_subscription.dead_letter]
}

# The Pub/Sub service agent forwards undeliverable messages: it must publish to the dead-letter
# topic and subscribe to (acknowledge on) each subscription that dead-letters.
resource "google_pubsub_topic_iam_member" "agent_dead_letter_publisher" {
  project    = var.project_id
  topic      = google_pubsub_topic.dead_letter.name
  role       = "roles/pubsub.publisher"
  member     = local.pubsub_agent
  depends_on = [google_project_service_identity.pubsub]
}

resource "google_pubsub_subscription_iam_member" "agent_push_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
  depends_on   = [google_project_service_identity.pubsub]
}

resource "google_pubsub_subscription_iam_member" "agent_oversize_subscriber" {
  count        = var.enable_oversize ? 1 : 0
  project      = var.project_id
  subscription = google_pubsub_subscription.oversize[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
  depends_on   = [google_project_service_identity.pubsub]
}

# Projects created before April 2021 do not give the agent this right by default: it mints the
# push OIDC token for the invoker account, and only for that account.
resource "google_service_account_iam_member" "agent_push_token_creator" {
  service_account_id = var.push_service_account_name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
  depends_on         = [google_project_service_identity.pubsub]
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = var.publishers
  project  = var.project_id
  topic    = google_pubsub_topic.main.name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${each.value}"
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = var.dead_letter_publishers
  project  = var.project_id
  topic    = google_pubsub_topic.dead_letter.name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${each.value}"
}

resource "google_pubsub_topic_iam_member" "oversize_publisher" {
  for_each = var.enable_oversize ? var.oversize_publishers : {}
  project  = var.project_id
  topic    = google_pubsub_topic.oversize[0].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${each.value}"
}

resource "google_pubsub_subscription_iam_member" "oversize_subscriber" {
  for_each     = var.enable_oversize ? var.oversize_subscribers : {}
  project      = var.project_id
  subscription = google_pubsub_subscription.oversize[0].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${each.value}"
}

# Operators: drain the dead letters back into the main topic, seek the push subscription.
resource "google_pubsub_subscription_iam_member" "operator_dead_letter" {
  for_each     = toset(var.operator_members)
  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}

resource "google_pubsub_subscription_iam_member" "operator_push" {
  for_each     = toset(var.operator_members)
  project      = var.project_id
  subscription = google_pubsub_subscription.push.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}

resource "google_pubsub_topic_iam_member" "operator_publisher" {
  for_each = toset(var.operator_members)
  project  = var.project_id
  topic    = google_pubsub_topic.main.name
  role     = "roles/pubsub.publisher"
  member   = each.value
}
