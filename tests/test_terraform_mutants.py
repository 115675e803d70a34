"""Planted defects: each is applied to a copy of infra/terraform and must fail the Terraform checks.

A check counts only if a defect makes it fail. Every mutant below names the check expected to kill it; a
mutant that survives (all checks pass on the broken copy) fails this test, and so does a mutant whose text
no longer occurs exactly once (the configuration changed: update the mutant, do not drop it).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import tf_model
from tests.test_terraform import ROOT, TF, parsed
from tests.test_terraform_iam import calls
from tests.test_terraform_schema import schema
from tests.tf_schema import check_enums


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    killer: str  # the check expected to fail
    refused_in: str | None = None  # Terraform: the block its error is in, when not the one planted in (a local's)


def _enums(directory: Path) -> list[str]:
    return check_enums(parsed(directory), schema())


# Killed by Terraform itself with the stand-in providers: all of a group planted together in one copy.
VALIDATE = "terraform validate"
PLAN = "terraform plan"
CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "enums": _enums,
    "function_grants": lambda d: tf_model.check_function_grants(tf_model.load(d), calls()),
    "infrastructure_grants": lambda d: (
        tf_model.check_infrastructure_grants(tf_model.load(d)) + tf_model.parse_builder_condition(tf_model.load(d))
    ),
    "wiring": lambda d: tf_model.check_wiring(tf_model.load(d)),
    "waits": lambda d: tf_model.check_waits(tf_model.load(d)),
    "authorized_views": lambda d: tf_model.check_authorized_views(tf_model.load(d)),
    "time_travel": lambda d: tf_model.check_time_travel(tf_model.load(d)),
    "form_https": lambda d: tf_model.check_form_https(tf_model.load(d)),
}

FN = 'google_service_account.fn["{}"].member'
WAIT = "  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet\n"
MUTANTS = [
    # the form's plain HTTP: a redirect to HTTPS on the same address, nothing served
    Mutant(
        "HTTP not redirected",
        "form.tf",
        "    https_redirect         = true",
        "    https_redirect         = false",
        "form_https",
    ),
    Mutant(
        "HTTP on an address of its own",
        "form.tf",
        '  port_range            = "80"\n  ip_address            = google_compute_global_address.form.address\n',
        '  port_range            = "80"\n',
        "form_https",
    ),
    Mutant(
        "no HTTP rule on port 80",
        "form.tf",
        'port_range            = "80"',
        'port_range            = "8080"',
        "form_https",
    ),
    Mutant(
        "HTTP serves the form",
        "form.tf",
        'name = "${var.prefix}-form-http"\n  default_url_redirect {',
        'name            = "${var.prefix}-form-http"\n'
        "  default_service = google_compute_backend_service.form.id\n  default_url_redirect {",
        "form_https",
    ),
    # the privacy of erased rows: a week of time travel on the restricted dataset
    Mutant("default time travel", "bigquery.tf", '  max_time_travel_hours = "48" # restricted', "", "time_travel"),
    # every grant to a fresh account waits at least two minutes
    Mutant(
        "a grant to a fresh account without the wait",
        "iam.tf",
        '''  member     = google_service_account.fn["notify_tutors"].member
  depends_on = [time_sleep.accounts_ready] # a fresh account: IAM may not know it yet
}

resource "google_bigquery_table_iam_member" "student_names"''',
        '''  member     = google_service_account.fn["notify_tutors"].member
}

resource "google_bigquery_table_iam_member" "student_names"''',
        "waits",
    ),
    Mutant(
        "push audience left to Pub/Sub's default",
        "pubsub.tf",
        "      audience = google_cloudfunctions2_function.fn[each.key].service_config[0].uri\n",
        "",
        "wiring",
    ),
    Mutant("the accounts' wait too short", "iam.tf", 'create_duration = "120s"', 'create_duration = "60s"', "waits"),
    # the provider's schema
    Mutant("misspelt argument", "functions.tf", "    timeout_seconds ", "    timeout_second ", VALIDATE),
    Mutant("misspelt block", "pubsub.tf", "  dead_letter_policy {", "  deadletter_policy {", VALIDATE),
    Mutant("missing required argument", "secrets.tf", "  secret_id = each.value\n", "", VALIDATE),
    Mutant("missing required block", "secrets.tf", "  replication {\n    auto {}\n  }\n", "", VALIDATE),
    Mutant("invalid ingress enum", "functions.tf", '"ALLOW_INTERNAL_ONLY")', '"INTERNAL_ONLY")', "enums"),
    Mutant(
        "invalid event type",
        "functions.tf",
        '"google.cloud.storage.object.v1.finalized"',
        '"google.cloud.storage.object.v1.finalised"',
        "wiring",
    ),
    Mutant("wrong event type", "functions.tf", "object.v1.finalized", "object.v1.deleted", "wiring"),
    Mutant(
        "unknown resource type", "scheduler.tf", '"google_cloud_scheduler_job"', '"google_cloud_scheduler"', VALIDATE
    ),
    # references: what Terraform itself judges (tests/test_terraform_refusals.py plants each group together)
    Mutant(
        "reference to nothing",
        "iam.tf",
        "service_account_id = google_service_account.pusher.name",
        "service_account_id = google_service_account.pushr.name",
        VALIDATE,
    ),
    Mutant(
        "reference to a missing local",
        "functions.tf",
        "name     = local.function_names[each.key]",
        "name     = local.function_name[each.key]",
        VALIDATE,
    ),
    Mutant(
        "an attribute the data source does not export",
        "functions.tf",
        "source   = data.archive_file.function[each.key].output_path",
        "source   = data.archive_file.function[each.key].output_file",
        PLAN,
    ),
    Mutant(
        "an attribute the resource does not export",
        "outputs.tf",
        "value       = google_compute_global_address.form.address",
        "value       = google_compute_global_address.form.ip",
        VALIDATE,
    ),
    Mutant(
        "a value of the wrong type",
        "pubsub.tf",
        "ack_deadline_seconds = 90",
        'ack_deadline_seconds = "ninety"',
        VALIDATE,
    ),
    Mutant(
        "a function called with the wrong types",
        "monitoring.tf",
        'join(", ", [for s in google_pubsub_subscription.dead_letters : "\\"${s.name}\\""])',
        'join([for s in google_pubsub_subscription.dead_letters : "\\"${s.name}\\""], ", ")',
        VALIDATE,
    ),
    Mutant(
        "reference to a missing instance",
        "pubsub.tf",
        'fn["record_failures"].service_config[0].uri}/projects',
        'fn["record_failure"].service_config[0].uri}/projects',
        PLAN,
    ),
    Mutant(
        "grant on a table that does not exist",
        "iam.tf",
        'record_failures  = ["loads"]',
        'record_failures  = ["load"]',
        PLAN,
        refused_in='resource "google_bigquery_table_iam_member" "table"',
    ),
    Mutant(
        "for_each keys known only after apply",
        "monitoring.tf",
        "for_each     = toset(var.alert_emails)",
        "for_each     = toset([google_service_account.pusher.email])",
        PLAN,
    ),
    Mutant(
        "for_each over a list",
        "functions.tf",
        "  for_each = local.functions\n  name     = local",
        "  for_each = keys(local.functions)\n  name     = local",
        VALIDATE,
    ),
    # grants to the wrong function's account
    Mutant(
        "secret accessor to the wrong identity",
        "secrets.tf",
        'google_service_account.fn[each.value.fn].email}"',
        'google_service_account.fn["extract_tags"].email}"',
        "function_grants",
    ),
    Mutant(
        "publisher to the wrong identity",
        "iam.tf",
        '  role       = "roles/pubsub.publisher"\n  member     = google_service_account.fn[each.value.fn].member',
        '  role       = "roles/pubsub.publisher"\n  member     = ' + FN.format("slack_actions"),
        "function_grants",
    ),
    Mutant(
        "jobUser to the wrong identity",
        "iam.tf",
        '  role       = "roles/bigquery.jobUser"\n  member     = google_service_account.fn[each.key].member',
        '  role       = "roles/bigquery.jobUser"\n  member     = ' + FN.format("add_tag"),
        "function_grants",
    ),
    Mutant(
        "jobUser to the interactions endpoint too",
        "iam.tf",
        'if k != "slack_actions"]',
        "]",
        "function_grants",
    ),
    Mutant(
        "table roles swapped",
        "iam.tf",
        '=> { fn = fn, table = t, role = "roles/bigquery.dataViewer" }',
        '=> { fn = fn, table = t, role = "roles/bigquery.dataEditor" }',
        "function_grants",
    ),
    Mutant(
        "a table write lost",
        "iam.tf",
        '["registered_tags", "slack_channels"]',
        '["registered_tags"]',
        "function_grants",
    ),
    Mutant(
        "dataset editor to the tutors' agent",
        "iam.tf",
        '"tutors_agent" {\n  dataset_id = google_bigquery_dataset.main.dataset_id\n'
        '  role       = "roles/bigquery.dataViewer"',
        '"tutors_agent" {\n  dataset_id = google_bigquery_dataset.main.dataset_id\n'
        '  role       = "roles/bigquery.dataEditor"',
        "function_grants",
    ),
    Mutant(
        "the Slack agent stages on the Slack dataset (it could replace the authorized view)",
        "bigquery.tf",
        'resource "google_bigquery_dataset_access" "slack_staging_agent" {\n'
        "  dataset_id    = google_bigquery_dataset.slack_staging.dataset_id",
        'resource "google_bigquery_dataset_access" "slack_staging_agent" {\n'
        "  dataset_id    = google_bigquery_dataset.slack.dataset_id",
        "function_grants",
    ),
    Mutant(
        "the Slack agent's staging grant read-only",
        "bigquery.tf",
        'role          = "WRITER" # roles/bigquery.dataEditor: creates, loads',
        'role          = "READER" # roles/bigquery.dataEditor: creates, loads',
        "function_grants",
    ),
    Mutant(
        "digest claims condition widened to true",
        "iam.tf",
        'expression = "resource.name.startsWith(\\"projects/_/buckets/'
        '${google_storage_bucket.state.name}/objects/slack/\\")"',
        'expression = "true"',
        "function_grants",
    ),
    Mutant(
        "budget condition widened to the prefix",
        "iam.tf",
        'expression = "resource.name == \\"projects/_/buckets/'
        '${google_storage_bucket.state.name}/objects/budget/cademi.json\\""',
        'expression = "resource.name.startsWith(\\"projects/_/buckets/'
        '${google_storage_bucket.state.name}/objects/\\")"',
        "function_grants",
    ),
    Mutant(
        "contacts condition widened with ||",
        "iam.tf",
        '/objects/contacts/\\")"',
        '/objects/contacts/\\") || true"',
        "function_grants",
    ),
    Mutant(
        "budget granted in the shards bucket, whose every object triggers the loader",
        "iam.tf",
        '  bucket   = google_storage_bucket.state.name\n  role     = "roles/storage.objectUser"',
        '  bucket   = google_storage_bucket.shards.name\n  role     = "roles/storage.objectUser"',
        "function_grants",
    ),
    Mutant(
        "budget grant to a function that does not call Cademi",
        "iam.tf",
        'toset(["extract_progress", "add_tag", "slack_command"])',
        'toset(["extract_progress", "add_tag", "slack_command", "extract_tags"])',
        "function_grants",
    ),
    Mutant(
        "bucket role swapped to objectUser",
        "iam.tf",
        '"extract_progress/creator" = { fn = "extract_progress", role = "roles/storage.objectCreator" }\n    "load',
        '"extract_progress/creator" = { fn = "extract_progress", role = "roles/storage.objectUser" }\n    "load',
        "function_grants",
    ),
    Mutant(
        "lane objects created in the shards bucket, whose every object triggers the loader",
        "iam.tf",
        '    "extract_tags/viewer"      = { fn = "extract_tags", role = "roles/storage.objectViewer" }\n'
        '    "extract_progress/viewer"',
        '    "extract_tags/viewer"      = { fn = "extract_tags", role = "roles/storage.objectViewer" }\n'
        '    "extract_tags/creator"     = { fn = "extract_tags", role = "roles/storage.objectCreator" }\n'
        '    "extract_progress/viewer"',
        "function_grants",
    ),
    Mutant(
        "digest claims granted in the shards bucket",
        "iam.tf",
        '  bucket = google_storage_bucket.state.name\n  role   = "roles/storage.objectUser"\n'
        '  member = google_service_account.fn["notify_tutors"]',
        '  bucket = google_storage_bucket.shards.name\n  role   = "roles/storage.objectUser"\n'
        '  member = google_service_account.fn["notify_tutors"]',
        "function_grants",
    ),
    # invokers and the other identities
    Mutant(
        "invoker to the wrong identity",
        "iam.tf",
        'service  = google_cloudfunctions2_function.fn["load_history"].name\n  role     = "roles/run.invoker"\n'
        "  member   = google_service_account.trigger.member",
        'service  = google_cloudfunctions2_function.fn["load_history"].name\n  role     = "roles/run.invoker"\n'
        "  member   = google_service_account.builder.member",
        "infrastructure_grants",
    ),
    Mutant(
        "pusher invoker on the wrong function",
        "iam.tf",
        '  service  = google_cloudfunctions2_function.fn["record_failures"].name',
        '  service  = google_cloudfunctions2_function.fn["notify_tutors"].name',
        "infrastructure_grants",
    ),
    Mutant(
        "a public invoker missing",
        "form.tf",
        'toset(["slack_command", "slack_actions"])',
        'toset(["slack_command"])',
        "infrastructure_grants",
    ),
    Mutant(
        "a public invoker added",
        "form.tf",
        'toset(["slack_command", "slack_actions"])',
        'toset(["slack_command", "slack_actions", "add_tag"])',
        "infrastructure_grants",
    ),
    Mutant(
        "Eventarc agent's role missing",
        "iam.tf",
        '"roles/eventarc.serviceAgent"',
        '"roles/eventarc.eventReceiver"',
        "infrastructure_grants",
    ),
    Mutant(
        "builder's gcf-v2-sources read unconditioned",
        "iam.tf",
        '  condition {\n    title      = "gcf-v2-sources-only"\n'
        '    expression = "resource.name.startsWith(\\"projects/_/buckets/gcf-v2-sources-'
        '${data.google_project.this.number}-${var.region}\\")"\n  }\n',
        "",
        "infrastructure_grants",
    ),
    Mutant(
        "builder reads the wrong region's sources",
        "iam.tf",
        '-${var.region}\\")',
        '-us-central1\\")',
        "infrastructure_grants",
    ),
    Mutant(
        "Pub/Sub agent cannot publish dead letters",
        "iam.tf",
        "for_each = { for k, v in local.push : k => v.dlq }",
        "for_each = { for k, v in local.push : k => v.topic }",
        "infrastructure_grants",
    ),
    # wiring
    Mutant(
        "subscription to the wrong topic",
        "pubsub.tf",
        'extract_progress = { topic = "progress", dlq',
        'extract_progress = { topic = "schedule", dlq',
        "wiring",
    ),
    Mutant(
        "subscription pushes to the wrong function",
        "pubsub.tf",
        'push_endpoint = "${google_cloudfunctions2_function.fn[each.key].service_config[0].uri}',
        'push_endpoint = "${google_cloudfunctions2_function.fn["extract_tags"].service_config[0].uri}',
        "wiring",
    ),
    Mutant(
        "dead-letter topic equal to its source", "pubsub.tf", 'dlq = "slack_tasks_dlq"', 'dlq = "slack_tasks"', "wiring"
    ),
    Mutant(
        "ack deadline below the timeout",
        "pubsub.tf",
        'dlq = "progress_dlq", ack = 600',
        'dlq = "progress_dlq", ack = 300',
        "wiring",
    ),
    Mutant(
        "recorder ack deadline below its timeout",
        "pubsub.tf",
        "ack_deadline_seconds = 90",
        "ack_deadline_seconds = 30",
        "wiring",
    ),
    Mutant(
        "a dead-letter topic not recorded",
        "pubsub.tf",
        '{ for k, v in local.topics : k => v if endswith(k, "_dlq") }\n  name                 = "${each.value}-record"',
        '{ for k, v in local.topics : k => v if endswith(k, "_dlq") && k != "shards_dlq" }\n'
        '  name                 = "${each.value}-record"',
        "wiring",
    ),
    Mutant("wrong ingress for the buttons", "functions.tf", 'slack_actions = "ALLOW_ALL" }', "}", "wiring"),
    Mutant(
        "trigger on the wrong bucket",
        "functions.tf",
        "value     = google_storage_bucket.shards.name",
        "value     = google_storage_bucket.sources.name",
        "wiring",
    ),
    # waits
    Mutant(
        "functions do not wait for their grants",
        "functions.tf",
        "    time_sleep.grants_ready,\n",
        "",
        "waits",
    ),
    Mutant(
        "a grant missing from the wait", "iam.tf", "    google_project_iam_member.eventarc_agent,\n  ]", "  ]", "waits"
    ),
    Mutant(
        "subscriptions do not wait for invokers",
        "pubsub.tf",
        "  depends_on = [time_sleep.invokers_ready]\n}\n\n# Every",
        "}\n\n# Every",
        "waits",
    ),
    Mutant(
        "an agent's grant before it propagated",
        "iam.tf",
        "  member  = local.gcs_agent\n  # a role cannot be granted to an agent before it has propagated\n"
        "  depends_on = [time_sleep.agents_ready]\n",
        "  member  = local.gcs_agent\n",
        "waits",
    ),
    # contact data: notify_tutors reads names through the authorized view, nothing else of the restricted dataset
    # issue 24 and 25's needs: carrying reads the history, extraction checks the erasure registry with its key
    Mutant(
        "the erasure key not granted to extraction",
        "locals.tf",
        'extract_progress = ["CADEMI_API_KEY", "PRIVACY_KEY"]',
        'extract_progress = ["CADEMI_API_KEY"]',
        "function_grants",
    ),
    Mutant(
        "carrying cannot read the history",
        "iam.tf",
        'extract_progress = ["loads", "progress_history"]',
        'extract_progress = ["loads"]',
        "function_grants",
    ),
    Mutant(
        "contact retention cannot delete",
        "iam.tf",
        'extract_tags     = ["runs", "failures", "students"]',
        'extract_tags     = ["runs", "failures"]',
        "function_grants",
    ),
    Mutant(
        "view not authorized",
        "bigquery.tf",
        'resource "google_bigquery_dataset_access" "student_names" {\n'
        "  dataset_id = google_bigquery_dataset.restricted",
        'resource "google_bigquery_dataset_access" "student_names" {\n  dataset_id = google_bigquery_dataset.slack',
        "authorized_views",
    ),
    Mutant(
        "dataset IAM member on the restricted dataset",
        "iam.tf",
        'resource "google_bigquery_dataset_iam_member" "loader" {\n  dataset_id = google_bigquery_dataset.main',
        'resource "google_bigquery_dataset_iam_member" "loader" {\n  dataset_id = google_bigquery_dataset.restricted',
        "authorized_views",
    ),
    Mutant(
        "the Slack agent reads all contact data",
        "bigquery.tf",
        'role           = "READER" # roles/bigquery.dataViewer: the tutors\' list and contact data, in Looker Studio\n'
        "  group_by_email = var.reporting.tutors_group",
        'role           = "READER" # roles/bigquery.dataViewer: the tutors\' list and contact data, in Looker Studio\n'
        '  user_by_email  = google_service_account.fn["notify_tutors"].email',
        "function_grants",
    ),
    Mutant(
        "names view granted to the wrong function",
        "iam.tf",
        '  member     = google_service_account.fn["notify_tutors"].member\n' + WAIT + "}\n\n# The digest",
        '  member     = google_service_account.fn["add_tag"].member\n' + WAIT + "}\n\n# The digest",
        "function_grants",
    ),
]


def _copy(tmp_path: Path) -> Path:
    """infra/terraform copied two levels below a root whose src/ and functions/ are the repository's."""
    root = tmp_path / "repo"
    target = root / "infra" / "terraform"
    target.mkdir(parents=True)
    for path in TF.iterdir():
        if path.is_file() and (path.suffix == ".tf" or path.name == "terraform.tfvars.example"):
            shutil.copy(path, target / path.name)
    for name in ("src", "functions"):
        (root / name).symlink_to(ROOT / name)
    return target


def test_there_are_at_least_thirty_mutants_with_distinct_names() -> None:
    assert len(MUTANTS) >= 30 and len({m.name for m in MUTANTS}) == len(MUTANTS)


def test_every_check_passes_on_the_unmutated_copy(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    assert {name: check(directory) for name, check in CHECKS.items()} == {name: [] for name in CHECKS}


EVALUATOR_MUTANTS = [m for m in MUTANTS if m.killer in CHECKS]


def test_every_mutant_names_a_check_that_exists() -> None:
    assert {m.killer for m in MUTANTS} <= {*CHECKS, VALIDATE, PLAN}


@pytest.mark.parametrize("mutant", EVALUATOR_MUTANTS, ids=[m.name for m in EVALUATOR_MUTANTS])
def test_the_mutant_is_killed(mutant: Mutant, tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    path = directory / mutant.file
    text = path.read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: its text occurs {text.count(mutant.old)} times"
    path.write_text(text.replace(mutant.old, mutant.new))
    try:
        errors = CHECKS[mutant.killer](directory)
    except Exception as error:  # a configuration the evaluator cannot read fails loudly, which kills it too
        errors = [f"{type(error).__name__}: {error}"]
    # Killed only by an error the unmutated copy does not have (while that copy fails, the test above says so).
    new = set(errors) - set(_unmutated_errors(mutant.killer, tmp_path))
    assert new, f"mutant survived: {mutant.name}"


_baseline: dict[str, list[str]] = {}


def _unmutated_errors(check: str, tmp_path: Path) -> list[str]:
    if check not in _baseline:
        _baseline[check] = CHECKS[check](_copy(tmp_path / "unmutated"))
    return _baseline[check]
