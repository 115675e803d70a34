"""Every contract between the stages, in one place and pure (no I/O, fast to test).

- `RunId`: a run's id, `YYYY-MM-DD` (the snapshot Monday) or `YYYY-MM-DD-label` for a deliberate re-run.
- `ProgressTask`: the progress topic's message, "extract piece `piece` of a tag, from roster index `next_index`".
- `ShardMeta`: the object metadata each progress shard carries (counts, and where the next piece starts).
- Object names in the shards bucket, and their parsers.
- Decoding of the untrusted events the functions receive (Pub/Sub pushes, Storage finalize events).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from progress_monitor.errors import PermanentError

# -- strict parsers: ASCII only, the whole text or nothing -------------------------------------------------------
# str.isdigit() accepts "²" and "٢", which int() then refuses or reads; "$" matches before a trailing newline.
# Every id, count and label from outside is read by one of these, never by isdigit() or a "$"-anchored match.

_DIGITS = re.compile(r"[0-9]{1,20}", re.ASCII)


def parse_uint(text: object, max_digits: int = 12) -> int | None:
    """A non-negative integer written in ASCII digits (at most `max_digits`), or None."""
    if not isinstance(text, str) or len(text) > max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)


def strict(pattern: str) -> re.Pattern[str]:
    """A pattern whose \\d means [0-9]; use it with fullmatch()."""
    return re.compile(pattern, re.ASCII)


# -- Cademi timestamps ---------------------------------------------------------------------------------------------
# The fact sheet: documented as ISO-8601, but examples mix `2022-01-12T15:50:47-03:00` and naive
# `2020-01-12 19:59:20` (school time). Seconds and an offset (or Z) are optional; fractions are allowed.
CADEMI_TIME = strict(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"(?P<offset>Z|[+-]\d{2}:?\d{2})?"
)
FUTURE_TOLERANCE = timedelta(days=1)  # clocks differ a little; a last access days ahead is not an observation


class TimestampError(ValueError):
    """A Cademi timestamp that cannot be read, or lies in the future."""


def parse_cademi_time(text: object, tz: str, now: datetime) -> datetime | None:
    """A Cademi timestamp as an aware UTC datetime: None when absent (null or empty), naive values read in the
    school's time zone `tz`; TimestampError when it is malformed or later than `now` (plus a day)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str) or len(text) > 40 or (match := CADEMI_TIME.fullmatch(text.strip())) is None:
        raise TimestampError("not an ISO-8601 date and time")
    offset = match["offset"] or ""
    if offset and offset != "Z" and ":" not in offset:
        offset = offset[:3] + ":" + offset[3:]
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{offset.replace('Z', '+00:00')}")
    except ValueError as exc:
        raise TimestampError("not a valid date and time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    moment = moment.astimezone(UTC)
    if moment > now + FUTURE_TOLERANCE:
        raise TimestampError("in the future")
    return moment


# -- weeks and run ids ---------------------------------------------------------------------------------------------

RUN_LABEL_MAX = 20
RUN_ID = strict(rf"(?P<date>\d{{4}}-\d{{2}}-\d{{2}})(?:-(?P<label>[a-z0-9][a-z0-9-]{{0,{RUN_LABEL_MAX - 1}}}))?")
RUN_LABEL = strict(rf"[a-z0-9][a-z0-9-]{{0,{RUN_LABEL_MAX - 1}}}")


def monday_of(moment: datetime, tz: str) -> date:
    """The Monday (in the school's time zone `tz`) of the week containing `moment`."""
    local = moment.astimezone(ZoneInfo(tz)).date()
    return local - timedelta(days=local.weekday())


@dataclass(frozen=True, order=True)
class RunId:
    """The id of one run: its snapshot week's Monday, and a label when it is a deliberate re-run."""

    snapshot_date: date
    label: str | None = None

    def __post_init__(self) -> None:
        if self.snapshot_date.weekday() != 0:
            raise ValueError(f"a run's snapshot date is a Monday, not {self.snapshot_date}")
        if self.label is not None and not RUN_LABEL.fullmatch(self.label):
            raise ValueError(f"a re-run label is 1-{RUN_LABEL_MAX} lower-case letters, digits or dashes")

    def __str__(self) -> str:
        return self.snapshot_date.isoformat() + (f"-{self.label}" if self.label else "")

    @classmethod
    def parse(cls, text: object) -> RunId:
        """Parse an untrusted run id; ValueError when it is not one."""
        match = RUN_ID.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError("not a run id (YYYY-MM-DD or YYYY-MM-DD-label)")
        return cls(date.fromisoformat(match["date"]), match["label"])

    @classmethod
    def parse_or_none(cls, text: object) -> RunId | None:
        try:
            return cls.parse(text)
        except ValueError:
            return None


# -- the progress task message ----------------------------------------------------------------------------

MAX_PRODUCTS = 100
MAX_ID = 10**12
MAX_PIECE = 9999
MAX_ROSTER = 10**7


def _int_field(raw: dict[str, Any], key: str, minimum: int, maximum: int, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise PermanentError(f"task field {key!r} must be an integer in {minimum}..{maximum}")
    return value


@dataclass(frozen=True)
class ProgressTask:
    """Extract piece `piece` of a tag for a run, starting at index `next_index` of its frozen roster."""

    run_id: RunId
    tag_id: int
    product_ids: tuple[int, ...]
    piece: int = 0
    next_index: int = 0

    @property
    def snapshot_date(self) -> date:
        return self.run_id.snapshot_date

    def next(self, next_index: int) -> ProgressTask:
        """The task of the piece that continues this one at `next_index`."""
        return ProgressTask(self.run_id, self.tag_id, self.product_ids, self.piece + 1, next_index)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "snapshot_date": self.snapshot_date.isoformat(),
            "tag_id": self.tag_id,
            "product_ids": list(self.product_ids),
            "piece": self.piece,
            "next_index": self.next_index,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json()).encode()

    def attributes(self) -> dict[str, str]:
        """Message attributes: what the failure policy records if the message is dead-lettered."""
        return {"run_id": str(self.run_id), "tag_id": str(self.tag_id), "piece": str(self.piece)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ProgressTask:
        """Validate an untrusted task message."""
        try:
            run_id = RunId.parse(raw.get("run_id"))
        except ValueError as exc:
            raise PermanentError("task field 'run_id' is missing or malformed") from exc
        if raw.get("snapshot_date", run_id.snapshot_date.isoformat()) != run_id.snapshot_date.isoformat():
            raise PermanentError("task run_id does not belong to its snapshot_date")
        products = raw.get("product_ids")
        if not isinstance(products, list) or not 0 < len(products) <= MAX_PRODUCTS:
            raise PermanentError("task field 'product_ids' must be a non-empty list")
        product_ids = tuple(_int_field({"product_ids[]": p}, "product_ids[]", 1, MAX_ID) for p in products)
        if len(set(product_ids)) != len(product_ids):
            raise PermanentError("task field 'product_ids' repeats a product")
        return cls(
            run_id=run_id,
            tag_id=_int_field(raw, "tag_id", 1, MAX_ID),
            product_ids=product_ids,
            piece=_int_field(raw, "piece", 0, MAX_PIECE, default=0),
            next_index=_int_field(raw, "next_index", 0, MAX_ROSTER, default=0),
        )


# -- shard metadata ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardMeta:
    """What a progress shard's object metadata says about it (GCS metadata values are strings)."""

    task: ProgressTask
    records: int
    failed: int
    no_access: int
    students: int
    api_calls: int
    rate_limited: int
    next_index: int | None  # None: this was the tag's last piece

    COUNTS = ("records", "failed", "no_access", "students", "api_calls", "rate_limited")

    @property
    def last_piece(self) -> bool:
        return self.next_index is None

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNTS}

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "run_id": str(self.task.run_id),
            "snapshot_date": self.task.snapshot_date.isoformat(),
            "tag_id": str(self.task.tag_id),
            "piece": str(self.task.piece),
            "start_index": str(self.task.next_index),
            "product_ids": ",".join(str(p) for p in self.task.product_ids),
            "last_piece": "true" if self.last_piece else "false",
            **{name: str(value) for name, value in self.counts().items()},
        }
        if self.next_index is not None:
            meta["next_index"] = str(self.next_index)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str] | None, name: ShardName) -> ShardMeta:
        """Read a shard's metadata back; PermanentError when it is missing, malformed or names another shard."""
        meta = meta or {}

        def number(key: str) -> int:
            value = parse_uint(meta.get(key))
            if value is None:
                raise PermanentError(f"shard metadata {key!r} is missing or not a count")
            return value

        products = [parse_uint(p) for p in meta.get("product_ids", "").split(",")]
        if None in products:
            raise PermanentError("shard metadata 'product_ids' is malformed")
        task = ProgressTask.from_json(
            {
                "run_id": meta.get("run_id"),
                "tag_id": number("tag_id"),
                "product_ids": products,
                "piece": number("piece"),
                # Where the piece started; absent on shards written before it was recorded.
                "next_index": number("start_index") if "start_index" in meta else 0,
            }
        )
        if (task.run_id, task.tag_id, task.piece) != (name.run_id, name.tag_id, name.piece):
            raise PermanentError("shard metadata does not match the shard's name")
        last = meta.get("last_piece")
        if last not in ("true", "false"):
            raise PermanentError("shard metadata 'last_piece' is missing")
        counts = {key: number(key) for key in cls.COUNTS}
        return cls(task=task, **counts, next_index=None if last == "true" else number("next_index"))


# -- object names in the shards bucket --------------------------------------------------------------------

_RUN_PART = r"snapshot_date=(?P<date>\d{4}-\d{2}-\d{2})/run=(?P<run>[a-z0-9-]{10,31})/tag=(?P<tag>\d{1,12})"
PROGRESS_SHARD = strict(rf"progress/{_RUN_PART}/piece=(?P<piece>\d{{4}})\.ndjson")
CONTACTS = strict(rf"contacts/{_RUN_PART}\.ndjson")


def _prefix(run_id: RunId) -> str:
    return f"snapshot_date={run_id.snapshot_date.isoformat()}/run={run_id}"


def run_shards_prefix(run_id: RunId) -> str:
    """Where every progress shard of a run lives."""
    return f"progress/{_prefix(run_id)}/"


def run_contacts_prefix(run_id: RunId) -> str:
    return f"contacts/{_prefix(run_id)}/"


def week_shards_prefix(snapshot_date: date) -> str:
    """Where every progress shard of a snapshot week lives, whatever the run."""
    return f"progress/snapshot_date={snapshot_date.isoformat()}/"


def progress_shard_name(task: ProgressTask) -> str:
    """Deterministic name of one piece's records: a redelivered piece finds its own shard."""
    return f"progress/{_prefix(task.run_id)}/tag={task.tag_id}/piece={task.piece:04d}.ndjson"


def roster_name(run_id: RunId, tag_id: int) -> str:
    """The user ids piece 0 listed (no personal data), read by the later pieces."""
    return f"rosters/{_prefix(run_id)}/tag={tag_id}.json"


def contacts_name(run_id: RunId, tag_id: int) -> str:
    """Students' contact data of a tag; deleted by the loader once merged into the restricted table."""
    return f"contacts/{_prefix(run_id)}/tag={tag_id}.ndjson"


def lanes_prefix(run_id: RunId) -> str:
    """Where a run's lane objects live (lanes.py): its tag manifest, the claims, the published markers."""
    return f"lanes/{_prefix(run_id)}/"


def lane_manifest_name(run_id: RunId) -> str:
    return f"{lanes_prefix(run_id)}tags.json"


def lane_claim_name(run_id: RunId, tag_id: int) -> str:
    return f"{lanes_prefix(run_id)}tag={tag_id}.json"


def lane_published_name(run_id: RunId, tag_id: int) -> str:
    return f"{lanes_prefix(run_id)}published/tag={tag_id}.json"


@dataclass(frozen=True)
class ShardName:
    """The parts of a progress shard's (or contacts file's) object name."""

    run_id: RunId
    tag_id: int
    piece: int = 0

    @property
    def snapshot_date(self) -> date:
        return self.run_id.snapshot_date


def _parse_name(pattern: re.Pattern[str], name: str) -> ShardName | None:
    match = pattern.fullmatch(name)
    run_id = RunId.parse_or_none(match["run"]) if match else None
    if match is None or run_id is None or run_id.snapshot_date.isoformat() != match["date"]:
        return None
    piece = int(match["piece"]) if "piece" in pattern.groupindex else 0
    return ShardName(run_id, int(match["tag"]), piece)


def parse_progress_shard(name: str) -> ShardName | None:
    """The parts of a progress shard's name; None when the object is not a progress shard."""
    return _parse_name(PROGRESS_SHARD, name)


def parse_contacts(name: str) -> ShardName | None:
    """The parts of a contacts file's name; None when the object is not one."""
    return _parse_name(CONTACTS, name)


# -- events -----------------------------------------------------------------------------------------------

MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PubSubMessage:
    """A Pub/Sub message delivered as a CloudEvent (push or Eventarc)."""

    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None

    def json(self) -> dict[str, Any]:
        """The message body as a JSON object, or PermanentError."""
        if len(self.data) > MAX_MESSAGE_BYTES:
            raise PermanentError(f"message body of {len(self.data)} bytes is larger than expected")
        try:
            value = json.loads(self.data or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise PermanentError("message body is not JSON") from exc
        if not isinstance(value, dict):
            raise PermanentError("message body is not a JSON object")
        return value


@dataclass(frozen=True)
class ObjectRef:
    """A finalized Cloud Storage object."""

    bucket: str
    name: str
    generation: int


def _event_data(event: Any) -> Any:
    data = event.get_data() if hasattr(event, "get_data") else event.get("data")
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise PermanentError("event data is not JSON") from exc
    return data


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pubsub_message(event: Any) -> PubSubMessage:
    """The Pub/Sub message inside a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent."""
    data = _event_data(event)
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise PermanentError("event carries no Pub/Sub message")
    raw = message.get("data") or ""
    try:
        body = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError, TypeError) as exc:
        raise PermanentError("Pub/Sub message data is not base64") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        attributes = {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    return PubSubMessage(
        message_id=message_id,
        data=body,
        attributes={str(k): str(v) for k, v in attributes.items()},
        publish_time=_parse_time(message.get("publishTime") or message.get("publish_time")),
    )


def finalize_notification(ref: ObjectRef) -> dict[str, str]:
    """The attributes of a Cloud Storage Pub/Sub notification for `ref`: what load_history accepts besides
    Eventarc's CloudEvent (fake-gcs-server sends it; the health check re-sends a lost event in it)."""
    return {
        "eventType": "OBJECT_FINALIZE",
        "bucketId": ref.bucket,
        "objectId": ref.name,
        "objectGeneration": str(ref.generation),
    }


def event_as_message(event: Any) -> PubSubMessage:
    """As much of an event as can be read, for the dead-letter topic: the Pub/Sub message when there is one,
    else the event's raw data (a malformed envelope is kept for the operator, not re-parsed)."""
    try:
        return pubsub_message(event)
    except PermanentError:
        pass
    event_id = event.get("id") if hasattr(event, "get") else None
    try:
        data = event.get_data() if hasattr(event, "get_data") else event.get("data")
    except Exception:
        data = None
    if isinstance(data, str):
        raw = data.encode("utf-8", "replace")
    elif isinstance(data, bytes):
        raw = data
    else:
        try:
            raw = json.dumps(data).encode()
        except (TypeError, ValueError):
            raw = repr(data).encode()
    return PubSubMessage(str(event_id or "")[:100], raw[:MAX_MESSAGE_BYTES], {}, None)


def storage_object(event: Any) -> ObjectRef | None:
    """The object of a finalize event: an Eventarc CloudEvent, or a Pub/Sub notification (fake-gcs-server).

    Returns None for events that are not object finalizations (they are acknowledged and ignored).
    """
    data = _event_data(event)
    if not isinstance(data, dict):
        raise PermanentError("storage event data is not an object")
    if isinstance(data.get("message"), dict):  # Pub/Sub notification format (finalize_notification)
        attrs = pubsub_message(event).attributes
        if attrs.get("eventType") != "OBJECT_FINALIZE":
            return None
        bucket, name, generation = attrs.get("bucketId"), attrs.get("objectId"), attrs.get("objectGeneration")
    else:  # google.cloud.storage.object.v1.finalized CloudEvent
        bucket, name, generation = data.get("bucket"), data.get("name"), data.get("generation")
    if not isinstance(bucket, str) or not bucket or not isinstance(name, str) or not name:
        raise PermanentError("storage event lacks bucket or object name")
    gen = parse_uint(str(generation), max_digits=20)
    if gen is None:
        raise PermanentError("storage event generation is not a number")
    return ObjectRef(bucket=bucket, name=name, generation=gen)
