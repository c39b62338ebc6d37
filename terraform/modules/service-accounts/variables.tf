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
  description = "Prefix of the account ids (<prefix>-receiver, <prefix>-uploader, <prefix>-push, <prefix>-worker, <prefix>-nodes)."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,19}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 4-21 lowercase letters, digits or hyphens, starting with a letter and ending with a letter or digit (<prefix>-receiver must fit the 30-character account id limit)."
  }
}

variable "create_worker" {
  type        = bool
  description = "Create the pull worker's account (only when the oversize path is enabled)."
  default     = false
}

variable "create_nodes" {
  type        = bool
  description = "Create the GKE nodes' account (only when the cluster is created here)."
  default     = false
}
