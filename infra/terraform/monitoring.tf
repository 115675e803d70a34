resource "google_monitoring_notification_channel" "email" {
  for_each     = toset(var.alert_emails)
  display_name = "progress monitor: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }
  depends_on = [time_sleep.apis_ready]
}

# A weekly run failed: any permanent failure (dead-lettered message) or function error.
resource "google_monitoring_alert_policy" "run_failed" {
  display_name          = "${var.prefix}: weekly progress run failed"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  conditions {
    display_name = "ERROR logged by a pipeline function"
    condition_matched_log {
      filter = <<-EOT
        resource.type="cloud_run_revision"
        resource.labels.service_name=~"^${var.prefix}-(extract-tags|extract-progress|load-history|notify-tutors|record-failures)$"
        severity>=ERROR
      EOT
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
    auto_close = "604800s"
  }
  documentation {
    content = "See the run health page and the dead-letter subscriptions (*-dlq-sub); docs/operations.md (Alerts, Dead letters)."
  }
  depends_on = [time_sleep.apis_ready]
}

# Data older than 8 days. Metric-absence alerts cannot wait longer than 23.5 hours, so the check is made in
# code: a daily scheduler message asks extract_tags for a health check, which logs "progress data is stale"
# at ERROR when the last successful run finished more than 8 days ago.
resource "google_cloud_scheduler_job" "daily_health" {
  name      = "${var.prefix}-daily-health-check"
  schedule  = "0 9 * * *"
  time_zone = var.schedule.time_zone
  region    = var.region
  pubsub_target {
    topic_name = google_pubsub_topic.topic["schedule"].id
    data       = base64encode(jsonencode({ health_check = true }))
  }
  depends_on = [time_sleep.apis_ready]
}

resource "google_monitoring_alert_policy" "data_stale" {
  display_name          = "${var.prefix}: progress data older than 8 days"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  conditions {
    display_name = "health check found stale data"
    condition_matched_log {
      filter = <<-EOT
        resource.type="cloud_run_revision"
        jsonPayload.message=~"^progress data is stale"
      EOT
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "86400s"
    }
    auto_close = "604800s"
  }
  depends_on = [time_sleep.apis_ready]
}

# A message dead-lettered by Pub/Sub itself (its delivery attempts ran out) logs nothing in our code, so the
# ERROR alert above never sees it: alert on what reaches the dead-letter subscriptions instead. Our own
# dead-lettering (a permanent failure) lands there too.
resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "${var.prefix}: messages dead-lettered"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  conditions {
    display_name = "a dead-letter subscription holds messages"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.label.subscription_id = one_of(${join(", ", [for s in google_pubsub_subscription.dead_letters : "\"${s.name}\""])})"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
  conditions {
    display_name = "Pub/Sub gave up delivering a message"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND resource.label.subscription_id = one_of(${join(", ", [for s in google_pubsub_subscription.push : "\"${s.name}\""])})"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }
  alert_strategy {
    auto_close = "604800s"
  }
  documentation {
    content = "Read the messages and their `reason` attribute on the *-dlq-sub subscriptions; docs/operations.md (Alerts, Dead letters)."
  }
  depends_on = [time_sleep.apis_ready]
}

# Cademi refused a call for its rate: the budget held by construction should make this never happen, so any
# breach is worth a look (the run slows down by itself; breaches per run are in run health).
resource "google_monitoring_alert_policy" "rate_breach" {
  display_name          = "${var.prefix}: Cademi rate limit breached"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
  conditions {
    display_name = "a function logged a Cademi 429"
    condition_matched_log {
      filter = <<-EOT
        resource.type="cloud_run_revision"
        resource.labels.service_name=~"^${var.prefix}-"
        jsonPayload.message=~"^Cademi rate limit breached"
      EOT
    }
  }
  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
    auto_close = "604800s"
  }
  documentation {
    content = "Run health shows rate_limited per run. Check CADEMI_RATE_PER_SECOND and whether another system uses the school's API key."
  }
  depends_on = [time_sleep.apis_ready]
}
