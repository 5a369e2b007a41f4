"""Cluster figures: UMAP coloured by cluster and by sample/patient/response/tissue, gating."""

from __future__ import annotations

import os

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..contract import CHOSEN, N_CLUSTERS, RESOLUTION, SILHOUETTE
from ..utils import atomic_path
from .colours import MISSING_COLOUR, RESPONSE_COLOURS, category_colours

#: obs columns drawn next to the clusters when they hold any value
METADATA_COLUMNS = ("sample", "patient", "response", "tissue", "timepoint")


def _scatter_categories(
    ax, xy: np.ndarray, labels: pd.Series, title: str, *, on_data: bool, column: str = ""
) -> None:
    labels = labels.astype("string").fillna("NA").astype(str)
    categories = sorted(labels.unique(), key=lambda c: (len(c), c))
    # one colour per category, never repeated in the panel (19 patients: 19 colours); the
    # response groups in their colour of every figure
    palette = category_colours([c for c in categories if c != "NA"])
    fixed = RESPONSE_COLOURS if column == "response" else {}
    size = max(2.0, min(30.0, 3000 / max(1, len(labels))))
    for category in categories:
        mask = (labels == category).to_numpy()
        color = MISSING_COLOUR if category == "NA" else fixed.get(category, palette[category])
        ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=color, label=category, linewidths=0)
        if on_data:
            cx, cy = np.median(xy[mask], axis=0)
            ax.text(cx, cy, category, fontsize=11, weight="bold", ha="center", va="center")
    ax.set_title(title, fontsize=13)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    if not on_data and len(categories) <= 30:
        # 9 pt: the figure is shown across the page (~1300 px of its ~1700), so ~10 px on screen
        ax.legend(
            frameon=False,
            fontsize=9,
            markerscale=2,
            loc="center left",
            bbox_to_anchor=(1, 0.5),
            ncol=1 if len(categories) <= 16 else 2,
            columnspacing=0.8,
            handletextpad=0.3,
        )


def umap_panels(adata: ad.AnnData, path: str | os.PathLike, *, key: str = "cluster") -> None:
    """UMAP by cluster, then by each of `METADATA_COLUMNS` that has values, saved as one PNG."""
    xy = adata.obsm["X_umap"]
    columns = [key] + [c for c in METADATA_COLUMNS if c in adata.obs and adata.obs[c].notna().any()]
    n = len(columns)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    # at least 12 in (> 1200 px): the report shows it across the page, legends legible
    width = max(5.2 * ncols, 12.0 if ncols > 1 else 0.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 4.2 * nrows), squeeze=False)
    for ax, column in zip(axes.ravel(), columns, strict=False):
        title = f"Leiden clusters (n = {adata.n_obs} cells)" if column == key else column
        _scatter_categories(ax, xy, adata.obs[column], title, on_data=column == key, column=column)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    dataset = adata.uns.get("texflow", {}).get("dataset", "")
    fig.suptitle(f"{dataset}: CD8 T cells after QC")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def resolution_sweep(sweep: pd.DataFrame, path: str | os.PathLike) -> None:
    """Number of clusters and silhouette against Leiden resolution; the chosen one marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(sweep[RESOLUTION], sweep[N_CLUSTERS], "o-", color="tab:blue")
    ax.set_xlabel("Leiden resolution")
    ax.set_ylabel("clusters", color="tab:blue")
    other = ax.twinx()
    other.plot(sweep[RESOLUTION], sweep[SILHOUETTE], "s--", color="tab:orange")
    other.set_ylabel("mean silhouette (PCA)", color="tab:orange")
    chosen = sweep.loc[sweep[CHOSEN], RESOLUTION]
    for value in chosen:
        ax.axvline(value, color="black", linewidth=0.8)
    ax.set_title("Resolution sweep (black line = chosen)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
