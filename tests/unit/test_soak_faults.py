"""The soak's loader fault lives outside production code (devstack/soak_faults.py): it fails the progress MERGE
only, at the rate given, and refuses to run against anything but the emulators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack import soak_faults
from progress_monitor.errors import TransientError
from progress_monitor.pipeline import loader


def test_the_progress_merge_fails_at_the_rate_and_every_other_query_passes() -> None:
    calls: list[str] = []

    def query(settings: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
        calls.append(sql)
        return [{"n": 1}]

    always = soak_faults.failing_merge(query, 0.15, draw=lambda: 0.1)
    with pytest.raises(TransientError, match="between its load job and its MERGE"):
        always(None, loader.MERGE_PROGRESS, shard="s")
    assert always(None, loader.CHECK_COUNTS, tag_id=1) == [{"n": 1}]
    never = soak_faults.failing_merge(query, 0.15, draw=lambda: 0.2)
    assert never(None, loader.MERGE_PROGRESS, shard="s") == [{"n": 1}]
    assert calls == [loader.CHECK_COUNTS, loader.MERGE_PROGRESS]


def test_the_fault_is_refused_outside_the_emulators() -> None:
    with pytest.raises(RuntimeError, match="local soak test only"):
        soak_faults.install({soak_faults.RATE: "0.15"})


def test_production_code_carries_no_fault_hook() -> None:
    package = Path(loader.__file__).parents[1]
    assert [p.name for p in package.rglob("*.py") if "chaos" in p.read_text(encoding="utf-8").lower()] == []
