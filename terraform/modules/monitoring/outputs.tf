output "dashboard_id" {
  description = "The Cloud Monitoring dashboard (projects/P/dashboards/ID): open it under Monitoring > Dashboards."
  value       = google_monitoring_dashboard.this.id
}

output "alert_policy_ids" {
  description = "The alert policies by purpose: dead_letters, backlog_age, receiver_refusing, receiver_not_ready, uploader_errors."
  value       = { for name, policy in google_monitoring_alert_policy.this : name => policy.name }
}

output "log_metrics" {
  description = "The uploader's log-based metrics (logging.googleapis.com/user/<name>)."
  value       = [google_logging_metric.uploader_outcomes.name, google_logging_metric.uploader_dead_letters.name]
}
