"""Figures of the trajectory and programs stages: pseudotime overview, program trends.

Every function draws one figure and writes it atomically as PNG (plus SVG when asked).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..contract import (
    EFFECT,
    EXHAUSTED_STATES,
    FIT,
    LOWER,
    N_PATIENTS,
    OTHER_STATE,
    P_ADJ,
    PSEUDOTIME,
    STATE,
    UNIT,
    UPPER,
)
from ..utils import atomic_path
from .colours import state_colour
from .report import program_label

logger = logging.getLogger(__name__)

#: How each `texflow.trajectory` method is named on a figure.
METHOD_LABELS = {
    "principal_path": "path through the state centroids",
    "dpt": "diffusion pseudotime",
}
#: Lineage states in order, each in its colour of every figure (`colours.STATE_COLOURS`).
LINEAGE_COLOURS = {state: state_colour(state) for state in EXHAUSTED_STATES}


def _save(fig: plt.Figure, path: str | os.PathLike, formats: Sequence[str] = ("png",)) -> Path:
    path = Path(path)
    for fmt in ["png", *[f for f in formats if f != "png"]]:
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
    plt.close(fig)
    logger.info("figure %s written", path)
    return path


def message_figure(path: str | os.PathLike, *, title: str, message: str) -> Path:
    """A figure that says why there is nothing to draw (a skipped step), rather than no file."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    return _save(fig, path)


def pseudotime_overview(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    state_key: str = "state",
    formats: Sequence[str] = ("png",),
) -> Path:
    """UMAP coloured by pseudotime (grey: outside the lineage) and pseudotime per state."""
    pt = adata.obs[PSEUDOTIME].to_numpy(dtype=float)
    has_umap = "X_umap" in adata.obsm
    fig, axes = plt.subplots(
        1, 2 if has_umap else 1, figsize=(11 if has_umap else 5.5, 4.5), squeeze=False
    )
    axes = axes[0]
    if has_umap:
        ax = axes[0]
        xy = adata.obsm["X_umap"]
        ok = np.isfinite(pt)
        ax.scatter(
            xy[~ok, 0], xy[~ok, 1], s=4, c="#d0d0d0", label="outside lineage", rasterized=True
        )
        points = ax.scatter(xy[ok, 0], xy[ok, 1], s=5, c=pt[ok], cmap="viridis", rasterized=True)
        fig.colorbar(points, ax=ax, label="pseudotime")
        root = adata.uns.get("texflow", {}).get("trajectory", {}).get("root_cell", "")
        if root and root in adata.obs_names:
            i = adata.obs_names.get_loc(root)
            ax.scatter(xy[i, 0], xy[i, 1], s=120, marker="*", c="red", edgecolor="k", label="root")
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        method = adata.uns.get("texflow", {}).get("trajectory", {}).get("method", "")
        ax.set_title(f"Pseudotime over the exhausted lineage ({METHOD_LABELS.get(method, method)})")
        ax.legend(loc="best", fontsize=8, frameon=False)
    ax = axes[-1]
    states = [s for s in LINEAGE_COLOURS if (adata.obs[state_key].astype(str) == s).any()]
    data = [
        pt[(adata.obs[state_key].astype(str) == s).to_numpy() & np.isfinite(pt)] for s in states
    ]
    rng = np.random.default_rng(0)
    for i, (state, values) in enumerate(zip(states, data, strict=True)):
        ax.scatter(
            i + rng.uniform(-0.25, 0.25, values.size),
            values,
            s=4,
            alpha=0.4,
            c=LINEAGE_COLOURS[state],
            rasterized=True,
        )
    ax.boxplot(data, positions=range(len(states)), widths=0.6, showfliers=False)
    ax.set_xticks(
        range(len(states)), [f"{s}\n(n={len(v)})" for s, v in zip(states, data, strict=True)]
    )
    ax.set_ylabel("pseudotime")
    ax.set_title("Pseudotime per state")
    return _save(fig, path, formats)


def program_trend(
    cells: pd.DataFrame,
    trend: pd.DataFrame,
    path: str | os.PathLike,
    *,
    program: str,
    association: dict | None = None,
    formats: Sequence[str] = ("png",),
) -> Path:
    """Cells (score vs pseudotime, coloured by state), the GAM fit and its bootstrap band.

    Parameters
    ----------
    cells
        Lineage cells with columns ``pseudotime``, ``score`` and ``state``.
    trend
        Rows of ``tables/trends.tsv`` for this program (pseudotime, fit, lower, upper, unit).
    association
        Row of ``tables/associations.tsv`` for this program, quoted in the title.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for state, colour in LINEAGE_COLOURS.items():
        sub = cells[cells[STATE].astype(str) == state]
        if len(sub):
            ax.scatter(
                sub[PSEUDOTIME],
                sub["score"],
                s=4,
                alpha=0.25,
                c=colour,
                label=f"{state} cells",
                rasterized=True,
            )
    others = cells[~cells[STATE].astype(str).isin(list(LINEAGE_COLOURS))]
    if len(others):
        ax.scatter(
            others[PSEUDOTIME], others["score"], s=4, alpha=0.25, c=state_colour(OTHER_STATE)
        )
    unit = str(trend[UNIT].iloc[0]) if len(trend) else ""
    ax.fill_between(
        trend[PSEUDOTIME],
        trend[LOWER],
        trend[UPPER],
        color="k",
        alpha=0.2,
        label=f"95% bootstrap band (resampling {unit})",
    )
    ax.plot(trend[PSEUDOTIME], trend[FIT], c="k", lw=2, label="GAM fit")
    # zoom on the trend: cells spread far wider than the mean curve
    lo, hi = np.nanpercentile(cells["score"], [2, 98]) if len(cells) else (0, 1)
    band_lo, band_hi = np.nanmin(trend[LOWER]), np.nanmax(trend[UPPER])
    if np.isfinite(band_lo) and np.isfinite(band_hi):
        lo, hi = min(lo, band_lo), max(hi, band_hi)
    pad = 0.05 * (hi - lo if hi > lo else 1)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("pseudotime (Tpex → Tex-term)")
    ax.set_ylabel(f"{program_label(program)} score (UCell)")
    title = f"{program_label(program)} along pseudotime"
    if association:
        effect, p_adj = association.get(EFFECT), association.get(P_ADJ)
        n = association.get(N_PATIENTS)
        if effect is not None and np.isfinite(effect):
            unit_text = (
                f"{int(n)} patients" if association.get(UNIT) == "patients" else "cells as units"
            )
            title += f"\nρ = {effect:.2f}, adj. p = {p_adj:.2g} ({unit_text})"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=7, frameon=False, markerscale=3)
    return _save(fig, path, formats)
