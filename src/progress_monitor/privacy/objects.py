"""One student's objects in the shards and state buckets, current and noncurrent: found, rewritten or deleted.

Both buckets keep noncurrent versions for 7 days (infra/terraform/storage.tf): last week's contacts file the
loader deleted, a claim or `carry/off.json` rewritten since, a shard whose rewrite died between its upload and
the deletion of its old version. Every prefix of the inventory is listed in both buckets (an object written
before run state had a bucket of its own is found where it was written), with its versions: a current object
naming the student is rewritten (a compare-and-swap on its generation) and its older versions deleted; a
noncurrent version naming them is deleted. An object that names the student but cannot be read is reported by
name (`Scan.unreadable`), never rewritten blindly.

fake-gcs-server's filesystem backend (the local stack's) keeps no versions (it refuses a versioned bucket: "fs
storage type does not support versioning yet"): a listing with versions lists the current objects only, and a
delete naming a generation ignores it and deletes the live object. So a version is deleted by generation only
when the listing says it is noncurrent (`time_deleted`) or after a rewrite made it old; the local stack
exercises the current objects, and tests/unit/test_privacy_erase.py the noncurrent ones.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.platform.access import needs
from progress_monitor.privacy.inventory import OBJECTS
from progress_monitor.privacy.match import rewrite_object
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.commands.privacy")


def buckets(svc: Services) -> tuple[storage.Bucket, storage.Bucket]:
    """The buckets an erasure or an export looks in."""
    return (svc.shards, svc.state)


@dataclass
class Found:
    blob: storage.Blob  # as listed: its `bucket` is where it is rewritten
    new: bytes | None  # the rewritten body (b"": delete it); None for a noncurrent version (deleted)

    @property
    def current(self) -> bool:
        return self.new is not None


@dataclass
class Scan:
    found: list[Found] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # names only: they name the student and cannot be read

    def names(self) -> list[str]:
        return sorted({f.blob.name for f in self.found} | set(self.unreadable))

    def clean(self) -> bool:
        return not self.found and not self.unreadable


def _noncurrent(blob: storage.Blob) -> bool:
    return getattr(blob, "time_deleted", None) is not None


@needs("objects.read shards", "objects.read state")  # the operator command only: no function calls it
def naming_objects(in_buckets: Sequence[storage.Bucket], user_id: int, pseudonym: int) -> Scan:
    """Every object and noncurrent version of the inventory's prefixes, in each bucket, whose body names the
    student."""
    scan = Scan()
    needle = str(user_id).encode()
    listings = [(b, prefix) for b in in_buckets for prefix, handling in OBJECTS.items() if handling is not None]
    try:
        for bucket, prefix in listings:
            for blob in bucket.list_blobs(prefix=prefix, versions=True):
                try:
                    raw = blob.download_as_bytes()  # this version (a listed blob's media link names its generation)
                except exceptions.NotFound:
                    continue  # merged and deleted meanwhile (contacts) or expired
                if needle not in raw:
                    continue
                try:
                    new = rewrite_object(blob.name, raw, user_id, pseudonym)
                except (ValueError, KeyError, TypeError, AttributeError):
                    scan.unreadable.append(blob.name)
                    continue
                if new is not None:
                    scan.found.append(Found(blob, None if _noncurrent(blob) else new))
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "cannot list the buckets") from exc
    return scan


@needs("objects.rewrite shards", "objects.delete shards", "objects.rewrite state", "objects.delete state")
def rewrite_objects(scan: Scan) -> int:
    """Each current object's new body written (its metadata kept) or the object deleted, then its older
    versions deleted; each noncurrent version naming the student deleted, each in the bucket it was listed in.
    Returns how many were handled. The operator command only."""
    for item in scan.found:
        bucket, name, generation = item.blob.bucket, item.blob.name, int(item.blob.generation or 0)
        try:
            if not item.current:
                bucket.blob(name, generation=generation).delete()
                continue
            blob = bucket.blob(name)
            if item.new == b"":
                blob.delete(if_generation_match=generation)
            else:
                blob.metadata = item.blob.metadata
                blob.upload_from_string(
                    item.new or b"",
                    content_type=item.blob.content_type or "application/json",
                    if_generation_match=generation,
                )
            for version in bucket.list_blobs(prefix=name, versions=True):
                if version.name == name and version.generation != blob.generation:
                    with contextlib.suppress(exceptions.NotFound):
                        bucket.blob(name, generation=version.generation).delete()
        except exceptions.PreconditionFailed:
            log.warning("an object changed while it was rewritten; the next pass rewrites it", extra={"shard": name})
        except exceptions.NotFound:
            continue  # a contacts file the loader merged and deleted meanwhile, or a version that expired
        except GOOGLE_ERRORS as exc:
            raise pipeline_error(exc, f"cannot rewrite {name}") from exc
    return len(scan.found)
