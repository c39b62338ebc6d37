output "network" {
  description = "Self link of the VPC network."
  value       = google_compute_network.this.self_link
}

output "subnetwork" {
  description = "Self link of the subnetwork."
  value       = google_compute_subnetwork.this.self_link
}

output "pods_range_name" {
  description = "Name of the secondary range for pods."
  value       = "pods"
}

output "services_range_name" {
  description = "Name of the secondary range for services."
  value       = "services"
}
