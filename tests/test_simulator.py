"""The simulator itself: scenario validation, admin endpoints, personal data it serves, the demo school."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from cademi_sim import demo
from cademi_sim.scenario import ScenarioError, parse
from tests.scenarios import school


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda s: s["memberships"].append({"user": 1001, "tag": 9999, "from_week": 0}),
            "memberships[3].tag",
        ),
        (
            lambda s: s["memberships"].append({"user": 1001, "tag": 5001, "from_week": 7}),
            "memberships[3].from_week",
        ),
        (lambda s: s["users"][0].update(id="abc"), "users[0].id"),
        (lambda s: s["progress"][0]["total"].append("1%"), "progress[0].total"),
        (lambda s: s["registry"]["tags"][0].update(track="nope"), "registry.tags[0].track"),
        (lambda s: s["faults"].append({"path": "/tag", "status": 503, "week": 9}), "faults[0].week"),
        (lambda s: s.pop("weeks"), "weeks"),
    ],
)
def test_inconsistent_scenarios_are_refused_naming_the_field(mutate, field: str) -> None:
    scenario = school()
    mutate(scenario)
    with pytest.raises(ScenarioError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse(scenario)


def test_the_simulator_refuses_to_start_on_a_bad_scenario(tmp_path: Path) -> None:
    scenario = school()
    scenario["memberships"][0]["tag"] = 42
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(scenario))
    result = subprocess.run(
        [sys.executable, "-m", "cademi_sim", "--scenario", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "memberships[0].tag" in result.stderr


@pytest.mark.integration
def test_admin_endpoints_need_the_admin_token(simulator) -> None:
    sim = simulator(school())
    root = f"http://127.0.0.1:{sim.child.info['port']}/_admin"
    assert requests.get(f"{root}/counters", headers={"Authorization": "test-key"}, timeout=5).status_code == 401
    assert requests.post(f"{root}/week", json={"week": 1}, timeout=5).status_code == 401
    assert sim.admin.set_week("2026-03-09")["week"] == 1
    with pytest.raises(requests.HTTPError):
        sim.admin.set_week(5)


@pytest.mark.integration
def test_the_week_changes_what_is_served_and_memberships_move(simulator) -> None:
    scenario = school(n_students=2)
    scenario["memberships"][1]["to_week"] = 0  # student 1002 drops out after week 0
    sim = simulator(scenario)
    client = sim.client()
    assert [s.user_id for s in client.iter_tag_students(5001)] == [1001, 1002]
    assert client.progress(1001, 101).total == 7.5
    sim.admin.set_week(1)
    assert [s.user_id for s in client.iter_tag_students(5001)] == [1001]
    assert client.progress(1001, 101).total == 17.5


@pytest.mark.integration
def test_the_simulator_serves_cpf_and_login_auto_like_cademi(simulator) -> None:
    sim = simulator(school(n_students=1))
    body = requests.get(
        f"{sim.base_url}/usuario/lista_por_tag/5001", headers={"Authorization": "test-key"}, timeout=5
    ).json()
    user = body["data"]["usuario"][0]
    assert user["doc"] and user["login_auto"].startswith("https://")  # so our client has something to drop
    assert body["data"]["paginator"]["perPage"] == 150


def test_the_demo_school_is_deterministic_and_covers_the_cases() -> None:
    a, b = demo.generate(seed=7), demo.generate(seed=7)
    assert a == b and demo.generate(seed=8) != a
    sc = parse(a)
    assert 250 <= len(a["users"]) <= 500
    assert max(len(sc.members(t["tag_id"], 0)) for t in a["registry"]["tags"]) > 150
    assert any("+" in u["email"] for u in a["users"])
    users_by_week = [
        {(m, t["tag_id"]) for t in a["registry"]["tags"] for m in sc.members(t["tag_id"], w)}
        for w in range(len(a["weeks"]))
    ]
    moved = {
        u
        for w in range(1, len(a["weeks"]))
        for (u, t) in users_by_week[w]
        if (u, t) not in users_by_week[w - 1] and u in {x for x, _ in users_by_week[w - 1]}
    }
    dropped = {
        u
        for w in range(1, len(a["weeks"]))
        for (u, _) in users_by_week[w - 1]
        if u not in {x for x, _ in users_by_week[w]}
    }
    assert moved and dropped
    assert len({t["track"] for t in a["registry"]["tags"]}) >= 3
    assert any(t["id"] not in {r["tag_id"] for r in a["registry"]["tags"]} for t in a["tags"])
