variable "project_id" {
  type        = string
  description = "Project of the Cloud Run service."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "region" {
  type        = string
  description = "Cloud Run region."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region name such as europe-west4."
  }
}

variable "name" {
  type        = string
  description = "Cloud Run service name."
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$", var.name))
    error_message = "name must be 1-49 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "image" {
  type        = string
  description = "Uploader image by digest (REGION-docker.pkg.dev/P/REPO/uploader@sha256:...)."
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[^@ ]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be a registry image referenced by digest (...@sha256:<64 hex>)."
  }
}

variable "service_account_email" {
  type        = string
  description = "The uploader's own service account."
  validation {
    condition     = endswith(var.service_account_email, ".iam.gserviceaccount.com")
    error_message = "service_account_email must be a service account email."
  }
}

variable "invoker_email" {
  type        = string
  description = "The push subscription's service account: the only principal given roles/run.invoker."
  validation {
    condition     = endswith(var.invoker_email, ".iam.gserviceaccount.com")
    error_message = "invoker_email must be a service account email."
  }
}

variable "dicomweb_address" {
  type        = string
  description = "DICOMweb base URL of the DICOM store."
  validation {
    condition     = startswith(var.dicomweb_address, "https://")
    error_message = "dicomweb_address must be an https:// URL."
  }
}

variable "dead_letter_topic" {
  type        = string
  description = "projects/P/topics/T where permanent failures are published with their reason."
  validation {
    condition     = can(regex("^projects/[^/]+/topics/[^/]+$", var.dead_letter_topic))
    error_message = "dead_letter_topic must be projects/P/topics/T."
  }
}

variable "bucket" {
  type        = string
  description = "The bucket the receiver writes to: the uploader uploads only objects in it (DICOM_INGEST_BUCKET)."
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$", var.bucket))
    error_message = "bucket must be a Cloud Storage bucket name."
  }
}

variable "object_prefix" {
  type        = string
  description = "The receiver's object prefix: the uploader uploads only objects under <prefix>/ (DICOM_INGEST_OBJECT_PREFIX)."
  default     = "dicom"
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.object_prefix))
    error_message = "object_prefix must be path segments of letters, digits, _, - and ., without leading or trailing /."
  }
}

variable "oversize_topic" {
  type        = string
  description = "projects/P/topics/T for instances larger than push_max_bytes, or null to upload everything from the push request."
  default     = null
  validation {
    condition     = var.oversize_topic == null || can(regex("^projects/[^/]+/topics/[^/]+$", var.oversize_topic))
    error_message = "oversize_topic must be projects/P/topics/T or null."
  }
}

variable "push_max_bytes" {
  type        = number
  description = "Instances larger than this go to the oversize topic (used only with oversize_topic)."
  default     = 536870912
  validation {
    condition     = var.push_max_bytes >= 1048576
    error_message = "push_max_bytes must be at least 1 MiB."
  }
}

variable "keep_uploaded" {
  type        = bool
  description = "Keep objects after a confirmed store (the bucket's lifecycle rule ages them out); false deletes them."
  default     = true
}

variable "concurrency" {
  type        = number
  description = "Requests (uploads) one instance handles at once; also the server's thread count."
  default     = 8
  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "min_instances" {
  type        = number
  description = "Instances kept warm (0 lets the service scale to zero)."
  default     = 0
  validation {
    condition     = var.min_instances >= 0 && var.min_instances <= 100
    error_message = "min_instances must be between 0 and 100."
  }
}

variable "max_instances" {
  type        = number
  description = "Upper bound on instances: caps the request rate against the Healthcare API quota."
  default     = 20
  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "max_instances must be between 1 and 1000."
  }
}

variable "cpu" {
  type        = string
  description = "CPU limit per instance."
  default     = "1"
  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.cpu)
    error_message = "cpu must be 1, 2, 4, 6 or 8."
  }
}

variable "memory" {
  type        = string
  description = "Memory limit per instance (uploads stream, so memory does not grow with instance size)."
  default     = "1Gi"
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must look like 512Mi or 2Gi."
  }
}

variable "timeout_seconds" {
  type        = number
  description = "Request timeout: shorter than the push subscription's ack deadline (at most 600 s), so Cloud Run ends a request before Pub/Sub gives up on it and redelivers a duplicate."
  default     = 540
  validation {
    condition     = var.timeout_seconds >= 10 && var.timeout_seconds < 600
    error_message = "timeout_seconds must be between 10 and 599 (below the ack deadline, at most 600)."
  }
}

variable "http_timeout_seconds" {
  type        = number
  description = "DICOM_INGEST_HTTP_TIMEOUT: how long one wait for the DICOM store may last; well below timeout_seconds."
  default     = 120
  validation {
    condition     = var.http_timeout_seconds >= 5 && var.http_timeout_seconds <= 300
    error_message = "http_timeout_seconds must be between 5 and 300."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse `terraform destroy` of the service."
  default     = true
}

variable "labels" {
  type        = map(string)
  description = "Service labels."
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k))])
    error_message = "label keys must start with a lowercase letter and use lowercase letters, digits, _ or -."
  }
}
