# The receiver on GKE. The Kubernetes objects are the templates in k8s/ (the one source of
# truth), rendered here with templatefile() and applied with kubectl_manifest; this module adds
# what only Google Cloud knows: the reserved internal address of the load balancer and the
# Workload Identity bindings of the Kubernetes service accounts to their Google accounts.

locals {
  k8s_dir   = "${path.module}/../../../k8s"
  spool     = var.ack_after == "spool"
  ip        = google_compute_address.load_balancer.address
  wi_member = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${var.name}]"

  # DICOM TLS (k8s templates: the flags, the Secret volume, the ports of the pod, the Services
  # and the NetworkPolicy), off when var.tls is null.
  tls           = var.tls != null
  tls_only      = local.tls && try(var.tls.tls_only, false)
  tls_client_ca = local.tls && try(var.tls.client_ca_secret_name, null) != null
  dimse_ports   = concat(local.tls_only ? [] : [2575], local.tls ? [2762] : [])

  # The container's ephemeral storage holds its logs and, in store mode, the emptyDir spool:
  # the spool's size plus 1Gi of headroom, so a full spool is refused by the receiver (the PACS
  # gets a failure status and resends) before the kubelet evicts the pod. In spool mode the
  # spool is a persistent volume and does not count.
  spool_gib         = tonumber(trimsuffix(var.spool_size, "Gi"))
  ephemeral_gib     = local.spool ? 1 : local.spool_gib + 1
  termination_grace = var.prestop_seconds + var.shutdown_grace_seconds + 15

  # Every ${...} in k8s/namespace.yaml.tftpl and k8s/receiver-*.yaml.tftpl, and nothing else
  # (tests/infra checks both directions).
  receiver_template_vars = {
    namespace                 = var.namespace
    name                      = var.name
    google_service_account    = var.google_service_account_email
    image                     = var.image
    bucket                    = var.bucket
    object_prefix             = var.object_prefix
    topic                     = var.topic
    ack_after                 = var.ack_after
    max_associations          = var.max_associations
    shutdown_grace_seconds    = var.shutdown_grace_seconds
    prestop_seconds           = var.prestop_seconds
    termination_grace_seconds = local.termination_grace
    allowed_calling_aets      = join(",", var.allowed_calling_aets)
    cpu                       = var.cpu
    memory                    = var.memory
    spool_size                = var.spool_size
    ephemeral_storage         = "${local.ephemeral_gib}Gi"
    storage_class             = var.storage_class
    load_balancer_ip          = local.ip
    allow_global_access       = tostring(var.allow_global_access)
    source_ranges             = jsonencode(var.source_ranges)
    source_peers              = jsonencode([for r in var.source_ranges : { ipBlock = { cidr = r } }])
    workload_kind             = local.spool ? "StatefulSet" : "Deployment"
    headless_service          = "${var.name}-headless"
    min_replicas              = var.min_replicas
    max_replicas              = max(var.min_replicas, var.max_replicas)
    scale_down_policy         = local.spool ? "Disabled" : "Max"
    tls                       = local.tls
    tls_only                  = local.tls_only
    tls_secret                = local.tls ? var.tls.secret_name : ""
    tls_client_ca             = local.tls_client_ca
    tls_client_ca_secret      = local.tls_client_ca ? var.tls.client_ca_secret_name : ""
  }

  # Every ${...} in k8s/worker-*.yaml.tftpl (used only when var.worker is set).
  worker_template_vars = {
    namespace              = var.namespace
    name                   = "${var.name}-worker"
    google_service_account = try(var.worker.google_service_account_email, "")
    image                  = try(var.worker.image, "")
    replicas               = try(var.worker.replicas, 1)
    subscription           = try(var.worker.subscription, "")
    dicomweb_address       = try(var.worker.dicomweb_address, "")
    dead_letter_topic      = try(var.worker.dead_letter_topic, "")
    keep_uploaded          = tostring(try(var.worker.keep_uploaded, true))
    cpu                    = try(var.worker.cpu, "1")
    memory                 = try(var.worker.memory, "2Gi")
  }

  receiver_templates = concat(
    ["receiver-serviceaccount"],
    local.spool ? ["receiver-statefulset", "receiver-headless-service"] : ["receiver-deployment"],
    ["receiver-service", "receiver-pdb", "receiver-hpa", "receiver-networkpolicy"],
    ["receiver-podmonitoring"],
  )
  worker_templates = var.worker == null ? [] : [
    "worker-serviceaccount", "worker-deployment", "worker-pdb", "worker-networkpolicy",
    "worker-podmonitoring",
  ]

  manifests = merge(
    { for t in local.receiver_templates : t => templatefile("${local.k8s_dir}/${t}.yaml.tftpl", local.receiver_template_vars) },
    { for t in local.worker_templates : t => templatefile("${local.k8s_dir}/${t}.yaml.tftpl", local.worker_template_vars) },
  )
  namespace_manifest = templatefile("${local.k8s_dir}/namespace.yaml.tftpl", local.receiver_template_vars)
}

# The address the PACS is configured with; reserved so that it survives a re-created Service.
resource "google_compute_address" "load_balancer" {
  project      = var.project_id
  name         = "${var.name}-ilb"
  region       = var.region
  subnetwork   = var.subnetwork
  address_type = "INTERNAL"
  address      = var.load_balancer_ip
  # Left as first applied whatever the ports (2762 with var.tls): a new description replaces
  # the address, and the PACS would lose it.
  description = "Internal load balancer of the dicom-ingest receiver (DIMSE port 2575)."
}

resource "google_service_account_iam_member" "receiver_workload_identity" {
  service_account_id = var.google_service_account_name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.wi_member
}

resource "google_service_account_iam_member" "worker_workload_identity" {
  count              = var.worker == null ? 0 : 1
  service_account_id = var.worker.google_service_account_name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${var.name}-worker]"
}

resource "kubectl_manifest" "namespace" {
  count             = var.apply_manifests ? 1 : 0
  yaml_body         = local.namespace_manifest
  server_side_apply = true
}

resource "kubectl_manifest" "objects" {
  for_each          = var.apply_manifests ? local.manifests : {}
  yaml_body         = each.value
  server_side_apply = true
  wait              = true

  depends_on = [
    kubectl_manifest.namespace,
    google_service_account_iam_member.receiver_workload_identity,
    google_service_account_iam_member.worker_workload_identity,
  ]
}
