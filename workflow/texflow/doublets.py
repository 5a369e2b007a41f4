"""Scrublet doublet scores (Wolock, Lopez & Klein 2019, Cell Systems 8:281) in one lean pass.

The same steps and defaults as `scanpy.pp.scrublet` (which follows Wolock's reference code):
genes in >= 3 cells and cells with >= 3 genes; library-size normalisation; Seurat-flavour
highly variable genes on its log; doublets simulated by adding the raw counts of random pairs
of observed cells (`scanpy.pp.scrublet_simulate_doublets`); both sets normalised to 10^6 per
cell on those genes and scaled by the observed genes' standard deviation; a truncated SVD fitted
on the observed cells; a kNN classifier on observed + simulated cells.

What differs, and why (measured on one 16.6k-cell sample of the 100k benchmark data, 2 cores:
27.2 s with `scanpy.pp.scrublet(mean_center=False)`, 12.2 s here; doublet-score AUC against
the simulator's truth 0.968 both, Spearman correlation of the two scores 0.967):

- one float32 copy of the sample (its log-normalised values, for the highly variable genes,
  whose dispersions `texflow.features.seurat_highly_variable` sums in place) where scanpy
  copies the sample, its raw counts, its log and, inside the HVG step, that log again: the QC
  stage's peak at 100k cells fell from 5.46 to 3.32 GB (RSS sampled through `run_qc`);
- the SVD is randomized (Halko, Martinsson & Tropp 2011) rather than ARPACK, whose
  single-threaded sparse products took 8.1 of scanpy's 27.2 s;
- the neighbours of a point are its k_adj nearest other points (scikit-learn's
  ``kneighbors()``), as in Wolock's reference code (`scrublet.helper_functions.get_knn_graph`).

The automatic threshold (minimum between the modes of the simulated-doublet scores) is not the
same as scanpy's. On that sample, given the very same manifold, scanpy's neighbour lists differed
from these for every point, with the same mean count of simulated neighbours (169.8 of 192), and
its simulated-doublet scores came out lower (0.72 where these are 0.84). Its threshold is 0.108
(2,235 cells called, 858 true doublets), this one 0.681 (8 called). The doublet-score ranking
(AUC) is the same; the cause in scanpy's kNN path was not found. Doublets are flagged, not
removed, by default (`qc.remove_doublets: false`).

The samples of a dataset run side by side on the rule's threads (`scrublet_scores_by_sample`).
The scores do not depend on how many threads there are: the SVD's BLAS calls run on one thread
(on two, its randomized range finder gave PCs up to 0.006 apart, and 44 of one sample's 16.6k
cells a score one neighbour away), as do the genes' variances (numba); the kNN search's result
is the same on any number of threads (measured, benchmarks/README.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import hnswlib
import numba
import numpy as np
import scanpy as sc
from anndata import AnnData
from fast_array_utils.stats import mean_var
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from .features import cells_detected_per_gene, csr_sums, seurat_highly_variable
from .utils import EXACT_KNN_MAX_POINTS

logger = logging.getLogger(__name__)

#: Scrublet's defaults (Wolock et al. 2019; `scanpy.pp.scrublet`)
MIN_CELLS_PER_GENE = 3
MIN_GENES_PER_CELL = 3
SIM_DOUBLET_RATIO = 2.0
SIM_TARGET_SUM = 1e6

#: Scrublet's kNN search of a sample's cells and simulated doublets: exact up to
#: `utils.EXACT_KNN_MAX_POINTS` points (samples up to ~50k cells), approximate above, as
#: Scrublet's own code (annoy) and `scanpy.pp.scrublet` (pynndescent) search by default. Exact
#: search grows with the square of a sample's size: a 167k-cell sample (501k points, k = 612)
#: did not end in 99 min. Measured on one simulated 50k-cell sample (150k points, k = 336):
#: exact 80.9 s, hnswlib 89.5 s, 0.989 of the exact neighbours found, doublet AUC 0.971655 vs
#: 0.971653; pynndescent at k = 193 over 51k points took 218 s against exact 23 s, annoy found
#: 0.75 of them (benchmarks/README.md, "Scrublet at 1M cells").
EXACT_SEARCH = "exact (scikit-learn)"
APPROXIMATE_SEARCH = "approximate (hnswlib)"
#: hnswlib's graph: its README's example values (M 16, ef_construction 200)
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
#: points queried at once: their k + 1 neighbours as int64 (~100 MB at k = 612)
HNSW_QUERY_BLOCK = 20_000


@dataclass
class ScrubletResult:
    """Scores of the observed cells (NaN for cells filtered out) and of the simulated doublets,
    with the highly variable genes and the neighbours (k) they were found with, and how those
    neighbours were searched (`EXACT_SEARCH` or `APPROXIMATE_SEARCH`)."""

    observed: np.ndarray
    simulated: np.ndarray
    n_genes: int = 0
    k: int = 0
    search: str = EXACT_SEARCH


@numba.njit(cache=True)
def _scaled_rows_data(data, indptr, factors):
    """float32 copy of CSR `data` with row i's values times factors[i] (float32)."""
    scaled = np.empty(data.size, dtype=np.float32)
    for row in range(indptr.size - 1):
        factor = factors[row]
        for position in range(indptr[row], indptr[row + 1]):
            scaled[position] = np.float32(data[position]) * factor
    return scaled


def _scale_rows(matrix: sparse.csr_matrix, factors: np.ndarray) -> sparse.csr_matrix:
    """`matrix` with row i multiplied by factors[i] (in float32, the product of the float32
    value and factor): new data on the same `indices` and `indptr` arrays, which are not copied,
    and no per-value array of the factors (a third of the memory of copy-then-multiply)."""
    data = _scaled_rows_data(matrix.data, matrix.indptr, factors.astype(np.float32))
    return sparse.csr_matrix((data, matrix.indices, matrix.indptr), shape=matrix.shape)


def _row_sums(matrix: sparse.csr_matrix) -> np.ndarray:
    return csr_sums(matrix.data, matrix.indices, matrix.indptr, matrix.shape[1])[0]


@numba.njit(cache=True)
def _kept_gene_totals(data, indices, indptr, kept_genes):
    """Per row: detected genes and total counts over the `kept_genes` columns only."""
    n_rows = indptr.size - 1
    n_genes = np.zeros(n_rows, dtype=np.int64)
    totals = np.zeros(n_rows)
    for row in range(n_rows):
        for position in range(indptr[row], indptr[row + 1]):
            if kept_genes[indices[position]] and data[position] != 0:
                n_genes[row] += 1
                totals[row] += data[position]
    return n_genes, totals


def _variable_genes(
    counts: sparse.csr_matrix, *, genes: np.ndarray, factors: np.ndarray
) -> np.ndarray:
    """Seurat-flavour HVGs (scanpy's default cut-offs) of log1p(counts x row factors) among
    `genes`: one float32 copy of the matrix (scanpy's path held three)."""
    logged = _scale_rows(counts, factors)
    np.log1p(logged.data, out=logged.data)
    return seurat_highly_variable(logged, genes=genes)


def _gene_variances(matrix: sparse.csr_matrix) -> np.ndarray:
    """Per column: variance (ddof 1) of `matrix`, in float64, summed on one numba thread.

    scanpy's `mean_var` (as its Scrublet uses: E[x^2] - E[x]^2 summed in float32 would lose
    precision) splits its sums over numba's threads, so their last bits would depend on how
    many there are; on one thread they are the same whatever the rule's threads and however
    many samples run at once (`numba.set_num_threads` is local to the calling thread).
    """
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _, variance = mean_var(matrix, axis=0, correction=1)
    finally:
        numba.set_num_threads(threads)
    return np.asarray(variance, dtype=np.float64)


def _neighbour_counts(
    manifold: np.ndarray, *, is_simulated: np.ndarray, k: int, threads: int = 1, seed: int = 0
) -> np.ndarray:
    """Per point of `manifold`: how many of its `k` nearest other points are simulated.

    Exact (scikit-learn) up to `utils.EXACT_KNN_MAX_POINTS` points, approximate (hnswlib)
    above: :func:`neighbour_search` says which.
    """
    if neighbour_search(manifold.shape[0]) == EXACT_SEARCH:
        neighbours = NearestNeighbors(n_neighbors=k).fit(manifold)
        return is_simulated[neighbours.kneighbors(return_distance=False)].sum(axis=1)
    points = np.ascontiguousarray(manifold, dtype=np.float32)
    index = hnswlib.Index(space="l2", dim=points.shape[1])
    index.init_index(
        max_elements=points.shape[0],
        M=HNSW_M,
        ef_construction=HNSW_EF_CONSTRUCTION,
        random_seed=seed,
    )
    # one thread: the graph, and so the neighbours found, then depend only on the seed (threads
    # insert points in an order that varies from run to run); each query is independent
    index.add_items(points, num_threads=1)
    index.set_ef(k + 1)  # hnswlib's least: the candidate list must hold the k + 1 asked for
    counts = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], HNSW_QUERY_BLOCK):
        block = slice(start, min(start + HNSW_QUERY_BLOCK, points.shape[0]))
        found, _ = index.knn_query(points[block], k=k + 1, num_threads=threads)
        # the point itself is among its own k + 1 (scikit-learn leaves it out); where a
        # duplicate of it took its place, the farthest of the k + 1 goes instead
        itself = found == np.arange(block.start, block.stop)[:, None]
        itself[~itself.any(axis=1), -1] = True
        counts[block] = (is_simulated[found] & ~itself).sum(axis=1)
    return counts


def neighbour_search(n_points: int) -> str:
    """How Scrublet's kNN search runs for a sample of `n_points` (cells plus simulated
    doublets): `EXACT_SEARCH` up to `utils.EXACT_KNN_MAX_POINTS`, else `APPROXIMATE_SEARCH`."""
    return EXACT_SEARCH if n_points <= EXACT_KNN_MAX_POINTS else APPROXIMATE_SEARCH


def search_note(result: ScrubletResult) -> str | None:
    """The sample's QC note when its neighbours were searched approximately, else None."""
    if result.search == EXACT_SEARCH:
        return None
    n_points = int(np.isfinite(result.observed).sum()) + result.simulated.size
    return (
        f"scrublet neighbours {result.search}: {n_points:,} cells and simulated doublets, "
        f"more than the {EXACT_KNN_MAX_POINTS:,} searched exactly"
    )


@dataclass
class _Manifold:
    """A sample's observed cells and simulated doublets in Scrublet's principal components."""

    points: np.ndarray
    n_obs: int
    kept: np.ndarray
    n_genes: int


def _manifold(
    counts: sparse.spmatrix, *, rows: np.ndarray | None, n_prin_comps: int, seed: int
) -> _Manifold:
    """Scrublet's steps up to the kNN search: filters, HVGs, simulated doublets, scaling, SVD.

    `rows` (a mask or index of rows of `counts`) is copied out here, so that the copy is freed
    as soon as the HVGs' counts are taken from it.
    """
    counts = sparse.csr_matrix(counts if rows is None else counts[rows])
    # Scrublet's filters: genes in >= 3 cells, then cells with >= 3 of those genes
    genes = cells_detected_per_gene(counts) >= MIN_CELLS_PER_GENE
    n_genes, totals = _kept_gene_totals(counts.data, counts.indices, counts.indptr, genes)
    kept = n_genes >= MIN_GENES_PER_CELL
    if not kept.all():
        counts, totals = counts[kept], totals[kept]
    n_obs = counts.shape[0]
    factors = np.median(totals) / totals  # normalize_total to the median library size
    hvg = _variable_genes(counts, genes=genes, factors=factors)
    raw = counts[:, hvg]
    del counts
    normalised = _scale_rows(raw, factors)

    simulated = sc.pp.scrublet_simulate_doublets(
        AnnData(raw), sim_doublet_ratio=SIM_DOUBLET_RATIO, random_seed=seed
    )
    del raw
    sim = sparse.csr_matrix(simulated.X)  # scanpy returns CSC: a CSR copy
    del simulated
    obs_norm = _scale_rows(normalised, SIM_TARGET_SUM / np.maximum(_row_sums(normalised), 1e-12))
    del normalised
    sim_norm = _scale_rows(sim, SIM_TARGET_SUM / np.maximum(_row_sums(sim), 1e-12))
    del sim

    # scale each gene by the observed cells' standard deviation (ddof 1), no centring
    variance = _gene_variances(obs_norm)
    inverse_sd = sparse.diags(
        (1 / np.sqrt(np.where(variance > 0, variance, np.inf))).astype(np.float32)
    )
    obs_norm = obs_norm @ inverse_sd
    sim_norm = sim_norm @ inverse_sd

    n_comps = int(min(n_prin_comps, n_obs - 1, obs_norm.shape[1] - 1))
    svd = TruncatedSVD(n_components=n_comps, algorithm="randomized", random_state=seed)
    observed = svd.fit_transform(obs_norm)
    del obs_norm
    points = np.vstack([observed, svd.transform(sim_norm)])
    return _Manifold(points=points, n_obs=n_obs, kept=kept, n_genes=int(hvg.sum()))


def _doublet_scores(
    manifold: _Manifold, *, expected_doublet_rate: float, threads: int = 1, seed: int = 0
) -> ScrubletResult:
    """Scrublet's kNN classifier on a sample's manifold: the Bayesian score of each point."""
    n_obs = manifold.n_obs
    n_sim = manifold.points.shape[0] - n_obs
    k = round(0.5 * np.sqrt(n_obs))  # Scrublet's default n_neighbors
    k_adj = round(k * (1 + n_sim / n_obs))
    is_simulated = np.r_[np.zeros(n_obs, bool), np.ones(n_sim, bool)]
    n_doublet_neighbours = _neighbour_counts(
        manifold.points, is_simulated=is_simulated, k=k_adj, threads=threads, seed=seed
    )
    scores = bayesian_doublet_score(
        n_doublet_neighbours, k=k_adj, sim_ratio=n_sim / n_obs, rate=expected_doublet_rate
    )
    observed = np.full(len(manifold.kept), np.nan)
    observed[manifold.kept] = scores[:n_obs]
    return ScrubletResult(
        observed=observed,
        simulated=scores[n_obs:],
        n_genes=manifold.n_genes,
        k=k_adj,
        search=neighbour_search(manifold.points.shape[0]),
    )


def scrublet_scores(
    counts: sparse.spmatrix,
    *,
    expected_doublet_rate: float,
    n_prin_comps: int = 30,
    seed: int = 0,
) -> ScrubletResult:
    """Scrublet doublet scores of one sample's raw counts (cells x genes).

    Parameters
    ----------
    counts
        Raw UMI counts of one sample (one 10x channel: doublets form within a channel).
    expected_doublet_rate
        Prior doublet rate rho of Scrublet's Bayesian score.
    n_prin_comps
        Components of the truncated SVD (Scrublet's default 30); capped by the matrix size.
    seed
        Seed of the doublet simulation and the SVD.

    Returns
    -------
    ScrubletResult
        ``observed`` aligned with the rows of `counts` (NaN for cells with < 3 detected genes),
        ``simulated`` for the simulated doublets (they place the threshold).
    """
    (result,) = scrublet_scores_by_sample(
        counts,
        [None],  # every row: one sample
        expected_doublet_rate=expected_doublet_rate,
        n_prin_comps=n_prin_comps,
        seed=seed,
        threads=len(os.sched_getaffinity(0)),  # the kNN search on every core, as OpenMP would
    )
    return result


def scrublet_scores_by_sample(
    counts: sparse.spmatrix,
    samples: Iterable[np.ndarray | None],
    *,
    expected_doublet_rate: float,
    n_prin_comps: int = 30,
    seed: int = 0,
    threads: int = 1,
) -> Iterator[ScrubletResult]:
    """:func:`scrublet_scores` of each sample's rows of `counts`, up to `threads` at once.

    The samples are independent and each is seeded with `seed`, so they can run side by side;
    the results come back in the order of `samples`, and are the same to the last bit whatever
    `threads` is. Each sample runs in a thread of this process (no copy of the matrix for a
    worker process), its kNN search (scikit-learn's with OpenMP, or hnswlib's above
    `utils.EXACT_KNN_MAX_POINTS` points; both outside the GIL) on `threads` //
    (samples at once) threads, and every BLAS call of the Scrublet steps on one thread (its
    SVD is of a sparse matrix: no slower on one thread, and its last bits do not depend on the
    thread count). The steps before the kNN search run for one sample at a time, beside the
    kNN search of the others (benchmarks/README.md: time and memory at 100k cells).

    Parameters
    ----------
    counts
        Raw UMI counts, cells x genes (CSR: rows are sliced per sample).
    samples
        One boolean row mask (or row index array) per sample, in the order wanted back; None
        for all the rows.
    expected_doublet_rate, n_prin_comps, seed
        As :func:`scrublet_scores`, the same for every sample.
    threads
        Cores to use: samples at once x threads per kNN search.

    Returns
    -------
    Iterator[ScrubletResult]
        One result per sample, in order; a sample's rows are copied out of `counts` only when
        its turn comes (at most `threads` copies at once).
    """
    samples = list(samples)
    workers = max(1, min(int(threads), len(samples)))
    inner = max(1, int(threads) // workers)
    # one sample at a time in the steps before the kNN search: they hold the sample's copies of
    # its counts (the memory peak), run on one core and take a third of the time; the kNN search
    # of one sample (most of the time, OpenMP, no GIL) runs beside the next sample's steps
    preparing = threading.Lock()

    def run(rows: np.ndarray | None) -> ScrubletResult:
        start = time.perf_counter()
        # OpenMP's thread count is local to the calling thread: set in each worker
        with threadpool_limits(limits=inner, user_api="openmp"):
            with preparing:
                manifold = _manifold(counts, rows=rows, n_prin_comps=n_prin_comps, seed=seed)
            result = _doublet_scores(
                manifold, expected_doublet_rate=expected_doublet_rate, threads=inner, seed=seed
            )
        # a line per sample: at 1M cells one sample's exact kNN search took over an hour, and
        # QC's log said nothing until its end
        logger.info(
            "Scrublet: a sample of %d cells scored (%d neighbours, %s) in %.0f s",
            result.observed.size,
            result.k,
            result.search,
            time.perf_counter() - start,
        )
        return result

    # BLAS's thread count is global to the process: one setting around all the workers (that
    # scikit-learn's kNN search sets it to 1 and back while another sample's SVD runs is then
    # harmless)
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            yield from map(run, samples)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrublet") as pool:
            yield from pool.map(run, samples)


def bayesian_doublet_score(
    n_doublet_neighbours: np.ndarray, *, k: int, sim_ratio: float, rate: float
) -> np.ndarray:
    """Scrublet's doublet score from the number of simulated doublets among `k` neighbours.

    q = (d + 1) / (k + 2) is the smoothed fraction of simulated neighbours; with simulated
    doublets `sim_ratio` times the observed cells and a prior doublet rate rho, the score is
    q rho / r / (1 - rho - q (1 - rho - rho / r)) (Wolock et al. 2019, STAR Methods).
    """
    q = (np.asarray(n_doublet_neighbours, dtype=np.float64) + 1) / (k + 2)
    return q * rate / sim_ratio / (1 - rate - q * (1 - rate - rate / sim_ratio))
