variable "project_id" {
  type        = string
  description = "Project of the dataset and DICOM store (when they are created here)."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "location" {
  type        = string
  description = "Healthcare API location of a created dataset (a region such as europe-west4, or a multi-region such as us)."
  validation {
    condition     = can(regex("^[a-z]+(-[a-z]+[0-9]+)?$", var.location))
    error_message = "location must be a Healthcare API location such as europe-west4 or us."
  }
}

variable "existing_dicom_store_id" {
  type        = string
  description = "An existing DICOM store (projects/P/locations/L/datasets/D/dicomStores/S) to use; null creates one."
  default     = null
  validation {
    condition     = var.existing_dicom_store_id == null || can(regex("^projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/]+$", var.existing_dicom_store_id))
    error_message = "existing_dicom_store_id must be projects/P/locations/L/datasets/D/dicomStores/S or null."
  }
}

variable "existing_dataset_id" {
  type        = string
  description = "An existing dataset (projects/P/locations/L/datasets/D) to create the DICOM store in; null creates a dataset. Ignored with existing_dicom_store_id."
  default     = null
  validation {
    condition     = var.existing_dataset_id == null || can(regex("^projects/[^/]+/locations/[^/]+/datasets/[^/]+$", var.existing_dataset_id))
    error_message = "existing_dataset_id must be projects/P/locations/L/datasets/D or null."
  }
}

variable "dataset_name" {
  type        = string
  description = "Name of the dataset to create."
  default     = "dicom-ingest"
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,256}$", var.dataset_name))
    error_message = "dataset_name may use letters, digits, _ and -, at most 256 characters."
  }
}

variable "dicom_store_name" {
  type        = string
  description = "Name of the DICOM store to create."
  default     = "dicom-ingest"
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,256}$", var.dicom_store_name))
    error_message = "dicom_store_name may use letters, digits, _ and -, at most 256 characters."
  }
}

variable "editors" {
  type        = map(string)
  description = "Service accounts that store instances (STOW-RS, and DELETE for the conflict policy), by a fixed key (uploader, worker)."
  validation {
    condition     = alltrue([for e in values(var.editors) : endswith(e, ".iam.gserviceaccount.com")])
    error_message = "editors must map keys to service account emails."
  }
}

variable "operator_members" {
  type        = list(string)
  description = "IAM members who run `dicom-ingest replay reconcile` (QIDO-RS searches): DICOM viewers."
  default     = []
  validation {
    condition     = alltrue([for m in var.operator_members : can(regex("^(user|group|serviceAccount):", m))])
    error_message = "operator_members must be user:, group: or serviceAccount: members."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels on a created DICOM store."
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k))])
    error_message = "label keys must start with a lowercase letter and use lowercase letters, digits, _ or -."
  }
}
