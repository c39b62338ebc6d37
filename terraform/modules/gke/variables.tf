variable "project_id" {
  type        = string
  description = "Project that owns the cluster."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "region" {
  type        = string
  description = "Region of the Autopilot cluster."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region name such as europe-west4."
  }
}

variable "name" {
  type        = string
  description = "Cluster name."
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.name))
    error_message = "name must be 1-40 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "node_service_account_email" {
  type        = string
  description = "Service account the Autopilot nodes run as (granted roles/container.defaultNodeServiceAccount on the project here)."
  validation {
    condition     = endswith(var.node_service_account_email, ".iam.gserviceaccount.com")
    error_message = "node_service_account_email must be a service account email."
  }
}

variable "image_repositories" {
  type        = list(object({ project = string, location = string, repository = string }))
  description = "Artifact Registry repositories the nodes pull the workloads' images from (roles/artifactregistry.reader on each)."
  default     = []
  validation {
    condition     = alltrue([for r in var.image_repositories : can(regex("^[a-z][a-z0-9-]*$", r.location)) && length(r.project) > 0 && length(r.repository) > 0])
    error_message = "each image repository needs a project, a location such as europe-west4 and a repository id."
  }
}

variable "network" {
  type        = string
  description = "Self link or name of the VPC network."
  validation {
    condition     = length(var.network) > 0
    error_message = "network must not be empty."
  }
}

variable "subnetwork" {
  type        = string
  description = "Self link or name of the subnetwork (in var.region)."
  validation {
    condition     = length(var.subnetwork) > 0
    error_message = "subnetwork must not be empty."
  }
}

variable "pods_range_name" {
  type        = string
  description = "Name of the subnetwork's secondary range for pods."
  validation {
    condition     = length(var.pods_range_name) > 0
    error_message = "pods_range_name must not be empty."
  }
}

variable "services_range_name" {
  type        = string
  description = "Name of the subnetwork's secondary range for services."
  validation {
    condition     = length(var.services_range_name) > 0
    error_message = "services_range_name must not be empty."
  }
}

variable "master_ipv4_cidr_block" {
  type        = string
  description = "A /28 for the control plane's private endpoint."
  default     = "172.16.0.32/28"
  validation {
    condition     = can(cidrnetmask(var.master_ipv4_cidr_block)) && endswith(var.master_ipv4_cidr_block, "/28")
    error_message = "master_ipv4_cidr_block must be an IPv4 /28."
  }
}

variable "authorized_networks" {
  type        = list(object({ cidr_block = string, display_name = string }))
  description = "Networks allowed to reach the control plane's IP endpoints (the DNS endpoint is guarded by IAM)."
  default     = []
  validation {
    condition     = alltrue([for n in var.authorized_networks : can(cidrnetmask(n.cidr_block))])
    error_message = "each authorized_networks cidr_block must be an IPv4 CIDR block."
  }
}

variable "release_channel" {
  type        = string
  description = "GKE release channel."
  default     = "REGULAR"
  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse `terraform destroy` of the cluster."
  default     = true
}

variable "labels" {
  type        = map(string)
  description = "Resource labels."
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k))])
    error_message = "label keys must start with a lowercase letter and use lowercase letters, digits, _ or -."
  }
}
