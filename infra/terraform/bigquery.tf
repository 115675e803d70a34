resource "google_bigquery_dataset" "main" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; a customer key ring would be one more thing for a small school to operate
  dataset_id  = local.dataset
  location    = var.region
  description = "Learning-progress history, registry, runs and the reporting tables (no contact data)."
  # Time travel lets any reader read a table as it was (FOR SYSTEM_TIME AS OF): the minimum, so an erasure
  # holds for every reader 48 hours after it finished (docs/privacy.md), not a week.
  max_time_travel_hours = "48"
  depends_on            = [time_sleep.apis_ready]
}

resource "google_bigquery_dataset" "restricted" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; access is restricted to the tutors' group instead
  dataset_id            = local.restricted_dataset
  location              = var.region
  description           = "Restricted to tutors: students' contact data and the tutors' list."
  max_time_travel_hours = "48" # restricted: erased contact rows readable by tutors for 48 hours at most
  # Without an access list BigQuery gives every project Viewer and Editor READER and WRITER: contact data would
  # be readable project-wide. Owners only at creation; the entries below (google_bigquery_dataset_access) add
  # the rest, so the list is theirs afterwards (the provider asks for ignore_changes alongside them).
  access {
    role          = "OWNER"
    special_group = "projectOwners"
  }
  lifecycle {
    ignore_changes = [access]
  }
  depends_on = [time_sleep.apis_ready]
}

# The restricted dataset's access list, entry by entry. Its grants are dataset access entries, never
# google_bigquery_dataset_iam_member: the provider documents that those remove a dataset's authorized views.
# (Never change the dataset's own attributes in the same apply as its entries: the provider's note.)
resource "google_bigquery_dataset_access" "restricted_loader" {
  dataset_id    = google_bigquery_dataset.restricted.dataset_id
  role          = "WRITER" # roles/bigquery.dataEditor: contacts are merged through staging tables
  user_by_email = google_service_account.fn["load_history"].email
  # BigQuery may refuse a service account created seconds ago ("does not exist") and this entry is not retried
  depends_on = [time_sleep.accounts_ready]
}

resource "google_bigquery_dataset_access" "restricted_tutors" {
  dataset_id     = google_bigquery_dataset.restricted.dataset_id
  role           = "READER" # roles/bigquery.dataViewer: the tutors' list and contact data, in Looker Studio
  group_by_email = var.reporting.tutors_group
}

# The tutors' Slack agent (notify_tutors) shows students' names and nothing else of their contact data: it
# reads them through this authorized view, in a dataset of its own, and holds no access to the restricted one.
resource "google_bigquery_dataset" "slack" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption, as for the other datasets; it holds one view, no data
  dataset_id            = local.slack_dataset
  location              = var.region
  description           = "What the tutors' Slack agent may read of contact data: the students' names (an authorized view)."
  max_time_travel_hours = "48"
  # Owners only, as for the restricted dataset: project Viewers would otherwise read the names through the view.
  access {
    role          = "OWNER"
    special_group = "projectOwners"
  }
  depends_on = [time_sleep.apis_ready]
}

# The Slack agent's staging tables (tutors/records.py): a tutor's click and a digest's record reach BigQuery by a
# load job into a table here, then a MERGE without parameters, so BigQuery's job history never keeps a student's
# id beside values an erasure leaves. Its own dataset: writing here grants nothing elsewhere (on the Slack
# dataset, table writes could replace the authorized view). A table lives for seconds; one left by a task that
# died expires after a day, and the next erasure drops it after an hour.
resource "google_bigquery_dataset" "slack_staging" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption, as for the other datasets; tables here live for seconds
  dataset_id                  = local.slack_staging_dataset
  location                    = var.region
  description                 = "The tutors' Slack agent's staging tables (seconds each): clicks and digests' records on their way to the history."
  max_time_travel_hours       = "48"
  default_table_expiration_ms = 86400000
  # Owners only, then the agent's entry (below): no project-wide readers of what is staged.
  access {
    role          = "OWNER"
    special_group = "projectOwners"
  }
  lifecycle {
    ignore_changes = [access]
  }
  depends_on = [time_sleep.apis_ready]
}

# The agent's grant as an access entry, like the restricted dataset's: the provider documents that dataset IAM
# members and the dataset's `access` fight over the list. (Never change the dataset's own attributes in the
# same apply as its entries: the provider's note.)
resource "google_bigquery_dataset_access" "slack_staging_agent" {
  dataset_id    = google_bigquery_dataset.slack_staging.dataset_id
  role          = "WRITER" # roles/bigquery.dataEditor: creates, loads, reads and drops its staging tables
  user_by_email = google_service_account.fn["notify_tutors"].email
  # BigQuery may refuse a service account created seconds ago ("does not exist") and this entry is not retried
  depends_on = [time_sleep.accounts_ready]
}

resource "google_bigquery_table" "student_names" {
  # checkov:skip=CKV_GCP_80: a view stores no data
  dataset_id          = google_bigquery_dataset.slack.dataset_id
  table_id            = "student_names"
  deletion_protection = true
  view {
    use_legacy_sql = false
    query = templatefile("${local.repo_root}/src/progress_monitor/sql/student_names.sql", {
      students = "${var.project_id}.${local.restricted_dataset}.students"
    })
  }
  depends_on = [google_bigquery_table.table["students"]]
}

resource "google_bigquery_dataset_access" "student_names" {
  dataset_id = google_bigquery_dataset.restricted.dataset_id
  view {
    project_id = google_bigquery_table.student_names.project
    dataset_id = google_bigquery_table.student_names.dataset_id
    table_id   = google_bigquery_table.student_names.table_id
  }
  # BigQuery's API: a view updated by anyone must be authorized again; a new query re-creates the entry.
  lifecycle {
    replace_triggered_by = [google_bigquery_table.student_names]
  }
}

# Tables from the same schema files the code and the tests use.
resource "google_bigquery_table" "table" {
  # checkov:skip=CKV_GCP_80: Google-managed encryption, as for the datasets (see there)
  for_each            = local.schemas
  dataset_id          = contains(local.restricted_tables, each.key) ? google_bigquery_dataset.restricted.dataset_id : google_bigquery_dataset.main.dataset_id
  table_id            = each.key
  description         = each.value.description
  schema              = jsonencode(each.value.fields)
  clustering          = lookup(each.value, "clustering", null)
  deletion_protection = true

  dynamic "time_partitioning" {
    for_each = lookup(each.value, "partition_field", null) == null ? [] : [each.value.partition_field]
    content {
      type  = "DAY"
      field = time_partitioning.value
    }
  }
}

# Run health reads only the runs table, so Terraform can create it; the other reporting objects
# (report_* tables, tutor_list) are (re)built by the pipeline after each run from the same SQL files.
resource "google_bigquery_table" "run_health" {
  # checkov:skip=CKV_GCP_80: a view stores no data; Google-managed encryption as for the datasets
  dataset_id          = google_bigquery_dataset.main.dataset_id
  table_id            = "report_run_health"
  deletion_protection = true
  view {
    use_legacy_sql = false
    query = templatefile("${local.repo_root}/src/progress_monitor/sql/report_run_health.sql", {
      runs     = "${var.project_id}.${local.dataset}.runs"
      failures = "${var.project_id}.${local.dataset}.failures"
    })
  }
  depends_on = [google_bigquery_table.table]
}
