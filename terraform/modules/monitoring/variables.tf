variable "project_id" {
  type        = string
  description = "Project that holds the pipeline, its metrics and logs, the dashboard and the alert policies."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the dashboard's and the alert policies' display names and of the log-based metrics (hyphens become underscores there)."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,40}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be lowercase letters, digits or hyphens, starting with a letter, at most 42 characters."
  }
}

variable "push_subscription_id" {
  type        = string
  description = "The uploader's push subscription (projects/P/subscriptions/S): its oldest unacknowledged message is the queue's age."
  validation {
    condition     = can(regex("^projects/[^/]+/subscriptions/[^/]+$", var.push_subscription_id))
    error_message = "push_subscription_id must be projects/P/subscriptions/S."
  }
}

variable "dead_letter_subscription_id" {
  type        = string
  description = "The dead-letter pull subscription (projects/P/subscriptions/S): any message in it raises an alert."
  validation {
    condition     = can(regex("^projects/[^/]+/subscriptions/[^/]+$", var.dead_letter_subscription_id))
    error_message = "dead_letter_subscription_id must be projects/P/subscriptions/S."
  }
}

variable "oversize_subscription_id" {
  type        = string
  description = "The pull worker's oversize subscription (projects/P/subscriptions/S), watched like the push subscription; null when the oversize path is off."
  default     = null
  validation {
    condition     = var.oversize_subscription_id == null || can(regex("^projects/[^/]+/subscriptions/[^/]+$", coalesce(var.oversize_subscription_id, "x")))
    error_message = "oversize_subscription_id must be projects/P/subscriptions/S or null."
  }
}

variable "uploader_service_name" {
  type        = string
  description = "Name of the uploader's Cloud Run service: its request counts, latencies and log lines."
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$", var.uploader_service_name))
    error_message = "uploader_service_name must be a Cloud Run service name."
  }
}

variable "receiver_namespace" {
  type        = string
  description = "Kubernetes namespace of the receiver (and the pull worker)."
  default     = "dicom-ingest"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.receiver_namespace))
    error_message = "receiver_namespace must be a DNS label."
  }
}

variable "receiver_name" {
  type        = string
  description = "Name of the receiver's Deployment (ack_after = store) or StatefulSet (ack_after = spool)."
  default     = "dicom-ingest-receiver"
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,52}[a-z0-9])?$", var.receiver_name))
    error_message = "receiver_name must be a DNS-1035 label of at most 54 characters."
  }
}

variable "notification_channels" {
  type        = list(string)
  description = "Notification channels (projects/P/notificationChannels/ID) every alert policy notifies; empty: the policies open incidents on the Monitoring console only."
  default     = []
  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "each notification channel must be projects/P/notificationChannels/ID."
  }
}

variable "backlog_age_threshold_seconds" {
  type        = number
  description = "Alert when the oldest unacknowledged message of the push (or oversize) subscription is older than this: uploads are failing or falling behind."
  default     = 1800
  validation {
    condition     = var.backlog_age_threshold_seconds >= 60 && var.backlog_age_threshold_seconds <= 604800
    error_message = "backlog_age_threshold_seconds must be between 60 and 604800 (the subscriptions' longest retention)."
  }
}

variable "refusal_rate_threshold" {
  type        = number
  description = "Alert when the receivers answer more than this many instances per second with an 0xA7xx (out of resources) status, averaged over 5 minutes; 0 alerts on any refusal."
  default     = 0
  validation {
    condition     = var.refusal_rate_threshold >= 0
    error_message = "refusal_rate_threshold must be 0 or more."
  }
}

variable "uploader_error_ratio_threshold" {
  type        = number
  description = "Alert when more than this fraction of the uploader's push requests end in a retry (5xx) or a dead letter, over 10 minutes."
  default     = 0.1
  validation {
    condition     = var.uploader_error_ratio_threshold > 0 && var.uploader_error_ratio_threshold <= 1
    error_message = "uploader_error_ratio_threshold must be more than 0 and at most 1."
  }
}

variable "labels" {
  type        = map(string)
  description = "User labels added to the alert policies."
  default     = { app = "dicom-ingest" }
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "label keys and values must use lowercase letters, digits, _ or - (keys start with a letter)."
  }
}
