"""texflow.programs: a program made to rise along the simulated trajectory is found in every
seed; outputs (cell table, trends, summary, figures) are complete; a dataset without a
trajectory or without response labels says so."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from texflow import programs, stats, trajectory

from tests.lineage_data import labelled_cd8

FAST = dict(n_bootstrap=20, n_permutations=1000, n_grid=20)


def staged(seed, **simulation):
    """Simulated CD8 cells through the trajectory stage, plus the selected programs."""
    adata = labelled_cd8(seed=seed, n_cells=1200, n_genes=600, **simulation)
    selected = programs.load_selected_programs(organism="human")
    exclude = programs.program_genes(selected, programs.TESTED_PROGRAMS, var_names=adata.var_names)
    trajectory.lineage_pseudotime(adata, exclude_genes=exclude, n_root_checks=0, seed=seed)
    return adata, selected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rising_program_is_found_in_every_seed(seed):
    adata, selected = staged(seed, rising_programs={"ifn_i_core": 1.5})
    tables = programs.analyse(
        adata,
        programs=selected,
        program_names=programs.DEFAULT_PROGRAMS,
        options=programs.AnalyseOptions(seed=seed, **FAST),
    ).tables
    row = tables["associations"].set_index("program").loc["ifn_i_core"]
    assert row["effect"] > 0.2
    assert row["p_adj"] < 0.01
    assert row["unit"] == "patients" and row["n_patients"] == 6


@pytest.fixture(scope="module")
def analysed():
    adata, selected = staged(
        5, rising_programs={"ifn_i_core": 1.5}, response_effects={"lpo_drivers": 1.5}
    )
    tables = programs.analyse(
        adata,
        programs=selected,
        program_names=programs.DEFAULT_PROGRAMS,
        options=programs.AnalyseOptions(seed=0, **FAST),
    ).tables
    return adata, tables


def test_outputs_are_complete(analysed, tmp_path):
    adata, tables = analysed
    cells = tables["cells"]
    assert len(cells) == adata.n_obs
    expected = [
        "cell_id",
        "sample",
        "patient",
        "response",
        "cluster",
        "state",
        "state_confidence",
        "cell_state",
        "cell_state_confidence",
        "cell_state_basis",
        "exhaustion_axis",
        "pseudotime",
    ]
    assert list(cells.columns[: len(expected)]) == expected
    for name in [
        "ifn_i_core",
        "ifn_alpha_hallmark",
        "lpo_drivers",
        "lpo_suppressors",
        "lpo_signed",
        "tpex",
        "tex_term",
    ]:
        assert f"score_{name}" in cells
    np.testing.assert_allclose(
        cells["score_lpo_signed"], cells["score_lpo_drivers"] - cells["score_lpo_suppressors"]
    )
    assert adata.uns["texflow"]["scoring"]["depth_equalised"]
    trends = tables["trends"]
    assert set(trends["program"]) >= {"ifn_i_core", "lpo_signed"}
    assert (trends["lower"] <= trends["fit"] + 1e-9).all()
    assert (trends["fit"] <= trends["upper"] + 1e-9).all()
    ifn = trends[trends["program"] == "ifn_i_core"]
    assert ifn["fit"].iloc[-1] > ifn["fit"].iloc[0]  # it rises
    for table in ("associations", "axis_associations", "state_comparison", "response_comparison"):
        assert {"program", "effect", "n_patients", "n_cells", "p_value", "p_adj", "unit"} <= set(
            tables[table].columns
        ), table
    coverage = tables["program_coverage"]
    assert set(coverage["program"]) >= set(programs.DEFAULT_PROGRAMS)
    summary = programs.build_summary(
        adata,
        associations=tables["associations"],
        state_comparison=tables["state_comparison"],
        response_comparison=tables["response_comparison"],
        response_skipped="",
    )
    text = json.dumps(summary)  # JSON-safe, no NaN
    assert "NaN" not in text
    assert summary["association_with_pseudotime"]["ifn_i_core"]["n_patients"] == 6
    paths = programs.draw_trends(adata, trends, tables["associations"], tmp_path)
    assert (tmp_path / "trend_ifn_i_core.png").stat().st_size > 10_000
    assert len(paths) == 7


def test_summary_is_json_after_an_h5ad_round_trip_of_the_trajectory_record(tmp_path):
    """A list in uns (the trajectory's path of states) comes back from the h5ad as an array;
    summary.json must still be written (the demo's programs rule failed on it)."""
    adata, _ = staged(5)
    adata.uns["texflow"].setdefault("trajectory", {})["centroid_path"] = ["Tpex", "Tex_term"]
    adata.write_h5ad(tmp_path / "t.h5ad")
    adata = ad.read_h5ad(tmp_path / "t.h5ad")
    assert isinstance(adata.uns["texflow"]["trajectory"]["centroid_path"], np.ndarray)
    empty = pd.DataFrame()
    summary = programs.build_summary(
        adata,
        associations=empty,
        state_comparison=empty,
        response_comparison=empty,
        response_skipped="no labels",
    )
    assert json.loads(json.dumps(summary))["trajectory"]["centroid_path"] == ["Tpex", "Tex_term"]


def test_every_table_carries_the_coverage_of_the_untrusted_programs():
    adata, selected = staged(5)
    drivers = [g for g in selected["lpo_drivers"].up if g in adata.var_names]
    adata = adata[:, ~adata.var_names.isin(drivers[1:])].copy()  # keep one LPO driver
    tables = programs.analyse(
        adata,
        programs=selected,
        program_names=programs.DEFAULT_PROGRAMS,
        options=programs.AnalyseOptions(seed=0, **FAST),
    ).tables
    caveats = stats.coverage_caveats(
        tables["program_coverage"], combined={"lpo_signed": programs.LPO_PARTS}
    )
    n_up = len(selected["lpo_drivers"].up)
    assert caveats["lpo_drivers"] == f"lpo_drivers: 1 of {n_up} genes measured, not trusted"
    for name in ("associations", "state_comparison", "response_comparison"):
        table = tables[name]
        for program in ("lpo_drivers", "lpo_signed"):
            rows = table.loc[table["program"] == program, stats.COVERAGE_COLUMN]
            assert len(rows) and rows.str.contains(caveats["lpo_drivers"], regex=False).all(), (
                name,
                program,
            )
        rows = table.loc[table["program"] == "ifn_i_core", stats.COVERAGE_COLUMN]
        assert len(rows) and not rows.str.contains("lpo_drivers").any(), name


def test_responder_effect_is_found_on_patient_means(analysed):
    _, tables = analysed
    response = tables["response_comparison"]
    row = response[
        (response["state"] == "exhausted_lineage") & (response["program"] == "lpo_drivers")
    ].iloc[0]
    assert row["effect"] > 0  # higher in non-responders, as simulated
    assert row["cliffs_delta"] == 1.0
    assert row["n_responders"] == 3 and row["n_non_responders"] == 3


def test_no_trajectory_and_no_response_labels_are_reported(tmp_path):
    adata = labelled_cd8(seed=2, n_cells=600, n_genes=500)
    adata.obs["state"] = adata.obs["state"].astype(str).replace({"Tpex": "naive_like"})
    adata.obs["response"] = pd.NA
    trajectory.lineage_pseudotime(adata)
    selected = programs.load_selected_programs(organism="human")
    result = programs.analyse(
        adata,
        programs=selected,
        program_names=programs.DEFAULT_PROGRAMS,
        options=programs.AnalyseOptions(**FAST),
    )
    tables, skipped = result.tables, adata.uns["texflow"]["skipped"]
    # the stage's notes: what it did not run itself (the trajectory's note is that stage's)
    assert result.notes == {
        step: skipped[step] for step in ("trends", "associations", "response_comparison")
    }
    assert "Tpex" in skipped["trajectory"] and "associations" in skipped
    assert tables["associations"]["note"].iloc[0].startswith("skipped")
    assert tables["response_comparison"]["test"].iloc[0] == "skipped"
    assert "no response labels" in skipped["response_comparison"]
    paths = programs.draw_trends(adata, tables["trends"], tables["associations"], tmp_path)
    assert all(p.exists() for p in paths)


def test_pseudotime_that_does_not_order_the_states_is_not_tested():
    """A pseudotime with Tpex and Tex_term cells shuffled along it is not the axis under test."""
    adata, selected = staged(1, rising_programs={"ifn_i_core": 1.5})
    info = adata.uns["texflow"]["trajectory"]
    assert info["orders_states"] and info["state_order_auc"] > 0.9  # the simulated lineage
    lineage = adata.obs["pseudotime"].notna().to_numpy()
    rng = np.random.default_rng(0)
    adata.obs.loc[lineage, "pseudotime"] = rng.permutation(
        adata.obs.loc[lineage, "pseudotime"].to_numpy()
    )
    states = adata.obs["state"].astype(str).to_numpy()
    info["state_order_auc"] = trajectory.state_order_auc(
        adata.obs["pseudotime"].to_numpy(dtype=float),
        is_early=states == "Tpex",
        is_late=states == "Tex_term",
    )
    assert 0.4 < info["state_order_auc"] < 0.6
    info["orders_states"] = info["state_order_auc"] >= trajectory.MIN_STATE_ORDER_AUC
    tables = programs.analyse(
        adata,
        programs=selected,
        program_names=programs.DEFAULT_PROGRAMS,
        options=programs.AnalyseOptions(seed=1, **FAST),
    ).tables
    skipped = adata.uns["texflow"]["skipped"]
    assert "(Tpex, Tex_term) cell pairs in that order" in skipped["associations"]
    assert tables["associations"]["test"].iloc[0] == "skipped"
    assert tables["associations"]["p_value"].isna().all()


def test_extra_programs_are_scored(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("my_cytotoxic: [GZMB, PRF1, NKG7, GZMA]\n")
    selected = programs.load_selected_programs(organism="human", extra_file=str(extra))
    assert "my_cytotoxic" in selected and "ifn_i_core" in selected
    adata = labelled_cd8(seed=3, n_cells=400, n_genes=500)
    coverage = programs.score_programs(adata, selected)
    assert "score_my_cytotoxic" in adata.obs
    assert "my_cytotoxic" in set(coverage["program"])


def test_bootstrap_refit_is_pygams_fit():
    """The closed-form refit used for the bootstrap band equals pygam's own fit with the same lam
    and knots (a resample that keeps the extreme pseudotimes has the same knots)."""
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 1, 600))
    y = np.sin(3 * x) + rng.normal(0, 0.3, x.size)
    grid = np.linspace(0, 1, 25)
    gam = programs._gam(8).gridsearch(x[:, None], y, progress=False, lam=np.logspace(-2, 4, 9))
    np.testing.assert_allclose(
        programs.penalised_refit(gam, x[:, None], y, grid=grid),
        gam.predict(grid[:, None]),
        atol=1e-8,
    )
    rows = np.concatenate([[0, x.size - 1], rng.choice(x.size, x.size)])
    from pygam import LinearGAM, s

    pygam_fit = LinearGAM(s(0, n_splines=8, lam=float(np.ravel(gam.lam)[0]))).fit(
        x[rows, None], y[rows]
    )
    np.testing.assert_allclose(
        programs.penalised_refit(gam, x[rows, None], y[rows], grid=grid),
        pygam_fit.predict(grid[:, None]),
        atol=1e-6,
    )


def test_trend_band_is_the_band_of_refits_on_resampled_rows():
    """trend() sums per-patient B'B and B'y; that is the refit of each resample's rows."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 900)
    groups = np.repeat(np.array(["p1", "p2", "p3", "p4", "p5", "p6"]), 150)
    y = np.cos(2 * x) + rng.normal(0, 0.4, x.size) + (groups == "p3") * 0.5
    grid = np.linspace(0, 1, 15)
    table = programs.trend(
        x, y, groups, grid=grid, n_splines=8, n_bootstrap=30, rng=np.random.default_rng(7)
    )
    gam = programs._gam(8).gridsearch(x[:, None], y, progress=False, lam=np.logspace(-2, 4, 9))
    draw, unique = np.random.default_rng(7), pd.unique(groups)
    boots = []
    for _ in range(30):
        rows = np.concatenate(
            [np.flatnonzero(groups == g) for g in draw.choice(unique, unique.size)]
        )
        boots.append(programs.penalised_refit(gam, x[rows, None], y[rows], grid=grid))
    lower, upper = np.percentile(boots, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(table["lower"], lower, atol=1e-8)
    np.testing.assert_allclose(table["upper"], upper, atol=1e-8)
    assert (table["n_bootstrap_ok"] == 30).all()


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_downsampled_counts_are_scanpys(dtype):
    """texflow's parallel downsampling draws what scanpy's per-cell loop draws, cell for cell."""
    import anndata as ad
    import scanpy as sc
    from scipy import sparse
    from texflow import features

    rng = np.random.default_rng(7)
    depth = rng.lognormal(6, 0.6, 400)[:, None]
    counts = rng.poisson(depth * rng.dirichlet(np.full(300, 0.3), 400)).astype(dtype)
    counts[:5] = 0  # cells without counts stay so
    matrix = sparse.csr_matrix(counts)
    target = int(np.quantile(counts.sum(axis=1), 0.3))
    expected = ad.AnnData(matrix.copy())
    sc.pp.downsample_counts(expected, counts_per_cell=target, random_state=11)
    ours = features.downsample_counts(matrix.copy(), counts_per_cell=target, seed=11)
    assert ours.dtype == dtype and not (ours.data == 0).any()
    np.testing.assert_array_equal(ours.toarray(), expected.X.toarray())
    totals = np.asarray(ours.sum(axis=1)).ravel()
    original = counts.sum(axis=1)
    assert (totals == np.minimum(original, target)).all()
    with pytest.raises(TypeError, match="needs a CSR matrix"):
        features.downsample_counts(matrix.tocsc(), counts_per_cell=target)


def test_genes_detected_counts_positive_values_per_cell():
    """programs.genes_detected (the tests' covariate) is ``(matrix > 0).sum(axis=1)``: stored
    zeros and negative values (log data) are not detected; counts, X or a dense matrix."""
    import anndata as ad
    from scipy import sparse
    from texflow import programs

    rng = np.random.default_rng(3)
    values = rng.poisson(0.7, (50, 40)).astype(np.float32) * rng.choice([-1, 1], (50, 40))
    values[7] = 0  # a cell with nothing detected
    matrix = sparse.csr_matrix(values)
    matrix.data[:10] = 0  # stored zeros
    expected = np.asarray((matrix > 0).sum(axis=1)).ravel().astype(float)
    with_counts = ad.AnnData(np.zeros((50, 40), dtype=np.float32))
    with_counts.layers["counts"] = matrix
    for adata in (with_counts, ad.AnnData(matrix), ad.AnnData(matrix.toarray())):
        detected = programs.genes_detected(adata)
        assert detected.dtype == float
        np.testing.assert_array_equal(detected, expected)


def test_scores_of_the_states_stage_are_reused_not_overwritten():
    adata = ad.AnnData(
        X=sp.csr_matrix(np.random.default_rng(0).poisson(1.0, (40, 30)).astype(np.float32)),
        var=pd.DataFrame(index=[f"G{i}" for i in range(30)]),
    )
    adata.obs["score_tpex"] = np.linspace(0, 1, 40)
    adata.uns["ucell"] = {"tpex": {"used": "G1", "missing": "", "max_rank": 1500}}
    before = adata.obs["score_tpex"].copy()
    from texflow.signatures import GeneProgram

    chosen = {
        "tpex": GeneProgram("tpex", ("G1", "G2")),
        "other": GeneProgram("other", ("G3", "G4")),
    }
    programs.score_programs(adata, chosen, equalise_depth=False)
    assert (adata.obs["score_tpex"] == before).all()
    assert "score_other" in adata.obs
    assert adata.uns["texflow"]["scoring"]["reused_from_states"] == ["tpex"]


def test_programs_are_tested_along_the_exhaustion_axis_but_not_the_axis_programs(analysed):
    """The second ordering: IFN-I, planted to rise along the true pseudotime, rises along the
    exhaustion axis of the lineage cells; tpex and tex_term (the axis itself) are not tested,
    and the Hallmark IFN-alpha list, which shares SELL with the Tpex program, says so."""
    adata, tables = analysed
    # this fixture was labelled per cluster, before per-cell states: no axis, and it says so
    axis = tables["axis_associations"].set_index("program")
    for circular in ("tpex", "tex_term"):  # the axis itself: said, not tested
        assert axis.loc[circular, "test"] == "not_testable"
        assert "a score would be correlated with itself" in axis.loc[circular, "note"]
    assert (axis["ordering"] == "exhaustion_axis").all()
    tested = axis.drop(index=["tpex", "tex_term"])
    assert tested["note"].str.contains("no obs['exhaustion_axis']", regex=False).all()
    # with the axis the states stage writes (here unsmoothed: Tex-term minus Tpex score)
    obs = adata.obs.assign(
        cell_state=adata.obs["state"],
        exhaustion_axis=adata.obs["score_tex_term"] - adata.obs["score_tpex"],
    )
    names = ["ifn_i_core", "ifn_alpha_hallmark", "lpo_drivers", "tpex", "tex_term"]
    scores = obs[[f"score_{n}" for n in names]].set_axis(names, axis=1)
    selected = programs.load_selected_programs(organism="human")
    table = stats.axis_associations(
        obs, scores, shared_genes=programs.axis_shared_genes(selected), n_permutations=500
    ).set_index("program")
    assert list(table.index) == [
        "ifn_i_core",
        "ifn_alpha_hallmark",
        "lpo_drivers",
        "tpex",
        "tex_term",
    ]
    assert table.loc[["tpex", "tex_term"], "effect"].isna().all()
    ifn = table.loc["ifn_i_core"]
    assert ifn["effect"] > 0 and ifn["p_adj"] < 0.05 and ifn["n_patients"] >= 3
    assert "SELL" in table.loc["ifn_alpha_hallmark", "note"]
    assert "axis programs" not in table.loc["ifn_i_core", "note"]


def test_axis_associations_run_without_a_trajectory():
    """A lineage with no Tpex (no root, no pseudotime) still has an exhaustion axis."""
    from texflow import stats

    rng = np.random.default_rng(0)
    n = 120
    obs = pd.DataFrame(
        {
            "patient": np.repeat(["P1", "P2", "P3", "P4"], n // 4),
            "cell_state": rng.choice(["Tex_int", "Tex_term", "naive_like"], n),
            "exhaustion_axis": rng.normal(size=n),
            "pseudotime": np.nan,
        }
    )
    lineage = obs["cell_state"] != "naive_like"
    rising = np.where(lineage, obs["exhaustion_axis"], 0) + rng.normal(scale=0.3, size=n)
    scores = pd.DataFrame(
        {"ifn_i_core": rising, "flat": rng.normal(size=n), "tpex": rng.normal(size=n)}
    )
    table = stats.axis_associations(obs, scores, min_cells_per_patient=10, n_permutations=500)
    table = table.set_index("program")
    assert list(table.index) == ["ifn_i_core", "flat", "tpex"]
    assert table.loc["tpex", "test"] == "not_testable"
    assert table.loc["ifn_i_core", "effect"] > 0.5 and table.loc["ifn_i_core", "p_adj"] < 0.05
    assert table.loc["flat", "p_adj"] > 0.05
    assert table.loc["ifn_i_core", "n_cells"] == int(lineage.sum())
