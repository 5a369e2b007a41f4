"""Genes behind checkpoint resistance: pseudobulk differential expression per state (issue 21).

Patients, not cells, are the units (Squair et al. 2021 Nat Commun): the cells of one patient and
timepoint in one state (all CD8 cells, Tpex, Tex_int, Tex_term by the per-cell calls
``obs["cell_state"]``) are pooled into one pseudobulk sample,

- count data (``layers["counts"]``): the raw counts summed, then a negative-binomial GLM,
  design ``~ response`` (``~ covariate + response`` where the dataset config names a
  ``design_covariate``), from pydeseq2 (DESeq2's Wald test; log2 fold change non-responders over
  responders, its standard error, BH across the genes tested);
- TPM or log data (``value_type`` tpm / log_tpm / lognorm), which cannot go into a count model:
  the per-patient mean of log2 expression, compared across patients by limma-trend's moderated t
  (Smyth 2004; Law et al. 2014; ``log_method`` limma_trend, the default): least squares per gene
  on ``~ response`` (``~ covariate + response`` with a design covariate), the residual variances
  shrunk by empirical Bayes toward a trend on mean expression (`squeeze_variances`, limma's
  squeezeVar), as DESeq2 shrinks dispersions; the log2 fold change is the difference of the
  group means (the response coefficient). Options: ``welch`` (Welch's t; with a covariate,
  unmoderated least squares, `METHOD_OLS`) and ``mann_whitney`` (a rank test). Measured
  (benchmarks/validate_resistance.py, 20 seeds x 5 cohorts): Welch's standard errors, from one
  variance per gene and group of 5-12 patients, made the inverse-variance meta-analysis 2-3
  times too liberal at p < 0.001 (false discovery proportion 10 % at q < 0.05); the moderated
  ones are calibrated.

The design covariate is categorical (timepoint, batch, tissue: an ``obs`` column) and must be
constant within a pseudobulk sample. Each patient keeps one sample per state (the timepoint
with most cells), so a ``timepoint`` covariate is the timepoint of each patient's kept sample:
it adjusts for patients sampled before vs on treatment, it is not a paired (within-patient)
comparison. A covariate constant over a state's samples drops out (the table's ``design`` says
so); one confounded with response (each value holding one response group) leaves the response
effect inestimable: that state is not tested and its row says why and how to fix it.

Minimums follow decoupler's pseudobulk guidance (``get_pseudobulk`` min_cells 10, min_counts
1000; ``filter_by_expr``, edgeR's filterByExpr: a gene needs >= 10 counts in as many samples as
the smaller group has, and >= 15 counts in all). Log data have no counts: a gene needs to be
detected (value > 0) in >= 20 % of a sample's cells (decoupler's ``filter_by_prop`` min_prop
0.2) in as many samples as the smaller group has (filterByExpr's number of samples), so that a
per-patient mean is not a few cells' values among zeros (measured: such genes, whose patient
means are near 0, get tiny Welch standard errors and made 9 of 45 false calls of the log path
in benchmarks/validate_resistance.py). A state without enough patients gets one row
saying so, never a silent skip. The programs (IFN-I, LPO, every shipped identity program) are
then scored on each state's gene statistics with one univariate linear model per program
(decoupler's ``ulm``: the statistic regressed on the program's membership weight, +1 for its
genes, -1 for its negative genes, 0 otherwise; t of the slope). Genes are that test's units
(`GENE_SET_CAVEAT`, in each tested row's note): the between-patient test of each program is
the programs stage's response_comparison.tsv.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import special, stats

from .contract import (
    CELL_STATE_KEY,
    COVARIATE,
    DE_COLUMNS,
    DE_METHOD,
    DESIGN,
    GENE,
    KEPT,
    LFC_SE,
    LOG2_FOLD_CHANGE,
    MEAN_EXPRESSION,
    METHOD,
    N_CELLS,
    N_GENES,
    N_GENES_TESTED,
    N_NON_RESPONDERS,
    N_RESPONDERS,
    NOTE,
    P_VALUE,
    PATIENT,
    PROGRAM,
    Q_VALUE,
    REASON,
    RESISTANCE_STATES,
    RESPONSE,
    SLOPE,
    STATE,
    STATISTIC,
    T_STATISTIC,
    TABLE_COLUMNS,
    TESTABLE,
    TIMEPOINT,
    TOTAL_COUNTS,
    UNIT,
    UNIT_GENES,
    WHY_NOT,
    missing_labels,
)
from .features import group_row_sums
from .signatures import GeneProgram
from .stats import (
    ALL_CD8,
    NON_RESPONDER,
    POOLED_RESPONSE_CAVEAT,
    RESPONDER,
    bh_adjust,
    patient_response,
    response_skip_reason,
)

logger = logging.getLogger(__name__)

#: The pseudobulk states: every CD8 cell of a patient, then each exhausted state.
STATES = RESISTANCE_STATES
COUNT_VALUE_TYPES = ("counts",)
LOG_VALUE_TYPES = ("tpm", "log_tpm", "lognorm")
#: Factor that turns X of the programs stage into log2: log_tpm is log2(TPM+1) as given; tpm
#: became ln(TPM+1) (cluster stage log1p) and lognorm is natural log (scanpy's log1p).
LOG2_FACTOR = {"log_tpm": 1.0, "tpm": 1.0 / np.log(2.0), "lognorm": 1.0 / np.log(2.0)}
METHOD_DESEQ2 = "pydeseq2_wald_nb_glm"
METHOD_WELCH = "welch_t_patient_mean_log2"
METHOD_MANN_WHITNEY = "mann_whitney_patient_mean_log2"
METHOD_OLS = "ols_t_patient_mean_log2"
METHOD_LIMMA_TREND = "limma_trend_moderated_t_patient_mean_log2"
LOG_METHODS = ("limma_trend", "welch", "mann_whitney")
DESIGN_RESPONSE = "~ response"

SAMPLE_COLUMNS = [
    PATIENT,
    TIMEPOINT,
    STATE,
    RESPONSE,
    N_CELLS,
    TOTAL_COUNTS,
    KEPT,
    WHY_NOT,
    COVARIATE,
]
PROGRAM_COLUMNS = list(TABLE_COLUMNS["resistance_programs.tsv"])
#: What a row of resistance_programs.tsv tests, beside its p: genes are the units of the ulm
#: (a competitive test), so its p is not a between-patient p and is not bounded by the number of
#: patients; genes of one program move together across patients, which the test takes as
#: independent, so the p is too small (Wu & Smyth 2012, Nucleic Acids Res 40:e133, CAMERA).
GENE_SET_CAVEAT = (
    "genes are the units of this test: it asks whether this program's genes differ between "
    "non-responders and responders more than the other tested genes do, taking the genes as "
    "independent; they are not (they move together across patients), so the p is smaller than "
    "the patients can support (Wu & Smyth 2012). The per-patient test of each program is in "
    "response_comparison.tsv"
)


def _text(values: pd.Series) -> pd.Series:
    """Labels as strings, NaN where `contract.missing_labels` says a value is missing."""
    return values.astype(object).map(str).where(~missing_labels(values), np.nan)


def _state_masks(obs: pd.DataFrame, *, state_key: str) -> dict[str, np.ndarray]:
    calls = _text(obs[state_key]) if state_key in obs else pd.Series(np.nan, index=obs.index)
    masks = {ALL_CD8: np.ones(obs.shape[0], dtype=bool)}
    for state in STATES[1:]:
        masks[state] = (calls == state).to_numpy()
    return masks


def covariate_problem(
    obs: pd.DataFrame,
    *,
    covariate: str,
    patient_key: str = "patient",
    timepoint_key: str = "timepoint",
) -> str:
    """Why `covariate` cannot be a design covariate of the pseudobulk samples ("" if it can).

    Parameters
    ----------
    obs
        The cells' annotations.
    covariate
        The ``obs`` column named as design covariate.
    patient_key, timepoint_key
        The columns a pseudobulk sample pools over (one patient, one timepoint).

    Returns
    -------
    "" when `covariate` is a column with one value among the cells of each patient and
    timepoint; else the problem (not a column; several values inside a pooled sample).
    """
    if covariate in (patient_key, "response"):
        return f"design covariate {covariate!r} is what the design compares or pools over"
    if covariate not in obs:
        return f"design covariate {covariate!r} is not a column of the cells' obs"
    frame = pd.DataFrame(
        {
            PATIENT: _text(obs[patient_key]) if patient_key in obs else np.nan,
            TIMEPOINT: (
                _text(obs[timepoint_key])
                if timepoint_key in obs
                else pd.Series(np.nan, index=obs.index)
            ).fillna("NA"),
            COVARIATE: _text(obs[covariate]),
        }
    ).dropna(subset=[PATIENT, COVARIATE])
    counts = frame.groupby([PATIENT, TIMEPOINT])[COVARIATE].nunique()
    mixed = counts[counts > 1]
    if mixed.empty:
        return ""
    (patient, timepoint) = mixed.index[0]
    values = frame.loc[(frame[PATIENT] == patient) & (frame[TIMEPOINT] == timepoint), COVARIATE]
    return (
        f"design covariate {covariate!r} takes {int(mixed.iloc[0])} values "
        f"({', '.join(sorted(values.unique())[:4])}) among the cells of patient {patient}, "
        f"timepoint {timepoint} ({len(mixed)} such sample(s)): a pseudobulk sample pools "
        "them and needs one value; name a covariate constant per patient and timepoint"
    )


def pseudobulk(
    adata: ad.AnnData,
    *,
    value_type: str,
    state_key: str = CELL_STATE_KEY,
    patient_key: str = "patient",
    response_key: str = "response",
    timepoint_key: str = "timepoint",
    min_cells: int = 10,
    min_counts: int = 1000,
    covariate_key: str | None = None,
    matrix=None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Pool the cells of each patient, timepoint and state into pseudobulk samples.

    Parameters
    ----------
    adata
        CD8 T cells with ``obs`` patient, response, timepoint and `state_key`; count data need
        ``layers["counts"]`` (raw counts), other value types are read from X (log scale).
    value_type
        ``counts`` (sum of raw counts) or ``tpm`` / ``log_tpm`` / ``lognorm`` (mean of log2
        values, `LOG2_FACTOR`).
    state_key
        The per-cell state calls.
    patient_key, response_key, timepoint_key
        Columns of ``obs``.
    min_cells
        Cells a pseudobulk sample needs to be kept.
    min_counts
        Total counts a pseudobulk sample of count data needs to be kept (not used for log data).
    covariate_key
        A categorical ``obs`` column of the design (the dataset's ``design_covariate``): its
        value per sample is recorded (``covariate``; ``attrs["covariate"]`` of the matrices); a
        sample without one is not kept. None: no covariate.
    matrix
        The values to pool, when they are not in `adata` (X None, no counts layer): an
        anndata backed CSR dataset of the file's counts layer (count data) or X, read in
        blocks of rows (`features.group_row_sums`; the same sums as in memory).

    Returns
    -------
    The table of samples (`SAMPLE_COLUMNS`: every patient, timepoint and state, kept or not and
    why not) and, per state, the kept samples' matrix (rows ``patient|timepoint``, genes as
    columns; ``attrs["response"]`` the samples' labels, ``attrs["detected_fraction"]`` the
    share of each sample's cells with a value > 0 per gene, samples x genes, for the expression
    filter of log data, `expressed_genes`). A patient keeps one sample per state: when several
    timepoints pass, the one with most cells (the patient is the unit; the others say so).

    Raises
    ------
    ValueError
        `covariate_key` is not a column of ``obs``, or takes several values among the cells
        of one patient and timepoint (a pooled sample has one value).
    """
    counts = value_type in COUNT_VALUE_TYPES
    if counts and matrix is None and "counts" not in adata.layers:
        raise ValueError("pseudobulk of count data needs layers['counts'] (raw counts)")
    if not counts and value_type not in LOG2_FACTOR:
        raise ValueError(
            f"value_type {value_type!r} is not one of counts, {', '.join(LOG2_FACTOR)}"
        )
    if matrix is None:
        matrix = adata.layers["counts"] if counts else adata.X
    obs = adata.obs
    patients = _text(obs[patient_key]) if patient_key in obs else pd.Series(np.nan, index=obs.index)
    timepoints = (
        _text(obs[timepoint_key]) if timepoint_key in obs else pd.Series(np.nan, index=obs.index)
    ).fillna("NA")
    labels, conflict_note = patient_response(
        obs, patient_key=patient_key, response_key=response_key
    )
    if conflict_note:
        logger.warning("pseudobulk: %s", conflict_note)
    if covariate_key is not None:
        problem = covariate_problem(
            obs, covariate=covariate_key, patient_key=patient_key, timepoint_key=timepoint_key
        )
        if problem:
            raise ValueError(problem)
    covariate = _text(obs[covariate_key]) if covariate_key is not None else None
    pools = {
        state: pd.DataFrame({PATIENT: patients, TIMEPOINT: timepoints})[mask]
        .dropna()
        .groupby([PATIENT, TIMEPOINT])
        .groups
        for state, mask in _state_masks(obs, state_key=state_key).items()
    }
    pooled = [
        obs.index.get_indexer(index) for groups in pools.values() for index in groups.values()
    ]
    # one pass over the matrix for every pool (read from disk in blocks when it is there)
    pool_sums, pool_detected = group_row_sums(matrix, pooled)
    pool = iter(range(len(pooled)))
    rows, matrices = [], {}
    for state, groups in pools.items():
        sums, fractions, kept_rows = {}, {}, []
        for patient, timepoint in groups:
            at = next(pool)
            positions = pooled[at]
            values = pool_sums[at]
            n_cells = len(positions)
            total = float(values.sum()) if counts else np.nan
            response = labels.get(patient, np.nan)
            value = np.nan
            if covariate is not None:
                seen = covariate.iloc[positions].dropna().unique()
                value = seen[0] if len(seen) else np.nan
            why = []
            if n_cells < min_cells:
                why.append(f"{n_cells} cells < {min_cells}")
            if counts and total < min_counts:
                why.append(f"{total:.0f} counts < {min_counts}")
            if response not in (RESPONDER, NON_RESPONDER):
                why.append("no single response label for this patient")
            if covariate is not None and pd.isna(value):
                why.append(f"no {covariate_key} value (the design covariate)")
            row = {
                PATIENT: patient,
                TIMEPOINT: timepoint,
                STATE: state,
                RESPONSE: response,
                N_CELLS: n_cells,
                TOTAL_COUNTS: total,
                KEPT: not why,
                WHY_NOT: "; ".join(why),
                COVARIATE: value,
            }
            rows.append(row)
            if not why:
                kept_rows.append(len(rows) - 1)
                sums[len(rows) - 1] = (
                    values if counts else values / n_cells * LOG2_FACTOR[value_type]
                )
                fractions[len(rows) - 1] = pool_detected[at] / n_cells
        # one sample per patient: the timepoint with most cells
        best: dict[str, int] = {}
        for i in kept_rows:
            patient = rows[i][PATIENT]
            if patient not in best or rows[i][N_CELLS] > rows[best[patient]][N_CELLS]:
                best[patient] = i
        for i in kept_rows:
            if best[rows[i][PATIENT]] != i:
                rows[i][KEPT] = False
                rows[i][WHY_NOT] = (
                    "another timepoint of this patient has more cells "
                    "(one sample per patient: patients are the unit)"
                )
        chosen = sorted(best.values(), key=lambda i: rows[i][PATIENT])
        matrices[state] = pd.DataFrame(
            np.vstack([sums[i] for i in chosen]) if chosen else np.empty((0, adata.n_vars)),
            index=[f"{rows[i][PATIENT]}|{rows[i][TIMEPOINT]}" for i in chosen],
            columns=adata.var_names.astype(str),
        )
        matrices[state].attrs[RESPONSE] = [rows[i][RESPONSE] for i in chosen]
        matrices[state].attrs["detected_fraction"] = (
            np.vstack([fractions[i] for i in chosen]) if chosen else np.empty((0, adata.n_vars))
        )
        if covariate is not None:
            matrices[state].attrs[COVARIATE] = [rows[i][COVARIATE] for i in chosen]
    table = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    return table, matrices


def _not_testable(
    state: str, reason: str, *, n_nr: int, n_r: int, method: str, design: str = DESIGN_RESPONSE
) -> pd.DataFrame:
    row = {column: np.nan for column in DE_COLUMNS}
    row.update(
        {
            STATE: state,
            N_NON_RESPONDERS: n_nr,
            N_RESPONDERS: n_r,
            METHOD: method,
            TESTABLE: False,
            REASON: reason,
            GENE: "",
            DESIGN: design,
        }
    )
    return pd.DataFrame([row], columns=DE_COLUMNS)


def expressed_genes(
    matrix: pd.DataFrame,
    response: Sequence[str],
    *,
    counts: bool,
    min_count: int = 10,
    min_total_count: int = 15,
    min_detected_fraction: float = 0.2,
) -> np.ndarray:
    """Genes expressed in enough pseudobulk samples (edgeR's filterByExpr, simplified).

    Parameters
    ----------
    matrix
        One state's pseudobulk samples (`pseudobulk`); log data need
        ``attrs["detected_fraction"]`` (samples x genes).
    response
        The samples' response labels.
    counts
        Count data (summed counts) or log data (per-patient mean log2).
    min_count, min_total_count
        Counts: at least `min_count` counts in as many samples as the smaller response group
        has, and at least `min_total_count` counts over all samples (filterByExpr).
    min_detected_fraction
        Log data: the gene is detected (value > 0) in at least this share of a sample's cells
        (decoupler's ``filter_by_prop`` min_prop) in as many samples as the smaller response
        group has (filterByExpr's number of samples).

    Returns
    -------
    A boolean mask over the genes (the columns of `matrix`).

    Raises
    ------
    ValueError
        Log data without ``attrs["detected_fraction"]`` of the matrix's shape.
    """
    response = np.asarray(response)
    n_min = int(min((response == NON_RESPONDER).sum(), (response == RESPONDER).sum()))
    values = matrix.to_numpy()
    if counts:
        return ((values >= min_count).sum(axis=0) >= n_min) & (
            values.sum(axis=0) >= min_total_count
        )
    detected = matrix.attrs.get("detected_fraction")
    if detected is None or np.shape(detected) != values.shape:
        raise ValueError(
            "the expression filter of log data needs the share of each sample's cells that "
            "detect each gene: matrix.attrs['detected_fraction'] (samples x genes), which "
            "resistance.pseudobulk records; build the matrices with pseudobulk"
        )
    return (np.asarray(detected) >= min_detected_fraction).sum(axis=0) >= n_min


def _deseq2(
    matrix: pd.DataFrame,
    response: Sequence[str],
    *,
    n_cpus: int,
    covariate: tuple[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """pydeseq2 on pseudobulk counts, design ~ response (or ~ covariate + response when
    `covariate` is (name, values)), non-responders over responders."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    inference = DefaultInference(n_cpus=n_cpus)
    metadata = pd.DataFrame({RESPONSE: list(response)}, index=matrix.index)
    design = "~response"
    if covariate is not None:
        name, values = covariate
        metadata.insert(0, name, [str(v) for v in values])
        design = f"~{name} + response"
    # C order, as a DataFrame built row by row: pydeseq2's iterative fits end ~1% apart in the
    # standard errors on the same counts held column-major (measured; tests/unit/test_resistance)
    counts = pd.DataFrame(
        np.ascontiguousarray(matrix.round().to_numpy(dtype=np.int64)),
        index=matrix.index,
        columns=matrix.columns,
    )
    dds = DeseqDataSet(
        counts=counts, metadata=metadata, design=design, inference=inference, quiet=True
    )
    dds.deseq2()
    result = DeseqStats(
        dds,
        contrast=["response", NON_RESPONDER, RESPONDER],
        inference=inference,
        independent_filter=False,
        quiet=True,
    )
    result.summary()
    frame = result.results_df
    return pd.DataFrame(
        {
            GENE: frame.index.astype(str),
            LOG2_FOLD_CHANGE: frame["log2FoldChange"].to_numpy(),
            LFC_SE: frame["lfcSE"].to_numpy(),
            STATISTIC: frame["stat"].to_numpy(),
            P_VALUE: frame["pvalue"].to_numpy(),
            MEAN_EXPRESSION: frame["baseMean"].to_numpy(),
        }
    )


def _log_test(matrix: pd.DataFrame, response: Sequence[str], *, method: str) -> pd.DataFrame:
    """Welch's t (or Mann-Whitney) per gene on per-patient mean log2 expression."""
    response = np.asarray(response)
    x = matrix.to_numpy()[response == NON_RESPONDER]
    y = matrix.to_numpy()[response == RESPONDER]
    diff = x.mean(axis=0) - y.mean(axis=0)
    se = np.sqrt(x.var(axis=0, ddof=1) / len(x) + y.var(axis=0, ddof=1) / len(y))
    if method == "welch":
        with np.errstate(invalid="ignore", divide="ignore"):
            test = stats.ttest_ind(x, y, axis=0, equal_var=False)
        statistic, p = test.statistic, test.pvalue
    else:
        test = stats.mannwhitneyu(x, y, axis=0, alternative="two-sided")
        statistic, p = test.statistic, test.pvalue
    return pd.DataFrame(
        {
            GENE: matrix.columns.astype(str),
            LOG2_FOLD_CHANGE: diff,
            LFC_SE: se,
            STATISTIC: statistic,
            P_VALUE: p,
            MEAN_EXPRESSION: matrix.to_numpy().mean(axis=0),
        }
    )


def _ols_test(
    matrix: pd.DataFrame, response: Sequence[str], covariate: Sequence[str]
) -> pd.DataFrame:
    """Per gene, least squares of per-patient mean log2 on ~ covariate + response (treatment
    coding, responders and the covariate's first level as reference); the response
    coefficient, its standard error, t and two-sided p on n - p degrees of freedom."""
    design = _design_matrix(response, covariate)
    y = matrix.to_numpy(float)
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    dof = design.shape[0] - rank
    residual = y - design @ coef
    sigma2 = (residual**2).sum(axis=0) / dof
    unscaled = np.linalg.inv(design.T @ design)[-1, -1]
    se = np.sqrt(sigma2 * unscaled)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = coef[-1] / se
    p = 2 * stats.t.sf(np.abs(t), dof)
    return pd.DataFrame(
        {
            GENE: matrix.columns.astype(str),
            LOG2_FOLD_CHANGE: coef[-1],
            LFC_SE: se,
            STATISTIC: t,
            P_VALUE: p,
            MEAN_EXPRESSION: y.mean(axis=0),
        }
    )


def trigamma_inverse(x: np.ndarray) -> np.ndarray:
    """The y with trigamma(y) = x (x > 0), by limma's Newton iteration (Smyth 2004)."""
    x = np.asarray(x, dtype=float)
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = special.polygamma(1, y)
        step = tri * (1.0 - tri / x) / special.polygamma(2, y)
        y = y + step
        if np.all(-step / y < 1e-8):
            break
    return y


def natural_spline_basis(x: np.ndarray, *, df: int) -> np.ndarray:
    """Natural cubic spline basis with an intercept, `df` columns (R's ``ns(x, df, intercept=TRUE)``
    spans the same space): knots at the range of `x` and its ``df - 2`` inner quantiles;
    the truncated-power form of Hastie, Tibshirani & Friedman, ESL eq. 5.4-5.5."""
    x = np.asarray(x, dtype=float)
    knots = np.quantile(x, np.linspace(0.0, 1.0, df))
    columns = [np.ones_like(x), x]

    def d(k: int) -> np.ndarray:
        return (np.clip(x - knots[k], 0, None) ** 3 - np.clip(x - knots[-1], 0, None) ** 3) / (
            knots[-1] - knots[k]
        )

    columns += [d(k) - d(len(knots) - 2) for k in range(len(knots) - 2)]
    return np.column_stack(columns)


def squeeze_variances(
    variances: np.ndarray, *, df: float, covariate: np.ndarray | None = None
) -> tuple[np.ndarray, float, np.ndarray]:
    """Empirical-Bayes shrinkage of gene variances (limma's squeezeVar / fitFDist, Smyth 2004).

    The gene variances are taken as scaled chi-squares around a prior s0² (with `covariate`,
    a trend of s0² on it: limma-trend, the covariate being the gene's mean log expression,
    trend a natural cubic spline as limma's, up to 4 df); the prior's degrees of freedom d0
    come from the spread of log variances beyond what `df` alone explains. Posterior
    variance: (d0 s0² + df s²) / (d0 + df).

    Parameters
    ----------
    variances
        Residual variances of the genes, all on `df` degrees of freedom.
    df
        Their residual degrees of freedom.
    covariate
        Per gene, the covariate of the prior's trend (mean log expression); None: one prior.

    Returns
    -------
    The posterior variances, d0 (inf when the variances spread no more than sampling
    explains: every gene then gets the prior) and the per-gene prior s0².
    """
    s2 = np.asarray(variances, dtype=float)
    m = np.median(s2[s2 > 0]) if np.any(s2 > 0) else 1.0
    s2_floor = np.maximum(s2, 1e-5 * m)
    e = np.log(s2_floor) - special.digamma(df / 2) + np.log(df / 2)
    n = len(e)
    splinedf = 1 + (n >= 3) + (n >= 6) + (n >= 30)
    if covariate is not None:
        splinedf = min(splinedf, len(np.unique(covariate)))
    if covariate is None or splinedf < 2:
        emean = np.full(n, e.mean())
        evar = ((e - e.mean()) ** 2).sum() / (n - 1)
    else:
        design = natural_spline_basis(np.asarray(covariate, dtype=float), df=int(splinedf))
        coef, _, rank, _ = np.linalg.lstsq(design, e, rcond=None)
        emean = design @ coef
        evar = ((e - emean) ** 2).sum() / (n - rank)
    evar -= special.polygamma(1, df / 2)
    if evar > 0:
        d0 = float(2 * trigamma_inverse(evar))
        s0 = np.exp(emean + special.digamma(d0 / 2) - np.log(d0 / 2))
        posterior = (d0 * s0 + df * s2) / (d0 + df)
    else:
        d0, s0 = np.inf, np.exp(emean)
        posterior = s0.copy()
    return posterior, d0, s0


def _limma_trend_test(matrix: pd.DataFrame, design: np.ndarray) -> pd.DataFrame:
    """limma-trend on per-patient mean log2 (Smyth 2004; Law et al. 2014): least squares per
    gene, the residual variances shrunk toward their trend on mean expression
    (`squeeze_variances`), the moderated t of the last coefficient (non-responders) on
    df + d0 degrees of freedom (capped at the pooled residual df, as limma)."""
    y = matrix.to_numpy(float)
    coef, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    dof = design.shape[0] - rank
    sigma2 = ((y - design @ coef) ** 2).sum(axis=0) / dof
    amean = y.mean(axis=0)
    posterior, d0, _ = squeeze_variances(sigma2, df=dof, covariate=amean)
    unscaled = np.linalg.inv(design.T @ design)[-1, -1]
    se = np.sqrt(posterior * unscaled)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = coef[-1] / se
    df_total = min(dof + d0, dof * y.shape[1])
    return pd.DataFrame(
        {
            GENE: matrix.columns.astype(str),
            LOG2_FOLD_CHANGE: coef[-1],
            LFC_SE: se,
            STATISTIC: t,
            P_VALUE: 2 * stats.t.sf(np.abs(t), df_total),
            MEAN_EXPRESSION: amean,
        }
    )


def _design_matrix(response: Sequence[str], covariate: Sequence[str]) -> np.ndarray:
    """Intercept, the covariate's levels but the first (sorted), non-responder indicator."""
    covariate = np.asarray([str(v) for v in covariate])
    levels = sorted(set(covariate))
    columns = [np.ones(len(covariate))]
    columns += [(covariate == level).astype(float) for level in levels[1:]]
    columns.append((np.asarray(response) == NON_RESPONDER).astype(float))
    return np.column_stack(columns)


def design_problem(response: Sequence[str], covariate: Sequence[str], *, name: str) -> str:
    """Why ``~ covariate + response`` cannot estimate the response effect ("" when it can).

    Parameters
    ----------
    response
        The samples' response labels.
    covariate
        The samples' covariate values.
    name
        The covariate's name, for the message.

    Returns
    -------
    "" when the design has full rank and at least one residual degree of freedom; else what
    is wrong (the covariate confounded with response, or too few samples for its levels).
    """
    design = _design_matrix(response, covariate)
    rank = np.linalg.matrix_rank(design)
    if rank < design.shape[1]:
        groups = pd.Series(list(response)).groupby(pd.Series([str(v) for v in covariate]))
        layout = "; ".join(f"{level}: {', '.join(sorted(set(g)))}" for level, g in groups)
        return (
            f"design covariate {name!r} is confounded with response (each value holds one "
            f"response group: {layout}), so the response effect cannot be told from it"
        )
    if design.shape[0] <= rank:
        return (
            f"{design.shape[0]} samples for {rank} coefficients of ~ {name} + response: no "
            "residual degree of freedom"
        )
    return ""


def differential_expression(
    matrices: Mapping[str, pd.DataFrame],
    *,
    value_type: str,
    min_patients_per_group: int = 2,
    min_gene_count: int = 10,
    min_gene_total_count: int = 15,
    min_gene_detected_fraction: float = 0.2,
    log_method: str = "limma_trend",
    n_cpus: int = 1,
    skip_reason: str = "",
    covariate: str | None = None,
    dataset: str = "",
) -> pd.DataFrame:
    """Non-responders vs responders per state, patients as the unit.

    Parameters
    ----------
    matrices
        Per state, the pseudobulk samples (`pseudobulk`), ``attrs["response"]`` their labels.
    value_type
        ``counts``: pydeseq2 (``~ response``, Wald test); tpm / log_tpm / lognorm: `log_method`
        on per-patient mean log2 expression.
    min_patients_per_group
        Kept pseudobulk samples (patients) each response group needs for a state to be tested.
    min_gene_count, min_gene_total_count
        The expression filter of count data (`expressed_genes`).
    min_gene_detected_fraction
        The expression filter of log data (`expressed_genes` min_detected_fraction).
    log_method
        ``limma_trend`` (moderated t, `_limma_trend_test`), ``welch`` or ``mann_whitney``.
    n_cpus
        Threads of pydeseq2.
    skip_reason
        Why responders cannot be compared at all (`texflow.stats.response_skip_reason`, e.g. no
        response labels): every state's row says so.
    covariate
        The design covariate's name (the dataset's ``design_covariate``); the matrices carry its
        values (``attrs["covariate"]``, `pseudobulk` with ``covariate_key``). Counts: pydeseq2
        with ``~ covariate + response``; log data: limma-trend on the same design
        (``log_method`` limma_trend) or least squares without moderation (welch,
        `METHOD_OLS`). None: ``~ response``.
    dataset
        The dataset's id, named in a reason (a confounded covariate).

    Returns
    -------
    `DE_COLUMNS`, one row per tested gene and state, BH across the genes of a state, the
    ``design`` used; a state that cannot be tested gets one row with ``testable`` False and
    the reason.

    Raises
    ------
    ValueError
        A covariate with ``log_method`` mann_whitney (a rank test cannot carry one).
    """
    counts = value_type in COUNT_VALUE_TYPES
    if not counts and log_method not in LOG_METHODS:
        raise ValueError(
            f"dataset {dataset or '?'}: log_method {log_method!r} is not one of "
            f"{', '.join(LOG_METHODS)}; set resistance.log_method in config/config.yaml"
        )
    if covariate is not None and not counts and log_method == "mann_whitney":
        raise ValueError(
            f"dataset {dataset or '?'}: log_method {log_method!r} (a rank test) cannot carry the "
            f"design covariate {covariate!r}; set resistance.log_method to limma_trend (or welch: "
            "least squares with the covariate then runs) or remove design_covariate from the "
            "dataset config"
        )
    if counts:
        method = METHOD_DESEQ2
    elif log_method == "limma_trend":
        method = METHOD_LIMMA_TREND
    elif covariate is not None:
        method = METHOD_OLS
    else:
        method = METHOD_WELCH if log_method == "welch" else METHOD_MANN_WHITNEY
    parts = []
    for state, matrix in matrices.items():
        response = list(matrix.attrs.get(RESPONSE, []))
        n_nr, n_r = response.count(NON_RESPONDER), response.count(RESPONDER)
        design, values = DESIGN_RESPONSE, None
        if covariate is not None:
            values = list(matrix.attrs.get(COVARIATE, []))
            design = f"~ {covariate} + response"
            if len(values) != len(response):
                raise ValueError(
                    f"the {state} matrix carries no {covariate!r} values: "
                    "pseudobulk(covariate_key=...) records them"
                )
            if len(set(map(str, values))) == 1:
                design = f"{DESIGN_RESPONSE} ({covariate} is {values[0]} in every {state} sample)"
                values = None
        state_method = METHOD_WELCH if method == METHOD_OLS and values is None else method
        if skip_reason:
            parts.append(
                _not_testable(
                    state,
                    f"not testable: {skip_reason}",
                    n_nr=n_nr,
                    n_r=n_r,
                    method=state_method,
                    design=design,
                )
            )
            continue
        if min(n_nr, n_r) < min_patients_per_group:
            reason = (
                f"not testable: {n_nr} non-responder and {n_r} responder patient(s) with a "
                f"kept {state} pseudobulk sample, >= {min_patients_per_group} of each needed"
            )
            parts.append(
                _not_testable(state, reason, n_nr=n_nr, n_r=n_r, method=state_method, design=design)
            )
            continue
        problem = design_problem(response, values, name=covariate) if values is not None else ""
        if problem:
            reason = (
                f"not testable: {problem} in {state} of dataset {dataset or '?'}; remove "
                f"design_covariate from the dataset config (config/datasets/"
                f"{dataset or '<dataset>'}.yaml) or name a covariate that varies within "
                "the response groups"
            )
            parts.append(
                _not_testable(state, reason, n_nr=n_nr, n_r=n_r, method=state_method, design=design)
            )
            logger.warning("%s", reason)
            continue
        keep = expressed_genes(
            matrix,
            response,
            counts=counts,
            min_count=min_gene_count,
            min_total_count=min_gene_total_count,
            min_detected_fraction=min_gene_detected_fraction,
        )
        if keep.sum() < 2:
            parts.append(
                _not_testable(
                    state,
                    f"not testable: {int(keep.sum())} gene(s) pass the expression filter",
                    n_nr=n_nr,
                    n_r=n_r,
                    method=state_method,
                    design=design,
                )
            )
            continue
        sub = matrix.loc[:, keep]
        if counts:
            table = _deseq2(
                sub,
                response,
                n_cpus=n_cpus,
                covariate=(covariate, values) if values is not None else None,
            )
        elif method == METHOD_LIMMA_TREND:
            nr = (np.asarray(response) == NON_RESPONDER).astype(float)
            design_matrix = (
                _design_matrix(response, values)
                if values is not None
                else np.column_stack([np.ones(len(nr)), nr])
            )
            table = _limma_trend_test(sub, design_matrix)
        elif values is not None:
            table = _ols_test(sub, response, values)
        else:
            table = _log_test(sub, response, method=log_method)
        table[Q_VALUE] = bh_adjust(table[P_VALUE])
        table[STATE], table[METHOD], table[DESIGN] = state, state_method, design
        table[N_NON_RESPONDERS], table[N_RESPONDERS] = n_nr, n_r
        table[TESTABLE], table[REASON] = True, ""
        parts.append(table.sort_values(P_VALUE, na_position="last")[DE_COLUMNS])
        logger.info(
            "%s: %d genes tested by %s, %s (%d non-responders, %d responders)",
            state,
            len(table),
            state_method,
            design,
            n_nr,
            n_r,
        )
    return pd.concat(parts, ignore_index=True)[DE_COLUMNS]


def ulm(statistic: pd.Series, weights: pd.Series) -> tuple[float, float, float]:
    """decoupler's univariate linear model: the statistic regressed on the program weights.

    Returns the slope, its t and the two-sided p (n - 2 degrees of freedom).
    """
    y, x = statistic.to_numpy(float), weights.reindex(statistic.index).fillna(0).to_numpy(float)
    fit = stats.linregress(x, y)
    t = fit.slope / fit.stderr if fit.stderr > 0 else np.nan
    p = 2 * stats.t.sf(abs(t), len(y) - 2) if np.isfinite(t) else np.nan
    return float(fit.slope), float(t), float(p)


def score_programs(
    de: pd.DataFrame,
    programs: Mapping[str, GeneProgram],
    *,
    combined: Mapping[str, tuple[str, str]] | None = None,
    min_genes: int = 5,
) -> pd.DataFrame:
    """Each program scored on each state's gene statistics with `ulm`, BH across programs.

    Parameters
    ----------
    de
        `differential_expression`'s table.
    programs
        Programs by name; up genes weigh +1, down genes -1.
    combined
        Name -> (positive program, negative program), scored as one signed program (lpo_signed:
        drivers +1, suppressors -1).
    min_genes
        Program genes among the tested genes needed for a score (decoupler's ``tmin`` 5).

    Returns
    -------
    `PROGRAM_COLUMNS`, one row per state and program.
    """
    nets = {}
    for name, program in programs.items():
        nets[name] = pd.Series({**{g: -1.0 for g in program.down}, **{g: 1.0 for g in program.up}})
    for name, (plus, minus) in (combined or {}).items():
        if plus in programs and minus in programs:
            nets[name] = pd.Series(
                {
                    **{g: -1.0 for g in programs[minus].genes},
                    **{g: 1.0 for g in programs[plus].genes},
                }
            )
    rows = []
    for state, table in de.groupby(STATE, sort=False):
        tested = table[table[TESTABLE].astype(bool)].dropna(subset=[STATISTIC])
        de_method = str(table[METHOD].iloc[0])
        statistic = pd.Series(tested[STATISTIC].to_numpy(float), index=tested[GENE].astype(str))
        part = []
        for name, net in nets.items():
            n_in = int(net.index.isin(statistic.index).sum())
            row = {
                STATE: state,
                PROGRAM: name,
                UNIT: UNIT_GENES,
                N_GENES: len(net),
                N_GENES_TESTED: n_in,
                SLOPE: np.nan,
                T_STATISTIC: np.nan,
                P_VALUE: np.nan,
                METHOD: "ulm",
                DE_METHOD: de_method,
                TESTABLE: False,
                REASON: "",
                NOTE: POOLED_RESPONSE_CAVEAT if state == ALL_CD8 else "",
            }
            if tested.empty:
                row[REASON] = str(table[REASON].iloc[0]) or "no gene tested in this state"
            elif n_in < min_genes:
                row[REASON] = f"not testable: {n_in} program genes tested, >= {min_genes} needed"
            else:
                slope, t, p = ulm(statistic, net)
                row.update({SLOPE: slope, T_STATISTIC: t, P_VALUE: p, TESTABLE: True})
                row[NOTE] = "; ".join(filter(None, (GENE_SET_CAVEAT, row[NOTE])))
            part.append(row)
        part = pd.DataFrame(part)
        part[Q_VALUE] = bh_adjust(part[P_VALUE])
        rows.append(part)
    return (
        pd.concat(rows, ignore_index=True)[PROGRAM_COLUMNS]
        if rows
        else pd.DataFrame(columns=PROGRAM_COLUMNS)
    )


def analyse(
    adata: ad.AnnData,
    *,
    value_type: str,
    programs: Mapping[str, GeneProgram],
    combined: Mapping[str, tuple[str, str]] | None = None,
    min_cells: int = 10,
    min_counts: int = 1000,
    min_patients_per_group: int = 2,
    min_gene_count: int = 10,
    min_gene_total_count: int = 15,
    min_gene_detected_fraction: float = 0.2,
    log_method: str = "limma_trend",
    min_program_genes: int = 5,
    n_cpus: int = 1,
    covariate: str | None = None,
    dataset: str = "",
    matrix=None,
) -> dict[str, pd.DataFrame]:
    """The resistance stage: pseudobulk, differential expression, programs on its statistics.

    Parameters
    ----------
    adata
        The programs stage's cells (``layers["counts"]`` for count data, log values in X else).
    value_type
        The dataset's ``value_type``.
    programs, combined
        Programs scored on the gene statistics (`score_programs`).
    min_cells, min_counts
        Minimums of a pseudobulk sample (`pseudobulk`).
    min_patients_per_group, min_gene_count, min_gene_total_count, min_gene_detected_fraction
    log_method
        Parameters of `differential_expression`.
    min_program_genes
        Tested genes a program needs for a score.
    n_cpus
        Threads of pydeseq2.
    covariate
        The dataset's design covariate (an ``obs`` column) or None (`differential_expression`).
    dataset
        The dataset's id, for messages.
    matrix
        The values to pool read from disk (`pseudobulk`), or None: they are in `adata`.

    Returns
    -------
    Tables ``pseudobulk_samples``, ``resistance_de`` and ``resistance_programs``.
    """
    samples, matrices = pseudobulk(
        adata,
        value_type=value_type,
        min_cells=min_cells,
        min_counts=min_counts,
        covariate_key=covariate,
        matrix=matrix,
    )
    de = differential_expression(
        matrices,
        value_type=value_type,
        min_patients_per_group=min_patients_per_group,
        min_gene_count=min_gene_count,
        min_gene_total_count=min_gene_total_count,
        min_gene_detected_fraction=min_gene_detected_fraction,
        log_method=log_method,
        n_cpus=n_cpus,
        skip_reason=response_skip_reason(adata.obs),
        covariate=covariate,
        dataset=dataset,
    )
    scores = score_programs(de, programs, combined=combined, min_genes=min_program_genes)
    return {"pseudobulk_samples": samples, "resistance_de": de, "resistance_programs": scores}
