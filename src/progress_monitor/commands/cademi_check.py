"""Before a school switches to Cademi's API v3: does the live contract (`GET /openapi.json`, `GET /capabilities`)
have every field `cademi_v3.FIELDS` names, and does the school's key have the permissions it needs?

    python -m progress_monitor cademi-check      (with CADEMI_API_VERSION=v3 and the v3 base URL)

Exit 0: the mapping matches; 1: a mismatch (printed field by field); 2: the contract could not be read (Cademi
failed, or a part of either document has the wrong type: a name that is absent is a mismatch, but a
`components`, `schemas`, schema, `properties`, `data` or `permissions` of another type is never read as a
pass, nor a string of permissions searched for substrings).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from progress_monitor.cademi.v3 import FIELDS, CademiV3Client
from progress_monitor.commands import options
from progress_monitor.errors import CademiError, CademiMalformedError
from progress_monitor.platform.secret_store import get_secret
from progress_monitor.settings import CADEMI_API_KEY


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


def _object(parent: Any, key: str, where: str) -> dict[str, Any]:
    """`parent[key]` as an object: {} when absent (its names are then reported missing, a mismatch), and
    CademiMalformedError (the contract could not be read) when it is there with another type."""
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise CademiMalformedError(f"{where}.{key} is {type(value).__name__}, not an object")
    return value


def check_contract(client: CademiV3Client) -> ContractReport:
    """Read `GET /openapi.json` and `GET /capabilities` and compare them with FIELDS; CademiMalformedError
    names the first part of a document that has the wrong type."""
    document = client._get("/openapi.json")
    if not isinstance(document, dict):
        raise CademiMalformedError(f"openapi.json is {type(document).__name__}, not an object")
    schemas = _object(_object(document, "components", "openapi.json"), "schemas", "openapi.json components")
    fields: dict[str, bool] = {}
    for schema in (FIELDS.user, FIELDS.progress):
        properties = _object(_object(schemas, schema.name, "schemas"), "properties", f"schemas.{schema.name}")
        for ours, theirs in schema.properties.items():
            fields[f"{schema.name}.{theirs} ({ours})"] = theirs in properties
    body = client._get("/capabilities")
    if not isinstance(body, dict):
        raise CademiMalformedError(f"capabilities is {type(body).__name__}, not an object")
    capabilities = _object(body, "data", "capabilities")
    granted = capabilities.get("permissions", [])
    if not isinstance(granted, list) or not all(isinstance(p, str) for p in granted):
        raise CademiMalformedError("capabilities.data.permissions is not a list of names")
    missing = tuple(p for p in FIELDS.permissions if p not in granted)
    return ContractReport(fields, missing, capabilities.get("rate_limits"))


def main(argv: list[str] | None = None) -> int:
    """`python -m progress_monitor cademi-check`: the v3 mapping against the live contract, with the school's key."""
    parser = argparse.ArgumentParser(prog="python -m progress_monitor cademi-check", description=main.__doc__)
    parser.add_argument("command", nargs="?", choices=["check"], default="check")
    options.add_settings_option(parser)
    svc = options.build(parser.parse_args(argv))
    client = CademiV3Client.from_settings(svc.cfg, get_secret(svc.cfg, CADEMI_API_KEY), svc.cademi_budget)
    try:
        report = check_contract(client)
        lines = report.lines()
    except (CademiError, RecursionError) as exc:  # RecursionError: a document nested too deep to read
        print(f"the contract could not be read: {str(exc)[:300] or type(exc).__name__}")
        return 2
    for line in lines:
        print(line)
    print("the mapping matches: the school can switch" if report.ok else "MISMATCH: fix FIELDS before switching")
    return 0 if report.ok else 1
