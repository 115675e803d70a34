"""Google's IAM rules as a test: Terraform grants each function exactly what its code's calls need.

CALLS is read from the code (the modules each function imports): every BigQuery table it reads or writes,
every topic it publishes to, what it does in the shards bucket, every secret it reads. The grants are read
from infra/terraform. A call with no grant fails (a 403 in the cloud); a grant no call needs fails too.
"""

from __future__ import annotations

import json
import re
from typing import Any

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
# What one grant of a role allows, in the terms of CALLS.
BUCKET_ROLES = {
    "roles/storage.objectViewer": ("objects.read",),
    "roles/storage.objectCreator": ("objects.create",),
}
FN_MEMBER = re.compile(r'google_service_account\.fn\[\\?"?(\w+)\\?"?\]\.member')


def body_text(body: Any) -> str:
    return json.dumps(body)


def grants() -> dict[str, set[tuple[str, str]]]:
    """Per function, what Terraform grants it (each IAM resource that names a function's account)."""
    loc = tf_locals()
    granted: dict[str, set[tuple[str, str]]] = {fn: set() for fn in loc["functions"]}
    seen: set[str] = set()

    def grant(fn: str, *items: tuple[str, str]) -> None:
        granted[fn].update(items)

    jobs = resources("google_project_iam_member")["bigquery_jobs"]
    assert jobs["for_each"] == "${toset(local.bigquery_functions)}" and jobs["role"] == "roles/bigquery.jobUser"
    expression = loc["bigquery_functions"]
    assert expression.startswith("${[for k in keys(local.functions) : k if k != "), expression
    excluded = set(re.findall(r'k != \\?"(\w+)\\?"', expression))
    for fn in set(loc["functions"]) - excluded:
        grant(fn, ("bigquery.jobs", "project"))
    seen.add("google_project_iam_member.bigquery_jobs")

    table = resources("google_bigquery_table_iam_member")["table"]
    assert table["for_each"] == "${local.table_bindings}"
    for fn, tables in loc["table_readers"].items():
        grant(fn, *(("table.read", t) for t in tables))
    for fn, tables in loc["table_writers"].items():
        grant(fn, *(("table.read", t) for t in tables), *(("table.write", t) for t in tables))
    bindings = (TF / "iam.tf").read_text()
    assert '"roles/bigquery.dataViewer" } }]...),' in bindings and '"roles/bigquery.dataEditor" } }]...),' in bindings
    seen.add("google_bigquery_table_iam_member.table")

    loader = resources("google_bigquery_dataset_iam_member")["loader"]
    assert loader["role"] == "roles/bigquery.dataEditor"
    (fn,) = FN_MEMBER.findall(body_text(loader))
    assert set(loader["for_each"]) == {MAIN, RESTRICTED}
    grant(fn, ("dataset.write", MAIN), ("dataset.write", RESTRICTED))
    seen.add("google_bigquery_dataset_iam_member.loader")

    for binding in loc["bucket_bindings"].values():
        grant(binding["fn"], *(("objects." + r.split(".")[1], "shards") for r in BUCKET_ROLES[binding["role"]]))
    assert resources("google_storage_bucket_iam_member")["shards"]["for_each"] == "${local.bucket_bindings}"
    seen.add("google_storage_bucket_iam_member.shards")

    contacts = resources("google_storage_bucket_iam_member")["loader_contacts"]
    role = resources("google_project_iam_custom_role")["contacts_deleter"]
    assert contacts["role"] == "${google_project_iam_custom_role.contacts_deleter.id}"
    assert role["permissions"] == ["storage.objects.delete"]
    assert "/objects/contacts/" in contacts["condition"][0]["expression"]
    (fn,) = FN_MEMBER.findall(body_text(contacts))
    grant(fn, ("objects.delete", "shards/contacts/"))
    seen.add("google_storage_bucket_iam_member.loader_contacts")

    tutors = resources("google_bigquery_dataset_iam_member")["tutors_agent"]
    assert tutors["role"] == "roles/bigquery.dataViewer" and set(tutors["for_each"]) == {MAIN, RESTRICTED}
    (fn,) = FN_MEMBER.findall(body_text(tutors))
    grant(fn, ("dataset.read", MAIN), ("dataset.read", RESTRICTED))
    seen.add("google_bigquery_dataset_iam_member.tutors_agent")

    claims = resources("google_storage_bucket_iam_member")["digest_claims"]
    assert claims["role"] == "roles/storage.objectUser"
    assert (
        "startsWith" in claims["condition"][0]["expression"]
        and "/objects/slack/" in claims["condition"][0]["expression"]
    )
    (fn,) = FN_MEMBER.findall(body_text(claims))
    grant(fn, ("objects.readwrite", "shards/slack/"))
    seen.add("google_storage_bucket_iam_member.digest_claims")

    budget = resources("google_storage_bucket_iam_member")["cademi_budget"]
    assert budget["role"] == "roles/storage.objectUser"
    assert "/objects/budget/cademi.json" in budget["condition"][0]["expression"]
    assert budget["condition"][0]["expression"].startswith("resource.name ==")  # that object only
    for fn in budget["for_each"].removeprefix("${toset([").removesuffix("])}").replace('"', "").split(", "):
        grant(fn, ("objects.readwrite", "shards/budget/cademi.json"))
    seen.add("google_storage_bucket_iam_member.cademi_budget")

    for fn, topics in loc["publishers"].items():
        grant(fn, *(("topic.publish", t) for t in topics))
    assert resources("google_pubsub_topic_iam_member")["publisher"]["role"] == "roles/pubsub.publisher"
    seen.add("google_pubsub_topic_iam_member.publisher")

    for fn, names in loc["secret_readers"].items():
        grant(fn, *(("secret", n) for n in names))
    seen.add("google_secret_manager_secret_iam_member.reader")

    # Any other grant to a function's account is one this table does not know: fail rather than miss it.
    for group in parsed()["resource"]:
        for kind, instances in group.items():
            for name, body in instances.items():
                address = f"{unquote(kind)}.{unquote(name)}"
                if "_iam_" in address and FN_MEMBER.search(body_text(body)) and address not in seen:
                    raise AssertionError(f"{address} grants a function something this test does not model")
    return granted


def covers(grant: tuple[str, str], call: tuple[str, str]) -> bool:
    """Whether a grant allows a call (a dataset-wide grant covers its tables)."""
    if grant == call:
        return True
    kind, target = grant
    readable = ("table.read",) if kind == "dataset.read" else ("table.read", "table.write")
    if kind in ("dataset.read", "dataset.write") and call[0] in readable:
        restricted = call[1] in {"students", "tutor_list"}
        return target == (RESTRICTED if restricted else MAIN)
    return False


def test_every_call_of_every_function_is_granted() -> None:
    granted = grants()
    missing = {
        fn: sorted(c for c in calls if not any(covers(g, c) for g in granted[fn])) for fn, calls in CALLS.items()
    }
    assert not any(missing.values()), missing


def test_no_function_holds_a_grant_its_code_does_not_use() -> None:
    granted = grants()
    unused = {fn: sorted(g for g in granted[fn] if not any(covers(g, c) for c in CALLS[fn])) for fn in CALLS}
    assert not any(unused.values()), unused


def test_the_table_of_calls_names_every_deployed_function() -> None:
    assert set(CALLS) == set(tf_locals()["functions"])


def test_every_push_subscription_identity_can_invoke_its_target() -> None:
    push = tf_locals()["push"]
    subscription = resources("google_pubsub_subscription")["push"]
    oidc = subscription["push_config"][0]["oidc_token"][0]["service_account_email"]
    assert oidc == "${google_service_account.pusher.email}"
    assert subscription["for_each"] == "${local.push}"
    invoker = resources("google_cloud_run_service_iam_member")["pusher"]
    assert invoker["for_each"] == "${local.push}" and invoker["role"] == "roles/run.invoker"
    assert invoker["service"] == "${google_cloudfunctions2_function.fn[each.key].name}"
    assert invoker["member"] == "${google_service_account.pusher.member}"
    # load_history: shard reloads; notify_tutors: the Slack tasks
    assert set(push) == {"extract_tags", "extract_progress", "load_history", "notify_tutors"}


def test_every_dead_letter_topic_pushes_to_the_recorder_which_the_pusher_may_invoke() -> None:
    topics = tf_locals()["topics"]
    records = resources("google_pubsub_subscription")["dead_letter_records"]
    assert records["for_each"] == '${{for k, v in local.topics : k => v if endswith(k, "_dlq")}}'
    assert {k for k in topics if k.endswith("_dlq")} == {
        "schedule_dlq",
        "progress_dlq",
        "shards_dlq",
        "slack_tasks_dlq",
    }
    endpoint = records["push_config"][0]["push_endpoint"]
    assert endpoint.startswith('${google_cloudfunctions2_function.fn["record_failures"].service_config[0].uri}')
    assert (
        records["push_config"][0]["oidc_token"][0]["service_account_email"] == "${google_service_account.pusher.email}"
    )
    assert "dead_letter_policy" not in records  # a recorder's failure is retried, never dead-lettered in a loop
    assert records["ack_deadline_seconds"] >= tf_locals()["functions"]["record_failures"]["timeout"]
    invoker = resources("google_cloud_run_service_iam_member")["recorder"]
    assert invoker["service"] == '${google_cloudfunctions2_function.fn["record_failures"].name}'
    assert invoker["role"] == "roles/run.invoker" and invoker["member"] == "${google_service_account.pusher.member}"


def test_the_pubsub_agent_can_dead_letter_and_sign_push_tokens() -> None:
    loc = tf_locals()
    assert loc["pubsub_agent"] == '${google_project_service_identity.agent["pubsub.googleapis.com"].member}'
    publisher = resources("google_pubsub_topic_iam_member")["dead_letter_publisher"]
    assert publisher["role"] == "roles/pubsub.publisher" and publisher["member"] == "${local.pubsub_agent}"
    assert publisher["for_each"] == "${{for k, v in local.push : k => v.dlq}}"
    subscriber = resources("google_pubsub_subscription_iam_member")["dead_letter_subscriber"]
    assert subscriber["role"] == "roles/pubsub.subscriber" and subscriber["member"] == "${local.pubsub_agent}"
    assert subscriber["for_each"] == "${local.push}"
    subscription = resources("google_pubsub_subscription")["push"]
    assert (
        subscription["dead_letter_policy"][0]["dead_letter_topic"] == "${google_pubsub_topic.topic[each.value.dlq].id}"
    )
    token = resources("google_service_account_iam_member")["pubsub_token_creator"]
    assert token["role"] == "roles/iam.serviceAccountTokenCreator" and token["member"] == "${local.pubsub_agent}"


def test_the_eventarc_chain_has_its_roles_before_the_trigger_exists() -> None:
    project = resources("google_project_iam_member")
    assert project["gcs_publisher"]["role"] == "roles/pubsub.publisher"
    assert project["gcs_publisher"]["member"] == "${local.gcs_agent}"
    assert project["trigger_receiver"]["role"] == "roles/eventarc.eventReceiver"
    assert project["trigger_receiver"]["member"] == "${google_service_account.trigger.member}"
    invoker = resources("google_cloud_run_service_iam_member")["trigger"]
    assert invoker["role"] == "roles/run.invoker" and 'fn["load_history"]' in invoker["service"]
    function = resources("google_cloudfunctions2_function")["fn"]
    trigger = function["dynamic"][0]["event_trigger"]["content"][0]
    assert trigger["service_account_email"] == "${google_service_account.trigger.email}"
    needs = {
        "${google_project_iam_member.gcs_publisher}",
        "${google_project_iam_member.trigger_receiver}",
        "${time_sleep.agents_ready}",
    }
    assert needs <= set(function["depends_on"])


def test_functions_build_as_their_own_builder_account() -> None:
    function = resources("google_cloudfunctions2_function")["fn"]
    assert function["build_config"][0]["service_account"] == "${google_service_account.builder.id}"
    roles = resources("google_project_iam_member")["builder"]
    assert set(
        roles["for_each"].strip("${}").removeprefix("toset(").rstrip(")").replace('"', "").strip("[]").split(", ")
    ) == {
        "roles/logging.logWriter",
        "roles/artifactregistry.writer",
    }
    sources = resources("google_storage_bucket_iam_member")["builder_sources"]
    assert sources["role"] == "roles/storage.objectViewer"
    assert "${google_project_iam_member.builder}" in function["depends_on"]


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
