"""QC figures: per-sample metric distributions with the thresholds drawn, doublet scores."""

from __future__ import annotations

import os

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..contract import (
    DOUBLET_SCORE,
    LOWER,
    PREDICTED_DOUBLET,
    QC_FAIL_PREFIX,
    SAMPLE,
    UPPER,
    UPPER_SUFFIX,
)
from ..utils import atomic_path

#: (obs column, criterion in the QC table, axis label)
PANELS = (
    ("log1p_total_counts", "total_counts", "log1p(total counts)"),
    ("log1p_n_genes_by_counts", "n_genes", "log1p(genes detected)"),
    ("pct_counts_in_top_20_genes", "top20", "% counts in top 20 genes"),
    ("pct_counts_mt", "mito", "% mitochondrial counts"),
)


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _criteria_run(adata: ad.AnnData, thresholds: pd.DataFrame) -> list[bool]:
    """Per panel of `PANELS`: whether its criterion ran (a column, a failure flag, thresholds)."""
    return [
        column in adata.obs
        and adata.obs.get(f"{QC_FAIL_PREFIX}{criterion}") is not None
        and not thresholds[f"{criterion}{UPPER_SUFFIX}"].isna().all()
        for column, criterion, _ in PANELS
    ]


def qc_metrics(adata: ad.AnnData, table: pd.DataFrame, path: str | os.PathLike) -> None:
    """One panel per QC metric that ran: cells per sample (jittered; red = failing that
    criterion) with the per-sample lower/upper thresholds as black bars. Criteria that did not
    run get no panel, only their names under the figure (the QC table's notes say why)."""
    samples = table.loc[table[SAMPLE] != "(all)", SAMPLE].tolist()
    sample_of = adata.obs[SAMPLE].astype("string").fillna("(no sample)").astype(str)
    width = max(12.0, 0.35 * len(samples) + 3)  # >= 1200 px: the report shows it page-wide
    thresholds = table.set_index(SAMPLE)
    run = _criteria_run(adata, thresholds)
    panels = [panel for panel, ran in zip(PANELS, run, strict=True) if ran]
    not_run = [label for (_, _, label), ran in zip(PANELS, run, strict=True) if not ran]
    # few samples: the panels side by side, two per row, rather than four page-wide strips
    ncols = 2 if len(samples) <= 8 and len(panels) > 1 else 1
    nrows = max(-(-len(panels) // ncols), 1)
    height = 2.6 * nrows + 0.9 if panels else 1.2
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    for ax in axes.flat[len(panels) :] if panels else []:
        ax.set_axis_off()
    rng = np.random.default_rng(0)
    for ax, (column, criterion, label) in zip(axes.flat, panels, strict=False):
        for i, sample in enumerate(samples):
            mask = (sample_of == sample).to_numpy()
            values = adata.obs.loc[mask, column].to_numpy(dtype=float)
            failed = adata.obs.loc[mask, f"{QC_FAIL_PREFIX}{criterion}"].to_numpy(dtype=bool)
            x = i + rng.uniform(-0.3, 0.3, size=values.size)
            ax.scatter(x[~failed], values[~failed], s=3, color="0.4", alpha=0.5, linewidths=0)
            ax.scatter(x[failed], values[failed], s=5, color="tab:red", linewidths=0)
            for bound in (LOWER, UPPER):
                level = thresholds.loc[sample, f"{criterion}_{bound}"]
                if np.isfinite(level):
                    ax.hlines(level, i - 0.4, i + 0.4, color="black", linewidth=1.2)
        ax.set_ylabel(label)
        ax.set_xticks(range(len(samples)))
        ax.set_xticklabels(samples, rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(samples) - 0.4)
    dataset = adata.uns.get("texflow", {}).get("dataset", "")
    footnote = f"Not run: {', '.join(not_run)} (why: notes of the QC table)" if not_run else ""
    if not panels:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(
            0.5,
            0.5,
            f"{dataset}: no QC criterion ran. {footnote}",
            ha="center",
            va="center",
            wrap=True,
            fontsize=9,
            transform=axes[0, 0].transAxes,
        )
        fig.tight_layout()
        _save(fig, path)
        return
    fig.suptitle(
        f"{dataset} QC per sample: black bars = thresholds, red = cells failing that criterion"
    )
    fig.tight_layout()
    if footnote:
        fig.text(0.01, 0.0, footnote, ha="left", va="top", fontsize=9, color="0.3")
    _save(fig, path)


def doublet_scores(adata: ad.AnnData, path: str | os.PathLike, *, note: str = "") -> None:
    """Histogram of scrublet doublet scores (predicted doublets in red), or why none were run."""
    scores = adata.obs.get(DOUBLET_SCORE)
    scored = scores is not None and scores.notna().sum() > 0
    # not run: one line of text, not an empty panel (the report shows the sentence instead)
    fig, ax = plt.subplots(figsize=(6, 3.5) if scored else (6, 1.0))
    if not scored:
        ax.text(
            0.5,
            0.5,
            f"doublet detection not run\n{note[:300]}",
            ha="center",
            va="center",
            wrap=True,
            fontsize=8,
            transform=ax.transAxes,
        )
        ax.set_axis_off()
    else:
        predicted = adata.obs[PREDICTED_DOUBLET].to_numpy(dtype=bool)
        valid = scores.notna().to_numpy()
        bins = np.linspace(0, max(0.05, float(scores.max())), 40)
        ax.hist(scores[valid & ~predicted], bins=bins, color="0.5", label="singlet")
        ax.hist(scores[valid & predicted], bins=bins, color="tab:red", label="predicted doublet")
        ax.set_xlabel("scrublet doublet score")
        ax.set_ylabel("cells")
        ax.legend(frameon=False)
        ax.set_title(f"Doublet scores (per sample scrublet): {int(predicted.sum())} predicted")
    fig.tight_layout()
    _save(fig, path)
