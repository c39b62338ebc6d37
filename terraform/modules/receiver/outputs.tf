output "load_balancer_ip" {
  description = "The receiver's internal load balancer address: configure the PACS with it, port 2575 (2762 for DICOM TLS), AE title IMPORTADAPTER."
  value       = local.ip
}

output "dimse_ports" {
  description = "The ports the load balancer serves: 2575 (plain DIMSE) unless tls_only, 2762 (DICOM TLS) with tls."
  value       = local.dimse_ports
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
  description = "A dcmsend line to try from a host in source_ranges (null with tls_only: dcmsend has no TLS)."
  value       = local.tls_only ? null : "dcmsend -v ${local.ip} 2575 -aec IMPORTADAPTER +sd +r PATH_TO_DICOM_FILES"
}

output "storescu_tls_command" {
  description = "A DCMTK storescu line over DICOM TLS to try from a host in source_ranges (null without tls): CA.crt verifies the receiver; with client_ca_secret_name the sender shows its own key and certificate."
  value = (local.tls
    ? "storescu -v ${local.tls_client_ca ? "+tls CLIENT.key CLIENT.crt" : "+tla"} +cf CA.crt -aec IMPORTADAPTER ${local.ip} 2762 PATH_TO_DICOM_FILE"
  : null)
}

output "namespace" {
  description = "The receiver's Kubernetes namespace (monitoring filters its metrics by it)."
  value       = var.namespace
}

output "name" {
  description = "Name of the receiver's Deployment or StatefulSet."
  value       = var.name
}
