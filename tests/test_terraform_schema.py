"""infra/terraform against the Google provider's own schema (offline; see tests/tf_schema.py)."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from typing import Any

from tests.test_terraform import ROOT, TF, parsed
from tests.tf_schema import check_configuration

SCHEMA = ROOT / ".venv-tfschema" / "provider-schema.json"


@cache
def schema() -> dict[str, Any]:
    assert SCHEMA.exists(), "`make test` builds the provider schema (.venv-tfschema); run it through make"
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def test_every_resource_and_data_block_matches_the_provider_schema() -> None:
    assert check_configuration(parsed(), schema()) == []


def test_the_pinned_providers_are_the_schemas_version() -> None:
    versions = (TF / "versions.tf").read_text()
    for provider, version in schema()["provider_versions"].items():
        name = provider.split("/")[1]
        block = re.search(rf'\n\s*{re.escape(name)} = \{{[^}}]*version\s*=\s*"([^"]+)"', versions)
        assert block is not None, f"{name} is not pinned in versions.tf"
        assert block.group(1) == version, f"{name} pinned to {block.group(1)}, the schema is {version}"


def _function(config: dict[str, Any]) -> dict[str, Any]:
    for group in config["resource"]:
        for kind, instances in group.items():
            if kind.strip('"') == "google_cloudfunctions2_function":
                body: dict[str, Any] = next(iter(instances.values()))
                return body
    raise AssertionError("no function resource")


def test_the_check_fails_on_an_unknown_argument() -> None:
    config = copy.deepcopy(parsed())
    _function(config)["service_config"][0]["max_instances_per_region"] = 3
    errors = check_configuration(config, schema())
    assert errors == [
        "resource.google_cloudfunctions2_function.fn.service_config: unknown argument or block "
        "'max_instances_per_region'"
    ]


def test_the_check_fails_on_a_missing_required_argument() -> None:
    config = copy.deepcopy(parsed())
    del _function(config)["location"]
    assert check_configuration(config, schema()) == [
        "resource.google_cloudfunctions2_function.fn: required argument 'location' is missing"
    ]


def test_the_check_fails_on_a_block_where_an_argument_belongs_and_the_reverse() -> None:
    config = copy.deepcopy(parsed())
    function = _function(config)
    function["name"] = [{"value": "x", "__is_block__": True}]
    function["build_config"] = {"runtime": "python311"}
    errors = check_configuration(config, schema())
    assert "resource.google_cloudfunctions2_function.fn: 'name' is an argument (`name = ...`), not a block" in errors
    assert any("'build_config' is a block" in e for e in errors)


def test_the_check_fails_on_an_unknown_resource_type_and_a_beta_type_without_its_provider() -> None:
    config = copy.deepcopy(parsed())
    config["resource"].append({'"google_cloudfunction3_function"': {'"x"': {"name": "x"}}})
    agent = next(g for g in config["resource"] if '"google_project_service_identity"' in g)
    del next(iter(agent['"google_project_service_identity"'].values()))["provider"]
    errors = check_configuration(config, schema())
    assert any("no resource type 'google_cloudfunction3_function'" in e for e in errors)
    assert any("exists only in google-beta" in e for e in errors)
