terraform {
  required_version = ">= 1.5, < 2.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.14"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.14"
    }
    # 2.3.0 and later build the client when the provider is configured; lazy_load (below, 2.4.0
    # and later) defers that until first use, after the cluster of the same apply exists.
    kubectl = {
      source  = "alekc/kubectl"
      version = ">= 2.4.0, < 3.0.0"
    }
  }

  # State in a Cloud Storage bucket: terraform init -backend-config="bucket=STATE_BUCKET"
  backend "gcs" {
    prefix = "dicom-ingest"
  }
}

provider "google" {
  project               = var.project_id
  region                = var.region
  user_project_override = true
  billing_project       = var.project_id
  default_labels        = var.labels
}

# Only for google_project_service_identity (modules/pubsub), which the GA provider lacks.
provider "google-beta" {
  project               = var.project_id
  region                = var.region
  user_project_override = true
  billing_project       = var.project_id
  default_labels        = var.labels
}

data "google_client_config" "current" {}

# The cluster's DNS endpoint, authorised by the caller's Google identity (IAM): no kubeconfig,
# no client certificate, and reachable from Cloud Build without a private pool. lazy_load: the
# client is built at first use, not at configuration, so a first apply on an empty project (the
# cluster is created in the same apply) does not fail with "no configuration has been provided".
provider "kubectl" {
  host             = "https://${local.cluster_dns_endpoint}"
  token            = data.google_client_config.current.access_token
  load_config_file = false
  lazy_load        = true
}
