# One service account per function, with only the roles it needs.
resource "google_service_account" "fn" {
  for_each     = local.functions
  account_id   = "${var.prefix}-${replace(each.key, "_", "-")}"
  display_name = "progress monitor: ${each.key}"
}

resource "google_service_account" "pusher" {
  account_id   = "${var.prefix}-pubsub-push"
  display_name = "progress monitor: Pub/Sub push to the functions"
}

resource "google_service_account" "trigger" {
  account_id   = "${var.prefix}-eventarc"
  display_name = "progress monitor: Eventarc trigger of load_history"
}

locals {
  # function => BigQuery access on the main dataset (every function queries or writes it)
  bigquery_writers = ["extract_tags", "extract_progress", "load_history", "add_tag", "slack_command"]
  # function => topics it publishes to
  publishers = {
    extract_tags     = ["progress", "schedule_dlq"]
    extract_progress = ["progress", "progress_dlq"]
    load_history     = ["shards_dlq"]
  }
  publisher_bindings = merge([for fn, topics in local.publishers : { for t in topics : "${fn}/${t}" => { fn = fn, topic = t } }]...)
}

resource "google_project_iam_member" "bigquery_jobs" {
  for_each = toset(local.bigquery_writers)
  project  = var.project_id
  role     = "roles/bigquery.jobUser"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_bigquery_dataset_iam_member" "writer" {
  for_each   = toset(local.bigquery_writers)
  dataset_id = google_bigquery_dataset.main.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# Contact data: only the loader writes it.
resource "google_bigquery_dataset_iam_member" "restricted_writer" {
  dataset_id = google_bigquery_dataset.restricted.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.fn["load_history"].email}"
}

# extract_progress writes shards and rosters; the loader reads shards (its BigQuery load jobs run with its
# identity) and deletes merged contact files.
resource "google_storage_bucket_iam_member" "shards" {
  for_each = toset(["extract_progress", "load_history"])
  bucket   = google_storage_bucket.shards.name
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = local.publisher_bindings
  topic    = google_pubsub_topic.topic[each.value.topic].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
}

# Push subscriptions invoke the two event functions with an OIDC token of the pusher account.
resource "google_cloud_run_service_iam_member" "pusher" {
  for_each = local.push
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pusher.email}"
}

resource "google_cloud_run_service_iam_member" "trigger" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["load_history"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger.email}"
}

resource "google_project_iam_member" "trigger_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.trigger.email}"
}

# Cloud Storage publishes the finalize events Eventarc routes.
data "google_storage_project_service_account" "gcs" {}

resource "google_project_iam_member" "gcs_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# The Pub/Sub service agent moves undeliverable messages to the dead-letter topics.
locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = { for k, v in local.push : k => v.dlq }
  topic    = google_pubsub_topic.topic[each.value].name
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = local.push
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.pusher.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# Dashboards: managers read the reporting dataset; tutors also read the restricted one (contact data).
resource "google_bigquery_dataset_iam_member" "managers" {
  for_each   = toset([var.reporting.managers_group, var.reporting.tutors_group])
  dataset_id = google_bigquery_dataset.main.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = "group:${each.value}"
}

resource "google_bigquery_dataset_iam_member" "tutors" {
  dataset_id = google_bigquery_dataset.restricted.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = "group:${var.reporting.tutors_group}"
}
