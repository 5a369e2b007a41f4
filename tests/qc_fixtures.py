"""Simulated datasets shared by the qc, gating and cluster tests (cached per process)."""

from __future__ import annotations

import functools

import anndata as ad


@functools.lru_cache(maxsize=8)
def _simulated(organism: str, seed: int) -> ad.AnnData:
    from texflow.simulation import simulate

    return simulate(n_cells=3000, n_genes=2000, organism=organism, seed=seed)


def simulated(organism: str = "human", seed: int = 0) -> ad.AnnData:
    """A fresh copy of a 3,000-cell simulated TIL dataset with truth in obs."""
    return _simulated(organism, seed).copy()
