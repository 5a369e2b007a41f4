"""Statistics with the patient as the unit wherever patients exist.

Cells of one patient are not independent replicates: a test that counts cells as units calls
patient-to-patient differences "significant" (pseudoreplication; Squair et al. 2021 Nat Commun;
Zimmerman et al. 2021 Nat Commun). So:

- association with pseudotime: Spearman rho within each patient, combined across patients by
  the Fisher-z mean weighted by n - 3 (the inverse variance of z; Fisher 1921), tested by
  permuting pseudotime *within* each patient (seeded), which keeps each patient's own mix of
  cells and removes any between-patient confounding; a random-effects check (one-sample t-test
  of the per-patient z across patients) is reported next to it;
- Tpex vs Tex_term: per-patient mean score per state, paired Wilcoxon signed-rank test on
  patients that have both states (else Mann-Whitney on patient means);
- responders vs non-responders: per-patient mean score within each state, Mann-Whitney on
  patient means, with difference of means, Cliff's delta and Hedges' g.

Without patients (a single mouse sample, say) every test falls back to cells as units and the
tables say so in the ``unit`` column. Every row carries effect size, n_patients, n_cells, the
p-value and the Benjamini-Hochberg adjusted p-value across programs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from .contract import (
    ADJUSTED_FOR,
    ALL_CD8,
    BALANCE_COLUMN,
    BALANCE_MEASURE,
    BALANCE_ROW,
    CLIFFS_DELTA,
    COMPARISON,
    COMPOSITION_MEASURE,
    COUNT_PREFIX,
    COVERAGE,
    EFFECT,
    EFFECT_STANDARDISED,
    EFFECT_TYPE,
    EXHAUSTED_LINEAGE,
    EXHAUSTED_STATES,
    EXHAUSTION_AXIS_KEY,
    EXHAUSTION_AXIS_PROGRAMS,
    FRACTION_PREFIX,
    GROUPED_BY,
    HEDGES_G,
    INCLUDED,
    MEAN_NON_RESPONDERS,
    MEAN_RESPONDERS,
    N_CD8_CELLS,
    N_CELLS,
    N_GENES,
    N_NON_RESPONDERS,
    N_PATIENTS,
    N_PATIENTS_POSITIVE,
    N_PERMUTATIONS,
    N_RESPONDERS,
    N_UP,
    N_UP_PRESENT,
    NON_RESPONDER,
    NOT_TESTABLE,
    NOTE,
    NOTE_CELLS_AS_UNITS,
    ORDERING,
    P_ADJ,
    P_VALUE,
    P_VALUE_RANDOM_EFFECTS,
    PATIENT,
    PROGRAM,
    REASON_AXIS_PROGRAM,
    REASON_CONSTANT_SCORE,
    REASON_NO_CELLS,
    REASON_STATE_ABSENT,
    REASON_TOO_FEW_CELLS,
    REASON_TOO_FEW_PATIENTS_RESPONSE,
    REASON_TOO_FEW_PATIENTS_STATES,
    RESPONDER,
    RESPONSE,
    SAMPLE,
    SKIPPED,
    SKIPPED_PREFIX,
    STATE,
    STATE_CATEGORIES,
    STATE_KEY,
    TEST,
    TEX_TERM,
    TPEX,
    TRUSTED,
    UNIT,
    UNIT_CELLS,
    UNIT_PATIENTS,
    lineage_state_key,
    missing_labels,
)

logger = logging.getLogger(__name__)


def _labels(obs: pd.DataFrame, key: str) -> pd.Series:
    """String labels of obs[key], NaN where `contract.missing_labels` says a value is missing."""
    if key not in obs:
        return pd.Series(np.nan, index=obs.index, dtype=object)
    values = obs[key].astype(object).map(lambda v: v if isinstance(v, str) else str(v))
    return values.where(~missing_labels(obs[key]).to_numpy(), np.nan)


def choose_unit(obs: pd.DataFrame, *, patient_key: str = "patient") -> str:
    """``"patients"`` when at least two patients are labelled, else ``"cells"``."""
    return UNIT_PATIENTS if _labels(obs, patient_key).nunique() >= 2 else UNIT_CELLS


def bh_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values; NaN stays NaN (not counted as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return out


def cliffs_delta(x: np.ndarray, y: np.ndarray) -> float:
    """Cliff's delta, P(x > y) - P(x < y), in [-1, 1]."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size == 0 or y.size == 0:
        return np.nan
    diff = np.sign(x[:, None] - y[None, :])
    return float(diff.mean())


def hedges_g(x: np.ndarray, y: np.ndarray) -> float:
    """Hedges' g (bias-corrected standardised mean difference, x - y)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = x.size, y.size
    if nx < 2 or ny < 2:
        return np.nan
    pooled = np.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return np.nan
    correction = 1 - 3 / (4 * (nx + ny) - 9)
    return float((x.mean() - y.mean()) / pooled * correction)


#: A score is not testable where a single value covers at least this share of the cells a
#: comparison uses. UCell gives 0 to every cell none of whose top-ranked genes is in the program:
#: the Tpex program on Smart-seq2 data (GSE120575) is 0 in 98% of the CD8 cells. Rank tests on
#: such ties return a difference of 0 and p = 1, which reads as "no difference" where the truth
#: is that the data do not measure the program; the row says "not testable" and why instead.
MAX_TIED_FRACTION = 0.95


def constant_score_reason(values: Sequence[float] | np.ndarray) -> str:
    """Why a score cannot be tested on these cells ("" when it can): one value in at least
    `MAX_TIED_FRACTION` of them (`contract.REASON_CONSTANT_SCORE`, with the numbers)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ""
    uniques, counts = np.unique(values, return_counts=True)
    top = int(np.argmax(counts))
    share = counts[top] / values.size
    if share < MAX_TIED_FRACTION:
        return ""
    return REASON_CONSTANT_SCORE.format(
        value=f"{uniques[top]:.3g}",
        percent=f"{100 * share:.0f}",
        n_cells=values.size,
        threshold=f"{100 * MAX_TIED_FRACTION:.0f}",
    )


def coverage_caveats(
    coverage: pd.DataFrame, *, combined: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str]:
    """The coverage of every program texflow does not trust, in words, to go beside each of its
    verdicts ("lpo_drivers: 3 of 16 genes measured, not trusted").

    Parameters
    ----------
    coverage
        `texflow.signatures.coverage_table` (program_coverage.tsv): ``trusted`` is False when
        too few of the program's positive genes are measured for its score to mean the program.
    combined
        Scores built from other programs (``lpo_signed``: drivers - suppressors) and their parts:
        such a score carries the caveat of every untrusted part.

    Returns
    -------
    Program -> caveat, only for untrusted programs (and scores built on one).
    """
    caveats = {}
    for row in coverage.to_dict("records"):
        if str(row.get(TRUSTED, True)).lower() not in ("false", "0"):
            continue
        genes = "genes" if int(row[N_UP]) == int(row[N_GENES]) else "up genes"
        caveats[str(row[PROGRAM])] = (
            f"{row[PROGRAM]}: {int(row[N_UP_PRESENT])} of "
            f"{int(row[N_UP])} {genes} measured, not trusted"
        )
    for name, parts in (combined or {}).items():
        if text := "; ".join(caveats[p] for p in parts if p in caveats):
            caveats[name] = text
    return caveats


# ----------------------------------------------------------------------------------------------
# association with pseudotime


def _centred_unit_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks, centred and scaled to unit norm (so a dot product is Spearman's rho)."""
    r = stats.rankdata(values, axis=0)
    r = r - r.mean(axis=0)
    norm = np.sqrt((r**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, r / norm, np.nan)


def _residual_unit(r: np.ndarray, rz: np.ndarray) -> np.ndarray:
    """Residuals of centred unit-norm ranks `r` on unit covariate ranks `rz`, renormalised."""
    res = r - np.outer(rz, rz @ np.nan_to_num(r)).reshape(r.shape)
    norm = np.sqrt((res**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 1e-12, res / norm, np.nan)


def pseudotime_associations(
    obs: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    pseudotime_key: str = "pseudotime",
    patient_key: str = "patient",
    min_cells_per_patient: int = 10,
    n_permutations: int = 2000,
    seed: int = 0,
    covariate: np.ndarray | None = None,
    covariate_name: str = "",
    ordering: str = "with pseudotime",
) -> pd.DataFrame:
    """Association of each score with pseudotime, patients as units.

    Parameters
    ----------
    obs
        Cell annotations with `pseudotime_key` (NaN = not in the lineage) and `patient_key`.
    scores
        Cells x programs (same index as `obs`).
    min_cells_per_patient
        Patients with fewer lineage cells are left out (a rank correlation on a handful of
        cells is noise; with n - 3 weights a 10-cell patient still counts 7).
    covariate
        Per-cell nuisance variable (e.g. log genes detected) partialled out of both the score
        and pseudotime ranks within each patient: the statistic becomes the partial Spearman
        correlation, and the permutations shuffle the pseudotime residuals (Kennedy 1995,
        J Bus Econ Stat). Rank scores such as UCell rise with sequencing depth (a gene is more
        often detected in a deeper cell), and depth often drifts along a trajectory: measured on
        simulated data with flat programs, UCell IFN-I score vs library size rho = 0.64 and an
        unadjusted "rise" along pseudotime called in 2 of 2 seeds; adjusted, rho = -0.03.
    ordering
        How the notes name the ordering the cells need ("with pseudotime"; `axis_associations`:
        "on the exhaustion axis").

    Returns
    -------
    One row per program: ``effect`` (combined Spearman rho = tanh of the weighted mean z),
    ``p_value`` (within-patient permutation, two-sided, (1 + b) / (1 + B)), ``p_adj`` (BH across
    programs), ``p_value_random_effects`` (t-test of per-patient z, >= 3 patients),
    ``n_patients``, ``n_patients_positive``, ``n_cells``, ``unit``, ``note``.
    """
    rng = np.random.default_rng(seed)
    pt = obs[pseudotime_key].to_numpy(dtype=float)
    in_lineage = np.isfinite(pt)
    unit = choose_unit(obs.loc[in_lineage], patient_key=patient_key)
    groups = (
        _labels(obs, patient_key).to_numpy()
        if unit == UNIT_PATIENTS
        else np.full(obs.shape[0], "all cells", dtype=object)
    )
    blocks, dropped = _lineage_blocks(groups, in_lineage, min_cells=min_cells_per_patient)
    programs = list(scores.columns)
    base = {PROGRAM: programs, UNIT: unit, N_PERMUTATIONS: n_permutations}
    if not blocks:
        note = f"no {unit[:-1]} group has >= {min_cells_per_patient} lineage cells {ordering}"
        return pd.DataFrame(
            {
                **base,
                EFFECT: np.nan,
                P_VALUE: np.nan,
                P_ADJ: np.nan,
                P_VALUE_RANDOM_EFFECTS: np.nan,
                N_PATIENTS: 0,
                N_PATIENTS_POSITIVE: 0,
                N_CELLS: 0,
                NOTE: note,
            }
        )
    values = scores.to_numpy(dtype=float)
    rank_blocks, z_obs, w = _block_correlations(values, pt, blocks, covariate=covariate)
    zbar = np.nansum(w * np.nan_to_num(z_obs), axis=0) / np.where(w.sum(0) > 0, w.sum(0), np.nan)
    p_perm = _permutation_p(rank_blocks, w, zbar, n_permutations=n_permutations, rng=rng)
    used = np.concatenate([idx for _, idx in blocks])
    constant = [constant_score_reason(values[used, j]) for j in range(len(programs))]
    untestable = np.array([bool(reason) for reason in constant])
    zbar = np.where(untestable, np.nan, zbar)
    p_perm = np.where(np.isfinite(zbar), p_perm, np.nan)
    p_re = _random_effects_p(z_obs) if unit == UNIT_PATIENTS else np.full(len(programs), np.nan)
    note = _association_note(
        unit, n_dropped=len(dropped), min_cells=min_cells_per_patient,
        covariate_name=(covariate_name or "a per-cell covariate") if covariate is not None else "",
    )  # fmt: skip
    table = pd.DataFrame(
        {
            **base,
            EFFECT: np.tanh(zbar),
            EFFECT_TYPE: "partial_spearman_rho_combined"
            if covariate is not None
            else "spearman_rho_combined",
            ADJUSTED_FOR: covariate_name if covariate is not None else "",
            P_VALUE: p_perm,
            P_ADJ: bh_adjust(p_perm),
            P_VALUE_RANDOM_EFFECTS: p_re,
            N_PATIENTS: np.isfinite(z_obs).sum(axis=0) if unit == UNIT_PATIENTS else 0,
            N_PATIENTS_POSITIVE: (z_obs > 0).sum(axis=0) if unit == UNIT_PATIENTS else 0,
            N_CELLS: int(used.size),
            NOTE: note,
        }
    )
    if untestable.any():  # the reason replaces the note: nothing was tested
        table.loc[untestable, [P_VALUE_RANDOM_EFFECTS]] = np.nan
        table.loc[untestable, [N_PATIENTS, N_PATIENTS_POSITIVE]] = 0
        table.loc[untestable, NOTE] = [r for r in constant if r]
    return table


def _lineage_blocks(
    groups: np.ndarray, in_lineage: np.ndarray, *, min_cells: int
) -> tuple[list[tuple[object, np.ndarray]], list[str]]:
    """The lineage cells of each group (patient) with at least `min_cells` of them (and 4, the
    fewest a rank correlation with n - 3 weights can use), and the groups left out."""
    ok = in_lineage & pd.notna(groups)
    blocks, dropped = [], []
    for group in pd.unique(groups[ok]):
        idx = np.flatnonzero(ok & (groups == group))
        if idx.size < max(min_cells, 4):
            dropped.append(str(group))
            continue
        blocks.append((group, idx))
    return blocks, dropped


def _block_correlations(
    values: np.ndarray,
    pt: np.ndarray,
    blocks: Sequence[tuple[object, np.ndarray]],
    *,
    covariate: np.ndarray | None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Per group: the centred unit ranks of pseudotime and of the scores (partialled on the
    covariate's ranks when given), the Fisher z of their Spearman rho (NaN for a score constant
    in the group), and the n - 3 weight of each (0 where z is NaN).

    Returns (rank blocks, z: groups x programs, weights: groups x programs)."""
    weights, z_obs, rank_blocks = [], [], []
    for _, idx in blocks:
        ry = _centred_unit_ranks(values[idx])  # cells x programs
        rx = _centred_unit_ranks(pt[idx])
        if covariate is not None:
            rz = _centred_unit_ranks(np.asarray(covariate, dtype=float)[idx])
            if np.isfinite(rz).all():
                ry = _residual_unit(ry, rz)
                rx = _residual_unit(rx, rz)
        rank_blocks.append((rx, ry))
        rho = np.clip(rx @ np.nan_to_num(ry), -0.999999, 0.999999)
        rho = np.where(np.isnan(ry).all(axis=0), np.nan, rho)  # constant score in this patient
        z_obs.append(np.arctanh(rho))
        weights.append(idx.size - 3)
    z_obs = np.array(z_obs)
    return rank_blocks, z_obs, np.array(weights, dtype=float)[:, None] * np.isfinite(z_obs)


def _permutation_p(
    rank_blocks: Sequence[tuple[np.ndarray, np.ndarray]],
    w: np.ndarray,
    zbar: np.ndarray,
    *,
    n_permutations: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Two-sided p of the weighted mean z, pseudotime ranks permuted within each group:
    (1 + b) / (1 + B)."""
    exceed = np.zeros(zbar.shape[0])
    for _ in range(n_permutations):
        zsum = np.zeros(zbar.shape[0])
        for (rx, ry), wg in zip(rank_blocks, w, strict=True):
            rho = np.clip(rng.permutation(rx) @ np.nan_to_num(ry), -0.999999, 0.999999)
            zsum += wg * np.arctanh(rho)
        zperm = zsum / np.where(w.sum(0) > 0, w.sum(0), np.nan)
        exceed += np.abs(zperm) >= np.abs(zbar) - 1e-12
    return (1 + exceed) / (1 + n_permutations)


def _random_effects_p(z_obs: np.ndarray) -> np.ndarray:
    """Per program, the one-sample t-test of the per-patient z against 0 (>= 3 patients with a
    z that varies; else NaN): the random-effects check beside the permutation p."""
    p_re = np.full(z_obs.shape[1], np.nan)
    for j in range(z_obs.shape[1]):
        zj = z_obs[:, j][np.isfinite(z_obs[:, j])]
        if zj.size >= 3 and zj.std() > 0:
            p_re[j] = stats.ttest_1samp(zj, 0.0).pvalue
    return p_re


def _association_note(unit: str, *, n_dropped: int, min_cells: int, covariate_name: str) -> str:
    """The caveats of an association table: cells as units, patients left out, the covariate."""
    parts = []
    if unit == UNIT_CELLS:
        parts.append(f"{NOTE_CELLS_AS_UNITS}; p-values optimistic")
    if n_dropped:
        parts.append(f"{n_dropped} patient(s) with < {min_cells} lineage cells left out")
    if covariate_name:
        parts.append(f"partial Spearman, adjusted for {covariate_name}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# group comparisons on per-patient means


def patient_means(
    obs: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    group_key: str,
    patient_key: str = "patient",
    min_cells: int = 3,
) -> pd.DataFrame:
    """Mean score per (patient, group) with at least `min_cells` cells; column ``n_cells``."""
    frame = scores.copy()
    frame["_patient"] = _labels(obs, patient_key).to_numpy()
    frame["_group"] = _labels(obs, group_key).to_numpy()
    frame = frame.dropna(subset=["_patient", "_group"])
    grouped = frame.groupby(["_patient", "_group"])
    means = grouped[list(scores.columns)].mean()
    means[N_CELLS] = grouped.size()
    return means[means[N_CELLS] >= min_cells]


def axis_associations(
    obs: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    state_key: str | None = None,
    states: Sequence[str] = EXHAUSTED_STATES,
    shared_genes: Mapping[str, Sequence[str]] | None = None,
    **options,
) -> pd.DataFrame:
    """Association of each score with the exhaustion axis over the exhausted-lineage cells.

    The second ordering beside diffusion pseudotime (issue 16): every cell the states stage
    calls Tpex, Tex_int or Tex_term has a place on the kNN-smoothed exhaustion axis
    (``obs["exhaustion_axis"]``, smoothed Tex-term minus Tpex score), whether or not a
    trajectory could be built, so a lineage without enough Tpex for a root (most human
    tumours) still answers "does the program rise with exhaustion?". The test is
    `pseudotime_associations` on that ordering (patients as units, within-patient permutation).

    Parameters
    ----------
    obs
        Cell annotations with ``exhaustion_axis``, the state calls and the patient labels.
    scores
        Cells x programs. The programs the axis is made of (`contract.EXHAUSTION_AXIS_PROGRAMS`)
        are not tested along it (a score against itself): their rows are ``not_testable`` with
        `contract.REASON_AXIS_PROGRAM`.
    state_key
        The state calls defining the lineage (default `contract.lineage_state_key`).
    shared_genes
        Program -> genes it shares with the axis programs; named in the row's note (a shared
        gene moves both scores, so part of the association is built in).
    options
        Passed to `pseudotime_associations` (min_cells_per_patient, n_permutations, seed,
        covariate, covariate_name).

    Returns
    -------
    `pseudotime_associations`' table with ``ordering`` = ``exhaustion_axis`` and ``state_key``;
    ``effect`` is the combined per-patient Spearman rho with the axis.
    """
    state_key = state_key or lineage_state_key(obs)
    tested = scores.drop(columns=[p for p in EXHAUSTION_AXIS_PROGRAMS if p in scores])
    if EXHAUSTION_AXIS_KEY not in obs or state_key not in obs:
        table = pd.DataFrame(
            {
                PROGRAM: list(tested.columns),
                UNIT: "",
                EFFECT: np.nan,
                P_VALUE: np.nan,
                P_ADJ: np.nan,
                N_PATIENTS: 0,
                N_PATIENTS_POSITIVE: 0,
                N_CELLS: 0,
                NOTE: f"no obs[{EXHAUSTION_AXIS_KEY!r}] (states stage)",
            }
        )
    else:
        lineage = obs[state_key].astype(str).isin(states).to_numpy()
        axis = pd.to_numeric(obs[EXHAUSTION_AXIS_KEY], errors="coerce").where(lineage)
        table = pseudotime_associations(
            obs.assign(_axis=axis),
            tested,
            pseudotime_key="_axis",
            ordering="on the exhaustion axis",
            **options,
        )
    notes = []
    for row in table.itertuples():
        shared = list((shared_genes or {}).get(str(row.program), ()))
        extra = f"shares {', '.join(shared)} with the axis programs" if shared else ""
        notes.append(
            "; ".join(n for n in (str(row.note) if pd.notna(row.note) else "", extra) if n)
        )
    table[NOTE] = notes
    circular = [p for p in EXHAUSTION_AXIS_PROGRAMS if p in scores]
    if circular:
        table = pd.concat(
            [
                table,
                pd.DataFrame(
                    {
                        PROGRAM: circular,
                        UNIT: table[UNIT].iloc[0] if len(table) else "",
                        TEST: NOT_TESTABLE,
                        EFFECT: np.nan,
                        P_VALUE: np.nan,
                        P_ADJ: np.nan,
                        N_PATIENTS: 0,
                        N_PATIENTS_POSITIVE: 0,
                        N_CELLS: 0,
                        NOTE: REASON_AXIS_PROGRAM,
                    }
                ),
            ],
            ignore_index=True,
        )
    table.insert(1, ORDERING, EXHAUSTION_AXIS_KEY)
    table[STATE_KEY] = state_key
    return table


def compare_states(
    obs: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    state_key: str | None = None,
    patient_key: str = "patient",
    first: str = TPEX,
    second: str = TEX_TERM,
    min_cells: int = 3,
    min_paired: int = 3,
) -> pd.DataFrame:
    """`second` vs `first` for every score; effect = mean(second) - mean(first).

    Paired Wilcoxon signed-rank on per-patient means over patients with both states (at least
    `min_paired` of them); otherwise Mann-Whitney on the per-patient means of each state;
    without patients, Mann-Whitney on cells. `state_key` defaults to the per-cell calls
    (`contract.lineage_state_key`); the table's ``state_key`` column says which was used.
    """
    state_key = state_key or lineage_state_key(obs)
    programs = list(scores.columns)
    unit = choose_unit(obs, patient_key=patient_key)
    rows = []
    state = _labels(obs, state_key)
    comparison = f"{second} vs {first}"
    n_first, n_second = int((state == first).sum()), int((state == second).sum())
    in_pair = state.isin([first, second]).to_numpy()
    numbers = {"first": first, "second": second, "min_cells": min_cells}

    def untested(program: str, note: str, n_cells: int) -> dict:
        return {
            PROGRAM: program,
            COMPARISON: comparison,
            UNIT: unit,
            TEST: NOT_TESTABLE,
            EFFECT: np.nan,
            EFFECT_TYPE: "",
            EFFECT_STANDARDISED: np.nan,
            N_PATIENTS: 0,
            N_CELLS: n_cells,
            P_VALUE: np.nan,
            NOTE: note,
        }

    absent = [s for s, n in ((first, n_first), (second, n_second)) if n == 0]
    if absent:  # the first thing that blocks the test, in numbers
        note = REASON_STATE_ABSENT.format(
            absent=" and no ".join(absent),
            key=state_key,
            n_first=n_first,
            n_second=n_second,
            **numbers,
        )
        rows = [untested(program, note, n_first + n_second) for program in programs]
    elif unit == UNIT_PATIENTS:
        means = patient_means(
            obs, scores, group_key=state_key, patient_key=patient_key, min_cells=min_cells
        )
        wide = means.reset_index().pivot(index="_patient", columns="_group")
        has = {
            s: wide[(N_CELLS, s)].notna()
            if (N_CELLS, s) in wide
            else pd.Series(False, index=wide.index)
            for s in (first, second)
        }
        paired = has[first] & has[second]
        for program in programs:
            a = wide[(program, first)] if (program, first) in wide else pd.Series(dtype=float)
            b = wide[(program, second)] if (program, second) in wide else pd.Series(dtype=float)
            n_cells = int(
                sum(
                    wide[(N_CELLS, s)][has[s]].sum()
                    for s in (first, second)
                    if (N_CELLS, s) in wide
                )
            )
            row = {PROGRAM: program, COMPARISON: comparison, UNIT: unit}
            if paired.sum() >= min_paired:
                d = (b - a)[paired].to_numpy(float)
                p = stats.wilcoxon(d).pvalue if np.any(d != 0) else 1.0
                row.update(
                    {
                        TEST: "wilcoxon_signed_rank_paired",
                        EFFECT: float(d.mean()),
                        EFFECT_TYPE: "mean_paired_difference",
                        EFFECT_STANDARDISED: float(d.mean() / d.std(ddof=1))
                        if d.std(ddof=1) > 0
                        else np.nan,
                        N_PATIENTS: int(paired.sum()),
                        N_CELLS: n_cells,
                        P_VALUE: float(p),
                        NOTE: "",
                    }
                )
            elif (x := b[has[second]].to_numpy(float)).size >= 2 and (
                y := a[has[first]].to_numpy(float)
            ).size >= 2:
                row.update(
                    {
                        TEST: "mann_whitney_patient_means",
                        EFFECT: float(x.mean() - y.mean()),
                        EFFECT_TYPE: "difference_of_patient_means",
                        EFFECT_STANDARDISED: cliffs_delta(x, y),
                        N_PATIENTS: int((has[first] | has[second]).sum()),
                        N_CELLS: n_cells,
                        P_VALUE: float(stats.mannwhitneyu(x, y).pvalue),
                        NOTE: f"only {int(paired.sum())} patient(s) with both states: "
                        "unpaired test on patient means",
                    }
                )
            else:
                row = untested(
                    program,
                    REASON_TOO_FEW_PATIENTS_STATES.format(
                        n_first=int(has[first].sum()), n_second=int(has[second].sum()), **numbers
                    ),
                    n_cells,
                )
            rows.append(row)
    else:
        for program in programs:
            x = scores.loc[(state == second).to_numpy(), program].to_numpy(float)
            y = scores.loc[(state == first).to_numpy(), program].to_numpy(float)
            if x.size < min_cells or y.size < min_cells:
                rows.append(
                    untested(
                        program,
                        REASON_TOO_FEW_CELLS.format(n_first=y.size, n_second=x.size, **numbers),
                        int(x.size + y.size),
                    )
                )
                continue
            rows.append(
                {
                    PROGRAM: program,
                    COMPARISON: comparison,
                    UNIT: unit,
                    TEST: "mann_whitney_cells",
                    EFFECT: float(x.mean() - y.mean()),
                    EFFECT_TYPE: "difference_of_cell_means",
                    EFFECT_STANDARDISED: cliffs_delta(x, y),
                    N_PATIENTS: 0,
                    N_CELLS: int(x.size + y.size),
                    P_VALUE: float(stats.mannwhitneyu(x, y).pvalue),
                    NOTE: NOTE_CELLS_AS_UNITS,
                }
            )
    for row in rows:  # a score the data do not measure: not testable, not "no difference"
        if row[TEST] != NOT_TESTABLE and (
            reason := constant_score_reason(scores.loc[in_pair, row[PROGRAM]])
        ):
            row.update(untested(row[PROGRAM], reason, row[N_CELLS]))
    table = pd.DataFrame(rows)
    table[P_ADJ] = bh_adjust(table[P_VALUE])
    table[STATE_KEY] = state_key
    return table


def response_skip_reason(obs: pd.DataFrame, *, response_key: str = "response") -> str:
    """Why responders cannot be compared with non-responders here ("" when they can)."""
    labels = _labels(obs, response_key)
    if labels.isna().all():
        return "no response labels in this dataset"
    present = set(labels.dropna())
    missing = {RESPONDER, NON_RESPONDER} - present
    if missing:
        return f"response labels lack {', '.join(sorted(missing))}: nothing to compare"
    return ""


RESPONSE_COLUMNS = [
    STATE,
    PROGRAM,
    COMPARISON,
    UNIT,
    TEST,
    EFFECT,
    EFFECT_TYPE,
    CLIFFS_DELTA,
    HEDGES_G,
    MEAN_RESPONDERS,
    MEAN_NON_RESPONDERS,
    N_PATIENTS,
    N_RESPONDERS,
    N_NON_RESPONDERS,
    N_CELLS,
    P_VALUE,
    P_ADJ,
    STATE_KEY,
    NOTE,
]


def patient_response(
    obs: pd.DataFrame, *, patient_key: str = "patient", response_key: str = "response"
) -> tuple[pd.Series, str]:
    """Each patient's response label, and a note naming the patients left out.

    Response is a patient-level label, but public series give it per biopsy (GSE120575: P1, P4,
    P5 and P28 have biopsies labelled both ways). A patient whose cells carry more than one
    label is left out of the comparison, never given the label of its first cell; the note
    (empty when none) names them. The caller that writes a table logs the note (once per stage,
    not once per figure that reads the labels).
    """
    frame = pd.DataFrame(
        {PATIENT: _labels(obs, patient_key), RESPONSE: _labels(obs, response_key)}
    ).dropna()
    labels = frame.groupby(PATIENT)[RESPONSE].unique()
    conflicting = sorted(str(p) for p, values in labels.items() if len(values) > 1)
    per_patient = labels[labels.map(len) == 1].map(lambda values: values[0])
    note = ""
    if conflicting:
        note = (
            f"{len(conflicting)} patient(s) left out, their samples carry both response "
            f"labels: {', '.join(conflicting)}"
        )
    return per_patient, note


def _clear_as_not_testable(row: dict, note: str) -> None:
    """Turn a computed patient-group row into a not-testable one: no effect, no p, the reason."""
    row.update(
        {
            EFFECT: np.nan,
            CLIFFS_DELTA: np.nan,
            HEDGES_G: np.nan,
            P_VALUE: np.nan,
            TEST: NOT_TESTABLE,
            N_PATIENTS: 0,
            NOTE: note,
        }
    )


def _patient_group_row(
    x: np.ndarray, y: np.ndarray, *, test: str = "mann_whitney_patient_values", **fields
) -> dict:
    """One response-table row comparing non-responder values `x` with responder values `y`
    (Mann-Whitney on patients; NaN effect and p with fewer than 2 patients in a group)."""
    ok = x.size >= 2 and y.size >= 2
    return {
        **fields,
        UNIT: UNIT_PATIENTS,
        TEST: test,
        EFFECT: float(x.mean() - y.mean()) if ok else np.nan,
        CLIFFS_DELTA: cliffs_delta(x, y) if ok else np.nan,
        HEDGES_G: hedges_g(x, y) if ok else np.nan,
        MEAN_RESPONDERS: float(y.mean()) if y.size else np.nan,
        MEAN_NON_RESPONDERS: float(x.mean()) if x.size else np.nan,
        N_PATIENTS: int(x.size + y.size),
        N_RESPONDERS: int(y.size),
        N_NON_RESPONDERS: int(x.size),
        P_VALUE: float(stats.mannwhitneyu(x, y).pvalue) if ok else np.nan,
    }


def compare_response(
    obs: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    states: Sequence[str] = EXHAUSTED_STATES,
    state_key: str | None = None,
    patient_key: str = "patient",
    response_key: str = "response",
    min_cells: int = 3,
) -> tuple[pd.DataFrame, str]:
    """Responders vs non-responders in all CD8 cells, within each state and in the whole
    lineage, per program.

    Effect = mean(non-responders) - mean(responders) on per-patient means (Cliff's delta and
    Hedges' g alongside, same direction: positive = higher in non-responders, the direction of
    the IFN-I hypothesis of Chen et al. 2022); Mann-Whitney U on patient means. BH across
    programs within a state. `state_key` defaults to the per-cell calls
    (`contract.lineage_state_key`); the table's ``state_key`` column says which was used.

    Returns
    -------
    The table and the skip reason ("" when the comparison ran). A dataset without response
    labels yields one row saying so; labels are never guessed.
    """
    reason = response_skip_reason(obs, response_key=response_key)
    columns = RESPONSE_COLUMNS
    if reason:
        logger.warning("responder comparison skipped: %s", reason)
        row = {c: np.nan for c in columns}
        row.update(
            {STATE: "", PROGRAM: "", UNIT: "", TEST: SKIPPED, NOTE: f"{SKIPPED_PREFIX}{reason}"}
        )
        return pd.DataFrame([row], columns=columns), reason
    state_key = state_key or lineage_state_key(obs)
    unit = choose_unit(obs, patient_key=patient_key)
    state = _labels(obs, state_key)
    response = _labels(obs, response_key)
    tables = []
    per_patient, conflict_note = patient_response(
        obs, patient_key=patient_key, response_key=response_key
    )
    if conflict_note:
        logger.warning("responder comparison: %s", conflict_note)
    for name in [ALL_CD8, *states, EXHAUSTED_LINEAGE]:
        if name == ALL_CD8:
            in_state = pd.Series(True, index=obs.index)
        elif name == EXHAUSTED_LINEAGE:
            in_state = state.isin(list(states))
        else:
            in_state = state == name
        sub_obs = obs.loc[in_state.to_numpy()].copy()
        sub_obs["_lineage"] = name
        sub_scores = scores.loc[in_state.to_numpy()]
        rows = []
        if unit == UNIT_PATIENTS:
            means = patient_means(
                sub_obs,
                sub_scores,
                group_key="_lineage",
                patient_key=patient_key,
                min_cells=min_cells,
            )
            means = means.reset_index()
            means["_response"] = means["_patient"].map(per_patient)
            groups = {r: means[means["_response"] == r] for r in (RESPONDER, NON_RESPONDER)}
            for program in scores.columns:
                x = groups[NON_RESPONDER][program].to_numpy(float)
                y = groups[RESPONDER][program].to_numpy(float)
                row = _patient_group_row(
                    x,
                    y,
                    state=name,
                    program=program,
                    test="mann_whitney_patient_means",
                    effect_type="difference_of_patient_means",
                )
                row[N_CELLS] = int(
                    groups[RESPONDER][N_CELLS].sum() + groups[NON_RESPONDER][N_CELLS].sum()
                )
                blocked = (
                    ""
                    if np.isfinite(row[P_VALUE])
                    else (
                        REASON_TOO_FEW_PATIENTS_RESPONSE.format(
                            n_non_responders=x.size,
                            n_responders=y.size,
                            min_cells=min_cells,
                            state=name,
                        )
                    )
                )
                row[NOTE] = "; ".join(filter(None, [blocked, conflict_note]))
                if blocked:
                    row[TEST], row[N_PATIENTS] = NOT_TESTABLE, 0
                rows.append(row)
        else:
            sub_resp = response.loc[in_state.to_numpy()]
            for program in scores.columns:
                x = sub_scores.loc[(sub_resp == NON_RESPONDER).to_numpy(), program].to_numpy(float)
                y = sub_scores.loc[(sub_resp == RESPONDER).to_numpy(), program].to_numpy(float)
                ok = x.size >= min_cells and y.size >= min_cells
                rows.append(
                    {
                        STATE: name,
                        PROGRAM: program,
                        UNIT: unit,
                        TEST: "mann_whitney_cells" if ok else NOT_TESTABLE,
                        EFFECT: float(x.mean() - y.mean()) if ok else np.nan,
                        EFFECT_TYPE: "difference_of_cell_means",
                        CLIFFS_DELTA: cliffs_delta(x, y) if ok else np.nan,
                        HEDGES_G: hedges_g(x, y) if ok else np.nan,
                        MEAN_RESPONDERS: float(y.mean()) if y.size else np.nan,
                        MEAN_NON_RESPONDERS: float(x.mean()) if x.size else np.nan,
                        N_PATIENTS: 0,
                        N_RESPONDERS: 0,
                        N_NON_RESPONDERS: 0,
                        N_CELLS: int(x.size + y.size),
                        P_VALUE: float(stats.mannwhitneyu(x, y).pvalue) if ok else np.nan,
                        NOTE: NOTE_CELLS_AS_UNITS
                        if ok
                        else REASON_TOO_FEW_CELLS.format(
                            n_second=x.size,
                            second="non-responder",
                            n_first=y.size,
                            first="responder",
                            min_cells=min_cells,
                        ),
                    }
                )
        if not in_state.any():  # the first thing that blocks every row of this state
            for row in rows:
                row.update(
                    {
                        TEST: NOT_TESTABLE,
                        N_PATIENTS: 0,
                        NOTE: "; ".join(
                            filter(
                                None,
                                [REASON_NO_CELLS.format(state=name, key=state_key), conflict_note],
                            )
                        ),
                    }
                )
        for row in rows:  # a score the data do not measure: not testable, not "no difference"
            if row[TEST] != NOT_TESTABLE and (
                reason := constant_score_reason(sub_scores[row[PROGRAM]])
            ):
                _clear_as_not_testable(row, "; ".join(filter(None, [reason, conflict_note])))
        table = pd.DataFrame(rows)
        table[COMPARISON] = "non_responder vs responder"
        table[P_ADJ] = bh_adjust(table[P_VALUE])
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table[STATE_KEY] = state_key
    return table[columns], ""


# ----------------------------------------------------------------------------------------------
# state composition by response

#: Added to both counts of the Tpex : Tex_term log ratio, so a patient with no cell of one
#: state keeps a finite ratio (the Haldane-Anscombe correction of a log odds; Haldane 1956).
BALANCE_PSEUDOCOUNT = 0.5
#: What a response row pooled over states (all CD8 cells, the exhausted lineage) can and cannot
#: say. Measured with benchmarks/validate_cohort.py: with only a Tex_term share planted higher in
#: non-responders (IFN-I expression unchanged), the all-CD8 IFN-I row reached q < 0.05 in 13 of
#: 20 simulated cohorts, the exhausted-lineage row in 7 and the Tex_term-only row in 0.
POOLED_RESPONSE_CAVEAT = (
    "rows pooled over states (all CD8 cells, the exhausted lineage) mix two things: how much a "
    "program is expressed within a state, and how many cells of each state a patient has; a "
    "program that rises with exhaustion is higher in patients with more Tex_term cells even "
    "when no state expresses it differently (simulated: 13 of 20 cohorts with only the "
    "Tex_term share planted gave an all-CD8 IFN-I call). Read them beside the within-state rows "
    "and the composition rows"
)
COMPOSITION_CAVEAT = (
    "compositional data: a patient's state fractions sum to 1, so a rise in one state lowers "
    "the others; each state is tested on its own (Mann-Whitney on patient fractions, BH across "
    "the composition rows), with no compositional model; read it beside the Tpex:Tex_term "
    "log ratio, which does not depend on the other states"
)


def patient_composition(
    obs: pd.DataFrame,
    *,
    state_key: str | None = None,
    patient_key: str = "patient",
    response_key: str = "response",
    states: Sequence[str] = STATE_CATEGORIES,
    min_cells: int = 10,
) -> pd.DataFrame:
    """Per patient: its CD8 cells' count and fraction in each state, and the Tpex : Tex_term
    balance (the analogue of Sade-Feldman et al. 2018's CD8_G : CD8_B ratio).

    Parameters
    ----------
    obs
        CD8 cells with `state_key` (default: the per-cell calls), `patient_key` and
        `response_key`.
    min_cells
        Patients with fewer CD8 cells keep their row but are flagged ``included = False``: a
        fraction of fewer than 10 cells moves by 0.1 or more with a single cell.

    Returns
    -------
    One row per patient: ``patient``, ``response`` (empty where the patient's samples disagree
    or are unlabelled; `patient_response`), ``n_cd8_cells``, ``n_<state>`` and
    ``fraction_<state>`` for every state, ``log_ratio_tpex_to_tex_term`` (natural log of
    (n_Tpex + 0.5) / (n_Tex_term + 0.5)), ``included``, ``grouped_by`` (``patient``, or
    ``sample`` where no patients are labelled: then a description, never tested), ``state_key``.
    """
    state_key = state_key or lineage_state_key(obs)
    grouped_by = patient_key
    if choose_unit(obs, patient_key=patient_key) == UNIT_CELLS and SAMPLE in obs:
        grouped_by = "sample"  # no patients (a mouse experiment): describe each sample
    frame = pd.DataFrame(
        {PATIENT: _labels(obs, grouped_by).to_numpy(), STATE: _labels(obs, state_key).to_numpy()}
    ).dropna()
    counts = pd.crosstab(frame[PATIENT], frame[STATE]).reindex(columns=list(states), fill_value=0)
    total = counts.sum(axis=1)
    table = pd.DataFrame({PATIENT: counts.index.astype(str)}, index=counts.index)
    per_patient, _ = patient_response(obs, patient_key=grouped_by, response_key=response_key)
    table[RESPONSE] = table[PATIENT].map(per_patient).fillna("")
    table[N_CD8_CELLS] = total.astype(int)
    for state in states:
        table[f"{COUNT_PREFIX}{state}"] = counts[state].astype(int)
    for state in states:
        table[f"{FRACTION_PREFIX}{state}"] = counts[state] / total.where(total > 0)
    table[BALANCE_COLUMN] = np.log(
        (counts[TPEX] + BALANCE_PSEUDOCOUNT) / (counts[TEX_TERM] + BALANCE_PSEUDOCOUNT)
    )
    table[INCLUDED] = total >= min_cells
    table[GROUPED_BY] = grouped_by
    table[STATE_KEY] = state_key
    return table.reset_index(drop=True)


def compare_composition(
    composition: pd.DataFrame,
    *,
    states: Sequence[str] = STATE_CATEGORIES,
    min_cells: int = 10,
) -> pd.DataFrame:
    """Non-responders vs responders in state composition, patients as units.

    For each state, the patients' fractions of CD8 cells in it (Mann-Whitney U), and the
    Tpex : Tex_term log ratio; BH across all these rows together. No compositional model
    (scCODA, sccomp) is used: they are not in texflow's environment, and with the 10-30
    patients of a public cohort a rank test per state with the caveat beside it
    (`COMPOSITION_CAVEAT`) and the two-state log ratio, which is free of the closure problem
    (Aitchison 1986, subcompositional coherence), answer the question without a prior.

    Parameters
    ----------
    composition
        `patient_composition`'s table.

    Returns
    -------
    Rows in `RESPONSE_COLUMNS`: ``state`` = the state (or ``Tpex:Tex_term``), ``program`` =
    `COMPOSITION_MEASURE` (or `BALANCE_MEASURE`); effect = mean(non-responders) -
    mean(responders).
    """
    if len(composition) and (composition[GROUPED_BY] != "patient").all():
        raise ValueError("compare_composition: the composition is per sample, not per patient")
    used = composition[
        composition[INCLUDED] & composition[RESPONSE].isin([RESPONDER, NON_RESPONDER])
    ]
    non_responders = used[used[RESPONSE] == NON_RESPONDER]
    responders = used[used[RESPONSE] == RESPONDER]
    left_out = int((~composition[INCLUDED]).sum())
    note = COMPOSITION_CAVEAT
    if left_out:
        note += f"; {left_out} patient(s) with < {min_cells} CD8 cells left out"
    rows = []
    for state, column, measure, effect_type in [
        *[
            (s, f"{FRACTION_PREFIX}{s}", COMPOSITION_MEASURE, "difference_of_mean_fractions")
            for s in states
        ],
        (BALANCE_ROW, BALANCE_COLUMN, BALANCE_MEASURE, "difference_of_mean_log_ratios"),
    ]:
        x = non_responders[column].to_numpy(float)
        y = responders[column].to_numpy(float)
        row = _patient_group_row(x, y, state=state, program=measure, effect_type=effect_type)
        row[N_CELLS] = int(used[N_CD8_CELLS].sum())
        row[NOTE] = note
        if not np.isfinite(row[P_VALUE]):
            row.update(
                {
                    TEST: NOT_TESTABLE,
                    N_PATIENTS: 0,
                    NOTE: REASON_TOO_FEW_PATIENTS_RESPONSE.format(
                        n_non_responders=x.size,
                        n_responders=y.size,
                        min_cells=min_cells,
                        state="CD8",
                    ),
                }
            )
        if measure == COMPOSITION_MEASURE and (x.size + y.size) and not np.any(np.r_[x, y] > 0):
            # a share that is 0 in every patient is not a result: nothing to compare
            _clear_as_not_testable(row, f"no {state} cell in any patient: not testable")
        absent = [s for s in (TPEX, TEX_TERM) if not (used[f"{COUNT_PREFIX}{s}"] > 0).any()]
        if measure == BALANCE_MEASURE and absent:
            # with one side 0 everywhere the ratio only counts the other side's cells
            _clear_as_not_testable(
                row, f"no {' or '.join(absent)} cell in any patient: the balance is not testable"
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    table[COMPARISON] = "non_responder vs responder"
    table[P_ADJ] = bh_adjust(table[P_VALUE])
    table[STATE_KEY] = composition[STATE_KEY].iloc[0] if len(composition) else ""
    return table[RESPONSE_COLUMNS]


# ----------------------------------------------------------------------------------------------
# coverage beside every verdict

#: Column of the associations, state and response tables: the coverage of each untrusted program
#: a row's verdict rests on (`coverage_caveats`), empty when every one is trusted.
COVERAGE_COLUMN = COVERAGE


def with_coverage(
    table: pd.DataFrame, caveats: Mapping[str, str], *, state_caveats: Mapping[str, str]
) -> pd.DataFrame:
    """`table` with `COVERAGE_COLUMN`: the caveat of the row's program, and of the state calls
    the row compares (`state_caveats`, state -> caveat of the signature behind its calls): a
    Tex-term vs Tpex row rests on both, a row within one state (or its share of CD8 cells) on
    that state, the exhausted-lineage rows and the Tpex : Tex_term balance on every lineage
    state. Rows of all CD8 cells, and pseudotime associations, carry their program's only."""
    lineage = [state_caveats.get(s, "") for s in EXHAUSTED_STATES]
    rows = []
    for row in table.to_dict("records"):
        parts = [caveats.get(str(row.get(PROGRAM, "")), "")]
        state = str(row.get(STATE, "") if pd.notna(row.get(STATE, "")) else "")
        if COMPARISON in row and " vs " in str(row[COMPARISON]) and not state:
            parts += [state_caveats.get(s, "") for s in str(row[COMPARISON]).split(" vs ")]
        elif state in (EXHAUSTED_LINEAGE, BALANCE_ROW):
            parts += lineage
        elif state:
            parts.append(state_caveats.get(state, ""))
        rows.append("; ".join(dict.fromkeys(p for p in parts if p)))
    return table.assign(**{COVERAGE_COLUMN: rows})
