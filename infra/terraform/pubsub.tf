resource "google_pubsub_topic" "topic" {
  # checkov:skip=CKV_GCP_83: messages carry ids only (no personal data; a slash command's response_url expires in 30 minutes); Google-managed encryption
  for_each                   = local.topics
  name                       = each.value
  message_retention_duration = "604800s"
  depends_on                 = [time_sleep.apis_ready]
}

# extract_tags and extract_progress are pushed by our own subscriptions (as in the local stack), so each has
# a retry policy, a dead-letter topic and an ack deadline longer than the function's timeout. The push path names the topic,
# which functions-framework turns into the CloudEvent source. load_history is triggered by Eventarc, and also
# pushed from shard_reloads, where the health check re-sends a lost event (in Cloud Storage's notification shape).
locals {
  push = {
    extract_tags     = { topic = "schedule", dlq = "schedule_dlq", ack = 180 } # > its 120 s timeout
    extract_progress = { topic = "progress", dlq = "progress_dlq", ack = 600 }
    load_history     = { topic = "shard_reloads", dlq = "shards_dlq", ack = 600 }
    notify_tutors    = { topic = "slack_tasks", dlq = "slack_tasks_dlq", ack = 180 } # > its 120 s timeout
  }
}

resource "google_pubsub_subscription" "push" {
  for_each             = local.push
  name                 = "${local.function_names[each.key]}-push"
  topic                = google_pubsub_topic.topic[each.value.topic].id
  ack_deadline_seconds = each.value.ack
  push_config {
    push_endpoint = "${google_cloudfunctions2_function.fn[each.key].service_config[0].uri}/projects/${var.project_id}/topics/${local.topics[each.value.topic]}"
    oidc_token {
      service_account_email = google_service_account.pusher.email
      # Pub/Sub's default audience is the push endpoint, path included; Cloud Run checks its service URL.
      audience = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    }
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.topic[each.value.dlq].id
    max_delivery_attempts = 5
  }
  expiration_policy {
    ttl = ""
  }
  depends_on = [time_sleep.invokers_ready]
}

# Every dead-letter topic keeps its messages in a pull subscription for the operator.
resource "google_pubsub_subscription" "dead_letters" {
  for_each                   = { for k, v in local.topics : k => v if endswith(k, "_dlq") }
  name                       = "${each.value}-sub"
  topic                      = google_pubsub_topic.topic[each.key].id
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = ""
  }
}

# Every dead-letter topic also pushes to record_failures (progress_monitor/stages/record_failures.py), which records each
# message in `failures` at once: a message Pub/Sub gave up on after its attempts shows in run health within a
# minute instead of at the next daily health check. Retried with backoff (a BigQuery hiccup), never
# dead-lettered itself; the ack deadline is longer than the recorder's 60 s timeout.
resource "google_pubsub_subscription" "dead_letter_records" {
  for_each             = { for k, v in local.topics : k => v if endswith(k, "_dlq") }
  name                 = "${each.value}-record"
  topic                = google_pubsub_topic.topic[each.key].id
  ack_deadline_seconds = 90
  push_config {
    push_endpoint = "${google_cloudfunctions2_function.fn["record_failures"].service_config[0].uri}/projects/${var.project_id}/topics/${each.value}"
    oidc_token {
      service_account_email = google_service_account.pusher.email
      audience              = google_cloudfunctions2_function.fn["record_failures"].service_config[0].uri
    }
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
  expiration_policy {
    ttl = ""
  }
  depends_on = [time_sleep.invokers_ready]
}
