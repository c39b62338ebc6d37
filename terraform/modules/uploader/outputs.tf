output "url" {
  description = "The service URL: the push endpoint and the OIDC audience."
  value       = google_cloud_run_v2_service.this.uri
}

output "name" {
  description = "The Cloud Run service name."
  value       = google_cloud_run_v2_service.this.name
}
