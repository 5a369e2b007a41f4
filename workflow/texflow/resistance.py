"""Genes behind checkpoint resistance: pseudobulk differential expression per state (issue 21).

Patients, not cells, are the units (Squair et al. 2021 Nat Commun): the cells of one patient and
timepoint in one state (all CD8 cells, Tpex, Tex_int, Tex_term by the per-cell calls
``obs["cell_state"]``) are pooled into one pseudobulk sample,

- count data (``layers["counts"]``): the raw counts summed, then a negative-binomial GLM,
  design ``~ response``, from pydeseq2 (DESeq2's Wald test; log2 fold change non-responders over
  responders, its standard error, BH across the genes tested);
- TPM or log data (``value_type`` tpm / log_tpm / lognorm), which cannot go into a count model:
  the per-patient mean of log2 expression, compared by Welch's t (or Mann-Whitney) across
  patients, BH across genes; the log2 fold change is the difference of the group means.

Minimums follow decoupler's pseudobulk guidance (``get_pseudobulk`` min_cells 10, min_counts
1000; ``filter_by_expr``, edgeR's filterByExpr: a gene needs >= 10 counts in as many samples as
the smaller group has, and >= 15 counts in all). A state without enough patients gets one row
saying so, never a silent skip. The programs (IFN-I, LPO, every shipped identity program) are
then scored on each state's gene statistics with one univariate linear model per program
(decoupler's ``ulm``: the statistic regressed on the program's membership weight, +1 for its
genes, -1 for its negative genes, 0 otherwise; t of the slope).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse, stats

from .contract import (
    CELL_STATE_KEY,
    N_NON_RESPONDERS,
    N_RESPONDERS,
    P_VALUE,
    TEX_INT,
    TEX_TERM,
    TPEX,
)
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
STATES = (ALL_CD8, TPEX, TEX_INT, TEX_TERM)
COUNT_VALUE_TYPES = ("counts",)
LOG_VALUE_TYPES = ("tpm", "log_tpm", "lognorm")
#: Factor that turns X of the programs stage into log2: log_tpm is log2(TPM+1) as given; tpm
#: became ln(TPM+1) (cluster stage log1p) and lognorm is natural log (scanpy's log1p).
LOG2_FACTOR = {"log_tpm": 1.0, "tpm": 1.0 / np.log(2.0), "lognorm": 1.0 / np.log(2.0)}
METHOD_DESEQ2 = "pydeseq2_wald_nb_glm"
METHOD_WELCH = "welch_t_patient_mean_log2"
METHOD_MANN_WHITNEY = "mann_whitney_patient_mean_log2"

SAMPLE_COLUMNS = [
    "patient", "timepoint", "state", "response", "n_cells", "total_counts", "kept", "why_not",
]
DE_COLUMNS = [
    "gene", "state", "log2_fold_change", "lfc_se", "statistic", P_VALUE, "q_value",
    N_NON_RESPONDERS, N_RESPONDERS, "mean_expression", "method", "testable", "reason",
]
PROGRAM_COLUMNS = [
    "state", "program", "n_genes", "n_genes_tested", "slope", "t", P_VALUE, "q_value",
    "method", "de_method", "testable", "reason", "note",
]


def _text(values: pd.Series) -> pd.Series:
    out = values.astype(object).where(values.notna(), np.nan)
    return out.map(lambda v: np.nan if pd.isna(v) or str(v) in ("", "nan", "NA") else str(v))


def _state_masks(obs: pd.DataFrame, *, state_key: str) -> dict[str, np.ndarray]:
    calls = _text(obs[state_key]) if state_key in obs else pd.Series(np.nan, index=obs.index)
    masks = {ALL_CD8: np.ones(obs.shape[0], dtype=bool)}
    for state in STATES[1:]:
        masks[state] = (calls == state).to_numpy()
    return masks


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

    Returns
    -------
    The table of samples (`SAMPLE_COLUMNS`: every patient, timepoint and state, kept or not and
    why not) and, per state, the kept samples' matrix (rows ``patient|timepoint``, genes as
    columns). A patient keeps one sample per state: when several timepoints pass, the one with
    most cells (the patient is the unit; the others say so).
    """
    counts = value_type in COUNT_VALUE_TYPES
    if counts and "counts" not in adata.layers:
        raise ValueError("pseudobulk of count data needs layers['counts'] (raw counts)")
    if not counts and value_type not in LOG2_FACTOR:
        raise ValueError(f"value_type {value_type!r} is not one of counts, {', '.join(LOG2_FACTOR)}")
    matrix = adata.layers["counts"] if counts else adata.X
    matrix = sparse.csr_matrix(matrix, dtype=np.float64)
    obs = adata.obs
    patients = _text(obs[patient_key]) if patient_key in obs else pd.Series(np.nan, index=obs.index)
    timepoints = (_text(obs[timepoint_key]) if timepoint_key in obs
                  else pd.Series(np.nan, index=obs.index)).fillna("NA")
    labels, _ = patient_response(obs, patient_key=patient_key, response_key=response_key)
    rows, matrices = [], {}
    for state, mask in _state_masks(obs, state_key=state_key).items():
        groups = pd.DataFrame({"patient": patients, "timepoint": timepoints})[mask].dropna()
        sums, kept_rows = {}, []
        for (patient, timepoint), index in groups.groupby(["patient", "timepoint"]).groups.items():
            positions = obs.index.get_indexer(index)
            values = np.asarray(matrix[positions].sum(axis=0)).ravel()
            n_cells = len(positions)
            total = float(values.sum()) if counts else np.nan
            response = labels.get(patient, np.nan)
            why = []
            if n_cells < min_cells:
                why.append(f"{n_cells} cells < {min_cells}")
            if counts and total < min_counts:
                why.append(f"{total:.0f} counts < {min_counts}")
            if response not in (RESPONDER, NON_RESPONDER):
                why.append("no single response label for this patient")
            row = {"patient": patient, "timepoint": timepoint, "state": state, "response": response,
                       "n_cells": n_cells, "total_counts": total, "kept": not why, "why_not": "; ".join(why)}
            rows.append(row)
            if not why:
                kept_rows.append(len(rows) - 1)
                sums[len(rows) - 1] = values if counts else values / n_cells * LOG2_FACTOR[value_type]
        # one sample per patient: the timepoint with most cells
        best: dict[str, int] = {}
        for i in kept_rows:
            patient = rows[i]["patient"]
            if patient not in best or rows[i]["n_cells"] > rows[best[patient]]["n_cells"]:
                best[patient] = i
        for i in kept_rows:
            if best[rows[i]["patient"]] != i:
                rows[i]["kept"] = False
                rows[i]["why_not"] = ("another timepoint of this patient has more cells "
                                      "(one sample per patient: patients are the unit)")
        chosen = sorted(best.values(), key=lambda i: rows[i]["patient"])
        matrices[state] = pd.DataFrame(
            np.vstack([sums[i] for i in chosen]) if chosen else np.empty((0, adata.n_vars)),
            index=[f"{rows[i]['patient']}|{rows[i]['timepoint']}" for i in chosen],
            columns=adata.var_names.astype(str),
        )
        matrices[state].attrs["response"] = [rows[i]["response"] for i in chosen]
    table = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    return table, matrices


def _not_testable(state: str, reason: str, *, n_nr: int, n_r: int, method: str) -> pd.DataFrame:
    row = {column: np.nan for column in DE_COLUMNS}
    row.update(state=state, n_non_responders=n_nr, n_responders=n_r, method=method,
               testable=False, reason=reason, gene="")
    return pd.DataFrame([row], columns=DE_COLUMNS)


def expressed_genes(
    matrix: pd.DataFrame, response: Sequence[str], *, counts: bool, min_count: int = 10,
    min_total_count: int = 15,
) -> np.ndarray:
    """Genes expressed in enough pseudobulk samples (edgeR's filterByExpr, simplified).

    Counts: at least `min_count` counts in as many samples as the smaller response group has,
    and at least `min_total_count` counts over all samples. Log data: a per-patient mean above
    0 in as many samples as the smaller group has.
    """
    response = np.asarray(response)
    n_min = int(min((response == NON_RESPONDER).sum(), (response == RESPONDER).sum()))
    values = matrix.to_numpy()
    if counts:
        return ((values >= min_count).sum(axis=0) >= n_min) & (values.sum(axis=0) >= min_total_count)
    return (values > 0).sum(axis=0) >= n_min


def _deseq2(matrix: pd.DataFrame, response: Sequence[str], *, n_cpus: int) -> pd.DataFrame:
    """pydeseq2 on pseudobulk counts, design ~ response, non-responders over responders."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    inference = DefaultInference(n_cpus=n_cpus)
    metadata = pd.DataFrame({"response": list(response)}, index=matrix.index)
    # C order, as a DataFrame built row by row: pydeseq2's iterative fits end ~1% apart in the
    # standard errors on the same counts held column-major (measured; tests/unit/test_resistance)
    counts = pd.DataFrame(np.ascontiguousarray(matrix.round().to_numpy(dtype=np.int64)),
                          index=matrix.index, columns=matrix.columns)
    dds = DeseqDataSet(counts=counts, metadata=metadata, design="~response",
                       inference=inference, quiet=True)
    dds.deseq2()
    result = DeseqStats(dds, contrast=["response", NON_RESPONDER, RESPONDER], inference=inference,
                        independent_filter=False, quiet=True)
    result.summary()
    frame = result.results_df
    return pd.DataFrame({
        "gene": frame.index.astype(str), "log2_fold_change": frame["log2FoldChange"].to_numpy(),
        "lfc_se": frame["lfcSE"].to_numpy(), "statistic": frame["stat"].to_numpy(),
        P_VALUE: frame["pvalue"].to_numpy(), "mean_expression": frame["baseMean"].to_numpy(),
    })


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
    return pd.DataFrame({
        "gene": matrix.columns.astype(str), "log2_fold_change": diff, "lfc_se": se,
        "statistic": statistic, P_VALUE: p, "mean_expression": matrix.to_numpy().mean(axis=0),
    })


def differential_expression(
    matrices: Mapping[str, pd.DataFrame],
    *,
    value_type: str,
    min_patients_per_group: int = 2,
    min_gene_count: int = 10,
    min_gene_total_count: int = 15,
    log_method: str = "welch",
    n_cpus: int = 1,
    skip_reason: str = "",
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
    log_method
        ``welch`` or ``mann_whitney``.
    n_cpus
        Threads of pydeseq2.
    skip_reason
        Why responders cannot be compared at all (`texflow.stats.response_skip_reason`, e.g. no
        response labels): every state's row says so.

    Returns
    -------
    `DE_COLUMNS`, one row per tested gene and state, BH across the genes of a state; a state
    that cannot be tested gets one row with ``testable`` False and the reason.
    """
    counts = value_type in COUNT_VALUE_TYPES
    method = METHOD_DESEQ2 if counts else (METHOD_WELCH if log_method == "welch" else METHOD_MANN_WHITNEY)
    parts = []
    for state, matrix in matrices.items():
        response = list(matrix.attrs.get("response", []))
        n_nr, n_r = response.count(NON_RESPONDER), response.count(RESPONDER)
        if skip_reason:
            parts.append(_not_testable(state, f"not testable: {skip_reason}", n_nr=n_nr, n_r=n_r,
                                       method=method))
            continue
        if min(n_nr, n_r) < min_patients_per_group:
            reason = (f"not testable: {n_nr} non-responder and {n_r} responder patient(s) with a "
                      f"kept {state} pseudobulk sample, >= {min_patients_per_group} of each needed")
            parts.append(_not_testable(state, reason, n_nr=n_nr, n_r=n_r, method=method))
            continue
        keep = expressed_genes(matrix, response, counts=counts, min_count=min_gene_count,
                               min_total_count=min_gene_total_count)
        if keep.sum() < 2:
            parts.append(_not_testable(state, f"not testable: {int(keep.sum())} gene(s) pass the "
                                       "expression filter", n_nr=n_nr, n_r=n_r, method=method))
            continue
        sub = matrix.loc[:, keep]
        table = _deseq2(sub, response, n_cpus=n_cpus) if counts else _log_test(sub, response, method=log_method)
        table["q_value"] = bh_adjust(table[P_VALUE])
        table["state"], table["method"] = state, method
        table[N_NON_RESPONDERS], table[N_RESPONDERS] = n_nr, n_r
        table["testable"], table["reason"] = True, ""
        parts.append(table.sort_values(P_VALUE, na_position="last")[DE_COLUMNS])
        logger.info("%s: %d genes tested by %s (%d non-responders, %d responders)", state,
                    len(table), method, n_nr, n_r)
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
            nets[name] = pd.Series({**{g: -1.0 for g in programs[minus].genes},
                                    **{g: 1.0 for g in programs[plus].genes}})
    rows = []
    for state, table in de.groupby("state", sort=False):
        tested = table[table["testable"].astype(bool)].dropna(subset=["statistic"])
        de_method = str(table["method"].iloc[0])
        statistic = pd.Series(tested["statistic"].to_numpy(float), index=tested["gene"].astype(str))
        part = []
        for name, net in nets.items():
            n_in = int(net.index.isin(statistic.index).sum())
            row = {"state": state, "program": name, "n_genes": len(net), "n_genes_tested": n_in,
                       "slope": np.nan, "t": np.nan, P_VALUE: np.nan, "method": "ulm", "de_method": de_method,
                       "testable": False, "reason": "",
                       "note": POOLED_RESPONSE_CAVEAT if state == ALL_CD8 else ""}
            if tested.empty:
                row["reason"] = str(table["reason"].iloc[0]) or "no gene tested in this state"
            elif n_in < min_genes:
                row["reason"] = f"not testable: {n_in} program genes tested, >= {min_genes} needed"
            else:
                slope, t, p = ulm(statistic, net)
                row.update(slope=slope, t=t, p_value=p, testable=True)
            part.append(row)
        part = pd.DataFrame(part)
        part["q_value"] = bh_adjust(part[P_VALUE])
        rows.append(part)
    return pd.concat(rows, ignore_index=True)[PROGRAM_COLUMNS] if rows else pd.DataFrame(columns=PROGRAM_COLUMNS)


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
    log_method: str = "welch",
    min_program_genes: int = 5,
    n_cpus: int = 1,
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
    min_patients_per_group, min_gene_count, min_gene_total_count, log_method
        Parameters of `differential_expression`.
    min_program_genes
        Tested genes a program needs for a score.
    n_cpus
        Threads of pydeseq2.

    Returns
    -------
    Tables ``pseudobulk_samples``, ``resistance_de`` and ``resistance_programs``.
    """
    samples, matrices = pseudobulk(adata, value_type=value_type, min_cells=min_cells,
                                   min_counts=min_counts)
    de = differential_expression(
        matrices, value_type=value_type, min_patients_per_group=min_patients_per_group,
        min_gene_count=min_gene_count, min_gene_total_count=min_gene_total_count,
        log_method=log_method, n_cpus=n_cpus,
        skip_reason=response_skip_reason(adata.obs),
    )
    scores = score_programs(de, programs, combined=combined, min_genes=min_program_genes)
    return {"pseudobulk_samples": samples, "resistance_de": de, "resistance_programs": scores}
