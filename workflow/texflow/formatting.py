"""Numbers for a human reader: the one way texflow writes a number or a p-value in words.

Used by the findings (their notes) and by the report (tables, sentences), so a p-value reads the
same in `tables/findings.tsv` and on the page.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def format_number(value: Any, digits: int = 3) -> str:
    """A number for a human: 3 significant digits, integers as integers, NA as '–'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", " ") if abs(int(value)) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10**digits:
            return f"{value:.0f}"  # 1432.5 -> 1432, not 1.43e+03
        return f"{value:.{digits}g}"
    return str(value)


def format_p(value: float) -> str:
    """A p-value: two significant digits, scientific below 0.001."""
    if not np.isfinite(value):
        return "–"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.2g}"


def as_number(value: Any) -> float:
    """`value` as a finite float, else NaN (text, None, inf)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
