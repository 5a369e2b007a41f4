"""Plain scanpy baseline: the standard steps a user would script by hand, on one h5ad of counts.

QC metrics, cell and gene filters, normalize_total, log1p, HVG, PCA, neighbours, Leiden, UMAP,
diffusion pseudotime and two gene scores. Prints one JSON line with the wall time of each step;
peak memory is measured from outside (benchmarks/run.py reads the process's max RSS).

    python benchmarks/baseline_scanpy.py data.h5ad
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import scanpy as sc


def main(path: str) -> None:
    timings: dict[str, float] = {}
    start = last = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[step] = round(now - last, 3)
        last = now

    adata = sc.read_h5ad(path)
    lap("read")
    adata.var["mt"] = adata.var_names.str.upper().str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], inplace=True, percent_top=None)
    lap("qc_metrics")
    sc.pp.filter_cells(adata, min_genes=200)
    sc.pp.filter_genes(adata, min_cells=3)
    adata = adata[adata.obs["pct_counts_mt"] < 20].copy()
    lap("filter")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    lap("normalize_log1p")
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    lap("hvg")
    sc.pp.pca(adata, n_comps=50, mask_var="highly_variable")
    lap("pca")
    sc.pp.neighbors(adata, n_neighbors=15)
    lap("neighbors")
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, resolution=1.0)
    lap("leiden")
    sc.tl.umap(adata)
    lap("umap")
    sc.tl.diffmap(adata)
    adata.uns["iroot"] = int(np.argmin(adata.obsm["X_diffmap"][:, 1]))
    sc.tl.dpt(adata)
    lap("dpt")
    genes = list(adata.var_names)
    sc.tl.score_genes(
        adata,
        [g for g in ("TCF7", "SLAMF6", "CXCR5", "SELL") if g in genes] or genes[:10],
        score_name="score_a",
    )
    sc.tl.score_genes(
        adata,
        [g for g in ("ISG15", "IFI6", "MX1", "IFIT3") if g in genes] or genes[10:20],
        score_name="score_b",
    )
    lap("scores")
    timings["total"] = round(time.perf_counter() - start, 3)
    print(json.dumps({"n_cells": adata.n_obs, "n_genes": adata.n_vars, "timings": timings}))


if __name__ == "__main__":
    main(sys.argv[1])
