"""Retention by policy (LGPD: data kept no longer than its purpose needs), as settings (docs/privacy.md).

Contact data of students no extraction has seen for `RETENTION_CONTACTS_MONTHS` is deleted by the daily health
check. Raw run objects (contracts.objects.RAW_PREFIXES) older than `RETENTION_RAW_WEEKS` are deleted by the
buckets' lifecycle rules in the cloud (infra/terraform/storage.tf, the same prefixes and age); fake-gcs-server
has no lifecycle, so the local stack applies the same rule itself (`expire_raw_objects`, before each weekly
run it triggers). No function calls it: none may delete raw objects in the cloud.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from progress_monitor.contracts.objects import RAW_PREFIXES
from progress_monitor.errors import GOOGLE_ERRORS, pipeline_error
from progress_monitor.platform import warehouse
from progress_monitor.platform.access import needs
from progress_monitor.services import Services

log = logging.getLogger("progress_monitor.privacy.retention")


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day when it has fewer days)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    for candidate in (day.day, 30, 29, 28):
        try:
            return date(year, month + 1, candidate)
        except ValueError:
            continue
    raise ValueError("unreachable")


def delete_stale_contacts(svc: Services) -> int:
    """Delete the contact rows of students not seen in any extracted class since the cutoff; returns how many."""
    cutoff = months_before(svc.now().date(), svc.cfg.retention_contacts_months)
    stale = "COALESCE(last_seen_date, DATE(updated_at)) < @cutoff"
    count = int(warehouse.query(svc, f"SELECT COUNT(*) AS n FROM `${{students}}` WHERE {stale}", cutoff=cutoff)[0]["n"])
    if count:
        warehouse.query(svc, f"DELETE FROM `${{students}}` WHERE {stale}", cutoff=cutoff)
        log.info("retention: deleted the contact data of %d students not seen since %s", count, cutoff)
    return count


@needs("objects.read {RAW_PREFIXES}", "objects.delete {RAW_PREFIXES}")  # the local stack only
def expire_raw_objects(svc: Services) -> int:
    """The buckets' lifecycle rules, applied by hand where there are none (the local stack)."""
    cfg = svc.cfg
    cutoff = svc.now() - timedelta(weeks=cfg.retention_raw_weeks)
    deleted = 0
    try:
        for prefix in (p for prefixes in RAW_PREFIXES.values() for p in prefixes):
            for blob in svc.bucket_for(prefix).list_blobs(prefix=prefix):
                if blob.time_created is not None and blob.time_created < cutoff:
                    blob.delete()
                    deleted += 1
    except GOOGLE_ERRORS as exc:
        raise pipeline_error(exc, "retention of raw objects") from exc
    if deleted:
        log.info("retention: deleted %d raw objects older than %d weeks", deleted, cfg.retention_raw_weeks)
    return deleted


def enforce(svc: Services) -> dict[str, int]:
    """The daily health check's part of retention (raw objects are the buckets' lifecycle rules')."""
    return {"contacts": delete_stale_contacts(svc)}
