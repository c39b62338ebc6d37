# An Autopilot cluster for the receiver: private nodes, and a DNS control-plane endpoint guarded
# by IAM so that Cloud Build and terraform reach it without a private pool. Autopilot fixes the
# rest: Workload Identity and the GKE metadata server, Shielded Nodes, Dataplane V2 (which enforces
# NetworkPolicy) and intranode visibility are always on.

resource "google_container_cluster" "this" {
  # checkov:skip=CKV_GCP_13: Autopilot manages the node service account and client certificates are disabled by default on current GKE versions
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

  deletion_protection = var.deletion_protection
}
