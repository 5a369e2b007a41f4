"""The count sampler of the simulation: gamma-Poisson counts around each cell's expected
UMIs, dense for variable or highly expressed genes, Poisson scattering for the many lowly
expressed background genes (`texflow.simulation.simulate`, the "Counts" paragraph)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numba
import numpy as np
import scipy.sparse as sp

from .genes import _GeneTable
from .populations import (
    _ANCHOR_TIMES,
    EXHAUSTED_POPULATIONS,
    POPULATIONS,
    PSEUDOTIME_TERRITORIES,
    _trajectory_anchors,
)

logger = logging.getLogger(__name__)


# Genes with at least this many expected UMIs in some population are drawn densely (cheaper
# than events once most cells have a count); measured on 20k genes, see benchmarks/.
_DENSE_MIN_UMIS = 1.0
_CHUNK_CELLS = 8192  # even: a chunk of doublet parents holds whole pairs


class _CellRates:
    """Exact log expected UMIs (at the reference library) of any cell and gene.

    A cell is described by its population, pseudotime (exhausted lineage; 0 elsewhere), patient
    and response; its rate of gene g is the population's (or the interpolated trajectory's) rate
    times the rising, response and batch effects.
    """

    def __init__(self, *, genes: _GeneTable, rising_log, response_log, batch_log) -> None:
        self.log_rates = genes.log_rates
        self.rising_log = rising_log
        self.response_log = response_log
        self.batch_log = batch_log
        self.any_batch = bool(np.any(batch_log))
        self.lineage = np.array([POPULATIONS.index(p) for p in EXHAUSTED_POPULATIONS])

    def anchors(self, pop: np.ndarray, time_: np.ndarray):
        """Anchor populations (a, b) and weight w for each cell (a = b = pop off the lineage)."""
        a, b, w = pop.copy(), pop.copy(), np.zeros(pop.size)
        on = np.isin(pop, self.lineage)
        if on.any():
            a[on], b[on], w[on] = _trajectory_anchors(time_[on])
        return a, b, w

    def dense(self, pop, time_, patient, nr, gene_idx) -> np.ndarray:
        """Log rates, cells x `gene_idx` (a dense block: use for few genes or few cells)."""
        a, b, w = self.anchors(pop, time_)
        sub = self.log_rates[:, gene_idx]
        log_mu = sub[a]
        log_mu += w[:, None] * (sub[b] - log_mu)
        log_mu += time_[:, None] * self.rising_log[gene_idx]
        log_mu += nr[:, None] * self.response_log[gene_idx]
        if self.any_batch:
            log_mu += self.batch_log[:, gene_idx][patient]
        return log_mu

    def pairs(self, a, b, w, time_, patient, nr, gene) -> np.ndarray:
        """Log rates of (cell, gene) pairs given per-pair anchors (for scattered events)."""
        lo = self.log_rates[a, gene]
        log_mu = lo + w * (self.log_rates[b, gene] - lo)
        log_mu += time_ * self.rising_log[gene]
        log_mu += nr * self.response_log[gene]
        if self.any_batch:
            log_mu += self.batch_log[patient, gene]
        return log_mu


@numba.njit(cache=True)
def _counts_kernel(
    seed,
    dense_mu,
    dense_shape,
    dense_genes,
    proposals,
    group,
    cum_bound,
    bound,
    event_genes,
    thin,
    anchor_a,
    anchor_b,
    weight,
    time_,
    patient,
    non_responder,
    event_log_rates,
    event_rising,
    event_response,
    event_batch,
):  # pragma: no cover - compiled
    """Counts of a chunk of cells as CSR arrays (sorted gene indices).

    Dense genes: gamma-Poisson around dense_mu. Event genes: cell c receives proposals[c]
    points of a Poisson process on [0, total bound of its group), generated in increasing order
    (normalised exponential spacings), so the genes they fall on (galloping search in the
    cumulative bound) come out sorted; on the exhausted lineage (thin[c]) a point is kept with
    probability exact rate / bound (thinning). The two sorted streams are merged per cell.
    """
    np.random.seed(seed)
    n_cells, n_dense = dense_mu.shape
    n_event = event_genes.size
    capacity = int(proposals.sum()) + n_cells * n_dense
    out_indptr = np.zeros(n_cells + 1, dtype=np.int64)
    out_indices = np.empty(capacity, dtype=np.int32)
    out_data = np.empty(capacity, dtype=np.float32)
    spacing = np.empty(proposals.max() + 1 if n_cells else 1, dtype=np.float64)
    k = 0
    for c in range(n_cells):
        g = group[c]
        n = proposals[c]
        total = 0.0
        for i in range(n + 1):
            total += np.random.exponential()
            spacing[i] = total
        span = cum_bound[g, n_event - 1] / spacing[n]
        d = 0
        j = 0
        last_gene = -1
        for i in range(n + 1):
            if i < n:
                target = spacing[i] * span
                # galloping search for the first j with cum_bound[g, j] > target
                step = 1
                while j + step < n_event and cum_bound[g, j + step - 1] <= target:
                    j += step
                    step *= 2
                lo, hi = j, min(j + step, n_event - 1)
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if cum_bound[g, mid] > target:
                        hi = mid
                    else:
                        lo = mid + 1
                j = lo
                if thin[c]:
                    la = event_log_rates[anchor_a[c], j]
                    log_mu = la + weight[c] * (event_log_rates[anchor_b[c], j] - la)
                    log_mu += time_[c] * event_rising[j] + non_responder[c] * event_response[j]
                    log_mu += event_batch[patient[c], j]
                    if np.random.random() * bound[g, j] >= np.exp(log_mu):
                        continue
                gene = event_genes[j]
            else:
                gene = 2**31 - 1  # flush the remaining dense genes
            while d < n_dense and dense_genes[d] < gene:
                mu = dense_mu[c, d]
                if mu >= 0.05:
                    count = np.random.poisson(
                        mu * np.random.gamma(dense_shape[d], 1.0 / dense_shape[d])
                    )
                else:  # overdispersion adds < 0.05 * mu * dispersion to the variance: skip it
                    count = np.random.poisson(mu)
                if count > 0:
                    out_indices[k] = dense_genes[d]
                    out_data[k] = count
                    k += 1
                d += 1
            if i == n:
                break
            if gene == last_gene:
                out_data[k - 1] += 1.0
            else:
                out_indices[k] = gene
                out_data[k] = 1.0
                k += 1
                last_gene = gene
        out_indptr[c + 1] = k
    return out_indptr, out_indices[:k].copy(), out_data[:k].copy()


def _sample_counts(
    *,
    genes: _GeneTable,
    row_pop: np.ndarray,
    row_patient: np.ndarray,
    pseudotime: np.ndarray,
    library: np.ndarray,
    mito_target: np.ndarray,
    non_responder: np.ndarray,
    rising_log: np.ndarray,
    response_log: np.ndarray,
    batch_log: np.ndarray,
    rng: np.random.Generator,
    n_singlets: int,
) -> Iterator[sp.csr_matrix]:
    """Draw the counts of all rows, chunk by chunk (never a dense rows x genes matrix).

    Yields the counts of the cells as CSR blocks of consecutive rows, in order, each as soon
    as it is drawn: the singlets, then the doublets, each the sum of its two parents (two
    consecutive drawn rows; `_CHUNK_CELLS` is even, so a chunk of parents never splits a pair).
    Stacked, the blocks are the whole matrix (`_stack_cells`); written one after the other
    (`texflow.utils.write_csr_rows`), a matrix larger than memory. The random draws are the
    same either way: nothing else draws from `rng` while the blocks are being consumed.

    Genes with at least `_DENSE_MIN_UMIS` expected UMIs in some population (and mitochondrial
    genes, which low-quality cells change) are drawn densely as gamma-Poisson (negative
    binomial). All other genes are drawn as a Poisson process per cell whose cost is
    proportional to the counts, not to cells x genes: points are proposed at an upper-bound rate
    per (population, patient) group and, on the exhausted lineage whose rates move with
    pseudotime, thinned to each cell's exact rate (Lewis & Shedler 1979). A gene below one
    expected UMI is Poisson for practical purposes: NB variance mu + phi mu^2 exceeds the
    Poisson variance by < 25 % at mu = 1 with the dispersion used here (cf. Svensson 2020).
    """
    n_rows, n_genes = row_pop.size, len(genes.names)
    n_patients = batch_log.shape[0]
    rates = _CellRates(
        genes=genes,
        rising_log=rising_log,
        response_log=response_log,
        batch_log=batch_log,
    )
    max_level = np.exp(genes.log_rates).max(axis=0)
    dense_mask = (max_level >= _DENSE_MIN_UMIS) | (genes.gene_class == "mito")
    dense_idx = np.flatnonzero(dense_mask)
    event_idx = np.flatnonzero(~dense_mask)
    mito_in_dense = genes.gene_class[dense_idx] == "mito"
    shape = 1.0 / genes.dispersion[dense_idx]
    logger.debug("%d genes drawn densely, %d as events", dense_idx.size, event_idx.size)

    time_ = np.where(np.isnan(pseudotime), 0.0, pseudotime)
    nr = non_responder.astype(np.int64)
    a, b, w = rates.anchors(row_pop, time_)
    on_lineage = np.isin(row_pop, rates.lineage)
    all_genes = np.arange(n_genes)
    total_rate = np.empty(n_rows)
    # Upper-bound rates of the event genes per (population, patient) group: the maximum over
    # the pseudotimes where the piecewise-monotone log rate can peak (segment ends, anchors).
    group_of = np.full((len(POPULATIONS), n_patients), -1)
    bounds: list[np.ndarray] = []
    # 201 grid points: linear interpolation of this smooth total is then exact to < 0.1 %.
    grid = np.linspace(0.0, 1.0, 201)
    for patient in range(n_patients):
        here = row_patient == patient
        if not here.any():
            continue
        patient_nr = int(nr[here][0])
        for pop in np.unique(row_pop[here]):
            if pop in rates.lineage:
                lo, hi = PSEUDOTIME_TERRITORIES[POPULATIONS[pop]]
                points = np.array([lo, hi, *[t for t in _ANCHOR_TIMES if lo < t < hi]])
            else:
                points = np.zeros(1)
            log_mu = rates.dense(
                np.full(points.size, pop),
                points,
                np.full(points.size, patient),
                np.full(points.size, patient_nr),
                all_genes,
            )
            if pop not in rates.lineage:
                total_rate[here & (row_pop == pop)] = np.exp(log_mu).sum()
            # Bound the identity part (monotone between anchors) and the linear rising part
            # separately: their sum can peak inside the segment.
            rising_part = points[:, None] * rising_log[event_idx]
            log_bound = (log_mu[:, event_idx] - rising_part).max(axis=0) + rising_part.max(axis=0)
            group_of[pop, patient] = len(bounds)
            bounds.append(np.exp(log_bound) * (1.0 + 1e-9))
        lineage_here = here & on_lineage
        if lineage_here.any():
            log_mu = rates.dense(
                np.full(grid.size, rates.lineage[0]),
                grid,
                np.full(grid.size, patient),
                np.full(grid.size, patient_nr),
                all_genes,
            )
            total_rate[lineage_here] = np.interp(
                time_[lineage_here], grid, np.exp(log_mu).sum(axis=1)
            )
    bound = np.vstack(bounds) if bounds else np.zeros((1, event_idx.size))
    cum_bound = np.cumsum(bound, axis=1)
    row_group = group_of[row_pop, row_patient]
    event_log_rates = np.ascontiguousarray(genes.log_rates[:, event_idx])
    event_batch = np.ascontiguousarray(batch_log[:, event_idx])
    event_rising = rising_log[event_idx].copy()
    event_response = response_log[event_idx].copy()
    event_genes = event_idx.astype(np.int32)

    # Chunks never straddle the first doublet parent, so singlets and parents come out apart.
    chunk_starts = [
        *range(0, n_singlets, _CHUNK_CELLS),
        *range(n_singlets, n_rows, _CHUNK_CELLS),
    ]
    chunk_ends = [*chunk_starts[1:], n_rows]
    for start, end in zip(chunk_starts, chunk_ends, strict=True):
        rows = np.arange(
            start,
            min(end, start + _CHUNK_CELLS, n_singlets if start < n_singlets else n_rows),
        )
        # Dense genes: exact per-cell rates (gamma-Poisson draws in the kernel).
        mu = np.exp(rates.dense(row_pop[rows], time_[rows], row_patient[rows], nr[rows], dense_idx))
        total = total_rate[rows].copy()
        lq = np.flatnonzero(~np.isnan(mito_target[rows]))
        if lq.size:  # low-quality cells: scale mitochondrial genes to the target share
            mito_now = mu[lq][:, mito_in_dense].sum(axis=1)
            rest = total[lq] - mito_now
            target = mito_target[rows[lq]]
            factor = target * rest / ((1.0 - target) * mito_now)
            mu[np.ix_(lq, np.flatnonzero(mito_in_dense))] *= factor[:, None]
            total[lq] = rest + factor * mito_now
        scale = library[rows] / total
        mu *= scale[:, None]
        # Event genes: Poisson numbers of proposals per cell, scattered and merged in the kernel.
        groups = row_group[rows]
        proposals = rng.poisson(scale * cum_bound[groups, -1])
        indptr, indices, data = _counts_kernel(
            int(rng.integers(2**31 - 1)),
            mu,
            shape,
            dense_idx.astype(np.int32),
            proposals.astype(np.int64),
            groups,
            cum_bound,
            bound,
            event_genes,
            on_lineage[rows],
            a[rows],
            b[rows],
            w[rows],
            time_[rows],
            row_patient[rows],
            nr[rows].astype(np.float64),
            event_log_rates,
            event_rising,
            event_response,
            event_batch,
        )
        block = sp.csr_matrix((data, indices, indptr), shape=(rows.size, n_genes))
        if start >= n_singlets:  # doublet parents: each consecutive pair is one doublet
            block = block[0::2] + block[1::2]  # canonical sum keeps indices sorted
        yield block


def _stack_cells(blocks: Iterable[sp.csr_matrix]) -> sp.csr_matrix:
    """The counts of every cell: `_sample_counts`' blocks stacked in memory."""
    blocks = list(blocks)
    X = sp.vstack(blocks, format="csr", dtype=np.float32) if len(blocks) > 1 else blocks[0]
    X.sort_indices()  # a linear check: every block is already sorted
    return X
