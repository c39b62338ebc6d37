variable "project_id" {
  type        = string
  description = "Project that owns the topics and subscriptions."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "name" {
  type        = string
  description = "Name of the main topic; the others are derived from it (<name>-dead-letter, <name>-oversize, <name>-push, ...)."
  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9._~%+-]{2,200}$", var.name)) && !startswith(lower(var.name), "goog")
    error_message = "name must be a valid Pub/Sub topic id (3-201 characters, starting with a letter, not with goog)."
  }
}

variable "push_endpoint" {
  type        = string
  description = "HTTPS URL of the uploader (the Cloud Run service URL); also the OIDC token's audience."
  validation {
    condition     = startswith(var.push_endpoint, "https://")
    error_message = "push_endpoint must be an https:// URL."
  }
}

variable "push_service_account_email" {
  type        = string
  description = "Service account whose OIDC token authenticates each push request (has run.invoker on the uploader)."
  validation {
    condition     = endswith(var.push_service_account_email, ".iam.gserviceaccount.com")
    error_message = "push_service_account_email must be a service account email."
  }
}

variable "push_service_account_name" {
  type        = string
  description = "Resource name (projects/P/serviceAccounts/EMAIL) of the push invoker account."
  validation {
    condition     = can(regex("^projects/[^/]+/serviceAccounts/[^/]+$", var.push_service_account_name))
    error_message = "push_service_account_name must be projects/P/serviceAccounts/EMAIL."
  }
}

variable "ack_deadline_seconds" {
  type        = number
  description = "Ack deadline of the push and oversize subscriptions: the time one upload may take (Cloud Run's request timeout should match)."
  default     = 600
  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 10 and 600."
  }
}

variable "min_backoff_seconds" {
  type        = number
  description = "Retry policy: the first redelivery delay after a failed push."
  default     = 10
  validation {
    condition     = var.min_backoff_seconds >= 0 && var.min_backoff_seconds <= 600
    error_message = "min_backoff_seconds must be between 0 and 600."
  }
}

variable "max_backoff_seconds" {
  type        = number
  description = "Retry policy: the longest redelivery delay."
  default     = 600
  validation {
    condition     = var.max_backoff_seconds >= 0 && var.max_backoff_seconds <= 600
    error_message = "max_backoff_seconds must be between 0 and 600."
  }
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries before Pub/Sub moves a message to the dead-letter topic (with the default backoff, 100 attempts span roughly 16 hours of outage)."
  default     = 100
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "retention_seconds" {
  type        = number
  description = "How long subscriptions keep messages, acknowledged ones included, so that `dicom-ingest replay seek` can go back this far."
  default     = 604800
  validation {
    condition     = var.retention_seconds >= 600 && var.retention_seconds <= 604800
    error_message = "retention_seconds must be between 600 (10 minutes) and 604800 (7 days)."
  }
}

variable "dead_letter_topic_retention" {
  type        = string
  description = "How long the dead-letter topic itself keeps every message (seekable from any of its subscriptions); at most 31 days."
  default     = "2678400s"
  validation {
    condition     = can(regex("^[0-9]+s$", var.dead_letter_topic_retention)) && try(tonumber(trimsuffix(var.dead_letter_topic_retention, "s")) >= 600 && tonumber(trimsuffix(var.dead_letter_topic_retention, "s")) <= 2678400, false)
    error_message = "dead_letter_topic_retention must be between 600s and 2678400s (31 days), in seconds such as 2678400s."
  }
}

variable "enable_oversize" {
  type        = bool
  description = "Create the oversize topic and its pull subscription (instances too large for one push request)."
  default     = false
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key for the topics (CMEK); null uses Google-managed encryption."
  default     = null
  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a full crypto key name or null."
  }
}

variable "publishers" {
  type        = map(string)
  description = "Service accounts that publish to the main topic (the receiver), by a fixed key (keys known at plan time)."
  validation {
    condition     = alltrue([for e in values(var.publishers) : endswith(e, ".iam.gserviceaccount.com")])
    error_message = "publishers must map keys to service account emails."
  }
}

variable "dead_letter_publishers" {
  type        = map(string)
  description = "Service accounts that publish permanent failures to the dead-letter topic (the uploader, the pull worker), by a fixed key (keys known at plan time)."
  validation {
    condition     = alltrue([for e in values(var.dead_letter_publishers) : endswith(e, ".iam.gserviceaccount.com")])
    error_message = "dead_letter_publishers must map keys to service account emails."
  }
}

variable "oversize_publishers" {
  type        = map(string)
  description = "Service accounts that re-publish oversize instances (the uploader), by a fixed key (keys known at plan time)."
  default     = {}
  validation {
    condition     = alltrue([for e in values(var.oversize_publishers) : endswith(e, ".iam.gserviceaccount.com")])
    error_message = "oversize_publishers must map keys to service account emails."
  }
}

variable "oversize_subscribers" {
  type        = map(string)
  description = "Service accounts that pull the oversize subscription (the pull worker), by a fixed key (keys known at plan time)."
  default     = {}
  validation {
    condition     = alltrue([for e in values(var.oversize_subscribers) : endswith(e, ".iam.gserviceaccount.com")])
    error_message = "oversize_subscribers must map keys to service account emails."
  }
}

variable "operator_members" {
  type        = list(string)
  description = "IAM members who run `dicom-ingest replay`: subscriber on the dead-letter and push subscriptions, publisher on the main topic."
  default     = []
  validation {
    condition     = alltrue([for m in var.operator_members : can(regex("^(user|group|serviceAccount):", m))])
    error_message = "operator_members must be user:, group: or serviceAccount: members."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels on topics and subscriptions."
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k))])
    error_message = "label keys must start with a lowercase letter and use lowercase letters, digits, _ or -."
  }
}
