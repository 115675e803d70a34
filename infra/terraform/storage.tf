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
  # raw_retention_weeks, then go. The prefixes are contracts.objects.RAW_PREFIXES (a unit test compares them);
  # the local stack's health check applies the same rule (retention.py).
  lifecycle_rule {
    condition {
      age            = var.raw_retention_weeks * 7
      matches_prefix = ["progress/", "rosters/", "lanes/", "carry/snapshot_date="]
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

# The school-wide Cademi budget (cademi/budget.py): one object rewritten every few seconds during a run. Apart from
# the shards so that load_history, triggered by every object finalized in the shards bucket, sees only what it
# loads; no versioning, since every rewrite would keep a noncurrent copy.
resource "google_storage_bucket" "budget" {
  # checkov:skip=CKV_GCP_62: holds one object, the rate budget's slot sequence, no personal data
  # checkov:skip=CKV_GCP_78: the object is a counter rewritten every few seconds; old versions hold nothing to recover
  name                        = "${var.project_id}-${var.prefix}-budget"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  depends_on                  = [time_sleep.apis_ready]
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
