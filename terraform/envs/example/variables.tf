variable "project_id" {
  type        = string
  description = "The Google Cloud project to deploy into."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  type        = string
  description = "Region of the cluster, the load balancer, the bucket and the Cloud Run service."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region name such as europe-west4."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of resource names (topic, service, service accounts, cluster, network); <prefix>-receiver is the longest service account id (30 characters at most)."
  default     = "dicom-ingest"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,19}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 4-21 lowercase letters, digits or hyphens, starting with a letter and ending with a letter or digit."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every resource that takes labels."
  default     = { app = "dicom-ingest" }
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "label keys and values must use lowercase letters, digits, _ or - (keys start with a letter)."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the cluster and the Cloud Run service from `terraform destroy`."
  default     = true
}

# --- What may already exist --------------------------------------------------------------

variable "existing_network" {
  type = object({
    network             = string
    subnetwork          = string
    pods_range_name     = string
    services_range_name = string
  })
  description = "Use this VPC (self links, and the subnetwork's secondary range names) instead of creating one; null creates <prefix> with Private Google Access."
  default     = null
  validation {
    condition     = var.existing_network == null || try(length(var.existing_network.subnetwork) > 0, false)
    error_message = "existing_network.subnetwork must be set."
  }
}

variable "existing_cluster" {
  type = object({
    name     = string
    location = string
  })
  description = "Deploy the receiver into this GKE cluster (Workload Identity and the DNS endpoint enabled) instead of creating an Autopilot cluster; null creates one."
  default     = null
  validation {
    condition     = var.existing_cluster == null || try(length(var.existing_cluster.name) > 0 && length(var.existing_cluster.location) > 0, false)
    error_message = "existing_cluster needs a name and a location."
  }
}

variable "cluster_authorized_networks" {
  type        = list(object({ cidr_block = string, display_name = string }))
  description = "Networks allowed to reach a created cluster's IP control-plane endpoint (the DNS endpoint is guarded by IAM)."
  default     = []
  validation {
    condition     = alltrue([for n in var.cluster_authorized_networks : can(cidrnetmask(n.cidr_block))])
    error_message = "each cidr_block must be an IPv4 CIDR block."
  }
}

variable "healthcare_location" {
  type        = string
  description = "Location of a created Healthcare dataset; null uses var.region."
  default     = null
  validation {
    condition     = var.healthcare_location == null || can(regex("^[a-z]+(-[a-z]+[0-9]+)?$", coalesce(var.healthcare_location, "x")))
    error_message = "healthcare_location must be a Healthcare API location such as europe-west4 or us."
  }
}

variable "existing_dataset_id" {
  type        = string
  description = "Create the DICOM store in this dataset (projects/P/locations/L/datasets/D); null creates a dataset."
  default     = null
  validation {
    condition     = var.existing_dataset_id == null || can(regex("^projects/[^/]+/locations/[^/]+/datasets/[^/]+$", coalesce(var.existing_dataset_id, "x")))
    error_message = "existing_dataset_id must be projects/P/locations/L/datasets/D or null."
  }
}

variable "existing_dicom_store_id" {
  type        = string
  description = "Upload into this DICOM store (projects/P/locations/L/datasets/D/dicomStores/S); null creates one."
  default     = null
  validation {
    condition     = var.existing_dicom_store_id == null || can(regex("^projects/[^/]+/locations/[^/]+/datasets/[^/]+/dicomStores/[^/]+$", coalesce(var.existing_dicom_store_id, "x")))
    error_message = "existing_dicom_store_id must be projects/P/locations/L/datasets/D/dicomStores/S or null."
  }
}

# --- Images (Cloud Build passes the digests it pushed) ------------------------------------

variable "receiver_image" {
  type        = string
  description = "Receiver image by digest: REGION-docker.pkg.dev/PROJECT/REPO/receiver@sha256:..."
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[^@ ]+@sha256:[0-9a-f]{64}$", var.receiver_image))
    error_message = "receiver_image must be referenced by digest (...@sha256:<64 hex>)."
  }
}

variable "uploader_image" {
  type        = string
  description = "Uploader image by digest: REGION-docker.pkg.dev/PROJECT/REPO/uploader@sha256:..."
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[^@ ]+@sha256:[0-9a-f]{64}$", var.uploader_image))
    error_message = "uploader_image must be referenced by digest (...@sha256:<64 hex>)."
  }
}

# --- Receiver ------------------------------------------------------------------------------

variable "pacs_source_ranges" {
  type        = list(string)
  description = "CIDR ranges of the PACS (and of hosts that test with dcmsend) allowed to reach the receiver: port 2575, and 2762 with receiver_tls."
  validation {
    condition     = length(var.pacs_source_ranges) > 0 && alltrue([for r in var.pacs_source_ranges : can(cidrnetmask(r)) && r != "0.0.0.0/0"])
    error_message = "pacs_source_ranges must be one or more IPv4 CIDR blocks, not 0.0.0.0/0."
  }
}

variable "load_balancer_ip" {
  type        = string
  description = "Internal address of the receiver's load balancer in the subnetwork; null reserves a free one."
  default     = null
  validation {
    condition     = var.load_balancer_ip == null || can(cidrhost("${coalesce(var.load_balancer_ip, "0.0.0.0")}/32", 0))
    error_message = "load_balancer_ip must be an IPv4 address or null."
  }
}

variable "allow_global_access" {
  type        = bool
  description = "Let senders in other regions of the VPC (or reaching it over VPN or Interconnect in another region) connect to the receiver's internal load balancer."
  default     = false
}

variable "receiver_tls" {
  type = object({
    secret_name           = string
    client_ca_secret_name = optional(string)
    tls_only              = optional(bool, false)
  })
  description = "DICOM TLS on port 2762 (README: Deploy on Google Cloud, DICOM TLS). secret_name: a kubernetes.io/tls Secret in the receiver's namespace (cert-manager or your PKI issues it); client_ca_secret_name: a Secret whose ca.crt is the CA bundle client certificates must chain to (mutual TLS); tls_only: no plain port 2575. null: plain DIMSE only."
  default     = null
  validation {
    condition = var.receiver_tls == null || alltrue([
      for name in compact([try(var.receiver_tls.secret_name, ""), try(var.receiver_tls.client_ca_secret_name, "")]) :
      can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", name))
    ]) && try(length(var.receiver_tls.secret_name) > 0, true)
    error_message = "receiver_tls.secret_name (and client_ca_secret_name, if set) must be Kubernetes Secret names: lowercase letters, digits, - and ., at most 253 characters."
  }
}

variable "allowed_calling_aets" {
  type        = list(string)
  description = "Calling AE titles allowed to associate (AET or AET@CIDR); empty allows any AE title from pacs_source_ranges."
  default     = []
  validation {
    condition     = alltrue([for a in var.allowed_calling_aets : length(split("@", a)[0]) >= 1 && length(split("@", a)[0]) <= 16])
    error_message = "each entry must be an AE title of 1-16 characters, optionally followed by @ADDRESS or @CIDR."
  }
}

variable "ack_after" {
  type        = string
  description = "store: answer the PACS once the object is in Cloud Storage and its message published. spool: once it is fsynced to the replica's persistent volume (faster per association)."
  default     = "store"
  validation {
    condition     = contains(["store", "spool"], var.ack_after)
    error_message = "ack_after must be store or spool."
  }
}

variable "receiver_replicas" {
  type        = object({ min = number, max = number })
  description = "HorizontalPodAutoscaler bounds of the receiver."
  default     = { min = 2, max = 6 }
  validation {
    condition     = var.receiver_replicas.min >= 1 && var.receiver_replicas.max >= var.receiver_replicas.min
    error_message = "receiver_replicas needs 1 <= min <= max."
  }
}

variable "receiver_resources" {
  type        = object({ cpu = string, memory = string, spool_size = string })
  description = "CPU and memory of a receiver pod, and its spool size: with ack_after = store an emptyDir (the pod's ephemeral storage is spool_size + 1Gi, at most 10Gi on Autopilot, so spool_size <= 9Gi), with spool a persistent volume per replica (up to 1024Gi)."
  default     = { cpu = "1", memory = "1Gi", spool_size = "8Gi" }
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.receiver_resources.memory)) && can(regex("^[1-9][0-9]{0,3}Gi$", var.receiver_resources.spool_size)) && try(tonumber(trimsuffix(var.receiver_resources.spool_size, "Gi")) <= 1024, false)
    error_message = "memory must look like 1Gi, and spool_size be 1Gi to 1024Gi in whole Gi such as 8Gi."
  }
}

variable "shutdown_grace_seconds" {
  type        = number
  description = "How long a stopping receiver drains associations in flight."
  default     = 30
  validation {
    condition     = var.shutdown_grace_seconds >= 1 && var.shutdown_grace_seconds <= 3600
    error_message = "shutdown_grace_seconds must be between 1 and 3600."
  }
}

# --- Bucket ----------------------------------------------------------------------------------

variable "bucket_name" {
  type        = string
  description = "Landing bucket name; null uses <project_id>-<name_prefix>."
  default     = null
  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", coalesce(var.bucket_name, "xxx")))
    error_message = "bucket_name must be a valid bucket name or null."
  }
}

variable "object_prefix" {
  type        = string
  description = "Objects are written as <prefix>/<study>/<series>/<sop>.dcm."
  default     = "dicom"
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.object_prefix))
    error_message = "object_prefix must be path segments without leading or trailing /."
  }
}

variable "bucket_delete_after_days" {
  type        = number
  description = "Lifecycle: objects are deleted this many days after they were written."
  default     = 30
  validation {
    condition     = var.bucket_delete_after_days >= 1
    error_message = "bucket_delete_after_days must be at least 1."
  }
}

variable "kms_key_name" {
  type        = string
  description = "Optional CMEK key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the bucket and the topics, in the bucket's region."
  default     = null
  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", coalesce(var.kms_key_name, "x")))
    error_message = "kms_key_name must be a full crypto key name or null."
  }
}

# --- Queue and uploader ----------------------------------------------------------------------

variable "max_delivery_attempts" {
  type        = number
  description = "Push deliveries before a message is dead-lettered."
  default     = 100
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "retention_days" {
  type        = number
  description = "Days subscriptions keep messages (acknowledged ones too) for `dicom-ingest replay seek`."
  default     = 7
  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 7
    error_message = "retention_days must be between 1 and 7."
  }
}

variable "uploader_scaling" {
  type        = object({ concurrency = number, min_instances = number, max_instances = number })
  description = "Uploads per Cloud Run instance at once, and the instance bounds (max caps the load on the Healthcare API)."
  default     = { concurrency = 8, min_instances = 0, max_instances = 20 }
  validation {
    condition     = var.uploader_scaling.concurrency >= 1 && var.uploader_scaling.min_instances >= 0 && var.uploader_scaling.max_instances >= max(1, var.uploader_scaling.min_instances)
    error_message = "uploader_scaling needs concurrency >= 1 and 0 <= min_instances <= max_instances."
  }
}

variable "uploader_resources" {
  type        = object({ cpu = string, memory = string })
  description = "CPU and memory of a Cloud Run instance."
  default     = { cpu = "1", memory = "1Gi" }
  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.uploader_resources.cpu) && can(regex("^[0-9]+(Mi|Gi)$", var.uploader_resources.memory))
    error_message = "cpu must be 1, 2, 4, 6 or 8 and memory like 1Gi."
  }
}

variable "keep_uploaded" {
  type        = bool
  description = "Keep objects after a confirmed store (the lifecycle rule ages them out); false deletes them and gives the uploader storage.objects.delete."
  default     = true
}

variable "oversize_threshold_bytes" {
  type        = number
  description = "Instances larger than this skip the push path and go to a pull worker on GKE (a push request must finish within Cloud Run's 540 s timeout, under the 600 s ack deadline); null uploads everything from the push request and runs no worker."
  default     = 536870912
  validation {
    condition     = var.oversize_threshold_bytes == null || try(var.oversize_threshold_bytes >= 1048576, false)
    error_message = "oversize_threshold_bytes must be at least 1 MiB, or null."
  }
}

variable "operators" {
  type        = list(string)
  description = "IAM members (group:...) who run `dicom-ingest replay`: subscriber on the dead-letter and push subscriptions, publisher on the topic, object and DICOM viewer."
  default     = []
  validation {
    condition     = alltrue([for m in var.operators : can(regex("^(user|group|serviceAccount):", m))])
    error_message = "operators must be user:, group: or serviceAccount: members."
  }
}

variable "apply_kubernetes_manifests" {
  type        = bool
  description = "Apply the receiver's manifests to the cluster; false only renders them (output receiver_manifests) for kubectl or a GitOps tool."
  default     = true
}

# --- Monitoring ------------------------------------------------------------------------------

variable "notification_channels" {
  type        = list(string)
  description = "Notification channels (projects/P/notificationChannels/ID) the alert policies notify; empty: incidents show on the Monitoring console only."
  default     = []
  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "each notification channel must be projects/P/notificationChannels/ID."
  }
}

variable "backlog_age_alert_seconds" {
  type        = number
  description = "Alert when a message has waited this long for its upload (the push or oversize subscription's oldest unacknowledged message)."
  default     = 1800
  validation {
    condition     = var.backlog_age_alert_seconds >= 60 && var.backlog_age_alert_seconds <= 604800
    error_message = "backlog_age_alert_seconds must be between 60 and 604800."
  }
}

variable "uploader_error_ratio_alert" {
  type        = number
  description = "Alert when more than this fraction of the uploader's push requests are retried (5xx) or dead-lettered over 10 minutes."
  default     = 0.1
  validation {
    condition     = var.uploader_error_ratio_alert > 0 && var.uploader_error_ratio_alert <= 1
    error_message = "uploader_error_ratio_alert must be more than 0 and at most 1."
  }
}
