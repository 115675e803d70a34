"""One settings object, built from the environment in one place."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from progress_monitor.contracts.values import SLACK_TEAM, SLACK_USER

LOCAL_URLS = ("http://127.0.0.1", "http://localhost")  # plain http only here: the simulator
LOCAL_SLACK = "127.0.0.1"  # the local stack's Slack stand-in: the only plain-http response_url prefix
PRODUCTION_RATE_PER_SECOND = 2.0
PRODUCTION_RATE_PER_MINUTE = 120.0


class SettingsError(ValueError):
    """A setting is missing or has an invalid value."""


@dataclass(frozen=True)
class Settings:
    """Everything the functions and tools read from their environment.

    Each field maps to the upper-case environment variable of the same name.
    """

    # Cademi API: "v1" (one call per student x product) or "v3" (one call per student; cademi_v3.py). The base
    # URL is the school's v1 address or v3's one host (https://api.cademi.com.br/api/v3).
    cademi_api_version: str = "v1"
    cademi_base_url: str = "https://escola.cademi.com.br/api/v1"
    cademi_rate_per_second: float = PRODUCTION_RATE_PER_SECOND
    cademi_rate_per_minute: float = PRODUCTION_RATE_PER_MINUTE
    # Spacing margin so network jitter never lets the server see a burst over its limit.
    cademi_rate_safety: float = 0.03
    cademi_connect_timeout_s: float = 5.0
    cademi_read_timeout_s: float = 30.0
    cademi_max_attempts: int = 5
    cademi_backoff_base_s: float = 0.5
    cademi_backoff_cap_s: float = 30.0
    cademi_workers: int = 4
    # Where the school-wide budget is held: "gcs" (one slot sequence in the state bucket, shared by every
    # process: budget.py) or "process" (a limiter per process: holds only with a single process; the local
    # comparison tests and the bench use it to show what the fleet-wide guard prevents).
    cademi_fleet_budget: str = "gcs"

    # Extraction: each piece stops starting new students after this many seconds.
    piece_budget_s: float = 300.0
    # An outage: this many students in a row whose every call failed transiently (after retries) stop the
    # piece without writing it; Pub/Sub redelivers it later instead of recording a dead API as failed rows.
    outage_students: int = 3
    # A run whose failed extractions exceed this share of its records is `incomplete`, not `succeeded` (run
    # health shows it; the log line alerts). 5 %: one pair in twenty missing makes tutors' lists unreliable.
    run_max_failed_share: float = 0.05
    # How many tags a run extracts at once (lanes.py): extract_progress's capacity, instances x concurrency.
    extraction_lanes: int = 4

    # Carrying (carry.py; docs/architecture.md#carrying-students-who-did-not-study): "on" skips the progress
    # call of a student who has not accessed Cademi since their last good observation's run started, and writes
    # that observation again, marked carried. Off by default: it rests on Cademi moving the last access with
    # every lesson, which Cademi does not publish, and extract_progress then reads progress_history (an IAM
    # grant); the verification sample reads `carry_sample_share` of the carried students anyway (at least one
    # per tag) and any mismatch switches carrying off for the school. No pair is carried from an observation
    # `carry_full_read_weeks` or more weeks old, so staff changes to a student's access are seen within a month.
    incremental: str = "off"
    carry_sample_share: float = 0.05
    carry_full_read_weeks: int = 4

    # Google Cloud resources
    gcp_project: str = "local-project"
    bq_dataset: str = "progress"
    # Contact data (students) and the tutors' list live apart, readable by tutors only. Empty: derived from
    # bq_dataset by Terraform's rule (locals.tf: `<dataset>_restricted`, `<dataset>_slack`), never a fixed name.
    bq_restricted_dataset: str = ""
    # What the tutors' Slack agent (notify_tutors) may read of contact data: the authorized view of names.
    bq_slack_dataset: str = ""
    # Where the Slack agent stages the rows it writes that name a student (tutors/records.py), for seconds: its
    # own, so writing there grants nothing on the other datasets or on the authorized view. Same rule.
    bq_slack_staging_dataset: str = ""
    # What load_history loads (progress shards, contacts files) and nothing else: its trigger fires for every
    # object finalized there (contracts.objects.bucket_of).
    shards_bucket: str = "progress-shards"
    # The run state and registries (rosters, lanes, the Cademi budget, carry plans, digest claims, erasures).
    state_bucket: str = "progress-state"
    schedule_topic: str = "weekly-schedule"
    progress_topic: str = "progress-tasks"
    schedule_dlq_topic: str = "weekly-schedule-dlq"
    progress_dlq_topic: str = "progress-tasks-dlq"
    shards_dlq_topic: str = "shard-events-dlq"
    # The health check re-sends a shard whose load event was lost here; load_history is pushed from it.
    shard_reloads_topic: str = "shard-reloads"
    timezone: str = "America/Sao_Paulo"
    # Emulators (local only): empty in the cloud. The Pub/Sub and Storage libraries read these variables
    # themselves; they are mirrored here so the code knows to use anonymous credentials.
    bigquery_emulator_host: str = ""
    storage_emulator_host: str = ""
    pubsub_emulator_host: str = ""

    # Status thresholds (percentage points of gap = actual - expected); see docs/metrics.md.
    status_ahead_gap: float = 10.0
    status_behind_gap: float = -10.0
    status_risk_gap: float = -25.0
    # Recency (docs/metrics.md): behind and no access for this many days is `em risco`; a student in their
    # first `status_grace_days` in a class is never flagged.
    status_inactive_days: int = 14
    status_grace_days: int = 7

    # add_tag: who may use the form. "iap" verifies Google's IAP JWT; "dev" (emulators only) trusts FORM_DEV_USER.
    form_auth: str = "iap"
    form_dev_user: str = ""
    form_allowed_emails: str = ""
    form_allowed_domain: str = ""
    iap_audience: str = ""
    # PEM public keys by key id (JSON file); empty: Google's IAP keys, fetched and cached.
    iap_public_keys_file: str = ""
    # Interactive Cademi checks (form, Slack) must answer fast: short timeouts, one retry at most.
    interactive_timeout_s: float = 2.0
    slack_max_skew_s: int = 300
    # Slack: the workspace (team id) whose requests are accepted, and the members (user ids, comma-separated)
    # who may use /turma. A signature only proves the request came from Slack, not who may change the registry.
    slack_team_id: str = ""
    slack_allowed_users: str = ""
    # Tutors in Slack (tutors/): the bot's Web API, where interaction replies may go, the worker's topic, how
    # many students a digest lists per class (the full list is behind `tutor_list_url`, e.g. the Looker Studio
    # page), and how long a digest claim stays with a delivery that has not posted yet.
    slack_api_url: str = "https://slack.com/api"
    slack_timeout_s: float = 10.0  # how long a Slack Web API call may take before it is read as a timeout
    slack_response_url_prefix: str = "https://hooks.slack.com/"
    slack_tasks_topic: str = "slack-tasks"
    slack_tasks_dlq_topic: str = "slack-tasks-dlq"
    tutor_list_url: str = ""
    digest_students_per_class: int = 10
    digest_claim_lease_s: int = 600

    # Retention (LGPD, docs/privacy.md). Raw progress shards, rosters and lane objects are deleted this many
    # weeks after they were written (a bucket lifecycle rule in Terraform, the local stack itself): 13 weeks
    # (a quarter) leave time to replay a history a loader bug damaged, found at the latest in the quarterly
    # review; the history itself is in BigQuery. Contact data of a student no extraction has seen for this
    # many months is deleted by the daily health check: 6 months (a semester) cover a class paused over the
    # holidays, and a student who comes back gets their contact data again from Cademi at the next run.
    retention_raw_weeks: int = 13
    retention_contacts_months: int = 6

    # Secrets: "env" reads <NAME> from the environment (local only); "secret_manager" reads Secret Manager.
    secrets_backend: str = "secret_manager"

    # Values of secrets when secrets_backend == "env" (never logged).
    local_secrets: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)

    def __post_init__(self) -> None:
        # the datasets beside the history are named after it, as Terraform names them (locals.tf)
        if not self.bq_restricted_dataset:
            object.__setattr__(self, "bq_restricted_dataset", f"{self.bq_dataset}_restricted")
        if not self.bq_slack_dataset:
            object.__setattr__(self, "bq_slack_dataset", f"{self.bq_dataset}_slack")
        if not self.bq_slack_staging_dataset:
            object.__setattr__(self, "bq_slack_staging_dataset", f"{self.bq_dataset}_slack_staging")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, validating every value."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "local_secrets":
                continue
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            default = getattr(cls, f.name)
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise SettingsError(f"{f.name.upper()}={raw!r} is not a valid {type(default).__name__}") from exc
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.secrets_backend == "env":
            secrets = {name: env[name] for name in SECRET_NAMES if env.get(name)}
            settings = cls(**{**values, "local_secrets": secrets})  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values that would make the system misbehave."""
        if self.cademi_api_version not in ("v1", "v3"):
            raise SettingsError("CADEMI_API_VERSION must be 'v1' or 'v3'")
        if not self.cademi_base_url.rstrip("/").endswith("/api/" + self.cademi_api_version):
            raise SettingsError(
                f"CADEMI_BASE_URL must be the API {self.cademi_api_version} base (…/api/{self.cademi_api_version})"
            )
        if not self.cademi_base_url.startswith(("https://", *LOCAL_URLS)):
            raise SettingsError("CADEMI_BASE_URL must be https (plain http only on 127.0.0.1/localhost)")
        for name in ("cademi_rate_per_second", "cademi_rate_per_minute", "piece_budget_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be > 0")
        for name in ("cademi_rate_per_second", "cademi_rate_per_minute"):
            # Cademi counts calls in a window: a fractional budget would space calls for a count it never allows.
            if not float(getattr(self, name)).is_integer():
                raise SettingsError(f"{name.upper()} must be a whole number of calls")
        if not 0 < self.cademi_rate_safety < 1:
            # No margin leaves no slack for a call to start late: every budget slot would be missed, forever.
            raise SettingsError("CADEMI_RATE_SAFETY must be in (0, 1): above 0, or no call could ever start")
        if self.cademi_max_attempts < 1 or self.cademi_workers < 1 or self.extraction_lanes < 1:
            raise SettingsError("CADEMI_MAX_ATTEMPTS, CADEMI_WORKERS and EXTRACTION_LANES must be >= 1")
        if self.outage_students < 1 or not 0 <= self.run_max_failed_share <= 1:
            raise SettingsError("OUTAGE_STUDENTS must be >= 1 and RUN_MAX_FAILED_SHARE in [0, 1]")
        if self.incremental not in ("on", "off"):
            raise SettingsError("INCREMENTAL must be 'on' or 'off'")
        if not 0 < self.carry_sample_share <= 1 or not 1 <= self.carry_full_read_weeks <= 52:
            raise SettingsError("CARRY_SAMPLE_SHARE must be in (0, 1] and CARRY_FULL_READ_WEEKS 1-52")
        if self.cademi_fleet_budget not in ("gcs", "process"):
            raise SettingsError("CADEMI_FLEET_BUDGET must be 'gcs' or 'process'")
        if self.cademi_fleet_budget == "process" and not self.storage_emulator_host:
            raise SettingsError("CADEMI_FLEET_BUDGET=process cannot hold the school's budget in the cloud")
        for name in ("bq_dataset", "bq_restricted_dataset", "bq_slack_dataset", "bq_slack_staging_dataset"):
            if not getattr(self, name).replace("_", "").isalnum():
                raise SettingsError(f"{name.upper()} must be letters, digits and underscores")
        if not self.status_risk_gap < self.status_behind_gap < self.status_ahead_gap:
            raise SettingsError("status thresholds must satisfy RISK < BEHIND < AHEAD")
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise SettingsError("TIMEZONE must be an IANA time zone such as America/Sao_Paulo") from exc
        for name in ("slack_api_url", "slack_response_url_prefix"):
            if not getattr(self, name).startswith(("https://", *LOCAL_URLS)):
                raise SettingsError(f"{name.upper()} must be https (plain http only on 127.0.0.1/localhost)")
        if (problem := _response_url_prefix_problem(self.slack_response_url_prefix)) is not None:
            raise SettingsError(f"SLACK_RESPONSE_URL_PREFIX {problem}")
        if not 1 <= self.digest_students_per_class <= 20 or self.digest_claim_lease_s < 30:
            raise SettingsError("DIGEST_STUDENTS_PER_CLASS must be 1-20 and DIGEST_CLAIM_LEASE_S >= 30")
        if not 1 <= self.slack_timeout_s <= 60:
            raise SettingsError("SLACK_TIMEOUT_S must be 1-60 seconds")
        if self.status_inactive_days < 1 or self.status_grace_days < 0:
            raise SettingsError("STATUS_INACTIVE_DAYS must be >= 1 and STATUS_GRACE_DAYS >= 0")
        if self.form_auth not in ("iap", "dev"):
            raise SettingsError("FORM_AUTH must be 'iap' or 'dev'")
        if self.form_auth == "dev" and not (self.form_dev_user and self.bigquery_emulator_host):
            raise SettingsError("FORM_AUTH=dev needs FORM_DEV_USER and is only allowed against the emulators")
        if self.secrets_backend not in ("env", "secret_manager"):
            raise SettingsError("SECRETS_BACKEND must be 'env' or 'secret_manager'")
        if not 4 <= self.retention_raw_weeks <= 520 or not 1 <= self.retention_contacts_months <= 120:
            raise SettingsError("RETENTION_RAW_WEEKS must be 4-520 and RETENTION_CONTACTS_MONTHS 1-120")

    def form_config_error(self) -> str | None:
        """Why the form must refuse every request, or None. IAP without an audience would accept a token minted
        for any other IAP application of the organisation, so it fails closed instead."""
        if self.form_auth == "iap" and not self.iap_audience:
            return "FORM_AUTH=iap needs IAP_AUDIENCE (the backend service's audience)"
        if not (self.allowed_emails or self.form_allowed_domain):
            return "FORM_ALLOWED_EMAILS or FORM_ALLOWED_DOMAIN must name the staff"
        return None

    def slack_config_error(self) -> str | None:
        """Why the Slack command must refuse every request, or None."""
        if not SLACK_TEAM.fullmatch(self.slack_team_id):
            return "SLACK_TEAM_ID must be the workspace's team id (T…)"
        if not self.slack_users:
            return "SLACK_ALLOWED_USERS must list the Slack user ids (U…) allowed to use /turma"
        return None

    def slack_response_url_ok(self, url: object) -> bool:
        """An interaction's `response_url` is only ever Slack's own: anything else would make us POST to a
        host of the request's choosing."""
        prefix = self.slack_response_url_prefix
        if not isinstance(url, str) or len(url) >= 500 or not url.isascii() or not url.isprintable() or " " in url:
            return False
        # the prefix is checked here too (Settings built in code skip `validate`): it ends its host with "/" and
        # is https, or plain http on 127.0.0.1 only, so the URL is too
        return _response_url_prefix_problem(prefix) is None and url.startswith(prefix) and ".." not in url

    @property
    def slack_users(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.slack_allowed_users.split(",") if SLACK_USER.fullmatch(u.strip()))

    @property
    def allowed_emails(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.form_allowed_emails.split(",") if e.strip())

    @property
    def cademi_interval_s(self) -> float:
        """Seconds between two call starts: the tighter of the two budgets, widened by the safety margin."""
        interval = max(1.0 / self.cademi_rate_per_second, 60.0 / self.cademi_rate_per_minute)
        return interval * (1.0 + self.cademi_rate_safety)

    @property
    def cademi_is_simulator(self) -> bool:
        """True when Cademi is the local simulator (plain http is allowed only there): it can serve past weeks."""
        return self.cademi_base_url.startswith(LOCAL_URLS)

    @property
    def rate_is_production(self) -> bool:
        """True when the client budget is Cademi's documented school limit."""
        return (
            self.cademi_rate_per_second <= PRODUCTION_RATE_PER_SECOND
            and self.cademi_rate_per_minute <= PRODUCTION_RATE_PER_MINUTE
        )


class MissingSettingsError(SettingsError):
    """An operator command outside the local stack was given neither the deployment's settings file nor these
    variables: it would otherwise name resources (datasets, topics, the buckets) Terraform never created."""

    def __init__(self, missing: tuple[str, ...]) -> None:
        self.missing = missing
        super().__init__(
            "missing the deployment's " + ", ".join(missing) + ": pass --settings FILE, made by `terraform "
            "-chdir=infra/terraform output -json functions_settings > FILE`, or set them in the environment"
        )


# What an operator command must be told outside the emulators: the names of what Terraform deployed (their
# defaults are the local stack's names). BQ_RESTRICTED_DATASET, BQ_SLACK_DATASET and BQ_SLACK_STAGING_DATASET
# follow BQ_DATASET.
DEPLOYMENT_NAMES = (
    "GCP_PROJECT",
    "BQ_DATASET",
    "SHARDS_BUCKET",
    "STATE_BUCKET",
    "SCHEDULE_TOPIC",
    "PROGRESS_TOPIC",
    "SHARD_RELOADS_TOPIC",
    "SLACK_TASKS_TOPIC",
)


def read_settings_file(path: Path) -> dict[str, str]:
    """The functions' settings as Terraform outputs them: `terraform output -json functions_settings` (a JSON
    object of variable names to strings), or the whole `terraform output -json` (its `functions_settings`)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read the settings file {path}: {exc}") from exc
    if isinstance(document, dict) and isinstance(document.get("functions_settings"), dict):
        document = document["functions_settings"].get("value")
    names = {f.name.upper() for f in fields(Settings) if f.name != "local_secrets"}
    if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
        raise SettingsError(f"{path} is not the output functions_settings (an object of names to strings)")
    if unknown := sorted(set(document) - names):
        raise SettingsError(f"{path} holds names the settings object does not read: {', '.join(unknown)}")
    return dict(document)


def operator_settings(
    path: Path | None, environ: Mapping[str, str] | None = None, need: tuple[str, ...] = DEPLOYMENT_NAMES
) -> Settings:
    """The settings of an operator command: the deployment's settings file, with the environment for what the
    file does not hold (emulators, local secrets). A variable the environment sets otherwise than the file is
    refused (which one is meant?), and outside the emulators the deployment's names must be given."""
    env = dict(os.environ if environ is None else environ)
    given = read_settings_file(path) if path is not None else {}
    if clash := sorted(k for k, v in given.items() if env.get(k, v) not in ("", v)):
        raise SettingsError(f"the environment and {path} disagree on {', '.join(clash)}: unset them or fix the file")
    values = {**env, **given}
    local = bool(values.get("BIGQUERY_EMULATOR_HOST"))
    if not local and (missing := tuple(n for n in need if not values.get(n))):
        raise MissingSettingsError(missing)
    return Settings.from_env(values)


def _response_url_prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot bound where replies go, or None. It must end its host with "/" (else
    `https://hooks.slack.com` would admit `https://hooks.slack.com.evil.example/…`) and be https, or plain http
    only on 127.0.0.1 (the local stack's Slack stand-in)."""
    try:
        parts = urlsplit(prefix)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return "is not a URL"
    if not parts.hostname or not port_ok or parts.username is not None or parts.query or parts.fragment:
        return "must be scheme://host/path/"
    if not prefix.endswith("/") or not parts.path.startswith("/"):
        return "must end in '/' (e.g. https://hooks.slack.com/)"
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname == LOCAL_SLACK):
        return "must be https (plain http only on 127.0.0.1, the local Slack stand-in)"
    return None


# Environment variable names of the secrets (also the Secret Manager secret ids, lower-cased with dashes).
CADEMI_API_KEY = "CADEMI_API_KEY"
SLACK_SIGNING_SECRET = "SLACK_SIGNING_SECRET"  # noqa: S105 - a variable name, not a value
FORM_CSRF_SECRET = "FORM_CSRF_SECRET"  # noqa: S105 - a variable name, not a value
SLACK_BOT_TOKEN = "SLACK_BOT_TOKEN"  # noqa: S105 - a variable name, not a value
# The key of the erasures registry's hashes (erasures.py); never rotated without re-keying the registry.
PRIVACY_KEY = "PRIVACY_KEY"
SECRET_NAMES = (CADEMI_API_KEY, SLACK_SIGNING_SECRET, FORM_CSRF_SECRET, SLACK_BOT_TOKEN, PRIVACY_KEY)
