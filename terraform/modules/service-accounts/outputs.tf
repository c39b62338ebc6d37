output "receiver_email" {
  description = "Email of the receiver's service account."
  value       = google_service_account.receiver.email
}

output "receiver_name" {
  description = "Resource name of the receiver's service account (for Workload Identity bindings)."
  value       = google_service_account.receiver.name
}

output "uploader_email" {
  description = "Email of the uploader's service account."
  value       = google_service_account.uploader.email
}

output "push_email" {
  description = "Email of the push subscription's invoker account."
  value       = google_service_account.push.email
}

output "push_name" {
  description = "Resource name of the push invoker account."
  value       = google_service_account.push.name
}

output "worker_email" {
  description = "Email of the pull worker's service account, or null."
  value       = one(google_service_account.worker[*].email)
}

output "worker_name" {
  description = "Resource name of the pull worker's service account, or null."
  value       = one(google_service_account.worker[*].name)
}

output "nodes_email" {
  description = "Email of the cluster nodes' service account, or null."
  value       = one(google_service_account.nodes[*].email)
}
