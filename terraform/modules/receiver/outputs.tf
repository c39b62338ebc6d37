output "load_balancer_ip" {
  description = "The receiver's internal load balancer address: configure the PACS with it, port 2575, AE title IMPORTADAPTER."
  value       = local.ip
}

output "manifests" {
  description = "The rendered Kubernetes manifests (namespace first), for `kubectl apply -f -` when apply_manifests is false."
  value       = join("---\n", concat([local.namespace_manifest], values(local.manifests)))

  precondition {
    condition     = local.ephemeral_gib <= var.max_ephemeral_storage_gib
    error_message = "In store mode the spool is an emptyDir: spool_size + 1Gi must fit max_ephemeral_storage_gib (10Gi per pod on Autopilot). Lower spool_size, or use ack_after = \"spool\" (a persistent volume)."
  }
}

output "dcmsend_command" {
  description = "A dcmsend line to try from a host in source_ranges."
  value       = "dcmsend -v ${local.ip} 2575 -aec IMPORTADAPTER +sd +r PATH_TO_DICOM_FILES"
}

output "namespace" {
  description = "The receiver's Kubernetes namespace (monitoring filters its metrics by it)."
  value       = var.namespace
}

output "name" {
  description = "Name of the receiver's Deployment or StatefulSet."
  value       = var.name
}
