"""The registry of erasures (LGPD Art. 18): one object per erased student, consulted at every extraction.

An entry is `erasures/<H>.json` (contracts.objects), where H is HMAC-SHA256 of the Cademi user id under the
`privacy-key` secret: the registry never holds the id, and without the key an id cannot be tested against it
(Cademi ids are small integers, so a plain hash would be reversed by trying them all). The body records who
erased, when, under which request, and, only while the erasure is under way, the student's pseudonym, so an
interrupted erasure resumes with the same one; a finished entry no longer holds it, so nothing links the
pseudonymised history back to the id. `requests` keeps every request that erased the student (who, when, which).

`erasures/_keycheck.json` holds HMAC(key, "keycheck"), written before the first entry: with a rotated or
replaced key every digest would change and erased students would silently come back, so extraction
(TransientError) and the privacy command (a refusal) stop when the key does not match it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from dataclasses import replace as replace_fields
from secrets import randbelow
from typing import Any

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.contracts.cademi import Student
from progress_monitor.contracts.objects import (
    ERASURES_KEYCHECK,
    ERASURES_PREFIX,
    erasure_name,
    keycheck_body,
    parse_erasure_name,
    parse_keycheck_body,
)
from progress_monitor.errors import GOOGLE_ERRORS, SecretUnavailableError, TransientError, pipeline_error
from progress_monitor.platform.access import needs
from progress_monitor.platform.secret_store import get_secret
from progress_monitor.platform.shard_store import JSON, create_once, get_blob
from progress_monitor.settings import PRIVACY_KEY, Settings

log = logging.getLogger("progress_monitor.privacy.erasures")
PENDING, DONE = "pending", "done"
PSEUDONYM_SPACE = 2**62
SCRATCH = re.compile(r"[0-9a-f]{16}", re.ASCII)


def new_pseudonym() -> int:
    """A random negative id: never a Cademi id (those are positive), unrelated to the student's id."""
    return -(randbelow(PSEUDONYM_SPACE) + 1)


def privacy_key(cfg: Settings) -> bytes:
    return get_secret(cfg, PRIVACY_KEY).encode()


def digest_of(key: bytes, user_id: int) -> str:
    """The registry's name for a student: a keyed hash of the id."""
    return hmac.new(key, f"cademi-user:{user_id}".encode(), hashlib.sha256).hexdigest()


def log_ref(key: bytes | None, user_id: int) -> str:
    """How logs name a student: a keyed hash, never the id (`python -m progress_monitor privacy ref` gives an
    operator the ref of a given id); "s:?" without the key. No table or object holds it, so after an erasure no
    log line joins to the pseudonym."""
    if key is None:
        return "s:?"
    return "s:" + hmac.new(key, f"log:{user_id}".encode(), hashlib.sha256).hexdigest()[:12]


def log_refs(cfg: Settings) -> Callable[[int], str]:
    """log_ref with the privacy key read once; the key unavailable, refs say "s:?" (logging never waits)."""
    try:
        key: bytes | None = privacy_key(cfg)
    except SecretUnavailableError:
        key = None
    return lambda user_id: log_ref(key, user_id)


def keycheck_of(key: bytes) -> str:
    return hmac.new(key, b"keycheck", hashlib.sha256).hexdigest()


class KeyMismatch(Exception):
    """The privacy key is not the one the registry was written with (rotated or replaced), or its check is gone."""


@dataclass(frozen=True)
class Erasure:
    """A registry entry: no personal data; `pseudonym` only while `state` is pending."""

    request: str
    by: str
    started_at: str
    state: str = PENDING
    finished_at: str | None = None
    pseudonym: int | None = None
    # Every request that erased the student, oldest first: {"request", "by", "at"} (no personal data).
    requests: tuple[dict[str, str], ...] = ()
    # The name of the erasure's scratch table (privacy_tables.py), random; only while pending, like the pseudonym.
    scratch: str | None = None

    def body(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def with_request(self, request: str, by: str, at: str) -> Erasure:
        """The entry with one more request listed (unchanged when that reference is listed already)."""
        listed = self.requests or ({"request": self.request, "by": self.by, "at": self.started_at},)
        if any(r.get("request") == request for r in listed):
            return replace_fields(self, requests=listed)
        return replace_fields(self, requests=(*listed, {"request": request, "by": by, "at": at}))

    @classmethod
    def parse(cls, raw: bytes) -> Erasure:
        body: Any = json.loads(raw)
        if not isinstance(body, dict) or body.get("state") not in (PENDING, DONE):
            raise ValueError("an erasure entry is an object with a state")
        pseudonym = body.get("pseudonym")
        if body["state"] == PENDING and not (isinstance(pseudonym, int) and pseudonym < 0):
            raise ValueError("a pending erasure holds its pseudonym")
        finished = body.get("finished_at")
        listed = body.get("requests") or []
        if not isinstance(listed, list) or not all(isinstance(r, dict) for r in listed):
            raise ValueError("an erasure entry's requests are a list of objects")
        return cls(
            str(body.get("request")),
            str(body.get("by")),
            str(body.get("started_at")),
            body["state"],
            None if finished is None else str(finished),
            pseudonym if isinstance(pseudonym, int) else None,
            tuple({k: str(v) for k, v in r.items() if k in ("request", "by", "at")} for r in listed),
            scratch if isinstance(scratch := body.get("scratch"), str) and SCRATCH.fullmatch(scratch) else None,
        )


@needs("objects.read {erasure_name}")
def read(bucket: storage.Bucket, digest: str) -> tuple[Erasure, int] | None:
    """The entry and its generation (for a compare-and-swap rewrite), or None."""
    blob = get_blob(bucket, erasure_name(digest))
    if blob is None:
        return None
    try:
        return Erasure.parse(blob.download_as_bytes()), int(blob.generation or 0)
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot read an erasure entry") from exc


def create(bucket: storage.Bucket, digest: str, erasure: Erasure) -> bool:
    """Record a new erasure; False when one already exists (the caller reads it)."""
    return create_once(bucket, erasure_name(digest), erasure.body(), {}, JSON)


@needs("objects.rewrite {erasure_name}")
def replace(bucket: storage.Bucket, digest: str, erasure: Erasure, generation: int) -> int:
    """Rewrite an entry only if nobody else did since it was read; returns the new generation."""
    blob = bucket.blob(erasure_name(digest))
    try:
        blob.upload_from_string(erasure.body(), content_type=JSON, if_generation_match=generation)
    except exceptions.PreconditionFailed as exc:
        raise TransientError("the erasure entry changed meanwhile; run the command again") from exc
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot write an erasure entry") from exc
    return int(blob.generation or 0)


@needs("objects.read {erasure_name}", "objects.delete {erasure_name}")  # the operator command only
def drop_old_versions(bucket: storage.Bucket, digest: str, current: int) -> int:
    """Delete the entry's noncurrent versions (the bucket keeps them): a pending one holds the pseudonym."""
    name = erasure_name(digest)
    dropped = 0
    try:
        for version in bucket.list_blobs(prefix=name, versions=True):
            if version.name == name and int(version.generation or 0) != current:
                with contextlib.suppress(exceptions.NotFound):
                    bucket.blob(name, generation=version.generation).delete()
                    dropped += 1
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot delete an erasure entry's old versions") from exc
    return dropped


@needs("objects.read {ERASURES_PREFIX}")
def erased_digests(bucket: storage.Bucket) -> set[str]:
    """Every erased student's keyed hash (one listing)."""
    try:
        names = [blob.name for blob in bucket.list_blobs(prefix=ERASURES_PREFIX)]
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot list the erasures registry") from exc
    return {digest for name in names if (digest := parse_erasure_name(name)) is not None}


@needs("objects.read {ERASURES_KEYCHECK}")
def check_key(bucket: storage.Bucket, key: bytes, *, entries: bool) -> None:
    """KeyMismatch unless the registry's key check matches `key`; with no check written, a registry with
    `entries` cannot be trusted either (the check is written before the first entry)."""
    blob = get_blob(bucket, ERASURES_KEYCHECK)
    if blob is None:
        if entries:
            raise KeyMismatch(f"{ERASURES_KEYCHECK} is missing while erasures are recorded")
        return
    try:
        recorded = parse_keycheck_body(blob.download_as_bytes())
    except ValueError as exc:
        raise KeyMismatch(f"{ERASURES_KEYCHECK} is unreadable") from exc
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot read the registry's key check") from exc
    if not hmac.compare_digest(recorded, keycheck_of(key)):
        raise KeyMismatch("the privacy key is not the one the erasures registry was written with")


def write_keycheck(bucket: storage.Bucket, key: bytes) -> None:
    """Record which key the registry uses (once; check_key then compares every later key with it)."""
    create_once(bucket, ERASURES_KEYCHECK, keycheck_body(keycheck_of(key)), {}, JSON)


def without_erased(cfg: Settings, bucket: storage.Bucket, students: Iterable[Student]) -> list[Student]:
    """The students minus those the registry says were erased. With no erasure recorded the key is not even
    read; with erasures and no key, extraction waits (TransientError) rather than bring an erased student back."""
    listed = list(students)
    erased = erased_digests(bucket)
    if not erased:
        return listed
    try:
        key = privacy_key(cfg)
        check_key(bucket, key, entries=True)
    except (SecretUnavailableError, KeyMismatch) as exc:
        raise TransientError(f"the erasures registry cannot be checked: {exc}") from exc
    kept = [s for s in listed if digest_of(key, s.user_id) not in erased]
    if len(kept) != len(listed):
        log.info("skipped %d erased student(s)", len(listed) - len(kept), extra={"count": len(listed) - len(kept)})
    return kept
