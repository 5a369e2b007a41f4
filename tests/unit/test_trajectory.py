"""texflow.trajectory: pseudotime over the exhausted lineage follows the simulated truth, its
root comes from the data, tested programs stay out of the axis, and missing ends are a recorded
skip rather than an error."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from texflow import programs, trajectory

from tests.lineage_data import labelled_cd8


@pytest.fixture(scope="module")
def lineage():
    adata = labelled_cd8(seed=0, n_cells=1200, n_genes=600)
    selected = programs.load_selected_programs(organism="human")
    exclude = programs.program_genes(selected, programs.TESTED_PROGRAMS, var_names=adata.var_names)
    table = trajectory.lineage_pseudotime(adata, exclude_genes=exclude, n_root_checks=5)
    return adata, table, exclude


def test_pseudotime_follows_truth(lineage):
    adata, _, _ = lineage
    inside = adata.obs["in_lineage"].to_numpy()
    expected = adata.obs["state"].isin(["Tpex", "Tex_int", "Tex_term"]).to_numpy()
    np.testing.assert_array_equal(inside, expected)
    pt = adata.obs["pseudotime"].to_numpy()
    assert np.isnan(pt[~inside]).all()
    assert np.isfinite(pt[inside]).all()
    assert pt[inside].min() == pytest.approx(0) and pt[inside].max() == pytest.approx(1)
    rho = stats.spearmanr(pt[inside], adata.obs["true_pseudotime"].to_numpy()[inside]).statistic
    assert rho > 0.7
    by_state = adata.obs[inside].groupby("state", observed=True)["pseudotime"].median()
    assert by_state["Tpex"] < by_state["Tex_int"] < by_state["Tex_term"]


def test_root_is_a_tpex_cell_chosen_from_the_data(lineage):
    adata, table, _ = lineage
    info = adata.uns["texflow"]["trajectory"]
    assert adata.obs.loc[info["root_cell"], "state"] == "Tpex"
    assert info["method"] == "principal_path"
    assert isinstance(info["path_is_minimum_spanning_tree"], bool)
    # the root cell is its cluster's earliest Tpex cell on the path
    root_cluster = adata.obs.loc[info["root_cell"], "cluster"]
    in_cluster = adata.obs[(adata.obs["cluster"] == root_cluster) & (adata.obs["state"] == "Tpex")]
    assert adata.obs.loc[info["root_cell"], "pseudotime"] == in_cluster["pseudotime"].min()
    assert adata.obs.loc[info["root_cell"], "true_pseudotime"] < 0.3
    # root sensitivity: the main root plus 5 others from the same cluster, all agreeing
    assert len(table) == 6 and table["is_main_root"].sum() == 1
    root_cluster = adata.obs.loc[info["root_cell"], "cluster"]
    assert (adata.obs.loc[table["root_cell"], "cluster"] == root_cluster).all()
    assert table["spearman_rho"].min() > 0.8
    assert "trajectory" not in adata.uns["texflow"]["skipped"]


def test_tested_program_genes_are_not_features(lineage):
    adata, _, exclude = lineage
    assert {"ISG15", "MX1", "GPX4", "ACSL4"} <= exclude
    lineage_cells = adata[adata.obs["in_lineage"].to_numpy()].copy()
    features = trajectory.lineage_features(lineage_cells, n_top_genes=1000, exclude_genes=exclude)
    assert features and not set(features) & exclude


def test_without_tex_term_the_stage_is_skipped_not_failed():
    adata = labelled_cd8(seed=1, n_cells=600, n_genes=500)
    adata.obs["state"] = adata.obs["state"].astype(str).replace({"Tex_term": "Tex_int"})
    table = trajectory.lineage_pseudotime(adata)
    reason = adata.uns["texflow"]["skipped"]["trajectory"]
    assert "Tex_term" in reason
    assert adata.obs["pseudotime"].isna().all()
    assert table["note"].iloc[0].startswith("skipped")


def test_lineage_rows_given_without_x_give_the_same_pseudotime(lineage):
    adata, _, exclude = lineage
    bare = adata.copy()
    mask = trajectory.lineage_mask(bare)
    rows = bare.X[mask].copy()
    bare.X = None
    trajectory.lineage_pseudotime(bare, lineage_x=rows, exclude_genes=exclude, n_root_checks=5)
    np.testing.assert_array_equal(
        bare.obs["pseudotime"].to_numpy(), adata.obs["pseudotime"].to_numpy()
    )
    with pytest.raises(ValueError, match="lineage_x"):
        trajectory.lineage_pseudotime(bare, lineage_x=rows[:-1], exclude_genes=exclude)
    with pytest.raises(ValueError, match="no X"):
        trajectory.lineage_pseudotime(bare, exclude_genes=exclude)


def test_per_cell_tpex_without_a_tpex_cluster_give_a_trajectory():
    """Human tumour Tpex seldom form a cluster: with no Tpex *cluster* but Tpex *cells*, the
    lineage and root come from the per-cell calls, and the pseudotime still follows the truth."""
    adata = labelled_cd8(seed=2, n_cells=1200, n_genes=600)
    adata.obs["cell_state"] = adata.obs["state"].astype(str).astype("category")
    adata.obs["cell_state_confidence"] = 0.9
    # the cluster label hides the Tpex: their cells sit in a Tex_int cluster
    adata.obs["state"] = adata.obs["state"].astype(str).replace({"Tpex": "Tex_int"})
    cluster_only = trajectory.skip_reason(adata, state_key="state")
    assert "0 Tpex cluster cells (minimum 5)" in cluster_only, cluster_only
    assert trajectory.skip_reason(adata) == ""
    trajectory.lineage_pseudotime(adata, n_root_checks=3)
    info = adata.uns["texflow"]["trajectory"]
    assert info["state_key"] == "cell_state"
    assert adata.obs.loc[info["root_cell"], "cell_state"] == "Tpex"
    inside = adata.obs["in_lineage"].to_numpy()
    rho = stats.spearmanr(
        adata.obs["pseudotime"][inside], adata.obs["true_pseudotime"][inside]
    ).statistic
    assert rho > 0.7


def test_skip_reason_counts_the_cells_it_found():
    adata = labelled_cd8(seed=0, n_cells=600, n_genes=400)
    adata.obs["cell_state"] = adata.obs["state"].astype(str).replace({"Tpex": "naive_like"})
    reason = trajectory.skip_reason(adata)
    assert reason.startswith("too few cells at an end of the lineage: 0 Tpex cells (minimum 5)")
    assert "Tex_term" in reason.split(";")[1], reason


def test_a_trajectory_needs_enough_cells_at_both_ends():
    """Two Tpex cells are no root to test an order from (Wu's demo had 2): the counts in the
    config decide, and the reason names them."""
    adata = labelled_cd8(seed=0, n_cells=600, n_genes=400)
    states = adata.obs["state"].astype(str)
    tpex = np.flatnonzero(states.to_numpy() == "Tpex")
    states.iloc[tpex[2:]] = "Tex_int"
    adata.obs["cell_state"] = states.to_numpy()
    reason = trajectory.skip_reason(adata)
    assert "2 Tpex cells (minimum 5)" in reason and "Tex_term cells" not in reason, reason
    assert trajectory.skip_reason(adata, min_progenitor_cells=2) == ""
    states.iloc[tpex[1]] = "Tex_int"  # one cell is one cell (Wu's demo: "1 Tpex cell")
    adata.obs["cell_state"] = states.to_numpy()
    assert "1 Tpex cell (minimum 5)" in trajectory.skip_reason(adata)
    n_term = int((states == "Tex_term").sum())
    assert f"{n_term} Tex_term cells (minimum {n_term + 1})" in trajectory.skip_reason(
        adata, min_progenitor_cells=2, min_terminal_cells=n_term + 1
    )


def test_axis_agreement_is_the_rank_correlation_of_the_two_orderings():
    rng = np.random.default_rng(0)
    pt = rng.random(200)
    obs = pd.DataFrame({"exhaustion_axis": pt + rng.normal(0, 0.05, 200)})
    near = trajectory.axis_agreement(obs, pt)
    assert near["axis_n_cells"] == 200 and near["axis_spearman_rho"] > 0.9
    obs["exhaustion_axis"] = rng.random(200)
    assert abs(trajectory.axis_agreement(obs, pt)["axis_spearman_rho"]) < 0.2
    assert trajectory.axis_agreement(obs.drop(columns="exhaustion_axis"), pt) == {}


def test_diffusion_pseudotime_stays_a_method_with_its_root_rule(lineage):
    adata, _, exclude = lineage
    dpt = adata.copy()
    table = trajectory.lineage_pseudotime(dpt, exclude_genes=exclude, method="dpt", n_root_checks=5)
    info = dpt.uns["texflow"]["trajectory"]
    assert info["method"] == "dpt" and "separating_component" in info
    assert dpt.obs.loc[info["root_cell"], "pseudotime"] == pytest.approx(0)
    assert len(table) == 6 and info["state_order_auc"] > 0.9
    inside = dpt.obs["in_lineage"].to_numpy()
    assert not np.allclose(dpt.obs["pseudotime"][inside], adata.obs["pseudotime"][inside])
    with pytest.raises(ValueError, match="principal_path"):
        trajectory.lineage_pseudotime(adata.copy(), method="slingshot")


def test_path_positions_follow_the_path_not_the_distance_from_its_start():
    """A detour: the middle node lies off the straight line from the first to the last, farther
    from the first node than the last is. Distance from the start would put points near the
    middle node after those near the end; the position along the path does not."""
    nodes = np.array([[0.0, 0.0], [3.0, 4.0], [4.0, 0.0]])  # lengths 5 and sqrt(17)
    points = np.array([[-1.0, 0.1], [0.3, 0.5], [3.0, 4.2], [3.6, 2.0], [4.0, 0.1], [4.1, -1.0]])
    position = trajectory.path_positions(points, nodes)
    assert np.all(np.diff(position) > 0)  # in the order of the path
    assert position[0] < 0  # before the first node: extended, not tied at 0
    assert position[-1] > 5 + np.sqrt(17)  # beyond the last node
    assert np.linalg.norm(points[2]) > np.linalg.norm(points[4])  # the detour itself
    np.testing.assert_allclose(trajectory.path_positions(nodes, nodes), [0, 5, 5 + np.sqrt(17)])


def test_path_agrees_with_tree_says_when_the_centroids_would_order_otherwise():
    assert trajectory.path_agrees_with_tree(np.array([[0.0, 0.0], [1.0, 0.2], [2.0, 0.0]]))
    # the middle state far from both ends, the ends close: the tree joins the ends directly
    assert not trajectory.path_agrees_with_tree(np.array([[0.0, 0.0], [1.0, 5.0], [1.0, 0.0]]))
    assert trajectory.path_agrees_with_tree(np.array([[0.0, 0.0], [1.0, 0.0]]))


def test_depth_is_regressed_out_block_by_block_as_in_one_fit():
    """`_regress_out` fits `REGRESS_BLOCK_COLUMNS` columns at a time (its float64 temporaries
    are cells x block, not cells x features): each column keeps its mean, loses its slope on
    depth, and equals one least-squares fit of every column, in float32."""
    from texflow import trajectory

    rng = np.random.default_rng(5)
    matrix = rng.gamma(0.3, 1.0, (2000, 3 * trajectory.REGRESS_BLOCK_COLUMNS + 7))
    matrix = np.where(matrix < 0.5, 0, matrix).astype(np.float32)
    depth = np.log1p(rng.gamma(5, 800, 2000))
    matrix[:, 0] += (depth - depth.mean()).astype(np.float32)  # a column that follows depth
    residuals = trajectory._regress_out(matrix, depth)
    assert residuals.dtype == np.float32 and residuals.shape == matrix.shape
    np.testing.assert_allclose(residuals.mean(axis=0), matrix.mean(axis=0), atol=1e-5)
    centred = depth - depth.mean()
    assert np.abs(centred @ residuals.astype(np.float64)).max() < 1e-2 * np.abs(centred).sum()
    design = np.column_stack([np.ones_like(depth), centred])
    coef, *_ = np.linalg.lstsq(design, matrix, rcond=None)
    np.testing.assert_array_equal(residuals, (matrix - design[:, 1:] @ coef[1:]).astype(np.float32))
