"""What infra/terraform will create, resolved block by block, and the checks held against it.

Every IAM binding is read from the resource block that grants it (tests/tf_eval.py evaluates its for_each,
role, member, target and condition), never from the locals that feed it. Each check returns a list of
errors for one configuration directory, so tests/test_terraform_iam.py runs them on infra/terraform and
tests/test_terraform_mutants.py on planted defects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tests.tf_eval import Config, Ref

ROOT = Path(__file__).resolve().parents[1]
MAIN, RESTRICTED = "main", "restricted"


@dataclass(frozen=True)
class Binding:
    address: str  # resource address with its instance key
    kind: str  # resource type
    role: str
    member: str  # fn:<function>, sa:<account>, agent:<service>, or the literal member
    target: str  # project, table:<t>, dataset:<d>, bucket:<b>, topic:<t>, secret:<s>, function:<f>, ...
    condition: tuple[str, str] | None  # (==|startsWith, object path under the bucket) or None


class ConditionError(ValueError):
    pass


IDENTITY = [
    (re.compile(r'^(?:serviceAccount:)?\$\{google_service_account\.fn\["(\w+)"\]\.(?:member|email)\}$'), "fn:{}"),
    (re.compile(r"^(?:serviceAccount:)?\$\{google_service_account\.(\w+)\.(?:member|email)\}$"), "sa:{}"),
    (re.compile(r'^\$\{google_project_service_identity\.agent\["([\w.]+)"\]\.member\}$'), "agent:{}"),
    (
        re.compile(r"^serviceAccount:\$\{data\.google_storage_project_service_account\.(gcs)\.email_address\}$"),
        "agent:storage.googleapis.com",
    ),
]
TARGET = [
    (re.compile(r'^\$\{google_bigquery_table\.table\["(\w+)"\]\.\w+\}$'), "table:{}"),
    (re.compile(r"^\$\{google_bigquery_table\.(\w+)\.\w+\}$"), "table:{}"),  # a view of its own (student_names)
    (re.compile(r"^\$\{google_bigquery_dataset\.(\w+)\.dataset_id\}$"), "dataset:{}"),
    (re.compile(r"^\$\{google_storage_bucket\.(\w+)\.name\}$"), "bucket:{}"),
    (re.compile(r'^\$\{google_pubsub_topic\.topic\["(\w+)"\]\.(?:name|id)\}$'), "topic:{}"),
    (re.compile(r'^\$\{google_secret_manager_secret\.secret\["(\w+)"\]\.(?:id|secret_id)\}$'), "secret:{}"),
    (re.compile(r'^\$\{google_cloudfunctions2_function\.fn\["(\w+)"\]\.name\}$'), "function:{}"),
    (re.compile(r'^\$\{google_pubsub_subscription\.(\w+\["\w+"\])\.name\}$'), "subscription:{}"),
    (re.compile(r"^\$\{google_service_account\.(\w+)\.name\}$"), "sa:{}"),
    (re.compile(r"^\$\{google_compute_backend_service\.(\w+)\.name\}$"), "backend:{}"),
]
TARGET_ATTRS = (
    "table_id",
    "dataset_id",
    "bucket",
    "topic",
    "secret_id",
    "service",
    "subscription",
    "service_account_id",
    "web_backend_service",
    "project",
)


def _match(text: str, table: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, template in table:
        m = pattern.match(text)
        if m:
            return template.format(m.group(1))
    return text


def parse_condition(expression: str) -> tuple[str, str]:
    """An IAM condition on Cloud Storage names, parsed: `resource.name == "projects/_/buckets/…"` or
    `resource.name.startsWith("projects/_/buckets/…")` -> (operator, the name after `projects/_/buckets/`).
    Anything else (`true`, an `||`, another resource type) is ("unparsed", expression): never guessed at."""
    for op, pattern in (
        ("==", r'\s*resource\.name\s*==\s*"projects/_/buckets/([^"\\]+)"\s*'),
        ("startsWith", r'\s*resource\.name\.startsWith\(\s*"projects/_/buckets/([^"\\]+)"\s*\)\s*'),
    ):
        m = re.fullmatch(pattern, expression)
        if m:
            return op, m.group(1)
    return "unparsed", expression


def object_path(condition: tuple[str, str] | None, bucket: str) -> str | None:
    """The object name (==) or prefix (startsWith) a condition limits a grant on `bucket` to."""
    if condition is None or condition[0] == "unparsed":
        return None
    prefix = f"${{google_storage_bucket.{bucket}.name}}/objects/"
    rest = condition[1].removeprefix(prefix)
    return rest if condition[1].startswith(prefix) and rest else None


@dataclass
class Model:
    config: Config
    bindings: list[Binding]
    blocks: dict[str, dict[str, Any]]
    authorized_views: list[tuple[str, str]]  # (dataset:<source>, table:<view>) from google_bigquery_dataset_access

    def value(self, raw: Any, scope: dict[str, Any] | None = None) -> Any:
        return self.config.value(raw, scope or {})


def load(directory: Path) -> Model:
    config = Config.load(directory)
    blocks = config.resource_blocks()
    bindings: list[Binding] = []
    views: list[tuple[str, str]] = []
    for address, body in blocks.items():
        kind = address.split(".")[0]
        if kind == "google_bigquery_dataset_access":
            _dataset_access(config, address, body, bindings, views)
            continue
        if not kind.endswith(("_iam_member", "_iam_binding")):
            continue
        for key, scope in config.instances(body).items():
            role = config.value(body["role"], scope)
            if isinstance(role, Ref) and role.address.startswith("google_project_iam_custom_role."):
                custom = blocks[role.address]
                role = "custom:" + ",".join(sorted(config.value(custom["permissions"], {})))
            member = _match(str(config.value(body["member"], scope)), IDENTITY)
            target_attr = next(a for a in TARGET_ATTRS if a in body)
            target_value = str(config.value(body[target_attr], scope))
            target = "project" if target_attr == "project" else _match(target_value, TARGET)
            condition = None
            for block in body.get("condition", []):
                expression = config.value(block["expression"], scope)
                condition = parse_condition(str(expression))
            suffix = "" if key is None else f"[{json.dumps(key)}]"
            bindings.append(Binding(address + suffix, kind, str(role), member, target, condition))
    return Model(config, bindings, blocks, views)


# A dataset access entry's legacy role (the provider asks for this form) and the IAM role it stands for.
ACCESS_ROLES = {
    "READER": "roles/bigquery.dataViewer",
    "WRITER": "roles/bigquery.dataEditor",
    "OWNER": "roles/bigquery.dataOwner",
}


def _dataset_access(
    config: Config, address: str, body: dict[str, Any], bindings: list[Binding], views: list[tuple[str, str]]
) -> None:
    """A google_bigquery_dataset_access block: a grant (role + user/group), or an authorized view."""
    for key, scope in config.instances(body).items():
        target = _match(str(config.value(body["dataset_id"], scope)), TARGET)
        suffix = "" if key is None else f"[{json.dumps(key)}]"
        for view in body.get("view", []):
            views.append((target, _match(str(config.value(view["table_id"], scope)), TARGET)))
        if "role" not in body:
            continue
        raw_role = str(config.value(body["role"], scope))
        role = ACCESS_ROLES.get(raw_role, raw_role)
        if "user_by_email" in body:
            member = _match(str(config.value(body["user_by_email"], scope)), IDENTITY)
        elif "group_by_email" in body:
            member = f"group:{config.value(body['group_by_email'], scope)}"
        else:
            member = "unknown:" + ",".join(sorted(k for k in body if k.endswith(("_by_email", "special_group"))))
        bindings.append(Binding(address + suffix, "google_bigquery_dataset_access", role, member, target, None))


# --- what each function's code calls (tests/test_terraform_iam.py documents each entry) ---


def capabilities(b: Binding, model: Model) -> set[tuple[str, str]]:
    """What one grant to a function's account allows, in the terms of the calls table."""
    r = b.role
    if b.target == "project" and r == "roles/bigquery.jobUser" and b.condition is None:
        return {("bigquery.jobs", "project")}
    if b.target.startswith("table:") and b.condition is None:
        t = b.target.removeprefix("table:")
        return {
            "roles/bigquery.dataViewer": {("table.read", t)},
            "roles/bigquery.dataEditor": {("table.read", t), ("table.write", t)},
        }.get(r, {("unknown", f"{r} on {b.target}")})
    if b.target.startswith("dataset:") and b.condition is None:
        d = b.target.removeprefix("dataset:")
        return {
            "roles/bigquery.dataViewer": {("dataset.read", d)},
            "roles/bigquery.dataEditor": {("dataset.write", d)},
        }.get(r, {("unknown", f"{r} on {b.target}")})
    if b.target in ("bucket:shards", "bucket:state"):
        bucket = b.target.removeprefix("bucket:")
        path = object_path(b.condition, bucket)
        where = bucket if b.condition is None else f"{bucket}/{path}"
        verbs = {
            "roles/storage.objectViewer": "objects.read",
            "roles/storage.objectCreator": "objects.create",
            "roles/storage.objectUser": "objects.readwrite",
            "custom:storage.objects.delete": "objects.delete",
        }
        prefix_ok = b.condition is None or b.condition[0] == "==" or (path or "").endswith("/")
        if r in verbs and (b.condition is None or path is not None) and prefix_ok:
            return {(verbs[r], where)}
    if b.target.startswith("topic:") and r == "roles/pubsub.publisher" and b.condition is None:
        return {("topic.publish", b.target.removeprefix("topic:"))}
    if b.target.startswith("secret:") and r == "roles/secretmanager.secretAccessor" and b.condition is None:
        return {("secret", b.target.removeprefix("secret:"))}
    return {("unknown", f"{r} on {b.target} if {b.condition}")}


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


def check_function_grants(model: Model, calls: dict[str, set[tuple[str, str]]]) -> list[str]:
    """Each function's account holds exactly what its code calls: nothing missing, nothing unused."""
    functions = set(model.config.local("functions"))
    errors = [f"the calls table and the deployed functions differ: {sorted(functions ^ set(calls))}"]
    errors = errors if functions != set(calls) else []
    granted: dict[str, set[tuple[str, str]]] = {fn: set() for fn in functions}
    for b in model.bindings:
        if b.member.startswith("fn:"):
            fn = b.member.removeprefix("fn:")
            if fn not in granted:
                errors.append(f"{b.address} grants to an account of no function: {fn}")
                continue
            granted[fn] |= capabilities(b, model)
    for fn, needs in calls.items():
        have = granted.get(fn, set())
        missing = sorted(c for c in needs if not any(covers(g, c) for g in have))
        # a dataset-wide grant is used only where the code needs the dataset (tables it creates or cannot name)
        unused = sorted(
            g for g in have if not any(covers(g, c) for c in needs) or (g[0].startswith("dataset.") and g not in needs)
        )
        if missing:
            errors.append(f"{fn} calls without a grant (a 403 in the cloud): {missing}")
        if unused:
            errors.append(f"{fn} holds grants its code does not use: {unused}")
    return errors


# --- the other identities: every binding to a non-human, non-function identity is expected ---


def push_subscriptions(model: Model) -> list[dict[str, Any]]:
    """Every push subscription instance: its topic, endpoint function, path topic, identity, DLQ, ack."""
    subs = []
    topics = model.config.local("topics")
    functions = model.config.local("functions")
    for address, body in model.blocks.items():
        if not address.startswith("google_pubsub_subscription.") or "push_config" not in body:
            continue
        for key, scope in model.config.instances(body).items():
            push = body["push_config"][0]
            endpoint = str(model.value(push["push_endpoint"], scope))
            m = re.fullmatch(
                r'\$\{google_cloudfunctions2_function\.fn\["(\w+)"\]\.service_config\.0\.uri\}/projects/([^/]+)/topics/(.+)',
                endpoint,
            )
            topic = _match(str(model.value(body["topic"], scope)), TARGET)
            dlq = None
            for policy in body.get("dead_letter_policy", []):
                dlq = _match(str(model.value(policy["dead_letter_topic"], scope)), TARGET)
            oidc = push["oidc_token"][0]["service_account_email"] if push.get("oidc_token") else None
            audience = push["oidc_token"][0].get("audience") if push.get("oidc_token") else None
            subs.append(
                {
                    "address": f"{address}[{json.dumps(key)}]" if key is not None else address,
                    "block": address,
                    "key": key,
                    "name": model.value(body["name"], scope),
                    "topic": topic,
                    "function": m.group(1) if m else None,
                    "project": m.group(2) if m else None,
                    "path_topic": m.group(3) if m else None,
                    "topic_name": topics.get(topic.removeprefix("topic:")),
                    "identity": _match(str(model.value(oidc, scope)), IDENTITY) if oidc else None,
                    "audience": str(model.value(audience, scope)) if audience else None,
                    "dlq": dlq,
                    "ack": model.value(body.get("ack_deadline_seconds", 10), scope),
                    "timeout": functions[m.group(1)]["timeout"] if m and m.group(1) in functions else None,
                }
            )
    return subs


def public_endpoints_documented() -> set[str]:
    """The functions docs/security.md lists as public: its line `Public endpoints (allUsers): `a`, `b``."""
    text = (ROOT / "docs" / "security.md").read_text()
    m = re.search(r"^Public endpoints \(`allUsers`\): (.+)$", text, re.MULTILINE)
    assert m is not None, "docs/security.md has no 'Public endpoints (`allUsers`): ...' line"
    return set(re.findall(r"`(\w+)`", m.group(1)))


def expected_infrastructure(model: Model) -> set[tuple[str, str, str]]:
    """(member, role, target) every non-function identity must hold, derived from what uses it."""
    expected: set[tuple[str, str, str]] = set()
    for sub in push_subscriptions(model):
        if sub["identity"] and sub["function"]:
            expected.add((sub["identity"], "roles/run.invoker", f"function:{sub['function']}"))
            expected.add(("agent:pubsub.googleapis.com", "roles/iam.serviceAccountTokenCreator", sub["identity"]))
        if sub["dlq"]:
            expected.add(("agent:pubsub.googleapis.com", "roles/pubsub.publisher", sub["dlq"]))
            name = f"{sub['block'].split('.')[1]}[{json.dumps(sub['key'])}]"
            expected.add(("agent:pubsub.googleapis.com", "roles/pubsub.subscriber", f"subscription:{name}"))
    for public in public_endpoints_documented():
        expected.add(("allUsers", "roles/run.invoker", f"function:{public}"))
    expected |= {
        ("agent:iap.googleapis.com", "roles/run.invoker", "function:add_tag"),
        # load_history's Eventarc chain
        ("sa:trigger", "roles/run.invoker", "function:load_history"),
        ("sa:trigger", "roles/eventarc.eventReceiver", "project"),
        ("agent:storage.googleapis.com", "roles/pubsub.publisher", "project"),
        ("agent:eventarc.googleapis.com", "roles/eventarc.serviceAgent", "project"),
        # the builder: logs, the image, and the source in our bucket and in gen2's gcf-v2-sources bucket
        ("sa:builder", "roles/logging.logWriter", "project"),
        ("sa:builder", "roles/artifactregistry.writer", "project"),
        ("sa:builder", "roles/storage.objectViewer", "bucket:sources"),
        ("sa:builder", "roles/storage.objectViewer", "project"),
    }
    return expected


def check_infrastructure_grants(model: Model) -> list[str]:
    """Push identities, agents, the trigger, the builder and allUsers hold exactly what their use needs."""
    errors = []
    actual = {
        (b.member, b.role, b.target)
        for b in model.bindings
        if b.member.startswith(("sa:", "agent:")) or b.member in ("allUsers", "allAuthenticatedUsers")
    }
    expected = expected_infrastructure(model)
    for missing in sorted(expected - actual):
        errors.append(f"missing grant {missing}")
    for extra in sorted(actual - expected):
        errors.append(f"grant no use needs {extra}")
    for b in model.bindings:
        builder_read = b.member == "sa:builder" and b.target == "project" and b.role == "roles/storage.objectViewer"
        if b.condition is not None and b.member.startswith(("sa:", "agent:", "all")) and not builder_read:
            errors.append(f"{b.address}: unexpected condition {b.condition}")
    return errors


def parse_builder_condition(model: Model) -> list[str]:
    """The builder's project-wide read is limited to gen2's sources bucket (`gcf-v2-sources-<n>-<region>`)."""
    body = model.blocks.get("google_project_iam_member.builder_gcf_sources")
    if body is None:
        return ["google_project_iam_member.builder_gcf_sources is missing"]
    if len(body.get("condition", [])) != 1:
        return ["the builder's project-wide storage read has no condition: it would read every bucket"]
    op, path = parse_condition(str(model.value(body["condition"][0]["expression"])))
    m = re.fullmatch(r"gcf-v2-sources-(.+)-([a-z]+-[a-z]+\d)", path)
    if op != "startsWith" or m is None:
        return [f"the builder's condition is not gen2's sources bucket: {op} {path!r}"]
    errors = []
    if m.group(1) != "${data.google_project.this.number}":
        errors.append(f"the bucket is named by the project number, not {m.group(1)!r}")
    if m.group(2) != model.config.variables["region"]:
        errors.append(f"the bucket is the functions' region's, not {m.group(2)!r}")
    return errors


# --- wiring ---

CONSUMES = {  # which topic each pushed function's code handles (its CloudEvent source)
    "extract_tags": "schedule",
    "extract_progress": "progress",
    "load_history": "shard_reloads",
    "notify_tutors": "slack_tasks",
}
STORAGE_EVENT = "google.cloud.storage.object.v1.finalized"


def check_wiring(model: Model) -> list[str]:
    errors = []
    topics = model.config.local("topics")
    dlqs = {f"topic:{k}" for k in topics if k.endswith("_dlq")}
    recorded: set[str] = set()
    for sub in push_subscriptions(model):
        where = sub["address"]
        fn = sub["function"]
        if fn is None:
            errors.append(f"{where}: the endpoint is not a function's URI with /projects/<p>/topics/<t>")
            continue
        if sub["project"] != model.config.variables["project_id"]:
            errors.append(f"{where}: the endpoint names project {sub['project']}")
        # Pub/Sub's default audience is the whole endpoint (path included); Cloud Run documents its service URL.
        if sub["audience"] != f'${{google_cloudfunctions2_function.fn["{fn}"].service_config.0.uri}}':
            errors.append(f"{where}: the OIDC audience is {sub['audience']}, not {fn}'s service URL")
        if sub["path_topic"] != sub["topic_name"]:
            errors.append(f"{where}: the endpoint names topic {sub['path_topic']}, it reads {sub['topic_name']}")
        if (
            sub["name"]
            and not str(sub["name"]).startswith(model.config.local("function_names").get(fn, "?"))
            and (sub["topic"] not in dlqs)
        ):
            errors.append(f"{where}: named {sub['name']} but pushes to {fn}")
        if fn == "record_failures":
            if sub["topic"] not in dlqs:
                errors.append(f"{where}: record_failures receives {sub['topic']}, not a dead-letter topic")
            if sub["dlq"] is not None:
                errors.append(f"{where}: a recorder's subscription must not dead-letter (a loop)")
            recorded.add(sub["topic"])
        else:
            if f"topic:{CONSUMES.get(fn)}" != sub["topic"]:
                errors.append(f"{where}: pushes {sub['topic']} to {fn}, whose code handles {CONSUMES.get(fn)}")
            if sub["dlq"] is None or sub["dlq"] not in dlqs:
                errors.append(f"{where}: dead-letter topic {sub['dlq']} is not one of the _dlq topics")
            if sub["dlq"] == sub["topic"]:
                errors.append(f"{where}: the dead-letter topic is its own source")
        if not isinstance(sub["ack"], int) or sub["ack"] < sub["timeout"]:
            errors.append(f"{where}: ack deadline {sub['ack']} s < {fn}'s timeout {sub['timeout']} s")
        if sub["identity"] != "sa:pusher":
            errors.append(f"{where}: pushes as {sub['identity']}, not the push identity")
    pushed = {s["function"] for s in push_subscriptions(model) if s["function"] != "record_failures"}
    if pushed != set(CONSUMES):
        errors.append(f"pushed functions {sorted(pushed)} != {sorted(CONSUMES)}")
    if recorded != dlqs:
        errors.append(f"dead-letter topics not recorded: {sorted(dlqs - recorded)}")
    errors += check_function_settings(model)
    return errors


@cache
def _enums() -> dict[str, list[str]]:
    schema = json.loads((ROOT / ".venv-tfschema" / "provider-schema.json").read_text())
    config = schema["resource"]["google_cloudfunctions2_function"]["blocks"]["service_config"]["block"]
    enums: dict[str, list[str]] = config.get("enums", {})
    return enums


def check_function_settings(model: Model) -> list[str]:
    """Ingress per function (public = documented, add_tag behind the load balancer, the rest internal) and
    load_history's Eventarc trigger (finalize events of the shards bucket, as the trigger identity)."""
    errors = []
    body = model.blocks["google_cloudfunctions2_function.fn"]
    public = public_endpoints_documented()
    for fn, scope in model.config.instances(body).items():
        ingress = model.value(body["service_config"][0]["ingress_settings"], scope)
        allowed = _enums().get("ingress_settings")
        if allowed and ingress not in allowed:
            errors.append(f"{fn}: ingress {ingress!r} is not one of {allowed}")
        want = "ALLOW_ALL" if fn in public else "ALLOW_INTERNAL_AND_GCLB" if fn == "add_tag" else "ALLOW_INTERNAL_ONLY"
        if ingress != want:
            errors.append(f"{fn}: ingress {ingress!r}, expected {want!r}")
        triggers = []
        for dynamic in body.get("dynamic", []):
            for raw_name, spec in dynamic.items():
                if raw_name.strip('"') == "event_trigger":
                    triggers += list(spec["content"]) * len(model.value(spec["for_each"], scope))
        for trigger in body.get("event_trigger", []):
            triggers.append(trigger)
        if (fn == "load_history") != bool(triggers):
            errors.append(f"{fn}: {len(triggers)} event triggers")
        for trigger in triggers:
            event = model.value(trigger["event_type"], scope)
            if event != STORAGE_EVENT:
                errors.append(f"{fn}: event type {event!r}, the loader loads new shards ({STORAGE_EVENT})")
            filters = {
                model.value(f["attribute"], scope): str(model.value(f["value"], scope))
                for f in trigger.get("event_filters", [])
            }
            if filters != {"bucket": "${google_storage_bucket.shards.name}"}:
                errors.append(f"{fn}: event filters {filters}")
            identity = _match(str(model.value(trigger["service_account_email"], scope)), IDENTITY)
            if identity != "sa:trigger":
                errors.append(f"{fn}: the trigger runs as {identity}")
        build = _match(
            str(model.value(body["build_config"][0]["service_account"], scope)).replace(".id}", ".member}"), IDENTITY
        )
        if build != "sa:builder":
            errors.append(f"{fn}: builds as {build}")
        runtime = _match(str(model.value(body["service_config"][0]["service_account_email"], scope)), IDENTITY)
        if runtime != f"fn:{fn}":
            errors.append(f"{fn}: runs as {runtime}")
    return errors


# --- waits: every grant to a fresh identity precedes, with a wait, whatever uses it ---

REFERENCE = re.compile(r"\b((?:data\.)?(?:google_[a-z0-9_]+|time_sleep))\.([a-z0-9_]+)")


def _code(value: Any) -> Any:
    """A parsed value without python-hcl2's markers and comments (a comment naming a resource is no edge)."""
    if isinstance(value, dict):
        return {k: _code(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_code(v) for v in value]
    return value


def dependency_graph(model: Model) -> dict[str, set[str]]:
    """block address -> the blocks it references or depends on (locals followed)."""
    nodes: dict[str, str] = {}
    for section in ("resource", "data"):
        for address, body in model.config.resource_blocks(section).items():
            nodes[("data." if section == "data" else "") + address] = json.dumps(_code(body))
    local_text = {name: json.dumps(_code(value)) for name, value in model.config.local_exprs.items()}

    def refs(text: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = {f"{k}.{n}" for k, n in REFERENCE.findall(text)}
        for name in set(re.findall(r"\blocal\.([a-z0-9_]+)", text)) - seen:
            found |= refs(local_text.get(name, ""), seen | {name})
        return found & set(nodes)

    return {address: refs(text) - {address} for address, text in nodes.items()}


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), set()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


USES = {  # which blocks use an identity's grants the moment they are created
    "google_cloudfunctions2_function.fn": ("fn:", "sa:builder", "sa:trigger", "agent:eventarc", "agent:storage"),
    "google_pubsub_subscription.push": ("sa:pusher", "agent:pubsub"),
    # the recorder's subscriptions have no dead-letter topic: the Pub/Sub agent only signs their tokens
    "google_pubsub_subscription.dead_letter_records": (
        "sa:pusher",
        "agent:pubsub|roles/iam.serviceAccountTokenCreator",
    ),
}
# What a grant to each kind of identity must come after: an account created here, the wait that follows every
# created account (IAM may refuse one for a while, and the provider does not retry "does not exist"); agents,
# their own propagation wait.
ACCOUNTS_READY = "time_sleep.accounts_ready"
CREATED_BY = {"fn:": ACCOUNTS_READY, "sa:": ACCOUNTS_READY, "agent:": "time_sleep.agents_ready"}
MIN_ACCOUNT_WAIT_S = 120  # Google: IAM changes "typically" take 2 minutes


def _seconds(duration: str) -> float:
    """A time_sleep duration ("120s", "2m", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    found = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    if not found or "".join(n + u for n, u in found) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in found)


def check_waits(model: Model) -> list[str]:
    """Every grant to a created identity comes after the identity (agents: after their propagation wait);
    every block that uses such grants at creation depends on a time_sleep that follows them."""
    errors = []
    graph = dependency_graph(model)
    sleeps = [a for a in graph if a.startswith("time_sleep.")]
    wait = model.blocks.get(ACCOUNTS_READY)
    if wait is None or _seconds(str(model.value(wait.get("create_duration")))) < MIN_ACCOUNT_WAIT_S:
        errors.append(f"{ACCOUNTS_READY} must wait at least {MIN_ACCOUNT_WAIT_S} s")
    accounts = {a for a in graph if a.startswith("google_service_account.")}
    if not accounts <= closure(graph, ACCOUNTS_READY):
        errors.append(f"{ACCOUNTS_READY} does not follow {sorted(accounts - closure(graph, ACCOUNTS_READY))}")
    for b in model.bindings:
        block = b.address.split("[")[0]
        for prefix, wanted in CREATED_BY.items():
            if b.member.startswith(prefix) and wanted not in closure(graph, block):
                errors.append(f"{b.address} may run before {wanted}: {b.member} may not exist for IAM yet")
    for user, identities in USES.items():
        if user not in graph:
            errors.append(f"{user} is missing")
            continue
        after = closure(graph, user)
        for b in model.bindings:
            block = b.address.split("[")[0]
            uses = any(
                b.member.startswith(i.split("|")[0]) and ("|" not in i or b.role == i.split("|")[1]) for i in identities
            )
            if not uses or user in closure(graph, block):
                continue  # another identity, or a grant on the user itself (made after it, by construction)
            if not any(s in after and block in closure(graph, s) for s in sleeps):
                errors.append(f"{user} does not wait (time_sleep) for {b.address} ({b.member}, {b.role})")
    return errors


# --- contact data: the authorized view through which a function reads names without the restricted dataset ---

DATASET_OF_LOCAL = {"local.restricted_dataset": RESTRICTED, "local.dataset": MAIN}


def view_sources(model: Model, view: str) -> set[str]:
    """The datasets (dataset:<name>) a view created by Terraform reads, from its query's table ids."""
    body = model.blocks.get(f"google_bigquery_table.{view}", {})
    text = json.dumps(body.get("view", []))
    return {f"dataset:{name}" for ref, name in DATASET_OF_LOCAL.items() if re.search(re.escape(ref) + r"\b", text)}


def check_authorized_views(model: Model) -> list[str]:
    """A function granted a view whose source dataset it cannot read needs the view authorized on that
    dataset; a dataset with authorized views holds no dataset IAM member (the provider documents that those
    remove authorized views); every authorized view is a view Terraform creates."""
    errors = []
    dataset_grants = {(b.member, b.target) for b in model.bindings if b.target.startswith("dataset:")}
    for b in model.bindings:
        view = b.target.removeprefix("table:")
        if not (b.member.startswith("fn:") and b.target.startswith("table:")):
            continue
        if "view" not in model.blocks.get(f"google_bigquery_table.{view}", {}):
            continue
        for source in sorted(view_sources(model, view)):
            if (b.member, source) not in dataset_grants and (source, b.target) not in model.authorized_views:
                errors.append(f"{b.address}: {b.member} reads the view {view} of {source} without it authorized there")
    for source, view in model.authorized_views:
        if "view" not in model.blocks.get(f"google_bigquery_table.{view.removeprefix('table:')}", {}):
            errors.append(f"{source} authorizes {view}, which is no view Terraform creates")
        for b in model.bindings:
            if b.target == source and b.kind.startswith("google_bigquery_dataset_iam_"):
                errors.append(f"{b.address}: a dataset IAM grant on {source} removes its authorized views")
    if not model.authorized_views:
        errors.append("no authorized view: the Slack agent's names have no way to be read")
    return errors


MIN_TIME_TRAVEL_HOURS = 48  # BigQuery's minimum; the default (168) would keep erased rows readable for a week


def check_time_travel(model: Model) -> list[str]:
    """Every dataset keeps the minimum time travel: any reader of a table can read it as it was up to that long
    ago (`FOR SYSTEM_TIME AS OF`), so an erasure holds for readers only once the window has passed."""
    errors = []
    for address, body in model.blocks.items():
        if address.split(".")[0] != "google_bigquery_dataset":
            continue
        hours = model.value(body.get("max_time_travel_hours"))
        if str(hours) != str(MIN_TIME_TRAVEL_HOURS):
            errors.append(f"{address}: max_time_travel_hours is {hours!r}, not {MIN_TIME_TRAVEL_HOURS}")
    return errors


def check_form_https(model: Model) -> list[str]:
    """The form's address answers HTTPS on 443 and, on 80, only a redirect to HTTPS: every plain-HTTP forwarding
    rule shares the HTTPS rule's address and reaches a URL map that redirects (https_redirect) and serves
    nothing (no default service, no host rules)."""
    errors: list[str] = []
    rules = {a: b for a, b in model.blocks.items() if a.startswith("google_compute_global_forwarding_rule.")}
    https = {
        a: b for a, b in rules.items() if str(model.value(b["target"])).startswith("${google_compute_target_https")
    }
    if len(https) != 1 or str(model.value(next(iter(https.values())).get("port_range"))) != "443":
        return [f"the form needs one HTTPS forwarding rule on 443, found {sorted(https)}"]
    address = str(model.value(next(iter(https.values())).get("ip_address")))
    plain = {a: b for a, b in rules.items() if a not in https}
    if not any(str(model.value(b.get("port_range"))) == "80" for b in plain.values()):
        errors.append("no forwarding rule on port 80: http:// on the form's domain finds nothing to redirect it")
    for a, body in plain.items():
        if str(model.value(body.get("port_range"))) != "80" or str(model.value(body.get("ip_address"))) != address:
            errors.append(f"{a}: plain HTTP must be port 80 on the HTTPS rule's address {address}")
        proxy = re.fullmatch(r"\$\{(google_compute_target_http_proxy\.\w+)\.id\}", str(model.value(body["target"])))
        url_map = model.value(model.blocks[proxy.group(1)]["url_map"]) if proxy else None
        m = re.fullmatch(r"\$\{(google_compute_url_map\.\w+)\.id\}", str(url_map))
        if m is None:
            errors.append(f"{a}: its target is no HTTP proxy of a URL map Terraform creates")
            continue
        url = model.blocks[m.group(1)]
        redirect = (url.get("default_url_redirect") or [{}])[0]
        if model.value(redirect.get("https_redirect")) not in (True, "true"):
            errors.append(f"{m.group(1)}: plain HTTP is not redirected to HTTPS")
        if any(k in url for k in ("default_service", "host_rule", "path_matcher", "default_route_action")):
            errors.append(f"{m.group(1)}: plain HTTP reaches a service instead of a redirect")
    return errors
