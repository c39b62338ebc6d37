# An Autopilot cluster for the receiver: private nodes, and a DNS control-plane endpoint guarded
# by IAM so that Cloud Build and terraform reach it without a private pool. Autopilot fixes the
# rest: Workload Identity and the GKE metadata server, Shielded Nodes, Dataplane V2 (which enforces
# NetworkPolicy) and intranode visibility are always on. The nodes run as a dedicated service
# account with only the node role and read access to the image repositories.

# The one project-level grant of the deployment: GKE requires it of a node service account
# (logging, monitoring, and the node's own API calls); it can be granted on nothing narrower.
resource "google_project_iam_member" "nodes_default" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = "serviceAccount:${var.node_service_account_email}"
}

# The nodes pull the receiver and worker images: read access on their repositories only.
resource "google_artifact_registry_repository_iam_member" "nodes_reader" {
  for_each   = { for r in var.image_repositories : "${r.project}/${r.location}/${r.repository}" => r }
  project    = each.value.project
  location   = each.value.location
  repository = each.value.repository
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${var.node_service_account_email}"
}

resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_13: client certificates are disabled by default since GKE 1.12 and this module does not turn them on
  # checkov:skip=CKV_GCP_65: Google Groups for RBAC needs a Workspace/Cloud Identity domain this module cannot assume
  # checkov:skip=CKV_GCP_66: Binary Authorization needs a policy and attestors per organisation; images are deployed by digest from Cloud Build
  # checkov:skip=CKV_GCP_12: Autopilot always runs Dataplane V2, which enforces NetworkPolicy; the network_policy block does not apply to it
  # checkov:skip=CKV_GCP_61: Autopilot enables intranode visibility itself and has no setting for it; subnet flow logs are on in modules/network
  # checkov:skip=CKV_GCP_69: Autopilot always runs the GKE metadata server (Workload Identity); node_config cannot be set on Autopilot
  project          = var.project_id
  name             = var.name
  location         = var.region
  enable_autopilot = true

  network         = var.network
  subnetwork      = var.subnetwork
  resource_labels = merge({ app = "dicom-ingest" }, var.labels)

  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_range_name
    services_secondary_range_name = var.services_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = true
    }
  }

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  # On Autopilot this block sets the nodes' service account (instead of the Compute Engine
  # default one) and its access scope; the rest of it is managed by GKE.
  cluster_autoscaling {
    auto_provisioning_defaults {
      service_account = var.node_service_account_email
      oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    }
  }

  deletion_protection = var.deletion_protection

  # Nodes created without their roles fail to pull images and to report.
  depends_on = [
    google_project_iam_member.nodes_default,
    google_artifact_registry_repository_iam_member.nodes_reader,
  ]
}
