# The DICOM store the uploader writes to: created here, or an existing one passed in.

locals {
  create_store   = var.existing_dicom_store_id == null
  create_dataset = local.create_store && var.existing_dataset_id == null
  dataset_id = (local.create_dataset
    ? one(google_healthcare_dataset.this[*].id)
  : var.existing_dataset_id)
  dicom_store_id = local.create_store ? one(google_healthcare_dicom_store.this[*].id) : var.existing_dicom_store_id
}

resource "google_healthcare_dataset" "this" {
  count    = local.create_dataset ? 1 : 0
  project  = var.project_id
  location = var.location
  name     = var.dataset_name
}

resource "google_healthcare_dicom_store" "this" {
  count   = local.create_store ? 1 : 0
  dataset = local.dataset_id
  name    = var.dicom_store_name
  labels  = merge({ app = "dicom-ingest" }, var.labels)
}

resource "google_healthcare_dicom_store_iam_member" "editor" {
  for_each       = var.editors
  dicom_store_id = local.dicom_store_id
  role           = "roles/healthcare.dicomEditor"
  member         = "serviceAccount:${each.value}"
}

resource "google_healthcare_dicom_store_iam_member" "operator_viewer" {
  for_each       = toset(var.operator_members)
  dicom_store_id = local.dicom_store_id
  role           = "roles/healthcare.dicomViewer"
  member         = each.value
}
