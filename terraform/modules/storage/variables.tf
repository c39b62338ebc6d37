variable "project_id" {
  type        = string
  description = "Project that owns the bucket."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "name" {
  type        = string
  description = "Bucket name (globally unique)."
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.name)) && !startswith(var.name, "goog")
    error_message = "name must be a valid bucket name: 3-63 lowercase letters, digits, - or _, not starting with goog."
  }
}

variable "location" {
  type        = string
  description = "Bucket location; the receiver's region keeps writes close to the PACS."
  validation {
    condition     = length(var.location) > 0
    error_message = "location must not be empty."
  }
}

variable "delete_after_days" {
  type        = number
  description = "Lifecycle rule: delete objects this many days after they were written (the DICOM store is the system of record; keep long enough for replay and reconciliation)."
  default     = 30
  validation {
    condition     = var.delete_after_days >= 1 && floor(var.delete_after_days) == var.delete_after_days
    error_message = "delete_after_days must be a whole number of days, at least 1."
  }
}

variable "soft_delete_days" {
  type        = number
  description = "Soft-delete retention: deleted or overwritten objects can be restored for this many days."
  default     = 7
  validation {
    condition     = var.soft_delete_days == 0 || (var.soft_delete_days >= 7 && var.soft_delete_days <= 90)
    error_message = "soft_delete_days must be 0 (off) or between 7 and 90."
  }
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for CMEK; null uses Google-managed encryption."
  default     = null
  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a full crypto key name or null."
  }
}

variable "receiver_email" {
  type        = string
  description = "The receiver's service account: creates and overwrites objects."
  validation {
    condition     = endswith(var.receiver_email, ".iam.gserviceaccount.com")
    error_message = "receiver_email must be a service account email."
  }
}

variable "readers" {
  type        = map(string)
  description = "Service accounts that read objects, by a fixed key (uploader, worker): keys must be known at plan time, emails need not be."
  validation {
    condition     = alltrue([for e in values(var.readers) : endswith(e, ".iam.gserviceaccount.com")])
    error_message = "readers must map keys to service account emails."
  }
}

variable "readers_delete" {
  type        = bool
  description = "Readers also delete objects after a confirmed store (DICOM_INGEST_KEEP_UPLOADED=false)."
  default     = false
}

variable "operator_members" {
  type        = list(string)
  description = "IAM members (group:..., user:...) who run `dicom-ingest replay reconcile`: object viewers."
  default     = []
  validation {
    condition     = alltrue([for m in var.operator_members : can(regex("^(user|group|serviceAccount):", m))])
    error_message = "operator_members must be user:, group: or serviceAccount: members."
  }
}

variable "role_id_prefix" {
  type        = string
  description = "Prefix of the project custom role ids (camelCase or underscores; ids of deleted roles stay reserved for 37 days)."
  default     = "dicomIngest"
  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9_]{2,40}$", var.role_id_prefix))
    error_message = "role_id_prefix must be 3-41 letters, digits or underscores, starting with a letter."
  }
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete a bucket that still holds objects."
  default     = false
}

variable "labels" {
  type        = map(string)
  description = "Bucket labels."
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k))])
    error_message = "label keys must start with a lowercase letter and use lowercase letters, digits, _ or -."
  }
}
