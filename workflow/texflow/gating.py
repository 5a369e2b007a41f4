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

When no cluster passes, or a dataset declared ``cd8_sorted`` has almost no CD8A/CD8B+ cell, the
gate stops; the gating table, the evidence, is then written to a diagnostic file beside the log
(not a rule output, so Snakemake does not delete it with the failed job's outputs) and the
message's advice follows from the numbers.

Main entry point: :func:`gate_cd8`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from . import embedding
from .contract import (
    CLUSTER,
    DECISION,
    FRAC_CD3,
    FRAC_CD8,
    FRAC_CD8B,
    IS_CD8,
    MEAN_SCORE_PREFIX,
    N_CELLS,
    N_VETOED,
    REASON,
    SCORE_PREFIX,
)
from .errors import InputDataError
from .stage import SkipNotes, StageResult, texflow_uns
from .utils import row_chunks, subset_cells, write_subset_h5ad, write_tsv

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
    min_frac_cd8_sorted: float = 0.2
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


def score_cell_types(adata: ad.AnnData, *, organism: str, max_rank: int, counts=None) -> list[str]:
    """UCell scores of `GATING_PROGRAMS` into obs `score_<program>`; returns the obs columns.

    `counts`: the matrix to rank instead of X (see `gate_cd8`)."""
    from .scoring import ucell
    from .signatures import load_programs

    programs = load_programs(organism)
    missing = [name for name in GATING_PROGRAMS if name not in programs]
    if missing:
        raise InputDataError(f"gating programs missing from the shipped signatures: {missing}")
    ucell(
        adata,
        {name: programs[name] for name in GATING_PROGRAMS},
        max_rank=max_rank,
        matrix=counts,
    )
    return [f"{SCORE_PREFIX}{name}" for name in GATING_PROGRAMS]


def markers_positive(
    adata: ad.AnnData, gene_sets: dict[str, tuple[str, ...]], *, counts=None
) -> dict[str, tuple[np.ndarray | None, list[str]]]:
    """Per gene set: (per cell, any of its genes detected (value > 0); the genes present), with
    None for a set none of whose genes is in the data. One read of the genes' columns for all
    the sets: from X in memory, or, with `counts` (an anndata backed CSR dataset of the same
    cells x genes), `utils.row_chunks` from disk."""
    present = {
        key: [gene for gene in genes if gene in adata.var_names] for key, genes in gene_sets.items()
    }
    wanted = pd.Index(sorted({gene for genes in present.values() for gene in genes}))
    columns = adata.var_names.get_indexer(wanted)
    positive = np.zeros((adata.n_obs, wanted.size), dtype=bool)
    if wanted.size:
        source = adata.X if counts is None else counts
        if counts is None:  # in memory: the few columns first, not every row copied
            source = sparse.csr_matrix(source[:, columns])
            columns = np.arange(wanted.size)
        for rows, chunk in row_chunks(source):
            positive[rows] = chunk[:, columns].toarray() > 0
    result = {}
    for key, genes in present.items():
        where = wanted.get_indexer(genes)
        result[key] = (positive[:, where].any(axis=1) if genes else None, genes)
    return result


def marker_positive(
    adata: ad.AnnData, genes: tuple[str, ...], *, counts=None
) -> tuple[np.ndarray | None, list[str]]:
    """Per cell: any of `genes` detected (value > 0) in X; None when none of them is in the data
    (`markers_positive` of one gene set)."""
    return markers_positive(adata, {"genes": tuple(genes)}, counts=counts)["genes"]


def first_pass_clusters(
    adata: ad.AnnData, *, params: GateParams, value_type: str, counts=None
) -> tuple[pd.Series, str]:
    """Quick Leiden clustering of log-normalised values; (labels, how).

    Counts: the log-normalised values of the HVGs only (`embedding.lognorm_hvgs`: HVGs by
    Pearson residuals of the counts, as the cluster stage picks them, Lause et al. 2021; then
    normalize_total's scaling, to the median library size from every gene's counts, and log1p
    on those columns alone), read from `counts` (see `gate_cd8`) or X in chunks of rows: the
    same PCA input as normalising every gene first, without a log-normalised copy of the whole
    matrix (at 100k cells, the gate's peak went from 8.1 GB with it; measured) or the counts
    in memory. Other value types: X (read whole from `counts` when given) normalised, Seurat
    HVGs.

    With fewer than `params.min_cells_clustering` cells there is no graph worth clustering:
    every cell is judged on its own (labels = cell names), and `how` says so.
    """
    if adata.n_obs < params.min_cells_clustering:
        how = (
            f"no first-pass clustering: {adata.n_obs} cells < {params.min_cells_clustering} "
            "(gate.min_cells_clustering); each cell judged on its own"
        )
        return pd.Series(adata.obs_names, index=adata.obs_names), how
    light = ad.AnnData(
        obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names)
    )
    if value_type == "counts":
        if counts is None:
            counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
        work = embedding.lognorm_hvgs(light, counts=counts, n_top_genes=params.n_top_genes)
    else:
        # the first pass normalises a copy of all of X: read from disk, it is that copy
        light.X = adata.X.copy() if counts is None else counts.to_memory()
        work = light
        work.uns["texflow"] = {"value_type": value_type}
        embedding.normalise(work, value_type=value_type)
        embedding.select_hvgs(
            work, value_type=value_type, n_top_genes=params.n_top_genes, flavor="seurat"
        )
    used = embedding.embed(
        work, n_pcs=params.n_pcs, n_neighbors=params.n_neighbors, seed=params.seed
    )
    # Leiden needs the graph only: the HVGs' values go before its igraph is built (at 92k
    # cells, 0.37 GB less at the gate's peak; measured)
    work.X = None
    embedding.leiden(work, resolution=params.resolution, seed=params.seed, key_added="first_pass")
    labels = work.obs["first_pass"].astype(str)
    how = (
        f"Leiden resolution {params.resolution} on {used['n_pcs']} PCs, "
        f"{used['n_neighbors']} neighbours: {labels.nunique()} clusters"
    )
    return labels, how


def decide(
    row: pd.Series, *, params: GateParams, score_columns: list[str], has_cd3: bool
) -> tuple[bool, str]:
    """CD8 or not for one cluster's summary row, with the reason in words."""
    means = row[score_columns].astype(float)
    top = means.idxmax().removeprefix(MEAN_SCORE_PREFIX)
    runner_up = means.drop(means.idxmax()).idxmax().removeprefix(MEAN_SCORE_PREFIX)
    reasons = []
    ok = True
    nk_like_t = (
        top == "nk"
        and np.isfinite(row[FRAC_CD8B])
        and row[FRAC_CD8B] >= params.min_frac_cd8b_nk_like
    )
    if nk_like_t:
        # effector/exhausted CD8 T cells express NK receptors (NKG7, KLRD1); NK cells lack CD8B
        reasons.append(
            f"highest score nk ({means.max():.2f}) but CD8B+ {row[FRAC_CD8B]:.0%} >= "
            f"{params.min_frac_cd8b_nk_like:.0%}: NK-receptor-expressing CD8 T cells"
        )
    elif top != "cd8_t":
        ok = False
        reasons.append(
            f"highest score {top} ({means.max():.2f}), "
            f"not cd8_t ({row[MEAN_SCORE_PREFIX + 'cd8_t']:.2f})"
        )
    else:
        reasons.append(
            f"cd8_t highest ({means.max():.2f}; "
            f"next {runner_up} {means[f'{MEAN_SCORE_PREFIX}{runner_up}']:.2f})"
        )
    if row[FRAC_CD8] < params.min_frac_cd8:
        ok = False
        reasons.append(f"CD8A/CD8B+ {row[FRAC_CD8]:.0%} < {params.min_frac_cd8:.0%}")
    else:
        reasons.append(f"CD8A/CD8B+ {row[FRAC_CD8]:.0%}")
    if has_cd3:
        if row[FRAC_CD3] < params.min_frac_cd3:
            ok = False
            reasons.append(f"CD3+ {row[FRAC_CD3]:.0%} < {params.min_frac_cd3:.0%}")
        else:
            reasons.append(f"CD3+ {row[FRAC_CD3]:.0%}")
    return ok, "; ".join(reasons)


def evidence_path(log_path: str | os.PathLike | None) -> Path | None:
    """Where a failed gate keeps its gating table: beside the rule's log (``gate.gating.tsv``
    for ``gate.log``), a file that is no rule output and so survives the failed job."""
    return None if not log_path else Path(log_path).with_suffix(".gating.tsv")


def _keep_evidence(table: pd.DataFrame, evidence: str | os.PathLike | None) -> str:
    """Log the gating table and write it to `evidence`; return where to find it, in words."""
    logger.info(
        "gating table:\n%s", table.to_string(index=False, float_format=lambda v: f"{v:.3g}")
    )
    if evidence is None:
        return "The gating table is in the log."
    write_tsv(table, evidence, float_format="%.4g")
    return (
        "The gating table (each cluster's scores, marker fractions and reason) "
        f"is kept in {evidence}."
    )


def _marker_row(
    n_cells: int, fractions: dict[str, float | None], genes: dict[str, list[str]]
) -> dict[str, object]:
    """Whole-dataset marker fractions as one gating-table row's columns."""
    row: dict[str, object] = {N_CELLS: n_cells}
    for key, fraction in fractions.items():
        row[f"frac_{key}"] = np.nan if fraction is None else fraction
    row["marker_genes"] = "; ".join(
        f"{key}: {','.join(found) or 'none'}" for key, found in genes.items()
    )
    return row


def _percent(fraction: float | None) -> str:
    return (
        "not measured (genes absent)"
        if fraction is None or not np.isfinite(fraction)
        else f"{fraction:.1%}"
    )


def _check_sorted(
    adata: ad.AnnData,
    *,
    organism: str,
    params: GateParams,
    dataset: str | None,
    path: str | os.PathLike | None,
    evidence: str | os.PathLike | None,
    skipped: MutableMapping[str, str],
    counts=None,
) -> pd.DataFrame:
    """The one-row table of a ``cd8_sorted`` dataset, refused when almost no cell has CD8A/CD8B.

    Whatever the dataset file says, a CD8 T-cell population has CD8A or CD8B detected in most
    cells (10x: ~60-90%; simulation: 93-97% per CD8 population), non-CD8 populations in few (CD4
    T, B, myeloid, NK: 2-12% in simulation); fewer than `params.min_frac_cd8_sorted` (0.2) means
    the cells are not CD8 T cells, and the stage stops with the numbers.
    """
    markers = MARKERS[organism]
    found: dict[str, list[str]] = {}
    fractions: dict[str, float | None] = {}
    n_positive = 0
    gene_sets = {"cd8": markers["cd8"], "cd3": markers["cd3"], "cd4": (_cd4(organism),)}
    for key, (positive, present) in markers_positive(adata, gene_sets, counts=counts).items():
        found[key] = present
        fractions[key] = None if positive is None else float(positive.mean())
        if key == "cd8" and positive is not None:
            n_positive = int(positive.sum())
    reason = "dataset is CD8-sorted (cd8_sorted: true in its config): every cell kept"
    row = {CLUSTER: "(all)"} | _marker_row(adata.n_obs, fractions, found)
    frac_cd8 = fractions["cd8"]
    if frac_cd8 is None:
        skipped["gate.cd8_sorted_check"] = (
            f"none of {', '.join(markers['cd8'])} in the data: that the cells are CD8 T cells "
            "(cd8_sorted: true) could not be checked"
        )
        logger.warning(skipped["gate.cd8_sorted_check"])
    elif frac_cd8 < params.min_frac_cd8_sorted:
        table = pd.DataFrame([row | {DECISION: "refused", REASON: "too few CD8A/CD8B+ cells"}])
        where = _keep_evidence(table, evidence)
        raise InputDataError(
            f"the dataset file says cd8_sorted: true, but only {n_positive:,} of {adata.n_obs:,} "
            f"QC-passing cells ({frac_cd8:.1%}) have {' or '.join(found['cd8'])} detected "
            f"({'/'.join(markers['cd3'])}+ {_percent(fractions['cd3'])}, {_cd4(organism)}+ "
            f"{_percent(fractions['cd4'])}); a "
            "CD8 T-cell population has CD8A/CD8B in most cells (10x: 60-90%), so these are not "
            "CD8 T cells (refused below gate.min_frac_cd8_sorted = "
            f"{params.min_frac_cd8_sorted:g}). "
            "Check that the dataset's files hold the cells you meant; if the cells are mixed, set "
            f"cd8_sorted: false so that the gate selects the CD8 T cells. {where}",
            dataset=dataset,
            path=path,
        )
    else:
        reason += f"; CD8A/CD8B+ {frac_cd8:.0%} of cells"
    skipped["gate"] = reason
    logger.info(reason)
    return pd.DataFrame([row | {DECISION: "CD8", REASON: reason}])


def _cd4(organism: str) -> str:
    return "CD4" if organism == "human" else "Cd4"


def _no_cd8_problem(
    summary: pd.DataFrame,
    *,
    frac_cd8: float,
    n_cells: int,
    params: GateParams,
    cd8_genes: list[str],
) -> str:
    """Why no cluster passed, and the advice the numbers support."""
    genes = " or ".join(cd8_genes)
    best = float(summary[FRAC_CD8].max())
    head = (
        f"no CD8 T cells after gating: no first-pass cluster of the {n_cells:,} QC-passing cells "
        f"passed the CD8 gate; {frac_cd8:.1%} of the cells have {genes} detected (at most "
        f"{best:.0%} in one cluster; "
        f"a CD8 cluster needs gate.min_frac_cd8 = {params.min_frac_cd8:g})"
    )
    if frac_cd8 < params.min_frac_cd8_sorted:
        return (
            f"{head}. Almost no cell expresses CD8A/CD8B: these are not CD8 T cells, and "
            "cd8_sorted: true would be refused for the same reason (below "
            f"gate.min_frac_cd8_sorted = {params.min_frac_cd8_sorted:g}). Check that the "
            "dataset's files hold the cells you meant (a CD4, B or myeloid subset? the wrong "
            "sample or matrix?)"
        )
    enough = summary[summary[FRAC_CD8] >= params.min_frac_cd8]
    failed_on = []
    if not enough.empty:
        if enough[REASON].str.contains("not cd8_t", regex=False).any():
            failed_on.append("another program scoring higher than cd8_t")
        if (enough[FRAC_CD3] < params.min_frac_cd3).any():  # NaN (no CD3 gene) is not less
            failed_on.append(
                f"too few CD3E/CD3D+ cells (gate.min_frac_cd3 = {params.min_frac_cd3:g})"
            )
    detail = (
        f"the {len(enough)} cluster{'' if len(enough) == 1 else 's'} with enough CD8A/CD8B+ "
        "cells failed on " + " and ".join(failed_on or ["the criteria in the table"])
        if not enough.empty
        else "no single cluster has enough CD8A/CD8B+ cells"
    )
    return (
        f"{head}: {detail}. If every cell is a CD8 T cell (sorted, or selected by the authors), "
        "set cd8_sorted: true in the dataset file; otherwise adjust the gate's thresholds named "
        "above to the data"
    )


def gate_cd8(
    adata: ad.AnnData,
    *,
    params: GateParams | None = None,
    cd8_sorted: bool = False,
    dataset: str | None = None,
    path: str | os.PathLike | None = None,
    evidence: str | os.PathLike | None = None,
    counts=None,
) -> StageResult:
    """Score cell types, cluster, and mark CD8 T cells per first-pass cluster, in place.

    Parameters
    ----------
    adata
        QC-passing cells (`qc.h5ad`), X as given, `uns["texflow"]` with organism and value_type.
    params
        Gate parameters.
    cd8_sorted
        The dataset config says every cell is a CD8 T cell: nothing is gated (recorded), but a
        dataset with CD8A/CD8B detected in fewer than `params.min_frac_cd8_sorted` of its cells
        is refused.
    dataset
        Dataset id for messages.
    path
        The input file (``qc.h5ad``), for messages.
    evidence
        Where the gating table is written when the gate stops (no CD8 T cells, or a refused
        ``cd8_sorted`` dataset): a file that is no rule output (`evidence_path`). Removed when
        the gate succeeds, so that it never describes an earlier failure.
    counts
        The matrix to read instead of X (which may then be None): an anndata backed CSR
        dataset of the same cells x genes (`utils.backed_csr` of ``qc.h5ad``), read a chunk of
        rows at a time for the scores, the markers and the first pass's HVG block, so the
        whole matrix never sits in memory (at 1M cells the QC-passing counts are ~27 GB).
        The same results as with X in memory (tested). Count data only: other value types
        read X whole for the first pass's normalisation.

    Returns
    -------
    StageResult
        Table ``gating`` (one row per first-pass cluster: n cells, mean scores, fraction
        CD8A/CD8B+, CD3E/CD3D+ and CD4+ cells, decision, reason, n vetoed; one ``(all)`` row for
        a ``cd8_sorted`` dataset); notes: the ``gate*`` steps not run and why. Use
        :func:`cd8_cells` or :func:`write_cd8_cells` for the CD8 subset (they raise when there
        is none).

    Writes
    ------
    obs ``score_<program>`` for `GATING_PROGRAMS` (not for a ``cd8_sorted`` dataset),
    ``gate_cluster`` (first-pass cluster), ``is_cd8``; ``uns["texflow"]["params"]["gate"]``,
    ``uns["texflow"]["gate"]``, ``uns["texflow"]["skipped"]["gate*"]``.

    Raises
    ------
    InputDataError
        No first-pass cluster passed the gate, or ``cd8_sorted`` with almost no CD8A/CD8B+
        cell; the message gives the numbers, the advice they support and where the table is.
    """
    params = params or GateParams()
    meta = texflow_uns(adata)
    dataset = dataset or meta.get("dataset")
    organism = meta.get("organism")
    meta["params"]["gate"] = params.as_dict() | {"cd8_sorted": bool(cd8_sorted)}
    skipped = SkipNotes(adata)
    if adata.n_obs == 0:
        raise InputDataError("no cells to gate", dataset=dataset, path=path)
    if cd8_sorted:
        table = _check_sorted(
            adata, organism=organism, params=params, dataset=dataset, path=path, evidence=evidence,
            skipped=skipped, counts=counts,
        )  # fmt: skip
        adata.obs[IS_CD8] = True
        _drop_evidence(evidence)
        return StageResult("gate", {"gating": table}, dict(skipped.recorded))

    score_columns = score_cell_types(
        adata, organism=organism, max_rank=params.max_rank, counts=counts
    )
    logger.info("UCell scores of %d programs in %d cells", len(score_columns), adata.n_obs)
    markers = _markers_per_cell(adata, organism=organism, dataset=dataset, path=path, counts=counts)
    logger.info("marker genes detected: %s", markers.genes)
    has_cd3 = markers.positive["cd3"] is not None
    if not has_cd3:
        skipped["gate.cd3"] = (
            f"none of {', '.join(MARKERS[organism]['cd3'])} in the data: the CD3 fraction "
            "criterion was not applied"
        )
        logger.warning(skipped["gate.cd3"])
    labels, how = first_pass_clusters(
        adata, params=params, value_type=meta.get("value_type"), counts=counts
    )
    if adata.n_obs < params.min_cells_clustering:
        skipped["gate.first_pass_clustering"] = how
    summary = _cluster_decisions(
        adata.obs[score_columns], markers, labels, params=params, has_cd3=has_cd3
    )
    n_cd8 = _mark_cd8_cells(
        adata, labels, summary, score_columns=score_columns, veto=params.veto_foreign_cells
    )
    logger.info("gate: %s; %d of %d cells are CD8 T cells", how, n_cd8, adata.n_obs)
    meta["gate"] = {
        "first_pass": how,
        "cd8_genes": ",".join(markers.genes["cd8"]),
        "cd3_genes": ",".join(markers.genes["cd3"]),
        "n_cd8": n_cd8,
        "n_cells": adata.n_obs,
    }
    table = summary.reset_index().rename(columns={"group": CLUSTER})
    if n_cd8 == 0:
        where = _keep_evidence(table, evidence)
        problem = _no_cd8_problem(
            summary, frac_cd8=float(markers.positive["cd8"].mean()), n_cells=adata.n_obs,
            params=params, cd8_genes=markers.genes["cd8"],
        )  # fmt: skip
        raise InputDataError(f"{problem}. {where}", dataset=dataset, path=path)
    _drop_evidence(evidence)
    return StageResult("gate", {"gating": table}, dict(skipped.recorded))


@dataclass
class _Markers:
    """Per marker key (cd8, cd3, cd8b, cd4): the per-cell detection mask (None when none of
    its genes is in the data) and the genes found."""

    positive: dict[str, np.ndarray | None]
    genes: dict[str, list[str]]


def _markers_per_cell(
    adata: ad.AnnData,
    *,
    organism: str,
    dataset: str | None,
    path: str | os.PathLike | None,
    counts=None,
) -> _Markers:
    """Per cell: CD8A/CD8B, CD8B, CD3E/CD3D and CD4 detected (`markers_positive`, from
    `counts` when given).

    Raises InputDataError when no CD8 gene is in the data (nothing to gate on).
    """
    genes = MARKERS[organism] | {"cd4": (_cd4(organism),)}
    markers = _Markers(positive={}, genes={})
    gene_sets = {key: tuple(genes[key]) for key in ("cd8", "cd3", "cd8b", "cd4")}
    for key, (positive, present) in markers_positive(adata, gene_sets, counts=counts).items():
        markers.positive[key], markers.genes[key] = positive, present
    if markers.positive["cd8"] is None:
        raise InputDataError(
            f"none of the CD8 genes {', '.join(genes['cd8'])} is in the data: CD8 T cells "
            "cannot be gated (are the gene names symbols of the declared organism? set "
            "cd8_sorted: true only if every cell is a CD8 T cell)",
            dataset=dataset,
            path=path,
        )
    return markers


def _cluster_decisions(
    scores: pd.DataFrame,
    markers: _Markers,
    labels: pd.Series,
    *,
    params: GateParams,
    has_cd3: bool,
) -> pd.DataFrame:
    """Per first-pass cluster (index ``group``, largest first): n_cells, mean score per
    program, fraction of cells positive per marker, decision (CD8 or not CD8) and reason
    (`decide`)."""
    frame = scores.copy()
    frame[FRAC_CD8] = markers.positive["cd8"].astype(float)
    for key in ("cd8b", "cd3", "cd4"):
        positive = markers.positive[key]
        frame[f"frac_{key}"] = positive.astype(float) if positive is not None else np.nan
    frame["group"] = labels.to_numpy()
    summary = frame.groupby("group", sort=False).mean()
    summary.columns = [
        MEAN_SCORE_PREFIX + c.removeprefix(SCORE_PREFIX) if c.startswith(SCORE_PREFIX) else c
        for c in summary.columns
    ]
    summary.insert(0, N_CELLS, frame.groupby("group", sort=False).size())
    mean_columns = [f"mean_{c}" for c in scores.columns]
    decisions = [
        decide(row, params=params, score_columns=mean_columns, has_cd3=has_cd3)
        for _, row in summary.iterrows()
    ]
    summary[DECISION] = ["CD8" if ok else "not CD8" for ok, _ in decisions]
    summary[REASON] = [why for _, why in decisions]
    return summary.sort_values(N_CELLS, ascending=False)


def _mark_cd8_cells(
    adata: ad.AnnData,
    labels: pd.Series,
    summary: pd.DataFrame,
    *,
    score_columns: list[str],
    veto: bool,
) -> int:
    """Mark the cells of the clusters `summary` calls CD8, less (with `veto`) the cells whose own
    strongest program their cluster does not allow (`_own_program_allowed`).

    Writes obs ``gate_cluster`` and ``is_cd8``, and column ``n_vetoed`` of `summary`. Returns
    the number of CD8 T cells.
    """
    adata.obs["gate_cluster"] = pd.Categorical(labels.to_numpy())
    in_cd8_cluster = labels.map(summary[DECISION].eq("CD8")).fillna(False).astype(bool).to_numpy()
    vetoed = np.zeros(adata.n_obs, dtype=bool)
    if veto:
        vetoed = in_cd8_cluster & ~_own_program_allowed(adata.obs[score_columns], labels, summary)
    summary[N_VETOED] = (
        pd.Series(vetoed, index=labels.to_numpy())
        .groupby(level=0)
        .sum()
        .reindex(summary.index)
        .fillna(0)
        .astype(int)
    )
    adata.obs[IS_CD8] = in_cd8_cluster & ~vetoed
    return int(adata.obs[IS_CD8].sum())


def _own_program_allowed(
    scores: pd.DataFrame, labels: pd.Series, summary: pd.DataFrame
) -> np.ndarray:
    """Per cell: its own strongest program is one its cluster's decision allows.

    A cell of a CD8 cluster whose own strongest program is another cell type is a doublet with
    a CD4, NK, myeloid or B cell, or a stray cell the clustering did not split off; in an
    NK-receptor-expressing CD8 cluster, an nk-top cell is the rule, not a doublet.
    """
    foreign = scores.idxmax(axis=1).to_numpy()
    nk_like_cluster = labels.map(summary[REASON].str.contains("NK-receptor")).fillna(False)
    return np.where(
        nk_like_cluster.to_numpy(),
        np.isin(foreign, [f"{SCORE_PREFIX}cd8_t", f"{SCORE_PREFIX}nk"]),
        foreign == f"{SCORE_PREFIX}cd8_t",
    )


def _drop_evidence(evidence: str | os.PathLike | None) -> None:
    """Remove the diagnostic table of an earlier failed gate: the gate has now passed."""
    if evidence is not None:
        Path(evidence).unlink(missing_ok=True)


def _cd8_mask(adata: ad.AnnData, *, dataset: str | None) -> np.ndarray:
    """obs is_cd8 as a mask; a clear error when there are no CD8 T cells."""
    mask = adata.obs[IS_CD8].to_numpy(dtype=bool)
    if not mask.any():
        raise InputDataError(
            f"no CD8 T cells after gating ({adata.n_obs} QC-passing cells have obs is_cd8 "
            "False; the gate stage's log and its gate.gating.tsv beside it give the evidence)",
            dataset=dataset or texflow_uns(adata).get("dataset"),
        )
    return mask


def cd8_cells(adata: ad.AnnData, *, dataset: str | None = None) -> ad.AnnData:
    """The CD8 T cells (`obs[IS_CD8]`) as a new AnnData; a clear error when there are none."""
    return subset_cells(adata, _cd8_mask(adata, dataset=dataset))


def write_cd8_cells(adata: ad.AnnData, path, *, dataset: str | None = None, counts=None) -> None:
    """Write the CD8 T cells to `path` (the file of `cd8_cells`), streamed in chunks of rows
    (`texflow.utils.write_subset_h5ad`), from `counts` (see `gate_cd8`) when given; a clear
    error when there are none."""
    write_subset_h5ad(adata, _cd8_mask(adata, dataset=dataset), path, matrix=counts)
