"""The carry rule (issue 24): skip the progress call of a student who cannot have studied since their last good
observation, and write that observation again, marked carried. Pure: no I/O (carrying.py does the reading).

A student whose listed last access is strictly earlier than the start of the run that made their last `ok`
observation of a product in this class cannot have watched a lesson since. "The start of the run" is its
snapshot time: midnight (school time) of its snapshot Monday, the same in the cloud and in a simulated week of
the local stack, and never later than the run really started, so any doubt makes us read. Everything else
reads: see `Reason`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo

from progress_monitor.contracts.carry_plan import CarriedValue, CarryPlan
from progress_monitor.contracts.values import RunId, Status


class Reason(StrEnum):
    """What the rule decided for one student x product: carry, or why it reads."""

    CARRY = "carry"
    NO_OBSERVATION = "no_observation"  # first week here, a class change, or no row in the last N weeks
    NOT_OK = "not_ok"  # the latest earlier row is failed or no_access (or an ok row without values)
    UNKNOWN_ACCESS = "unknown_access"  # the listing gave no readable last access (null, malformed, future)
    FULL_READ_DUE = "full_read_due"  # the observation is N weeks old: staff may have changed access meanwhile
    ACCESS_MOVED_BACK = "access_moved_back"  # earlier than a last access we already saw: not trusted
    ACCESSED_SINCE = "accessed_since"  # at or after the observation's run started: may have studied


@dataclass(frozen=True)
class Previous:
    """The latest row of one student x product in this class before this week (carrying.py reads it)."""

    status: str
    total: float | None
    assistidas: int | None
    completas: int | None
    source_run: str  # the run that read the value: the row's own run, or the run a carried row names
    known_access: datetime | None  # the latest last access any of the student's rows here recorded
    observed_at: datetime | None = None  # when the value was read (a carried row keeps its source's time)


def run_start(snapshot_date: date, tz: str) -> datetime:
    """A run's snapshot time: midnight of its snapshot Monday in the school's time zone."""
    return datetime.combine(snapshot_date, time.min, ZoneInfo(tz))


def decide(
    last_access: datetime | None, previous: Previous | None, *, snapshot_date: date, tz: str, full_read_weeks: int
) -> Reason:
    """Carry one student x product of this week's run, or read it (and why)."""
    if previous is None:
        return Reason.NO_OBSERVATION
    values = (previous.total, previous.assistidas, previous.completas)
    if previous.status != Status.OK or None in values:
        return Reason.NOT_OK
    source = RunId.parse_or_none(previous.source_run)
    if source is None or source.snapshot_date >= snapshot_date:
        return Reason.NO_OBSERVATION  # not an earlier observation we can name
    if last_access is None:
        return Reason.UNKNOWN_ACCESS
    if (snapshot_date - source.snapshot_date).days >= 7 * full_read_weeks:
        return Reason.FULL_READ_DUE
    if previous.known_access is not None and last_access < previous.known_access:
        return Reason.ACCESS_MOVED_BACK
    if last_access >= run_start(source.snapshot_date, tz):
        return Reason.ACCESSED_SINCE
    return Reason.CARRY


def sample_size(skippable: int, share: float) -> int:
    """How many of the students the rule would carry are read anyway: `share`, at least one when any."""
    return 0 if skippable == 0 else min(skippable, max(1, math.ceil(share * skippable)))


def sample(run_id: RunId, tag_id: int, skippable: Iterable[int], share: float) -> frozenset[int]:
    """A deterministic sample seeded by the run id: the same run always verifies the same students."""
    ordered = sorted(skippable, key=lambda u: hashlib.sha256(f"{run_id}/{tag_id}/{u}".encode()).digest())
    return frozenset(ordered[: sample_size(len(ordered), share)])


def plan(
    *,
    run_id: RunId,
    tag_id: int,
    roster: Sequence[int],
    units: Sequence[tuple[int, ...]],
    last_access_at: Mapping[int, datetime],
    previous: Mapping[tuple[int, int], Previous],
    tz: str,
    full_read_weeks: int,
    sample_share: float,
) -> tuple[CarryPlan, dict[Reason, int]]:
    """The tag's carry plan, and how many student x product pairs each reason decided.

    `units` are how a student's products split into calls (v1: one per product; v3: one for all): a call is
    skipped only when every product it answers may be carried, so on v3 a student is carried whole or read."""
    carried: dict[int, dict[int, CarriedValue]] = {}
    reasons: dict[Reason, int] = {}
    for user in roster:
        mine: dict[int, CarriedValue] = {}
        for unit in units:
            decided = {
                product: decide(
                    last_access_at.get(user),
                    previous.get((user, product)),
                    snapshot_date=run_id.snapshot_date,
                    tz=tz,
                    full_read_weeks=full_read_weeks,
                )
                for product in unit
            }
            for reason in decided.values():
                reasons[reason] = reasons.get(reason, 0) + 1
            if all(reason is Reason.CARRY for reason in decided.values()):
                mine |= {product: _carried(previous[(user, product)]) for product in unit}
        if mine:
            carried[user] = mine
    return CarryPlan(carried, sample(run_id, tag_id, carried, sample_share)), reasons


def _carried(p: Previous) -> CarriedValue:
    # decide() carries only ok rows whose three values are present
    return CarriedValue(
        float(p.total or 0.0), int(p.assistidas or 0), int(p.completas or 0), p.source_run, p.observed_at
    )


def skipped_units(plan: CarryPlan, user_id: int, units: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The calls of `user_id` the plan lets the extraction skip (none for a sampled student)."""
    mine = plan.carried.get(user_id, {})
    if user_id in plan.sample or not mine:
        return []
    return [unit for unit in units if all(product in mine for product in unit)]
