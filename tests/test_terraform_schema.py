"""infra/terraform's enum-like values against the Google provider's documented ones (offline; tests/tf_schema.py).

Whether each argument and block exists, is required and has the right type, Terraform itself now judges on
the stand-in providers (tests/test_terraform_plan.py, tests/test_terraform_refusals.py)."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from typing import Any

from tests.test_terraform import ROOT, TF, parsed
from tests.tf_schema import check_enums

SCHEMA = ROOT / ".venv-tfschema" / "provider-schema.json"


@cache
def schema() -> dict[str, Any]:
    assert SCHEMA.exists(), "`make test` builds the provider schema (.venv-tfschema); run it through make"
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def test_every_enum_like_value_is_one_the_provider_documents() -> None:
    assert check_enums(parsed(), schema()) == []


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


def test_the_check_fails_on_a_value_the_provider_does_not_list() -> None:
    config = copy.deepcopy(parsed())
    service = _function(config)["service_config"][0]
    service["ingress_settings"] = service["ingress_settings"].replace("ALLOW_INTERNAL_ONLY", "INTERNAL_ONLY")
    assert check_enums(config, schema()) == [
        "resource.google_cloudfunctions2_function.fn.service_config: ingress_settings = 'INTERNAL_ONLY' is not one "
        "of ['ALLOW_ALL', 'ALLOW_INTERNAL_ONLY', 'ALLOW_INTERNAL_AND_GCLB']"
    ]
