variable "project_id" {
  type        = string
  description = "Project that owns the network."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  type        = string
  description = "Region of the subnetwork (the cluster's and the internal load balancer's region)."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region name such as europe-west4."
  }
}

variable "name" {
  type        = string
  description = "Name of the VPC network and its subnetwork."
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.name))
    error_message = "name must be a valid resource name (RFC 1035, at most 63 characters)."
  }
}

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the subnetwork: nodes and the receiver's internal load balancer address."
  default     = "10.20.0.0/20"
  validation {
    condition     = can(cidrnetmask(var.subnet_cidr))
    error_message = "subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for GKE pods."
  default     = "10.24.0.0/14"
  validation {
    condition     = can(cidrnetmask(var.pods_cidr))
    error_message = "pods_cidr must be an IPv4 CIDR block."
  }
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for GKE services."
  default     = "10.28.0.0/20"
  validation {
    condition     = can(cidrnetmask(var.services_cidr))
    error_message = "services_cidr must be an IPv4 CIDR block."
  }
}
