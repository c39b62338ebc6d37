# The landing bucket: gs://BUCKET/<prefix>/<study>/<series>/<sop>.dcm, one object per instance.
# Never public: uniform bucket-level access (no ACLs) and public access prevention enforced.

data "google_storage_project_service_account" "gcs" {
  count   = var.kms_key_name == null ? 0 : 1
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "gcs_cmek" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs[0].email_address}"
}

resource "google_storage_bucket" "this" {
  # checkov:skip=CKV_GCP_62: access is recorded by Cloud Audit Logs (data access logs for storage.googleapis.com); legacy usage logs need a second bucket and add nothing
  # checkov:skip=CKV_GCP_78: object versioning would keep every overwritten instance; a PACS re-send must supersede the old version, and soft delete covers accidental deletion
  project                     = var.project_id
  name                        = var.name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = merge({ app = "dicom-ingest" }, var.labels)

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_days * 86400
  }

  lifecycle_rule {
    condition {
      age = var.delete_after_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.gcs_cmek]
}

# The receiver writes objects and overwrites them when a PACS sends the same SOP instance again
# (an overwrite needs storage.objects.delete). roles/storage.objectUser would also let it read
# and list every stored instance, so it gets a custom role with exactly these two permissions.
resource "google_project_iam_custom_role" "object_writer" {
  project     = var.project_id
  role_id     = "${var.role_id_prefix}ObjectWriter"
  title       = "dicom-ingest object writer"
  description = "Create and overwrite objects; no read, no list."
  permissions = ["storage.objects.create", "storage.objects.delete"]
}

resource "google_storage_bucket_iam_member" "receiver_writer" {
  bucket = google_storage_bucket.this.name
  role   = google_project_iam_custom_role.object_writer.id
  member = "serviceAccount:${var.receiver_email}"
}

resource "google_storage_bucket_iam_member" "reader" {
  for_each = var.readers
  bucket   = google_storage_bucket.this.name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${each.value}"
}

resource "google_project_iam_custom_role" "object_deleter" {
  count       = var.readers_delete ? 1 : 0
  project     = var.project_id
  role_id     = "${var.role_id_prefix}ObjectDeleter"
  title       = "dicom-ingest object deleter"
  description = "Delete objects after a confirmed store."
  permissions = ["storage.objects.delete"]
}

resource "google_storage_bucket_iam_member" "reader_deleter" {
  for_each = var.readers_delete ? var.readers : {}
  bucket   = google_storage_bucket.this.name
  role     = google_project_iam_custom_role.object_deleter[0].id
  member   = "serviceAccount:${each.value}"
}

resource "google_storage_bucket_iam_member" "operator_viewer" {
  for_each = toset(var.operator_members)
  bucket   = google_storage_bucket.this.name
  role     = "roles/storage.objectViewer"
  member   = each.value
}
