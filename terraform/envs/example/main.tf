# dicom-ingest on Google Cloud, the shape of "Connect a PACS to the Cloud Healthcare API":
#   PACS --C-STORE--> internal LB :2575 (:2762 TLS) --> receiver (GKE) --> bucket + Pub/Sub topic
#   --push (OIDC)--> uploader (Cloud Run) --STOW-RS--> Healthcare API DICOM store
# Copy this directory, fill in terraform.tfvars (see terraform.tfvars.example), and apply.

locals {
  bucket_name    = coalesce(var.bucket_name, "${var.project_id}-${var.name_prefix}")
  oversize       = var.oversize_threshold_bytes != null
  create_network = var.existing_network == null
  create_cluster = var.existing_cluster == null

  # A push request must be answered within the subscription's ack deadline (at most 600 s):
  # Cloud Run ends it first, so a slow upload is retried rather than delivered twice at once.
  ack_deadline_seconds     = 600
  uploader_timeout_seconds = 540

  # The Artifact Registry repositories of the images the cluster's nodes pull.
  image_repositories = distinct([
    for image in [var.receiver_image, var.uploader_image] :
    regex("^(?P<location>[a-z0-9-]+)-docker\\.pkg\\.dev/(?P<project>[^/]+)/(?P<repository>[^/]+)/", image)
    if can(regex("^[a-z0-9-]+-docker\\.pkg\\.dev/[^/]+/[^/]+/", image))
  ])


  network = local.create_network ? {
    network             = module.network[0].network
    subnetwork          = module.network[0].subnetwork
    pods_range_name     = module.network[0].pods_range_name
    services_range_name = module.network[0].services_range_name
  } : var.existing_network

  cluster_dns_endpoint = (local.create_cluster
    ? one(module.gke[*].dns_endpoint)
  : one(data.google_container_cluster.existing[*].control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint))

  # Keyed by component, so that for_each keys are known before the accounts exist.
  readers = {
    for k, v in {
      uploader = module.service_accounts.uploader_email
      worker   = module.service_accounts.worker_email
    } : k => v if k == "uploader" || local.oversize
  }

  apis = concat([
    "artifactregistry.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "healthcare.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ], var.kms_key_name == null ? [] : ["cloudkms.googleapis.com"])
}

resource "google_project_service" "this" {
  for_each           = toset(local.apis)
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "service_accounts" {
  source        = "../../modules/service-accounts"
  project_id    = var.project_id
  name_prefix   = var.name_prefix
  create_worker = local.oversize
  create_nodes  = local.create_cluster
  depends_on    = [google_project_service.this]
}

module "network" {
  source     = "../../modules/network"
  count      = local.create_network ? 1 : 0
  project_id = var.project_id
  region     = var.region
  name       = var.name_prefix
  depends_on = [google_project_service.this]
}

module "gke" {
  source                     = "../../modules/gke"
  count                      = local.create_cluster ? 1 : 0
  project_id                 = var.project_id
  region                     = var.region
  name                       = var.name_prefix
  node_service_account_email = module.service_accounts.nodes_email
  image_repositories         = local.image_repositories
  network                    = local.network.network
  subnetwork                 = local.network.subnetwork
  pods_range_name            = local.network.pods_range_name
  services_range_name        = local.network.services_range_name
  authorized_networks        = var.cluster_authorized_networks
  deletion_protection        = var.deletion_protection
  labels                     = var.labels
  depends_on                 = [google_project_service.this]
}

data "google_container_cluster" "existing" {
  count    = local.create_cluster ? 0 : 1
  project  = var.project_id
  name     = var.existing_cluster.name
  location = var.existing_cluster.location
}

module "healthcare" {
  source                  = "../../modules/healthcare"
  project_id              = var.project_id
  location                = coalesce(var.healthcare_location, var.region)
  existing_dataset_id     = var.existing_dataset_id
  existing_dicom_store_id = var.existing_dicom_store_id
  dataset_name            = var.name_prefix
  dicom_store_name        = var.name_prefix
  editors                 = local.readers
  operator_members        = var.operators
  labels                  = var.labels
  depends_on              = [google_project_service.this]
}

module "storage" {
  source            = "../../modules/storage"
  project_id        = var.project_id
  name              = local.bucket_name
  location          = var.region
  delete_after_days = var.bucket_delete_after_days
  kms_key_name      = var.kms_key_name
  receiver_email    = module.service_accounts.receiver_email
  readers           = local.readers
  readers_delete    = !var.keep_uploaded
  operator_members  = var.operators
  role_id_prefix    = replace(title(replace(var.name_prefix, "-", " ")), " ", "")
  labels            = var.labels
  depends_on        = [google_project_service.this]
}

module "uploader" {
  source                = "../../modules/uploader"
  project_id            = var.project_id
  region                = var.region
  name                  = "${var.name_prefix}-uploader"
  image                 = var.uploader_image
  service_account_email = module.service_accounts.uploader_email
  invoker_email         = module.service_accounts.push_email
  dicomweb_address      = module.healthcare.dicomweb_address
  bucket                = module.storage.name
  object_prefix         = var.object_prefix
  dead_letter_topic     = module.pubsub.dead_letter_topic_id
  oversize_topic        = module.pubsub.oversize_topic_id
  push_max_bytes        = coalesce(var.oversize_threshold_bytes, 536870912)
  keep_uploaded         = var.keep_uploaded
  concurrency           = var.uploader_scaling.concurrency
  min_instances         = var.uploader_scaling.min_instances
  max_instances         = var.uploader_scaling.max_instances
  cpu                   = var.uploader_resources.cpu
  memory                = var.uploader_resources.memory
  timeout_seconds       = local.uploader_timeout_seconds
  deletion_protection   = var.deletion_protection
  labels                = var.labels
  depends_on            = [google_project_service.this]
}

module "pubsub" {
  source                     = "../../modules/pubsub"
  project_id                 = var.project_id
  name                       = var.name_prefix
  push_endpoint              = module.uploader.url
  push_service_account_email = module.service_accounts.push_email
  push_service_account_name  = module.service_accounts.push_name
  ack_deadline_seconds       = local.ack_deadline_seconds
  max_delivery_attempts      = var.max_delivery_attempts
  retention_seconds          = var.retention_days * 86400
  enable_oversize            = local.oversize
  kms_key_name               = var.kms_key_name
  publishers                 = { receiver = module.service_accounts.receiver_email }
  dead_letter_publishers     = local.readers
  oversize_publishers        = { uploader = module.service_accounts.uploader_email }
  oversize_subscribers       = { for k, v in local.readers : k => v if k == "worker" }
  operator_members           = var.operators
  labels                     = var.labels
  depends_on                 = [google_project_service.this]
}

module "receiver" {
  source                       = "../../modules/receiver"
  project_id                   = var.project_id
  region                       = var.region
  subnetwork                   = local.network.subnetwork
  load_balancer_ip             = var.load_balancer_ip
  allow_global_access          = var.allow_global_access
  image                        = var.receiver_image
  google_service_account_email = module.service_accounts.receiver_email
  google_service_account_name  = module.service_accounts.receiver_name
  bucket                       = module.storage.name
  object_prefix                = var.object_prefix
  topic                        = module.pubsub.topic_id
  ack_after                    = var.ack_after
  allowed_calling_aets         = var.allowed_calling_aets
  tls                          = var.receiver_tls
  shutdown_grace_seconds       = var.shutdown_grace_seconds
  source_ranges                = var.pacs_source_ranges
  min_replicas                 = var.receiver_replicas.min
  max_replicas                 = var.receiver_replicas.max
  cpu                          = var.receiver_resources.cpu
  memory                       = var.receiver_resources.memory
  spool_size                   = var.receiver_resources.spool_size
  apply_manifests              = var.apply_kubernetes_manifests

  worker = local.oversize ? {
    image                        = var.uploader_image
    google_service_account_email = module.service_accounts.worker_email
    google_service_account_name  = module.service_accounts.worker_name
    subscription                 = module.pubsub.oversize_subscription_id
    dicomweb_address             = module.healthcare.dicomweb_address
    dead_letter_topic            = module.pubsub.dead_letter_topic_id
    keep_uploaded                = var.keep_uploaded
    replicas                     = 1
    cpu                          = "1"
    memory                       = "2Gi"
  } : null

  depends_on = [module.gke]
}

module "monitoring" {
  source                         = "../../modules/monitoring"
  project_id                     = var.project_id
  name_prefix                    = var.name_prefix
  push_subscription_id           = module.pubsub.push_subscription_id
  dead_letter_subscription_id    = module.pubsub.dead_letter_subscription_id
  oversize_subscription_id       = module.pubsub.oversize_subscription_id
  uploader_service_name          = module.uploader.name
  receiver_namespace             = module.receiver.namespace
  receiver_name                  = module.receiver.name
  notification_channels          = var.notification_channels
  backlog_age_threshold_seconds  = var.backlog_age_alert_seconds
  uploader_error_ratio_threshold = var.uploader_error_ratio_alert
  labels                         = var.labels
  depends_on                     = [google_project_service.this]
}
