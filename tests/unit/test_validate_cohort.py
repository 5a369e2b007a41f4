"""benchmarks/validate_cohort.py: the rates it prints (a cohort through the stages takes ~1 min
even when tiny, so it is not run here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def cohort():
    return load_benchmark("validate_cohort")


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


def test_patient_values_are_the_values_the_rows_compare(cohort):
    response = pd.DataFrame(
        {
            "state": ["Tex_term", "all_cd8", "all_cd8", "Tex_term"],
            "program": ["fraction_of_cd8_cells", "ifn_i_core", "tpex", "ifn_i_core"],
        }
    )
    obs = pd.DataFrame(
        {
            "patient": pd.Categorical(["p1", "p1", "p2", "p2", "p2"]),
            "score_ifn_i_core": [0.1, 0.3, 0.5, 0.6, 0.7],
            "score_tpex": [1.0, 0.0, 0.0, 0.0, 0.3],
            "score_lpo_drivers": [9.0] * 5,  # not an all-CD8 row: not written
        }
    )
    composition = pd.DataFrame(
        {
            "patient": ["p1", "p2"],
            "response": ["responder", "non_responder"],
            "n_cd8_cells": [2, 3],
            "n_Tex_term": [1, 3],
            "fraction_Tex_term": [0.5, 1.0],
            "log_ratio_tpex_to_tex_term": [-0.5, -2.0],
            "included": [False, False],
        }
    )
    tables = {"response_comparison": response, "_obs": obs, "composition": composition}
    out = cohort._patient_values(tables, seed=7, condition="planted").set_index("patient")
    assert list(out.columns) == [
        "seed",
        "condition",
        "response",
        "n_cd8_cells",
        "included",
        "fraction_Tex_term",
        "log_ratio_tpex_to_tex_term",
        "all_cd8_ifn_i_core",
        "all_cd8_tpex",
    ]
    assert out.loc["p1", "all_cd8_ifn_i_core"] == pytest.approx(0.2)
    assert out.loc["p2", "all_cd8_ifn_i_core"] == pytest.approx(0.6)
    assert out.loc["p2", "all_cd8_tpex"] == pytest.approx(0.1)
    assert out.loc["p2", "fraction_Tex_term"] == 1.0
    assert (out["seed"] == 7).all() and (out["condition"] == "planted").all()
