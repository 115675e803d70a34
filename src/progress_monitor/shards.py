"""Names of the objects in the shards bucket, and the task message that asks for one piece of a tag."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from progress_monitor.errors import PermanentError

RUN_ID = re.compile(r"^\d{4}-\d{2}-\d{2}(-[a-z0-9][a-z0-9-]{0,30})?$")
PROGRESS_SHARD = re.compile(
    r"^progress/snapshot_date=(?P<date>\d{4}-\d{2}-\d{2})/run=(?P<run>[a-z0-9-]{10,41})"
    r"/tag=(?P<tag>\d{1,12})/piece=(?P<piece>\d{4})\.ndjson$"
)
CONTACTS = re.compile(
    r"^contacts/snapshot_date=(?P<date>\d{4}-\d{2}-\d{2})/run=(?P<run>[a-z0-9-]{10,41})/tag=(?P<tag>\d{1,12})\.ndjson$"
)
MAX_PRODUCTS = 100


def _prefix(snapshot_date: date, run_id: str) -> str:
    return f"snapshot_date={snapshot_date.isoformat()}/run={run_id}"


def progress_shard_name(snapshot_date: date, run_id: str, tag_id: int, piece: int) -> str:
    """Deterministic name of one piece's records: a redelivered piece finds its own shard."""
    return f"progress/{_prefix(snapshot_date, run_id)}/tag={tag_id}/piece={piece:04d}.ndjson"


def roster_name(snapshot_date: date, run_id: str, tag_id: int) -> str:
    """The user ids piece 0 listed (no personal data), read by the later pieces."""
    return f"rosters/{_prefix(snapshot_date, run_id)}/tag={tag_id}.json"


def contacts_name(snapshot_date: date, run_id: str, tag_id: int) -> str:
    """Students' contact data of a tag; deleted by the loader once merged into the restricted table."""
    return f"contacts/{_prefix(snapshot_date, run_id)}/tag={tag_id}.ndjson"


@dataclass(frozen=True)
class ShardName:
    """The parts of a progress shard's object name."""

    snapshot_date: date
    run_id: str
    tag_id: int
    piece: int


def parse_progress_shard(name: str) -> ShardName | None:
    """Parse a progress shard name; None when the object is not a progress shard."""
    match = PROGRESS_SHARD.match(name)
    if not match or not RUN_ID.match(match["run"]):
        return None
    try:
        snapshot = date.fromisoformat(match["date"])
    except ValueError:
        return None
    return ShardName(snapshot, match["run"], int(match["tag"]), int(match["piece"]))


def _int(raw: dict[str, Any], key: str, minimum: int, maximum: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise PermanentError(f"task field {key!r} must be an integer in {minimum}..{maximum}")
    return value


@dataclass(frozen=True)
class ProgressTask:
    """One message on the progress topic: extract piece `piece` of a tag for a run (ids only)."""

    run_id: str
    snapshot_date: date
    tag_id: int
    product_ids: tuple[int, ...]
    piece: int = 0
    next_index: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "snapshot_date": self.snapshot_date.isoformat(),
            "tag_id": self.tag_id,
            "product_ids": list(self.product_ids),
            "piece": self.piece,
            "next_index": self.next_index,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ProgressTask:
        """Validate an untrusted task message."""
        run_id = raw.get("run_id")
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise PermanentError("task field 'run_id' is missing or malformed")
        try:
            snapshot = date.fromisoformat(str(raw.get("snapshot_date")))
        except ValueError as exc:
            raise PermanentError("task field 'snapshot_date' is not a date") from exc
        if not run_id.startswith(snapshot.isoformat()):
            raise PermanentError("task run_id does not belong to its snapshot_date")
        products = raw.get("product_ids")
        if not isinstance(products, list) or not 0 < len(products) <= MAX_PRODUCTS:
            raise PermanentError("task field 'product_ids' must be a non-empty list")
        product_ids = tuple(_int({"p": p}, "p", 1, 10**12) for p in products)
        if len(set(product_ids)) != len(product_ids):
            raise PermanentError("task field 'product_ids' repeats a product")
        return cls(
            run_id=run_id,
            snapshot_date=snapshot,
            tag_id=_int(raw, "tag_id", 1, 10**12),
            product_ids=product_ids,
            piece=_int(raw, "piece", 0, 9999) if "piece" in raw else 0,
            next_index=_int(raw, "next_index", 0, 10**7) if "next_index" in raw else 0,
        )
