"""texflow.truth: the run's answer beside a simulated dataset's planted truth."""

import numpy as np
import pandas as pd
import pytest
from texflow.errors import InputDataError
from texflow.truth import NON_RESPONDERS_HIGHER, recovery


def _obs():
    n = 12
    source = pd.DataFrame(
        {
            "true_is_cd8": [True] * 8 + [False] * 4,
            "true_doublet": [False] * 7 + [True] + [False] * 4,
            "true_low_quality": False,
            "true_state": [
                "Tpex",
                "Tpex",
                "Tex_term",
                "Tex_term",
                "Tex_term",
                "Tex_int",
                "naive_like",
                "Tex_term",
                "non_cd8",
                "non_cd8",
                "non_cd8",
                "non_cd8",
            ],
            "true_pseudotime": [0.1, 0.2, 0.8, 0.9, 0.95, 0.5, np.nan, np.nan] + [np.nan] * 4,
        },
        index=[f"c{i}" for i in range(n)],
    )
    # kept: the 8 CD8 cells (one a doublet) and one non-CD8 cell
    final = source.iloc[[0, 1, 2, 3, 4, 5, 6, 7, 8]].copy()
    final["cell_state"] = [
        "Tpex",
        "Tex_int",
        "Tex_term",
        "Tex_term",
        "Tex_term",
        "Tex_int",
        "naive_like",
        "Tpex",
        "other_cd8",
    ]
    final["in_lineage"] = [True, True, True, True, True, True, False, True, False]
    final["pseudotime"] = [0.0, 0.3, 0.7, 0.8, 0.9, 0.5, np.nan, 0.2, np.nan]
    final["exhaustion_axis"] = [-1.0, -0.5, 0.5, 0.7, 0.9, 0.1, -2.0, 0.0, 0.0]
    return source, final


def _response(effect_ifn=0.05, q_ifn=0.01, effect_term=0.1, q_term=0.2):
    return pd.DataFrame(
        {
            "state": ["all_cd8", "Tex_term"],
            "program": ["ifn_i_core", "fraction_of_cd8_cells"],
            "effect": [effect_ifn, effect_term],
            "p_adj": [q_ifn, q_term],
            "n_patients": [12, 12],
            "n_responders": [6, 6],
            "n_non_responders": [6, 6],
            "note": ["", ""],
        }
    )


SIMULATION = {
    "response_effects": {"ifn_i_core": 0.5},
    "response_composition": {"cd8_tex_term": 1.0},
    "rising_programs": {"ifn_i_core": 1.0, "lpo_drivers": 1.0},
}
ASSOCIATIONS = pd.DataFrame(
    {
        "program": ["ifn_i_core", "lpo_drivers"],
        "effect": [0.4, -0.2],
        "p_adj": [0.001, 0.01],
        "n_patients": [12, 12],
        "note": ["", ""],
    }
)


def _by_check(table):
    return table.set_index("check")


def test_gate_and_state_calls_are_scored_against_the_truth():
    source, final = _obs()
    table = _by_check(
        recovery(
            source_obs=source,
            final_obs=final,
            simulation=SIMULATION,
            response=_response(),
            associations=ASSOCIATIONS,
        )
    )
    # 9 kept, 7 of them healthy CD8 singlets; 7 healthy CD8 singlets exist
    assert table.loc["CD8 T cells kept: precision", "value"] == pytest.approx(7 / 9, abs=1e-4)
    assert table.loc["CD8 T cells kept: recall", "value"] == pytest.approx(1.0)
    # Tpex called twice: one true Tpex, one doublet (a doublet called Tpex is wrong)
    assert table.loc["Tpex per cell: precision", "value"] == pytest.approx(0.5)
    assert table.loc["Tpex per cell: recall", "value"] == pytest.approx(0.5)
    assert table.loc["Tex_term per cell: recall", "value"] == pytest.approx(1.0)
    assert table.loc["Pseudotime vs true pseudotime", "value"] > 0.9


def test_planted_effects_count_only_at_q_below_alpha_in_the_planted_direction():
    source, final = _obs()
    table = _by_check(
        recovery(
            source_obs=source,
            final_obs=final,
            simulation=SIMULATION,
            response=_response(),
            associations=ASSOCIATIONS,
        )
    )
    ifn = table.loc["ifn_i_core in non-responders (all CD8 cells)"]
    assert ifn["recovered"] is True and NON_RESPONDERS_HIGHER in ifn["found"]
    assert "6 NR vs 6 R" in ifn["found"]
    # q = 0.2: planted but not found
    assert table.loc["Tex_term share of CD8 cells in non-responders", "recovered"] is False
    assert table.loc["ifn_i_core along pseudotime", "recovered"] is True
    # found significant, but falling where it was planted to rise
    assert table.loc["lpo_drivers along pseudotime", "recovered"] is False

    flipped = _by_check(
        recovery(
            source_obs=source,
            final_obs=final,
            simulation=SIMULATION,
            response=_response(effect_ifn=-0.05),
            associations=ASSOCIATIONS,
        )
    )
    assert flipped.loc["ifn_i_core in non-responders (all CD8 cells)", "recovered"] is False


def test_an_untested_planted_effect_is_not_recovered_and_says_why():
    source, final = _obs()
    response = _response(q_ifn=np.nan)
    response.loc[0, "note"] = "too few patients"
    table = _by_check(
        recovery(
            source_obs=source,
            final_obs=final,
            simulation=SIMULATION,
            response=response,
            associations=ASSOCIATIONS,
        )
    )
    row = table.loc["ifn_i_core in non-responders (all CD8 cells)"]
    assert row["recovered"] is False and "not tested: too few patients" in row["found"]


def test_real_data_marked_simulated_is_refused():
    source, final = _obs()
    with pytest.raises(InputDataError, match="simulated: true"):
        recovery(
            source_obs=source.drop(columns="true_state"),
            final_obs=final,
            simulation=SIMULATION,
            response=None,
            associations=None,
            dataset="real",
        )
