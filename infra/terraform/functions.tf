# Each function's zip is built by Terraform itself: its main.py, the shared package and the pinned
# requirements. The object name carries the zip's hash, so any change redeploys.
data "archive_file" "function" {
  for_each    = local.functions
  type        = "zip"
  output_path = "${path.module}/.build/${each.key}.zip"

  source {
    content  = file("${local.repo_root}/functions/${each.value.source}/main.py")
    filename = "main.py"
  }
  source {
    content  = file("${local.repo_root}/functions/requirements.txt")
    filename = "requirements.txt"
  }
  dynamic "source" {
    for_each = local.package_files
    content {
      content  = file("${local.repo_root}/src/progress_monitor/${source.value}")
      filename = "progress_monitor/${source.value}"
    }
  }
}

resource "google_storage_bucket_object" "function" {
  for_each = local.functions
  name     = "${each.key}-${data.archive_file.function[each.key].output_md5}.zip"
  bucket   = google_storage_bucket.sources.name
  source   = data.archive_file.function[each.key].output_path
}

resource "google_cloudfunctions2_function" "fn" {
  # checkov:skip=CKV_GCP_124: only slack_command and slack_actions allow all ingress (Slack calls them from the internet, signed); the event functions are internal-only and add_tag sits behind the IAP load balancer
  for_each = local.functions
  name     = local.function_names[each.key]
  location = var.region

  build_config {
    runtime         = "python311"
    entry_point     = each.value.entry_point
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function[each.key].name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.fn[each.key].email
    timeout_seconds       = each.value.timeout
    available_memory      = each.value.memory
    available_cpu         = each.key == "extract_progress" ? "1" : "0.583"
    # extract_progress: one instance whose concurrent pieces are the run's lanes. The Cademi budget does not
    # rest on this cap (Cloud Run may briefly exceed it): every call takes a slot from the shared budget object.
    max_instance_count               = each.key == "extract_progress" ? local.progress_instances : 3
    max_instance_request_concurrency = each.key == "extract_progress" ? var.extraction.concurrent_pieces : 1
    # The form is reachable only through the IAP load balancer; the Slack endpoint is public (signed).
    # Pub/Sub push and Eventarc from this project count as internal traffic.
    ingress_settings = lookup({ add_tag = "ALLOW_INTERNAL_AND_GCLB", slack_command = "ALLOW_ALL", slack_actions = "ALLOW_ALL" }, each.key, "ALLOW_INTERNAL_ONLY")
    environment_variables = merge(
      local.common_env,
      contains(["add_tag"], each.key) ? local.form_env : {},
      contains(["slack_command", "slack_actions", "notify_tutors"], each.key) ? local.slack_env : {},
    )
  }

  # The loader is triggered by Cloud Storage object finalization (Eventarc), retried on failure.
  dynamic "event_trigger" {
    for_each = each.key == "load_history" ? [1] : []
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.storage.object.v1.finalized"
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.trigger.email
      event_filters {
        attribute = "bucket"
        value     = google_storage_bucket.shards.name
      }
    }
  }

  # Everything a function needs at its build or first request is granted first and has propagated
  # (time_sleep.grants_ready, iam.tf): the builder's roles, its own account's roles and secrets, and (for
  # load_history's Eventarc trigger, created with the function) the whole event chain. The tables exist with
  # their current schema first: a new version's queries name their new columns (e.g. failures.attempts).
  depends_on = [
    time_sleep.apis_ready,
    time_sleep.agents_ready,
    time_sleep.grants_ready,
    google_bigquery_table.table,
  ]

  # Cloud Functions adds LOG_EXECUTION_ID=true to every gen2 function's environment: without this, every plan
  # would show it being removed again (a permanent diff on every function).
  lifecycle {
    ignore_changes = [service_config[0].environment_variables["LOG_EXECUTION_ID"]]
  }
}
