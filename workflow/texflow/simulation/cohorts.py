"""Several simulated checkpoint-therapy cohorts with planted resistance genes (issue 21).

Each cohort is one `texflow.simulation.simulate` call with a seed of its own, so it has its own
patients (and their response labels), cells, sequencing depth (``median_library_size``) and
batch: a new seed redraws every gene's baseline level and the lineage differential expression,
a cohort-to-cohort shift far larger than a real batch effect (it moves a gene's mean, never the
comparison of non-responders with responders inside a cohort). Patients differ in every gene:
``batch_strength`` with ``batch_gene_fraction = 1`` gives each patient an N(0, sd) log2 offset
per gene, the between-patient spread a pseudobulk comparison has to see through.

Resistance genes are then planted in the counts by binomial thinning, which keeps them counts
(a thinned negative binomial is a negative binomial of the same shape with the mean scaled):
a gene with log2 fold change ``b > 0`` (higher in non-responders) keeps each UMI of every
responder cell with probability ``2 ** -b``; ``b < 0`` thins the non-responders' cells with
``2 ** b``. The expected pseudobulk ratio of non-responders over responders is then ``2 ** b``.

- **consistent** genes: one magnitude per gene with a random sign, the same in every cohort
  up to an N(0, `between_cohort_sd`) difference;
- **one-cohort** genes: planted in a single cohort (spread evenly over the cohorts), 0 in the
  others;
- **null** genes: every other gene.

Planted genes are drawn among the genes expressed in every cohort (at least
`min_planted_mean` UMIs per cell before planting; mitochondrial and ribosomal genes left out),
so each can be tested everywhere; what is measured is the meta-analysis, not detection.
The truth is written to ``var["true_response_log2fc"]`` of each cohort and to a table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import MappingProxyType

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..contract import GENE, N_PATIENTS, NON_RESPONDER, RESPONSE
from .dataset import simulate
from .populations import CD8_POPULATIONS, DEFAULT_POPULATION_FRACTIONS

logger = logging.getLogger(__name__)

CONSISTENT = "consistent"
ONE_COHORT = "one_cohort"
NULL = "null"
#: The default populations' CD8 shares (the DE runs on CD8 cells: the others are not simulated).
CD8_FRACTIONS = MappingProxyType(
    {p: f for p, f in DEFAULT_POPULATION_FRACTIONS.items() if p in CD8_POPULATIONS}
)
TRUTH_COLUMNS = [GENE, "kind", "magnitude", "planted_in", "mean_log2fc"]


def _thin(
    counts: sp.csr_matrix,
    *,
    genes: np.ndarray,
    keep: np.ndarray,
    cells: np.ndarray,
    rng: np.random.Generator,
) -> sp.csr_matrix:
    """Binomial thinning of the counts of `genes` in `cells`, keeping each UMI with `keep`."""
    csc = sp.csc_matrix(counts, dtype=np.float32, copy=True)
    thinned = np.zeros(csc.shape[0], dtype=bool)
    thinned[cells] = True
    for gene, p in zip(genes, keep, strict=True):
        lo, hi = csc.indptr[gene], csc.indptr[gene + 1]
        hit = lo + np.flatnonzero(thinned[csc.indices[lo:hi]])
        csc.data[hit] = rng.binomial(csc.data[hit].astype(np.int64), p).astype(np.float32)
    csc.eliminate_zeros()
    return csc.tocsr()


def plant_response_genes(adata: ad.AnnData, *, log2fc: pd.Series, seed: int) -> ad.AnnData:
    """Plant non-responder over responder log2 fold changes in a cohort's counts (thinning).

    Parameters
    ----------
    adata
        One simulated cohort (`texflow.simulation.simulate`; X holds the counts, ``obs`` the
        patients' ``response``).
    log2fc
        Gene -> planted log2 fold change, non-responders over responders (0: nothing).
    seed
        Seed of the thinning draws.

    Returns
    -------
    A copy whose X (and ``layers["counts"]``) carry the planted genes, ``var``
    ``true_response_log2fc`` the planted effects (added to any the simulation had).
    """
    out = adata.copy()
    rng = np.random.default_rng(seed)
    effects = log2fc[log2fc != 0].astype(float)
    missing = sorted(set(effects.index) - set(out.var_names))
    if missing:
        raise ValueError(f"plant_response_genes: genes not in the cohort: {missing[:5]}")
    non_responder = (out.obs[RESPONSE].astype(str) == NON_RESPONDER).to_numpy()
    X = sp.csr_matrix(out.X)
    for sign, cells in (
        (1.0, np.flatnonzero(~non_responder)),
        (-1.0, np.flatnonzero(non_responder)),
    ):
        part = effects[np.sign(effects) == sign]
        if part.empty:
            continue
        genes = out.var_names.get_indexer(part.index)
        X = _thin(X, genes=genes, keep=2.0 ** (-np.abs(part.to_numpy())), cells=cells, rng=rng)
    out.X = X
    if "counts" in out.layers:
        out.layers["counts"] = X.copy()
    planted = log2fc.reindex(out.var_names).fillna(0.0).to_numpy(float)
    out.var["true_response_log2fc"] = out.var["true_response_log2fc"].to_numpy(float) + planted
    return out


def simulate_cohorts(
    *,
    n_cohorts: int = 5,
    seed: int = 0,
    n_genes: int = 600,
    patients: tuple[int, int] = (10, 24),
    cells_per_patient: int = 125,
    library_sizes: tuple[float, float] = (2000.0, 6000.0),
    patient_sd: float = 0.4,
    composition_concentration: float = 10.0,
    n_consistent: int = 30,
    n_one_cohort: int = 10,
    magnitudes: Sequence[float] | tuple[float, float] = (0.32, 0.83),
    between_cohort_sd: float = 0.1,
    min_planted_mean: float = 0.1,
) -> tuple[dict[str, ad.AnnData], pd.DataFrame]:
    """Simulate several cohorts of CD8 T cells with planted resistance genes.

    Parameters
    ----------
    n_cohorts
        Number of cohorts.
    seed
        Seed of the whole set (cohort seeds, sizes, depths, planted genes and effects).
    n_genes
        Genes per cohort (the same names in every cohort).
    patients
        Fewest and most patients of a cohort (an even number drawn between; half are
        non-responders).
    cells_per_patient
        CD8 T cells per patient on average.
    library_sizes
        Range of the cohorts' median UMIs per cell (drawn log-uniformly).
    patient_sd
        SD of each patient's log2 offset per gene (the between-patient spread).
    composition_concentration
        Dirichlet concentration of the patients' CD8 state fractions (`simulate`).
    n_consistent, n_one_cohort
        Planted genes of each kind.
    magnitudes
        Range (low, high) of the planted |log2 fold change| (drawn uniformly).
    between_cohort_sd
        SD of a consistent gene's effect between cohorts around its magnitude.
    min_planted_mean
        UMIs per cell a gene needs in every cohort to be planted.

    Returns
    -------
    Cohort id -> AnnData (CD8 cells; ``obs`` patient, response, ``true_state``; ``var``
    ``true_response_log2fc`` the planted effect in that cohort), and the truth table
    (`TRUTH_COLUMNS`: one row per gene; ``planted_in`` the cohort of a one-cohort gene;
    ``mean_log2fc`` the mean planted effect over the cohorts) with one column
    ``log2fc_<cohort>`` per cohort.
    """
    if n_cohorts < 2:
        raise ValueError("simulate_cohorts: a meta-analysis needs at least 2 cohorts")
    rng = np.random.default_rng([int(seed), 21])
    names = [f"cohort{i + 1}" for i in range(n_cohorts)]
    cohorts = {}
    for i, name in enumerate(names):
        n_patients = 2 * int(rng.integers(patients[0] // 2, patients[1] // 2 + 1))
        depth = float(np.exp(rng.uniform(*np.log(library_sizes))))
        cohort_seed = int(rng.integers(0, 2**31 - 1))
        adata = simulate(
            n_cells=n_patients * cells_per_patient,
            n_genes=n_genes,
            n_patients=n_patients,
            seed=cohort_seed,
            population_fractions=CD8_FRACTIONS,
            doublet_rate=0.0,
            low_quality_rate=0.0,
            median_library_size=depth,
            batch_strength=patient_sd,
            batch_gene_fraction=1.0,
            composition_concentration=composition_concentration,
            counts_layer=False,
        )
        adata.uns["cohort"] = {
            "name": name,
            "index": i,
            N_PATIENTS: n_patients,
            "median_library_size": depth,
            "seed": cohort_seed,
        }
        cohorts[name] = adata
    genes = cohorts[names[0]].var_names
    technical = cohorts[names[0]].var["mt"].to_numpy() | cohorts[names[0]].var["ribo"].to_numpy()
    expressed = np.ones(len(genes), dtype=bool)
    for adata in cohorts.values():
        mean = np.asarray(adata.X.mean(axis=0)).ravel()
        expressed &= mean >= min_planted_mean
    candidates = np.flatnonzero(expressed & ~technical)
    if len(candidates) < n_consistent + n_one_cohort:
        raise ValueError(
            f"simulate_cohorts: {len(candidates)} genes are expressed in every "
            f"cohort, fewer than the {n_consistent + n_one_cohort} to plant"
        )
    chosen = rng.choice(candidates, size=n_consistent + n_one_cohort, replace=False)
    low, high = magnitudes
    magnitude = rng.uniform(low, high, chosen.size) * rng.choice([-1.0, 1.0], chosen.size)
    effects = pd.DataFrame(0.0, index=genes, columns=names)
    truth = pd.DataFrame({GENE: genes, "kind": NULL, "magnitude": 0.0, "planted_in": ""})
    truth = truth.set_index(GENE, drop=False)
    for k, gene_index in enumerate(chosen):
        gene = genes[gene_index]
        if k < n_consistent:
            effects.loc[gene] = magnitude[k] + rng.normal(0.0, between_cohort_sd, n_cohorts)
            truth.loc[gene, ["kind", "magnitude"]] = CONSISTENT, magnitude[k]
        else:
            where = names[(k - n_consistent) % n_cohorts]
            effects.loc[gene, where] = magnitude[k]
            truth.loc[gene, ["kind", "magnitude", "planted_in"]] = ONE_COHORT, magnitude[k], where
    for name in names:
        cohorts[name] = plant_response_genes(
            cohorts[name], log2fc=effects[name], seed=int(rng.integers(0, 2**31 - 1))
        )
        cohorts[name].layers["counts"] = cohorts[name].X.copy()
        cohorts[name].uns["texflow"]["dataset"] = name
        logger.info(
            "%s: %d patients, %d cells, median library %.0f",
            name,
            cohorts[name].uns["cohort"][N_PATIENTS],
            cohorts[name].n_obs,
            cohorts[name].uns["cohort"]["median_library_size"],
        )
    truth["mean_log2fc"] = effects.mean(axis=1)
    for name in names:
        truth[f"log2fc_{name}"] = effects[name]
    return cohorts, truth.reset_index(drop=True)
