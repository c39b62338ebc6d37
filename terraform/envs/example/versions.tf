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
    kubectl = {
      source  = "alekc/kubectl"
      version = "~> 2.1"
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
# no client certificate, and reachable from Cloud Build without a private pool.
provider "kubectl" {
  host             = "https://${local.cluster_dns_endpoint}"
  token            = data.google_client_config.current.access_token
  load_config_file = false
}
