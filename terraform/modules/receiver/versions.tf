terraform {
  required_version = ">= 1.5, < 2.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.14"
    }
    # Applies the rendered k8s/ manifests. Unlike kubernetes_manifest it needs no cluster API at
    # plan time, so one `terraform apply` can create the cluster and deploy into it. 2.4.0 or later,
    # configured with lazy_load = true by the root module (terraform/envs/example).
    kubectl = {
      source  = "alekc/kubectl"
      version = ">= 2.4.0, < 3.0.0"
    }
  }
}
