terraform {
  required_version = ">= 1.6"
  required_providers {
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4"
    }
    # Pinned to the release whose schema `make test` checks every block against (tests/tf_schema.py reads it
    # from cdktn-provider-google 21.1.0, built from 8.7.0): the check and a real `terraform init` agree.
    google = {
      source  = "hashicorp/google"
      version = "8.7.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "8.7.0"
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.12"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

# Only for google_project_service_identity (creating Google's service agents on demand).
provider "google-beta" {
  project = var.project_id
  region  = var.region
}
