"""Cell quality control: per-sample metrics, MAD outliers, doublet scores, flags.

Follows the "Quality control" chapter of the single-cell best-practices book (Heumos et al. 2023,
Nat Rev Genet; sc-best-practices.org): a cell is an outlier when a metric lies more than `n` median
absolute deviations (MADs, unscaled, as in the book) from the median of its sample. Count-based
criteria and doublet detection only run on count data (`uns["texflow"]["value_type"] == "counts"`);
for TPM or log data only the number of detected genes is judged, and every criterion not run is
recorded with its reason in `uns["texflow"]["skipped"]` and in the QC table.

Main entry point: :func:`run_qc`.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import anndata as ad
import numba
import numpy as np
import pandas as pd
from scipy import ndimage, sparse

from .contract import (
    CELL_ID,
    CELLS_IN,
    CELLS_OUT,
    CELLS_REMOVED,
    DOUBLET_SCORE,
    DOUBLETS_SCORED,
    FAIL_PREFIX,
    LOG1P_N_GENES_BY_COUNTS,
    LOG1P_TOTAL_COUNTS,
    LOG1P_TOTAL_COUNTS_MT,
    LOWER_SUFFIX,
    N_GENES_BY_COUNTS,
    NOTES,
    PCT_COUNTS_IN_TOP_20_GENES,
    PCT_COUNTS_MT,
    PREDICTED_DOUBLET,
    PREDICTED_DOUBLETS,
    QC_FAIL_PREFIX,
    QC_PASS,
    REMOVED_DOUBLETS,
    SAMPLE,
    SKIP_DOUBLET_SAMPLES,
    SKIP_DOUBLETS,
    TOTAL_COUNTS,
    TOTAL_COUNTS_MT,
    UPPER_SUFFIX,
)
from .doublets import scrublet_scores_by_sample, search_note
from .errors import InputDataError
from .stage import SkipNotes, StageResult, organism_of, texflow_uns
from .utils import (
    counts_are_x,
    share_counts,
    subset_cells,
    write_h5ad,
    write_subset_h5ad,
)

logger = logging.getLogger(__name__)

#: Mitochondrial gene-symbol prefix per organism (HGNC `MT-`, MGI `mt-`).
MITO_PREFIX = {"human": "MT-", "mouse": "mt-"}

#: The per-reason flags written to obs, in the order the QC table lists them.
CRITERIA = ("total_counts", "n_genes", "top20", "mito", "doublet")

#: Samples missing from obs["sample"] are judged together under this name.
NO_SAMPLE = "(no sample)"


@dataclass
class QCParams:
    """Parameters of the qc stage (defaults and reasons: workflow/schemas/config/qc.schema.yaml)."""

    nmads: float = 5.0
    nmads_mito: float = 3.0
    mito_cap_pct: float = 15.0
    min_cells_per_sample_mad: int = 50
    doublets: bool = True
    remove_doublets: bool = False
    min_cells_per_sample_doublets: int = 100
    expected_doublet_rate: float = 0.05
    max_predicted_doublet_fraction: float = 0.3
    min_cells_out: int = 20
    seed: int = 0

    @classmethod
    def from_config(cls, config: dict | None) -> QCParams:
        config = dict(config or {})
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in config.items() if key in known})

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class _Criterion:
    """One outlier criterion of one sample: thresholds, where they came from, flags."""

    lower: float = np.nan
    upper: float = np.nan
    source: str = ""
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def _value_type(adata: ad.AnnData) -> str:
    value_type = texflow_uns(adata).get("value_type")
    if value_type not in ("counts", "tpm", "log_tpm", "lognorm"):
        raise InputDataError(
            f"uns['texflow']['value_type'] is {value_type!r}; expected counts, tpm, log_tpm or "
            "lognorm (set value_type in the dataset config)",
            dataset=texflow_uns(adata).get("dataset"),
        )
    return value_type


def sample_labels(adata: ad.AnnData) -> pd.Series:
    """obs["sample"] as strings; cells without a sample are grouped under `NO_SAMPLE`."""
    if SAMPLE not in adata.obs:
        return pd.Series(NO_SAMPLE, index=adata.obs_names)
    labels = adata.obs[SAMPLE].astype("string").fillna(NO_SAMPLE)
    return labels.astype(str)


@numba.njit(cache=True, parallel=True)
def _top_share_rows(data: np.ndarray, indptr: np.ndarray, n_top: int) -> np.ndarray:
    share = np.zeros(indptr.size - 1)
    for i in numba.prange(indptr.size - 1):
        row = data[indptr[i] : indptr[i + 1]].astype(np.float64)
        total = row.sum()
        if total > 0:
            top = row if row.size <= n_top else np.sort(row)[row.size - n_top :]
            share[i] = top.sum() / total
    return share


def _top_share(matrix: sparse.csr_matrix, n_top: int) -> np.ndarray:
    """Share of each cell's total held by its `n_top` largest values (CSR rows, no dense copy).

    A compiled loop over the rows: the Python loop took 15.7 s at 100k cells (measured).
    """
    return _top_share_rows(matrix.data, matrix.indptr, n_top)


#: Rows of the matrix read at a time by `compute_metrics` (10k cells x 2.5k genes: ~0.2 GB).
METRICS_CHUNK_ROWS = 10_000


def compute_metrics(adata: ad.AnnData, *, organism: str, counts=None) -> list[str]:
    """Per-cell QC metrics on X, as scanpy.pp.calculate_qc_metrics names and computes them.

    Computed here in O(cells) extra memory, `METRICS_CHUNK_ROWS` rows at a time (every metric
    is one cell's own): scanpy's function made a full copy of the matrix (measured at 100k
    cells x 20k genes: 2.2 GB -> 4.4 GB peak), and only these per-cell values are used.
    `counts` is the matrix to read when it is not X in memory (an anndata backed CSR dataset
    of the same cells and genes; see `run_qc`).

    Writes obs `total_counts`, `log1p_total_counts`, `n_genes_by_counts`,
    `log1p_n_genes_by_counts`, `pct_counts_in_top_20_genes` and, when mitochondrial genes exist,
    `total_counts_mt`, `log1p_total_counts_mt`, `pct_counts_mt`; var `mt`. Returns the
    mitochondrial genes found (possibly none).
    """
    prefix = MITO_PREFIX[organism]
    adata.var["mt"] = adata.var_names.str.startswith(prefix)
    mito = list(adata.var_names[adata.var["mt"]])
    mito_columns = np.flatnonzero(adata.var["mt"].to_numpy())
    source = adata.X if counts is None else counts
    n_cells = adata.n_obs
    total, detected = np.zeros(n_cells), np.zeros(n_cells, dtype=np.int64)
    top_share, mito_total = np.zeros(n_cells), np.zeros(n_cells)
    for start in range(0, n_cells, METRICS_CHUNK_ROWS):
        rows = slice(start, min(start + METRICS_CHUNK_ROWS, n_cells))
        matrix = sparse.csr_matrix(source[rows])
        total[rows] = np.asarray(matrix.sum(axis=1, dtype=np.float64)).ravel()
        if (matrix.data == 0).any():  # stored zeros are not detected genes
            detected[rows] = np.asarray((matrix != 0).sum(axis=1)).ravel()
        else:
            detected[rows] = np.diff(matrix.indptr)
        if adata.n_vars > 20:
            top_share[rows] = _top_share(matrix, 20)
        if mito:
            mito_total[rows] = np.asarray(
                matrix[:, mito_columns].sum(axis=1, dtype=np.float64)
            ).ravel()
        del matrix
    obs = adata.obs
    obs[N_GENES_BY_COUNTS] = detected
    obs[LOG1P_N_GENES_BY_COUNTS] = np.log1p(detected)
    obs[TOTAL_COUNTS] = total
    obs[LOG1P_TOTAL_COUNTS] = np.log1p(total)
    if adata.n_vars > 20:
        obs[PCT_COUNTS_IN_TOP_20_GENES] = 100.0 * top_share
    else:
        obs[PCT_COUNTS_IN_TOP_20_GENES] = 100.0
    if mito:
        obs[TOTAL_COUNTS_MT] = mito_total
        obs[LOG1P_TOTAL_COUNTS_MT] = np.log1p(mito_total)
        with np.errstate(invalid="ignore", divide="ignore"):
            obs[PCT_COUNTS_MT] = np.where(total > 0, 100.0 * mito_total / total, 0.0)
    return mito


def mad_bounds(values: np.ndarray, nmads: float) -> tuple[float, float, float, float]:
    """(lower, upper, median, MAD) with MAD the unscaled median absolute deviation (book)."""
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return median - nmads * mad, median + nmads * mad, median, mad


def _outliers(
    values: pd.Series,
    samples: pd.Series,
    *,
    nmads: float,
    min_cells: int,
    upper_only: bool = False,
    cap: float | None = None,
) -> tuple[np.ndarray, dict[str, _Criterion]]:
    """Per-sample MAD outliers of `values`; small samples use thresholds from all cells pooled.

    A MAD of zero (all cells alike in that metric) would flag every cell that differs at all, so
    such a sample is not judged on that metric and the table says so.
    """
    flags = np.zeros(len(values), dtype=bool)
    per_sample: dict[str, _Criterion] = {}
    pooled = None
    if len(values) >= min_cells:
        pooled = mad_bounds(values.to_numpy(), nmads)
    for sample in pd.unique(samples):
        mask = (samples == sample).to_numpy()
        criterion = _Criterion()
        if mask.sum() >= min_cells:
            lower, upper, _, mad = mad_bounds(values[mask].to_numpy(), nmads)
            criterion.source = "sample"
        elif pooled is not None:
            lower, upper, _, mad = pooled
            criterion.source = f"pooled (sample has {mask.sum()} < {min_cells} cells)"
        else:
            criterion.source = (
                f"not judged (dataset has {len(values)} < {min_cells} cells for MAD thresholds)"
            )
            per_sample[sample] = criterion
            continue
        if mad == 0:
            criterion.source += "; MAD is 0, not judged on MADs"
            lower, upper = -np.inf, np.inf
        if upper_only:
            lower = -np.inf
        if cap is not None:
            upper = min(upper, cap)
        sample_values = values[mask].to_numpy()
        criterion.lower, criterion.upper = lower, upper
        criterion.flags = (sample_values < lower) | (sample_values > upper)
        flags[mask] = criterion.flags
        per_sample[sample] = criterion
    return flags, per_sample


def _local_maxima(hist: np.ndarray) -> list[int]:
    """Indices where a histogram turns from rising (or its start) to falling, as skimage does."""
    maxima, rising = [], True
    for i in range(len(hist) - 1):
        if rising and hist[i + 1] < hist[i]:
            rising = False
            maxima.append(i)
        elif not rising and hist[i + 1] > hist[i]:
            rising = True
    return maxima


def threshold_minimum(values: np.ndarray, *, nbins: int = 256, max_iter: int = 10_000) -> float:
    """Threshold at the minimum between the two modes of the histogram of `values`.

    A port of `skimage.filters.threshold_minimum` (Glasbey 1993), the rule Scrublet uses to set
    its doublet threshold on the simulated-doublet scores; scikit-image is not a dependency here.
    Raises ValueError when the histogram does not become bimodal by smoothing.
    """
    hist, edges = np.histogram(values, bins=nbins)
    centers = (edges[:-1] + edges[1:]) / 2
    smooth = hist.astype(np.float32)
    maxima: list[int] = []
    for _ in range(max_iter):
        smooth = ndimage.uniform_filter1d(smooth, 3)
        maxima = _local_maxima(smooth)
        if len(maxima) < 3:
            break
    if len(maxima) == 2:
        low, high = maxima
        return float(centers[low + int(np.argmin(smooth[low : high + 1]))])
    raise ValueError("the simulated-doublet score histogram is not bimodal")


def score_doublets(
    adata: ad.AnnData,
    samples: pd.Series,
    *,
    params: QCParams,
    notes: dict[str, list[str]],
    threads: int = 1,
    counts=None,
) -> dict[str, str]:
    """Scrublet doublet scores per sample on the raw counts in X (or `counts`, see `run_qc`:
    each sample's rows are read when its turn comes).

    Samples with fewer than `params.min_cells_per_sample_doublets` cells are not scored: the
    simulated-score histogram is then too coarse to place a threshold, and at 10x loading rates
    (~0.8% doublets per 1,000 cells recovered) fewer than one doublet is expected in them.
    The samples scored run up to `threads` at once (`doublets.scrublet_scores_by_sample`: the
    same scores, thresholds, calls and notes as one at a time) and are recorded in their order.
    Returns the reason per sample not scored.

    Writes
    ------
    obs ``doublet_score`` (NaN where not run) and ``predicted_doublet`` (False where not run).
    """
    adata.obs[DOUBLET_SCORE] = np.nan
    adata.obs[PREDICTED_DOUBLET] = False
    not_scored: dict[str, str] = {}
    scored: list[tuple[str, np.ndarray]] = []
    for sample in pd.unique(samples):
        mask = (samples == sample).to_numpy()
        n_cells = int(mask.sum())
        if n_cells < params.min_cells_per_sample_doublets:
            not_scored[sample] = (
                f"{n_cells} cells < {params.min_cells_per_sample_doublets} needed for scrublet"
            )
            notes[sample].append(f"scrublet not run: {not_scored[sample]}")
        else:
            scored.append((sample, mask))
    results = scrublet_scores_by_sample(
        adata.X if counts is None else counts,
        [mask for _, mask in scored],
        expected_doublet_rate=params.expected_doublet_rate,
        seed=params.seed,
        threads=threads,
    )
    for (sample, mask), result in zip(scored, results, strict=True):
        scores, simulated = result.observed, result.simulated
        logger.debug(
            "scrublet, sample %s: %d cells, %d simulated doublets, %d HVGs, k = %d",
            sample, int(np.isfinite(scores).sum()), simulated.size, result.n_genes, result.k,
        )  # fmt: skip
        adata.obs.loc[mask, DOUBLET_SCORE] = scores
        if (note := search_note(result)) is not None:
            notes[sample].append(note)
        try:
            threshold = threshold_minimum(simulated)
        except ValueError as error:
            not_scored[sample] = f"scored, but no doublet threshold found ({error})"
            notes[sample].append(f"doublets not called: {not_scored[sample]}")
            continue
        predicted = scores > threshold
        if predicted.mean() > params.max_predicted_doublet_fraction:
            not_scored[sample] = (
                f"scrublet threshold {threshold:.2f} would call {predicted.mean():.0%} of cells "
                f"doublets (> {params.max_predicted_doublet_fraction:.0%}): threshold not trusted"
            )
            notes[sample].append(f"doublets not called: {not_scored[sample]}")
            continue
        adata.obs.loc[mask, PREDICTED_DOUBLET] = predicted
        notes[sample].append(f"scrublet threshold {threshold:.3f}")
    return {sample: not_scored[sample] for sample in pd.unique(samples) if sample in not_scored}


def run_qc(
    adata: ad.AnnData,
    *,
    params: QCParams | None = None,
    dataset: str | None = None,
    threads: int = 1,
    counts=None,
) -> StageResult:
    """Flag low-quality cells and doublets per sample, in place.

    Parameters
    ----------
    adata
        Cells x genes, X as given (`raw.h5ad`), with `uns["texflow"]` (organism, value_type)
        and obs `sample`.
    params
        QC parameters.
    dataset
        Dataset id for messages (default `uns["texflow"]["dataset"]`).
    threads
        Cores to use (the rule's threads): Scrublet scores this many samples at once
        (`score_doublets`); the results do not depend on it.
    counts
        The matrix to read instead of X (which may then be None): an anndata backed CSR
        dataset of the same cells x genes (`utils.backed_csr`), read a chunk of rows or one
        sample at a time, so the whole matrix never sits in memory (the QC stage's peak at
        100k cells was the matrix plus one sample's Scrublet copies; measured). The same
        values as with X in memory.

    Returns
    -------
    StageResult
        Tables ``qc_summary`` (one row per sample: cells in, failing per criterion -- NA where
        the criterion was not run --, cells out, thresholds, notes; and a last row ``(all)``)
        and ``qc_cells`` (`cells_table`); notes: the ``qc.*`` steps not run and why. The caller
        writes only the passing cells onward (`write_passing_cells`).

    Writes
    ------
    obs QC metrics (`compute_metrics`), ``qc_fail_<criterion>`` for each of `CRITERIA` (False
    where not run), ``doublet_score``, ``predicted_doublet``, ``qc_pass``; var ``mt``;
    ``uns["texflow"]["params"]["qc"]``, ``uns["texflow"]["qc"]`` (mitochondrial genes, cells in
    and out), ``uns["texflow"]["skipped"]["qc.*"]``.

    Raises
    ------
    InputDataError
        No cells, or organism/value_type not usable. (Too few passing cells is checked by
        :func:`passing_cells`, after the caller has written the table that explains it.)
    """
    params = params or QCParams()
    meta = texflow_uns(adata)
    dataset = dataset or meta.get("dataset")
    organism = organism_of(adata, dataset=dataset)
    value_type = _value_type(adata)
    if adata.n_obs == 0:
        raise InputDataError("the input holds no cells", dataset=dataset)

    skipped = SkipNotes(adata)
    samples = sample_labels(adata)
    sample_notes: dict[str, list[str]] = {sample: [] for sample in pd.unique(samples)}
    mito = compute_metrics(adata, organism=organism, counts=counts)
    criteria = _judge_outliers(
        adata, samples, params=params, value_type=value_type, organism=organism, mito=mito,
        skipped=skipped,
    )  # fmt: skip
    _call_doublets(
        adata, samples, params=params, value_type=value_type, sample_notes=sample_notes,
        skipped=skipped, threads=threads, counts=counts,
    )  # fmt: skip
    adata.obs[QC_PASS] = ~adata.obs[[f"{QC_FAIL_PREFIX}{name}" for name in CRITERIA]].any(axis=1)

    table = _summary_table(
        adata, samples, criteria, sample_notes, skipped.recorded, params=params,
        is_counts=value_type == "counts",
    )  # fmt: skip
    _note_dropped_samples(table, skipped)
    n_pass = int(adata.obs[QC_PASS].sum())
    for step, reason in skipped.recorded.items():
        logger.info("not run / recorded: %s: %s", step, reason)
    logger.info("QC: %d of %d cells pass", n_pass, adata.n_obs)
    meta["params"]["qc"] = params.as_dict()
    meta["qc"] = {"mito_genes": len(mito), "cells_in": adata.n_obs, "cells_out": n_pass}
    tables = {"qc_summary": table, "qc_cells": cells_table(adata)}
    return StageResult("qc", tables, dict(skipped.recorded))


def _judge_outliers(
    adata: ad.AnnData,
    samples: pd.Series,
    *,
    params: QCParams,
    value_type: str,
    organism: str,
    mito: list[str],
    skipped: MutableMapping[str, str],
) -> dict[str, dict[str, _Criterion]]:
    """The MAD criteria of `CRITERIA` but doublets, each run where the value type allows it.

    Writes obs ``qc_fail_<criterion>`` (False for a criterion not run, whose reason goes to
    `skipped`). Returns each criterion run, per sample.
    """
    obs = adata.obs
    criteria: dict[str, dict[str, _Criterion]] = {}

    def judge(name: str, column: str, **kwargs) -> None:
        flags, per_sample = _outliers(
            obs[column], samples, min_cells=params.min_cells_per_sample_mad, **kwargs
        )
        obs[f"{QC_FAIL_PREFIX}{name}"] = flags
        criteria[name] = per_sample

    is_counts = value_type == "counts"
    judge("n_genes", "log1p_n_genes_by_counts", nmads=params.nmads)
    if is_counts:
        judge("total_counts", "log1p_total_counts", nmads=params.nmads)
        judge("top20", "pct_counts_in_top_20_genes", nmads=params.nmads)
    else:
        reason = (
            f"value_type is {value_type}, not counts: total counts and the share of the top 20 "
            "genes are not comparable between cells after TPM/log scaling"
        )
        skipped["qc.total_counts"] = skipped["qc.top20"] = reason
    if not is_counts:
        skipped["qc.mito"] = (
            f"value_type is {value_type}, not counts: a mitochondrial percentage of "
            "length-normalised or log values is not the fraction of reads the MAD rule is set on"
        )
    elif not mito:
        skipped["qc.mito"] = (
            f"no mitochondrial genes (symbols starting with {MITO_PREFIX[organism]!r}) among "
            f"{adata.n_vars} genes: the mitochondrial criterion was not run"
        )
    else:
        judge(
            "mito",
            "pct_counts_mt",
            nmads=params.nmads_mito,
            upper_only=True,
            cap=params.mito_cap_pct,
        )
    for name in CRITERIA[:-1]:
        if f"{QC_FAIL_PREFIX}{name}" not in obs:
            obs[f"{QC_FAIL_PREFIX}{name}"] = False
    return criteria


def _call_doublets(
    adata: ad.AnnData,
    samples: pd.Series,
    *,
    params: QCParams,
    value_type: str,
    sample_notes: dict[str, list[str]],
    skipped: MutableMapping[str, str],
    threads: int = 1,
    counts=None,
) -> None:
    """Scrublet per sample where it can run (`score_doublets`, `threads` samples at once);
    flag or keep the doublets.

    Writes obs ``doublet_score`` (NaN where not run), ``predicted_doublet`` and
    ``qc_fail_doublet`` (predicted and ``params.remove_doublets``); what was not run or not
    called goes to `skipped`.
    """
    obs = adata.obs
    is_counts = value_type == "counts"
    if not params.doublets:
        skipped[SKIP_DOUBLETS] = "doublet detection switched off (qc.doublets: false)"
    elif not is_counts:
        skipped[SKIP_DOUBLETS] = (
            f"value_type is {value_type}, not counts: scrublet simulates doublets by adding "
            "raw counts of two cells, which TPM or log values cannot do"
        )
    else:
        not_scored = score_doublets(
            adata, samples, params=params, notes=sample_notes, threads=threads, counts=counts
        )
        if not_scored and len(not_scored) == len(sample_notes):
            skipped[SKIP_DOUBLETS] = "no sample could be scored: " + "; ".join(
                f"{sample}: {why}" for sample, why in not_scored.items()
            )
        elif not_scored:
            skipped[SKIP_DOUBLET_SAMPLES] = "; ".join(
                f"{sample}: {why}" for sample, why in not_scored.items()
            )
    if DOUBLET_SCORE not in obs:
        obs[DOUBLET_SCORE] = np.nan
        obs[PREDICTED_DOUBLET] = False
    obs[PREDICTED_DOUBLET] = obs[PREDICTED_DOUBLET].astype(bool)
    obs[f"{QC_FAIL_PREFIX}doublet"] = obs[PREDICTED_DOUBLET] & params.remove_doublets
    if params.doublets and is_counts and not params.remove_doublets:
        skipped["qc.remove_doublets"] = (
            "predicted doublets are flagged (obs predicted_doublet) but kept "
            "(qc.remove_doublets: false)"
        )


def _note_dropped_samples(table: pd.DataFrame, skipped: MutableMapping[str, str]) -> None:
    """A warning and a ``qc.sample.<sample>`` note for each sample QC removes entirely."""
    for sample, row in table.set_index(SAMPLE).iterrows():
        if sample != "(all)" and row[CELLS_IN] > 0 and row[CELLS_OUT] == 0:
            logger.warning("QC removes every cell of sample %s: the sample is dropped", sample)
            skipped[f"qc.sample.{sample}"] = f"all {row[CELLS_IN]} cells failed QC; sample dropped"


#: Prefixes of the obs columns of the per-cell QC table (`cells_table`).
CELL_COLUMNS = ("log1p_", "pct_", "n_genes", "total_counts", "qc_", "doublet", "predicted")


def cells_table(adata: ad.AnnData) -> pd.DataFrame:
    """One row per cell: cell_id, sample and every QC metric and flag in obs (`CELL_COLUMNS`)."""
    columns = [c for c in adata.obs.columns if c.startswith(CELL_COLUMNS)]
    return adata.obs[[SAMPLE, *columns]].rename_axis(CELL_ID).reset_index()


def _summary_table(
    adata: ad.AnnData,
    samples: pd.Series,
    criteria: dict[str, dict[str, _Criterion]],
    notes: dict[str, list[str]],
    skipped: dict[str, str],
    *,
    params: QCParams,
    is_counts: bool,
) -> pd.DataFrame:
    """One row per sample and a last `(all)` row; NA where a criterion was not run."""
    obs = adata.obs
    doublets_run = params.doublets and is_counts
    rows = []
    for sample in list(notes) + ["(all)"]:
        mask = np.ones(adata.n_obs, bool) if sample == "(all)" else (samples == sample).to_numpy()
        row: dict = {SAMPLE: sample, CELLS_IN: int(mask.sum())}
        for name in CRITERIA[:-1]:
            run = name in criteria
            row[f"{FAIL_PREFIX}{name}"] = (
                int(obs.loc[mask, f"{QC_FAIL_PREFIX}{name}"].sum()) if run else pd.NA
            )
        scored = obs.loc[mask, DOUBLET_SCORE].notna()
        row[DOUBLETS_SCORED] = int(scored.sum()) if doublets_run else pd.NA
        row[PREDICTED_DOUBLETS] = (
            int(obs.loc[mask, PREDICTED_DOUBLET].sum()) if doublets_run else pd.NA
        )
        row[REMOVED_DOUBLETS] = (
            int(obs.loc[mask, f"{QC_FAIL_PREFIX}doublet"].sum()) if doublets_run else pd.NA
        )
        row[CELLS_OUT] = int(obs.loc[mask, QC_PASS].sum())
        row[CELLS_REMOVED] = row[CELLS_IN] - row[CELLS_OUT]
        for name in CRITERIA[:-1]:
            criterion = criteria.get(name, {}).get(sample)
            row[f"{name}{LOWER_SUFFIX}"] = criterion.lower if criterion else np.nan
            row[f"{name}{UPPER_SUFFIX}"] = criterion.upper if criterion else np.nan
            if criterion and criterion.source != "sample":
                notes.setdefault(sample, []).append(f"{name}: {criterion.source}")
        if sample == "(all)":
            row[NOTES] = "; ".join(f"not run: {step}: {why}" for step, why in skipped.items())
        else:
            row[NOTES] = "; ".join(notes.get(sample, []))
        rows.append(row)
    table = pd.DataFrame(rows)
    # thresholds are on the judged scale: log1p for counts and genes, percent for top20 and mito
    return table


def _check_enough_pass(adata: ad.AnnData, *, min_cells: int, dataset: str | None) -> np.ndarray:
    """The qc_pass mask; InputDataError when fewer than `min_cells` cells pass."""
    passed = adata.obs[QC_PASS].to_numpy(dtype=bool)
    if passed.sum() < min_cells:
        raise InputDataError(
            f"only {int(passed.sum())} of {adata.n_obs} cells pass QC, fewer than the {min_cells} "
            "needed downstream (qc.min_cells_out); "
            "tables/qc_summary.tsv gives the reasons per sample",
            dataset=dataset or texflow_uns(adata).get("dataset"),
        )
    return passed


def passing_cells(
    adata: ad.AnnData, *, min_cells: int = 1, dataset: str | None = None
) -> ad.AnnData:
    """The QC-passing cells, as a new AnnData with X as given (float32 CSR).

    Raises InputDataError when fewer than `min_cells` cells pass (qc.min_cells_out).
    """
    passing = subset_cells(adata, _check_enough_pass(adata, min_cells=min_cells, dataset=dataset))
    if not sparse.issparse(passing.X) or passing.X.dtype != np.float32:
        shared = counts_are_x(passing)
        passing.X = sparse.csr_matrix(passing.X, dtype=np.float32)
        if shared:
            share_counts(passing)
    return passing


def write_passing_cells(
    adata: ad.AnnData, path, *, min_cells: int = 1, dataset: str | None = None, counts=None
) -> None:
    """Write the QC-passing cells to `path` (the file `passing_cells` would give).

    Float32 CSR counts (what ingest writes) are streamed to the file in chunks of rows
    (`texflow.utils.write_subset_h5ad`), so the passing cells are never a second matrix in
    memory; from `counts` (a backed float32 CSR dataset, see `run_qc`) when given. Raises
    InputDataError when fewer than `min_cells` cells pass.
    """
    if counts is not None:
        mask = _check_enough_pass(adata, min_cells=min_cells, dataset=dataset)
        write_subset_h5ad(adata, mask, path, matrix=counts)
    elif (sparse.issparse(adata.X) and adata.X.format == "csr") and adata.X.dtype == np.float32:
        write_subset_h5ad(
            adata, _check_enough_pass(adata, min_cells=min_cells, dataset=dataset), path
        )
    else:
        write_h5ad(passing_cells(adata, min_cells=min_cells, dataset=dataset), path)
