output "dashboard_id" {
  description = "The Cloud Monitoring dashboard (projects/P/dashboards/ID): open it under Monitoring > Dashboards."
  value       = google_monitoring_dashboard.this.id
}

output "alert_policy_ids" {
  description = "The alert policies by purpose: dead_letters, backlog_age, receiver_refusing, receiver_not_ready, uploader_errors."
  value = {
    dead_letters       = google_monitoring_alert_policy.dead_letters.name
    backlog_age        = google_monitoring_alert_policy.backlog_age.name
    receiver_refusing  = google_monitoring_alert_policy.receiver_refusing.name
    receiver_not_ready = google_monitoring_alert_policy.receiver_not_ready.name
    uploader_errors    = google_monitoring_alert_policy.uploader_errors.name
  }
}

output "log_metrics" {
  description = "The uploader's log-based metrics (logging.googleapis.com/user/<name>)."
  value       = [google_logging_metric.uploader_outcomes.name, google_logging_metric.uploader_dead_letters.name]
}
