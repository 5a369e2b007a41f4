"""Labelled test data for the trajectory and programs stages: simulated CD8 cells with the
states stage's contract (X log-normalised, obs `state`/`cluster`/`state_confidence`) taken from
the simulator's truth, so these stages can be tested on their own."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import scanpy as sc
from texflow.simulation import simulate


def labelled_cd8(
    *,
    seed: int = 0,
    n_cells: int = 1500,
    n_genes: int = 800,
    n_patients: int = 6,
    rising_programs: Mapping[str, float] | None = None,
    response_effects: Mapping[str, float] | None = None,
    organism: str = "human",
) -> ad.AnnData:
    """Simulated singlet CD8 cells, log-normalised, with `state` = `cluster` = true state."""
    kwargs = {}
    if rising_programs is not None:
        kwargs["rising_programs"] = rising_programs
    if response_effects is not None:
        kwargs["response_effects"] = response_effects
    adata = simulate(
        n_cells=n_cells,
        n_genes=n_genes,
        organism=organism,
        seed=seed,
        n_patients=n_patients,
        doublet_rate=0.0,
        low_quality_rate=0.0,
        **kwargs,
    )
    adata = adata[adata.obs["true_is_cd8"].to_numpy()].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p", None)
    adata.uns["texflow"]["x"] = "lognorm"
    adata.obs["state"] = adata.obs["true_state"].astype(str).astype("category")
    adata.obs["cluster"] = adata.obs["state"].cat.codes.astype(str).astype("category")
    adata.obs["state_confidence"] = np.float32(0.9)
    return adata
