output "name" {
  description = "Cluster name."
  value       = google_container_cluster.this.name
}

output "location" {
  description = "Cluster location (region)."
  value       = google_container_cluster.this.location
}

output "dns_endpoint" {
  description = "The control plane's DNS endpoint (IAM-authorised, reachable from Cloud Build)."
  value       = google_container_cluster.this.control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint
}
