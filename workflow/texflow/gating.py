"""CD8 T-cell gating of mixed immune data, decided per cluster of a quick first-pass clustering.

Each cell gets rank-based (UCell) scores for the cell-type programs cd8_t, cd4_t, treg, nk,
myeloid and b_cell (`texflow.signatures`, scGate-derived; `texflow.scoring.ucell`). Single genes
drop out in single-cell data, so the decision is taken per cluster of a first-pass Leiden
clustering (as scGate/ProjecTILs-style workflows judge populations, not single cells): a
cluster is CD8 when

1. its mean cd8_t score is the highest of the six programs (CD8 and CD3 up, CD4 down; the
   CD4/Treg/NK/myeloid/B programs carry CD8 or CD3 as negative markers),
2. at least `min_frac_cd8` of its cells have CD8A or CD8B detected (NK cells can express
   CD8A alone, so the program score and the fraction are both asked), and
3. at least `min_frac_cd3` of its cells have CD3E (or CD3D) detected -- skipped, and said so,
   when the dataset has no CD3 gene.

Main entry point: :func:`gate_cd8`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from . import cluster as clustering
from .errors import InputDataError
from .qc import texflow_uns
from .utils import subset_cells, write_subset_h5ad

logger = logging.getLogger(__name__)

#: The cell-type programs scored for gating (texflow.signatures names).
GATING_PROGRAMS = ("cd8_t", "cd4_t", "treg", "nk", "myeloid", "b_cell")

#: Marker genes whose detection fractions the gate checks, per organism.
MARKERS = {
    "human": {"cd8": ("CD8A", "CD8B"), "cd8b": ("CD8B",), "cd3": ("CD3E", "CD3D")},
    "mouse": {"cd8": ("Cd8a", "Cd8b1"), "cd8b": ("Cd8b1",), "cd3": ("Cd3e", "Cd3d")},
}


@dataclass
class GateParams:
    """Parameters of the gate stage (defaults and reasons: schemas/config/gate.schema.yaml)."""

    resolution: float = 2.0
    n_top_genes: int = 2000
    n_pcs: int = 30
    n_neighbors: int = 15
    min_frac_cd8: float = 0.3
    min_frac_cd3: float = 0.3
    min_frac_cd8b_nk_like: float = 0.5
    min_cells_clustering: int = 30
    veto_foreign_cells: bool = True
    max_rank: int = 1500
    seed: int = 0

    @classmethod
    def from_config(cls, config: dict | None) -> GateParams:
        config = dict(config or {})
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in config.items() if key in known})

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def score_cell_types(adata: ad.AnnData, *, organism: str, max_rank: int) -> list[str]:
    """UCell scores of `GATING_PROGRAMS` into obs `score_<program>`; returns the obs columns."""
    from .scoring import ucell
    from .signatures import load_programs

    programs = load_programs(organism)
    missing = [name for name in GATING_PROGRAMS if name not in programs]
    if missing:
        raise InputDataError(f"gating programs missing from the shipped signatures: {missing}")
    ucell(adata, {name: programs[name] for name in GATING_PROGRAMS}, max_rank=max_rank)
    return [f"score_{name}" for name in GATING_PROGRAMS]


def marker_positive(adata: ad.AnnData, genes: tuple[str, ...]) -> tuple[np.ndarray | None, list[str]]:
    """Per cell: any of `genes` detected (value > 0) in X; None when none of them is in the data."""
    present = [gene for gene in genes if gene in adata.var_names]
    if not present:
        return None, []
    values = adata[:, present].X
    values = values.toarray() if sparse.issparse(values) else np.asarray(values)
    return (values > 0).any(axis=1), present


def _lognorm_hvgs_of_counts(adata: ad.AnnData, *, n_top_genes: int) -> ad.AnnData:
    """The first pass's matrix from raw counts in X: log-normalised values of the HVGs only.

    HVGs by Pearson residuals of the counts (as the cluster stage picks them; Lause et al. 2021),
    then normalize_total's scaling (to the median library size, from every gene's counts) and
    log1p on those columns alone. The same PCA input as normalising every gene first, without
    a log-normalised copy of the whole matrix (at 100k cells, the gate's peak went from 8.1 GB
    with it; measured).
    """
    counts = sparse.csr_matrix(adata.layers["counts"] if "counts" in adata.layers else adata.X)
    light = ad.AnnData(counts, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
    light.layers["counts"] = light.X
    clustering.select_hvgs(light, value_type="counts", n_top_genes=n_top_genes, flavor="pearson_residuals")
    columns = np.flatnonzero(light.var["highly_variable"].to_numpy())
    values = clustering.lognormalise_counts(counts, columns=columns)
    var = pd.DataFrame({"highly_variable": True}, index=adata.var_names[columns])
    return ad.AnnData(values, obs=pd.DataFrame(index=adata.obs_names), var=var)


def first_pass_clusters(adata: ad.AnnData, *, params: GateParams, value_type: str) -> tuple[pd.Series, str]:
    """Quick Leiden clustering of log-normalised values; (labels, how).

    With fewer than `params.min_cells_clustering` cells there is no graph worth clustering:
    every cell is judged on its own (labels = cell names), and `how` says so.
    """
    if adata.n_obs < params.min_cells_clustering:
        how = (
            f"no first-pass clustering: {adata.n_obs} cells < {params.min_cells_clustering} "
            "(gate.min_cells_clustering); each cell judged on its own"
        )
        return pd.Series(adata.obs_names, index=adata.obs_names), how
    if value_type == "counts":
        work = _lognorm_hvgs_of_counts(adata, n_top_genes=params.n_top_genes)
    else:
        work = ad.AnnData(adata.X.copy(), obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
        work.uns["texflow"] = {"value_type": value_type}
        clustering.normalise(work, value_type=value_type)
        clustering.select_hvgs(work, value_type=value_type, n_top_genes=params.n_top_genes, flavor="seurat")
    used = clustering.embed(work, n_pcs=params.n_pcs, n_neighbors=params.n_neighbors, seed=params.seed)
    clustering.leiden(work, resolution=params.resolution, seed=params.seed, key_added="first_pass")
    labels = work.obs["first_pass"].astype(str)
    how = (
        f"Leiden resolution {params.resolution} on {used['n_pcs']} PCs, "
        f"{used['n_neighbors']} neighbours: {labels.nunique()} clusters"
    )
    return labels, how


def decide(row: pd.Series, *, params: GateParams, score_columns: list[str], has_cd3: bool) -> tuple[bool, str]:
    """CD8 or not for one cluster's summary row, with the reason in words."""
    means = row[score_columns].astype(float)
    top = means.idxmax().removeprefix("mean_score_")
    runner_up = means.drop(means.idxmax()).idxmax().removeprefix("mean_score_")
    reasons = []
    ok = True
    nk_like_t = (
        top == "nk"
        and np.isfinite(row["frac_cd8b"])
        and row["frac_cd8b"] >= params.min_frac_cd8b_nk_like
    )
    if nk_like_t:
        # effector/exhausted CD8 T cells express NK receptors (NKG7, KLRD1); NK cells lack CD8B
        reasons.append(
            f"highest score nk ({means.max():.2f}) but CD8B+ {row['frac_cd8b']:.0%} >= "
            f"{params.min_frac_cd8b_nk_like:.0%}: NK-receptor-expressing CD8 T cells"
        )
    elif top != "cd8_t":
        ok = False
        reasons.append(f"highest score {top} ({means.max():.2f}), not cd8_t ({row['mean_score_cd8_t']:.2f})")
    else:
        reasons.append(f"cd8_t highest ({means.max():.2f}; next {runner_up} {means[f'mean_score_{runner_up}']:.2f})")
    if row["frac_cd8"] < params.min_frac_cd8:
        ok = False
        reasons.append(f"CD8A/CD8B+ {row['frac_cd8']:.0%} < {params.min_frac_cd8:.0%}")
    else:
        reasons.append(f"CD8A/CD8B+ {row['frac_cd8']:.0%}")
    if has_cd3:
        if row["frac_cd3"] < params.min_frac_cd3:
            ok = False
            reasons.append(f"CD3+ {row['frac_cd3']:.0%} < {params.min_frac_cd3:.0%}")
        else:
            reasons.append(f"CD3+ {row['frac_cd3']:.0%}")
    return ok, "; ".join(reasons)


def gate_cd8(
    adata: ad.AnnData,
    *,
    params: GateParams | None = None,
    cd8_sorted: bool = False,
    dataset: str | None = None,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Score cell types, cluster, and mark CD8 T cells per first-pass cluster.

    Parameters
    ----------
    adata
        QC-passing cells (`qc.h5ad`), X as given, `uns["texflow"]` with organism and value_type.
    params
        Gate parameters.
    cd8_sorted
        The dataset config says every cell is a CD8 T cell: nothing is gated (recorded).
    dataset
        Dataset id for messages.

    Returns
    -------
    The AnnData, annotated in place: obs `score_<program>` for `GATING_PROGRAMS` (not when
    skipped), `gate_cluster` (first-pass cluster), `is_cd8`; `uns["texflow"]["params"]["gate"]`,
    `uns["texflow"]["gate"]`; and the gating table (one row per first-pass cluster: n cells,
    mean scores, fraction CD8A/CD8B+, CD3E/CD3D+ and CD4+ cells, decision, reason).
    Use :func:`cd8_cells` for the CD8 subset (it raises when there is none).
    """
    params = params or GateParams()
    meta = texflow_uns(adata)
    dataset = dataset or meta.get("dataset")
    organism = meta.get("organism")
    meta["params"]["gate"] = params.as_dict() | {"cd8_sorted": bool(cd8_sorted)}
    if cd8_sorted:
        reason = "dataset is CD8-sorted (cd8_sorted: true in its config): every cell kept"
        meta["skipped"]["gate"] = reason
        logger.info(reason)
        adata.obs["is_cd8"] = True
        table = pd.DataFrame(
            [{"cluster": "(all)", "n_cells": adata.n_obs, "decision": "CD8", "reason": reason}]
        )
        return adata, table
    if adata.n_obs == 0:
        raise InputDataError("no cells to gate", dataset=dataset)

    score_columns = score_cell_types(adata, organism=organism, max_rank=params.max_rank)
    markers = MARKERS[organism]
    cd8_pos, cd8_genes = marker_positive(adata, markers["cd8"])
    cd3_pos, cd3_genes = marker_positive(adata, markers["cd3"])
    cd8b_pos, _ = marker_positive(adata, markers["cd8b"])
    cd4_pos, _ = marker_positive(adata, ("CD4",) if organism == "human" else ("Cd4",))
    if cd8_pos is None:
        raise InputDataError(
            f"none of the CD8 genes {', '.join(markers['cd8'])} is in the data: CD8 T cells "
            "cannot be gated (set cd8_sorted: true if every cell is a CD8 T cell)",
            dataset=dataset,
        )
    if cd3_pos is None:
        meta["skipped"]["gate.cd3"] = (
            f"none of {', '.join(markers['cd3'])} in the data: the CD3 fraction criterion was not applied"
        )
        logger.warning(meta["skipped"]["gate.cd3"])

    labels, how = first_pass_clusters(adata, params=params, value_type=meta.get("value_type"))
    if adata.n_obs < params.min_cells_clustering:
        meta["skipped"]["gate.first_pass_clustering"] = how
    frame = adata.obs[score_columns].copy()
    frame["frac_cd8"] = cd8_pos.astype(float)
    frame["frac_cd8b"] = cd8b_pos.astype(float) if cd8b_pos is not None else np.nan
    frame["frac_cd3"] = cd3_pos.astype(float) if cd3_pos is not None else np.nan
    frame["frac_cd4"] = cd4_pos.astype(float) if cd4_pos is not None else np.nan
    frame["group"] = labels.to_numpy()
    summary = frame.groupby("group", sort=False).mean()
    summary.columns = [f"mean_{c}" if c.startswith("score_") else c for c in summary.columns]
    summary.insert(0, "n_cells", frame.groupby("group", sort=False).size())
    decisions = [
        decide(row, params=params, score_columns=[f"mean_{c}" for c in score_columns], has_cd3=cd3_pos is not None)
        for _, row in summary.iterrows()
    ]
    summary["decision"] = ["CD8" if ok else "not CD8" for ok, _ in decisions]
    summary["reason"] = [why for _, why in decisions]
    summary = summary.sort_values("n_cells", ascending=False)
    is_cd8_group = summary["decision"].eq("CD8")
    adata.obs["gate_cluster"] = pd.Categorical(labels.to_numpy())
    in_cd8_cluster = labels.map(is_cd8_group).fillna(False).astype(bool).to_numpy()
    vetoed = np.zeros(adata.n_obs, dtype=bool)
    if params.veto_foreign_cells:
        # a cell of a CD8 cluster whose own strongest program is another cell type (a doublet
        # with a CD4, NK, myeloid or B cell, or a stray cell the clustering did not split off)
        scores = adata.obs[score_columns]
        foreign = scores.idxmax(axis=1).to_numpy()
        nk_like_cluster = labels.map(summary["reason"].str.contains("NK-receptor")).fillna(False)
        # in an NK-receptor-expressing CD8 cluster, an nk-top cell is the rule, not a doublet
        allowed = np.where(nk_like_cluster.to_numpy(), np.isin(foreign, ["score_cd8_t", "score_nk"]), foreign == "score_cd8_t")
        vetoed = in_cd8_cluster & ~allowed
    summary["n_vetoed"] = (
        pd.Series(vetoed, index=labels.to_numpy()).groupby(level=0).sum().reindex(summary.index).fillna(0).astype(int)
    )
    adata.obs["is_cd8"] = in_cd8_cluster & ~vetoed
    n_cd8 = int(adata.obs["is_cd8"].sum())
    logger.info("gate: %s; %d of %d cells are CD8 T cells", how, n_cd8, adata.n_obs)
    meta["gate"] = {
        "first_pass": how,
        "cd8_genes": ",".join(cd8_genes),
        "cd3_genes": ",".join(cd3_genes),
        "n_cd8": n_cd8,
        "n_cells": adata.n_obs,
    }
    table = summary.reset_index().rename(columns={"group": "cluster"})
    return adata, table


def _cd8_mask(adata: ad.AnnData, *, dataset: str | None) -> np.ndarray:
    """obs is_cd8 as a mask; a clear error when there are no CD8 T cells."""
    mask = adata.obs["is_cd8"].to_numpy(dtype=bool)
    if not mask.any():
        raise InputDataError(
            f"no CD8 T cells after gating ({adata.n_obs} QC-passing cells, no first-pass "
            "cluster passed the CD8 gate; tables/gating.tsv gives each cluster's scores and "
            "reason). If every cell is a CD8 T cell, set cd8_sorted: true in the dataset config",
            dataset=dataset or texflow_uns(adata).get("dataset"),
        )
    return mask


def cd8_cells(adata: ad.AnnData, *, dataset: str | None = None) -> ad.AnnData:
    """The CD8 T cells (`obs["is_cd8"]`) as a new AnnData; a clear error when there are none."""
    return subset_cells(adata, _cd8_mask(adata, dataset=dataset))


def write_cd8_cells(adata: ad.AnnData, path, *, dataset: str | None = None) -> None:
    """Write the CD8 T cells to `path` (the file of `cd8_cells`), streamed in chunks of rows
    (`texflow.utils.write_subset_h5ad`); a clear error when there are none."""
    write_subset_h5ad(adata, _cd8_mask(adata, dataset=dataset), path)
