"""Every Pub/Sub message body, its builder and its strict parser side by side.

- `ScheduleRequest` (schedule topic): Cloud Scheduler's weekly `{}`, a manual or local trigger's `week`, a
  deliberate re-run's label and tag filter, or the daily health check.
- `ProgressTask` (progress topic): "extract piece `piece` of a tag, from roster index `start_index`".
- The Slack tasks (Slack tasks topic), one typed union `SlackTask`: `DigestTask` (post a run's digests),
  `ClickTask` (a tutor's button click), `ClassListTask` (`/turma alunos <tag>`).

Each message names the settings field of its topic (`TOPIC`), so `Services.send` needs nothing else. A malformed
body is a PermanentError naming the field: it is dead-lettered once, never retried.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, ClassVar, Literal, Protocol
from zoneinfo import ZoneInfo

from progress_monitor.contracts.values import (
    MESSAGE_TS,
    RUN_LABEL,
    SLACK_CHANNEL,
    SLACK_TUTOR,
    SLACK_USER,
    RunId,
    int_field,
    json_int,
    monday_of,
    parse_date,
    text_field,
)
from progress_monitor.errors import PermanentError

MAX_PRODUCTS = 100
MAX_ID = 10**12
MAX_TAG_ID = 10**9 - 1  # tags are registered with at most nine digits
MAX_PIECE = 9999
MAX_ROSTER = 10**7
MAX_TAG_FILTER = 1000
MAX_URL = 2000


class Message(Protocol):
    """What `Services.send` publishes: a body, its attributes, and the settings field naming its topic."""

    TOPIC: ClassVar[str]

    def encode(self) -> bytes: ...

    def attributes(self) -> dict[str, str]: ...


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


# -- the schedule topic ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRequest:
    """What a schedule message asks for. The week is `week`'s (any date of it) or else the publish time's, in
    the school's time zone, so the same scheduled slot always gives the same run; `rerun` gives a deliberate
    re-extraction its own run id; `tag_ids` limits the run to some tags; `health_check` asks for the daily check
    instead of a run."""

    TOPIC: ClassVar[str] = "schedule_topic"
    week: date | None = None
    rerun: str | None = None
    tag_ids: frozenset[int] | None = None
    health_check: bool = False

    def run_id(self, tz: str, published: datetime) -> RunId:
        """The run this request asks for, `published` being the message's publish time."""
        moment = datetime.combine(self.week, time.min, ZoneInfo(tz)) if self.week else published
        return RunId(monday_of(moment, tz), self.rerun)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.health_check:
            body["health_check"] = True
        if self.week is not None:
            body["week"] = self.week.isoformat()
        if self.rerun is not None:
            body["rerun"] = self.rerun
        if self.tag_ids is not None:
            body["tag_ids"] = sorted(self.tag_ids)
        return body

    def encode(self) -> bytes:
        return _encode(self.to_json())

    def attributes(self) -> dict[str, str]:
        return {}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ScheduleRequest:
        """Validate an untrusted schedule body (unknown fields are ignored, as Cloud Scheduler may add some)."""
        health = raw.get("health_check", False)
        if not isinstance(health, bool):
            raise PermanentError("schedule field 'health_check' must be true or false")
        week = raw.get("week")
        parsed_week = parse_date(week) if week is not None else None
        if week is not None and parsed_week is None:
            raise PermanentError(f"schedule field 'week' is not a date (YYYY-MM-DD): {str(week)[:20]!r}")
        rerun = raw.get("rerun")
        if rerun is not None and (not isinstance(rerun, str) or not RUN_LABEL.fullmatch(rerun)):
            raise PermanentError("schedule field 'rerun' must be a short lower-case label")
        only = raw.get("tag_ids")
        if only is not None:
            if not isinstance(only, list) or len(only) > MAX_TAG_FILTER:
                raise PermanentError("schedule field 'tag_ids' must be a list of integers")
            ids = [json_int(t) for t in only]
            if any(t is None or not 0 < t <= MAX_ID for t in ids):
                raise PermanentError("schedule field 'tag_ids' must be a list of integers")
        return cls(
            week=parsed_week,
            rerun=rerun,
            tag_ids=frozenset(t for t in ids if t is not None) if only is not None else None,
            health_check=health,
        )


# -- the progress topic ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressTask:
    """Extract piece `piece` of a tag for a run, starting at index `start_index` of its frozen roster."""

    TOPIC: ClassVar[str] = "progress_topic"
    run_id: RunId
    tag_id: int
    product_ids: tuple[int, ...]
    piece: int = 0
    start_index: int = 0

    @property
    def snapshot_date(self) -> date:
        return self.run_id.snapshot_date

    def next(self, start_index: int) -> ProgressTask:
        """The task of the piece that continues this one at `start_index`."""
        return ProgressTask(self.run_id, self.tag_id, self.product_ids, self.piece + 1, start_index)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "snapshot_date": self.snapshot_date.isoformat(),
            "tag_id": self.tag_id,
            "product_ids": list(self.product_ids),
            "piece": self.piece,
            "start_index": self.start_index,
            "next_index": self.start_index,  # the old name, for one release: a rolled-back reader finds it
        }

    def encode(self) -> bytes:
        return _encode(self.to_json())

    def attributes(self) -> dict[str, str]:
        """Message attributes: what the failure policy records if the message is dead-lettered."""
        return {"run_id": str(self.run_id), "tag_id": str(self.tag_id), "piece": str(self.piece)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ProgressTask:
        """Validate an untrusted task message."""
        run_id = RunId.field(raw, what="task field")
        if raw.get("snapshot_date", run_id.snapshot_date.isoformat()) != run_id.snapshot_date.isoformat():
            raise PermanentError("task run_id does not belong to its snapshot_date")
        products = raw.get("product_ids")
        if not isinstance(products, list) or not 0 < len(products) <= MAX_PRODUCTS:
            raise PermanentError("task field 'product_ids' must be a non-empty list")
        product_ids = tuple(
            int_field({"product_ids[]": p}, "product_ids[]", 1, MAX_ID, what="task field") for p in products
        )
        if len(set(product_ids)) != len(product_ids):
            raise PermanentError("task field 'product_ids' repeats a product")
        # `next_index` is the name tasks published before the rename carry.
        start_key = "start_index" if "start_index" in raw or "next_index" not in raw else "next_index"
        return cls(
            run_id=run_id,
            tag_id=int_field(raw, "tag_id", 1, MAX_ID, what="task field"),
            product_ids=product_ids,
            piece=int_field({"piece": 0, **raw}, "piece", 0, MAX_PIECE, what="task field"),
            start_index=int_field({start_key: 0, **raw}, start_key, 0, MAX_ROSTER, what="task field"),
        )


# -- the Slack tasks topic ------------------------------------------------------------------------------------

CLICK_ACTIONS = ("contatado", "sem_resposta")  # the buttons under a digest, by action_id


@dataclass(frozen=True)
class DigestTask:
    """Post (or update in place) the tutors' digests of a run's week."""

    TOPIC: ClassVar[str] = "slack_tasks_topic"
    KIND: ClassVar[Literal["digest"]] = "digest"
    run_id: RunId

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.KIND, "run_id": str(self.run_id)}

    def encode(self) -> bytes:
        return _encode(self.to_json())

    def attributes(self) -> dict[str, str]:
        return {"kind": self.KIND, "run_id": str(self.run_id)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DigestTask:
        return cls(RunId.field(raw, what="digest task field"))


@dataclass(frozen=True)
class ClickTask:
    """A verified click on a digest's button: who (`tutor`, `slack:<member id>`) did what to which student."""

    TOPIC: ClassVar[str] = "slack_tasks_topic"
    KIND: ClassVar[Literal["click"]] = "click"
    week: date
    tag_id: int
    user_id: int
    action: str
    tutor: str
    channel: str
    message_ts: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "week": self.week.isoformat(),
            "tag_id": self.tag_id,
            "user_id": self.user_id,
            "action": self.action,
            "tutor": self.tutor,
            "channel": self.channel,
            "message_ts": self.message_ts,
        }

    def encode(self) -> bytes:
        return _encode(self.to_json())

    def attributes(self) -> dict[str, str]:
        return {"kind": self.KIND, "tag_id": str(self.tag_id)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClickTask:
        what = "click task field"
        week = parse_date(raw.get("week"))
        if week is None:
            raise PermanentError(f"{what} 'week' is missing or not a date (YYYY-MM-DD)")
        action = raw.get("action")
        if not isinstance(action, str) or action not in CLICK_ACTIONS:
            raise PermanentError(f"{what} 'action' is not one of our buttons")
        return cls(
            week=week,
            tag_id=int_field(raw, "tag_id", 1, MAX_TAG_ID, what=what),
            user_id=int_field(raw, "user_id", 1, MAX_ID, what=what),
            action=action,
            tutor=text_field(raw, "tutor", SLACK_TUTOR, what=what),
            channel=text_field(raw, "channel", SLACK_CHANNEL, what=what),
            message_ts=text_field(raw, "message_ts", MESSAGE_TS, what=what),
        )


@dataclass(frozen=True)
class ClassListTask:
    """`/turma alunos <tag>`: answer through the command's `response_url` (checked against Slack's prefix by
    the worker, which knows the settings); `channel` is empty for a direct message (coordinators only)."""

    TOPIC: ClassVar[str] = "slack_tasks_topic"
    KIND: ClassVar[Literal["list"]] = "list"
    tag_id: int
    response_url: str
    requester: str
    channel: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "tag_id": self.tag_id,
            "response_url": self.response_url,
            "requester": self.requester,
            "channel": self.channel,
        }

    def encode(self) -> bytes:
        return _encode(self.to_json())

    def attributes(self) -> dict[str, str]:
        return {"kind": self.KIND}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClassListTask:
        what = "list task field"
        url = raw.get("response_url")
        if not isinstance(url, str) or not 0 < len(url) <= MAX_URL:
            raise PermanentError(f"{what} 'response_url' is missing or malformed")
        channel = raw.get("channel", "")
        if channel != "" and (not isinstance(channel, str) or not SLACK_CHANNEL.fullmatch(channel)):
            raise PermanentError(f"{what} 'channel' is not a channel id")
        return cls(
            tag_id=int_field(raw, "tag_id", 1, MAX_TAG_ID, what=what),
            response_url=url,
            requester=text_field(raw, "requester", SLACK_USER, what=what),
            channel=channel,
        )


SlackTask = DigestTask | ClickTask | ClassListTask
_SLACK_TASKS: dict[str, type[DigestTask] | type[ClickTask] | type[ClassListTask]] = {
    t.KIND: t for t in (DigestTask, ClickTask, ClassListTask)
}


def parse_slack_task(raw: dict[str, Any]) -> SlackTask:
    """A Slack task by its `kind`; PermanentError naming the field that is wrong."""
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _SLACK_TASKS:
        raise PermanentError(f"unknown Slack task kind {str(kind)[:30]!r}")
    return _SLACK_TASKS[kind].from_json(raw)
