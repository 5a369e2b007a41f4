"""Simulated CD8 T cells with known states, clustered simply, for the states tests."""

from __future__ import annotations

import functools

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from texflow.simulation import simulate


@functools.lru_cache(maxsize=8)
def _simulated_cd8(organism: str, seed: int, batch_strength: float, n_cells: int) -> ad.AnnData:
    adata = simulate(
        n_cells=n_cells,
        n_genes=2000,
        organism=organism,
        seed=seed,
        batch_strength=batch_strength,
        doublet_rate=0.0,
        low_quality_rate=0.0,
    )
    adata = adata[adata.obs["true_is_cd8"].to_numpy()].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def simulated_cd8(organism="human", seed=0, batch_strength=0.0, n_cells=2000) -> ad.AnnData:
    """QC-clean simulated CD8 T cells, X log-normalised (a fresh copy every call)."""
    return _simulated_cd8(organism, seed, batch_strength, n_cells).copy()


def leiden_clusters(
    adata: ad.AnnData, *, resolution: float = 1.0, batch_key: str | None = None
) -> None:
    """A plain scanpy clustering into obs['cluster'] (Harmony on `batch_key` when given)."""
    sc.pp.highly_variable_genes(adata, n_top_genes=1000)
    sc.pp.pca(adata, n_comps=20, mask_var="highly_variable", random_state=0)
    representation = "X_pca"
    if batch_key is not None:
        import harmonypy

        harmony = harmonypy.run_harmony(
            adata.obsm["X_pca"], adata.obs, batch_key, random_state=0, verbose=False
        )
        corrected = np.asarray(harmony.Z_corr)
        adata.obsm["X_harmony"] = corrected if corrected.shape[0] == adata.n_obs else corrected.T
        representation = "X_harmony"
    sc.pp.neighbors(adata, n_neighbors=15, use_rep=representation, random_state=0)
    sc.tl.leiden(
        adata,
        resolution=resolution,
        key_added="cluster",
        random_state=0,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )


def oracle_clusters(adata: ad.AnnData) -> None:
    """Perfect clusters: one per true state."""
    adata.obs["cluster"] = adata.obs["true_state"].astype(str).astype("category")


def majority_state(adata: ad.AnnData) -> pd.Series:
    """The most frequent true state of each cluster."""
    table = pd.crosstab(adata.obs["cluster"].astype(str), adata.obs["true_state"].astype(str))
    return table.idxmax(axis=1)
