"""texflow.stats: patient-level tests find real effects, keep patient confounding out, and say
which unit they used."""

import logging

import numpy as np
import pandas as pd
import pytest
from texflow import contract, stats


def cells(*, n_patients=6, n_per_patient=80, seed=0, slope=0.0, patient_shift=0.0, responders=True):
    """Cells with pseudotime, state, patient, response and scores ``rise`` (score = slope *
    pseudotime + noise) and ``confounded`` (flat within patients, but patients with later
    pseudotime have higher scores: a between-patient effect a cell-level test would take for
    a trend)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        offset = p / max(n_patients - 1, 1)  # patient p sits later along pseudotime
        pt = np.clip(rng.uniform(0, 0.6, n_per_patient) + 0.4 * offset, 0, 1)
        for t in pt:
            rows.append(
                dict(
                    patient=f"P{p}",
                    pseudotime=t,
                    state="Tpex" if t < 0.33 else ("Tex_int" if t < 0.66 else "Tex_term"),
                    response=("responder" if p % 2 == 0 else "non_responder")
                    if responders
                    else None,
                    rise=slope * t + rng.normal(0, 0.2),
                    confounded=patient_shift * offset + rng.normal(0, 0.2),
                )
            )
    obs = pd.DataFrame(rows)
    obs.index = [f"c{i}" for i in range(len(obs))]
    return obs


def test_rising_score_is_found_and_patient_confounding_is_not():
    obs = cells(slope=1.0, patient_shift=2.0)
    table = stats.pseudotime_associations(
        obs, obs[["rise", "confounded"]], n_permutations=500, seed=1
    ).set_index("program")
    assert table.loc["rise", "effect"] > 0.4
    assert table.loc["rise", "p_adj"] < 0.01
    assert table.loc["rise", "n_patients"] == 6
    assert table.loc["rise", "n_patients_positive"] == 6
    assert table.loc["rise", "unit"] == "patients"
    # pooled over cells the confounded score correlates with pseudotime ...
    pooled = obs[["pseudotime", "confounded"]].corr(method="spearman").iloc[0, 1]
    assert pooled > 0.3
    # ... but not within any patient
    assert abs(table.loc["confounded", "effect"]) < 0.15
    assert table.loc["confounded", "p_value"] > 0.01


def test_flat_score_false_positive_rate():
    called = 0
    for seed in range(20):
        obs = cells(seed=seed, n_per_patient=40)
        table = stats.pseudotime_associations(obs, obs[["rise"]], n_permutations=199, seed=seed)
        called += int(table["p_value"].iloc[0] < 0.05)
    assert called <= 3  # 5% of 20 is 1; binomial tail P(>3) < 2%


def test_without_patients_cells_are_units_and_it_says_so():
    obs = cells(slope=1.0).drop(columns="patient")
    table = stats.pseudotime_associations(obs, obs[["rise"]], n_permutations=200)
    assert table["unit"].iloc[0] == "cells"
    assert "cells are the units" in table["note"].iloc[0]
    assert table["effect"].iloc[0] > 0.5


def test_covariate_is_partialled_out():
    rng = np.random.default_rng(3)
    obs = cells(n_per_patient=150)
    depth = obs["pseudotime"] + rng.normal(0, 0.1, len(obs))
    obs["depth_driven"] = depth + rng.normal(0, 0.1, len(obs))
    plain = stats.pseudotime_associations(obs, obs[["depth_driven"]], n_permutations=200)
    adjusted = stats.pseudotime_associations(
        obs,
        obs[["depth_driven"]],
        n_permutations=200,
        covariate=depth.to_numpy(),
        covariate_name="depth",
    )
    assert plain["effect"].iloc[0] > 0.5
    assert abs(adjusted["effect"].iloc[0]) < 0.15
    assert adjusted["adjusted_for"].iloc[0] == "depth"


def test_state_comparison_paired_on_patient_means():
    obs = cells(slope=1.0)
    table = stats.compare_states(obs, obs[["rise", "confounded"]]).set_index("program")
    assert table.loc["rise", "test"] == "wilcoxon_signed_rank_paired"
    assert table.loc["rise", "effect"] > 0.3  # Tex_term - Tpex
    assert table.loc["rise", "n_patients"] >= 3
    assert table.loc["rise", "comparison"] == "Tex_term vs Tpex"
    assert {"p_value", "p_adj", "n_cells", "unit"} <= set(table.columns)


def test_response_comparison_direction_and_units():
    obs = cells()
    obs["ifn"] = np.where(obs["response"] == "non_responder", 1.0, 0.0) + np.random.default_rng(
        0
    ).normal(0, 0.1, len(obs))
    table, skipped = stats.compare_response(obs, obs[["ifn", "rise"]])
    assert skipped == ""
    row = table[(table["state"] == "exhausted_lineage") & (table["program"] == "ifn")].iloc[0]
    assert row["effect"] == pytest.approx(row["mean_non_responders"] - row["mean_responders"])
    assert row["effect"] > 0.8 and row["cliffs_delta"] == 1.0
    assert row["n_responders"] == 3 and row["n_non_responders"] == 3
    assert row["p_value"] == pytest.approx(0.1)  # smallest two-sided exact p for 3 vs 3


def test_response_comparison_without_labels_is_skipped_not_guessed():
    obs = cells(responders=False)
    table, skipped = stats.compare_response(obs, obs[["rise"]])
    assert "no response labels" in skipped
    assert len(table) == 1 and table["test"].iloc[0] == "skipped"
    assert table["note"].iloc[0].startswith("skipped:")


def test_bh_keeps_nan():
    adjusted = stats.bh_adjust([0.01, np.nan, 0.04])
    assert np.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)


def test_response_comparison_has_all_cd8_rows_over_every_state():
    obs = cells(n_patients=8)
    obs["state"] = obs["state"].astype(str)
    obs.loc[obs.index[::4], "state"] = "naive_like"  # not in the lineage, still CD8
    obs["ifn"] = np.where(obs["response"] == "non_responder", 1.0, 0.0)
    table, _ = stats.compare_response(obs, obs[["ifn"]])
    row = table[table["state"] == stats.ALL_CD8].iloc[0]
    assert row["n_cells"] == len(obs)  # every cell, naive_like included
    assert row["n_responders"] == 4 and row["n_non_responders"] == 4
    assert row["effect"] == pytest.approx(1.0)


def test_a_patient_with_both_response_labels_is_left_out_and_named():
    """GSE120575 labels response per biopsy: a patient labelled both ways is never given the
    label of its first cell."""
    obs = cells(n_patients=6)
    patient = obs["patient"].astype(str)
    first = sorted(patient.unique())[0]
    rows = obs.index[patient == first]
    obs["response"] = obs["response"].astype(str)
    obs.loc[rows[:12], "response"] = "responder"
    obs.loc[rows[12:], "response"] = "non_responder"
    per_patient, note = stats.patient_response(obs)
    assert first not in per_patient.index and len(per_patient) == 5
    assert first in note and "both response labels" in note
    table, _ = stats.compare_response(obs, obs[["rise"]])
    row = table[table["state"] == stats.ALL_CD8].iloc[0]
    assert row["n_responders"] + row["n_non_responders"] == 5
    assert first in row["note"]


def test_the_left_out_patients_are_logged_once_per_comparison(caplog):
    """The report's figures read the labels again and again; only the table-writing comparison
    logs the patients it leaves out (the report log said it once per figure)."""
    obs = cells(n_patients=6)
    first = sorted(obs["patient"].astype(str).unique())[0]
    obs["response"] = obs["response"].astype(str)
    obs.loc[obs.index[obs["patient"].astype(str) == first][:5], "response"] = "responder"
    obs.loc[obs.index[obs["patient"].astype(str) == first][5:], "response"] = "non_responder"
    with caplog.at_level(logging.WARNING, logger="texflow.stats"):
        for _ in range(3):
            stats.patient_response(obs)
        assert not caplog.records
        stats.compare_response(obs, obs[["rise"]])
    warned = [r.getMessage() for r in caplog.records if "both response labels" in r.getMessage()]
    assert len(warned) == 1 and first in warned[0]


@pytest.mark.parametrize("spelling", ["", " ", "nan", "NaN", "NA", "na", "None", "none"])
def test_a_missing_label_is_missing_to_every_reader(spelling):
    """One definition of "no value" (contract.MISSING_LABELS): ingest, the statistics and the
    report agree on which patients exist."""
    from texflow import io
    from texflow.expression import known_values

    values = pd.Series(["P1", spelling, "unknown", np.nan], dtype=object)
    obs = pd.DataFrame({"patient": values})
    assert stats._labels(obs, "patient").isna().tolist() == [False, True, False, True]
    assert (~known_values(values)).tolist() == [False, True, False, True]
    assert io._strings(values).isna().tolist() == [False, True, False, True]


def composition_cells(
    *, tex_term_nr=0.4, tex_term_r=0.15, n_patients=12, n_cells=60, seed=0, small_patient=False
):
    """CD8 cells whose per-cell calls hold a planted Tex_term share per response group."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        response = "non_responder" if p % 2 else "responder"
        share = tex_term_nr if p % 2 else tex_term_r
        n = 5 if (small_patient and p == 0) else n_cells
        others = ["Tpex", "naive_like", "effector_memory"]
        for _ in range(n):
            state = "Tex_term" if rng.random() < share else others[rng.integers(3)]
            rows.append(
                dict(patient=f"P{p:02d}", response=response, cell_state=state, state="ambiguous")
            )
    return pd.DataFrame(rows)


def test_patient_composition_counts_fractions_and_balance():
    obs = composition_cells(small_patient=True)
    table = stats.patient_composition(obs, min_cells=10)
    assert table["state_key"].eq("cell_state").all()  # per-cell calls, not the cluster label
    row = table.set_index("patient").loc["P01"]
    cells_p1 = obs[obs["patient"] == "P01"]
    assert row["n_cd8_cells"] == len(cells_p1)
    assert row["n_Tex_term"] == (cells_p1["cell_state"] == "Tex_term").sum()
    assert row["fraction_Tex_term"] == pytest.approx(row["n_Tex_term"] / len(cells_p1))
    fractions = table[[c for c in table if c.startswith("fraction_")]].sum(axis=1)
    np.testing.assert_allclose(fractions, 1.0)
    assert row["log_ratio_tpex_to_tex_term"] == pytest.approx(
        np.log((row["n_Tpex"] + 0.5) / (row["n_Tex_term"] + 0.5))
    )
    assert not table.set_index("patient").loc["P00", "included"]  # 5 cells < 10
    assert table.set_index("patient").loc["P01", "response"] == "non_responder"


def test_composition_finds_a_planted_shift_and_says_the_caveat():
    table = stats.compare_composition(stats.patient_composition(composition_cells()), min_cells=10)
    tex_term = table.set_index("state").loc["Tex_term"]
    assert tex_term["program"] == stats.COMPOSITION_MEASURE
    assert tex_term["effect"] > 0.15 and tex_term["p_adj"] < 0.05
    assert (tex_term["n_non_responders"], tex_term["n_responders"]) == (6, 6)
    balance = table.set_index("state").loc[stats.BALANCE_ROW]
    assert balance["program"] == stats.BALANCE_MEASURE and balance["effect"] < 0
    assert stats.COMPOSITION_CAVEAT in tex_term["note"]
    assert list(table.columns) == stats.RESPONSE_COLUMNS


def test_composition_without_a_shift_calls_nothing():
    calls = 0
    for seed in range(20):
        obs = composition_cells(tex_term_nr=0.3, tex_term_r=0.3, seed=seed)
        table = stats.compare_composition(stats.patient_composition(obs))
        calls += int((table["p_adj"] < 0.05).any())
    assert calls <= 2  # 5 % of 20 seeds, with room for one unlucky seed


def test_composition_leaves_small_patients_out_and_says_how_many():
    obs = composition_cells(small_patient=True)
    table = stats.compare_composition(stats.patient_composition(obs, min_cells=10), min_cells=10)
    row = table.set_index("state").loc["Tex_term"]
    assert row["n_patients"] == 11 and "1 patient(s) with < 10 CD8 cells left out" in row["note"]


def test_composition_without_patients_describes_samples_and_is_not_tested():
    obs = composition_cells(n_patients=1)
    obs["patient"] = np.nan
    obs["sample"] = np.where(np.arange(len(obs)) % 2, "rep1", "rep2")
    table = stats.patient_composition(obs)
    assert set(table["patient"]) == {"rep1", "rep2"} and table["grouped_by"].eq("sample").all()
    with pytest.raises(ValueError, match="per sample"):
        stats.compare_composition(table)


def test_a_state_absent_from_every_patient_is_not_testable():
    obs = composition_cells()
    obs["cell_state"] = obs["cell_state"].replace({"Tpex": "naive_like"})
    table = stats.compare_composition(stats.patient_composition(obs)).set_index("state")
    assert np.isnan(table.loc["Tpex", "p_value"]) and "not testable" in table.loc["Tpex", "note"]
    untested = table.loc[["Tpex", stats.BALANCE_ROW]]
    assert untested["test"].eq(contract.NOT_TESTABLE).all() and untested["n_patients"].eq(0).all()
    assert np.isnan(table.loc[stats.BALANCE_ROW, "p_value"])
    assert "no Tpex cell in any patient" in table.loc[stats.BALANCE_ROW, "note"]


def test_state_comparison_without_tpex_cells_says_so():
    obs = cells()
    obs["cell_state"] = obs["state"].replace({"Tpex": "Tex_int"})
    table = stats.compare_states(obs, obs[["rise", "confounded"]])
    assert table["p_value"].isna().all() and table["state_key"].eq("cell_state").all()
    assert table["note"].iloc[0].startswith("no Tpex cell in this dataset (cell_state: 0 Tpex")


# ----------------------------------------------------------------------------------------------
# "not tested": the true reason, the first that blocks the test, in numbers


def test_state_comparison_without_tex_term_cells_says_so():
    obs = cells()
    obs["cell_state"] = obs["state"].replace({"Tex_term": "Tex_int"})
    table = stats.compare_states(obs, obs[["rise"]])
    n_tpex = int((obs["cell_state"] == "Tpex").sum())
    assert table["test"].eq(contract.NOT_TESTABLE).all() and table["n_patients"].eq(0).all()
    assert table["note"].iloc[0] == (
        f"no Tex_term cell in this dataset (cell_state: {n_tpex} Tpex, 0 Tex_term)"
    )


def test_state_comparison_without_patients_and_too_few_cells_names_the_cell_counts():
    """The LCMV demo: no patients, 1 Tpex and 1 Tex_term cell. The blocking reason is the cell
    count, not the pseudoreplication caveat of a test that did not run."""
    obs = cells(n_patients=1, n_per_patient=40).drop(columns="patient")
    obs["state"] = "Tex_int"
    obs.iloc[0, obs.columns.get_loc("state")] = "Tpex"
    obs.iloc[1, obs.columns.get_loc("state")] = "Tex_term"
    row = stats.compare_states(obs, obs[["rise"]]).iloc[0]
    assert row["test"] == contract.NOT_TESTABLE and np.isnan(row["p_value"])
    assert row["note"] == ("too few cells to test (Tex_term: 1, Tpex: 1; >= 3 of each needed)")
    assert "pseudoreplication" not in row["note"]


def test_state_comparison_with_too_few_patients_counts_them():
    obs = cells()
    # Tpex cells only in patient P0: one patient with >= 3 Tpex cells, all six with Tex_term
    obs.loc[(obs["state"] == "Tpex") & (obs["patient"] != "P0"), "state"] = "Tex_int"
    table = stats.compare_states(obs, obs[["rise"]])
    counts = obs[obs["state"] == "Tex_term"].groupby("patient").size()
    n_tex_term = int((counts >= 3).sum())
    assert n_tex_term >= 2
    assert table["note"].iloc[0] == (
        f"too few patients to test: {n_tex_term} with >= 3 Tex_term cells, 1 with >= 3 Tpex "
        "cells, >= 2 of each needed"
    )
    assert table["test"].iloc[0] == contract.NOT_TESTABLE and table["n_patients"].iloc[0] == 0


def _mostly_zero(obs, share_zero=0.98, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.uniform(size=len(obs)) < share_zero, 0.0, rng.uniform(0, 0.2, len(obs)))


def test_a_near_constant_score_is_not_testable_in_every_comparison():
    """tpex on Smart-seq2: 0 in 98% of cells. Not "difference 0, q = 1, no difference"."""
    obs = cells(slope=1.0)
    obs["zero"] = _mostly_zero(obs)
    state = stats.compare_states(obs, obs[["rise", "zero"]]).set_index("program")
    assert state.loc["zero", "test"] == contract.NOT_TESTABLE
    assert np.isnan(state.loc["zero", "p_value"]) and np.isnan(state.loc["zero", "effect"])
    assert state.loc["zero", "note"].startswith("score (near) constant: 0 in 9")
    assert state.loc["rise", "p_value"] < 1  # the other programs are still tested
    response, _ = stats.compare_response(obs, obs[["rise", "zero"]])
    zero = response[response["program"] == "zero"]
    assert zero["test"].eq(contract.NOT_TESTABLE).all() and zero["p_value"].isna().all()
    assert zero["note"].str.contains("score \\(near\\) constant").all()
    associations = stats.pseudotime_associations(obs, obs[["rise", "zero"]], n_permutations=99)
    associations = associations.set_index("program")
    assert np.isnan(associations.loc["zero", "p_value"])
    assert "score (near) constant" in associations.loc["zero", "note"]
    assert associations.loc["zero", "n_patients"] == 0
    assert associations.loc["rise", "p_value"] < 0.05


def test_a_score_with_a_real_spread_is_tested():
    obs = cells()
    obs["half_zero"] = _mostly_zero(obs, share_zero=0.9)
    assert stats.constant_score_reason(obs["half_zero"]) == ""
    assert stats.compare_states(obs, obs[["half_zero"]])["test"].iloc[0] != contract.NOT_TESTABLE


def test_response_rows_say_why_they_were_not_tested():
    obs = cells()
    obs["cell_state"] = obs["state"].replace({"Tpex": "Tex_int"})
    # Tex_term cells only in the responders P0, P2, P4
    obs.loc[
        (obs["cell_state"] == "Tex_term") & obs["patient"].isin(["P1", "P3", "P5"]), "cell_state"
    ] = "Tex_int"
    table, _ = stats.compare_response(obs, obs[["rise"]])
    by_state = table.set_index("state")
    assert by_state.loc["Tpex", "note"] == "no Tpex cell in this dataset (cell_state: 0 Tpex)"
    counts = obs[obs["cell_state"] == "Tex_term"].groupby("patient").size()
    assert by_state.loc["Tex_term", "note"] == (
        f"too few patients to test: 0 non-responder and {int((counts >= 3).sum())} responder "
        "patient(s) with >= 3 Tex_term cells, >= 2 of each needed"
    )
    assert (by_state.loc[["Tpex", "Tex_term"], "test"] == contract.NOT_TESTABLE).all()
    assert (by_state.loc[["Tpex", "Tex_term"], "n_patients"] == 0).all()


# ----------------------------------------------------------------------------------------------
# coverage beside every verdict on an untrusted program

#: program_coverage.tsv of the Sade-Feldman demo (Smart-seq2, GSE120575), the columns read.
SADE_FELDMAN_COVERAGE = pd.DataFrame(
    {
        "program": ["ifn_i_core", "lpo_drivers", "lpo_suppressors", "tpex", "tex_term"],
        "n_genes": [28, 16, 16, 19, 18],
        "n_present": [20, 3, 5, 11, 15],
        "n_up": [28, 16, 16, 13, 12],
        "n_up_present": [20, 3, 5, 5, 10],
        "trusted": [True, False, False, False, True],
    }
)


def test_coverage_caveats_name_each_untrusted_program_with_its_numbers():
    caveats = stats.coverage_caveats(
        SADE_FELDMAN_COVERAGE, combined={"lpo_signed": ("lpo_drivers", "lpo_suppressors")}
    )
    assert caveats == {
        "lpo_drivers": "lpo_drivers: 3 of 16 genes measured, not trusted",
        "lpo_suppressors": "lpo_suppressors: 5 of 16 genes measured, not trusted",
        "tpex": "tpex: 5 of 13 up genes measured, not trusted",
        "lpo_signed": "lpo_drivers: 3 of 16 genes measured, not trusted; "
        "lpo_suppressors: 5 of 16 genes measured, not trusted",
    }
    # read back from the TSV, trusted is a string column
    as_read = SADE_FELDMAN_COVERAGE.assign(trusted=SADE_FELDMAN_COVERAGE["trusted"].astype(str))
    assert stats.coverage_caveats(as_read) == {
        k: v for k, v in caveats.items() if k != "lpo_signed"
    }


def test_every_row_carries_the_coverage_it_rests_on():
    obs = cells()
    scores = pd.DataFrame({"lpo_drivers": obs["rise"], "ifn_i_core": obs["confounded"]})
    caveats = stats.coverage_caveats(SADE_FELDMAN_COVERAGE)
    state_caveats = {"Tpex": caveats["tpex"], "Tex_term": ""}
    state = stats.with_coverage(
        stats.compare_states(obs, scores), caveats, state_caveats=state_caveats
    ).set_index("program")
    assert state.loc["lpo_drivers", "coverage"] == (
        "lpo_drivers: 3 of 16 genes measured, not trusted; "
        "tpex: 5 of 13 up genes measured, not trusted"
    )
    assert state.loc["ifn_i_core", "coverage"] == "tpex: 5 of 13 up genes measured, not trusted"
    response, _ = stats.compare_response(obs, scores)
    response = stats.with_coverage(response, caveats, state_caveats=state_caveats)
    by = response.set_index(["state", "program"])["coverage"]
    assert by[("all_cd8", "ifn_i_core")] == ""
    assert by[("all_cd8", "lpo_drivers")] == "lpo_drivers: 3 of 16 genes measured, not trusted"
    assert (
        by[("Tpex", "ifn_i_core")]
        == by[("exhausted_lineage", "ifn_i_core")]
        == ("tpex: 5 of 13 up genes measured, not trusted")
    )
    assert by[("Tex_term", "ifn_i_core")] == ""
