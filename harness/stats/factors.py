"""The factors a grid varies and their levels: a factor is a grid key with two or more distinct levels,
and `report.reference` names the level each factor's contrasts are taken against.

The study refuses a wrong reference before any trial (`harness.grid.study.validate_search`); the report
builds its contrasts from the same definition (`analysis.contrasts`).
"""

from __future__ import annotations

import json
import numbers
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from harness.errors import SpecError

REFERENCE_FIELD = "report.reference"


def format_value(value: Any) -> str:
    """A param value as it appears in labels: 0.0002 → 2e-04, 16 → 16, lists as JSON."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def same_level(a: Any, b: Any) -> bool:
    """Whether two grid values are the same level: 16 == 16.0, but True is not 1."""
    a, b = (v.item() if isinstance(v, np.generic) else v for v in (a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
        return float(a) == float(b)
    return a == b


def distinct_levels(values: Iterable[Any]) -> list[Any]:
    """`values` without repeats of one level (see `same_level`), in first-seen order."""
    out: list[Any] = []
    for v in values:
        v = v.item() if isinstance(v, np.generic) else v
        if not any(same_level(v, w) for w in out):
            out.append(v)
    return out


def check_reference(reference: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], *,
                    where: Any = None) -> None:
    """Refuse a `report.reference` key that is not a factor of `grid` (two or more levels) or a value
    that is not one of that factor's levels, naming the field."""
    factors = {k: distinct_levels(v) for k, v in grid.items() if len(distinct_levels(v)) >= 2}
    for key, value in reference.items():
        if key not in factors:
            known = ", ".join(factors) or "none: the grid varies nothing"
            one = f" ('{key}' has a single level)" if key in grid else ""
            raise SpecError(f"field '{REFERENCE_FIELD}.{key}': '{key}' is not a factor the study varies{one} "
                            f"(factors: {known})", where=where)
        if not any(same_level(value, level) for level in factors[key]):
            raise SpecError(f"field '{REFERENCE_FIELD}.{key}': {value!r} is not one of its levels "
                            f"{[format_value(v) for v in factors[key]]}", where=where)
