"""benchmarks/validate_cohort.py: the rates it prints (a cohort through the stages takes ~1 min
even when tiny, so it is not run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "validate_cohort.py"


@pytest.fixture(scope="module")
def cohort():
    spec = importlib.util.spec_from_file_location("validate_cohort", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rates_count_found_planted_rows_and_null_calls(cohort):
    table = pd.DataFrame(
        {
            "condition": ["planted"] * 4 + ["no_difference"] * 4,
            "composition_found": [True, True, True, False, False, False, False, False],
            "ifn_found": [True] * 4 + [False] * 4,
            "composition_called": [True, True, True, False, False, True, False, False],
            "ifn_called": [True] * 4 + [False] * 4,
            "min_q_any_composition_row": [0.01] * 4 + [0.5, 0.01, 0.04, 0.9],
            "min_q_all_cd8_ifn_rows": [0.01] * 4 + [0.5, 0.5, 0.5, 0.5],
        }
    )
    rates = {
        name.split(" (")[0].split(":")[0]: (hits, n, ok)
        for name, hits, n, ok in cohort.rates(table)
    }
    assert rates["planted composition found"] == (3, 4, False)  # 0.75 < 0.9
    assert rates["planted IFN-I found"] == (4, 4, True)
    null = [(hits, n, ok) for name, hits, n, ok in cohort.rates(table) if name.startswith("null")]
    assert null == [(1, 4, False), (2, 4, False)]  # the row pair, then any row


def test_pooled_sd_is_the_within_group_sd(cohort):
    values = pd.Series([1.0, 3.0, 10.0, 14.0])
    groups = pd.Series(["a", "a", "b", "b"])
    # variances 2 and 8 with 1 degree of freedom each
    assert cohort._pooled_sd(values, groups) == pytest.approx(np.sqrt(5.0))
