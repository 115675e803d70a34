"""Every object name, the bucket it lives in, its format and its parse side by side, and the metadata and
bodies the stages hand each other through objects.

Two buckets (`bucket_of`). The shards bucket holds only what load_history loads, since its trigger fires for
every object finalized there:

    progress/snapshot_date=D/run=R/tag=T/piece=NNNN.ndjson   a piece's records (ShardMeta in its metadata)
    contacts/snapshot_date=D/run=R/tag=T.ndjson               contact data, deleted once merged

The state bucket holds everything else, the run state and the registries, which no trigger watches:

    rosters/snapshot_date=D/run=R/tag=T.json                  the ids piece 0 listed (no personal data)
    lanes/snapshot_date=D/run=R/tags.json                     a run's tags in order (lanes.py)
    lanes/snapshot_date=D/run=R/tag=T.json                    the claim of tag T
    lanes/snapshot_date=D/run=R/published/tag=T.json          T's piece 0 is published
    budget/cademi.json                                        the school-wide Cademi budget (budget.py)
    carry/snapshot_date=D/run=R/tag=T.json                    the rows piece 0 decided to carry (carry.py)
    carry/off.json                                            carrying switched off after a mismatch (carrying.py)
    slack/digests/W/C.json                                    the digest claim of week W in channel C
    erasures/H.json                                           an erased student, H = keyed hash of the id (erasures.py)
    erasures/_keycheck.json                                   which key the registry uses (erasures.py)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

from progress_monitor.contracts.messages import ProgressTask
from progress_monitor.contracts.values import SLACK_CHANNEL, RunId, json_int, parse_uint, strict
from progress_monitor.errors import PermanentError

BUDGET_OBJECT = "budget/cademi.json"
CARRY_OFF_OBJECT = "carry/off.json"

_RUN_PART = r"snapshot_date=(?P<date>\d{4}-\d{2}-\d{2})/run=(?P<run>[a-z0-9-]{10,31})/tag=(?P<tag>\d{1,12})"
PROGRESS_SHARD = strict(rf"progress/{_RUN_PART}/piece=(?P<piece>\d{{4}})\.ndjson")
CONTACTS = strict(rf"contacts/{_RUN_PART}\.ndjson")
LANE_CLAIM = strict(
    r"lanes/snapshot_date=[0-9-]{10}/run=[a-z0-9-]{10,31}/(?P<published>published/)?tag=(?P<tag>\d{1,12})\.json"
)


# The buckets (settings `<bucket>_bucket`, Services.<bucket>) and the prefixes each one holds. load_history is
# triggered by every object finalized in the shards bucket: it holds the loadable objects and nothing else.
SHARDS, STATE = "shards", "state"
LOADABLE_PREFIXES = ("progress/", "contacts/")
STATE_PREFIXES = ("rosters/", "lanes/", "budget/", "carry/", "slack/", "erasures/")


def bucket_of(name: str) -> str:
    """The bucket (SHARDS or STATE) an object name, or a prefix of names, belongs to; ValueError for a name of
    neither."""
    if name.startswith(LOADABLE_PREFIXES):
        return SHARDS
    if name.startswith(STATE_PREFIXES):
        return STATE
    raise ValueError(f"no bucket holds objects named {name!r}")


def _prefix(run_id: RunId) -> str:
    return f"snapshot_date={run_id.snapshot_date.isoformat()}/run={run_id}"


# -- progress shards and contacts files -----------------------------------------------------------------------


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


def contacts_name(run_id: RunId, tag_id: int) -> str:
    """Students' contact data of a tag; deleted by the loader once merged into the restricted table."""
    return f"contacts/{_prefix(run_id)}/tag={tag_id}.ndjson"


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
    next_index: int | None  # where the tag's next piece starts; None: this was the tag's last piece
    # Carrying (carry.py): rows written from an earlier observation, the progress calls that saved, and the
    # verification sample's compared pairs and mismatches. Absent (0) on shards written before carrying.
    carried: int = 0
    calls_saved: int = 0
    carry_checked: int = 0
    carry_mismatches: int = 0
    carry_unverified: int = 0  # sampled pairs whose read failed: nothing compared; another student was drawn

    COUNTS: ClassVar[tuple[str, ...]] = ("records", "failed", "no_access", "students", "api_calls", "rate_limited")
    CARRY_COUNTS: ClassVar[tuple[str, ...]] = (
        "carried",
        "calls_saved",
        "carry_checked",
        "carry_mismatches",
        "carry_unverified",
    )

    @property
    def last_piece(self) -> bool:
        return self.next_index is None

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNTS + self.CARRY_COUNTS}

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "run_id": str(self.task.run_id),
            "snapshot_date": self.task.snapshot_date.isoformat(),
            "tag_id": str(self.task.tag_id),
            "piece": str(self.task.piece),
            "start_index": str(self.task.start_index),
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
                # Absent on shards written before it was recorded.
                "start_index": number("start_index") if "start_index" in meta else 0,
            }
        )
        if (task.run_id, task.tag_id, task.piece) != (name.run_id, name.tag_id, name.piece):
            raise PermanentError("shard metadata does not match the shard's name")
        last = meta.get("last_piece")
        if last not in ("true", "false"):
            raise PermanentError("shard metadata 'last_piece' is missing")
        counts = {key: number(key) for key in cls.COUNTS}
        counts |= {key: number(key) for key in cls.CARRY_COUNTS if key in meta}
        return cls(task=task, **counts, next_index=None if last == "true" else number("next_index"))


# -- rosters --------------------------------------------------------------------------------------------------


def roster_name(run_id: RunId, tag_id: int) -> str:
    """The user ids piece 0 listed (no personal data), read by the later pieces."""
    return f"rosters/{_prefix(run_id)}/tag={tag_id}.json"


def roster_body(user_ids: tuple[int, ...], last_access_at: dict[int, datetime]) -> bytes:
    return json.dumps(
        {
            "user_ids": list(user_ids),
            "last_access_at": {str(user): moment.isoformat() for user, moment in last_access_at.items()},
        }
    ).encode()


def parse_roster_body(raw: bytes) -> tuple[tuple[int, ...], dict[int, datetime]]:
    """The ids in order and each known last access; ValueError when the body is not a roster."""
    body = json.loads(raw)
    ids = body.get("user_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(json_int(u) is not None and u > 0 for u in ids):
        raise ValueError("user_ids must be positive integers")
    if len(set(ids)) != len(ids):
        raise ValueError("user_ids repeat")
    # Rosters frozen before recency was kept have no last access: unknown, not "never".
    accesses = body.get("last_access_at") or {}
    if not isinstance(accesses, dict):
        raise ValueError("last_access_at must be an object")
    last_access = {}
    for user, moment in accesses.items():
        user_id = parse_uint(user)
        if user_id is None or not isinstance(moment, str):
            raise ValueError("last_access_at must map user ids to times")
        last_access[user_id] = datetime.fromisoformat(moment)
    return tuple(ids), last_access


# -- carrying (carry.py, carrying.py) --------------------------------------------------------------------------


def carry_plan_name(run_id: RunId, tag_id: int) -> str:
    """What piece 0 decided to carry for a tag in a run, frozen once so every piece and duplicate agrees."""
    return f"carry/{_prefix(run_id)}/tag={tag_id}.json"


def carry_off_body(run_id: RunId, tag_id: int, user_id: int, product_id: int, at: datetime) -> bytes:
    """Why carrying is off: the first mismatch the verification sample found (ids only)."""
    return json.dumps(
        {"run_id": str(run_id), "tag_id": tag_id, "user_id": user_id, "product_id": product_id, "at": at.isoformat()}
    ).encode()


# -- extraction lanes (lanes.py) ------------------------------------------------------------------------------


def lanes_prefix(run_id: RunId) -> str:
    """Where a run's lane objects live: its tag manifest, the claims, the published markers."""
    return f"lanes/{_prefix(run_id)}/"


def lane_manifest_name(run_id: RunId) -> str:
    return f"{lanes_prefix(run_id)}tags.json"


def lane_claim_name(run_id: RunId, tag_id: int) -> str:
    return f"{lanes_prefix(run_id)}tag={tag_id}.json"


def lane_published_name(run_id: RunId, tag_id: int) -> str:
    return f"{lanes_prefix(run_id)}published/tag={tag_id}.json"


def parse_lane_object(name: str) -> tuple[int, bool] | None:
    """A lane claim's (or published marker's) tag, and whether it is the marker; None for other objects."""
    match = LANE_CLAIM.fullmatch(name)
    return None if match is None else (int(match["tag"]), match["published"] is not None)


def manifest_body(tags: list[tuple[int, tuple[int, ...]]]) -> bytes:
    return json.dumps([{"tag_id": tag, "product_ids": list(products)} for tag, products in tags]).encode()


def parse_manifest_body(raw: bytes) -> list[tuple[int, tuple[int, ...]]]:
    """The run's (tag, products) in order; ValueError when the body is not a manifest."""
    body: Any = json.loads(raw)
    if not isinstance(body, list):
        raise ValueError("a manifest is a list")
    tags = []
    for item in body:
        tag = json_int(item.get("tag_id")) if isinstance(item, dict) else None
        products = item.get("product_ids") if isinstance(item, dict) else None
        if tag is None or not isinstance(products, list) or any(json_int(p) is None for p in products):
            raise ValueError("a manifest entry is a tag id and its product ids")
        tags.append((tag, tuple(products)))
    return tags


def lane_claim_body(after: int | None) -> bytes:
    return json.dumps({"after": after}).encode()


# -- the tutors' digest claims (tutors/digest.py) -------------------------------------------------------------


def digest_claim_name(week: date, channel: str) -> str:
    """The claim deciding which delivery posts week `week`'s digest in `channel` (a checked channel id)."""
    if not SLACK_CHANNEL.fullmatch(channel):
        raise PermanentError("a digest claim's channel is not a channel id")
    return f"slack/digests/{week.isoformat()}/{channel}.json"


# -- the registry of erasures (erasures.py) and retention (retention.py) --------------------------------------

ERASURES_PREFIX = "erasures/"
ERASURE = strict(r"erasures/(?P<digest>[0-9a-f]{64})\.json")
# Written with the first erasure: HMAC(key, KEYCHECK_TEXT), so a rotated or replaced key is noticed (erasures.py).
ERASURES_KEYCHECK = "erasures/_keycheck.json"
# Raw objects of a run that a bucket lifecycle rule deletes after the retention period, by bucket (Terraform's
# rules name the same ones); `carry/off.json`, the carrying switch, is not one of them.
RAW_PREFIXES = {SHARDS: ("progress/",), STATE: ("rosters/", "lanes/", "carry/snapshot_date=")}


def erasure_name(digest: str) -> str:
    """The registry entry of one erased student, named by the keyed hash of their id (never the id)."""
    name = f"{ERASURES_PREFIX}{digest}.json"
    if not ERASURE.fullmatch(name):
        raise ValueError("an erasure's digest is 64 lower-case hex characters")
    return name


def parse_erasure_name(name: str) -> str | None:
    """The keyed hash an erasure entry is named by; None for any other object."""
    match = ERASURE.fullmatch(name)
    return None if match is None else match["digest"]


def keycheck_body(digest: str) -> bytes:
    return json.dumps({"keycheck": digest}).encode()


def parse_keycheck_body(raw: bytes) -> str:
    """The key check's digest; ValueError for any other body."""
    body: Any = json.loads(raw)
    digest = body.get("keycheck") if isinstance(body, dict) else None
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError("the registry's key check is not an object holding a 64-hex digest")
    return digest
