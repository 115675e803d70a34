"""Strict parsers of the values every contract is made of: ids, counts, dates, run ids, Cademi timestamps,
Slack ids and the extraction status.

ASCII only, the whole text or nothing: `str.isdigit()` accepts "²" and "٢", which `int()` then refuses or
reads, and "$" matches before a trailing newline. Every id, count, date and label from outside is read by one
of these, never by `isdigit()`, `int()` or a "$"-anchored match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from progress_monitor.errors import PermanentError


def strict(pattern: str) -> re.Pattern[str]:
    """A pattern whose \\d means [0-9]; use it with fullmatch()."""
    return re.compile(pattern, re.ASCII)


_DIGITS = strict(r"[0-9]{1,20}")
ISO_DATE = strict(r"\d{4}-\d{2}-\d{2}")


def parse_uint(text: object, max_digits: int = 12) -> int | None:
    """A non-negative integer written in ASCII digits (at most `max_digits`), or None."""
    if not isinstance(text, str) or len(text) > max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)


def parse_date(text: object) -> date | None:
    """A date written exactly `YYYY-MM-DD` (not `20261005`, not `2026-W41-1`), or None."""
    if not isinstance(text, str) or not ISO_DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def json_int(value: object) -> int | None:
    """An integer from a JSON document: never from `true`, `12.9` or a string."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def int_field(raw: dict[str, Any], key: str, minimum: int, maximum: int, *, what: str = "field") -> int:
    """`raw[key]` as an integer in minimum..maximum, or a PermanentError naming the field."""
    value = json_int(raw.get(key))
    if value is None or not minimum <= value <= maximum:
        raise PermanentError(f"{what} {key!r} must be an integer in {minimum}..{maximum}")
    return value


def text_field(raw: dict[str, Any], key: str, pattern: re.Pattern[str], *, what: str = "field") -> str:
    """`raw[key]` as a string matching `pattern` whole, or a PermanentError naming the field."""
    value = raw.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise PermanentError(f"{what} {key!r} is missing or malformed")
    return value


# -- Slack ids ------------------------------------------------------------------------------------------------

SLACK_TEAM = strict(r"T[A-Z0-9]{2,20}")
SLACK_USER = strict(r"[UW][A-Z0-9]{2,20}")
SLACK_CHANNEL = strict(r"[CG][A-Z0-9]{2,20}")  # public (C) or private (G) channel ids
SLACK_TUTOR = strict(rf"slack:{SLACK_USER.pattern}")  # a tutor as recorded: the member id, never the name
MESSAGE_TS = strict(r"\d{9,12}\.\d{1,9}")  # a message's ts, its id within the channel


# -- the extraction status ------------------------------------------------------------------------------------


class Status(StrEnum):
    """How one (student, product) extraction ended; `rank` orders them for the history rule."""

    OK = "ok"
    NO_ACCESS = "no_access"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        """An observation never replaces a better one: ok > no_access > failed, whatever their times."""
        return {Status.OK: 2, Status.NO_ACCESS: 1, Status.FAILED: 0}[self]

    @classmethod
    def sql_list(cls) -> str:
        """Every status as an SQL `IN` list: `('ok', 'no_access', 'failed')`."""
        return "(" + ", ".join(f"'{s.value}'" for s in cls) + ")"


# -- Cademi timestamps ----------------------------------------------------------------------------------------
# The fact sheet: documented as ISO-8601, but examples mix `2022-01-12T15:50:47-03:00` and naive
# `2020-01-12 19:59:20` (school time). Seconds and an offset (or Z) are optional; fractions are allowed.
CADEMI_TIME = strict(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"(?P<offset>Z|[+-]\d{2}:?\d{2})?"
)
FUTURE_TOLERANCE = timedelta(days=1)  # clocks differ a little; a last access days ahead is not an observation


class TimestampError(ValueError):
    """A Cademi timestamp that cannot be read, or lies in the future."""


# No real access to Cademi predates this; older values are placeholders (epoch zero, year 1), read as unknown.
EARLIEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=UTC)


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
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(tz))
        moment = moment.astimezone(UTC)  # OverflowError for year 1 east of UTC
    except (ValueError, OverflowError) as exc:
        raise TimestampError("not a valid date and time") from exc
    if moment > now + FUTURE_TOLERANCE:
        raise TimestampError("in the future")
    if moment < EARLIEST_PLAUSIBLE:  # 1970-01-01 and the like are placeholders, not accesses
        raise TimestampError("before Cademi existed")
    return moment


# -- weeks and run ids ----------------------------------------------------------------------------------------

RUN_LABEL_MAX = 20
RUN_ID = strict(rf"(?P<date>\d{{4}}-\d{{2}}-\d{{2}})(?:-(?P<label>[a-z0-9][a-z0-9-]{{0,{RUN_LABEL_MAX - 1}}}))?")
RUN_LABEL = strict(rf"[a-z0-9][a-z0-9-]{{0,{RUN_LABEL_MAX - 1}}}")


def is_pseudonym(user_id: int) -> bool:
    """An erased student's id in the history (privacy/erasures.py): negative, so never one of Cademi's. It stands
    in for the student in class-level figures and is never shown to anyone."""
    return user_id < 0


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

    @classmethod
    def field(cls, raw: dict[str, Any], key: str = "run_id", *, what: str = "field") -> RunId:
        """`raw[key]` as a run id, or a PermanentError naming the field."""
        try:
            return cls.parse(raw.get(key))
        except ValueError as exc:
            raise PermanentError(f"{what} {key!r} is missing or not a run id (a Monday, YYYY-MM-DD)") from exc
