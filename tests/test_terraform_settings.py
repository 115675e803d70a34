"""The deployment's settings for the operator's commands: Terraform's output `functions_settings`, evaluated with
tests/tf_eval.py, holds exactly what the functions are given, and a command handed that output as its
`--settings` file names the datasets, bucket and topics Terraform creates (not the local stack's defaults)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from progress_monitor import __main__ as entry
from progress_monitor.settings import (
    DEPLOYMENT_NAMES,
    SECRET_NAMES,
    MissingSettingsError,
    Settings,
    SettingsError,
    operator_settings,
)
from tests.test_terraform import TF
from tests.tf_eval import Config, Ref, Unknown


def output(config: Config, name: str) -> Any:
    body = next(b[f'"{name}"'] for b in config.blocks["output"] if f'"{name}"' in b)
    return config.value(body["value"], {})


def functions_env(config: Config) -> dict[str, dict[str, Any]]:
    """Each deployed function's environment_variables, as Terraform resolves its for_each instance."""
    body = config.resource_blocks()["google_cloudfunctions2_function.fn"]
    return {
        str(key): config.value(body["service_config"][0]["environment_variables"], scope)
        for key, scope in config.instances(body).items()
    }


def known(config: Config, value: Any) -> str:
    """A value as apply would make it: a reference to an argument set in its block (a bucket's name) resolved
    there; what only apply knows (a backend's generated id) stands as a fixed placeholder."""
    if isinstance(value, Ref):
        block = config.resource_blocks().get(value.address)
        if value.key is None and len(value.attrs) == 1 and block is not None and value.attrs[0] in block:
            return known(config, config.value(block[value.attrs[0]], {}))
        return "known-after-apply"
    if isinstance(value, Unknown):
        return "known-after-apply"
    return str(value)


def settings_file(tmp_path: Path, config: Config) -> Path:
    values = {k: known(config, v) for k, v in output(config, "functions_settings").items()}
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(values))  # the shape of `terraform output -json functions_settings`
    return path


def test_the_output_holds_the_functions_settings_and_no_secret() -> None:
    config = Config.load(TF)
    given = output(config, "functions_settings")
    envs = functions_env(config)
    assert set(given) == set().union(*(set(env) for env in envs.values()))
    for env in envs.values():  # the same value a function gets, for every variable it gets
        assert {k: str(given[k]) for k in env} == {k: str(v) for k, v in env.items()}
    readable = {f.name.upper() for f in fields(Settings) if f.name != "local_secrets"}
    assert set(given) <= readable
    assert set(given) & set(SECRET_NAMES) == set()
    assert set(DEPLOYMENT_NAMES) <= set(given)


def test_a_command_given_the_output_names_what_terraform_creates(tmp_path: Path) -> None:
    config = Config.load(TF)
    cfg = operator_settings(settings_file(tmp_path, config), environ={})
    blocks = config.resource_blocks()

    def argument(address: str, name: str) -> str:
        return known(config, config.value(blocks[address][name], {}))

    datasets = (cfg.bq_dataset, cfg.bq_restricted_dataset, cfg.bq_slack_dataset, cfg.bq_slack_staging_dataset)
    assert datasets == tuple(
        argument(f"google_bigquery_dataset.{d}", "dataset_id") for d in ("main", "restricted", "slack", "slack_staging")
    )
    prefix = config.variables["prefix"]  # the example's prefix, not the local stack's `progress`
    assert datasets == tuple(f"{prefix}_progress{suffix}" for suffix in ("", "_restricted", "_slack", "_slack_staging"))
    assert cfg.shards_bucket == argument("google_storage_bucket.shards", "name")
    assert cfg.state_bucket == argument("google_storage_bucket.state", "name")
    assert cfg.gcp_project == config.variables["project_id"]
    topics = config.local("topics")
    assert (cfg.schedule_topic, cfg.progress_topic, cfg.shard_reloads_topic, cfg.slack_tasks_topic) == (
        topics["schedule"],
        topics["progress"],
        topics["shard_reloads"],
        topics["slack_tasks"],
    )


def test_the_whole_terraform_output_document_is_read_too(tmp_path: Path) -> None:
    config = Config.load(TF)
    values = json.loads(settings_file(tmp_path, config).read_text())
    whole = tmp_path / "outputs.json"
    whole.write_text(
        json.dumps({"functions_settings": {"sensitive": False, "type": ["map", "string"], "value": values}})
    )
    assert operator_settings(whole, environ={}) == operator_settings(tmp_path / "settings.json", environ={})


def test_a_command_without_the_deployment_names_says_which_are_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(MissingSettingsError) as refused:
        operator_settings(None, environ={"GCP_PROJECT": "escola", "BQ_DATASET": "mon_progress"})
    assert refused.value.missing == tuple(n for n in DEPLOYMENT_NAMES if n not in ("GCP_PROJECT", "BQ_DATASET"))
    for name in [*DEPLOYMENT_NAMES, "BIGQUERY_EMULATOR_HOST"]:
        monkeypatch.delenv(name, raising=False)
    code = entry.main(["privacy", "erase", "--student", "1001", "--request", "LGPD-1", "--by", "dpo@x.example"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"refused: {MissingSettingsError(DEPLOYMENT_NAMES)}"]


def test_the_environment_may_not_contradict_the_file(tmp_path: Path) -> None:
    path = settings_file(tmp_path, Config.load(TF))
    with pytest.raises(SettingsError) as refused:
        operator_settings(path, environ={"BQ_DATASET": "progress"})
    assert type(refused.value) is SettingsError
    same = json.loads(path.read_text())["BQ_DATASET"]
    assert operator_settings(path, environ={"BQ_DATASET": same}).bq_dataset == same


def test_the_datasets_beside_the_history_follow_terraforms_rule() -> None:
    """With BQ_DATASET alone (the documented environment), the datasets beside it are Terraform's."""
    config = Config.load(TF)
    cfg = Settings.from_env({"BQ_DATASET": config.local("dataset")})
    assert (cfg.bq_restricted_dataset, cfg.bq_slack_dataset, cfg.bq_slack_staging_dataset) == (
        config.local("restricted_dataset"),
        config.local("slack_dataset"),
        config.local("slack_staging_dataset"),
    )


def test_the_run_state_lives_outside_the_bucket_that_triggers_the_loader() -> None:
    """load_history runs for every object finalized in the shards bucket (tf_model.check_wiring holds its trigger
    to it): the functions find the run state (rosters, lanes, claims, the budget rewritten every few seconds during
    a run) in a bucket of their own."""
    given = output(Config.load(TF), "functions_settings")
    assert str(given["SHARDS_BUCKET"]) == "${google_storage_bucket.shards.name}"
    assert str(given["STATE_BUCKET"]) == "${google_storage_bucket.state.name}"
