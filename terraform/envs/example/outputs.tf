output "load_balancer_ip" {
  description = "The receiver's internal load balancer address: the PACS sends to it, port 2575 (2762 for DICOM TLS), called AE title IMPORTADAPTER."
  value       = module.receiver.load_balancer_ip
}

output "dcmsend_command" {
  description = "Try it from a host in pacs_source_ranges (the guide's test); null with receiver_tls.tls_only."
  value       = module.receiver.dcmsend_command
}

output "storescu_tls_command" {
  description = "The same over DICOM TLS, port 2762 (null without receiver_tls)."
  value       = module.receiver.storescu_tls_command
}

output "uploader_url" {
  description = "The uploader's Cloud Run URL (internal ingress; only the push account may invoke it)."
  value       = module.uploader.url
}

output "bucket" {
  description = "The landing bucket."
  value       = module.storage.name
}

output "topic" {
  description = "The topic the receiver publishes to."
  value       = module.pubsub.topic_id
}

output "dicomweb_address" {
  description = "DICOMweb base URL of the DICOM store."
  value       = module.healthcare.dicomweb_address
}

output "dead_letter_subscription" {
  description = "Dead letters, for `dicom-ingest replay drain`."
  value       = module.pubsub.dead_letter_subscription_id
}

output "replay_drain_command" {
  description = "Re-publish every dead letter to the main topic once its cause is fixed."
  value       = "dicom-ingest replay drain --subscription ${module.pubsub.dead_letter_subscription_id} --to-topic ${module.pubsub.topic_id} --dry-run"
}

output "receiver_manifests" {
  description = "The Kubernetes manifests as applied (rendered from k8s/)."
  value       = module.receiver.manifests
}

output "dashboard_id" {
  description = "The pipeline's Cloud Monitoring dashboard (Monitoring > Dashboards)."
  value       = module.monitoring.dashboard_id
}
