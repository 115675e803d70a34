"""What the simulator serves: the ground truth a history must equal, per week and registered tag."""

from __future__ import annotations

from typing import Any

from cademi_sim.scenario import Scenario
from progress_monitor.cademi.v1 import parse_total
from progress_monitor.errors import CademiMalformedError

Key = tuple[str, int, int, int]  # snapshot_date, tag_id, user_id, product_id


def expected_rows(
    scenario: Scenario, week: int, failing: set[tuple[int, int]] | None = None
) -> dict[Key, tuple[str, float | None, int | None, int | None]]:
    """(status, total, assistidas, completas) per key for every registered tag in the given week.

    `failing` lists (user, product) pairs whose progress call never succeeds in that week.
    """
    tracks = {t["id"]: [p["product"] for p in t["products"]] for t in scenario.raw["registry"]["tracks"]}
    snapshot = scenario.weeks[week].isoformat()
    rows: dict[Key, tuple[str, float | None, int | None, int | None]] = {}
    for tag in scenario.raw["registry"]["tags"]:
        for user in scenario.members(tag["tag_id"], week):
            for product in tracks[tag["track"]]:
                key = (snapshot, tag["tag_id"], user, product)
                served = scenario.served_progress(user, product, week)
                if failing and (user, product) in failing:
                    rows[key] = ("failed", None, None, None)
                elif served is None:
                    rows[key] = ("no_access", None, None, None)
                else:
                    rows[key] = _served(served)
    return rows


def _served(served: dict[str, Any]) -> tuple[str, float | None, int | None, int | None]:
    try:
        return ("ok", parse_total(served["total"]), served["assistidas"], served["completas"])
    except CademiMalformedError:
        return ("failed", None, None, None)
