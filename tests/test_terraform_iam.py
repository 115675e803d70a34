"""Google's IAM rules as a test: Terraform grants each function exactly what its code's calls need.

The needs are derived from the code (tests/iam_needs.py), never kept by hand: every function that calls a Google
client declares what it needs with `platform.access.needs`; from each function's entry point (Terraform's
`local.functions`) a static call graph reaches those wrappers, and each call site's resource is read from the
code (the SQL's tables, the topic, the secret, the object-name contract). A call site the code cannot resolve
fails, unless UNRESOLVED below says why; a Google call outside a declared wrapper fails too. The grants are read
from the resource blocks of infra/terraform that make them, each resolved (tests/tf_model.py): for_each, member,
role, target and condition as Terraform will create them. A call with no grant fails (a 403 in the cloud); a
grant no call needs fails too. tests/test_terraform_mutants.py plants defects to show each check fails, and the
tests below plant a Google call outside the wrappers and a new query to show the derivation fails.
"""

from __future__ import annotations

import json
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

from tests import iam_needs, tf_model
from tests.test_terraform import TF, parsed, resources, tf_locals, unquote

# Needs the code cannot say, each with its reason: (caller, wrapper) -> the resource used instead.
UNRESOLVED = {
    # load_history loads the object its finalize event names (whatever the event says): any object of the bucket
    ("progress_monitor.stages.load._load_progress", "progress_monitor.platform.shard_store.get_blob"): "shards",
}


@cache
def derivation() -> iam_needs.Derivation:
    return iam_needs.derive(tf_locals()["functions"], UNRESOLVED)


def calls() -> dict[str, set[tuple[str, str]]]:
    """Function -> every (kind, resource) its code needs, in tests/tf_model.py's terms (`capabilities`)."""
    return derivation().needs()


def body_text(body: Any) -> str:
    return json.dumps(body)


@cache
def model() -> tf_model.Model:
    return tf_model.load(TF)


def test_every_function_holds_exactly_what_its_code_calls() -> None:
    """Read from the resource blocks that grant (for_each, member, role, target, condition resolved)."""
    assert tf_model.check_function_grants(model(), calls()) == []


def test_the_table_of_calls_names_every_deployed_function() -> None:
    assert set(calls()) == set(tf_locals()["functions"])


def test_every_call_site_reached_names_its_resource() -> None:
    """Each wrapper call site's table, topic, secret or object is read from the code (or explained above)."""
    assert derivation().errors() == []
    assert derivation().unused_overrides == set(), "an UNRESOLVED entry no call site uses: remove it"


def test_no_google_call_outside_a_declared_wrapper() -> None:
    assert iam_needs.outside_wrappers() == []


def test_every_other_identity_holds_exactly_what_its_use_needs() -> None:
    """Push identity, Pub/Sub, IAP, Storage and Eventarc agents, the trigger, the builder, allUsers."""
    assert tf_model.check_infrastructure_grants(model()) == []
    assert tf_model.parse_builder_condition(model()) == []


def test_push_subscriptions_dead_letters_triggers_and_ingress_are_wired() -> None:
    assert tf_model.check_wiring(model()) == []


def test_the_forms_plain_http_only_redirects_to_https() -> None:
    assert tf_model.check_form_https(model()) == []


def test_every_dataset_keeps_the_minimum_time_travel() -> None:
    """Issue 30 finding 2: erased rows stay readable through time travel for as long as it lasts."""
    assert tf_model.check_time_travel(model()) == []


def test_the_public_endpoints_are_exactly_the_documented_ones() -> None:
    public = {b.target.removeprefix("function:") for b in model().bindings if b.member == "allUsers"}
    assert public == tf_model.public_endpoints_documented() == {"slack_command", "slack_actions"}


def test_every_grant_to_a_fresh_identity_is_waited_for_by_what_uses_it() -> None:
    assert tf_model.check_waits(model()) == []


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


# -- the derivation can fail --------------------------------------------------------------------------------


def _package_copy(tmp_path: Path) -> Path:
    root = tmp_path / "progress_monitor"
    shutil.copytree(iam_needs.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _plant(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path.name} changed: update the planted text"
    path.write_text(text.replace(old, new), encoding="utf-8")


PLANTED_CALLS = """from google.cloud import bigquery
from progress_monitor import services
from progress_monitor.platform.access import needs

def count(svc):
    return svc.bigquery.query("SELECT 1").result()

def listing(bucket):
    return list(bucket.list_blobs(prefix="x"))

def client():
    return bigquery.Client()

def secret():
    from google.cloud import secretmanager
    return secretmanager

def typed(table: bigquery.Table) -> bigquery.Table:
    return bigquery.Table("p.d.t")

@needs("objects.read shards")
def declared(bucket):
    return list(bucket.list_blobs())
"""


def test_a_google_call_outside_the_wrappers_is_caught(tmp_path: Path) -> None:
    """A query, a listing, a client and a lazy import outside a wrapper; a type and a declared call are fine."""
    root = _package_copy(tmp_path)
    before = set(iam_needs.outside_wrappers(root))
    (root / "planted.py").write_text(PLANTED_CALLS, encoding="utf-8")
    new = set(iam_needs.outside_wrappers(root)) - before
    assert {int(f.split(":")[1]) for f in new} == {6, 9, 12, 15, 16}, sorted(new)
    assert all(f.startswith("planted.py:") for f in new)


def test_a_new_query_or_message_in_a_function_is_derived_and_fails_the_grants(tmp_path: Path) -> None:
    """record_failures gains a query on `tracks` and a digest request: both are derived, neither is granted."""
    root = _package_copy(tmp_path)
    functions = {"record_failures": tf_locals()["functions"]["record_failures"]}
    plain = iam_needs.derive(functions, UNRESOLVED, root).needs()["record_failures"]
    dead_letters = root / "stages" / "record_failures.py"
    _plant(
        dead_letters,
        "from progress_monitor.services import Services\n",
        "from progress_monitor.services import Services\nfrom progress_monitor.contracts.messages import DigestTask\n"
        "from progress_monitor.platform import warehouse\n",
    )
    _plant(
        dead_letters,
        "    attributes = message.attributes\n    kept = ",
        "    attributes = message.attributes\n"
        '    warehouse.query(svc, "SELECT COUNT(*) AS n FROM `${tracks}`")\n'
        '    svc.send(DigestTask(RunId.parse("2026-11-16")))\n'
        '    svc.publish(attributes.get("topic", ""), b"")\n'
        "    kept = ",
    )
    planted = iam_needs.derive(functions, UNRESOLVED, root)
    assert planted.needs()["record_failures"] - plain == {("table.read", "tracks"), ("topic.publish", "slack_tasks")}
    errors = tf_model.check_function_grants(model(), {**calls(), **planted.needs()})
    assert [e for e in errors if e.startswith("record_failures")] == [
        "record_failures calls without a grant (a 403 in the cloud): "
        "[('table.read', 'tracks'), ('topic.publish', 'slack_tasks')]"
    ]
    unresolved = planted.errors()
    assert len(unresolved) == 1 and "progress_monitor.stages.record_failures.record" in unresolved[0], unresolved
    assert "'topic.publish {topic}'" in unresolved[0]


def test_a_call_site_the_code_cannot_resolve_fails_unless_explained() -> None:
    functions = {"load_history": tf_locals()["functions"]["load_history"]}
    errors = iam_needs.derive(functions, {}).errors()
    unexplained = [e for e in errors if "progress_monitor.stages.load._load_progress" in e]
    assert len(unexplained) == 1 and "progress_monitor.platform.shard_store:get_blob" in unexplained[0], errors


def test_sql_needs_reads_writes_and_tables_created_at_run_time() -> None:
    found, problems = iam_needs.sql_needs(
        [
            "MERGE `${runs}` T USING (SELECT run_id FROM `${loads}`) S ON T.run_id = S.run_id",
            "CREATE OR REPLACE TABLE `p.d.report_class_week` AS SELECT * FROM `${report_student_week}`",
            "SELECT * FROM `p.d._staging_progress_0a1b`",
        ]
    )
    assert problems == []
    assert found == {
        ("table.write", "runs"),
        ("table.read", "runs"),
        ("table.read", "loads"),
        ("table.write", "report_class_week"),
        ("table.read", "report_class_week"),
        ("dataset.write", "main"),
        ("table.read", "report_student_week"),
        ("dataset.read", "main"),
    }
    assert iam_needs.sql_needs(["SELECT * FROM `${nowhere}`"])[1] == ["unresolved table ${nowhere}"]


def test_object_needs_fold_by_contract_prefix() -> None:
    raw = {
        ("objects.read", "slack/"),
        ("objects.create", "slack/"),
        ("objects.rewrite", "slack/"),
        ("objects.delete", "slack/"),
        ("objects.create", "progress/"),
        ("objects.read", "contacts/"),
        ("objects.delete", "contacts/"),
        ("objects.read", "budget/cademi.json"),
        ("objects.rewrite", "budget/cademi.json"),
    }
    assert iam_needs.fold(raw) == {  # each in the bucket that holds it (contracts.objects.bucket_of)
        ("objects.readwrite", "state/slack/"),
        ("objects.readwrite", "state/budget/cademi.json"),
        ("objects.create", "shards"),
        ("objects.read", "shards"),
        ("objects.delete", "shards/contacts/"),
    }
    # A declaration naming a whole bucket (the erasure's scan of both).
    assert iam_needs.fold({("objects.read", ""), ("objects.read", "state")}) == {
        ("objects.read", "shards"),
        ("objects.read", "state"),
    }
    assert iam_needs.area("progress/snapshot_date=*/run=*/") == "progress/"
    assert iam_needs.area("*") is None


def test_the_declaration_changes_nothing_at_run_time() -> None:
    from progress_monitor.platform.access import needs

    def f() -> int:
        return 1

    assert needs("objects.read shards")(f) is f
    try:
        needs("objects.erase shards")
    except ValueError as exc:
        assert "objects.erase" in str(exc)
    else:
        raise AssertionError("an unknown kind was accepted")
