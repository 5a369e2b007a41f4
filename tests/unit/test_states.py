"""State labels on simulated data with known truth, flags, coverage, and the stage script."""

import runpy
import warnings
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from texflow.states import StatesParams, label_states

from tests.states_data import leiden_clusters, majority_state, oracle_clusters, simulated_cd8

ROOT = Path(__file__).resolve().parents[2]
SWAPS = ({"Tpex", "Tex_term"},)


def _label(adata, organism, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tables = label_states(adata, organism=organism, params=StatesParams(**params)).tables
    return tables["cluster_states"], tables["cluster_program_scores"], tables["signature_coverage"]


@pytest.mark.parametrize("organism", ["human", "mouse"])
def test_perfect_clusters_get_their_true_state(organism):
    adata = simulated_cd8(organism, seed=3)
    oracle_clusters(adata)
    table, summary, coverage = _label(adata, organism, n_marker_genes=10)
    table = table.set_index("cluster")
    assert (table["state"] == table.index).all(), table[["state", "confidence", "second_best"]]
    assert (table["confidence"] >= StatesParams().min_margin).all()
    assert (adata.obs["state"].astype(str) == adata.obs["true_state"].astype(str)).all()
    # the gate works: naive cells share TCF7/SELL/CCR7/LEF1 with Tpex (tpex z > 0) yet stay naive
    assert table.loc["naive_like", "z_tpex"] > 0 and not table.loc["naive_like", "exhausted_gate"]
    assert table.loc["Tpex", "exhausted_gate"] and table.loc["Tex_term", "exhausted_gate"]
    # the evidence names the expected markers
    tcf7 = "TCF7" if organism == "human" else "Tcf7"
    havcr2 = "HAVCR2" if organism == "human" else "Havcr2"
    assert tcf7 in table.loc["Tpex", "markers_up"] and havcr2 in table.loc["Tpex", "markers_down"]
    assert (
        havcr2 in table.loc["Tex_term", "markers_up"]
        and tcf7 in table.loc["Tex_term", "markers_down"]
    )
    # per-cell exhaustion axis orders the states
    axis = adata.obs.groupby("true_state", observed=True)["exhaustion_axis"].median()
    assert axis["Tpex"] < axis["Tex_int"] < axis["Tex_term"]
    assert set(summary["program"]) >= {"tpex", "tex_term", "isg", "cycling"}
    assert (
        coverage.set_index("program").loc[["tpex", "tex_term", "exhausted_gate"], "trusted"].all()
    )


def _check_leiden(organism, seed, batch_strength):
    adata = simulated_cd8(organism, seed=seed, batch_strength=batch_strength)
    leiden_clusters(adata, batch_key="patient" if batch_strength else None)
    table, _, _ = _label(adata, organism)
    states = table.set_index("cluster")["state"]
    majority = majority_state(adata)
    cell_cluster = adata.obs["cluster"].astype(str)
    true_state = adata.obs["true_state"].astype(str)
    correct = (adata.obs["state"].astype(str) == true_state).mean()
    purity = (
        cell_cluster.map(majority) == true_state
    ).mean()  # the best any cluster labelling can do
    label_matches_majority = (cell_cluster.map(states) == cell_cluster.map(majority)).mean()
    swaps = [c for c in states.index if {states[c], majority[c]} in SWAPS]
    print(
        f"{organism} seed {seed} batch {batch_strength}: {len(states)} clusters, "
        f"cells in clusters labelled with their true state {correct:.3f} "
        f"(cluster purity {purity:.3f}), "
        f"clusters labelled as their majority state {label_matches_majority:.3f}"
    )
    assert not swaps, f"Tpex/Tex_term swapped in clusters {swaps}"
    assert label_matches_majority >= 0.9
    assert correct >= purity - 0.05
    assert (
        correct >= 0.9
    )  # the bar: >= 90% of cells in clusters labelled with their true state
    return correct


def test_leiden_clusters_human():
    _check_leiden("human", 0, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("organism", ["human", "mouse"])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("batch_strength", [0.0, 0.8])
def test_leiden_clusters_seeds_batches(organism, seed, batch_strength):
    _check_leiden(organism, seed, batch_strength)


def test_isg_and_cycling_flag_without_replacing_the_label():
    adata = simulated_cd8("human", seed=3)
    oracle_clusters(adata)
    tpex = (adata.obs["true_state"] == "Tpex").to_numpy()
    term = (adata.obs["true_state"] == "Tex_term").to_numpy()
    X = adata.X.tolil()
    rng = np.random.default_rng(0)
    for genes, cells in (
        ("ISG15 IFI6 IFI44L MX1 IFIT1 IFIT3 RSAD2", tpex),
        ("MKI67 TOP2A CDK1 TYMS PCNA UBE2C", term),
    ):
        for gene in genes.split():
            column = adata.var_names.get_loc(gene)
            for i in np.flatnonzero(cells):
                X[i, column] = 3.0 + rng.random()
    adata.X = sp.csr_matrix(X)
    table = _label(adata, "human")[0].set_index("cluster")
    assert table.loc["Tpex", "state"] == "Tpex" and table.loc["Tpex", "isg_high"]
    assert table.loc["Tex_term", "state"] == "Tex_term" and table.loc["Tex_term", "cycling"]
    assert table["isg_high"].sum() == 1 and table["cycling"].sum() == 1


def test_missing_markers_reported_and_counts_give_the_same_labels():
    adata = simulated_cd8("mouse", seed=4)
    oracle_clusters(adata)
    drop = {"Tcf7", "Slamf6", "Cxcr5", "Id3", "Xcl1", "Gng4", "Cd200", "Tnfrsf4"}
    adata = adata[:, [g for g in adata.var_names if g not in drop]].copy()
    with pytest.warns(UserWarning, match="tpex"):
        result = label_states(adata, organism="mouse")
    table, coverage = result.tables["cluster_states"], result.tables["signature_coverage"]
    coverage = coverage.set_index("program")
    assert not coverage.loc["tpex", "trusted"] and "Tcf7" in coverage.loc["tpex", "missing"]
    assert "tpex" in table["untrusted_programs"].iloc[0]
    states = table.set_index("cluster")["state"]
    assert states["Tex_term"] == "Tex_term" and states["Tpex"] != "Tex_term"
    counts = adata.copy()
    counts.X = counts.layers["counts"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table_counts = label_states(counts, organism="mouse").tables["cluster_states"]
    pd.testing.assert_series_equal(table["state"], table_counts["state"])
    np.testing.assert_allclose(table["confidence"], table_counts["confidence"])


def test_ambiguous_when_margin_not_reached_and_missing_cluster_key():
    adata = simulated_cd8("human", seed=3)
    oracle_clusters(adata)
    table = _label(adata, "human", min_margin=50.0)[0]
    assert (table["state"] == "ambiguous").all() and (table["best_state"] != "").all()
    del adata.obs["cluster"]
    from texflow.errors import InputDataError

    with pytest.raises(InputDataError, match="cluster"):
        label_states(adata, organism="human")


def test_stage_script_writes_its_outputs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "workflow/scripts"))
    adata = simulated_cd8("human", seed=3, n_cells=800)
    oracle_clusters(adata)
    adata.uns["texflow"] = {
        "dataset": "sim",
        "organism": "human",
        "value_type": "counts",
        "skipped": {},
        "params": {},
    }
    source = tmp_path / "clustered.h5ad"
    adata.write_h5ad(source)
    out = {
        "annotations": tmp_path / "annotations/states.h5ad",
        "cluster_states": tmp_path / "tables/cluster_states.tsv",
        "coverage": tmp_path / "tables/signature_coverage.tsv",
        "summary": tmp_path / "tables/cluster_program_scores.tsv",
        "figure": tmp_path / "figures/state_markers_dotplot.png",
    }
    snakemake = SimpleNamespace(
        input=SimpleNamespace(h5ad=str(source)),
        output=SimpleNamespace(**{k: str(v) for k, v in out.items()}),
        params=SimpleNamespace(states={"min_margin": 0.2}, extra_file=""),
        wildcards=SimpleNamespace(dataset="sim"),
        log=[str(tmp_path / "states.log")],
    )
    runpy.run_path(str(ROOT / "workflow/scripts/states.py"), init_globals={"snakemake": snakemake})
    for path in out.values():
        assert path.stat().st_size > 0
    result = ad.read_h5ad(out["annotations"])  # what the stage added, no matrix
    assert result.X is None and not result.layers
    assert {"state", "state_confidence", "exhaustion_axis", "score_tpex", "score_isg"} <= set(
        result.obs
    )
    assert "cluster" not in result.obs  # the cluster stage's, unchanged: not written again
    table = pd.read_csv(out["cluster_states"], sep="\t")
    assert list(table.columns[:7]) == [
        "cluster",
        "n_cells",
        "state",
        "confidence",
        "second_best",
        "best_state",
        "exhausted_gate",
    ]
    assert result.uns["texflow"]["params"]["states"]["min_margin"] == 0.2


@pytest.mark.parametrize("organism", ["human", "mouse"])
def test_cells_get_their_true_state_one_by_one(organism):
    adata = simulated_cd8(organism, seed=1)
    leiden_clusters(adata)
    table, _, _ = _label(adata, organism)
    truth, called = adata.obs["true_state"].astype(str), adata.obs["cell_state"].astype(str)
    for state, minimum in (("Tpex", 0.8), ("Tex_term", 0.9)):
        hit = ((truth == state) & (called == state)).sum()
        assert hit / (called == state).sum() >= minimum, (state, "precision")
        assert hit / (truth == state).sum() >= minimum, (state, "recall")
    assert {"cell_state_confidence", "exhaustion_axis"} <= set(adata.obs)
    # the smoothed axis orders the exhausted states
    axis = adata.obs.groupby("true_state", observed=True)["exhaustion_axis"].median()
    assert axis["Tpex"] < axis["Tex_int"] < axis["Tex_term"]
    assert table["agrees_with_cells"].all(), table[["cluster", "state", "cell_state_note"]]
    assert (table["cell_majority_fraction"] > 0.5).all()


def test_a_cluster_that_disagrees_with_its_cells_says_so():
    from texflow.states import cluster_agreement

    cells = pd.Series(["Tpex"] * 3 + ["Tex_term"] * 7)
    clusters = pd.Series(["0"] * 10)
    out = cluster_agreement(clusters, cells, pd.Series({"0": "Tpex"})).iloc[0]
    assert out["cell_majority_state"] == "Tex_term" and not out["agrees_with_cells"]
    assert "Tex_term 70%" in out["cell_state_note"] and out["cell_majority_fraction"] == 0.7


def _scores_frame(rows: dict[str, list[float]]) -> pd.DataFrame:
    from texflow.states import SCORED_PROGRAMS

    n = len(next(iter(rows.values())))
    frame = pd.DataFrame({f"score_{p}": np.full(n, 0.1) for p in SCORED_PROGRAMS})
    for program, values in rows.items():
        frame[f"score_{program}"] = values
    frame.index = [f"c{i}" for i in range(n)]
    return frame


def test_a_rare_tpex_cell_among_tex_term_neighbours_keeps_its_own_call():
    """Smoothing over ten Tex_term neighbours would erase the one Tpex-like cell; with
    keep_own_call it stays Tpex (and says on which scores), without it it does not."""
    from texflow.states import SCORED_PROGRAMS, StatesParams, cell_states

    n_term, n_naive = 30, 30
    tpex = [0.05] * n_term + [0.6] + [0.05] * n_naive
    term = [0.6] * n_term + [0.05] + [0.05] * n_naive
    gate = [0.6] * n_term + [0.5] + [0.05] * n_naive
    naive = [0.05] * n_term + [0.05] + [0.6] * n_naive
    obs = _scores_frame(
        {"tpex": tpex, "tex_term": term, "exhausted_gate": gate, "naive_like": naive}
    )
    # the Tpex-like cell (index n_term) sits in the Tex_term neighbourhood of a 1-D embedding
    position = np.r_[np.arange(n_term), n_term / 2 + 0.1, 100 + np.arange(n_naive)]
    programs = list(SCORED_PROGRAMS)
    calls = {}
    for keep in ((), ("Tpex",)):
        adata = ad.AnnData(obs=obs.copy())
        adata.obsm["X_pca"] = np.c_[position, np.zeros_like(position)]
        params = StatesParams(keep_own_call=keep)
        cell_states(adata, programs=programs, params=params, usable=set(programs))
        calls[keep] = adata.obs
    lone = f"c{n_term}"
    assert calls[()].loc[lone, "cell_state"] != "Tpex"  # smoothing erased it
    assert calls[("Tpex",)].loc[lone, "cell_state"] == "Tpex"
    assert calls[("Tpex",)].loc[lone, "cell_state_basis"] == "own scores"
    # every other cell keeps its smoothed call
    others = calls[()].index != lone
    assert (calls[()].loc[others, "cell_state"] == calls[("Tpex",)].loc[others, "cell_state"]).all()
    assert (calls[("Tpex",)].loc[others, "cell_state_basis"] == "kNN-smoothed").all()
