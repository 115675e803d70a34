# One service account per function, with exactly the access its code uses (tests/test_terraform_iam.py holds
# this file against a table of every Google API call each function makes).
resource "google_service_account" "fn" {
  for_each     = local.functions
  account_id   = "${var.prefix}-${replace(each.key, "_", "-")}"
  display_name = "progress monitor: ${each.key}"
  depends_on   = [time_sleep.apis_ready]
}

# A fresh service account is refused for a while by services that check members themselves (BigQuery's
# dataset access entries: "service account ... does not exist"); what grants through them waits for this.
resource "time_sleep" "accounts_ready" {
  # Google: IAM changes "typically" take 2 minutes; the provider does not retry "does not exist" (its PR
  # #26429, open; #26430 measured 30-120 s). Every grant to an account created here waits for this.
  create_duration = "120s"
  depends_on      = [google_service_account.fn, google_service_account.pusher, google_service_account.trigger, google_service_account.builder]
}

# Upgrades from before the authorized view: these grants lost their for_each key (the restricted dataset's
# grants became dataset access entries, bigquery.tf); see docs/deploy.md#upgrading-to-the-authorized-view.
moved {
  from = google_bigquery_dataset_iam_member.loader["main"]
  to   = google_bigquery_dataset_iam_member.loader
}

moved {
  from = google_bigquery_dataset_iam_member.tutors_agent["main"]
  to   = google_bigquery_dataset_iam_member.tutors_agent
}

resource "google_service_account" "pusher" {
  account_id   = "${var.prefix}-pubsub-push"
  display_name = "progress monitor: Pub/Sub push to the functions"
  depends_on   = [time_sleep.apis_ready]
}

resource "google_service_account" "trigger" {
  account_id   = "${var.prefix}-eventarc"
  display_name = "progress monitor: Eventarc trigger of load_history"
  depends_on   = [time_sleep.apis_ready]
}

# Builds the functions' images. New projects' default build identity may lack these roles (organisations that
# enforce iam.automaticIamGrantsForDefaultServiceAccounts), so the build runs as an account of our own.
resource "google_service_account" "builder" {
  account_id   = "${var.prefix}-builder"
  display_name = "progress monitor: builds the functions"
  depends_on   = [time_sleep.apis_ready]
}

resource "google_project_iam_member" "builder" {
  for_each   = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"])
  project    = var.project_id
  role       = each.value
  member     = google_service_account.builder.member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_storage_bucket_iam_member" "builder_sources" {
  bucket     = google_storage_bucket.sources.name
  role       = "roles/storage.objectViewer"
  member     = google_service_account.builder.member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

locals {
  # BigQuery, table by table: what each function's queries read and write. load_history alone creates tables
  # (its staging tables, and the reporting tables it rebuilds), so it alone holds dataEditor on the datasets.
  table_readers = {
    extract_tags     = ["registered_tags", "tracks", "loads"]
    extract_progress = ["loads", "progress_history"] # progress_history: carrying's earlier observations
    record_failures  = ["loads"]                     # runs.refresh_run derives the run's counters from the ledger
    add_tag          = ["tracks"]
    slack_command    = ["tracks"]
  }
  table_writers = {
    extract_tags     = ["runs", "failures", "students"] # students: the daily check deletes stale contact data
    extract_progress = ["runs", "failures"]
    add_tag          = ["registered_tags"]
    slack_command    = ["registered_tags", "slack_channels"]
    notify_tutors    = ["runs", "failures", "slack_digests", "tutor_actions"]
    record_failures  = ["runs", "failures"]
  }
  # Every function but the interactions endpoint (which only verifies and publishes) runs BigQuery jobs.
  bigquery_functions = [for k in keys(local.functions) : k if k != "slack_actions"]
  table_bindings = merge(
    merge([for fn, tables in local.table_readers : { for t in tables : "${fn}/${t}/read" => { fn = fn, table = t, role = "roles/bigquery.dataViewer" } }]...),
    merge([for fn, tables in local.table_writers : { for t in tables : "${fn}/${t}/write" => { fn = fn, table = t, role = "roles/bigquery.dataEditor" } }]...),
  )
  # function => topics it publishes to
  publishers = {
    extract_tags     = ["progress", "schedule_dlq", "shard_reloads", "slack_tasks"] # the daily resume of lost load events and digests
    extract_progress = ["progress", "progress_dlq"]
    load_history     = ["shards_dlq", "slack_tasks"] # slack_tasks: the run's digests, once its reports are rebuilt
    slack_command    = ["slack_tasks"]               # /turma alunos, answered by notify_tutors
    slack_actions    = ["slack_tasks"]               # a tutor's click
    notify_tutors    = ["slack_tasks_dlq"]
  }
  publisher_bindings = merge([for fn, topics in local.publishers : { for t in topics : "${fn}/${t}" => { fn = fn, topic = t } }]...)
  # The shards bucket (progress shards, contacts files): extract_tags lists it and reads object metadata (the
  # daily resume of stalled runs and reconciliation); extract_progress reads and creates objects (create-once: it
  # never overwrites or deletes); the loader reads them (its load jobs run with its identity) and deletes merged
  # contact files (below).
  bucket_bindings = {
    "extract_tags/viewer"      = { fn = "extract_tags", role = "roles/storage.objectViewer" }
    "extract_progress/viewer"  = { fn = "extract_progress", role = "roles/storage.objectViewer" }
    "extract_progress/creator" = { fn = "extract_progress", role = "roles/storage.objectCreator" }
    "load_history/viewer"      = { fn = "load_history", role = "roles/storage.objectViewer" }
  }
  # The state bucket (run state and registries): extract_tags reads and creates a run's lane objects;
  # extract_progress its rosters, lanes and carry plans, and reads the registry of erasures (create-once). The
  # digest claims and the Cademi budget object, the ones rewritten, are granted on their own (below).
  state_bindings = {
    "extract_tags/viewer"      = { fn = "extract_tags", role = "roles/storage.objectViewer" }
    "extract_tags/creator"     = { fn = "extract_tags", role = "roles/storage.objectCreator" }
    "extract_progress/viewer"  = { fn = "extract_progress", role = "roles/storage.objectViewer" }
    "extract_progress/creator" = { fn = "extract_progress", role = "roles/storage.objectCreator" }
  }
}

resource "google_project_iam_member" "bigquery_jobs" {
  for_each   = toset(local.bigquery_functions)
  project    = var.project_id
  role       = "roles/bigquery.jobUser"
  member     = google_service_account.fn[each.key].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_bigquery_table_iam_member" "table" {
  for_each   = local.table_bindings
  dataset_id = google_bigquery_table.table[each.value.table].dataset_id
  table_id   = google_bigquery_table.table[each.value.table].table_id
  role       = each.value.role
  member     = google_service_account.fn[each.value.fn].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

# The loader: staging tables and the whole history in the main dataset; contact data (and its staging
# tables) only in the restricted one (google_bigquery_dataset_access.restricted_loader, bigquery.tf).
resource "google_bigquery_dataset_iam_member" "loader" {
  dataset_id = google_bigquery_dataset.main.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.fn["load_history"].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

# notify_tutors reads the reporting tables (rebuilt by the loader, so not Terraform's to grant one by one):
# read-only on the main dataset. Of contact data it reads only names, through the authorized view.
resource "google_bigquery_dataset_iam_member" "tutors_agent" {
  dataset_id = google_bigquery_dataset.main.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.fn["notify_tutors"].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_bigquery_table_iam_member" "student_names" {
  dataset_id = google_bigquery_table.student_names.dataset_id
  table_id   = google_bigquery_table.student_names.table_id
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.fn["notify_tutors"].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

# The digest claims (tutors/digest.py), in the state bucket: created once, rewritten with the message's ts,
# released after a Slack outage. objectUser on the slack/ prefix only.
resource "google_storage_bucket_iam_member" "digest_claims" {
  bucket = google_storage_bucket.state.name
  role   = "roles/storage.objectUser"
  member = google_service_account.fn["notify_tutors"].member
  condition {
    title      = "digest-claims-only"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.state.name}/objects/slack/\")"
  }
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_storage_bucket_iam_member" "shards" {
  for_each   = local.bucket_bindings
  bucket     = google_storage_bucket.shards.name
  role       = each.value.role
  member     = google_service_account.fn[each.value.fn].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_storage_bucket_iam_member" "state" {
  for_each   = local.state_bindings
  bucket     = google_storage_bucket.state.name
  role       = each.value.role
  member     = google_service_account.fn[each.value.fn].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

# Deleting merged contact files: a role with only storage.objects.delete, limited to the contacts/ prefix.
resource "google_project_iam_custom_role" "contacts_deleter" {
  role_id     = "${replace(var.prefix, "-", "_")}_contacts_deleter"
  title       = "progress monitor: delete merged contact files"
  permissions = ["storage.objects.delete"]
  depends_on  = [time_sleep.apis_ready]
}

resource "google_storage_bucket_iam_member" "loader_contacts" {
  bucket = google_storage_bucket.shards.name
  role   = google_project_iam_custom_role.contacts_deleter.id
  member = google_service_account.fn["load_history"].member
  condition {
    title      = "contacts-only"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.shards.name}/objects/contacts/\")"
  }
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

# The school-wide Cademi budget (cademi/budget.py): every function that calls Cademi rewrites one object, conditioned
# on its generation, in the state bucket. objectUser (read, create, overwrite) on that object's name only.
resource "google_storage_bucket_iam_member" "cademi_budget" {
  for_each = toset(["extract_progress", "add_tag", "slack_command"])
  bucket   = google_storage_bucket.state.name
  role     = "roles/storage.objectUser"
  member   = google_service_account.fn[each.key].member
  condition {
    title      = "cademi-budget-object"
    expression = "resource.name == \"projects/_/buckets/${google_storage_bucket.state.name}/objects/budget/cademi.json\""
  }
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each   = local.publisher_bindings
  topic      = google_pubsub_topic.topic[each.value.topic].name
  role       = "roles/pubsub.publisher"
  member     = google_service_account.fn[each.value.fn].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

# Push subscriptions invoke the three event functions with an OIDC token of the pusher account.
resource "google_cloud_run_service_iam_member" "pusher" {
  for_each = local.push
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.pusher.member
}

# Every dead-letter topic pushes to record_failures with the same pusher identity.
resource "google_cloud_run_service_iam_member" "recorder" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["record_failures"].name
  role     = "roles/run.invoker"
  member   = google_service_account.pusher.member
}

# The Eventarc chain of load_history: Cloud Storage's agent publishes to Eventarc's topic, and the trigger's
# identity receives events and invokes the function. Eventarc's own agent is granted its role below.
resource "google_project_iam_member" "gcs_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = local.gcs_agent
  # a role cannot be granted to an agent before it has propagated
  depends_on = [time_sleep.agents_ready]
}

resource "google_project_iam_member" "trigger_receiver" {
  project    = var.project_id
  role       = "roles/eventarc.eventReceiver"
  member     = google_service_account.trigger.member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_cloud_run_service_iam_member" "trigger" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["load_history"].name
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# The Pub/Sub service agent moves undeliverable messages to the dead-letter topics (publisher there,
# subscriber on the source subscription) and signs the push subscriptions' OIDC tokens.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = { for k, v in local.push : k => v.dlq }
  topic    = google_pubsub_topic.topic[each.value].name
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_agent
  # a role cannot be granted to an agent before it has propagated
  depends_on = [time_sleep.agents_ready]
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = local.push
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
  depends_on   = [time_sleep.agents_ready]
}

resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.pusher.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
  depends_on         = [time_sleep.agents_ready]
}

# Dashboards: managers read the reporting dataset; tutors also read the restricted one (contact data).
resource "google_bigquery_dataset_iam_member" "managers" {
  for_each   = toset([var.reporting.managers_group, var.reporting.tutors_group])
  dataset_id = google_bigquery_dataset.main.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = "group:${each.value}"
}

# The tutors' group also reads the restricted dataset: google_bigquery_dataset_access.restricted_tutors.

# Eventarc's service agent, created on request (apis.tf), gets no role by itself: without this one the
# trigger cannot be created ("service agent ... does not have the role").
resource "google_project_iam_member" "eventarc_agent" {
  # checkov:skip=CKV_GCP_49: the grant Google documents for its own Eventarc service agent; no user or function account gets it
  project = var.project_id
  role    = "roles/eventarc.serviceAgent"
  member  = local.eventarc_agent
  # a role cannot be granted to an agent before it has propagated
  depends_on = [time_sleep.agents_ready]
}

# Gen2 copies each function's source into Google's gcf-v2-sources-<project number>-<region> bucket, and the
# build reads it from there as the builder account ("Access to bucket gcf-v2-sources-... denied" otherwise).
# The bucket is created by the first deployment, so the grant is project-level, conditioned on its name.
resource "google_project_iam_member" "builder_gcf_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.builder.member
  condition {
    title      = "gcf-v2-sources-only"
    expression = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\")"
  }
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

# IAM is eventually consistent: a role granted to a fresh account or agent may be refused for a minute or
# more. The functions (their build, their first request, load_history's trigger) wait for every grant they
# use; the provider's own custom-builder example waits 60 s.
resource "time_sleep" "grants_ready" {
  create_duration = "60s"
  depends_on = [
    google_project_iam_member.builder,
    google_project_iam_member.builder_gcf_sources,
    google_storage_bucket_iam_member.builder_sources,
    google_project_iam_member.bigquery_jobs,
    google_bigquery_table_iam_member.table,
    google_bigquery_dataset_iam_member.loader,
    google_bigquery_dataset_iam_member.tutors_agent,
    google_bigquery_dataset_access.slack_staging_agent,
    google_bigquery_table_iam_member.student_names,
    google_bigquery_dataset_access.restricted_loader,
    google_bigquery_dataset_access.student_names,
    google_storage_bucket_iam_member.digest_claims,
    google_storage_bucket_iam_member.shards,
    google_storage_bucket_iam_member.state,
    google_storage_bucket_iam_member.loader_contacts,
    google_storage_bucket_iam_member.cademi_budget,
    google_pubsub_topic_iam_member.publisher,
    google_secret_manager_secret_iam_member.reader,
    google_project_iam_member.gcs_publisher,
    google_project_iam_member.trigger_receiver,
    google_project_iam_member.eventarc_agent,
  ]
}

# The push subscriptions start delivering at once: they wait until the push identity may invoke its
# functions and the Pub/Sub agent may sign its tokens and publish to the dead-letter topics.
resource "time_sleep" "invokers_ready" {
  create_duration = "60s"
  depends_on = [
    google_cloud_run_service_iam_member.pusher,
    google_cloud_run_service_iam_member.recorder,
    google_service_account_iam_member.pubsub_token_creator,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}
