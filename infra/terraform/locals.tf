locals {
  repo_root = "${path.module}/../.."
  # Every file of the shared package goes into every function's zip (no symlinks, no second import root).
  package_files = fileset("${local.repo_root}/src/progress_monitor", "**/*.{py,json,sql,html}")

  # name => source folder under functions/, entry point, timeout, memory
  functions = {
    extract_tags     = { source = "extract_tags", entry_point = "extract_tags", timeout = 120, memory = "256Mi" }
    extract_progress = { source = "extract_progress", entry_point = "extract_progress", timeout = var.extraction.timeout_s, memory = var.extraction.memory }
    load_history     = { source = "load_history", entry_point = "load_history", timeout = 540, memory = "512Mi" }
    add_tag          = { source = "add_tag", entry_point = "add_tag", timeout = 60, memory = "256Mi" }
    slack_command    = { source = "add_tag", entry_point = "slack_command", timeout = 30, memory = "256Mi" }
    # slack_actions: Slack's interactivity URL (the buttons under a digest), and
    # notify_tutors: the worker posting digests, recording clicks and answering /turma alunos.
    slack_actions = { source = "slack_actions", entry_point = "slack_actions", timeout = 30, memory = "256Mi" }
    notify_tutors = { source = "notify_tutors", entry_point = "notify_tutors", timeout = 120, memory = "256Mi" }
    # record_failures: every dead-letter topic pushes here; each message gets its `failures` row at once.
    record_failures = { source = "record_failures", entry_point = "record_failures", timeout = 60, memory = "256Mi" }
  }
  # extract_progress's instance cap bounds its slots (lanes), not the Cademi rate: the school-wide budget is
  # one slot sequence in the state bucket (cademi/budget.py), held however many instances run.
  progress_instances = 1
  function_names     = { for k, v in local.functions : k => "${var.prefix}-${replace(k, "_", "-")}" }

  topics = {
    schedule     = "${var.prefix}-weekly-schedule"
    progress     = "${var.prefix}-progress-tasks"
    schedule_dlq = "${var.prefix}-weekly-schedule-dlq"
    progress_dlq = "${var.prefix}-progress-tasks-dlq"
    shards_dlq   = "${var.prefix}-shard-events-dlq"
    # The daily health check re-sends here a shard whose Eventarc event was lost; pushed to load_history.
    shard_reloads = "${var.prefix}-shard-reloads"
    # Digests after a run, tutors' clicks and class list requests, for notify_tutors.
    slack_tasks     = "${var.prefix}-slack-tasks"
    slack_tasks_dlq = "${var.prefix}-slack-tasks-dlq"
  }

  # The datasets beside the history are named after it: the settings object derives them by the same rule
  # when BQ_RESTRICTED_DATASET / BQ_SLACK_DATASET / BQ_SLACK_STAGING_DATASET are not set (settings.py).
  dataset            = replace("${var.prefix}_progress", "-", "_")
  restricted_dataset = "${local.dataset}_restricted"
  slack_dataset      = "${local.dataset}_slack"
  # the Slack agent's staging tables (tutors/records.py)
  slack_staging_dataset = "${local.dataset}_slack_staging"
  tables = [
    "tracks", "registered_tags", "students", "progress_history", "runs", "loads", "failures", "slack_channels",
    "slack_digests", "tutor_actions",
  ]
  restricted_tables = ["students"]
  schemas           = { for t in local.tables : t => jsondecode(file("${local.repo_root}/src/progress_monitor/schemas/${t}.json")) }

  secrets = {
    CADEMI_API_KEY       = "cademi-api-key"
    SLACK_SIGNING_SECRET = "slack-signing-secret"
    FORM_CSRF_SECRET     = "form-csrf-secret"
    SLACK_BOT_TOKEN      = "slack-bot-token"
    # keys the erasure registry (privacy.py): extraction can tell an erased student without storing their id
    PRIVACY_KEY = "privacy-key"
  }
  # Which function reads which secret (through progress_monitor.platform.secret_store, cached per instance).
  secret_readers = {
    extract_progress = ["CADEMI_API_KEY", "PRIVACY_KEY"]
    add_tag          = ["CADEMI_API_KEY", "FORM_CSRF_SECRET"]
    slack_command    = ["CADEMI_API_KEY", "SLACK_SIGNING_SECRET"]
    slack_actions    = ["SLACK_SIGNING_SECRET"]
    notify_tutors    = ["SLACK_BOT_TOKEN"]
  }

  # The settings object's environment (progress_monitor.settings.Settings): the same names for every function.
  common_env = {
    GCP_PROJECT              = var.project_id
    BQ_DATASET               = local.dataset
    BQ_RESTRICTED_DATASET    = local.restricted_dataset
    BQ_SLACK_DATASET         = local.slack_dataset
    BQ_SLACK_STAGING_DATASET = local.slack_staging_dataset
    SHARDS_BUCKET            = google_storage_bucket.shards.name
    STATE_BUCKET             = google_storage_bucket.state.name
    SCHEDULE_TOPIC           = local.topics.schedule
    PROGRESS_TOPIC           = local.topics.progress
    SCHEDULE_DLQ_TOPIC       = local.topics.schedule_dlq
    PROGRESS_DLQ_TOPIC       = local.topics.progress_dlq
    SHARDS_DLQ_TOPIC         = local.topics.shards_dlq
    SHARD_RELOADS_TOPIC      = local.topics.shard_reloads
    SLACK_TASKS_TOPIC        = local.topics.slack_tasks
    SLACK_TASKS_DLQ_TOPIC    = local.topics.slack_tasks_dlq
    TIMEZONE                 = var.schedule.time_zone
    SECRETS_BACKEND          = "secret_manager"
    CADEMI_API_VERSION       = var.cademi.api_version
    CADEMI_BASE_URL          = var.cademi.base_url
    CADEMI_RATE_PER_SECOND   = tostring(var.cademi.rate_per_second)
    CADEMI_RATE_PER_MINUTE   = tostring(var.cademi.rate_per_minute)
    CADEMI_WORKERS           = tostring(var.extraction.workers_per_piece)
    PIECE_BUDGET_S           = tostring(var.extraction.piece_budget_s)
    # Carrying students who did not study (carrying/rule.py); only extract_progress reads it.
    INCREMENTAL = var.incremental
    # LGPD retention (docs/privacy.md): the health check's local stand-in for the bucket lifecycle rule, and the
    # contact data of students not seen for this many months
    RETENTION_RAW_WEEKS       = tostring(var.raw_retention_weeks)
    RETENTION_CONTACTS_MONTHS = tostring(var.contacts_retention_months)
    # A run extracts at most as many tags at once as extract_progress has slots (pipeline/lanes.py): no task ever
    # waits for a busy instance, so none is refused with 429 and dead-lettered.
    EXTRACTION_LANES = tostring(local.progress_instances * var.extraction.concurrent_pieces)
  }
  slack_env = {
    SLACK_TEAM_ID             = var.slack.team_id
    SLACK_ALLOWED_USERS       = join(",", var.slack.allowed_users)
    TUTOR_LIST_URL            = var.slack.tutor_list_url
    DIGEST_STUDENTS_PER_CLASS = tostring(var.slack.digest_students_per_class)
  }
  form_env = {
    FORM_AUTH           = "iap"
    FORM_ALLOWED_EMAILS = join(",", var.form.allowed_emails)
    FORM_ALLOWED_DOMAIN = var.form.allowed_domain
    IAP_AUDIENCE        = "/projects/${data.google_project.this.number}/global/backendServices/${google_compute_backend_service.form.generated_id}"
  }
}

data "google_project" "this" {
  project_id = var.project_id
  depends_on = [time_sleep.apis_ready] # Resource Manager API
}
