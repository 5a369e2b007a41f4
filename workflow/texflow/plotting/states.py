"""Figure of the states stage: marker dot plot per cluster, rows labelled with the state.

Every function draws one figure and writes it atomically as PNG (plus SVG/PDF when asked).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import pandas as pd
import scanpy as sc

from ..contract import (
    CLUSTER,
    CONFIDENCE,
    CYCLING,
    EXHAUSTION_AXIS_KEY,
    ISG_HIGH,
    STATE,
    TEX_INT,
    TEX_TERM,
    TPEX,
)
from ..utils import atomic_path

logger = logging.getLogger(__name__)

# Human markers shown per group (mouse: the programs' mouse symbols of the same genes, through
# `marker_panel`). Chosen from the shipped programs: what a reader checks first for each state.
MARKER_GROUPS: dict[str, tuple[str, ...]] = {
    "naive": ("CCR7", "SELL", "LEF1"),
    TPEX: ("TCF7", "SLAMF6", "CXCR5", "ID3", "XCL1", "GNG4", "CD200"),
    "gate": ("TOX", "PDCD1", "LAG3", "TIGIT"),
    TEX_TERM: ("HAVCR2", "ENTPD1", "CD38", "LAYN", "CXCL13", "CD101", "GZMB", "PRF1"),
    TEX_INT: ("CX3CR1", "KLRG1", "TBX21"),
    "Tem": ("GZMK", "CXCR3", "EOMES"),
    "ISG": ("ISG15", "IFI44L", "MX1", "IFIT3"),
    "cycling": ("MKI67", "TOP2A"),
}


def marker_panel(
    var_names, *, organism: str, programs_tsv: str | os.PathLike | None = None
) -> dict[str, list[str]]:
    """`MARKER_GROUPS` in the organism's symbols, keeping genes present in `var_names`."""
    present = set(map(str, var_names))
    mapping: dict[str, list[str]] = {}
    if organism == "mouse":
        from ..signatures import PROGRAMS_TSV

        table = pd.read_csv(
            programs_tsv or PROGRAMS_TSV, sep="\t", dtype=str, keep_default_na=False
        )
        for human, mouse in zip(table["human"], table["mouse"], strict=True):
            mapping.setdefault(human, [s for s in mouse.split(";") if s])
    panel = {}
    for group, genes in MARKER_GROUPS.items():
        symbols = []
        for gene in genes:
            candidates = (
                mapping.get(gene, [gene[0] + gene[1:].lower()]) if organism == "mouse" else [gene]
            )
            symbols.extend(s for s in candidates if s in present and s not in symbols)
        if symbols:
            panel[group] = symbols
    return panel


def state_marker_dotplot(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    organism: str,
    table: pd.DataFrame,
    cluster_key: str = "cluster",
    formats: Sequence[str] = ("png",),
    title: str | None = None,
) -> Path:
    """Dot plot of state markers (columns) per cluster (rows labelled 'cluster: state (conf)').

    Dot size = fraction of the cluster's cells expressing the gene, colour = mean expression
    (X, log-normalised) scaled per gene to 0-1, so weak and strong markers are comparable.
    Flags (ISG-high, cycling) are appended to the row label.
    """
    panel = marker_panel(adata.var_names, organism=organism)
    by_cluster = table.set_index(CLUSTER)
    labels = {}
    for cluster, row in by_cluster.iterrows():
        flags = [name for name, on in (("ISG", row[ISG_HIGH]), ("cycling", row[CYCLING])) if on]
        extra = f" +{'+'.join(flags)}" if flags else ""
        labels[cluster] = f"{cluster}: {row[STATE]} ({row[CONFIDENCE]:.2f}){extra}"
    # order rows along the exhausted axis so Tpex and Tex_term sit at opposite ends
    order = (
        adata.obs.groupby(adata.obs[cluster_key].astype(str), observed=True)[EXHAUSTION_AXIS_KEY]
        .mean()
        .sort_values()
        .index
    )
    column = "_state_label"
    adata.obs[column] = pd.Categorical(
        adata.obs[cluster_key].astype(str).map(labels), categories=[labels[c] for c in order]
    )
    path = Path(path)
    try:
        if not panel:
            raise ValueError("no state marker gene is in the data")
        dot = sc.pl.dotplot(
            adata,
            panel,
            groupby=column,
            standard_scale="var",
            show=False,
            return_fig=True,
            title=title or "State markers per cluster (rows: cluster: state (confidence))",
            colorbar_title="mean expression\nscaled per gene",
            size_title="fraction of cells\nexpressing",
        )
        dot.make_figure()
        fig = dot.fig
        for fmt in ["png", *[f for f in formats if f != "png"]]:
            with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
        plt.close(fig)
    finally:
        del adata.obs[column]
    logger.info("figure %s written", path)
    return path
