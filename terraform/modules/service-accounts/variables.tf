variable "project_id" {
  type        = string
  description = "Project that owns the service accounts."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the account ids (<prefix>-receiver, <prefix>-uploader, <prefix>-push, <prefix>-worker)."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{3,21}$", var.name_prefix))
    error_message = "name_prefix must be 4-22 lowercase letters, digits or hyphens, starting with a letter (account ids are at most 30 characters)."
  }
}

variable "create_worker" {
  type        = bool
  description = "Create the pull worker's account (only when the oversize path is enabled)."
  default     = false
  validation {
    condition     = var.create_worker == true || var.create_worker == false
    error_message = "create_worker must be true or false."
  }
}
