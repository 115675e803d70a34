"""The erasure of one student, place by place as the inventory (privacy_inventory.py) lists them.

The order lets a retry finish what an interrupted attempt started, and keeps a weekly run from bringing the
student back meanwhile:
1. refused while any run is unfinished (its roster, shards and resume positions must not change under it);
2. the registry entry, pending, with a fresh pseudonym: from then on extraction skips the student; then the
   runs are checked again (a run that started in between may have listed them: the erasure stops, exit 3);
3. the pseudonym loaded into a scratch table (privacy_tables.py: no BigQuery job holds both id and pseudonym);
4. passes, at most PASSES: contact data deleted, texts and lists rewritten, id columns pseudonymised, the reports
   rebuilt at once; the bucket's objects and their noncurrent versions rewritten or deleted; leftover run-time
   tables dropped; writes in flight noted (staging tables); then everything scanned again (tables, reports,
   objects and versions) until clean; not done while a write was in flight;
5. the entry marked done, its pseudonym dropped, and its old versions (which hold the pseudonym) deleted.

Refusal: nothing was changed (exit 2). Incomplete: something was, the erasure is not finished, and running the
same command again finishes it (exit 3).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from datetime import datetime

from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.pipeline import reporting
from progress_monitor.privacy import erasures
from progress_monitor.privacy.objects import buckets, naming_objects, rewrite_objects
from progress_monitor.privacy.tables import (
    drop_dead_tables,
    drop_scratch,
    erase_tables,
    load_scratch,
    table_rows,
    unfinished_runs,
    writes_in_flight,
)
from progress_monitor.services import Services
from progress_monitor.settings import Settings

log = logging.getLogger("progress_monitor.commands.privacy")
PASSES = 3


class Refusal(Exception):
    """A request the command refuses; nothing was changed."""


class Incomplete(Exception):
    """The erasure changed things and did not finish; the same command, run again, finishes it."""


@dataclass
class Outcome:
    state: str  # "erased", "already erased"
    request: str
    tables: dict[str, int] = field(default_factory=dict)
    objects: int = 0


def wait_for(running: list[str]) -> str:
    return (
        f"unfinished run(s) {', '.join(running)}: resume them (`python -m progress_monitor replay resume --run "
        f"{running[0]}`) or, if one can never finish, close it (`python -m progress_monitor replay close --run "
        f"{running[0]} --reason ... --by ...`), then erase"
    )


def verified_key(cfg: Settings, bucket: storage.Bucket) -> bytes:
    """The privacy key, once the registry's key check says it is the registry's (Refusal otherwise)."""
    key = erasures.privacy_key(cfg)
    try:
        erasures.check_key(bucket, key, entries=bool(erasures.erased_digests(bucket)))
    except erasures.KeyMismatch as exc:
        raise Refusal(f"{exc}: restore the key the registry was written with (docs/privacy.md)") from exc
    return key


def erase(svc: Services, user_id: int, request: str, by: str) -> Outcome:
    """Erase one student (see the module's docstring for the order); idempotent."""
    now = svc.now()
    if running := unfinished_runs(svc):
        raise Refusal(wait_for(running))
    bucket = svc.state  # the registry of erasures
    key = verified_key(svc.cfg, bucket)
    digest = erasures.digest_of(key, user_id)
    entry = erasures.read(bucket, digest)
    held = table_rows(svc, user_id)
    scan = naming_objects(buckets(svc), user_id, -1)
    if entry is None and not held and scan.clean():
        raise Refusal("no data is held about that student id, and no erasure of it is recorded")
    if entry is not None and entry[0].state == erasures.DONE and not held and scan.clean():
        _note_request(bucket, digest, entry, request, by, now)
        return Outcome("already erased", entry[0].request)
    try:
        return _erase(svc, key, digest, entry, user_id, request, by, now, held)
    except Incomplete:
        raise
    except Exception as exc:  # anything after the first change: the operator runs the command again
        raise Incomplete(f"{type(exc).__name__}: {exc}") from exc


def _note_request(
    bucket: storage.Bucket, digest: str, entry: tuple[erasures.Erasure, int], request: str, by: str, now: datetime
) -> None:
    """A request not yet listed in a finished entry is added to it (the entry keeps every request)."""
    noted = entry[0].with_request(request, by, now.isoformat())
    if noted != entry[0]:
        erasures.drop_old_versions(bucket, digest, erasures.replace(bucket, digest, noted, entry[1]))


def _erase(
    svc: Services,
    key: bytes,
    digest: str,
    entry: tuple[erasures.Erasure, int] | None,
    user_id: int,
    request: str,
    by: str,
    now: datetime,
    held: dict[str, int],
) -> Outcome:
    bucket = svc.state  # the registry of erasures
    at = now.isoformat()
    if entry is None or entry[0].state == erasures.DONE:
        # A new erasure, or rows that came back after a finished one (old shards restored from a backup and
        # replayed): a new pseudonym, since the finished erasure dropped its own.
        first = erasures.Erasure(request, by, at, requests=({"request": request, "by": by, "at": at},))
        listed = entry[0].with_request(request, by, at).requests if entry else first.requests
        fresh = replace_fields(first, pseudonym=erasures.new_pseudonym(), scratch=secrets.token_hex(8), requests=listed)
        if entry is None:
            erasures.write_keycheck(bucket, key)  # before the first entry: the registry's key is recorded
            if not erasures.create(bucket, digest, fresh):
                raise Incomplete("another erasure of this student started meanwhile")
        else:
            erasures.replace(bucket, digest, fresh, entry[1])
    elif (noted := entry[0].with_request(request, by, at)) != entry[0]:
        erasures.replace(bucket, digest, noted, entry[1])
    pending = erasures.read(bucket, digest)
    if pending is None or pending[0].pseudonym is None:
        raise Incomplete("the erasure entry vanished meanwhile")
    if running := unfinished_runs(svc):
        raise Incomplete(f"{wait_for(running)} (new runs already skip the student)")
    erasure = pending[0]
    pseudonym = int(erasure.pseudonym or 0)
    scratch = load_scratch(svc, erasure.scratch or secrets.token_hex(8), pseudonym)
    objects = 0
    try:
        for _ in range(PASSES):
            erase_tables(svc, user_id, scratch)
            reporting.refresh(svc)
            objects += rewrite_objects(naming_objects(buckets(svc), user_id, pseudonym))
            # One clock for both: a table is either dead (dropped) or young (looked into), never neither.
            checked_at = svc.now()
            drop_dead_tables(svc, checked_at)
            # Before the final scan: a write in flight now is waited for; one merged before now, the scan finds;
            # one staged after now reads reports that no longer hold the student (tutors/records.py).
            in_flight = writes_in_flight(svc, user_id, checked_at)
            left, scan = table_rows(svc, user_id), naming_objects(buckets(svc), user_id, pseudonym)
            if not left and not scan.found:
                break
        else:
            raise Incomplete(f"still found after {PASSES} passes: {sorted(left)} {scan.names()}")
    finally:
        drop_scratch(svc, scratch)
    if scan.unreadable:
        raise Incomplete(f"objects naming the student cannot be read: {scan.unreadable}; inspect and delete them")
    if in_flight:
        # A load or a Slack write in progress may merge these rows back after the passes: not done until it has
        # finished (its rows are then pseudonymised by the next run of this command).
        raise Incomplete(
            f"writes in progress may hold the student's rows ({', '.join(in_flight)}); run again in minutes "
            "(a table left by a write that died is dropped once an hour old)"
        )
    _finish(bucket, digest, erasure, svc.now())
    log.info("erasure finished: %d table rows, %d objects", sum(held.values()), objects, extra={"count": objects})
    return Outcome("erased", request, held, objects)


def _finish(bucket: storage.Bucket, digest: str, erasure: erasures.Erasure, now: datetime) -> None:
    current = erasures.read(bucket, digest)
    if current is None:
        raise Incomplete("the erasure entry vanished meanwhile")
    done = replace_fields(current[0], state=erasures.DONE, finished_at=now.isoformat(), pseudonym=None, scratch=None)
    erasures.drop_old_versions(bucket, digest, erasures.replace(bucket, digest, done, current[1]))
