# What load_history loads, and nothing else: its trigger fires for every object finalized here (functions.tf), so
# the run state lives in the state bucket below (contracts.objects.bucket_of).
resource "google_storage_bucket" "shards" {
  # checkov:skip=CKV_GCP_62: Cloud Audit Logs (Data Access) record object reads; no separate access-log bucket
  name                        = "${var.project_id}-${var.prefix}-shards"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  versioning {
    enabled = true
  }
  # Retention (docs/privacy.md): raw run objects, which name students by id, allow replaying the history for
  # raw_retention_weeks, then go. The prefixes are contracts.objects.RAW_PREFIXES["shards"] (a unit test compares
  # them); the local stack's health check applies the same rule (retention.py).
  lifecycle_rule {
    condition {
      age            = var.raw_retention_weeks * 7
      matches_prefix = ["progress/"]
    }
    action {
      type = "Delete"
    }
  }
  # Contact data is deleted by the loader once merged; anything left over goes after a day.
  lifecycle_rule {
    condition {
      age            = 1
      matches_prefix = ["contacts/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [time_sleep.apis_ready]
}

# The run state and the registries (contracts.objects.STATE_PREFIXES): rosters, lanes, carry plans and the carrying
# switch, the tutors' digest claims, the registry of erasures and the school-wide Cademi budget (rewritten every
# few seconds during a run). No trigger watches it: apart from the shards, so load_history sees only what it loads.
resource "google_storage_bucket" "state" {
  # checkov:skip=CKV_GCP_62: Cloud Audit Logs (Data Access) record object reads; no separate access-log bucket
  name                        = "${var.project_id}-${var.prefix}-state"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  versioning {
    enabled = true
  }
  # Retention as in the shards bucket: a run's rosters, lanes and carry plans name students by id (rosters, plans)
  # and go with its shards. The prefixes are contracts.objects.RAW_PREFIXES["state"]; digest claims, the carrying
  # switch and the registry of erasures are kept.
  lifecycle_rule {
    condition {
      age            = var.raw_retention_weeks * 7
      matches_prefix = ["rosters/", "lanes/", "carry/snapshot_date="]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
  # The budget's slot sequence is rewritten every few seconds: its old versions hold nothing to recover.
  lifecycle_rule {
    condition {
      num_newer_versions = 1
      matches_prefix     = ["budget/"]
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [time_sleep.apis_ready]
}

resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62: holds only the functions' source zips built from this repository
  name                        = "${var.project_id}-${var.prefix}-function-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      num_newer_versions = 3
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [time_sleep.apis_ready]
}
