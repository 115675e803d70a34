"""Before a school switches to Cademi's API v3: does the live contract (`GET /openapi.json`, `GET /capabilities`)
have every field `cademi_v3.FIELDS` names, and does the school's key have the permissions it needs?

    python -m progress_monitor.cademi_check      (with CADEMI_API_VERSION=v3 and the v3 base URL)

Exit 0: the mapping matches; 1: a mismatch (printed field by field); 2: the contract could not be read.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from progress_monitor import runtime
from progress_monitor.cademi_v3 import FIELDS, CademiV3Client
from progress_monitor.errors import CademiError
from progress_monitor.secrets import get_secret
from progress_monitor.settings import CADEMI_API_KEY, Settings


@dataclass(frozen=True)
class ContractReport:
    """Field by field: does the live OpenAPI document have what FIELDS names? And the key's permissions."""

    fields: dict[str, bool]  # "User.last_access_at" -> present
    missing_permissions: tuple[str, ...]
    rate_limits: Any

    @property
    def ok(self) -> bool:
        return all(self.fields.values()) and not self.missing_permissions

    def lines(self) -> list[str]:
        out = [f"{'ok     ' if present else 'MISSING'} {name}" for name, present in sorted(self.fields.items())]
        out += [f"MISSING permission {p}" for p in self.missing_permissions]
        out.append(f"rate limits of this key: {self.rate_limits}")
        return out


def check_contract(client: CademiV3Client) -> ContractReport:
    """Read `GET /openapi.json` and `GET /capabilities` and compare them with FIELDS."""
    document = client._get("/openapi.json")
    schemas = document.get("components", {}).get("schemas", {}) if isinstance(document, dict) else {}
    fields: dict[str, bool] = {}
    for schema in (FIELDS.user, FIELDS.progress):
        properties = schemas.get(schema.name, {}).get("properties", {}) if isinstance(schemas, dict) else {}
        for ours, theirs in schema.properties.items():
            fields[f"{schema.name}.{theirs} ({ours})"] = isinstance(properties, dict) and theirs in properties
    capabilities = client._get("/capabilities").get("data", {})
    granted = capabilities.get("permissions", []) if isinstance(capabilities, dict) else []
    missing = tuple(p for p in FIELDS.permissions if p not in granted)
    limits = capabilities.get("rate_limits") if isinstance(capabilities, dict) else None
    return ContractReport(fields, missing, limits)


def main(argv: list[str] | None = None) -> int:
    """`python -m progress_monitor.cademi_check`: the v3 mapping against the live contract, with the school's key."""
    parser = argparse.ArgumentParser(prog="progress_monitor.cademi_check", description=main.__doc__)
    parser.add_argument("command", nargs="?", choices=["check"], default="check")
    parser.parse_args(argv)
    settings = Settings.from_env()
    client = CademiV3Client.from_settings(
        settings, get_secret(settings, CADEMI_API_KEY), runtime.cademi_budget(settings)
    )
    try:
        report = check_contract(client)
    except CademiError as exc:
        print(f"the contract could not be read: {exc}")
        return 2
    for line in report.lines():
        print(line)
    print("the mapping matches: the school can switch" if report.ok else "MISMATCH: fix FIELDS before switching")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
