"""One student's objects in the shards bucket, current and noncurrent: found, rewritten or deleted.

The bucket keeps noncurrent versions for 7 days (infra/terraform/storage.tf): last week's contacts file the
loader deleted, a claim or `carry/off.json` rewritten since, a shard whose rewrite died between its upload and
the deletion of its old version. Every prefix is listed with its versions: a current object naming the student
is rewritten (a compare-and-swap on its generation) and its older versions deleted; a noncurrent version naming
them is deleted. An object that names the student but cannot be read is reported by name (`Scan.unreadable`),
never rewritten blindly.

fake-gcs-server's filesystem backend (the local stack's) keeps no versions (it refuses a versioned bucket: "fs
storage type does not support versioning yet"): a listing with versions lists the current objects only, and a
delete naming a generation ignores it and deletes the live object. So a version is deleted by generation only
when the listing says it is noncurrent (`time_deleted`) or after a rewrite made it old; the local stack
exercises the current objects, and tests/unit/test_privacy_erase.py the noncurrent ones.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from google.api_core import exceptions
from google.cloud import storage  # type: ignore[attr-defined]

from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.platform.access import needs
from progress_monitor.privacy.inventory import OBJECTS
from progress_monitor.privacy.match import rewrite_object

log = logging.getLogger("progress_monitor.commands.privacy")


@dataclass
class Found:
    blob: storage.Blob
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


@needs("objects.read shards")  # the operator command only: no function calls it
def naming_objects(bucket: storage.Bucket, user_id: int, pseudonym: int) -> Scan:
    """Every object and noncurrent version of the inventory's prefixes whose body names the student."""
    scan = Scan()
    needle = str(user_id).encode()
    try:
        for prefix, handling in OBJECTS.items():
            if handling is None:
                continue
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
        raise pipeline_error(exc, "cannot list the shards bucket") from exc
    return scan


@needs("objects.rewrite shards", "objects.delete shards")  # the operator command only
def rewrite_objects(bucket: storage.Bucket, scan: Scan) -> int:
    """Each current object's new body written (its metadata kept) or the object deleted, then its older
    versions deleted; each noncurrent version naming the student deleted. Returns how many were handled."""
    for item in scan.found:
        name, generation = item.blob.name, int(item.blob.generation or 0)
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
