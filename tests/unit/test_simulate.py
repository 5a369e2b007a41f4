"""texflow.simulation: counts with known truth, checked against that truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr
from texflow import simulation as simulate_module
from texflow.signatures import load_programs
from texflow.simulation import CD8_POPULATIONS, POPULATIONS, PSEUDOTIME_SEGMENTS, simulate

N_CELLS = 3000


@pytest.fixture(scope="module")
def sim() -> ad.AnnData:
    return simulate(n_cells=N_CELLS, seed=1)


@pytest.fixture(scope="module")
def clean(sim) -> ad.AnnData:
    """Healthy singlets, counts normalised to 10,000 and log1p (as the pipeline would)."""
    keep = ~sim.obs["true_doublet"].to_numpy() & ~sim.obs["true_low_quality"].to_numpy()
    cells = sim[keep].copy()
    totals = np.asarray(cells.X.sum(axis=1)).ravel()
    cells.X = sp.csr_matrix(sp.diags(1e4 / totals) @ cells.X).log1p().astype(np.float32)
    return cells


def mean_by_population(adata: ad.AnnData, gene: str) -> pd.Series:
    values = adata[:, gene].X.toarray().ravel()
    return pd.Series(values).groupby(adata.obs["true_population"].to_numpy(), observed=True).mean()


def program_mean(adata: ad.AnnData, program: str) -> np.ndarray:
    members = load_programs(adata.uns["texflow"]["organism"])[program].up
    present = [g for g in members if g in adata.var_names]
    assert len(present) >= 5
    return np.asarray(adata[:, present].X.mean(axis=1)).ravel()


def test_shape_types_and_layers(sim):
    assert sim.shape == (N_CELLS, 2000)
    assert sp.issparse(sim.X) and sim.X.format == "csr" and sim.X.dtype == np.float32
    assert sim.layers["counts"] is not sim.X
    assert (sim.layers["counts"] != sim.X).nnz == 0
    assert np.all(sim.X.data == np.round(sim.X.data)) and sim.X.data.min() >= 1
    assert sim.var_names.is_unique and sim.obs_names.is_unique
    meta = sim.uns["texflow"]
    assert meta["dataset"] == "simulated" and meta["organism"] == "human"
    assert meta["value_type"] == "counts"
    assert {"sources", "versions", "params", "skipped"} <= set(meta)
    assert sim.uns["simulation"]["seed"] == 1
    assert sim.uns["simulation"]["rising_programs"] == {"ifn_i_core": 1.0, "lpo_drivers": 1.0}


def test_same_seed_same_data_other_seed_other_data():
    a = simulate(n_cells=300, seed=7)
    b = simulate(n_cells=300, seed=7)
    c = simulate(n_cells=300, seed=8)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs)
    assert (a.X != c.X).nnz > 0


def test_truth_columns_consistent(sim):
    obs = sim.obs
    for column in ("sample", "patient", "response", "timepoint", "tissue"):
        assert column in obs
    assert set(obs["true_population"].cat.categories) == set(POPULATIONS)
    singlets = obs[~obs["true_doublet"]]
    assert (singlets["true_is_cd8"] == singlets["true_population"].isin(CD8_POPULATIONS)).all()
    non_cd8 = ~singlets["true_population"].isin(CD8_POPULATIONS)
    assert (singlets.loc[non_cd8, "true_state"] == "non_cd8").all()
    assert set(singlets.loc[~non_cd8, "true_state"]) == {
        "naive_like",
        "effector_memory",
        "Tpex",
        "Tex_int",
        "Tex_term",
    }
    # Pseudotime: exactly the exhausted-lineage singlets have one, inside their state's segment.
    has_time = singlets["true_pseudotime"].notna()
    assert (has_time == singlets["true_population"].isin(PSEUDOTIME_SEGMENTS)).all()
    for population, (low, high) in PSEUDOTIME_SEGMENTS.items():
        times = singlets.loc[singlets["true_population"] == population, "true_pseudotime"]
        assert times.between(low, high).mean() > 0.85 and len(times) > 50
        territory = simulate_module.PSEUDOTIME_TERRITORIES[population]
        assert times.between(*territory).all()
    assert obs.loc[obs["true_doublet"], "true_pseudotime"].isna().all()
    # Rates as asked; doublets are never also low quality; two parents from different populations.
    assert obs["true_doublet"].mean() == pytest.approx(0.05, abs=0.002)
    assert obs["true_low_quality"].mean() == pytest.approx(0.05, abs=0.002)
    assert not (obs["true_doublet"] & obs["true_low_quality"]).any()
    parents = obs.loc[obs["true_doublet"], "true_doublet_of"].astype(str).str.split("+")
    assert all(len(p) == 2 and p[0] != p[1] for p in parents)
    # Patients: half non-responders, response constant within a patient.
    per_patient = obs.groupby("patient", observed=True)["response"].agg(lambda r: set(r))
    assert all(len(r) == 1 for r in per_patient)
    assert sum(r == {"non_responder"} for r in per_patient) == 3


def test_markers_follow_biology(clean):
    tcf7 = mean_by_population(clean, "TCF7")
    havcr2 = mean_by_population(clean, "HAVCR2")
    assert tcf7["cd8_tpex"] > 3 * tcf7["cd8_tex_term"]
    assert havcr2["cd8_tex_term"] > 3 * havcr2["cd8_tpex"]
    for gene in ("ENTPD1", "LAYN", "GZMB"):
        assert (
            mean_by_population(clean, gene)["cd8_tex_term"]
            > 2 * mean_by_population(clean, gene)["cd8_tpex"]
        )
    for gene in ("SLAMF6", "CXCR5", "XCL1"):
        assert (
            mean_by_population(clean, gene)["cd8_tpex"]
            > 2 * mean_by_population(clean, gene)["cd8_tex_term"]
        )
    cd8a = mean_by_population(clean, "CD8A")
    for population in ("cd4", "treg", "nk", "myeloid", "b_cell"):
        assert cd8a[population] < 0.1 and cd8a["cd8_tpex"] > 1.0
    cd3e = mean_by_population(clean, "CD3E")
    assert cd3e["nk"] < 0.1 and cd3e["myeloid"] < 0.1 and cd3e["cd4"] > 1.0
    cd4 = mean_by_population(clean, "CD4")
    assert cd4["cd4"] > 1.0 and cd4["cd8_tex_term"] < 0.1
    foxp3 = mean_by_population(clean, "FOXP3")
    assert foxp3["treg"] > 1.0 and foxp3.drop("treg").max() < 0.1
    for gene in ("NKG7", "GNLY", "KLRD1"):
        assert mean_by_population(clean, gene)["nk"] > 1.0
    for gene in ("LYZ", "CD14", "CD68"):
        values = mean_by_population(clean, gene)
        assert values["myeloid"] > 1.0 and values.drop("myeloid").max() < 0.2
    for gene in ("TOX", "PDCD1", "LAG3", "TIGIT"):
        values = mean_by_population(clean, gene)
        assert min(values["cd8_tpex"], values["cd8_tex_term"]) > 2 * values["cd8_naive"]
    assert mean_by_population(clean, "PDCD1")["cd8_naive"] < 0.05
    for gene in ("CCR7", "SELL", "LEF1"):
        values = mean_by_population(clean, gene)
        assert values["cd8_naive"] > 2 * values["cd8_tex_term"]
    for gene in ("GZMK", "CXCR3"):
        values = mean_by_population(clean, gene)
        assert values["cd8_effector_memory"] > values["cd8_naive"] + 0.5


def test_rising_programs_follow_pseudotime_and_flat_ones_do_not(clean):
    lineage = clean[clean.obs["true_pseudotime"].notna()]
    time_ = lineage.obs["true_pseudotime"].to_numpy()
    for program in ("ifn_i_core", "lpo_drivers"):
        rho = spearmanr(program_mean(lineage, program), time_).statistic
        assert rho > 0.3, (program, rho)
    rho_flat = spearmanr(program_mean(lineage, "lpo_suppressors"), time_).statistic
    assert abs(rho_flat) < 0.15
    assert (clean.var["true_rising_log2fc"] > 0).sum() >= 40


def test_no_rising_program_when_none_asked():
    flat = simulate(n_cells=1500, seed=3, rising_programs={}, doublet_rate=0, low_quality_rate=0)
    lineage = flat[flat.obs["true_pseudotime"].notna()]
    totals = np.asarray(lineage.X.sum(axis=1)).ravel()
    lineage = ad.AnnData(
        sp.csr_matrix(sp.diags(1e4 / totals) @ lineage.X).log1p(),
        obs=lineage.obs,
        var=lineage.var,
        uns=lineage.uns,
    )
    rho = spearmanr(program_mean(lineage, "ifn_i_core"), lineage.obs["true_pseudotime"]).statistic
    assert abs(rho) < 0.15


def test_response_effect_only_when_asked():
    def ratio(adata):
        cells = adata[~adata.obs["true_doublet"] & ~adata.obs["true_low_quality"]]
        genes = load_programs("human")["ifn_i_core"].up
        genes = [g for g in genes if g in cells.var_names]
        totals = np.asarray(cells.X.sum(axis=1)).ravel()
        share = np.asarray(cells[:, genes].X.sum(axis=1)).ravel() / totals
        per_patient = pd.Series(share).groupby(cells.obs["patient"].to_numpy()).mean()
        response = cells.obs.groupby("patient", observed=True)["response"].first()
        return (
            per_patient[response == "non_responder"].mean()
            / per_patient[response == "responder"].mean()
        )

    assert ratio(
        simulate(n_cells=1500, seed=4, response_effects={"ifn_i_core": 1.0})
    ) == pytest.approx(2.0, rel=0.2)
    assert ratio(simulate(n_cells=1500, seed=4)) == pytest.approx(1.0, abs=0.15)


def test_batch_strength_separates_patients():
    def patient_spread(adata):
        totals = np.asarray(adata.X.sum(axis=1)).ravel()
        profiles = []
        for patient in adata.obs["patient"].cat.categories:
            cells = (adata.obs["patient"] == patient).to_numpy() & adata.obs["true_population"].eq(
                "cd8_naive"
            ).to_numpy()
            profiles.append(np.asarray(adata.X[cells].sum(axis=0)).ravel() / totals[cells].sum())
        logs = np.log1p(1e4 * np.vstack(profiles))
        return float(logs.std(axis=0).mean())

    kwargs = {"n_cells": 2000, "seed": 5, "doublet_rate": 0, "low_quality_rate": 0}
    assert patient_spread(simulate(batch_strength=1.0, **kwargs)) > 1.3 * patient_spread(
        simulate(**kwargs)
    )


def test_library_sizes_doublets_and_low_quality(sim):
    totals = np.asarray(sim.X.sum(axis=1)).ravel()
    mito = np.asarray(sim[:, sim.var["mt"].to_numpy()].X.sum(axis=1)).ravel() / totals
    doublet = sim.obs["true_doublet"].to_numpy()
    low = sim.obs["true_low_quality"].to_numpy()
    healthy = ~doublet & ~low
    assert np.median(totals[healthy]) == pytest.approx(4000, rel=0.1)
    assert 1.6 < np.median(totals[doublet]) / np.median(totals[healthy]) < 2.6
    assert np.median(totals[low]) < 0.4 * np.median(totals[healthy])
    assert np.median(mito[low]) > 0.2 and np.quantile(mito[healthy], 0.95) < 0.08
    assert np.percentile(mito[low], 10) > np.percentile(mito[healthy], 99)
    # Realistic spread of library sizes (log-normal, sd about 0.35-0.5 in log space).
    assert 0.25 < np.std(np.log(totals[healthy])) < 0.7


def test_sparsity_in_a_realistic_range(sim):
    zero_fraction = 1 - sim.X.nnz / (sim.n_obs * sim.n_vars)
    assert 0.55 < zero_fraction < 0.95


def test_gene_universe_human(sim):
    names = pd.Index(sim.var_names)
    assert names.str.startswith("MT-").sum() == 13
    assert names.str.match(r"^RP[SL]\d").sum() > 50
    assert sim.var["mt"].sum() == 13
    programs = load_programs("human")
    for program in ("ifn_i_core", "lpo_drivers", "lpo_suppressors", "tpex", "tex_term"):
        assert set(programs[program].up) <= set(names)


def test_mouse_symbols():
    mouse = simulate(n_cells=400, organism="mouse", seed=2)
    names = set(mouse.var_names)
    assert {"Cd8a", "Cd8b1", "Cd3e", "Tcf7", "Havcr2", "Tox", "Pdcd1", "Lyz2"} <= names
    assert not {"CD8A", "TCF7", "MT-CO1"} & names
    assert sum(n.startswith("mt-") for n in names) == 13
    assert mouse.uns["texflow"]["organism"] == "mouse"
    assert not any(
        n.isupper() and len(n) > 3 for n in names if not n.startswith("H2-")
    )  # H2-K1 is mouse


def test_population_fractions_and_validation():
    only = simulate(
        n_cells=500, seed=0, population_fractions={"cd8_tpex": 1, "cd8_tex_term": 1}, doublet_rate=0
    )
    assert set(only.obs["true_population"].astype(str)) == {"cd8_tpex", "cd8_tex_term"}
    with pytest.raises(ValueError, match="unknown program"):
        simulate(n_cells=100, rising_programs={"not_a_program": 1.0})
    with pytest.raises(ValueError, match="unknown population"):
        simulate(n_cells=100, population_fractions={"cd9": 1.0})
    with pytest.raises(ValueError, match="n_genes"):
        simulate(n_cells=100, n_genes=50)
    with pytest.raises(ValueError, match="organism"):
        simulate(n_cells=100, organism="zebrafish")


def test_command_line_writes_h5ad(tmp_path):
    out = tmp_path / "sim.h5ad"
    simulate_module.main(
        ["--n-cells", "300", "--organism", "mouse", "--seed", "3", "--out", str(out)]
    )
    adata = ad.read_h5ad(out)
    assert adata.shape == (300, 2000)
    assert adata.uns["simulation"]["seed"] == 3 and "Cd8a" in adata.var_names
    assert not list(tmp_path.glob(".*part"))
