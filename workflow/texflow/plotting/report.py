"""Figures of the report that no stage draws: UMAPs by annotation, state composition, paired
Tpex vs Tex-term scores per patient, and responders vs non-responders per patient.

Every function takes an AnnData (only `obs` and `obsm` are read, so a backed AnnData works),
draws one figure with a title, axis labels, units and a legend, saves it atomically in every
format asked for (PNG first) and returns the saved paths. When the data for a figure are absent
the function raises `FigureSkipped` whose message says what is missing and why; the report
prints that sentence in place of the figure.
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..contract import (
    ALL_CD8,
    BALANCE_COLUMN,
    CELL_STATE_KEY,
    CLUSTER_STATE_KEY,
    DIRECTION,
    EXHAUSTED_LINEAGE,
    EXHAUSTED_STATES,
    FRACTION_PREFIX,
    GENE,
    MEAN_EXPRESSION,
    N_CELLS,
    N_NON_RESPONDERS,
    N_RESPONDERS,
    NOTE,
    P_ADJ,
    P_VALUE,
    PATIENT,
    PROGRAM,
    RESPONSE,
    SAMPLE,
    SCORE_PREFIX,
    STATE,
    TEX_TERM,
    TPEX,
    TPEX_PROGRAM,
    lineage_state_key,
)
from ..expression import known_values as _known
from ..findings import program_order
from ..stats import patient_means as stats_patient_means
from ..stats import patient_response
from ..utils import atomic_path
from .colours import (
    MISSING_COLOUR,
    RESPONSE_COLOURS,
    RESPONSE_LABELS,
    category_colours,
    state_colour,
)

logger = logging.getLogger(__name__)

#: obs columns of state labels: coloured by `colours.state_colour`, never by their position
STATE_KEYS = (CELL_STATE_KEY, CLUSTER_STATE_KEY)


class FigureSkipped(Exception):
    """The data a figure needs are absent; the message says which and why, for the reader."""


# ----------------------------------------------------------------------------------------------
# helpers


def program_label(name: str) -> str:
    """A readable name for a program or `score_<program>` column
    (`score_ifn_core` -> `IFN core`)."""
    name = name.removeprefix(SCORE_PREFIX)
    if name == BALANCE_COLUMN:  # composition.tsv's balance column
        return "log(Tpex / Tex-term)"
    if name.startswith(FRACTION_PREFIX):  # composition.tsv's share of CD8 cells in a state
        return (
            f"{name.removeprefix(FRACTION_PREFIX).replace('Tex_', 'Tex-').replace('_', '-')} share"
        )
    words = []
    for word in re.split(r"[_\s]+", name):
        lower = word.lower()
        if lower in {"ifn", "lpo", "isg", TPEX_PROGRAM, "tex", "i", "ii"}:
            word = {TPEX_PROGRAM: TPEX, "tex": "Tex"}.get(lower, word.upper())
        words.append(word)
    label = " ".join(words)
    return (
        label.replace("IFN I ", "IFN-I ").replace("IFN I", "IFN-I").replace("Tex term", "Tex-term")
    )


def scores_in(obs: pd.DataFrame) -> list[str]:
    """Every numeric `score_<program>` column of `obs`, IFN and LPO programs first (they are the
    question; `findings.program_order`)."""
    scores = [
        c
        for c in obs.columns
        if str(c).startswith(SCORE_PREFIX) and pd.api.types.is_numeric_dtype(obs[c])
    ]
    return sorted(scores, key=lambda column: (program_order(column), column))


def _save(fig: plt.Figure, path: str | os.PathLike, formats: Sequence[str]) -> list[Path]:
    """Save `fig` as `path` (PNG) plus one file per extra format beside it; close it."""
    path = Path(path)
    saved = []
    for fmt in ["png", *[f for f in formats if f != "png"]]:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
        saved.append(target)
    plt.close(fig)
    logger.info(
        "figure %s written (%s)", path.with_suffix(".png"), ", ".join(p.suffix for p in saved)
    )
    return saved


def _umap_coordinates(adata: ad.AnnData) -> np.ndarray:
    if "X_umap" not in adata.obsm:
        raise FigureSkipped(
            "no UMAP embedding (obsm['X_umap']) in the final AnnData: "
            "the cluster stage did not store one"
        )
    return np.asarray(adata.obsm["X_umap"])[:, :2]


# ----------------------------------------------------------------------------------------------
# UMAPs


def umap(
    adata: ad.AnnData,
    *,
    color: str,
    path: str | os.PathLike,
    title: str,
    colorbar_label: str = "",
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """UMAP of the cells coloured by `obs[color]` (categories with a legend, numbers with a
    colour bar).

    Cells without a value are drawn in light grey underneath and counted in the legend.
    """
    coords = _umap_coordinates(adata)
    if color not in adata.obs:
        raise FigureSkipped(f"the final AnnData has no obs column '{color}'")
    values = adata.obs[color]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    size = float(np.clip(12000 / max(adata.n_obs, 1), 1.5, 30))
    numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(
        values.dtype, pd.CategoricalDtype
    )
    if numeric:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        present = np.isfinite(numbers)
        if not present.any():
            plt.close(fig)
            raise FigureSkipped(f"obs column '{color}' has no finite value in any cell")
        if (~present).any():
            ax.scatter(
                *coords[~present].T,
                s=size,
                c="#dddddd",
                linewidths=0,
                rasterized=True,
                label=f"no value ({(~present).sum()} cells)",
            )
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), frameon=False, fontsize=8)
        order = np.argsort(numbers[present])  # high values on top
        points = ax.scatter(
            *coords[present][order].T,
            s=size,
            c=numbers[present][order],
            cmap="viridis",
            linewidths=0,
            rasterized=True,
        )
        fig.colorbar(points, ax=ax, label=colorbar_label or color, fraction=0.05, pad=0.02)
    else:
        present = _known(values).to_numpy()
        if not present.any():
            plt.close(fig)
            raise FigureSkipped(f"obs column '{color}' is empty in every cell")
        labels = values.astype("string")
        if (~present).any():
            ax.scatter(
                *coords[~present].T,
                s=size,
                c=MISSING_COLOUR,
                linewidths=0,
                rasterized=True,
                label=f"not known ({(~present).sum()})",
            )
        categories = (
            list(values.cat.categories)
            if isinstance(values.dtype, pd.CategoricalDtype)
            else sorted(labels[present].unique())
        )
        categories = [c for c in categories if (labels[present] == str(c)).any()]
        # states and response groups keep their colour on every page; other categories
        # (patients, clusters) get one each, never repeated within the figure
        palette = category_colours(categories)
        for category in categories:
            mask = present & (labels == str(category)).fillna(False).to_numpy()
            if color in STATE_KEYS:
                colour = state_colour(str(category))
            else:
                colour = RESPONSE_COLOURS.get(str(category)) if color == "response" else None
                colour = colour or palette[str(category)]
            name = (
                RESPONSE_LABELS.get(str(category), str(category))
                if color == "response"
                else str(category)
            )
            ax.scatter(
                *coords[mask].T,
                s=size,
                c=colour,
                linewidths=0,
                rasterized=True,
                label=f"{name} ({mask.sum()})",
            )
        ncol = 1 if len(categories) <= 18 else 2
        ax.legend(
            title=f"{color} (cells)",
            loc="upper left",
            bbox_to_anchor=(1.0, 1),
            frameon=False,
            fontsize=8,
            markerscale=max(1, 6 / size**0.5),
            ncol=ncol,
        )
    ax.set_title(title)
    ax.set_xlabel("UMAP 1 (arbitrary units)")
    ax.set_ylabel("UMAP 2 (arbitrary units)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    return _save(fig, path, formats)


# ----------------------------------------------------------------------------------------------
# composition


def state_composition(
    adata: ad.AnnData,
    *,
    path: str | os.PathLike,
    formats: Sequence[str] = ("png",),
    state_key: str | None = None,
) -> list[Path]:
    """Stacked bars of the fraction of cells in each state: per patient, and by response group.

    States are the per-cell calls (`contract.lineage_state_key`), as in ``composition.tsv``.
    The response panel averages the per-patient fractions (the patient is the unit), and its
    x labels carry the number of patients. Without response labels only the per-patient panel
    is drawn.
    """
    obs = adata.obs
    state_key = state_key or lineage_state_key(obs)
    for column in (state_key, "patient"):
        if column not in obs or not _known(obs[column]).any():
            raise FigureSkipped(f"no '{column}' annotation in the final AnnData")
    known = _known(obs[state_key]) & _known(obs[PATIENT])
    cells = obs.loc[known, [state_key, PATIENT]].astype(str).rename(columns={state_key: STATE})
    fractions = pd.crosstab(cells[PATIENT], cells[STATE], normalize="index")
    counts = cells[PATIENT].value_counts()
    states = (
        [s for s in obs[state_key].cat.categories if s in fractions.columns]
        if isinstance(obs[state_key].dtype, pd.CategoricalDtype)
        else sorted(fractions.columns)
    )
    fractions = fractions[states]
    colours = {state: state_colour(state) for state in states}
    response = patient_response(obs)[0]
    has_response = response.isin(RESPONSE_COLOURS).any()
    if has_response:
        fractions = fractions.loc[
            sorted(fractions.index, key=lambda p: (str(response.get(p, "")), p))
        ]
    width = min(2.5 + 0.45 * len(fractions), 14)
    fig, axes = plt.subplots(
        1, 2 if has_response else 1, figsize=(width + (3 if has_response else 0), 4.8),
        gridspec_kw={"width_ratios": [max(len(fractions), 1), max(3.0, len(fractions) / 4)]}
        if has_response else None,
        squeeze=False,
    )  # fmt: skip
    _stacked(axes[0, 0], fractions, colours)
    axes[0, 0].set_xticks(range(len(fractions)))
    axes[0, 0].set_xticklabels(
        [f"{p} ({counts[p]})" for p in fractions.index], rotation=60, ha="right", fontsize=8
    )
    for tick, patient in zip(axes[0, 0].get_xticklabels(), fractions.index, strict=True):
        tick.set_color(RESPONSE_COLOURS.get(str(response.get(patient, "")), "black"))
    axes[0, 0].set_xlabel("patient (cells)" + ("; label colour = response" if has_response else ""))
    axes[0, 0].set_ylabel("fraction of the patient's cells")
    axes[0, 0].set_title("State composition per patient")
    if has_response:
        groups = [g for g in RESPONSE_COLOURS if (response == g).any()]
        by_group = pd.DataFrame(
            {
                g: fractions.loc[response[response == g].index.intersection(fractions.index)].mean()
                for g in groups
            }
        ).T
        _stacked(axes[0, 1], by_group, colours)
        axes[0, 1].set_xticks(range(len(groups)))
        axes[0, 1].set_xticklabels(
            [f"{RESPONSE_LABELS[g]}\n(n={(response == g).sum()})" for g in groups], fontsize=8
        )
        axes[0, 1].set_xlabel("response (n = patients)")
        axes[0, 1].set_ylabel("mean of per-patient fractions")
        axes[0, 1].set_title("By response")
    _state_legend(fig, states, colours, top=0.9)
    fig.tight_layout()
    return _save(fig, path, formats)


def _state_legend(owner, states: Sequence[str], colours: dict[str, str], *, top: float) -> None:
    """One colour patch per state, outside `owner` (a figure or an axes) on its right."""
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[s]) for s in states]
    owner.legend(
        handles,
        states,
        title="state",
        loc="upper left",
        bbox_to_anchor=(1.0, top),
        frameon=False,
        fontsize=8,
    )


def _stacked(ax: plt.Axes, fractions: pd.DataFrame, colours: dict[str, str]) -> None:
    bottom = np.zeros(len(fractions))
    for state in fractions.columns:
        values = fractions[state].to_numpy(dtype=float)
        ax.bar(
            range(len(fractions)),
            values,
            bottom=bottom,
            color=colours[state],
            width=0.8,
            edgecolor="white",
            linewidth=0.3,
        )
        bottom += values
    ax.set_ylim(0, 1)
    ax.spines[["top", "right"]].set_visible(False)


# ----------------------------------------------------------------------------------------------
# per-patient comparisons


def patient_state_means(
    adata: ad.AnnData, *, scores: Sequence[str], min_cells: int = 3
) -> pd.DataFrame:
    """Per patient and state, the mean of every score over cells (patients are the unit), as the
    statistics take them (`stats.patient_means`), with each patient's response.

    Returns a long table: patient, state, one column per score, n_cells, response. Groups of
    fewer than `min_cells` cells are dropped: a mean of one or two cells is noise.
    """
    obs = adata.obs
    means = stats_patient_means(
        obs, obs[list(scores)], group_key=lineage_state_key(obs), min_cells=min_cells
    )
    means = means.reset_index().rename(columns={"_patient": PATIENT, "_group": STATE})
    means[RESPONSE] = means[PATIENT].map(patient_response(obs)[0]).astype(object)
    return means


def paired_states(
    adata: ad.AnnData,
    *,
    scores: Sequence[str],
    path: str | os.PathLike,
    min_cells: int = 3,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Per patient, the mean of each score in its Tpex cells and in its Tex-term cells, joined by
    a line.

    One panel per score; only patients with at least `min_cells` cells in both states are drawn,
    and their number is in each panel title. Lines are coloured by response when known.
    """
    obs = adata.obs
    state_key = lineage_state_key(obs)
    if state_key not in obs or PATIENT not in obs:
        raise FigureSkipped(f"no '{state_key}' or 'patient' annotation in the final AnnData")
    if not scores:
        raise FigureSkipped("no program scores (obs 'score_*') in the final AnnData")
    states = list(obs[state_key].astype(str).unique())
    tpex, texterm = (state if state in states else None for state in (TPEX, TEX_TERM))
    if tpex is None or texterm is None:
        missing = " and ".join(n for n, s in ((TPEX, tpex), ("Tex-term", texterm)) if s is None)
        raise FigureSkipped(
            f"no cell was called {missing} in this dataset "
            f"(states found: {', '.join(sorted(states))})"
        )
    if not _known(obs[PATIENT]).any():  # a per-patient figure: that blocks first
        counts = obs[state_key].astype(str).value_counts()
        raise FigureSkipped(
            f"no patient labels in this dataset ({counts[tpex]} {tpex} and "
            f"{counts[texterm]} {texterm} cells): one line per patient needs them"
        )
    means = patient_state_means(adata, scores=scores, min_cells=min_cells)
    wide = means[means[STATE].isin([tpex, texterm])].pivot(index=PATIENT, columns=STATE)
    if (N_CELLS, tpex) not in wide or (N_CELLS, texterm) not in wide:
        raise FigureSkipped(
            f"no patient has at least {min_cells} cells in both {tpex} and {texterm}"
        )
    paired = [
        p
        for p in wide.index
        if wide.loc[p, (N_CELLS, tpex)] > 0 and wide.loc[p, (N_CELLS, texterm)] > 0
    ]
    paired = [
        p
        for p in paired
        if np.isfinite(wide.loc[p, (N_CELLS, tpex)])
        and np.isfinite(wide.loc[p, (N_CELLS, texterm)])
    ]
    if not paired:
        raise FigureSkipped(
            f"no patient has at least {min_cells} cells in both {tpex} and {texterm}"
        )
    response = patient_response(obs)[0]
    ncols = min(len(scores), 4)
    nrows = int(np.ceil(len(scores) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 1.5, 3.6 * nrows), squeeze=False)
    for ax, score in zip(axes.flat, scores, strict=False):
        higher = 0
        for patient in paired:
            y = [wide.loc[patient, (score, tpex)], wide.loc[patient, (score, texterm)]]
            higher += y[1] > y[0]
            colour = RESPONSE_COLOURS.get(str(response.get(patient, "")), "#555555")
            ax.plot([0, 1], y, "-o", color=colour, alpha=0.8, markersize=4, linewidth=1)
        ax.set_xticks([0, 1])
        ax.set_xticklabels([tpex, texterm])
        ax.set_xlim(-0.4, 1.4)
        ax.set_ylabel(f"{program_label(score)} score\n(per-patient mean, a.u.)")
        ax.set_title(
            f"{program_label(score)}\nhigher in {texterm} in {higher} of {len(paired)} patients",
            fontsize=9,
        )
        ax.spines[["top", "right"]].set_visible(False)
    for ax in list(axes.flat)[len(scores) :]:
        ax.set_visible(False)
    handles = [
        plt.Line2D([], [], color=c, marker="o", label=RESPONSE_LABELS[g])
        for g, c in RESPONSE_COLOURS.items()
        if (response == g).any()
    ]
    if len(handles) < len(paired) and not response.reindex(paired).isin(RESPONSE_COLOURS).all():
        handles.append(plt.Line2D([], [], color="#555555", marker="o", label="response not known"))
    fig.legend(
        handles=handles,
        title="patient",
        loc="upper left",
        bbox_to_anchor=(1.0, 0.95),
        frameon=False,
        fontsize=8,
    )
    fig.suptitle(
        f"{tpex} vs {texterm}: one line per patient "
        f"(n={len(paired)}, at least {min_cells} cells in each state)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path, formats)


def response_groups(
    adata: ad.AnnData,
    *,
    scores: Sequence[str],
    path: str | os.PathLike,
    min_cells: int = 3,
    lineage_only: bool = False,
    table: pd.DataFrame | None = None,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Per-patient mean of each score, responders vs non-responders.

    With `table` (response_comparison.tsv) each panel carries the test's q (or p) and patients
    per group from its row (`all_cd8`, or `exhausted_lineage` with `lineage_only`), as the
    table has them: nothing is recomputed.

    The mean is over all the patient's CD8 T cells, or with `lineage_only` over its
    exhausted-lineage cells (per-cell calls Tpex, Tex_int, Tex_term), the two populations of the
    programs stage's response rows. One point per patient, a bar at the group mean, n patients in
    the x labels. Patients with fewer than `min_cells` such cells are left out.
    """
    obs = adata.obs
    response = patient_response(obs)[0]
    groups = [g for g in RESPONSE_COLOURS if (response == g).any()]
    if len(groups) < 2:
        found = ", ".join(sorted(set(response))) or "none"
        raise FigureSkipped(
            "response labels for both responders and non-responders are needed; "
            f"labels found: {found}"
        )
    if not scores:
        raise FigureSkipped("no program scores (obs 'score_*') in the final AnnData")
    known = _known(obs[PATIENT])
    lineage: list[str] = []
    if lineage_only:
        state_key = lineage_state_key(obs)
        in_lineage = (
            obs[state_key].astype(str).isin(EXHAUSTED_STATES).to_numpy()
            if state_key in obs
            else np.zeros(len(obs), bool)
        )
        if not in_lineage.any():
            raise FigureSkipped("no cell of this dataset is called Tpex, Tex_int or Tex_term")
        lineage = list(EXHAUSTED_STATES)
        known &= in_lineage
    cells = obs.loc[known, [PATIENT, *scores]].copy()
    cells[PATIENT] = cells[PATIENT].astype(str)
    grouped = cells.groupby(PATIENT, observed=True)
    means = grouped[list(scores)].mean()
    means = means[grouped.size() >= min_cells]
    means[RESPONSE] = means.index.map(response)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    ncols = min(len(scores), 4)
    nrows = int(np.ceil(len(scores) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols + 0.5, 3.6 * nrows), squeeze=False)
    for ax, score in zip(axes.flat, scores, strict=False):
        labels = []
        for x, group in enumerate(groups):
            values = means.loc[means[RESPONSE] == group, score].dropna().to_numpy()
            ax.scatter(
                x + rng.uniform(-0.12, 0.12, len(values)),
                values,
                color=RESPONSE_COLOURS[group],
                s=22,
                zorder=3,
            )
            if len(values):
                ax.hlines(values.mean(), x - 0.3, x + 0.3, color="black", linewidth=1.5, zorder=4)
            labels.append(f"{RESPONSE_LABELS[group]}\n(n={len(values)})")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(f"{program_label(score)} score\n(per-patient mean, a.u.)")
        title = program_label(score)
        if table is not None:
            row = EXHAUSTED_LINEAGE if lineage_only else ALL_CD8
            text = response_test_text(table, state=row, program=score.removeprefix(SCORE_PREFIX))
            title += "\n" + "\n".join(textwrap.wrap(text, 34)[:3])
        ax.set_title(title, fontsize=8.5)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in list(axes.flat)[len(scores) :]:
        ax.set_visible(False)
    cells_used = f"{'/'.join(lineage)} cells" if lineage else "all CD8 T cells"
    fig.suptitle(
        f"Responders vs non-responders: one point per patient (mean over its {cells_used}), "
        "bar = group mean; n = patients",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the suptitle
    return _save(fig, path, formats)


# ----------------------------------------------------------------------------------------------
# score distributions per state, composition per sample and per tissue

#: The x position of every CD8 T cell, whatever its state, in `score_distributions`.
ALL_CD8_LABEL = "all CD8"


def score_distributions(
    adata: ad.AnnData,
    *,
    scores: Sequence[str],
    path: str | os.PathLike,
    min_cells: int = 3,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Per state (Tpex, Tex_int, Tex_term, then all CD8 T cells), a box of the cells' scores with
    one point per patient (its mean, coloured by response where there are labels) on top.

    A patient with fewer than `min_cells` cells in a state has no point there; how many were left
    out is written under the state. Without patient labels only the boxes are drawn, and the
    title says so. One panel per score.
    """
    obs = adata.obs
    if not scores:
        raise FigureSkipped("no program scores (obs 'score_*') in the final AnnData")
    state_key = lineage_state_key(obs)
    states = obs[state_key].astype(str) if state_key in obs else pd.Series("", index=obs.index)
    groups = [(s, (states == s).to_numpy()) for s in EXHAUSTED_STATES if (states == s).any()]
    groups.append((ALL_CD8_LABEL, np.ones(len(obs), bool)))
    # the unit of the points: the patient, else (LCMV) the sample, which is not independent
    unit = next((k for k in (PATIENT, SAMPLE) if k in obs and _known(obs[k]).any()), None)
    patient = obs[unit].astype(str).where(_known(obs[unit])) if unit else None
    response = patient_response(obs)[0] if unit == "patient" else pd.Series(dtype=object)
    rng = np.random.default_rng(0)  # jitter only
    ncols = min(len(scores), 2)
    nrows = int(np.ceil(len(scores) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.1 * len(groups) * ncols + 2.0, 4.2 * nrows), squeeze=False
    )
    for ax, score in zip(axes.flat, scores, strict=False):
        values = pd.to_numeric(obs[score], errors="coerce").to_numpy(dtype=float)
        labels = []
        for x, (name, mask) in enumerate(groups):
            cells = values[mask & np.isfinite(values)]
            colour = state_colour(name) if name != ALL_CD8_LABEL else "#999999"
            box = ax.boxplot(
                [cells],
                positions=[x],
                widths=0.6,
                showfliers=False,
                patch_artist=True,
                medianprops={"color": "black"},
                whiskerprops={"color": "#777777"},
                capprops={"color": "#777777"},
                boxprops={"edgecolor": "#777777"},
            )
            box["boxes"][0].set_facecolor(colour)
            box["boxes"][0].set_alpha(0.35)
            label = f"{name.replace('Tex_', 'Tex-')}\n{_count(len(cells), 'cell')}"
            if patient is not None:
                per_patient = pd.DataFrame({PATIENT: patient[mask], "score": values[mask]}).dropna()
                grouped = per_patient.groupby(PATIENT)["score"]
                n_cells = grouped.size()
                means = grouped.mean()[n_cells >= min_cells]
                colours = [
                    RESPONSE_COLOURS.get(str(response.get(p, "")), "#333333") for p in means.index
                ]
                ax.scatter(
                    x + rng.uniform(-0.15, 0.15, len(means)),
                    means.to_numpy(),
                    c=colours,
                    s=20,
                    edgecolors="white",
                    linewidths=0.5,
                    zorder=3,
                )
                label += f"\n{_count(len(means), unit)}"
                if few := int((n_cells < min_cells).sum()):
                    label += f"\n({few} with <{min_cells} cells\nnot drawn)"
            labels.append(label)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(labels, fontsize=9)
        ax.set_ylabel(f"{program_label(score)} score (a.u.)")
        ax.set_title(program_label(score), fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in list(axes.flat)[len(scores) :]:
        ax.set_visible(False)
    if patient is not None:
        handles = [
            plt.Line2D([], [], color=c, marker="o", linestyle="", label=RESPONSE_LABELS[g])
            for g, c in RESPONSE_COLOURS.items()
            if (response == g).any()
        ]
        if unit == "patient" and (
            not handles
            or not response.reindex(patient.dropna().unique()).isin(RESPONSE_COLOURS).all()
        ):
            handles.append(
                plt.Line2D(
                    [], [], color="#333333", marker="o", linestyle="", label="response not known"
                )
            )
        fig.legend(
            handles=handles
            or [plt.Line2D([], [], color="#333333", marker="o", linestyle="", label="one sample")],
            title=f"{unit} mean",
            loc="upper left",
            bbox_to_anchor=(1.0, 0.9),
            frameon=False,
            fontsize=8,
        )
        title = (
            "Scores per state: box = cells (quartiles, whiskers 1.5 IQR), "
            f"point = one {unit}'s mean (at least {min_cells} cells in the state)"
            + ("" if unit == "patient" else "; no patient labels: samples are not patients")
        )
    else:
        title = (
            "Scores per state: box = cells (quartiles, whiskers 1.5 IQR); "
            "no patient labels, so no per-patient points"
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return _save(fig, path, formats)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def composition_by(
    adata: ad.AnnData,
    *,
    by: str,
    path: str | os.PathLike,
    title: str,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Stacked bars of the fraction of cells in each state per value of `obs[by]` (a sample, a
    tissue), the number of cells (and of patients, where known) under each bar.

    For datasets without patients (composition per sample) and datasets that mix tissues
    (composition per tissue). Needs at least two values of `by`.
    """
    obs = adata.obs
    state_key = lineage_state_key(obs)
    if state_key not in obs or not _known(obs[state_key]).any():
        raise FigureSkipped(f"no '{state_key}' annotation in the final AnnData")
    if by not in obs or not _known(obs[by]).any():
        raise FigureSkipped(f"no '{by}' annotation in the final AnnData")
    known = _known(obs[state_key]) & _known(obs[by])
    cells = obs.loc[known, [state_key, by]].astype(str).set_axis([STATE, by], axis=1)
    values = cells[by].unique()
    if len(values) < 2:
        raise FigureSkipped(f"one {by} only ({values[0]}): nothing to compare")
    fractions = pd.crosstab(cells[by], cells[STATE], normalize="index")
    counts = cells[by].value_counts()
    categories = (
        obs[state_key].cat.categories
        if isinstance(obs[state_key].dtype, pd.CategoricalDtype)
        else sorted(fractions.columns)
    )
    states = [s for s in categories if s in fractions.columns]
    fractions = fractions[states]
    patients = None
    if PATIENT in obs and _known(obs[PATIENT]).any():
        with_patient = obs.loc[known & _known(obs[PATIENT]), [by, PATIENT]].astype(str)
        patients = with_patient.groupby(by)[PATIENT].nunique()
    colours = {state: state_colour(state) for state in states}
    fig, ax = plt.subplots(figsize=(min(3.5 + 0.8 * len(fractions), 14), 4.6))
    _stacked(ax, fractions, colours)
    ax.set_xticks(range(len(fractions)))
    ticks = [
        "\n".join(textwrap.wrap(str(v).replace("_", " "), 12))
        + f"\n{_count(counts[v], 'cell')}"
        + (f"\n{_count(patients.get(v, 0), 'patient')}" if patients is not None else "")
        for v in fractions.index
    ]
    rotate = len(fractions) > 6
    ax.set_xticklabels(
        ticks, rotation=60 if rotate else 0, ha="right" if rotate else "center", fontsize=8
    )
    ax.set_xlabel(by)
    ax.set_ylabel(f"fraction of the {by}'s CD8 T cells")
    ax.set_title(title, fontsize=10)
    _state_legend(ax, states, colours, top=1)
    fig.tight_layout()
    return _save(fig, path, formats)


# ----------------------------------------------------------------------------------------------
# the tests' numbers on the response panels


def _p_text(value: float) -> str:
    return (
        "NA"
        if not np.isfinite(value)
        else f"{value:.1e}"
        if value < 0.001
        else f"{value:.3f}".rstrip("0").rstrip(".")
    )


def response_test_text(table: pd.DataFrame | None, *, state: str, program: str) -> str:
    """What the response table says about `program` in its `state` row, for a panel: q (p when
    there is no q) and the patients per group (responders first, as on the x axis), or why it
    was not tested. Read, never recomputed."""
    if table is None or not {STATE, PROGRAM} <= set(table.columns):
        return "no response table"
    rows = table[(table[STATE].astype(str) == state) & (table[PROGRAM].astype(str) == program)]
    if rows.empty:
        return "no row in the response table"
    row = rows.iloc[0]

    def number(name: str) -> float:
        return pd.to_numeric(pd.Series([row.get(name)]), errors="coerce").iloc[0]

    q, p = number(P_ADJ), number(P_VALUE)
    n_r, n_nr = number(N_RESPONDERS), number(N_NON_RESPONDERS)
    groups = f"n = {int(n_r)} R vs {int(n_nr)} NR" if np.isfinite(n_r) and np.isfinite(n_nr) else ""
    if not np.isfinite(p):
        note = str(row.get(NOTE) or "").strip()
        note = "" if note.lower() == "nan" else note
        short = textwrap.shorten(note.split("; ")[0], 70, placeholder=" …")  # the table has it all
        return "not tested" + (f": {short}" if short else "")
    stat = f"q = {_p_text(q)}" if np.isfinite(q) else f"p = {_p_text(p)}"
    return f"{stat}; {groups}" if groups else stat


# ----------------------------------------------------------------------------------------------
# program genes across states


def program_gene_heatmap(
    table: pd.DataFrame | None,
    *,
    programs: Sequence[str],
    path: str | os.PathLike,
    max_genes: int = 15,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """The up genes of each of `programs` (rows, grouped by program) across the cell states
    (columns): mean expression per state, z-scored per gene across the states. Per program, the
    `max_genes` genes that vary most between the states.

    Drawn from the programs stage's program_gene_means.tsv (`texflow.expression`, columns
    `contract.PROGRAM_GENE_MEANS_COLUMNS`; only the genes present in the data are in it), so
    the matrix is never read here. States in the table's order."""
    if table is None or table.empty:
        raise FigureSkipped(
            "no per-state means of program genes (program_gene_means.tsv is absent or empty: "
            "no cell state annotation or no program gene in the data)"
        )
    up = table[table[DIRECTION].astype(str) == "up"]
    present = {
        p: list(dict.fromkeys(up.loc[up[PROGRAM].astype(str) == p, GENE].astype(str)))
        for p in programs
    }
    present = {p: genes for p, genes in present.items() if genes}
    if not present:
        raise FigureSkipped(
            f"no gene of the programs {', '.join(programs)} is in the data (program_gene_means.tsv)"
        )
    rows_of = up[up[PROGRAM].astype(str).isin(list(present))]
    states = [str(s) for s in pd.unique(rows_of[STATE].astype(str))]
    means = (
        rows_of.assign(**{GENE: rows_of[GENE].astype(str), STATE: rows_of[STATE].astype(str)})
        .drop_duplicates([GENE, STATE])
        .pivot(index=GENE, columns=STATE, values=MEAN_EXPRESSION)
        .loc[:, states]
        .astype(float)
    )
    counts = rows_of.assign(**{STATE: rows_of[STATE].astype(str)}).groupby(STATE)[N_CELLS].first()
    if means.shape[1] < 2:
        raise FigureSkipped(f"one state only ({', '.join(means.columns)}): nothing to compare")
    rows, labels, bounds = [], [], []
    for program, genes in present.items():
        spread = means.loc[genes].std(axis=1).sort_values(ascending=False)
        chosen = [g for g in spread.index[:max_genes] if spread[g] > 0]
        if not chosen:
            continue
        rows += chosen
        labels.append((program, len(chosen), len(genes)))
        bounds.append(len(rows))
    if not rows:
        raise FigureSkipped("the program genes have the same mean in every state")
    block = means.loc[rows]
    z = block.sub(block.mean(axis=1), axis=0).div(block.std(axis=1).replace(0, np.nan), axis=0)
    z = z.fillna(0).T  # states as rows, genes as columns: a wide, short figure
    fig, ax = plt.subplots(figsize=(3.0 + 0.22 * len(rows), 1.6 + 0.32 * z.shape[0]))
    image = ax.imshow(z.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-2, vmax=2)
    ax.set_yticks(range(z.shape[0]))
    ax.set_yticklabels([f"{s} ({counts[s]})" for s in z.index], fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows, rotation=90, fontsize=7)
    start = 0
    for (program, shown, total), end in zip(labels, bounds, strict=True):
        if start:
            ax.axvline(start - 0.5, color="black", linewidth=1)
        ax.text(
            (start + end - 1) / 2,
            -0.7,
            f"{program_label(program)}\n{shown} of {total} genes",
            va="bottom",
            ha="center",
            fontsize=8,
        )
        start = end
    fig.colorbar(image, ax=ax, label="z-score across states", fraction=0.02, pad=0.01)
    ax.set_ylabel("state (cells)")
    ax.set_title(
        "Program genes across states: mean expression per state, z-scored per gene",
        fontsize=10,
        pad=30,
    )
    fig.tight_layout()
    return _save(fig, path, formats)
