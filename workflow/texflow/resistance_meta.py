"""Genes behind checkpoint resistance across datasets: random-effects meta-analysis (issue 21).

Each dataset's ``tables/resistance_de.tsv`` (`texflow.resistance`) gives, per state and gene, a
log2 fold change (non-responders over responders) and its standard error. Per state and gene, the
datasets with a tested row are pooled by a random-effects model with the DerSimonian-Laird
between-dataset variance, computed by statsmodels (``stats.meta_analysis.combine_effects``,
``method_re="dl"``). statsmodels 0.15 does not truncate the DerSimonian-Laird tau² at zero: a
negative estimate (the datasets agree more than their standard errors say) is set to 0, as in
DerSimonian & Laird (1986) and R metafor, and the pooled effect is then the fixed-effect
(inverse-variance) mean, which is the random-effects mean with tau² = 0. I² = max(0, (Q - df) / Q)
(Higgins & Thompson 2002). Confidence interval and p use the normal distribution (scale 1).

Leave-one-dataset-out: the gene is pooled again without each dataset (one dataset left: its own
estimate); the largest change of the pooled effect, whether the sign holds, and whether the gene
stays significant (BH across the state's genes of that leave-one-out fit) are reported. A gene
whose significance rests on one dataset (it flips sign or loses significance without it) is
flagged, as is a heterogeneous gene (Cochran's Q test, p < alpha).

With fewer than two datasets with tested rows for a state, the table says so for that state and
carries the single dataset's own ranking (its log2 fold change, standard error, p and q).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from .contract import (
    CI_HIGH,
    CI_LOW,
    COCHRAN_Q,
    CONSISTENT,
    DATASETS,
    DE_COLUMNS,
    EFFECT,
    GENE,
    HETEROGENEITY_P,
    HETEROGENEOUS,
    I2,
    LFC_SE,
    LOG2_FOLD_CHANGE,
    LOO_CRITICAL_DATASETS,
    LOO_MAX_CHANGE,
    LOO_SIGN_STABLE,
    LOO_SIGNIFICANCE_STABLE,
    METHOD,
    N_DATASETS,
    N_SAME_SIGN,
    NOTE,
    P_VALUE,
    POOLED_LOG2_FOLD_CHANGE,
    POOLED_SE,
    Q_VALUE,
    RANK,
    REASON,
    RESISTANCE_STATES,
    RESTS_ON_ONE_DATASET,
    STATE,
    TABLE_COLUMNS,
    TAU2,
    TESTABLE,
    Z,
)
from .stats import bh_adjust
from .utils import atomic_path

logger = logging.getLogger(__name__)

METHOD_META = "random_effects_dersimonian_laird (statsmodels combine_effects)"
METHOD_SINGLE = "single_dataset"
META_COLUMNS = list(TABLE_COLUMNS["resistance_genes.tsv"])
#: 95 % normal quantile of the confidence interval.
Z_CRIT = float(stats.norm.isf(0.025))


def tested_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``resistance_de.tsv`` with a usable estimate.

    Parameters
    ----------
    table
        One dataset's DE table (`texflow.contract.DE_COLUMNS`).

    Returns
    -------
    The rows that are ``testable``, with a gene, a finite log2 fold change and a positive finite
    standard error (none when a column is missing).
    """
    needed = {GENE, STATE, LOG2_FOLD_CHANGE, LFC_SE, TESTABLE}
    if table is None or table.empty or not needed <= set(table.columns):
        return pd.DataFrame(columns=DE_COLUMNS)
    testable = table[TESTABLE].astype(str).str.lower().isin(["true", "1"])
    lfc = pd.to_numeric(table[LOG2_FOLD_CHANGE], errors="coerce")
    se = pd.to_numeric(table[LFC_SE], errors="coerce")
    ok = testable & table[GENE].notna() & np.isfinite(lfc) & np.isfinite(se) & (se > 0)
    return table.loc[ok]


def dersimonian_laird(effect: np.ndarray, variance: np.ndarray) -> dict[str, float]:
    """Pool one gene's per-dataset estimates by random effects (DerSimonian-Laird).

    Parameters
    ----------
    effect
        The per-dataset log2 fold changes (at least one).
    variance
        Their variances (squared standard errors).

    Returns
    -------
    ``effect``, ``se``, ``tau2`` (truncated at 0), ``i2``, ``q`` (Cochran's Q) and
    ``heterogeneity_p``; one dataset: its own estimate, the heterogeneity terms NaN.
    """
    effect, variance = np.asarray(effect, float), np.asarray(variance, float)
    if effect.size == 1:
        return {
            EFFECT: float(effect[0]),
            "se": float(np.sqrt(variance[0])),
            TAU2: np.nan,
            I2: np.nan,
            COCHRAN_Q: np.nan,
            HETEROGENEITY_P: np.nan,
        }
    with np.errstate(divide="ignore", invalid="ignore"):  # its own I² divides by Q, which may be 0
        res = combine_effects(effect, variance, method_re="dl")
    df = effect.size - 1
    q = float(res.q)
    if res.tau2 > 0:
        pooled, se, tau2 = float(res.mean_effect_re), float(res.sd_eff_w_re), float(res.tau2)
    else:  # statsmodels leaves a negative DL estimate; tau2 = 0 is the fixed-effect fit
        pooled, se, tau2 = float(res.mean_effect_fe), float(res.sd_eff_w_fe), 0.0
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return {
        EFFECT: pooled,
        "se": se,
        TAU2: tau2,
        I2: i2,
        COCHRAN_Q: q,
        HETEROGENEITY_P: float(stats.chi2.sf(q, df)),
    }


def _p(effect: float, se: float) -> float:
    return float(2 * stats.norm.sf(abs(effect / se))) if se > 0 else np.nan


def _rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Order by q, then p, then |effect| (largest first), and number the rows from 1."""
    order = frame.assign(_abs=-frame[POOLED_LOG2_FOLD_CHANGE].abs()).sort_values(
        [Q_VALUE, P_VALUE, "_abs", GENE], na_position="last", kind="mergesort"
    )
    order = order.drop(columns="_abs")
    order[RANK] = np.arange(1, len(order) + 1)
    return order


def _single(
    state: str, dataset: str, rows: pd.DataFrame, *, alpha: float, others: str
) -> pd.DataFrame:
    lfc = pd.to_numeric(rows[LOG2_FOLD_CHANGE]).to_numpy()
    se = pd.to_numeric(rows[LFC_SE]).to_numpy()
    q = pd.to_numeric(rows[Q_VALUE], errors="coerce").to_numpy()
    method = str(rows[METHOD].iloc[0]) if METHOD in rows else ""
    note = (
        f"only {dataset} has tested genes for {state}: no cross-dataset meta-analysis (it needs "
        f"two or more datasets with response labels and enough patients){others}; "
        f"the single-dataset ranking of {dataset}"
    )
    out = pd.DataFrame(
        {
            STATE: state,
            GENE: rows[GENE].astype(str).to_numpy(),
            N_DATASETS: 1,
            DATASETS: dataset,
            POOLED_LOG2_FOLD_CHANGE: lfc,
            POOLED_SE: se,
            CI_LOW: lfc - Z_CRIT * se,
            CI_HIGH: lfc + Z_CRIT * se,
            Z: lfc / se,
            P_VALUE: pd.to_numeric(rows[P_VALUE], errors="coerce").to_numpy(),
            Q_VALUE: q,
            N_SAME_SIGN: 1,
            HETEROGENEOUS: False,
            RESTS_ON_ONE_DATASET: q < alpha,
            LOO_CRITICAL_DATASETS: np.where(q < alpha, dataset, ""),
            CONSISTENT: False,
            METHOD: f"{METHOD_SINGLE} ({method})",
            NOTE: note,
        }
    )
    return _rank(out)


def _meta(
    state: str, rows: Mapping[str, pd.DataFrame], *, alpha: float, min_datasets: int
) -> pd.DataFrame:
    names = list(rows)
    effect = pd.DataFrame(
        {d: r.set_index(GENE)[LOG2_FOLD_CHANGE].astype(float) for d, r in rows.items()}
    )
    se = pd.DataFrame({d: r.set_index(GENE)[LFC_SE].astype(float) for d, r in rows.items()})
    effect, se = effect[names], se.reindex(index=effect.index)[names]
    n = effect.notna().sum(axis=1)
    pooled_genes = n.index[n >= min_datasets]
    if len(pooled_genes) < len(n):
        logger.info(
            "%s: %d of %d genes tested in fewer than %d datasets, not pooled",
            state,
            len(n) - len(pooled_genes),
            len(n),
            min_datasets,
        )
    records, loo_effect, loo_p = [], {d: {} for d in names}, {d: {} for d in names}
    for gene in pooled_genes:
        have = effect.loc[gene].notna().to_numpy()
        eff, var = effect.loc[gene].to_numpy()[have], se.loc[gene].to_numpy()[have] ** 2
        fit = dersimonian_laird(eff, var)
        records.append(
            {
                GENE: str(gene),
                N_DATASETS: int(have.sum()),
                DATASETS: ",".join(np.asarray(names)[have]),
                POOLED_LOG2_FOLD_CHANGE: fit[EFFECT],
                POOLED_SE: fit["se"],
                TAU2: fit[TAU2],
                I2: fit[I2],
                COCHRAN_Q: fit[COCHRAN_Q],
                HETEROGENEITY_P: fit[HETEROGENEITY_P],
                N_SAME_SIGN: int((np.sign(eff) == np.sign(fit[EFFECT])).sum()),
            }
        )
        for i, dataset in enumerate(np.asarray(names)[have]):
            keep = np.arange(eff.size) != i
            left = dersimonian_laird(eff[keep], var[keep])
            loo_effect[dataset][gene], loo_p[dataset][gene] = (
                left[EFFECT],
                _p(left[EFFECT], left["se"]),
            )
    out = pd.DataFrame(records)
    if out.empty:
        return out
    out[STATE] = state
    out[CI_LOW] = out[POOLED_LOG2_FOLD_CHANGE] - Z_CRIT * out[POOLED_SE]
    out[CI_HIGH] = out[POOLED_LOG2_FOLD_CHANGE] + Z_CRIT * out[POOLED_SE]
    out[Z] = out[POOLED_LOG2_FOLD_CHANGE] / out[POOLED_SE]
    out[P_VALUE] = 2 * stats.norm.sf(out[Z].abs())
    out[Q_VALUE] = bh_adjust(out[P_VALUE])
    significant = (out[Q_VALUE] < alpha).to_numpy()
    genes = out[GENE].to_numpy()
    max_change = np.zeros(len(out))
    sign_stable = np.ones(len(out), dtype=bool)
    sig_stable = np.ones(len(out), dtype=bool)
    critical = [[] for _ in range(len(out))]
    for dataset in names:
        # genes without this dataset keep their full fit when it is left out
        e = pd.Series(loo_effect[dataset], dtype=float).reindex(genes)
        p = pd.Series(loo_p[dataset], dtype=float).reindex(genes)
        without = e.notna().to_numpy()
        e = e.fillna(out.set_index(GENE)[POOLED_LOG2_FOLD_CHANGE]).to_numpy()
        p = p.fillna(out.set_index(GENE)[P_VALUE]).to_numpy()
        q = bh_adjust(p)
        max_change = np.maximum(max_change, np.abs(e - out[POOLED_LOG2_FOLD_CHANGE].to_numpy()))
        flips = without & (np.sign(e) != np.sign(out[POOLED_LOG2_FOLD_CHANGE].to_numpy()))
        lost = without & significant & ~(q < alpha)
        sign_stable &= ~flips
        sig_stable &= ~lost
        for i in np.flatnonzero(flips | lost):
            critical[i].append(dataset)
    out[LOO_MAX_CHANGE] = max_change
    out[LOO_SIGN_STABLE] = sign_stable
    # only a significant gene can lose its significance: empty (NA) for the others
    out[LOO_SIGNIFICANCE_STABLE] = pd.Series(sig_stable, dtype="boolean").where(significant)
    out[LOO_CRITICAL_DATASETS] = [",".join(c) for c in critical]
    out[HETEROGENEOUS] = (out[HETEROGENEITY_P] < alpha).to_numpy()
    out[RESTS_ON_ONE_DATASET] = significant & ~(sign_stable & sig_stable)
    out[CONSISTENT] = (
        significant
        & ~out[HETEROGENEOUS].to_numpy()
        & ~out[RESTS_ON_ONE_DATASET].to_numpy()
        & (out[N_SAME_SIGN] == out[N_DATASETS]).to_numpy()
    )
    out[METHOD] = METHOD_META
    out[NOTE] = ""
    return _rank(out)


def meta_analyse(
    tables: Mapping[str, pd.DataFrame],
    *,
    alpha: float = 0.05,
    min_datasets: int = 2,
    states: Sequence[str] = RESISTANCE_STATES,
) -> pd.DataFrame:
    """Random-effects meta-analysis of each gene's log2 fold change per state across datasets.

    Parameters
    ----------
    tables
        Dataset id -> its ``resistance_de.tsv`` (`texflow.contract.DE_COLUMNS`).
    alpha
        q below which a pooled gene is significant; also the level of the heterogeneity test and
        of the leave-one-dataset-out significance.
    min_datasets
        Datasets with a tested row a gene needs to be pooled (at least 2); genes tested in fewer
        are left out of a pooled state (the log says how many).
    states
        States in the order written; a state found in the tables but not listed follows.

    Returns
    -------
    `META_COLUMNS`, per state ranked by q, then p, then |pooled effect|. A state with tested
    genes in one dataset only carries that dataset's ranking with a ``note`` saying so; a state
    with none gets one row (no gene) whose note says why.
    """
    if min_datasets < 2:
        raise ValueError("min_datasets: a meta-analysis needs at least 2 datasets")
    tested = {d: tested_rows(t) for d, t in tables.items()}
    seen = [
        s
        for d, t in tables.items()
        if t is not None and STATE in t
        for s in t[STATE].dropna().astype(str)
    ]
    all_states = list(dict.fromkeys([*states, *seen]))
    parts = []
    for state in all_states:
        rows = {d: t.loc[t[STATE].astype(str) == state] for d, t in tested.items()}
        rows = {d: r for d, r in rows.items() if not r.empty}
        why_not = {}
        for d, t in tables.items():
            if d in rows or t is None or STATE not in t:
                continue
            reasons = t.loc[t[STATE].astype(str) == state, REASON].dropna().astype(str)
            why_not[d] = reasons.iloc[0] if len(reasons) else f"no {state} row"
        others = "".join(f"; {d}: {r}" for d, r in why_not.items())
        if len(rows) >= 2:
            part = _meta(state, rows, alpha=alpha, min_datasets=min_datasets)
            if part.empty:
                part = pd.DataFrame(
                    [
                        {
                            STATE: state,
                            N_DATASETS: 0,
                            METHOD: METHOD_META,
                            NOTE: f"no gene was tested in {min_datasets} or more of the "
                            f"datasets {', '.join(rows)} for {state}",
                        }
                    ]
                )
            logger.info(
                "%s: %d genes pooled over %d datasets (%s)",
                state,
                len(part),
                len(rows),
                ", ".join(rows),
            )
        elif len(rows) == 1:
            ((dataset, r),) = rows.items()
            part = _single(state, dataset, r, alpha=alpha, others=others)
            logger.info("%s: only %s has tested genes, its own ranking carried", state, dataset)
        else:
            if state not in states and not why_not:
                continue
            part = pd.DataFrame(
                [
                    {
                        STATE: state,
                        N_DATASETS: 0,
                        METHOD: METHOD_SINGLE,
                        NOTE: f"no dataset has tested genes for {state}{others}",
                    }
                ]
            )
        parts.append(part)
    return pd.concat(parts, ignore_index=True).reindex(columns=META_COLUMNS)


def cross_dataset(table: pd.DataFrame) -> bool:
    """Whether any state of a `meta_analyse` table was pooled over two or more datasets."""
    return bool(
        (table[METHOD] == METHOD_META).any() and (pd.to_numeric(table[N_DATASETS]) >= 2).any()
    )


def top_genes(table: pd.DataFrame, *, n: int = 10) -> pd.DataFrame:
    """The first `n` ranked genes of each state (rows without a gene dropped)."""
    ranked = table.loc[table[GENE].notna() & pd.to_numeric(table[RANK], errors="coerce").le(n)]
    return ranked.reset_index(drop=True)


def state_notes(table: pd.DataFrame, *, alpha: float = 0.05) -> dict[str, str]:
    """Per state, what the table says about it: pooled over which datasets, or why not.

    Parameters
    ----------
    table
        A `meta_analyse` table.
    alpha
        q below which a gene is counted as significant.

    Returns
    -------
    State -> one sentence.
    """
    notes = {}
    for state, rows in table.groupby(STATE, sort=False):
        if (rows[METHOD] == METHOD_META).any() and rows[GENE].notna().any():
            counts = pd.to_numeric(rows[N_DATASETS])
            datasets = sorted({d for ds in rows[DATASETS].dropna() for d in str(ds).split(",")})
            notes[state] = (
                f"{len(rows)} genes pooled over {int(counts.min())}-{int(counts.max())} "
                f"of {len(datasets)} datasets ({', '.join(datasets)}); "
                f"{int((pd.to_numeric(rows[Q_VALUE]) < alpha).sum())} at q < 0.05"
            )
            if counts.min() == counts.max():
                notes[state] = notes[state].replace(
                    f"{int(counts.min())}-{int(counts.max())} of ", ""
                )
        else:
            notes[state] = str(rows[NOTE].dropna().iloc[0]) if rows[NOTE].notna().any() else ""
    return notes


#: Colours of the datasets on the forest plot (Okabe-Ito, colour-blind safe); pooled is black.
DATASET_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")


def forest_plot(
    table: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    path: str | Path,
    *,
    n_genes: int = 10,
) -> Path:
    """Draw a forest plot of the top genes of each pooled state.

    Parameters
    ----------
    table
        A `meta_analyse` table.
    tables
        Dataset id -> its ``resistance_de.tsv``, for the per-dataset estimates.
    path
        The PNG to write.
    n_genes
        Top-ranked genes drawn per state.

    Returns
    -------
    `path`. Per state pooled over two or more datasets (or, when none is, the single-dataset
    ranking, titled so): each gene's per-dataset log2 fold change with its 95 % interval, and
    the pooled effect (black diamond). A gene flagged heterogeneous or resting on one dataset is
    marked with a dagger.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    top = top_genes(table, n=n_genes)
    pooled = cross_dataset(table)
    if pooled:
        top = top.loc[top[METHOD] == METHOD_META]
    states = list(dict.fromkeys(top[STATE]))
    datasets = list(tables)
    colours = {d: DATASET_COLOURS[i % len(DATASET_COLOURS)] for i, d in enumerate(datasets)}
    if not states:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no dataset has tested genes: nothing to rank", ha="center", va="center")
    else:
        fig, axes = plt.subplots(
            1, len(states), figsize=(4.6 * len(states), 0.55 * n_genes + 1.6), squeeze=False
        )
        for ax, state in zip(axes[0], states, strict=True):
            rows = top.loc[top[STATE] == state].sort_values(RANK)
            offsets = np.linspace(-0.25, 0.25, len(datasets)) if len(datasets) > 1 else [0.0]
            for y, (_, row) in enumerate(rows.iterrows()):
                for offset, dataset in zip(offsets, datasets, strict=True):
                    de = tested_rows(tables[dataset])
                    hit = de.loc[
                        (de[STATE].astype(str) == state) & (de[GENE].astype(str) == row[GENE])
                    ]
                    if hit.empty:
                        continue
                    lfc, se = float(hit[LOG2_FOLD_CHANGE].iloc[0]), float(hit[LFC_SE].iloc[0])
                    ax.errorbar(
                        lfc,
                        y + offset,
                        xerr=Z_CRIT * se,
                        fmt="o",
                        ms=3.5,
                        lw=1,
                        color=colours[dataset],
                        label=dataset if y == 0 else None,
                    )
                if pooled:
                    ax.errorbar(
                        row[POOLED_LOG2_FOLD_CHANGE],
                        y,
                        xerr=[
                            [row[POOLED_LOG2_FOLD_CHANGE] - row[CI_LOW]],
                            [row[CI_HIGH] - row[POOLED_LOG2_FOLD_CHANGE]],
                        ],
                        fmt="D",
                        ms=6,
                        color="black",
                        lw=1.8,
                        label="pooled (DL)" if y == 0 else None,
                    )
            labels = []
            for _, row in rows.iterrows():
                flagged = {str(row[c]).lower() for c in (HETEROGENEOUS, RESTS_ON_ONE_DATASET)}
                flag = " †" if "true" in flagged else ""
                agree = f" ({int(row[N_SAME_SIGN])}/{int(row[N_DATASETS])})" if pooled else ""
                labels.append(f"{row[GENE]}{agree}{flag}")
            ax.set_yticks(range(len(rows)), labels)
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.axvline(0, color="grey", lw=0.8, ls="--")
            ax.set_xlabel("log2 fold change, non-responders / responders (95% CI)")
            ax.set_title(state if pooled else f"{state}: single-dataset ranking")
            ax.legend(
                fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False
            )
        title = (
            "Top genes per state, random-effects meta-analysis (DerSimonian-Laird); "
            "(k/n): datasets agreeing in sign; †: heterogeneous or rests on one dataset"
        )
        if not pooled:
            title = "Fewer than two datasets with tested genes: no cross-dataset ranking"
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
