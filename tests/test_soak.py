"""A short soak inside `make test`: two weeks under every kind of injected fault (each kind fires at least once;
`make soak` runs twelve), then the ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.soak import EVENTS, run_soak
from tests.pipeline_world import world

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_the_history_equals_the_ground_truth_after_two_weeks_of_faults(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(world(big=60, per_page=25)))  # three pages; make soak runs the full school
    report = run_soak(scenario, weeks=2, seed=11, workdir=tmp_path / "stack")
    summary = report.summary()
    assert {e for events in report.events.values() for e in events} == set(EVENTS), summary
    assert report.faults_fired > 50, summary
    assert report.expected > 300 and report.present == report.expected, summary
    assert not report.missing and not report.duplicated and not report.wrong and not report.unexpected, summary
    assert not report.run_mismatches, summary
    assert not report.dead_letters_unaccounted, summary
    assert report.rate_breaches == 0, summary
