"""The Monday digest: when a run's reports are rebuilt, each tutors' channel gets one message per week.

Exactly once per week and channel. A claim object in the state bucket (claims.py,
`slack/digests/<week>/<channel>.json`, created with a generation precondition, like every shard) decides which
delivery posts; it then records the message's `ts`. A redelivered request or a replay finds the `ts` and posts
nothing; a re-run of the week (a later run id) updates the same message in place, once (the claim is taken first,
status `updating`), and a late task of an earlier run changes nothing; a claim left by a delivery that died before
Slack answered is taken over after `digest_claim_lease_s`. A Slack outage raises a TransientError after the claim
is released, so Pub/Sub retries the digest; the load that asked for it finished long before.

A post Slack took but never answered (a read timeout) may be in the channel: its claim is kept `unconfirmed`
and nothing posts that week's digest there again on its own (the operator looks, then may delete the claim).
The one window left: a delivery that dies after Slack accepted the post and before it wrote the `ts` leaves a
claim without one, and the take-over posts again. It lasts one small GCS write.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from progress_monitor.contracts.values import RunId
from progress_monitor.errors import (
    PermanentError,
    SlackRefusedError,
    SlackUnavailableError,
    TransientError,
)
from progress_monitor.pipeline import runs
from progress_monitor.pipeline.reporting import call_first
from progress_monitor.platform import warehouse
from progress_monitor.services import Services
from progress_monitor.settings import Settings
from progress_monitor.tutors import claims, records
from progress_monitor.tutors.blocks import Action, ClassWeek, ListedStudent, digest, students_per_class

log = logging.getLogger("progress_monitor.tutors")
# No channel is started after this long into a task: its post (three attempts and two rate-limit waits, about
# 50 s at worst) and its record (a staging table, a load job and a MERGE, seconds: records.py) then still end
# within notify_tutors' 120 s timeout, so no delivery is cut off holding a claim mid-post or before its record.
TASK_BUDGET_S = 30.0

CHANNELS_SQL = """
SELECT r.tag_id, r.turma, r.track_id, COALESCE(ct.channel_id, cr.channel_id) AS channel_id,
  (SELECT ANY_VALUE(t.track_name) FROM `${tracks}` t WHERE t.track_id = r.track_id) AS track_name
FROM `${registered_tags}` r
LEFT JOIN `${slack_channels}` ct ON ct.scope = 'turma' AND ct.target = CAST(r.tag_id AS STRING)
LEFT JOIN `${slack_channels}` cr ON cr.scope = 'trilha' AND cr.target = r.track_id
"""
COUNTS_SQL = """
SELECT tag_id, snapshot_date, COUNT(*) AS students, COUNTIF(status = 'em risco') AS em_risco,
  COUNTIF(status = 'atrasado') AS atrasado, AVG(actual) AS mean_actual
FROM `${report_student_week}` WHERE snapshot_date IN (@week, @previous) GROUP BY tag_id, snapshot_date
"""
# The week's students em risco or atrasado, per class in the tutors' call order (reporting.call_first).
FLAGGED_SQL = """
SELECT s.tag_id, s.user_id, c.nome, s.status, s.weeks_behind, s.days_without_access, s.actual, s.expected
FROM `${report_student_week}` s LEFT JOIN `${student_names}` c ON c.user_id = s.user_id
WHERE s.snapshot_date = @week AND s.status IN ('em risco', 'atrasado')
  AND s.user_id >= 0  -- an erased student's pseudonym is never shown (contracts.values.is_pseudonym)
ORDER BY s.tag_id, ${call_first}
"""
ACTIONS_SQL = """
SELECT tag_id, user_id, action, tutor FROM `${tutor_actions}` WHERE snapshot_date = @week ORDER BY acted_at, tutor
"""


@dataclass
class ChannelDigest:
    """What one channel's message shows: its classes and the students it names."""

    channel: str
    classes: list[ClassWeek]
    listed: dict[int, list[ListedStudent]]

    def listed_pairs(self) -> list[list[int]]:
        return [[s.tag_id, s.user_id] for students in self.listed.values() for s in students]


def channel_digests(svc: Services, week: date, only_channel: str | None = None) -> dict[str, ChannelDigest]:
    """Per channel, the classes with data in `week` and the students to name (within Slack's block limit)."""
    tags = {int(r["tag_id"]): r for r in warehouse.query(svc, CHANNELS_SQL) if r["channel_id"]}
    counts: dict[tuple[int, date], dict[str, Any]] = {
        (int(r["tag_id"]), r["snapshot_date"]): r
        for r in warehouse.query(svc, COUNTS_SQL, week=week, previous=week - timedelta(days=7))
    }
    flagged: dict[int, list[ListedStudent]] = {}
    order = {"call_first": call_first("s.", "days_without_access")}
    for r in warehouse.query(svc, FLAGGED_SQL, sql_vars=order, week=week):
        flagged.setdefault(int(r["tag_id"]), []).append(ListedStudent.from_row(r))
    digests: dict[str, ChannelDigest] = {}
    for tag_id, tag in sorted(tags.items()):
        now = counts.get((tag_id, week))
        if now is None or (only_channel and tag["channel_id"] != only_channel):
            continue  # no data this week (a class registered later, or deactivated)
        before = counts.get((tag_id, week - timedelta(days=7)))
        mean, previous_mean = now["mean_actual"], before["mean_actual"] if before else None
        digests.setdefault(tag["channel_id"], ChannelDigest(tag["channel_id"], [], {})).classes.append(
            ClassWeek(
                tag_id=tag_id,
                turma=str(tag["turma"]),
                track_name=str(tag["track_name"] or tag["track_id"]),
                students=int(now["students"]),
                em_risco=int(now["em_risco"]),
                atrasado=int(now["atrasado"]),
                previous_em_risco=int(before["em_risco"]) if before else None,
                previous_atrasado=int(before["atrasado"]) if before else None,
                mean_actual=mean,
                change_mean_actual=None if mean is None or previous_mean is None else mean - previous_mean,
                flagged=flagged.get(tag_id, []),
            )
        )
    for d in digests.values():
        room = students_per_class(len(d.classes), svc.cfg.digest_students_per_class)
        d.listed = {c.tag_id: c.flagged[:room] for c in d.classes}
    return digests


# By class, not by student: a job whose parameters listed students' ids would keep them in the job history.
STILL_REPORTED_SQL = """
SELECT DISTINCT user_id FROM `${report_student_week}` WHERE snapshot_date = @week AND tag_id IN UNNEST(@tags)
"""


def _fence_erasures(svc: Services, week: date, d: ChannelDigest) -> None:
    """Right before a claim, a post or a record names students: keep only those the week's reports still hold
    under their id. A task that read the reports before an erasure finished would otherwise write the erased
    student's id back into its claim, the message and `slack_digests` after the erasure said done (the erasure
    rebuilds the reports first, so an erased student's rows carry the pseudonym by then)."""
    ids = sorted({user for _, user in d.listed_pairs()})
    if not ids:
        return
    tags = sorted({tag for tag, _ in d.listed_pairs()})
    present = {int(r["user_id"]) for r in warehouse.query(svc, STILL_REPORTED_SQL, week=week, tags=tags)}
    gone = set(ids) - present
    if gone:
        log.warning("%d student(s) no longer in the week's reports (erased meanwhile); not named", len(gone))
        d.listed = {tag: [s for s in students if s.user_id in present] for tag, students in d.listed.items()}


def week_actions(svc: Services, week: date) -> dict[tuple[int, int], list[Action]]:
    found: dict[tuple[int, int], list[Action]] = {}
    for r in warehouse.query(svc, ACTIONS_SQL, week=week):
        found.setdefault((int(r["tag_id"]), int(r["user_id"])), []).append(Action(str(r["action"]), str(r["tutor"])))
    return found


def render(
    cfg: Settings, week: date, d: ChannelDigest, actions: dict[tuple[int, int], list[Action]]
) -> tuple[str, list[dict[str, Any]]]:
    return digest(week, d.classes, d.listed, actions, cfg.tutor_list_url)


# -- posting -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestResult:
    posted: list[str]
    updated: list[str]
    skipped: list[str]
    refused: list[str]
    unconfirmed: list[str]


def post_run_digests(svc: Services, run_id: RunId) -> DigestResult:
    """Post (or update) the week's digest in every tutors' channel; TransientError when any channel must be
    retried (those already done are skipped on the retry)."""
    state = runs.run_state(svc, run_id)
    if state.status not in runs.FINISHED:
        raise PermanentError(f"run {run_id} is {state.status or 'unknown'}: digests follow finished runs only")
    week = run_id.snapshot_date
    if state.newest_week is not None and week < state.newest_week:
        # A late or replayed task of a past week: its list is gone; the newest week's digest is what tutors use.
        log.warning("digests of past week %s not posted", week, extra={"run_id": str(run_id)})
        return DigestResult([], [], [], [], [])
    digests = channel_digests(svc, week)
    actions = week_actions(svc, week)
    result = DigestResult([], [], [], [], [])
    retry: list[str] = []
    started = time.monotonic()
    for channel, d in sorted(digests.items()):
        if time.monotonic() - started > TASK_BUDGET_S:
            retry.append(channel)  # within the worker's timeout: the redelivery carries on from here
            continue
        try:
            outcome = _post_channel(svc, run_id, d, actions)
        except TransientError as exc:  # Slack down, or another delivery holding this channel's claim
            log.warning("digest for channel %s will be retried: %s", channel, exc)
            retry.append(channel)
            continue
        getattr(result, outcome).append(channel)
    log.info(
        "digests of %s: %d posted, %d updated, %d already posted, %d refused, %d to retry",
        run_id,
        len(result.posted),
        len(result.updated),
        len(result.skipped),
        len(result.refused),
        len(retry),
        extra={"run_id": str(run_id)},
    )
    if retry:
        raise TransientError(f"digests of {run_id} to retry in {len(retry)} channel(s)")
    return result


def _post_channel(svc: Services, run_id: RunId, d: ChannelDigest, actions: dict[tuple[int, int], list[Action]]) -> str:
    """Post, update or skip one channel's digest; the claim decides which delivery acts (see the module doc)."""
    bucket = svc.state
    week = run_id.snapshot_date
    now = svc.now()
    _fence_erasures(svc, week, d)
    mine = {"run_id": str(run_id), "claimed_at": now.isoformat(), "ts": None, "listed": d.listed_pairs()}
    if claims.create(bucket, week, d.channel, mine):
        claim = claims.read(bucket, week, d.channel)
        if claim is None:
            raise TransientError("digest claim unreadable right after creation")
        return _post(svc, run_id, d, actions, claim, mine)
    claim = claims.read(bucket, week, d.channel)
    if claim is None:
        raise TransientError("digest claim vanished; retrying")
    step = claims.next_step(
        claim.body,
        run_id,
        now,
        timedelta(seconds=svc.cfg.digest_claim_lease_s),
        lambda posted_by: _started_later(svc, run_id, posted_by),
    )
    if step is claims.Step.RECORD_UNCONFIRMED:
        _record(svc, run_id, d, None, "unconfirmed", "no_answer")  # in case the first record was lost
        return "skipped"
    if step is claims.Step.SKIP:
        return "skipped"
    if step is claims.Step.WAIT:
        raise TransientError(f"digest for {d.channel} is being posted or updated by another delivery")
    if step is claims.Step.UPDATE:
        return _update_in_place(svc, run_id, d, actions, claim, now)
    # No message yet: a claim left by a delivery that died before Slack answered, or one Slack refused (asked
    # again after the cause was fixed, or by the daily health check).
    if not claims.replace(bucket, claim, mine):
        raise TransientError(f"digest claim for {d.channel} changed; retrying")
    return _post(svc, run_id, d, actions, claim, mine)


def _post(
    svc: Services,
    run_id: RunId,
    d: ChannelDigest,
    actions: dict[tuple[int, int], list[Action]],
    claim: claims.Claim,
    mine: dict[str, Any],
) -> str:
    bucket = svc.state
    text, blocks = render(svc.cfg, run_id.snapshot_date, d, actions)
    try:
        ts = svc.slack().post_message(d.channel, text, blocks)
    except SlackUnavailableError as exc:
        if exc.maybe_done:
            return _unconfirmed(svc, run_id, d, claim, mine, str(exc))
        claims.release(bucket, claim)  # nothing was posted: the retry claims again
        raise
    except SlackRefusedError as exc:
        log.error("Slack refused the digest for channel %s: %s", d.channel, exc.code, extra={"run_id": str(run_id)})
        claims.replace(bucket, claim, {**mine, "status": "refused", "error": exc.code})
        _record(svc, run_id, d, None, "refused", exc.code)
        return "refused"
    if not claims.replace(bucket, claim, {**mine, "ts": ts, "channel": d.channel, "status": "posted"}):
        log.error("digest claim for %s changed while posting; the message may be duplicated", d.channel)
    _record(svc, run_id, d, ts, "posted", None)
    return "posted"


def _unconfirmed(
    svc: Services,
    run_id: RunId,
    d: ChannelDigest,
    claim: claims.Claim,
    mine: dict[str, Any],
    error: str,
) -> str:
    """Slack took the post but its answer never came (a read timeout): the message may well be in the channel.
    Without an idempotency key or the history scope we cannot find out, so the claim is kept, marked
    `unconfirmed`, and no delivery posts this week's digest in this channel again; the operator decides
    (docs/operations.md: delete the claim to post it again)."""
    bucket = svc.state
    log.error(
        "Slack did not answer the digest post for channel %s (%s); not posting again: check the channel",
        d.channel,
        error,
        extra={"run_id": str(run_id)},
    )
    claims.replace(bucket, claim, {**mine, "status": "unconfirmed", "error": "no_answer", "channel": d.channel})
    _record(svc, run_id, d, None, "unconfirmed", "no_answer")
    return "unconfirmed"


def confirm(svc: Services, claim: claims.Claim, channel: str, ts: str) -> bool:
    """An `unconfirmed` digest proved to be in the channel by a signed click on it: its claim takes the message's
    `ts` (so updates work again) and the week's record says `posted`. False when the claim moved meanwhile."""
    bucket = svc.state
    if not claims.replace(bucket, claim, {**claim.body, "ts": ts, "status": "posted", "error": None}):
        return False
    warehouse.query(
        svc,
        "UPDATE `${slack_digests}` SET status = 'posted', message_ts = @ts, error = NULL "
        "WHERE channel_id = @channel AND status = 'unconfirmed' AND run_id = @run_id",
        ts=ts,
        channel=channel,
        run_id=str(claim.body.get("run_id")),
    )
    log.info("an unconfirmed digest is in channel %s after all (a click on it)", channel)
    return True


def _started_later(svc: Services, run_id: RunId, posted_by: str) -> bool:
    """Whether `run_id` is a later run of the week than the one whose figures the message shows: only a re-run
    updates a digest, never a late task of an earlier run."""
    rows = warehouse.query(
        svc, "SELECT run_id, started_at FROM `${runs}` WHERE run_id IN UNNEST(@ids)", ids=[str(run_id), posted_by]
    )
    started = {r["run_id"]: r["started_at"] for r in rows}
    if posted_by not in started:
        return True  # the message's run is unknown (its row lost): the run asking now is the best the week has
    return str(run_id) in started and started[str(run_id)] > started[posted_by]


def _update_in_place(
    svc: Services,
    run_id: RunId,
    d: ChannelDigest,
    actions: dict[tuple[int, int], list[Action]],
    claim: claims.Claim,
    now: datetime,
) -> str:
    """A re-run of a week already posted: the same message shows the new figures (no second post). The claim
    is taken first (status `updating`), so two deliveries of the re-run do not both update."""
    bucket = svc.state
    ts = str(claim.ts)
    updating = {**claim.body, "run_id": str(run_id), "listed": d.listed_pairs(), "status": "updating"}
    if not claims.replace(bucket, claim, {**updating, "claimed_at": now.isoformat()}):
        raise TransientError(f"digest claim for {d.channel} changed; retrying")
    text, blocks = render(svc.cfg, run_id.snapshot_date, d, actions)
    try:
        svc.slack().update_message(d.channel, ts, text, blocks)
    except SlackUnavailableError:
        # The retry need not wait a lease.
        claims.replace(bucket, claim, {**updating, "claimed_at": claims.EPOCH.isoformat()})
        raise
    except SlackRefusedError as exc:  # e.g. the message was deleted, or the app removed from the channel
        log.error("Slack refused to update the digest in %s: %s", d.channel, exc.code, extra={"run_id": str(run_id)})
        claims.replace(bucket, claim, {**updating, "status": "refused", "error": exc.code})
        _record(svc, run_id, d, ts, "refused", exc.code)
        return "refused"
    if not claims.replace(bucket, claim, {**updating, "status": "updated"}):
        log.error("digest claim for %s changed while updating", d.channel)
    _record(svc, run_id, d, ts, "updated", None)
    return "updated"


def _record(svc: Services, run_id: RunId, d: ChannelDigest, ts: str | None, status: str, error: str | None) -> None:
    records.record_digest(
        svc,
        {
            "snapshot_date": run_id.snapshot_date,
            "channel_id": d.channel,
            "run_id": str(run_id),
            "message_ts": ts,
            "status": status,
            "error": error,
            "tag_ids": ",".join(str(c.tag_id) for c in d.classes),
            "students_listed": ",".join(str(user) for _, user in d.listed_pairs()),
            "em_risco": sum(c.em_risco for c in d.classes),
            "atrasado": sum(c.atrasado for c in d.classes),
            "posted_at": svc.now(),
        },
    )


def refresh_message(svc: Services, week: date, channel: str, claim: claims.Claim) -> bool:
    """Re-render the posted digest `claim` records with the tutors' latest actions (after a click); False when
    none was posted."""
    d = channel_digests(svc, week, only_channel=channel).get(channel)
    if claim.ts is None or d is None:
        return False
    # The message keeps the students it named when posted, even if a later load reordered the list.
    for c in d.classes:
        d.listed[c.tag_id] = [s for s in c.flagged if (s.tag_id, s.user_id) in claim.listed]
    text, blocks = render(svc.cfg, week, d, week_actions(svc, week))
    svc.slack().update_message(channel, claim.ts, text, blocks)
    return True
