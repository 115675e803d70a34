"""Google's IAM rules as a test: Terraform grants each function exactly what its code's calls need.

CALLS is read from the code (the modules each function imports): every BigQuery table it reads or writes,
every topic it publishes to, what it does in the shards bucket, every secret it reads. The grants are read
from the resource blocks of infra/terraform that make them, each resolved (tests/tf_model.py): for_each,
member, role, target and condition as Terraform will create them. A call with no grant fails (a 403 in the
cloud); a grant no call needs fails too. tests/test_terraform_mutants.py plants defects to show each check fails.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from tests import tf_model
from tests.test_terraform import TF, parsed, resources, tf_locals, unquote

MAIN, RESTRICTED = "main", "restricted"
RUN_BOOKKEEPING = {  # runs.refresh_run / record_failure, reached by every stage's failure policy
    ("table.read", "runs"),
    ("table.write", "runs"),
    ("table.read", "loads"),
    ("table.read", "failures"),
    ("table.write", "failures"),
}
CALLS: dict[str, set[tuple[str, str]]] = {
    # stages/schedule.py, health.py, runs.py, failures.py
    "extract_tags": RUN_BOOKKEEPING
    | {
        ("bigquery.jobs", "project"),
        ("table.read", "registered_tags"),  # warehouse.active_tags
        ("table.read", "tracks"),
        ("topic.publish", "progress"),  # fan-out, resume
        ("topic.publish", "schedule_dlq"),  # failure policy
        ("topic.publish", "shard_reloads"),  # health.reload_unloaded: a lost load event, sent again
        ("topic.publish", "slack_tasks"),  # health.request_recent_digests
        ("objects.read", "shards"),  # health.resume_run: list a run's shards and read their metadata
        ("objects.create", "shards"),  # lanes: the run's tag manifest and its lanes' first claims
    },
    # stages/extract.py, shard_store.py, failures.py
    "extract_progress": RUN_BOOKKEEPING
    | {
        ("bigquery.jobs", "project"),
        ("secret", "CADEMI_API_KEY"),
        ("objects.read", "shards"),  # get_blob, read_roster
        ("objects.create", "shards"),  # create_once (if_generation_match=0: never an overwrite), lane claims
        ("objects.readwrite", "shards/budget/cademi.json"),  # budget.FleetBudget claims call slots
        ("topic.publish", "progress"),  # continuations, a lane's next tag
        ("topic.publish", "progress_dlq"),
    },
    # stages/load.py, loader.py (staging tables in both datasets), reporting.refresh (tables and views)
    "load_history": {
        ("bigquery.jobs", "project"),
        ("dataset.write", MAIN),
        ("dataset.write", RESTRICTED),
        ("objects.read", "shards"),  # shard metadata; the load job reads the object as this identity
        ("objects.delete", "shards/contacts/"),  # merged contact files
        ("topic.publish", "shards_dlq"),
        ("topic.publish", "slack_tasks"),  # stages/load sends a DigestTask after the reports are rebuilt
    },
    # add_tag/registry.py
    "add_tag": {
        ("bigquery.jobs", "project"),
        ("table.read", "tracks"),
        ("table.read", "registered_tags"),
        ("table.write", "registered_tags"),
        ("secret", "CADEMI_API_KEY"),
        ("secret", "FORM_CSRF_SECRET"),
        ("objects.readwrite", "shards/budget/cademi.json"),  # the tag check with Cademi takes a budget slot
    },
    "slack_command": {
        ("bigquery.jobs", "project"),
        ("table.read", "tracks"),
        ("table.read", "registered_tags"),
        ("table.write", "registered_tags"),
        ("table.read", "slack_channels"),  # /turma canal
        ("table.write", "slack_channels"),
        ("secret", "CADEMI_API_KEY"),
        ("secret", "SLACK_SIGNING_SECRET"),
        ("objects.readwrite", "shards/budget/cademi.json"),
        ("topic.publish", "slack_tasks"),  # /turma alunos, answered by notify_tutors
    },
    # tutors/actions.py handle_interaction: verify, then publish the click (no BigQuery, no bucket)
    "slack_actions": {
        ("secret", "SLACK_SIGNING_SECRET"),
        ("topic.publish", "slack_tasks"),
    },
    # tutors/worker.py, digest.py, actions.py (and the failure policy)
    "notify_tutors": RUN_BOOKKEEPING
    | {
        ("bigquery.jobs", "project"),
        ("secret", "SLACK_BOT_TOKEN"),
        # the reporting tables are rebuilt by the loader (not Terraform's to grant one by one), the names and
        # the tutors' list are in the restricted dataset: read on both datasets
        ("dataset.read", MAIN),
        ("dataset.read", RESTRICTED),
        ("table.read", "registered_tags"),  # digest.CHANNELS_SQL
        ("table.read", "tracks"),
        ("table.read", "slack_channels"),
        ("table.read", "report_student_week"),  # COUNTS_SQL, FLAGGED_SQL (a reporting table)
        ("table.read", "students"),  # the names the digest shows
        ("table.read", "tutor_list"),  # /turma alunos
        ("table.read", "tutor_actions"),
        ("table.write", "tutor_actions"),  # a click
        ("table.read", "slack_digests"),
        ("table.write", "slack_digests"),  # what was posted
        ("objects.readwrite", "shards/slack/"),  # digest claims: create once, rewrite, release
        ("topic.publish", "slack_tasks_dlq"),
    },
    # dead_letters.py: a dead-lettered message's failures row, and its run's status (no publish: it has no
    # dead-letter topic of its own)
    "record_failures": RUN_BOOKKEEPING | {("bigquery.jobs", "project")},
}


def body_text(body: Any) -> str:
    return json.dumps(body)


@cache
def model() -> tf_model.Model:
    return tf_model.load(TF)


def test_every_function_holds_exactly_what_its_code_calls() -> None:
    """Read from the resource blocks that grant (for_each, member, role, target, condition resolved)."""
    assert tf_model.check_function_grants(model(), CALLS) == []


def test_the_table_of_calls_names_every_deployed_function() -> None:
    assert set(CALLS) == set(tf_locals()["functions"])


def test_every_other_identity_holds_exactly_what_its_use_needs() -> None:
    """Push identity, Pub/Sub, IAP, Storage and Eventarc agents, the trigger, the builder, allUsers."""
    assert tf_model.check_infrastructure_grants(model()) == []
    assert tf_model.parse_builder_condition(model()) == []


def test_push_subscriptions_dead_letters_triggers_and_ingress_are_wired() -> None:
    assert tf_model.check_wiring(model()) == []


def test_the_public_endpoints_are_exactly_the_documented_ones() -> None:
    public = {b.target.removeprefix("function:") for b in model().bindings if b.member == "allUsers"}
    assert public == tf_model.public_endpoints_documented() == {"slack_command", "slack_actions"}


def test_every_grant_to_a_fresh_identity_is_waited_for_by_what_uses_it() -> None:
    assert tf_model.check_waits(model()) == []


def test_every_reference_and_instance_exists() -> None:
    assert tf_model.check_references(model()) == []


def test_conditions_are_parsed_not_matched_as_text() -> None:
    parse = tf_model.parse_condition
    assert parse('resource.name.startsWith("projects/_/buckets/b/objects/slack/")') == (
        "startsWith",
        "b/objects/slack/",
    )
    assert parse('resource.name == "projects/_/buckets/b/objects/x.json"') == ("==", "b/objects/x.json")
    for wider in (
        "true",
        'resource.name.startsWith("projects/_/buckets/b/objects/slack/") || true',
        'resource.name.endsWith("/objects/slack/")',
        'resource.type == "storage.googleapis.com/Object"',
    ):
        assert parse(wider)[0] == "unparsed", wider
    assert tf_model.object_path(("startsWith", "${google_storage_bucket.shards.name}/objects/"), "shards") is None
    assert (
        tf_model.object_path(("==", "${google_storage_bucket.shards.name}/objects/budget/cademi.json"), "shards")
        == "budget/cademi.json"
    )


REFERENCE = re.compile(r"\b(google_[a-z0-9_]+|time_sleep)\.([a-z0-9_]+)")


def test_every_resource_waits_for_the_apis_and_agents_it_needs() -> None:
    """Directly or through what it references, every Google resource and data source depends on the wait
    after API enablement; every grant to a Google service agent goes through the agent's creation."""
    nodes: dict[str, str] = {}
    for section in ("resource", "data"):
        for group in parsed().get(section, []):
            for kind, instances in group.items():
                for name, body in instances.items():
                    prefix = "data." if section == "data" else ""
                    nodes[f"{prefix}{unquote(kind)}.{unquote(name)}"] = body_text(body)
    local_values = {name: body_text(value) for name, value in tf_locals().items()}

    def references(text: str, seen_locals: frozenset[str] = frozenset()) -> set[str]:
        found = {f"{k}.{n}" for k, n in REFERENCE.findall(text)}
        found |= {f"data.{k}.{n}" for k, n in re.findall(r"\bdata\.(google_[a-z0-9_]+)\.([a-z0-9_]+)", text)}
        for name in set(re.findall(r"\blocal\.([a-z0-9_]+)", text)) - seen_locals:  # what a local refers to
            found |= references(local_values.get(name, ""), seen_locals | {name})
        return found & set(nodes)

    ready: dict[str, bool] = {"time_sleep.apis_ready": True, "google_project_service.apis": False}

    def waits(address: str, path: tuple[str, ...] = ()) -> bool:
        if address in ready:
            return ready[address]
        if address in path:
            return False
        ready[address] = any(waits(r, (*path, address)) for r in references(nodes[address]) - {address})
        return ready[address]

    late = sorted(a for a in nodes if a.split(".")[-2].startswith("google") and not waits(a))
    late = [a for a in late if a != "google_project_service.apis"]
    assert late == [], f"these may be created before their API is usable: {late}"
    agents = tf_locals()
    for name in ("pubsub_agent", "iap_agent"):
        assert agents[name].startswith("${google_project_service_identity.agent["), name
    iap = resources("google_cloud_run_service_iam_member")["iap_invoker"]
    assert iap["member"] == "${local.iap_agent}"


def test_service_account_ids_fit_for_the_longest_allowed_prefix() -> None:
    variables = (TF / "variables.tf").read_text()
    pattern = re.search(r'condition\s*=\s*can\(regex\("([^"]+)", var\.prefix\)\)', variables)
    assert pattern is not None
    regex = re.compile(pattern.group(1).replace("\\\\", "\\"))
    longest = next(n for n in range(40, 0, -1) if regex.match("a" * n))
    assert not regex.match("a" * (longest + 1)) and not regex.match("ab-")
    suffixes = [k.replace("_", "-") for k in tf_locals()["functions"]] + ["pubsub-push", "eventarc", "builder"]
    for suffix in suffixes:
        account_id = f"{'a' * longest}-{suffix}"
        assert 6 <= len(account_id) <= 30, account_id
    assert re.search(r'account_id\s*=\s*"\$\{var\.prefix\}-', (TF / "iam.tf").read_text())
