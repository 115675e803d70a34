variable "alert_emails" {
  description = "Emails notified when the weekly run fails or the data is older than 8 days."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for e in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "Each alert email must look like name@domain."
  }
}

variable "cademi" {
  description = "Cademi API: its version (v1, or v3 with one progress call per student), the base URL, and the rate budget of the whole school (Cademi allows 2 req/s, 120 req/min)."
  type = object({
    api_version     = optional(string, "v1")
    base_url        = string
    rate_per_second = optional(number, 2)
    rate_per_minute = optional(number, 120)
  })
  validation {
    condition     = contains(["v1", "v3"], var.cademi.api_version) && endswith(trimsuffix(var.cademi.base_url, "/"), "/api/${var.cademi.api_version}")
    error_message = "cademi.api_version is v1 or v3, and cademi.base_url ends in /api/<that version> (v3: https://api.cademi.com.br/api/v3)."
  }
  validation {
    condition     = startswith(var.cademi.base_url, "https://")
    error_message = "cademi.base_url must be https (the API key travels in a header)."
  }
  validation {
    condition     = var.cademi.rate_per_second > 0 && var.cademi.rate_per_second <= 2 && var.cademi.rate_per_minute > 0 && var.cademi.rate_per_minute <= 120
    error_message = "The rate budget must be positive and within Cademi's 2 req/s and 120 req/min."
  }
}

variable "contacts_retention_months" {
  description = "Months after which the daily health check deletes the contact data of a student no extraction has seen in any active class (LGPD retention, docs/privacy.md; RETENTION_CONTACTS_MONTHS)."
  type        = number
  default     = 6
  validation {
    condition     = var.contacts_retention_months >= 1 && var.contacts_retention_months <= 120
    error_message = "Keep contact data of absent students 1 to 120 months."
  }
}

variable "extraction" {
  description = "extract_progress sizing: piece budget, function timeout and memory, concurrent pieces per instance."
  type = object({
    piece_budget_s    = optional(number, 300)
    timeout_s         = optional(number, 540)
    memory            = optional(string, "512Mi")
    concurrent_pieces = optional(number, 4)
    workers_per_piece = optional(number, 4)
  })
  default = {}
  validation {
    condition     = var.extraction.piece_budget_s > 0 && var.extraction.piece_budget_s <= var.extraction.timeout_s - 120
    error_message = "piece_budget_s must leave at least 120 s of the function timeout for the last students and the shard write."
  }
  validation {
    condition     = var.extraction.timeout_s <= 540
    error_message = "Event-driven work must finish within 540 s (and the push ack deadline of 600 s)."
  }
}

variable "form" {
  description = "The add_tag form behind IAP: its domain (HTTPS load balancer), and the staff allowed to use it."
  type = object({
    domain         = string
    allowed_emails = optional(list(string), [])
    allowed_domain = optional(string, "")
    iap_members    = list(string)
  })
  validation {
    condition     = length(var.form.allowed_emails) > 0 || var.form.allowed_domain != ""
    error_message = "Set form.allowed_emails or form.allowed_domain: the code checks the staff allow-list too."
  }
  validation {
    condition     = alltrue([for m in var.form.iap_members : can(regex("^(user|group|domain):", m))])
    error_message = "form.iap_members are IAM members such as group:coordenacao@escola.com.br."
  }
  validation {
    # The managed certificate is issued for this name: a host name, lower case, no scheme or path.
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.form.domain))
    error_message = "form.domain is a host name such as turmas.escola.com.br (no https://, no path)."
  }
}

variable "incremental" {
  description = "INCREMENTAL of extract_progress: on skips the progress call of a student who has not accessed Cademi since their last good observation (carried rows, a verification sample, switched off by any mismatch; docs/architecture.md). Off by default: it rests on Cademi moving the last access with every lesson, and extract_progress then reads progress_history."
  type        = string
  default     = "off"
  validation {
    condition     = contains(["on", "off"], var.incremental)
    error_message = "incremental is on or off."
  }
}

variable "org_policy_override" {
  description = "Override the organisation's domain-restricted sharing (iam.allowedPolicyMemberDomains) for this project, so the two Slack endpoints can be public; the apply then needs roles/orgpolicy.policyAdmin on the organisation."
  type        = bool
  default     = false
}

variable "prefix" {
  description = "Prefix of every resource name (lower case, e.g. the school's short name)."
  type        = string
  validation {
    # The longest service account id is "<prefix>-extract-progress" (17 more characters), and ids are 6-30.
    condition     = can(regex("^[a-z][a-z0-9-]{0,11}[a-z0-9]$", var.prefix))
    error_message = "prefix: 2-13 lower-case letters, digits or dashes, starting with a letter and not ending with a dash."
  }
  validation {
    # Pub/Sub refuses topic and subscription names starting with "goog".
    condition     = !startswith(var.prefix, "goog")
    error_message = "prefix: must not start with \"goog\" (Pub/Sub refuses such topic names)."
  }
}

variable "project_id" {
  description = "Google Cloud project id."
  type        = string
}

variable "raw_retention_weeks" {
  description = "Weeks the raw run objects (progress shards, rosters, lanes, carry plans) are kept in Cloud Storage: they allow a replay of the history and name students by id (LGPD retention, docs/privacy.md). Must equal RETENTION_RAW_WEEKS of the settings (13 by default)."
  type        = number
  default     = 13
  validation {
    condition     = var.raw_retention_weeks >= 4 && var.raw_retention_weeks <= 520
    error_message = "Keep raw objects 4 to 520 weeks: at least a month so a lost week can be replayed."
  }
}

variable "region" {
  description = "Region of the functions, the bucket and the scheduler job."
  type        = string
  default     = "southamerica-east1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region is a Google Cloud region such as southamerica-east1 (not a zone, not a multi-region)."
  }
}

variable "reporting" {
  description = "Who reads the dashboards: managers read the reporting dataset; only tutors read the restricted one."
  type = object({
    managers_group = string
    tutors_group   = string
  })
  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+$", var.reporting.managers_group)) && can(regex("^[^@\\s]+@[^@\\s]+$", var.reporting.tutors_group))
    error_message = "reporting groups are Google group emails."
  }
}

variable "schedule" {
  description = "The weekly run: cron expression and time zone of Cloud Scheduler."
  type = object({
    cron      = optional(string, "0 3 * * 1")
    time_zone = optional(string, "America/Sao_Paulo")
  })
  default = {}
  validation {
    condition     = length(split(" ", var.schedule.cron)) == 5
    error_message = "schedule.cron must have five fields."
  }
}

variable "slack" {
  description = "The Slack workspace whose requests are accepted, the members (user ids) allowed to change the registry with /turma, the link to the full tutors' list shown under each digest, and how many students a digest names per class. Each class's tutors' channel is set in the registry (/turma canal)."
  type = object({
    team_id                   = string
    allowed_users             = list(string)
    tutor_list_url            = optional(string, "")
    digest_students_per_class = optional(number, 10)
  })
  validation {
    condition     = can(regex("^T[A-Z0-9]{2,20}$", var.slack.team_id))
    error_message = "slack.team_id is the workspace's id, such as T01ABCDEF."
  }
  validation {
    condition     = length(var.slack.allowed_users) > 0 && alltrue([for u in var.slack.allowed_users : can(regex("^[UW][A-Z0-9]{2,20}$", u))])
    error_message = "slack.allowed_users lists member ids such as U01ABCDEF (a name can be changed by its owner; an id cannot)."
  }
  validation {
    condition     = var.slack.digest_students_per_class >= 1 && var.slack.digest_students_per_class <= 20 && (var.slack.tutor_list_url == "" || startswith(var.slack.tutor_list_url, "https://"))
    error_message = "slack.digest_students_per_class is 1-20 (Slack's 50 blocks); slack.tutor_list_url is an https link."
  }
}
