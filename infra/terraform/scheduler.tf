resource "google_cloud_scheduler_job" "weekly" {
  name        = "${var.prefix}-weekly-run"
  description = "Fires the weekly extraction (extract_tags derives the run from the publish time)."
  schedule    = var.schedule.cron
  time_zone   = var.schedule.time_zone
  region      = var.region
  pubsub_target {
    topic_name = google_pubsub_topic.topic["schedule"].id
    data       = base64encode("{}")
  }
  depends_on = [time_sleep.apis_ready]
}
