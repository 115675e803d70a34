resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "iap.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "orgpolicy.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# The provider documents that an API may not be usable yet when google_project_service returns: every other
# resource waits for this instead of the enablement itself.
resource "time_sleep" "apis_ready" {
  create_duration = "90s"
  depends_on      = [google_project_service.apis]
}

# Google's service agents exist only once something asks for them: create them, so roles can be granted to
# them (a grant to an agent that does not exist yet fails), then let them propagate.
resource "google_project_service_identity" "agent" {
  provider   = google-beta
  for_each   = toset(["pubsub.googleapis.com", "iap.googleapis.com", "eventarc.googleapis.com"])
  service    = each.value
  depends_on = [time_sleep.apis_ready]
}

# Cloud Storage's agent publishes the finalize events Eventarc routes; reading it creates it.
data "google_storage_project_service_account" "gcs" {
  depends_on = [time_sleep.apis_ready]
}

resource "time_sleep" "agents_ready" {
  create_duration = "60s"
  depends_on      = [google_project_service_identity.agent, data.google_storage_project_service_account.gcs]
}

locals {
  pubsub_agent   = google_project_service_identity.agent["pubsub.googleapis.com"].member
  iap_agent      = google_project_service_identity.agent["iap.googleapis.com"].member
  eventarc_agent = google_project_service_identity.agent["eventarc.googleapis.com"].member
  gcs_agent      = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}
