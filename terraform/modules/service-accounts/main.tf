# One service account per component, with no roles here: each resource module grants its own
# roles on its own resources (the bucket, the topics, the DICOM store, the Cloud Run service).
# No keys are ever created: GKE pods use Workload Identity, Cloud Run uses its attached account,
# Pub/Sub mints the push OIDC token itself.
# Account ids are <name_prefix>-<component>, at most 30 characters: the longest suffix here
# ("-receiver", "-uploader": 9 characters) bounds name_prefix to 21 (tests/infra check it).

resource "google_service_account" "receiver" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-receiver"
  display_name = "dicom-ingest receiver (GKE)"
  description  = "Writes received instances to the bucket and publishes their messages."
}

resource "google_service_account" "uploader" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-uploader"
  display_name = "dicom-ingest uploader (Cloud Run)"
  description  = "Reads objects and stores them in the DICOM store with STOW-RS."
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-push"
  display_name = "dicom-ingest Pub/Sub push invoker"
  description  = "Identity of the push subscription's OIDC token; may only invoke the uploader."
}

resource "google_service_account" "worker" {
  count        = var.create_worker ? 1 : 0
  project      = var.project_id
  account_id   = "${var.name_prefix}-worker"
  display_name = "dicom-ingest pull worker (GKE)"
  description  = "Drains the oversize subscription and stores instances with STOW-RS."
}

# The created Autopilot cluster's nodes run as this account instead of the Compute Engine
# default one (which has the Editor role in many projects). modules/gke grants it exactly
# roles/container.defaultNodeServiceAccount and roles/artifactregistry.reader on the image
# repositories. No pod uses it: the receiver and the worker use Workload Identity.
resource "google_service_account" "nodes" {
  count        = var.create_nodes ? 1 : 0
  project      = var.project_id
  account_id   = "${var.name_prefix}-nodes"
  display_name = "dicom-ingest GKE nodes"
  description  = "Node service account of the Autopilot cluster: logging, monitoring, image pulls."
}
