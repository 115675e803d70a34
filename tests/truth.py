"""A week's history as stored, against what the scenario says the API served (cademi_sim.truth)."""

from __future__ import annotations

from datetime import date
from typing import Any

from cademi_sim.scenario import Scenario
from cademi_sim.truth import expected_rows
from progress_monitor.platform.warehouse import Warehouse, query

Key = tuple[str, int, int, int]  # (snapshot_date, tag_id, user_id, product_id), as expected_rows keys it


def history(svc: Warehouse, week: str | None = None) -> dict[Key, tuple[Any, ...]]:
    """(status, total, assistidas, completas) per business key, of one week or (None) of every week; a
    duplicated key fails."""
    if week is None:
        found = query(svc, "SELECT * FROM `${progress_history}`")
    else:
        found = query(svc, "SELECT * FROM `${progress_history}` WHERE snapshot_date = @d", d=date.fromisoformat(week))
    out: dict[Key, tuple[Any, ...]] = {}
    for r in found:
        key = (r["snapshot_date"].isoformat(), r["tag_id"], r["user_id"], r["product_id"])
        assert key not in out, f"duplicate history row {key}"
        out[key] = (r["status"], r["total"], r["assistidas"], r["completas"])
    return out


def count_rows(svc: Warehouse, week: str) -> int:
    found = query(
        svc, "SELECT COUNT(*) AS n FROM `${progress_history}` WHERE snapshot_date = @d", d=date.fromisoformat(week)
    )
    return int(found[0]["n"])


def differences(
    svc: Warehouse, scenario: Scenario, week: int, failing: set[tuple[int, int]] | None = None
) -> tuple[list[Key], list[Key], list[Key]]:
    """The first (missing, extra, wrong) keys of week `week`'s history against the ground truth."""
    expected = expected_rows(scenario, week, failing)
    actual = history(svc, scenario.weeks[week].isoformat())
    missing, extra = set(expected) - set(actual), set(actual) - set(expected)
    wrong = {k for k in set(expected) & set(actual) if expected[k] != actual[k]}
    return sorted(missing)[:5], sorted(extra)[:5], sorted(wrong)[:5]
