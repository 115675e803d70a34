"""A tag's carry plan (carrying/rule.py), as piece 0 freezes it in the state bucket for every piece of the run
(`carry_plan_name` in objects.py): per student, the earlier observations each piece may write again, and the
verification sample. Pure: no Google call."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from progress_monitor.contracts.values import RunId, json_int, parse_uint


@dataclass(frozen=True)
class CarriedValue:
    """An earlier `ok` observation of one student x product in this class, and the run that read it."""

    total: float
    assistidas: int
    completas: int
    source_run: str
    observed_at: datetime | None = None  # when that run read it: a carried row's extracted_at (no read now)


@dataclass(frozen=True)
class CarryPlan:
    """Per student, the products whose observation may be carried this week (a call's products are skipped
    only when all of them are here), and the students read anyway to verify the rule (`sample`)."""

    carried: dict[int, dict[int, CarriedValue]] = field(default_factory=dict)
    sample: frozenset[int] = frozenset()

    def to_body(self) -> bytes:
        return json.dumps(
            {
                "carried": {
                    str(user): {
                        str(product): [
                            v.total,
                            v.assistidas,
                            v.completas,
                            v.source_run,
                            v.observed_at.isoformat() if v.observed_at else None,
                        ]
                        for product, v in products.items()
                    }
                    for user, products in self.carried.items()
                },
                "sample": sorted(self.sample),
            }
        ).encode()

    @classmethod
    def from_body(cls, raw: bytes) -> CarryPlan:
        """ValueError when the body is not a plan."""
        body = json.loads(raw)
        carried_raw = body.get("carried") if isinstance(body, dict) else None
        sample = body.get("sample") if isinstance(body, dict) else None
        if not isinstance(carried_raw, dict) or not isinstance(sample, list):
            raise ValueError("a carry plan has 'carried' and 'sample'")
        if any(json_int(u) is None for u in sample):
            raise ValueError("sample must be user ids")
        carried: dict[int, dict[int, CarriedValue]] = {}
        for user, products in carried_raw.items():
            user_id = parse_uint(user)
            if user_id is None or not isinstance(products, dict):
                raise ValueError("carried must map user ids to products")
            for product, value in products.items():
                product_id = parse_uint(product)
                shape = "a carried value is [total, assistidas, completas, source run, observed at or null]"
                ok = isinstance(value, list) and len(value) in (4, 5)  # 4: a plan written before observed_at
                if product_id is None or not ok or not isinstance(value[0], int | float) or isinstance(value[0], bool):
                    raise ValueError(shape)
                if json_int(value[1]) is None or json_int(value[2]) is None or RunId.parse_or_none(value[3]) is None:
                    raise ValueError(shape)
                carried.setdefault(user_id, {})[product_id] = CarriedValue(
                    float(value[0]), value[1], value[2], value[3], _observed_at(value[4] if len(value) == 5 else None)
                )
        return cls(carried, frozenset(sample))


def _observed_at(raw: object) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError as exc:
        raise ValueError("a carried value's observed time is an ISO timestamp") from exc
    if moment.tzinfo is None:
        raise ValueError("a carried value's observed time has an offset")
    return moment
