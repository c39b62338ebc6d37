variable "project_id" {
  type        = string
  description = "Project of the cluster and the service accounts."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "region" {
  type        = string
  description = "Region of the cluster's subnetwork (the internal load balancer's region)."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region name such as europe-west4."
  }
}

variable "subnetwork" {
  type        = string
  description = "Self link of the subnetwork the internal load balancer address is reserved in."
  validation {
    condition     = length(var.subnetwork) > 0
    error_message = "subnetwork must not be empty."
  }
}

variable "load_balancer_ip" {
  type        = string
  description = "Internal address for the load balancer (must be free in the subnetwork); null lets Google pick one, which is then reserved."
  default     = null
  validation {
    condition     = var.load_balancer_ip == null || can(cidrhost("${coalesce(var.load_balancer_ip, "0.0.0.0")}/32", 0))
    error_message = "load_balancer_ip must be an IPv4 address or null."
  }
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the receiver (and the pull worker)."
  default     = "dicom-ingest"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS label."
  }
}

variable "name" {
  type        = string
  description = "Name of the receiver's Kubernetes objects (Deployment, Service, ServiceAccount, ...); the StatefulSet's headless Service is <name>-headless."
  default     = "dicom-ingest-receiver"
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,52}[a-z0-9])?$", var.name))
    error_message = "name must be a DNS-1035 label of at most 54 characters (<name>-headless and <name>-worker are Service and Deployment names too)."
  }
}

variable "image" {
  type        = string
  description = "Receiver image by digest (REGION-docker.pkg.dev/P/REPO/receiver@sha256:...)."
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[^@ ]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be a registry image referenced by digest (...@sha256:<64 hex>)."
  }
}

variable "google_service_account_email" {
  type        = string
  description = "The receiver's Google service account (Workload Identity)."
  validation {
    condition     = endswith(var.google_service_account_email, ".iam.gserviceaccount.com")
    error_message = "google_service_account_email must be a service account email."
  }
}

variable "google_service_account_name" {
  type        = string
  description = "Resource name (projects/P/serviceAccounts/EMAIL) of the receiver's Google service account."
  validation {
    condition     = can(regex("^projects/[^/]+/serviceAccounts/[^/]+$", var.google_service_account_name))
    error_message = "google_service_account_name must be projects/P/serviceAccounts/EMAIL."
  }
}

variable "bucket" {
  type        = string
  description = "Bucket the receiver writes objects to (--bucket)."
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_.-]{1,221}[a-z0-9]$", var.bucket))
    error_message = "bucket must be a bucket name."
  }
}

variable "object_prefix" {
  type        = string
  description = "Object name prefix (--object_prefix): objects are <prefix>/<study>/<series>/<sop>.dcm."
  default     = "dicom"
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.object_prefix))
    error_message = "object_prefix must be path segments of letters, digits, _, - and ., without leading or trailing /."
  }
}

variable "topic" {
  type        = string
  description = "projects/P/topics/T the receiver publishes to (--topic)."
  validation {
    condition     = can(regex("^projects/[^/]+/topics/[^/]+$", var.topic))
    error_message = "topic must be projects/P/topics/T."
  }
}

variable "ack_after" {
  type        = string
  description = "When the PACS is answered: store (object in Cloud Storage and message published; a Deployment with an emptyDir) or spool (fsync to a persistent volume; a StatefulSet)."
  default     = "store"
  validation {
    condition     = contains(["store", "spool"], var.ack_after)
    error_message = "ack_after must be store or spool."
  }
}

variable "allowed_calling_aets" {
  type        = list(string)
  description = "Calling AE titles allowed to associate (AET or AET@CIDR); empty allows any from the source ranges."
  default     = []
  validation {
    condition     = alltrue([for a in var.allowed_calling_aets : can(regex("^[^,\\\\]{1,16}(@[0-9.]+(/[0-9]+)?)?$", a))])
    error_message = "each allowed_calling_aets entry must be an AE title (at most 16 characters), optionally @ADDRESS or @CIDR."
  }
}

variable "max_associations" {
  type        = number
  description = "Concurrent associations per replica (--max_associations)."
  default     = 32
  validation {
    condition     = var.max_associations >= 1 && var.max_associations <= 1024
    error_message = "max_associations must be between 1 and 1024."
  }
}

variable "prestop_seconds" {
  type        = number
  description = "How long a stopping replica keeps accepting associations before it is told to stop (preStop sleep), while the internal load balancer's health check (every 8 s, unhealthy after 3 failures) takes it out of rotation."
  default     = 30
  validation {
    condition     = var.prestop_seconds >= 0 && var.prestop_seconds <= 300
    error_message = "prestop_seconds must be between 0 and 300."
  }
}

variable "shutdown_grace_seconds" {
  type        = number
  description = "How long a stopping replica drains associations in flight (--shutdown_grace); the pod's termination grace period is prestop_seconds + this + 15 s."
  default     = 30
  validation {
    condition     = var.shutdown_grace_seconds >= 1 && var.shutdown_grace_seconds <= 3600
    error_message = "shutdown_grace_seconds must be between 1 and 3600."
  }
}

variable "source_ranges" {
  type        = list(string)
  description = "CIDR ranges of the PACS (and test hosts) that may reach the DIMSE ports (2575, and 2762 with tls) through the internal load balancer."
  validation {
    condition     = length(var.source_ranges) > 0 && alltrue([for r in var.source_ranges : can(cidrnetmask(r)) && r != "0.0.0.0/0"])
    error_message = "source_ranges must be one or more IPv4 CIDR blocks, not 0.0.0.0/0."
  }
}

variable "tls" {
  type = object({
    secret_name           = string
    client_ca_secret_name = optional(string)
    tls_only              = optional(bool, false)
  })
  description = "DICOM TLS on port 2762: secret_name is a kubernetes.io/tls Secret (tls.crt, tls.key) in the namespace, issued by the site's PKI or cert-manager; client_ca_secret_name a Secret whose ca.crt holds the CA bundle client certificates must chain to (mutual TLS; null: no client certificate asked for); tls_only serves 2762 alone, not 2575. null: plain DIMSE on 2575 only."
  default     = null
  validation {
    condition = var.tls == null || alltrue([
      for name in compact([try(var.tls.secret_name, ""), try(var.tls.client_ca_secret_name, "")]) :
      can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", name))
    ]) && try(length(var.tls.secret_name) > 0, true)
    error_message = "tls.secret_name (and tls.client_ca_secret_name, if set) must be Kubernetes Secret names: lowercase letters, digits, - and ., at most 253 characters."
  }
}

variable "allow_global_access" {
  type        = bool
  description = "Let clients in other regions of the VPC (or connected over VPN/Interconnect to another region) reach the internal load balancer."
  default     = false
}

variable "min_replicas" {
  type        = number
  description = "HorizontalPodAutoscaler minimum (at least 2 keeps the load balancer serving during a rollout or node upgrade)."
  default     = 2
  validation {
    condition     = var.min_replicas >= 1 && var.min_replicas <= 100
    error_message = "min_replicas must be between 1 and 100."
  }
}

variable "max_replicas" {
  type        = number
  description = "HorizontalPodAutoscaler maximum."
  default     = 6
  validation {
    condition     = var.max_replicas >= 1 && var.max_replicas <= 100
    error_message = "max_replicas must be between 1 and 100."
  }
}

variable "cpu" {
  type        = string
  description = "CPU request and limit of a receiver pod."
  default     = "1"
  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?$|^[0-9]+m$", var.cpu))
    error_message = "cpu must be a Kubernetes CPU quantity such as 1, 1.5 or 500m."
  }
}

variable "memory" {
  type        = string
  description = "Memory request and limit of a receiver pod."
  default     = "1Gi"
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must look like 512Mi or 2Gi."
  }
}

variable "spool_size" {
  type        = string
  description = "Spool volume size in Gi: staging for instances in flight (store mode, an emptyDir; the container's ephemeral storage is this + 1Gi), or the persistent spool per replica (spool mode)."
  default     = "8Gi"
  validation {
    condition     = can(regex("^[1-9][0-9]{0,3}Gi$", var.spool_size)) && try(tonumber(trimsuffix(var.spool_size, "Gi")) <= 1024, false)
    error_message = "spool_size must be 1Gi to 1024Gi, in whole Gi such as 8Gi."
  }
}

variable "max_ephemeral_storage_gib" {
  type        = number
  description = "The most ephemeral storage a pod may request (Autopilot: 10 GiB); in store mode spool_size + 1Gi must fit. Raise it for a Standard cluster with larger node disks."
  default     = 10
  validation {
    condition     = var.max_ephemeral_storage_gib >= 2 && var.max_ephemeral_storage_gib <= 1024
    error_message = "max_ephemeral_storage_gib must be between 2 and 1024."
  }
}

variable "storage_class" {
  type        = string
  description = "StorageClass of the persistent spool volumes (spool mode)."
  default     = "standard-rwo"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.storage_class))
    error_message = "storage_class must be a StorageClass name."
  }
}

variable "worker" {
  type = object({
    image                        = string
    google_service_account_email = string
    google_service_account_name  = string
    subscription                 = string
    dicomweb_address             = string
    dead_letter_topic            = string
    keep_uploaded                = bool
    replicas                     = number
    cpu                          = string
    memory                       = string
  })
  description = "The optional pull worker (oversize instances), run in the same namespace; null runs none."
  default     = null
  validation {
    condition     = var.worker == null || can(regex("@sha256:[0-9a-f]{64}$", var.worker.image))
    error_message = "worker.image must be referenced by digest."
  }
}

variable "apply_manifests" {
  type        = bool
  description = "Apply the rendered manifests to the cluster; false only renders them (output manifests) for kubectl or GitOps."
  default     = true
}
