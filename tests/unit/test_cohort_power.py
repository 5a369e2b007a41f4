"""benchmarks/cohort_power.py: Noether's sample size and the resampled rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def power():
    return load_benchmark("cohort_power")


def test_noether_n(power):
    # (1.96 + 1.2816)^2 / (6 * 0.25^2) = 28.02: P(X > Y) = 0.75, two-sided 0.05, power 0.9
    assert power.noether_n(0.75, alpha=0.05, power=0.9) == pytest.approx(28.02, abs=0.01)
    # a stricter alpha needs more patients
    assert power.noether_n(0.75, alpha=0.05 / 8, power=0.9) > 40


def _patients(shift: float, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    response = np.repeat(["non_responder", "responder"], n)
    is_nr = response == "non_responder"
    frame = pd.DataFrame(
        {
            "seed": 0,
            "condition": "planted",
            "patient": [f"p{i}" for i in range(2 * n)],
            "response": response,
            "included": True,
            "fraction_Tex_term": rng.normal(size=2 * n) + shift * is_nr,
            "fraction_Tpex": rng.normal(size=2 * n),
            "log_ratio_tpex_to_tex_term": rng.normal(size=2 * n),
            "all_cd8_ifn_i_core": rng.normal(size=2 * n) - shift * is_nr,  # the other sign
            "all_cd8_tpex": rng.normal(size=2 * n),
        }
    )
    return frame


def test_resampled_rates_find_a_large_shift_in_its_sign_only(power):
    table = _patients(3.0, 200, seed=1)
    rates = power.resampled_rates(table, n_per_group=10, draws=200, seed=0)
    assert rates["composition_found"] > 0.95
    assert rates["ifn_found"] == 0.0  # significant, but lower in non-responders: not "found"
    assert rates["either_called"] > 0.95


def test_resampled_rates_without_a_difference_stay_near_alpha(power):
    table = _patients(0.0, 400, seed=2)
    rates = power.resampled_rates(table, n_per_group=20, draws=2000, seed=0)
    assert rates["composition_found"] < 0.05
    assert 0.02 < rates["either_called"] < 0.10


def test_load_centres_each_seed_and_keeps_included_patients(power, tmp_path):
    a = _patients(1.0, 5, seed=3).assign(seed=0)
    b = _patients(1.0, 5, seed=4).assign(seed=1)
    b["fraction_Tex_term"] += 100.0  # a level of its own: centring removes it
    b.loc[0, "included"] = False
    path = tmp_path / "p.tsv"
    pd.concat([a, b]).to_csv(path, sep="\t", index=False)
    table = power.load([str(path)])
    assert len(table) == 19
    means = table.groupby("run")["fraction_Tex_term"].mean()
    assert np.allclose(means, 0.0)


def test_patients_for_power_grows_as_the_effect_shrinks(power):
    big = power.patients_for_power(
        _patients(2.0, 60, seed=5), key="composition_found", power=0.9, draws=300, seed=0
    )
    small = power.patients_for_power(
        _patients(1.0, 60, seed=5), key="composition_found", power=0.9, draws=300, seed=0
    )
    assert big is not None and small is not None and big < small <= 60
    # no effect: 90 % is not reached within the pool
    none = power.patients_for_power(
        _patients(0.0, 30, seed=6), key="composition_found", power=0.9, draws=100, seed=0
    )
    assert none is None
