"""Every entry point fuzzed: hostile requests and messages, generated, through functions-framework's own app with
the real stage code against the local stack's emulators.

For each HTTP entry point (the form, the Slack command, the Slack buttons) the generator breaks a valid,
correctly signed request; for each event entry point (extract_tags, extract_progress, load_history,
notify_tutors) a valid Pub/Sub push. Wrong types at every field, Unicode digits and whitespace, deep JSON,
huge strings, missing and extra fields, junk attributes, bodies that are no JSON at all. The properties:

- never a 5xx (a 500 is what Pub/Sub retries five times and what Slack shows as an error);
- an HTTP refusal is a 4xx naming its reason, an event is acknowledged with its `failures` row (or, for an
  object that is not ours, acknowledged and ignored);
- no other table changes: a hostile input writes nothing but its failure.

Every entry point first gets a systematic sweep (each of TYPE_CONFUSION at every place of its valid body),
then FUZZ_CASES random cases (default 12), seeded (derandomized) so `make test` stays fast. A new
entry point is covered by one more line in EVENT_ENTRIES or HTTP_ENTRIES.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from functions_framework import create_app
from google.auth import crypt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.here import services_here
from devstack.stack import LocalStack
from devstack.wiring import HTTP_FUNCTIONS
from progress_monitor.contracts.messages import ProgressTask, ScheduleRequest, parse_slack_task
from progress_monitor.errors import PermanentError
from progress_monitor.platform import warehouse
from tests.pipeline_world import SMALL_TAG, WEEKS
from tests.tag_stack import COORDINATOR, STAFF, TEAM, iap_assertion, used_here

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CASES = int(os.environ.get("FUZZ_CASES", "12"))
FUZZ = settings(
    max_examples=CASES,
    derandomize=True,  # seeded: the same cases on every run and every machine
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Tables a hostile input must never change (failures is expected to grow, one row per refused event).
WATCHED = ("registered_tags", "slack_channels", "runs", "loads", "progress_history", "students", "tutor_actions")

# -- hostile values ----------------------------------------------------------------------------------------

UNICODE_DIGITS = st.sampled_from(["٢٠٥", "²", "５０１２", "߃", "໒", "𝟓"])
WHITESPACE = st.sampled_from([" 205\n", "\t7001", "2026-10-05\n", "\u00a0101", "101\u200b", " "])


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    UNICODE_DIGITS,
    WHITESPACE,
    st.text(max_size=40),
    st.text(min_size=2000, max_size=4000, alphabet="x<>!@#\n"),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just(deep(500)),
    st.sampled_from(["slack:U1> <!channel", "<!here>", "../../progress/x", "=HYPERLINK(1)", "2026-W41-1", "20261005"]),
)


Path_ = tuple[str | int, ...]


def paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every place in a JSON document: each key of each object and each item of each list, nested."""
    found: list[Path_] = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def at(document: Any, path: Path_, change: Callable[[Any, str | int], None]) -> Any:
    """A deep copy of `document` with `change(parent, key)` applied where `path` leads."""
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    change(parent, path[-1])
    return copy


def mutated(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid body broken one way, anywhere in it: a value hostile, a key missing, a key extra (at the top or
    inside a nested object); or the whole body replaced."""
    whole = st.one_of(HOSTILE_VALUE, st.just(deep(3000)))
    extra = st.tuples(st.text(min_size=1, max_size=10), HOSTILE_VALUE).map(lambda kv: {**valid, kv[0]: kv[1]})
    places = paths(valid)
    if not places:
        return st.one_of(extra, whole)

    def put(value: Any) -> Callable[[Any, str | int], None]:
        def change(parent: Any, key: str | int) -> None:
            parent[key] = value

        return change

    def drop(parent: Any, key: str | int) -> None:
        del parent[key]

    replace = st.tuples(st.sampled_from(places), HOSTILE_VALUE).map(lambda pv: at(valid, pv[0], put(pv[1])))
    missing = st.sampled_from(places).map(lambda p: at(valid, p, drop))
    return st.one_of(replace, replace, missing, extra, whole)


RAW_BODIES = st.sampled_from([b"", b"\x00\xff\xfe", b"{not json", b"[" * 5000, b'"just a string"', b"x" * 70_000])

# -- event entry points ------------------------------------------------------------------------------------


def parses(parse: Callable[[dict[str, Any]], Any]) -> Callable[[bytes], bool]:
    """Whether the message body `raw`, read as the function reads it (an empty body is `{}`: Cloud Scheduler's
    weekly message), is one its contract accepts."""

    def valid(raw: bytes) -> bool:
        try:
            body = json.loads(raw or b"{}")
            parse(body)
        except (ValueError, TypeError, AttributeError, PermanentError, RecursionError):
            return False
        return isinstance(body, dict)

    return valid


@dataclass(frozen=True)
class EventEntry:
    """An event function, the topic its push path names, a valid body, and its contract's parser (a body the
    parser accepts would start real work, so the fuzzer leaves it out)."""

    function: str
    topic: str
    valid: dict[str, Any]
    is_valid: Callable[[bytes], bool]
    attributes: dict[str, str] | None = None


TASK = {"run_id": WEEKS[2], "snapshot_date": WEEKS[2], "tag_id": SMALL_TAG, "product_ids": [301, 302], "piece": 0}
CLICK = {
    "kind": "click",
    "week": WEEKS[1],
    "tag_id": SMALL_TAG,
    "user_id": 205,
    "action": "contatado",
    "tutor": "slack:UTUTOR01",
    "channel": "CTUTORS01",
    "message_ts": "1712345678.000100",
}
NOTIFICATION = {"eventType": "OBJECT_FINALIZE", "bucketId": "progress-shards", "objectId": "x", "objectGeneration": "1"}
EVENT_ENTRIES = [
    EventEntry(
        "extract_tags", "weekly-schedule", {"week": WEEKS[0], "rerun": "fuzz"}, parses(ScheduleRequest.from_json)
    ),
    EventEntry("extract_progress", "progress-tasks", TASK, parses(ProgressTask.from_json)),
    EventEntry("notify_tutors", "slack-tasks", CLICK, parses(parse_slack_task)),
    EventEntry("notify_tutors", "slack-tasks", {"kind": "digest", "run_id": WEEKS[0]}, parses(parse_slack_task)),
    # load_history reads the notification's attributes; its body is ignored (Cloud Storage sends `{}`-like data).
    EventEntry("load_history", "shard-events", {}, lambda body: False, NOTIFICATION),
]

# -- HTTP entry points -------------------------------------------------------------------------------------


def signed(stack: LocalStack, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    key = stack.local_secrets["SLACK_SIGNING_SECRET"].encode()
    signature = "v0=" + hmac.new(key, f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


COMMAND = {
    "command": "/turma",
    "text": "listar",
    "user_id": COORDINATOR,
    "team_id": TEAM,
    "channel_id": "CTUTORS01",
    "response_url": "https://hooks.slack.com/commands/T/1/x",
}
INTERACTION = {
    "type": "block_actions",
    "team": {"id": TEAM},
    "user": {"id": COORDINATOR},
    "channel": {"id": "CTUTORS01"},
    "container": {"message_ts": "1712345678.000100"},
    "actions": [{"action_id": "contatado", "value": f"w={WEEKS[1]};t={SMALL_TAG};u=205"}],
}
IDENTITY: dict[str, str] = {}  # the staff member's IAP assertion, made once the module's key exists
FORM = {"acao": "adicionar", "tag_id": "7099", "track": "analista", "turma": "2026-03", "start_date": "2026-03-02"}


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):  # deeper than json.dumps goes
        return "[" * 3000 + "1" + "]" * 3000


@dataclass(frozen=True)
class HttpEntry:
    function: str  # the entry point, deployed as the HTTP function of that name (devstack.wiring)
    valid: dict[str, Any]
    request: Callable[[LocalStack, Any, Any], Any]  # (stack, test client, hostile body) -> response


def command_request(stack: LocalStack, client: Any, body: Any) -> Any:
    if isinstance(body, bytes):
        raw = body
    elif isinstance(body, dict):
        raw = urlencode({k: as_text(v) for k, v in body.items()}).encode()
    else:
        raw = as_text(body).encode()
    return client.post("/", data=raw, headers=signed(stack, raw))


def interaction_request(stack: LocalStack, client: Any, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else urlencode({"payload": as_text(body)}).encode()
    return client.post("/", data=raw, headers=signed(stack, raw))


def form_request(stack: LocalStack, client: Any, body: Any) -> Any:
    headers = {"X-Goog-IAP-JWT-Assertion": IDENTITY["staff"]}
    if "csrf" not in IDENTITY:  # one page's token serves every case (valid for hours, bound to the identity)
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/", headers=headers).get_data(as_text=True))
        assert token is not None
        IDENTITY["csrf"] = token[1]
    if isinstance(body, bytes):
        return client.post("/", data=body, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    fields = {k: as_text(v) for k, v in body.items()} if isinstance(body, dict) else {"acao": as_text(body)}
    return client.post("/", data={"csrf": IDENTITY["csrf"], **fields}, headers=headers)


HTTP_ENTRIES = [
    HttpEntry("slack_command", COMMAND, command_request),
    HttpEntry("slack_actions", INTERACTION, interaction_request),
    HttpEntry("add_tag", FORM, form_request),
]

# -- the stack -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(add_tag_stack: LocalStack, iap_key: tuple[crypt.Signer, Path]) -> Iterator[LocalStack]:
    """The package's add_tag stack (tests/add_tag/conftest.py), shared with test_form_and_slack.py."""
    with used_here(add_tag_stack, iap_key[1]) as stack:
        IDENTITY["staff"] = iap_assertion(iap_key[0], STAFF)
        yield stack


def counts() -> dict[str, int]:
    return {n: int(warehouse.query(services_here(), f"SELECT COUNT(*) AS n FROM `${{{n}}}`")[0]["n"]) for n in WATCHED}


def failure_ids() -> set[str]:
    return {r["message_id"] for r in warehouse.query(services_here(), "SELECT message_id FROM `${failures}`")}


def push(data: bytes, attributes: dict[str, str] | None, message_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"data": base64.b64encode(data).decode(), "messageId": message_id}
    if attributes is not None:
        message["attributes"] = attributes
    message["publishTime"] = "2026-09-07T11:00:00Z"
    return {"message": message, "subscription": "projects/local-project/subscriptions/fuzz"}


def encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    try:
        return json.dumps(body).encode()
    except (ValueError, RecursionError):  # deeper than json.dumps goes: send it as text
        return ("[" * 3000 + "1" + "]" * 3000).encode()


# Wrong types everywhere, systematically: each of these at every place of the valid body (then the random cases).
TYPE_CONFUSION: list[Any] = [None, True, 12.9, [], {}, "٢٠٥", " 205\n"]


def sweep(valid: dict[str, Any]) -> list[Any]:
    def put(value: Any) -> Callable[[Any, str | int], None]:
        return lambda parent, key: parent.__setitem__(key, value)

    return [at(valid, place, put(value)) for place in paths(valid) for value in TYPE_CONFUSION]


@pytest.mark.parametrize("entry", EVENT_ENTRIES, ids=[f"{e.function}-{i}" for i, e in enumerate(EVENT_ENTRIES)])
def test_hostile_events_are_acknowledged_with_their_failure_and_change_nothing(
    stack: LocalStack, entry: EventEntry
) -> None:
    client = create_app(
        entry.function, str(ROOT / "functions" / entry.function / "main.py"), "cloudevent"
    ).test_client()
    before = counts()
    expected: set[str] = set()
    attributes_strategy = st.one_of(
        st.just(entry.attributes),
        st.dictionaries(
            st.sampled_from(
                ["run_id", "tag_id", "piece", "objectId", "objectGeneration", "bucketId", "eventType", "kind"]
            ),
            HOSTILE_VALUE.map(as_text),
            max_size=4,
        ).map(lambda hostile: {**(entry.attributes or {}), **{k: v[:1000] for k, v in hostile.items()}}),
    )

    def check(body: Any, attributes: dict[str, str] | None) -> None:
        raw = encode(body)
        if entry.is_valid(raw):
            return  # a valid message does real work: not this test's business
        message_id = f"fuzz-{time.time_ns()}"
        response = client.post(f"/projects/local-project/topics/{entry.topic}", json=push(raw, attributes, message_id))
        assert response.status_code < 500, (body if not isinstance(body, bytes) else body[:80], response.status_code)
        assert response.status_code == 200  # acknowledged: Pub/Sub does not redeliver a refusal
        if entry.function != "load_history":
            expected.add(message_id)

    @FUZZ
    @given(body=st.one_of(mutated(entry.valid), RAW_BODIES), attributes=attributes_strategy)
    def case(body: Any, attributes: dict[str, str] | None) -> None:
        check(body, attributes)

    for body in sweep(entry.valid):
        check(body, entry.attributes)
    case()
    missing = expected - failure_ids()
    assert not missing, f"{len(missing)} refused events have no failures row"
    assert counts() == before


@pytest.mark.parametrize("entry", HTTP_ENTRIES, ids=[e.function for e in HTTP_ENTRIES])
def test_hostile_requests_get_a_named_4xx_or_an_answer_and_change_nothing(stack: LocalStack, entry: HttpEntry) -> None:
    folder, target = HTTP_FUNCTIONS[entry.function]
    client = create_app(target, str(ROOT / "functions" / folder / "main.py"), "http").test_client()
    before = counts()

    def check(body: Any) -> None:
        response = entry.request(stack, client, body)
        text = response.get_data(as_text=True)
        assert response.status_code < 500, (entry.function, response.status_code, text[:200])
        if response.status_code >= 400:
            assert text.strip(), "a refusal names its reason"

    @FUZZ
    @given(body=st.one_of(mutated(entry.valid), RAW_BODIES))
    def case(body: Any) -> None:
        check(body)

    for body in sweep(entry.valid):
        check(body)
    case()
    assert counts() == before
