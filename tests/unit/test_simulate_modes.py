"""texflow.simulation: the rare-Tpex preset and the planted composition difference by response."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from texflow import simulation as simulate_module
from texflow.signatures import load_programs
from texflow.simulation import CD8_POPULATIONS, RARE_TPEX, RARE_TPEX_FRACTIONS, simulate


def fraction_by_patient(adata, population: str) -> pd.DataFrame:
    """Per patient: response and the share of `population` among its singlet cells."""
    obs = adata.obs[~adata.obs["true_doublet"].to_numpy()]
    share = (obs["true_population"] == population).groupby(obs["patient"], observed=True).mean()
    response = obs.groupby("patient", observed=True)["response"].first().astype(str)
    return pd.DataFrame({"share": share, "response": response})


def test_response_composition_shifts_fractions_in_the_planted_direction():
    kwargs = {"n_cells": 4000, "n_genes": 600, "n_patients": 10, "seed": 11, "doublet_rate": 0.0}
    planted = simulate(response_composition={"cd8_tex_term": 1.0, "cd8_naive": -1.0}, **kwargs)
    plain = simulate(**kwargs)
    # the same patients are non-responders (the draw of patients comes before the shift)
    assert (
        planted.uns["simulation"]["non_responder_patients"]
        == plain.uns["simulation"]["non_responder_patients"]
    )
    for population, direction in (("cd8_tex_term", 1), ("cd8_naive", -1)):
        shifted = fraction_by_patient(planted, population).groupby("response")["share"].mean()
        base = fraction_by_patient(plain, population).groupby("response")["share"].mean()
        log2_ratio = np.log2(shifted["non_responder"] / shifted["responder"])
        log2_base = np.log2(base["non_responder"] / base["responder"])
        # renormalising takes back part of a +1 / -1 shift (the other shares move the other way)
        assert direction * (log2_ratio - log2_base) > 0.5, (population, log2_ratio, log2_base)
    # responders are untouched: their fractions are the same draw in both data sets
    responders = fraction_by_patient(planted, "cd8_tex_term")["response"] == "responder"
    assert responders.sum() == 5
    assert planted.uns["simulation"]["response_composition"] == {
        "cd8_tex_term": 1.0,
        "cd8_naive": -1.0,
    }
    assert plain.uns["simulation"]["response_composition"] == {}


def test_no_response_composition_is_the_default_data():
    kwargs = {"n_cells": 300, "n_genes": 600, "seed": 3}
    a = simulate(response_composition={}, **kwargs)
    b = simulate(**kwargs)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)


def test_response_composition_validation():
    with pytest.raises(ValueError, match="unknown population"):
        simulate(n_cells=100, n_genes=600, response_composition={"cd9": 1.0})
    with pytest.raises(ValueError, match="finite"):
        simulate(n_cells=100, n_genes=600, response_composition={"cd8_tpex": float("inf")})


def test_rare_tpex_preset_gives_two_to_five_percent_tpex_among_cd8_cells():
    cd8_fractions = {p: v for p, v in RARE_TPEX_FRACTIONS.items() if p in CD8_POPULATIONS}
    assert RARE_TPEX_FRACTIONS["cd8_tpex"] / sum(cd8_fractions.values()) == pytest.approx(0.03)
    assert sum(RARE_TPEX_FRACTIONS.values()) == pytest.approx(1.0)
    # the non-CD8 populations and the other CD8 states' proportions are the default ones
    default = simulate_module.DEFAULT_POPULATION_FRACTIONS
    for population in set(default) - CD8_POPULATIONS:
        assert RARE_TPEX_FRACTIONS[population] == default[population]
    ratio = RARE_TPEX_FRACTIONS["cd8_tex_term"] / RARE_TPEX_FRACTIONS["cd8_naive"]
    assert ratio == pytest.approx(default["cd8_tex_term"] / default["cd8_naive"], rel=1e-3)
    for seed in (0, 1, 2):
        adata = simulate(n_cells=3000, n_genes=600, seed=seed, **RARE_TPEX)
        singlets = adata.obs[~adata.obs["true_doublet"].to_numpy()]
        cd8 = singlets[singlets["true_is_cd8"].to_numpy()]
        share = float((cd8["true_state"] == "Tpex").mean())
        assert 0.02 <= share <= 0.05, share
        assert (cd8["true_state"] == "Tpex").sum() >= 40  # enough for a trajectory's root


def test_command_line_rare_tpex_and_response_composition(tmp_path):
    out = tmp_path / "sim.h5ad"
    simulate_module.main(
        [
            "--n-cells", "400", "--n-genes", "600", "--seed", "2", "--out", str(out),
            "--rare-tpex", "--response-composition", "cd8_tex_term=1.5",
        ]
    )  # fmt: skip
    adata = ad.read_h5ad(out)
    record = adata.uns["simulation"]
    assert record["response_composition"] == {"cd8_tex_term": 1.5}
    assert record["composition_concentration"] == RARE_TPEX["composition_concentration"]
    assert record["population_fractions"]["cd8_tpex"] == pytest.approx(
        RARE_TPEX_FRACTIONS["cd8_tpex"]
    )
    with pytest.raises(SystemExit, match="POPULATION=LOG2FC"):
        simulate_module.main(["--out", str(out), "--response-composition", "cd8_tpex"])


def test_no_patient_programs_is_the_default_data():
    kwargs = {"n_cells": 300, "n_genes": 600, "seed": 3}
    a = simulate(patient_programs={}, **kwargs)
    b = simulate(**kwargs)
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert "patient_programs" not in b.uns["simulation"]


def test_patient_programs_offset_a_program_per_patient_and_keep_the_cells():
    kwargs = {"n_cells": 2000, "n_genes": 600, "n_patients": 8, "seed": 5, "doublet_rate": 0.0}
    plain = simulate(**kwargs)
    varied = simulate(patient_programs={"ifn_i_core": 1.0}, **kwargs)
    # the same cells, populations, patients and libraries: only the program's rates move
    assert varied.obs.equals(plain.obs)
    offsets = varied.uns["simulation"]["patient_program_log2_offsets"]["ifn_i_core"]
    assert varied.uns["simulation"]["patient_programs"] == {"ifn_i_core": 1.0}
    assert len(offsets) == 8 and np.std(list(offsets.values())) > 0.3
    program = load_programs("human")["ifn_i_core"]
    ifn = [g for g in program.up if g in set(plain.var_names)]
    assert ifn
    patient = plain.obs["patient"].astype(str).to_numpy()
    totals = {}
    for name, data in (("plain", plain), ("varied", varied)):
        x = np.asarray(data[:, ifn].X.sum(axis=1)).ravel()
        totals[name] = pd.Series(x).groupby(patient).mean()
    log2_ratio = np.log2(totals["varied"] / totals["plain"])
    expected = pd.Series(offsets)[log2_ratio.index]
    assert np.corrcoef(log2_ratio, expected)[0, 1] > 0.95
    with pytest.raises(ValueError, match=">= 0"):
        simulate(n_cells=100, n_genes=600, patient_programs={"ifn_i_core": -1.0})
