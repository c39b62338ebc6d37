output "topic_id" {
  description = "projects/P/topics/T of the main topic (the receiver's --topic)."
  value       = google_pubsub_topic.main.id
}

output "dead_letter_topic_id" {
  description = "projects/P/topics/T-dead-letter (the uploader's DICOM_INGEST_DEAD_LETTER_TOPIC)."
  value       = google_pubsub_topic.dead_letter.id
}

output "oversize_topic_id" {
  description = "projects/P/topics/T-oversize, or null when the oversize path is off."
  value       = one(google_pubsub_topic.oversize[*].id)
}

output "push_subscription_id" {
  description = "The push subscription (seek it with `dicom-ingest replay seek`)."
  value       = google_pubsub_subscription.push.id
}

output "dead_letter_subscription_id" {
  description = "The dead-letter pull subscription (drain it with `dicom-ingest replay drain`)."
  value       = google_pubsub_subscription.dead_letter.id
}

output "oversize_subscription_id" {
  description = "The oversize pull subscription, or null."
  value       = one(google_pubsub_subscription.oversize[*].id)
}
