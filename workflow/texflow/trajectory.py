"""Pseudotime over the exhausted CD8 lineage (Tpex -> Tex_int -> Tex_term).

The orderings are built so that the programs tested along them cannot shape them: highly
variable genes are recomputed on the lineage cells only, and every gene of the excluded
programs (by default IFN-I and LPO) is removed before PCA, the kNN graph and the diffusion map.

The lineage is the set of cells the states stage calls Tpex, Tex_int or Tex_term one by one
(``obs["cell_state"]``, kNN-smoothed; the cluster label ``obs["state"]`` only for data labelled
before per-cell states existed), whatever their cluster: human tumour Tpex seldom form a
cluster of their own.

Two methods (``method``; `lineage_pseudotime`):

- ``principal_path`` (default): each cell's position along the path through the centroids of
  the lineage's states, in their order, in the PCA space of the lineage's features (TSCAN's
  cluster-centre path, Ji & Ji 2016; Slingshot's initial curve, Street et al. 2018). It follows
  the lineage through Tex_int even where Tex_int is not on the straight line from Tpex to
  Tex_term, and no single far cell sets its scale. Whether the centroids' minimum spanning tree
  agrees with the configured order is recorded. Root sensitivity: the path restarted from
  single Tpex cells of the most confident Tpex cluster instead of the Tpex centroid.
- ``dpt``: diffusion pseudotime (Haghverdi et al. 2016, Nat Methods; scanpy ``tl.diffmap`` +
  ``tl.dpt``) from a root chosen from the data: among the diffusion components, the one that
  best separates Tpex from Tex_term cells (largest |AUC - 0.5|) is oriented so that Tpex is
  low, and the root is the cell with its lowest value among the Tpex cells of the cluster
  whose Tpex cells are the most confident (the "extreme cell" rule of Haghverdi et al. 2016,
  restricted to the cluster the states stage trusts most). Root sensitivity: DPT rerun from
  other cells of that cluster.

Why the path is the default, measured: benchmarks/README.md ("A pseudotime that follows the
lineage").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import stats
from scipy.sparse.csgraph import minimum_spanning_tree

from ._numba_cache import cache_umap_kernels
from .contract import (
    CELL_STATE_KEY,
    CLUSTER,
    CONFIDENCE_KEYS,
    EXHAUSTED_STATES,
    EXHAUSTION_AXIS_KEY,
    IS_MAIN_ROOT,
    N_CELLS,
    NOTE,
    PSEUDOTIME,
    ROOT_CELL,
    SKIPPED_PREFIX,
    SPEARMAN_RHO,
    STATE_CONFIDENCE,
    TEX_TERM,
    TOTAL_COUNTS,
    TPEX,
    lineage_state_key,
)
from .embedding import pca
from .features import cells_detected_per_gene, seurat_highly_variable
from .stage import texflow_uns
from .utils import knn_transformer

logger = logging.getLogger(__name__)

EARLY_STATE, LATE_STATE = TPEX, TEX_TERM
#: Median Spearman rho between the main and the alternative-root pseudotimes below which the
#: ordering is called root-dependent (a warning and a note next to every association).
MIN_STABLE_RHO = 0.8
#: Share of (Tpex, Tex_term) cell pairs the pseudotime must put in that order (its AUC) to be
#: taken as the Tpex -> Tex-term axis; below it, programs are not tested along it. Measured with
#: benchmarks/validate_programs.py (40 seeds, flat programs): the two seeds whose pseudotime
#: ordered the states worst (AUC 0.64 and 0.83; the other 38 >= 0.94) held 7 of the 15 false
#: calls, their pseudotime following library size (rho 0.68) rather than the true one (0.19).
MIN_STATE_ORDER_AUC = 0.9


def lineage_mask(
    adata: ad.AnnData, *, state_key: str | None = None, states: Sequence[str] = EXHAUSTED_STATES
) -> np.ndarray:
    """Boolean mask of the cells whose state is one of `states` (the exhausted lineage)."""
    state_key = state_key or lineage_state_key(adata.obs)
    if state_key not in adata.obs:
        return np.zeros(adata.n_obs, dtype=bool)
    return adata.obs[state_key].astype(str).isin(list(states)).to_numpy()


def skip_reason(
    adata: ad.AnnData,
    *,
    state_key: str | None = None,
    states: Sequence[str] = EXHAUSTED_STATES,
    min_cells: int = 20,
    min_progenitor_cells: int = 5,
    min_terminal_cells: int = 5,
) -> str:
    """Why no trajectory can be built on `adata` ("" when it can).

    A trajectory from Tpex to Tex_term needs both ends: at least `min_progenitor_cells` Tpex
    cells (the root and the alternative roots of the sensitivity check are drawn among them)
    and `min_terminal_cells` Tex_term cells (they orient the axis and test its order), wherever
    those cells sit, in a cluster of their own or not. The reason gives the counts.
    """
    state_key = state_key or lineage_state_key(adata.obs)
    if state_key not in adata.obs:
        return f"no obs[{state_key!r}] column: the states stage did not label cells"
    labels = adata.obs[state_key].astype(str)
    unit = "cell" if state_key == CELL_STATE_KEY else "cluster cell"
    n_cells = {s: int((labels == s).sum()) for s in {*states, EARLY_STATE, LATE_STATE}}
    counts = ", ".join(f"{n_cells[s]} {s}" for s in states)
    short = [
        f"{n_cells[s]} {s} {unit}{'' if n_cells[s] == 1 else 's'} (minimum {minimum})"
        for s, minimum in ((EARLY_STATE, min_progenitor_cells), (LATE_STATE, min_terminal_cells))
        if n_cells[s] < minimum
    ]
    if short:
        return (
            f"too few cells at an end of the lineage: {' and '.join(short)}; {unit} calls in "
            f"the lineage: {counts}. A {EARLY_STATE} -> {LATE_STATE} trajectory needs both ends"
        )
    n_lineage = int(labels.isin(list(states)).sum())
    if n_lineage < min_cells:
        return f"only {n_lineage} cells in the exhausted lineage (minimum {min_cells}; {counts})"
    return ""


def lineage_features(
    lineage: ad.AnnData, *, n_top_genes: int, exclude_genes: Collection[str]
) -> list[str]:
    """Highly variable genes of the lineage cells, minus `exclude_genes`.

    HVGs are recomputed on the lineage (not reused from the whole dataset) so the axis follows
    variation inside the exhausted lineage; the ``seurat`` flavour works on log-normalised X
    whatever the original value type (counts, TPM). Excluded genes are dropped *before* the top
    `n_top_genes` are taken, so the feature count stays as configured.
    """
    excluded = lineage.var_names.isin(list(exclude_genes))
    # genes never detected in the lineage carry no information and break HVG binning; a mask
    # bins without them and without copying the columns (the column copy and scanpy's expm1
    # copy were two of the trajectory stage's 4.57 GB at 100k cells; measured)
    genes = (cells_detected_per_gene(lineage.X) > 0) & ~excluded
    n_top = int(min(n_top_genes, genes.sum()))
    picked = seurat_highly_variable(lineage.X, n_top_genes=n_top, genes=genes)
    return lineage.var_names[picked].tolist()


#: Keywords of `lineage_pseudotime` that the config's ``trajectory`` section gives by name.
CONFIG_OPTIONS = (
    "method",
    "n_top_genes",
    "n_pcs",
    "n_neighbors",
    "n_dcs",
    "n_root_checks",
    "min_cells",
    "min_progenitor_cells",
    "min_terminal_cells",
    "regress_depth",
    "seed",
)


def options_from_config(params: Mapping) -> dict:
    """`lineage_pseudotime` keywords from the config's ``trajectory`` section."""
    return {"states": params["lineage_states"], **{name: params[name] for name in CONFIG_OPTIONS}}


def _lineage_cells(adata: ad.AnnData, mask: np.ndarray, x=None) -> ad.AnnData:
    """X (or `x`, X's rows already read), obs, the counts layer and texflow's record of the
    lineage cells (not the embeddings and graphs of every cell, which ``adata[mask].copy()``
    would copy too)."""
    if x is None:
        if adata.X is None:
            raise ValueError(
                "lineage_pseudotime: adata has no X; pass the lineage rows as lineage_x"
            )
        x = adata.X[mask]
    elif x.shape != (int(mask.sum()), adata.n_vars):
        raise ValueError(
            f"lineage_x is {x.shape}; "
            f"expected {(int(mask.sum()), adata.n_vars)} (lineage cells x genes)"
        )
    layers = {"counts": adata.layers["counts"][mask]} if "counts" in adata.layers else {}
    return ad.AnnData(
        X=x,
        obs=adata.obs[mask].copy(),
        var=pd.DataFrame(index=adata.var_names),
        layers=layers,
        uns={"texflow": adata.uns.get("texflow", {})},
    )


def _depth(adata: ad.AnnData) -> np.ndarray:
    """Total counts per cell: from ``layers["counts"]``, else (count data read without its
    layers) the QC stage's ``obs["total_counts"]`` of the same raw counts; genes detected
    (X > 0) for other value types."""
    if "counts" in adata.layers:
        return np.asarray(adata.layers["counts"].sum(axis=1)).ravel().astype(float)
    value_type = adata.uns.get("texflow", {}).get("value_type")
    if value_type == "counts" and TOTAL_COUNTS in adata.obs:
        return adata.obs[TOTAL_COUNTS].to_numpy(dtype=float)
    return np.asarray((adata.X > 0).sum(axis=1)).ravel().astype(float)


#: Columns regressed at a time by `_regress_out`: its float64 temporaries are cells x this
#: (at 1M simulated cells, ~360k lineage cells x 1,000 features: 4 float64 copies of the whole
#: matrix were ~12 GB; in blocks of 128 columns, 0.4 GB each).
REGRESS_BLOCK_COLUMNS = 128


def _regress_out(matrix: np.ndarray, covariate: np.ndarray) -> np.ndarray:
    """Residuals of every column of `matrix` on [1, covariate] (least squares, float64), mean
    kept, as float32 (the embedding's dtype), `REGRESS_BLOCK_COLUMNS` columns at a time: each
    column's fit is its own, so only the last bits of float64 differ from one call on every
    column (LAPACK's blocking), which the float32 result rounds away but for rare values one
    float32 step apart (measured on the demos and the benchmark: see benchmarks/README.md)."""
    design = np.column_stack([np.ones_like(covariate), covariate - covariate.mean()])
    residuals = np.empty(matrix.shape, dtype=np.float32)
    for start in range(0, matrix.shape[1], REGRESS_BLOCK_COLUMNS):
        block = matrix[:, start : start + REGRESS_BLOCK_COLUMNS]
        coef, *_ = np.linalg.lstsq(design, block, rcond=None)
        residuals[:, start : start + REGRESS_BLOCK_COLUMNS] = block - design[:, 1:] @ coef[1:]
    return residuals


def _best_separating_component(
    dcs: np.ndarray, is_early: np.ndarray, is_late: np.ndarray
) -> tuple[int, float]:
    """Index (>= 1) and signed AUC of the diffusion component best separating early from late.

    Column 0 of scanpy's X_diffmap is the stationary solution and carries no information.
    The AUC is P(late > early) on that component: > 0.5 means late cells sit high.
    """
    best, best_auc = 1, 0.5
    for k in range(1, dcs.shape[1]):
        auc = state_order_auc(dcs[:, k], is_early=is_early, is_late=is_late)
        if abs(auc - 0.5) > abs(best_auc - 0.5):
            best, best_auc = k, auc
    return best, best_auc


def _root_cluster(lineage: ad.AnnData, *, state_key: str, cluster_key: str, confidence_key: str):
    """The Tpex cluster with the highest mean state confidence (ties: the larger cluster)."""
    obs = lineage.obs
    tpex = obs[obs[state_key].astype(str) == EARLY_STATE]
    if cluster_key not in obs:
        return None, tpex.index
    conf = (
        tpex[confidence_key].astype(float)
        if confidence_key in tpex
        else pd.Series(1.0, index=tpex.index)
    )
    table = (
        pd.DataFrame({CLUSTER: tpex[cluster_key].astype(str), "conf": conf})
        .groupby(CLUSTER)
        .agg(conf=("conf", "mean"), n=("conf", "size"))
        .sort_values(["conf", "n"], ascending=False)
    )
    cluster = table.index[0]
    return cluster, tpex.index[tpex[cluster_key].astype(str) == cluster]


def _dpt_from(lineage: ad.AnnData, iroot: int, n_dcs: int) -> np.ndarray:
    lineage.uns["iroot"] = int(iroot)
    sc.tl.dpt(lineage, n_dcs=n_dcs)
    pt = lineage.obs["dpt_pseudotime"].to_numpy(dtype=float).copy()
    pt[~np.isfinite(pt)] = np.nan  # cells unreachable from the root (disconnected graph)
    return pt


def lineage_embedding(
    lineage: ad.AnnData,
    *,
    features: Sequence[str],
    keep_obs: Sequence[str],
    n_pcs: int,
    n_neighbors: int,
    n_dcs: int,
    regress_depth: bool,
    seed: int,
) -> ad.AnnData:
    """The space every ordering of the lineage is built in: `features` of the lineage cells
    (depth regressed out with `regress_depth`), scaled, PCA, kNN graph and diffusion map.

    Returns a new AnnData of the lineage cells with the scaled features as X, the `keep_obs`
    columns present in ``lineage.obs``, ``obsm["X_pca"]``, the kNN graph (``obsp``) and
    ``obsm["X_diffmap"]`` (Haghverdi et al. 2016; component 0 is the stationary one).
    """
    matrix = lineage[:, list(features)].X
    # dense on purpose: scaling zero-centres (lineage cells x <= n_top_genes float32 is small)
    matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    if regress_depth:
        matrix = _regress_out(matrix, np.log1p(_depth(lineage)))
    kept = [key for key in keep_obs if key in lineage.obs]
    work = ad.AnnData(X=matrix.astype(np.float32, copy=False), obs=lineage.obs[kept].copy())
    sc.pp.scale(work, max_value=10)
    n_comps = int(max(2, min(n_pcs, work.n_obs - 1, work.n_vars - 1)))
    pca(work, n_comps=n_comps, mask_var=None)
    cache_umap_kernels()
    sc.pp.neighbors(
        work,
        n_neighbors=int(min(n_neighbors, work.n_obs - 1)),
        n_pcs=n_comps,
        transformer=knn_transformer(work.n_obs),
        random_state=seed,
    )
    sc.tl.diffmap(work, n_comps=int(max(3, min(n_dcs, work.n_obs - 2))))
    return work


def path_positions(points: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Position of each point's projection on the polyline through `nodes`, as arc length.

    Each point goes to its nearest segment (the projection of principal curves, Hastie &
    Stuetzle 1989, and of TSCAN's cluster-centre path, Ji & Ji 2016); the two end segments are
    extended beyond their end nodes, so points past an end keep their order instead of tying
    at it. Arc length runs from the first node (0) to the last (the path's length); points
    before the first node are negative.
    """
    segments = np.diff(nodes, axis=0)
    lengths = np.linalg.norm(segments, axis=1)
    starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    best = np.full(len(points), np.inf)
    position = np.zeros(len(points))
    last = len(segments) - 1
    for k, (node, segment, length) in enumerate(zip(nodes[:-1], segments, lengths, strict=True)):
        if length == 0:
            continue
        u = (points - node) @ segment / length**2
        u = np.clip(u, -np.inf if k == 0 else 0.0, np.inf if k == last else 1.0)
        distance = np.linalg.norm(points - node - u[:, None] * segment, axis=1)
        closer = distance < best
        best[closer] = distance[closer]
        position[closer] = starts[k] + u[closer] * length
    return position


def _path_nodes(
    pcs: np.ndarray, labels: np.ndarray, states: Sequence[str], start: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Centroids of the lineage states present, in the lineage's order; `start` in place of
    the first state's centroid (the root-sensitivity check)."""
    present = [state for state in states if (labels == state).any()]
    nodes = np.vstack([pcs[labels == state].mean(axis=0) for state in present])
    if start is not None:
        nodes[0] = start
    return nodes, present


def path_agrees_with_tree(nodes: np.ndarray) -> bool:
    """Whether the path through `nodes` (in order) is the minimum spanning tree of the nodes,
    as TSCAN and Slingshot would infer the lineage from the state centroids."""
    if len(nodes) < 3:
        return True
    distances = np.linalg.norm(nodes[:, None] - nodes[None], axis=2)
    tree = minimum_spanning_tree(distances).toarray() > 0
    edges = {frozenset(map(int, edge)) for edge in zip(*np.nonzero(tree), strict=True)}
    return edges == {frozenset((k, k + 1)) for k in range(len(nodes) - 1)}


def principal_path_pseudotime(
    work: ad.AnnData, *, state_key: str, states: Sequence[str], start: np.ndarray | None = None
) -> np.ndarray:
    """Pseudotime of the lineage cells along the path through their states' centroids in PCA
    space, in the lineage's order (Tpex -> Tex_int -> Tex_term), scaled to [0, 1].

    The path follows the states one after the other, wherever they sit: unlike a distance from
    the root (DPT), it does not put a state that lies off the straight line from Tpex to
    Tex_term (the transitory Tex_int, effector-like with CX3CR1 and cytotoxic genes; Beltra et
    al. 2020, Immunity 52:825) beyond the terminal state. This is the piecewise-linear curve
    through cluster centres of TSCAN (Ji & Ji 2016, Nucleic Acids Res 44:e117) and the initial
    curve of Slingshot (Street et al. 2018, BMC Genomics 19:477), with the lineage's order
    given (its states' biology) rather than inferred; `path_agrees_with_tree` says whether the
    centroids' minimum spanning tree would have inferred the same order.
    """
    pcs = work.obsm["X_pca"]
    nodes, _ = _path_nodes(pcs, work.obs[state_key].astype(str).to_numpy(), states, start)
    position = path_positions(pcs, nodes)
    span = position.max() - position.min()
    return (position - position.min()) / span if span > 0 else np.zeros_like(position)


def _orient(pseudotime: np.ndarray, *, is_early: np.ndarray, is_late: np.ndarray) -> bool:
    """Whether the late state's median pseudotime is below the early state's (then reverse)."""
    flipped = bool(np.nanmedian(pseudotime[is_late]) < np.nanmedian(pseudotime[is_early]))
    if flipped:
        logger.warning(
            "trajectory: %s median pseudotime (%.3f) < %s (%.3f); pseudotime reversed so %s is "
            "late -- inspect the trajectory figures",
            LATE_STATE,
            np.nanmedian(pseudotime[is_late]),
            EARLY_STATE,
            np.nanmedian(pseudotime[is_early]),
            LATE_STATE,
        )
    return flipped


def _oriented_with_sensitivity(
    order: Callable[[int | None], np.ndarray],
    *,
    work: ad.AnnData,
    state_key: str,
    candidates: np.ndarray,
    main_root: int | None,
    n_root_checks: int,
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame, bool, int]:
    """The main ordering ``order(main_root)`` oriented Tpex -> Tex_term, and its root-sensitivity
    table: ``order(pos)`` from random other `candidates`, oriented the same way.

    With `main_root` None the main ordering has no root cell (the path starts at a centroid);
    the root cell recorded is then the candidate earliest on it. Returns the pseudotime, the
    table, whether it was reversed and the root cell's position.
    """
    labels = work.obs[state_key].astype(str).to_numpy()
    pseudotime = order(main_root)
    flipped = _orient(pseudotime, is_early=labels == EARLY_STATE, is_late=labels == LATE_STATE)
    if flipped:
        pseudotime = 1.0 - pseudotime
    if main_root is None:
        main_root = int(candidates[np.argmin(pseudotime[candidates])])

    def rerun(pos: int) -> np.ndarray:
        pt = order(pos)
        return 1.0 - pt if flipped else pt

    sensitivity = root_sensitivity(
        work,
        main=pseudotime,
        candidates=candidates,
        main_root=main_root,
        n_checks=n_root_checks,
        rerun=rerun,
        seed=seed,
    )
    return pseudotime, sensitivity, flipped, main_root


def _skipped(uns: dict, reason: str) -> pd.DataFrame:
    logger.warning("trajectory skipped: %s", reason)
    uns["skipped"]["trajectory"] = reason
    return pd.DataFrame(
        [
            {
                ROOT_CELL: "",
                IS_MAIN_ROOT: False,
                SPEARMAN_RHO: np.nan,
                N_CELLS: 0,
                NOTE: f"{SKIPPED_PREFIX}{reason}",
            }
        ]
    )


def _order_dpt(
    work: ad.AnnData, *, state_key: str, root_cells: pd.Index, n_root_checks: int, seed: int
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """DPT from the root cell, oriented Tpex -> Tex_term, with its root-sensitivity table and
    what the record says about the root. The root: the lowest cell of the diffusion component
    that best separates Tpex from Tex_term (oriented Tpex-low) among `root_cells`."""
    labels = work.obs[state_key].astype(str).to_numpy()
    is_early, is_late = labels == EARLY_STATE, labels == LATE_STATE
    dcs = work.obsm["X_diffmap"]
    component, auc = _best_separating_component(dcs, is_early, is_late)
    oriented = (1.0 if auc >= 0.5 else -1.0) * dcs[:, component]
    candidates = work.obs_names.get_indexer(root_cells)
    n_dcs = dcs.shape[1]
    pseudotime, sensitivity, flipped, iroot = _oriented_with_sensitivity(
        lambda pos: _dpt_from(work, pos, n_dcs),
        work=work,
        state_key=state_key,
        candidates=candidates,
        main_root=int(candidates[np.argmin(oriented[candidates])]),
        n_root_checks=n_root_checks,
        seed=seed,
    )
    _dpt_from(work, iroot, n_dcs)
    record = {
        "root_cell": str(work.obs_names[iroot]),
        "root_rule": (
            f"lowest cell of the {EARLY_STATE}-vs-{LATE_STATE} separating diffusion component "
            f"in the most confident {EARLY_STATE} cluster"
        ),
        "separating_component": int(component),
        "separating_auc": float(max(auc, 1 - auc)),
        "reversed": flipped,
    }
    return pseudotime, sensitivity, record


def _order_principal_path(
    work: ad.AnnData,
    *,
    state_key: str,
    states: Sequence[str],
    root_cells: pd.Index,
    n_root_checks: int,
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Pseudotime along the path through the states' centroids (`principal_path_pseudotime`),
    its root-sensitivity table (the path restarted from single cells of the root cluster
    instead of the Tpex centroid) and what the record says about it."""
    labels = work.obs[state_key].astype(str).to_numpy()
    pcs = work.obsm["X_pca"]
    # the path starts at the centroid of every Tpex cell (Slingshot's start cluster): with
    # rare Tpex, the most confident cluster may hold one or two of them; the alternative roots
    # restart it from single cells of that cluster
    pseudotime, sensitivity, flipped, iroot = _oriented_with_sensitivity(
        lambda pos: principal_path_pseudotime(
            work, state_key=state_key, states=states, start=None if pos is None else pcs[pos]
        ),
        work=work,
        state_key=state_key,
        candidates=work.obs_names.get_indexer(root_cells),
        main_root=None,
        n_root_checks=n_root_checks,
        seed=seed,
    )
    nodes, present = _path_nodes(pcs, labels, states)
    agrees = path_agrees_with_tree(nodes)
    if not agrees:
        logger.warning(
            "trajectory: the minimum spanning tree of the state centroids is not the path %s; "
            "the pseudotime follows the configured order -- inspect the trajectory figures",
            " -> ".join(present),
        )
    record = {
        "root_cell": str(work.obs_names[iroot]),
        "root_rule": (
            f"path through the centroids of {' -> '.join(present)} cells in PCA space; the "
            f"root cell is the earliest {EARLY_STATE} cell of the most confident {EARLY_STATE} "
            f"cluster; alternative roots restart the path from other cells of that cluster"
        ),
        "path_states": present,
        "path_is_minimum_spanning_tree": agrees,
        "reversed": flipped,
    }
    return pseudotime, sensitivity, record


def _checked_features(
    lineage: ad.AnnData, *, n_top_genes: int, exclude_genes: Collection[str]
) -> list[str]:
    """`lineage_features`, checked to hold none of `exclude_genes`, and logged."""
    features = lineage_features(lineage, n_top_genes=n_top_genes, exclude_genes=exclude_genes)
    leaked = set(features) & set(exclude_genes)
    assert not leaked, f"excluded genes among trajectory features: {sorted(leaked)[:5]}"
    logger.info(
        "trajectory: %d lineage cells, %d features (%d program genes excluded)",
        lineage.n_obs,
        len(features),
        len(set(exclude_genes) & set(lineage.var_names)),
    )
    return features


def _summary(labels: pd.Series, pseudotime: np.ndarray, sensitivity: pd.DataFrame) -> dict:
    """What the record says about any ordering: cells, medians of the two ends, state order
    (AUC) and the root-sensitivity correlations."""
    labels = labels.astype(str).to_numpy()
    is_early, is_late = labels == EARLY_STATE, labels == LATE_STATE
    return {
        "n_lineage_cells": int(labels.size),
        "n_unreachable_cells": int(np.isnan(pseudotime).sum()),
        "median_pseudotime_early": float(np.nanmedian(pseudotime[is_early])),
        "median_pseudotime_late": float(np.nanmedian(pseudotime[is_late])),
        "root_sensitivity_min_rho": float(sensitivity[SPEARMAN_RHO].min()),
        "root_sensitivity_median_rho": float(sensitivity[SPEARMAN_RHO].median()),
        "state_order_auc": state_order_auc(pseudotime, is_early=is_early, is_late=is_late),
    }


def _check_order_and_root(record: dict, sensitivity: pd.DataFrame) -> None:
    """Record whether the pseudotime orders the states and is stable across roots; warn if not."""
    record["orders_states"] = bool(record["state_order_auc"] >= MIN_STATE_ORDER_AUC)
    if not record["orders_states"]:
        logger.warning(
            "trajectory: pseudotime puts only %.0f%% of (%s, %s) cell pairs in that order "
            "(< %.0f%%): it is not taken as the %s -> %s axis, programs are not tested along it",
            100 * record["state_order_auc"],
            EARLY_STATE,
            LATE_STATE,
            100 * MIN_STATE_ORDER_AUC,
            EARLY_STATE,
            LATE_STATE,
        )
    alternatives = sensitivity.loc[~sensitivity[IS_MAIN_ROOT], SPEARMAN_RHO]
    record["root_stable"] = bool(alternatives.empty or alternatives.median() >= MIN_STABLE_RHO)
    if not record["root_stable"]:
        logger.warning(
            "trajectory: pseudotime depends on the root (median Spearman rho %.2f < %.2f over "
            "%d alternative roots): treat trends along it with caution",
            alternatives.median(),
            MIN_STABLE_RHO,
            alternatives.size,
        )


METHODS = ("principal_path", "dpt")


def lineage_pseudotime(
    adata: ad.AnnData,
    *,
    lineage_x=None,
    exclude_genes: Collection[str] = (),
    states: Sequence[str] = EXHAUSTED_STATES,
    state_key: str | None = None,
    cluster_key: str = "cluster",
    confidence_key: str | None = None,
    method: str = "principal_path",
    n_top_genes: int = 1000,
    n_pcs: int = 20,
    n_neighbors: int = 15,
    n_dcs: int = 10,
    n_root_checks: int = 10,
    min_cells: int = 20,
    min_progenitor_cells: int = 5,
    min_terminal_cells: int = 5,
    regress_depth: bool = True,
    seed: int = 0,
) -> pd.DataFrame:
    """Pseudotime over the exhausted lineage, with a root-sensitivity check.

    Parameters
    ----------
    adata
        CD8 cells after the states stage (``obs["cell_state"]`` or ``obs["state"]``).
    lineage_x
        The rows of X of the lineage cells (`lineage_mask`), when `adata` was read without X
        (`texflow.utils.read_h5ad(x=False)`, `read_rows`): the stage then never holds the
        matrix of every CD8 cell.
    exclude_genes
        Genes kept out of the features (the programs tested along the pseudotime).
    states
        The lineage's states in their order, early to late (the path's order).
    state_key, cluster_key, confidence_key
        obs columns of the per-cell (or cluster) states, the clusters and the state confidence.
    method
        ``"principal_path"``: along the path through the states' centroids in PCA space
        (`principal_path_pseudotime`); ``"dpt"``: diffusion pseudotime from the root cell
        (Haghverdi et al. 2016; scanpy ``tl.dpt``).
    n_top_genes, n_pcs, n_neighbors, n_dcs
        Lineage HVGs, principal components, kNN neighbours and diffusion components.
    n_root_checks
        Alternative roots (random cells of the root cluster) of the root-sensitivity check.
    min_cells, min_progenitor_cells, min_terminal_cells
        Fewest lineage, Tpex and Tex_term cells for a trajectory (`skip_reason`).
    regress_depth
        Regress the log sequencing depth of each cell (total counts, or genes detected for
        non-count data) out of the features before PCA. Measured on simulated data with flat
        IFN-I/LPO genes (benchmarks/validate_programs.py): without it, pseudotime correlated
        with library size (Spearman 0.44 in seed 13) and flat programs were called associated
        with pseudotime in 8.5 % of program-seeds, all patients agreeing in sign.
    seed
        Seed of PCA, the kNN graph and the alternative roots.

    Writes
    ------
    ``obs["in_lineage"]`` (bool), ``obs["pseudotime"]`` (float in [0, 1], NaN outside the
    lineage or everywhere when skipped), ``obsm["X_diffmap_lineage"]`` (NaN outside),
    ``uns["texflow"]["trajectory"]`` (method, root cell, root cluster, root rule, feature
    count, orientation, state order, root stability, agreement with the exhaustion axis),
    ``uns["texflow"]["params"]["trajectory"]``, and ``uns["texflow"]["skipped"]["trajectory"]``
    when no trajectory can be built.

    Returns
    -------
    The root-sensitivity table: one row per alternative root (cell, Spearman rho with the main
    pseudotime, n cells); an explanatory single row when skipped.
    """
    if method not in METHODS:
        raise ValueError(f"trajectory method must be one of {METHODS}, not {method!r}")
    uns = texflow_uns(adata)
    state_key = state_key or lineage_state_key(adata.obs)
    confidence_key = confidence_key or CONFIDENCE_KEYS.get(state_key, STATE_CONFIDENCE)
    logger.info("trajectory: lineage and root from obs[%r], %s", state_key, method)
    uns["params"]["trajectory"] = {
        "states": list(states),
        "state_key": state_key,
        **{
            name: value for name, value in locals().items() if name in CONFIG_OPTIONS
        },  # the keywords
        "n_excluded_genes": len(set(exclude_genes)),
    }
    mask = lineage_mask(adata, state_key=state_key, states=states)
    adata.obs["in_lineage"] = mask
    adata.obs[PSEUDOTIME] = np.nan
    reason = skip_reason(
        adata,
        state_key=state_key,
        states=states,
        min_cells=min_cells,
        min_progenitor_cells=min_progenitor_cells,
        min_terminal_cells=min_terminal_cells,
    )
    if reason:
        return _skipped(uns, reason)

    lineage = _lineage_cells(adata, mask, lineage_x)
    features = _checked_features(lineage, n_top_genes=n_top_genes, exclude_genes=exclude_genes)
    work = lineage_embedding(
        lineage,
        features=features,
        keep_obs=(state_key, cluster_key, confidence_key),
        n_pcs=n_pcs,
        n_neighbors=n_neighbors,
        n_dcs=n_dcs,
        regress_depth=regress_depth,
        seed=seed,
    )
    cluster, root_cells = _root_cluster(
        work, state_key=state_key, cluster_key=cluster_key, confidence_key=confidence_key
    )
    if method == "dpt":
        pseudotime, sensitivity, record = _order_dpt(
            work,
            state_key=state_key,
            root_cells=root_cells,
            n_root_checks=n_root_checks,
            seed=seed,
        )
    else:
        pseudotime, sensitivity, record = _order_principal_path(
            work,
            state_key=state_key,
            states=states,
            root_cells=root_cells,
            n_root_checks=n_root_checks,
            seed=seed,
        )

    adata.obs.loc[mask, PSEUDOTIME] = pseudotime
    full_dcs = np.full((adata.n_obs, work.obsm["X_diffmap"].shape[1]), np.nan)
    full_dcs[mask] = work.obsm["X_diffmap"]
    adata.obsm["X_diffmap_lineage"] = full_dcs
    record = {
        "state_key": state_key,
        "method": method,
        "root_cluster": str(cluster) if cluster is not None else "",
        "n_features": len(features),
        **_summary(work.obs[state_key], pseudotime, sensitivity),
        **record,
        **axis_agreement(lineage.obs, pseudotime),
    }
    _check_order_and_root(record, sensitivity)
    uns["trajectory"] = record
    uns["skipped"].pop("trajectory", None)
    return sensitivity


def axis_agreement(lineage_obs: pd.DataFrame, pseudotime: np.ndarray) -> dict:
    """Rank agreement of diffusion pseudotime with the states stage's exhaustion axis.

    Two orderings of the same cells built differently: DPT from the lineage's own highly
    variable genes (IFN-I and LPO genes out), the axis from two identity programs' kNN-smoothed
    UCell scores (Tex-term minus Tpex). A Spearman rho near 1 says they tell the same story;
    near 0, that the diffusion map follows something other than the Tpex -> Tex-term programs.
    Empty when the states stage wrote no axis.
    """
    if EXHAUSTION_AXIS_KEY not in lineage_obs:
        return {}
    axis = lineage_obs[EXHAUSTION_AXIS_KEY].to_numpy(dtype=float)
    ok = np.isfinite(axis) & np.isfinite(pseudotime)
    rho = stats.spearmanr(axis[ok], pseudotime[ok]).statistic if ok.sum() > 2 else np.nan
    logger.info(
        "trajectory: Spearman rho of pseudotime with the exhaustion axis %.2f (%d cells)",
        rho,
        int(ok.sum()),
    )
    return {"axis_spearman_rho": float(rho), "axis_n_cells": int(ok.sum())}


def state_order_auc(pseudotime: np.ndarray, *, is_early: np.ndarray, is_late: np.ndarray) -> float:
    """Share of (early, late) cell pairs with the late cell later (ties count half): the AUC."""
    early = pseudotime[is_early & np.isfinite(pseudotime)]
    late = pseudotime[is_late & np.isfinite(pseudotime)]
    if early.size == 0 or late.size == 0:
        return float("nan")
    u = stats.mannwhitneyu(late, early, alternative="two-sided").statistic
    return float(u / (early.size * late.size))


def root_sensitivity(
    lineage: ad.AnnData,
    *,
    main: np.ndarray,
    candidates: np.ndarray,
    main_root: int,
    n_checks: int,
    rerun: Callable[[int], np.ndarray],
    seed: int = 0,
) -> pd.DataFrame:
    """Spearman correlation with `main` of the pseudotime `rerun` from `n_checks` random roots
    in `candidates` (positions in `lineage`), other than `main_root`."""
    rng = np.random.default_rng(seed)
    others = np.setdiff1d(candidates, [main_root])
    picks = (
        rng.choice(others, size=min(n_checks, others.size), replace=False) if others.size else []
    )
    rows = [
        {
            ROOT_CELL: str(lineage.obs_names[main_root]),
            IS_MAIN_ROOT: True,
            SPEARMAN_RHO: 1.0,
            N_CELLS: int(np.isfinite(main).sum()),
            NOTE: "main root",
        }
    ]
    for pos in picks:
        pt = rerun(int(pos))
        ok = np.isfinite(pt) & np.isfinite(main)
        rho = stats.spearmanr(pt[ok], main[ok]).statistic if ok.sum() > 2 else np.nan
        rows.append(
            {
                ROOT_CELL: str(lineage.obs_names[pos]),
                IS_MAIN_ROOT: False,
                SPEARMAN_RHO: float(rho),
                N_CELLS: int(ok.sum()),
                NOTE: "",
            }
        )
    table = pd.DataFrame(rows)
    alt = table.loc[~table[IS_MAIN_ROOT], SPEARMAN_RHO]
    if alt.size:
        logger.info(
            "root sensitivity: %d alternative roots, Spearman rho min %.3f median %.3f",
            alt.size,
            alt.min(),
            alt.median(),
        )
    return table
