"""Feature selection and sparse kernels on cells x genes CSR matrices, in O(genes) memory.

scanpy's versions of these steps copy the matrix (a float64 CSC conversion for Pearson
residuals, an expm1 copy for the Seurat flavour, int64 index copies for counting): at 100k
cells each copy is ~2 GB. These compute the same numbers from the stored values; each has a
unit test against scanpy (tests/unit/test_cluster.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from scipy import sparse

from .utils import row_chunks


@numba.njit(cache=True, parallel=True)
def _divide_rows_log1p(data, indptr, divisors):
    for cell in numba.prange(indptr.size - 1):
        if divisors[cell] > 0:
            for k in range(indptr[cell], indptr[cell + 1]):
                data[k] = np.log1p(data[k] / divisors[cell])


def lognormalise_counts(
    counts,
    *,
    columns: np.ndarray | None = None,
    totals: CountTotals | None = None,
    chunk_rows: int | None = None,
) -> sparse.csr_matrix:
    """log1p of `normalize_total` (each cell to the median total of the cells with counts),
    as a new float32 CSR matrix, optionally of some `columns` only (scaled by every gene's
    total). The arithmetic of scanpy's ``normalize_total`` + ``log1p`` (value / (total /
    median), then log1p), in place on one copy: scanpy's pair needed a second transient copy
    (at 60k cells, the cluster stage's peak; measured).

    Without `columns` the result has new values on the very `indices` and `indptr` arrays of
    `counts` (CSR input), not copies: log1p(x / s) is zero exactly where x is, so the two
    matrices have one sparsity pattern, and the cluster stage, which holds both, keeps one
    copy of it (0.6 GB at 60k cells; measured). Neither matrix may then be changed in
    structure in place (``eliminate_zeros``, ``sort_indices``, ``sum_duplicates``) while the
    other is in use.

    With `columns`, `counts` may also be an anndata backed CSR dataset (`utils.backed_csr`):
    the column subset is filled `chunk_rows` rows at a time into arrays allocated once at
    its final size (its number of values is known from `totals`: `CountTotals.stored`), so
    neither the whole matrix nor a second copy of the subset is ever in memory. `totals`
    (`count_totals` of the same `counts`) saves a pass over them; the values are the same
    either way.
    """
    if columns is None:
        counts = sparse.csr_matrix(counts)  # no copy of a CSR matrix
        cell_totals, _ = csr_sums(counts.data, counts.indices, counts.indptr, counts.shape[1])
        values = sparse.csr_matrix(counts.shape, dtype=np.float32)
        # the same arrays of indices (not a copy), set as attributes: the (data, indices,
        # indptr) constructor may cast them to another integer type, which copies
        values.data = counts.data.astype(np.float32, copy=True)
        values.indices, values.indptr = counts.indices, counts.indptr
        values.check_format(full_check=False)
    else:
        totals = count_totals(counts, chunk_rows=chunk_rows) if totals is None else totals
        cell_totals = totals.cells
        values = _column_subset(counts, np.asarray(columns), totals=totals, chunk_rows=chunk_rows)
    _divide_rows_log1p(values.data, values.indptr, normalize_total_divisors(cell_totals))
    return values


def normalize_total_divisors(cell_totals: np.ndarray) -> np.ndarray:
    """Per cell, what `lognormalise_counts` divides its counts by: its total over the median
    total of the cells with counts (scanpy's ``normalize_total`` default target), float32."""
    positive = cell_totals > 0
    target = float(np.median(cell_totals[positive])) if positive.any() else 1.0
    return (cell_totals / target).astype(np.float32)


def lognormalise_rows(block, *, divisors: np.ndarray) -> sparse.csr_matrix:
    """`lognormalise_counts` of some rows of a count matrix, as a new float32 CSR matrix of
    their own: `divisors` are those rows' `normalize_total_divisors`, computed from every
    cell's total, so that blocks of rows give the whole matrix's values to the bit (the
    cluster stage writes its log-normalised X block by block)."""
    values = sparse.csr_matrix(block, dtype=np.float32, copy=True)
    _divide_rows_log1p(values.data, values.indptr, np.asarray(divisors, dtype=np.float32))
    return values


def _column_subset(
    counts, columns: np.ndarray, *, totals: CountTotals, chunk_rows: int | None
) -> sparse.csr_matrix:
    """``counts[:, columns]`` as float32 CSR, filled `chunk_rows` rows at a time (each chunk's
    subset is scipy's, so the values and their order within each row are scipy's too)."""
    n_cells = counts.shape[0]
    nnz = int(totals.stored[columns].sum())
    index_dtype = np.int32 if max(nnz, columns.size) < np.iinfo(np.int32).max else np.int64
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=index_dtype)
    indptr = np.zeros(n_cells + 1, dtype=index_dtype)
    filled = 0
    for rows, chunk in row_chunks(counts, chunk_rows=chunk_rows):
        part = chunk[:, columns]
        stop = filled + part.nnz
        if stop > nnz:
            raise RuntimeError("_column_subset: more values than CountTotals.stored says")
        data[filled:stop] = part.data
        indices[filled:stop] = part.indices
        indptr[rows.start + 1 : rows.stop + 1] = filled + part.indptr[1:]
        filled = stop
    if filled != nnz:
        raise RuntimeError("_column_subset: fewer values than CountTotals.stored says")
    values = sparse.csr_matrix((n_cells, columns.size), dtype=np.float32)
    values.data, values.indices, values.indptr = data, indices, indptr
    values.check_format(full_check=False)
    return values


@numba.njit(cache=True, parallel=True)
def _downsample_rows(data, indptr, rows, target, seed):  # pragma: no cover
    # scanpy's `_downsample_array` for each row in `rows`, rows spread over the threads. Every
    # row re-seeds the random state (as scanpy's loop does); numba keeps one state per thread,
    # so a row's draw does not depend on the thread that makes it.
    for i in numba.prange(rows.size):
        start, stop = indptr[rows[i]], indptr[rows[i] + 1]
        np.random.seed(seed)
        values = data[start:stop]
        cumulative = values.cumsum()
        values[:] = 0
        picked = np.random.choice(np.int_(cumulative[-1]), target, replace=False)
        picked.sort()
        gene = 0
        for count in picked:
            while count >= cumulative[gene]:
                gene += 1
            values[gene] += 1


def downsample_counts(
    counts: sparse.csr_matrix, *, counts_per_cell: int, seed: int = 0
) -> sparse.csr_matrix:
    """Counts of every cell above `counts_per_cell` subsampled to it without replacement, in place.

    The numbers of ``scanpy.pp.downsample_counts(counts_per_cell=..., random_state=seed)``
    (same draws, same result; tests/unit/test_programs.py), with the cells spread over the CPU
    cores where scanpy loops over them in Python: on the 60k CD8 cells x 20k genes of the 100k
    benchmark (2 cores), 11.3 s in scanpy, 6.7 s here (measured). Zeros left by the
    subsampling are removed.
    """
    if not (sparse.issparse(counts) and counts.format == "csr"):
        raise TypeError(f"downsample_counts needs a CSR matrix, got {type(counts).__name__}")
    totals = csr_sums(counts.data, counts.indices, counts.indptr, counts.shape[1])[0]
    rows = np.flatnonzero(totals > counts_per_cell)
    _downsample_rows(counts.data, counts.indptr, rows, int(counts_per_cell), int(seed))
    counts.eliminate_zeros()
    return counts


@numba.njit(cache=True)
def _add_column_counts(data, indices, detected, stored):
    # per column: nonzero values (detected) and stored values (explicit zeros included)
    for k in range(data.size):
        stored[indices[k]] += 1
        if data[k] != 0:
            detected[indices[k]] += 1


def cells_detected_per_gene(matrix) -> np.ndarray:
    """Cells with a nonzero value, per gene, from a CSR matrix without copying its indices
    (scipy's ``getnnz(axis=0)`` widens them to int64: 2 GB at 100k cells; measured)."""
    matrix = sparse.csr_matrix(matrix)
    detected = np.zeros(matrix.shape[1], dtype=np.int64)
    _add_column_counts(matrix.data, matrix.indices, detected, np.zeros_like(detected))
    return detected


@numba.njit(cache=True)
def _positive_per_row(data, indptr):
    positive = np.zeros(indptr.size - 1, dtype=np.int64)
    for row in range(indptr.size - 1):
        for k in range(indptr[row], indptr[row + 1]):
            if data[k] > 0:
                positive[row] += 1
    return positive


def positive_per_cell(matrix) -> np.ndarray:
    """Values > 0 per cell (row) of a CSR matrix (or anything `scipy.sparse.csr_matrix`
    takes), as int64, without copying it: ``(matrix > 0).sum(axis=1)`` builds a boolean
    matrix and its indices (0.7 GB at 60k cells x 2.4k genes, the programs stage's peak;
    measured)."""
    matrix = sparse.csr_matrix(matrix)
    return _positive_per_row(matrix.data, matrix.indptr)


@numba.njit(cache=True)
def _add_csr_sums(data, indices, indptr, cell_sums, gene_sums):
    # adds to the given float64 arrays: rows read in chunks accumulate, chunk after chunk, in
    # the order (and so to the bits) of one pass over the whole matrix
    for cell in range(indptr.size - 1):
        for k in range(indptr[cell], indptr[cell + 1]):
            cell_sums[cell] += data[k]
            gene_sums[indices[k]] += data[k]


def csr_sums(data, indices, indptr, n_genes) -> tuple[np.ndarray, np.ndarray]:
    """Per cell and per gene sums of CSR values, accumulated in float64 (no float64 copy)."""
    cell_sums = np.zeros(indptr.size - 1)
    gene_sums = np.zeros(n_genes)
    _add_csr_sums(data, indices, indptr, cell_sums, gene_sums)
    return cell_sums, gene_sums


@dataclass
class CountTotals:
    """What one pass over a count matrix gives (`count_totals`).

    Attributes
    ----------
    cells
        Per cell: the sum of its values (float64).
    genes
        Per gene: the sum of its values (float64).
    detected
        Per gene: cells with a nonzero value (int64).
    stored
        Per gene: values stored in the CSR matrix, explicit zeros included (int64): the size
        of a column subset (`lognormalise_counts` with `columns`).
    """

    cells: np.ndarray
    genes: np.ndarray
    detected: np.ndarray
    stored: np.ndarray


def count_totals(counts, *, chunk_rows: int | None = None) -> CountTotals:
    """Per-cell and per-gene sums of a count matrix and its detected and stored values per
    gene, in one pass of `chunk_rows` rows at a time (`utils.row_chunks`: a CSR matrix in
    memory or an anndata backed CSR dataset). The sums are `csr_sums`' to the last bit: each
    chunk adds to the same float64 arrays in row order."""
    n_cells, n_genes = counts.shape
    totals = CountTotals(
        cells=np.zeros(n_cells),
        genes=np.zeros(n_genes),
        detected=np.zeros(n_genes, dtype=np.int64),
        stored=np.zeros(n_genes, dtype=np.int64),
    )
    for rows, chunk in row_chunks(counts, chunk_rows=chunk_rows):
        _add_csr_sums(chunk.data, chunk.indices, chunk.indptr, totals.cells[rows], totals.genes)
        _add_column_counts(chunk.data, chunk.indices, totals.detected, totals.stored)
    return totals


@numba.njit(cache=True, parallel=True)
def _zero_residual_moments(gene_sums, cell_sums, n_cells_with_sum, total, theta, clip):
    """Per gene: sum and sum of squares of the clipped residuals of a zero count in every cell,
    over the distinct cell totals `cell_sums`, each weighted by how many cells have it."""
    first = np.zeros(gene_sums.size)
    second = np.zeros(gene_sums.size)
    for gene in numba.prange(gene_sums.size):
        s1 = 0.0
        s2 = 0.0
        for cell in range(cell_sums.size):
            mu = gene_sums[gene] * cell_sums[cell] / total
            res = min(max(-mu / np.sqrt(mu + mu * mu / theta), -clip), clip)
            s1 += n_cells_with_sum[cell] * res
            s2 += n_cells_with_sum[cell] * res * res
        first[gene] = s1
        second[gene] = s2
    return first, second


@numba.njit(cache=True)
def _add_nonzero_residual_corrections(
    data, indices, indptr, gene_sums, cell_sums, total, theta, clip, first, second
):
    """Per gene: what the stored counts add to those sums, over the residual of a zero; added
    to `first` and `second` (float64), so that chunks of rows accumulate in row order."""
    for cell in range(indptr.size - 1):
        for k in range(indptr[cell], indptr[cell + 1]):
            gene = indices[k]
            mu = gene_sums[gene] * cell_sums[cell] / total
            sd = np.sqrt(mu + mu * mu / theta)
            res = min(max((data[k] - mu) / sd, -clip), clip)
            res0 = min(max(-mu / sd, -clip), clip)
            first[gene] += res - res0
            second[gene] += res * res - res0 * res0


def pearson_residual_variances(
    counts,
    *,
    theta: float = 100.0,
    clip: float | None = None,
    totals: CountTotals | None = None,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """Variance over cells of each gene's clipped analytic Pearson residuals (Lause et al. 2021).

    The quantity ``scanpy.experimental.pp.highly_variable_genes(flavor="pearson_residuals")``
    ranks genes by (same theta, clip = sqrt(cells), population variance), computed from the
    CSR counts in O(genes) memory: scanpy converts the counts to CSC float64 first (at 100k
    cells, ~4 GB above the matrix, the cluster stage's peak; measured). A zero count's residual
    depends only on the cell's and gene's totals, so every cell is summed as if zero, then the
    stored counts correct their own terms. Genes never detected get NaN.

    `counts` is a CSR matrix in memory or an anndata backed CSR dataset (`utils.backed_csr`),
    read `chunk_rows` rows at a time in two passes (totals, then the corrections; `totals`,
    from `count_totals` of the same counts, saves the first); every chunk adds to the same
    float64 sums in row order, so the result does not depend on `chunk_rows`, to the bit.
    """
    n_cells = counts.shape[0]
    clip = float(np.sqrt(n_cells) if clip is None else clip)
    totals = count_totals(counts, chunk_rows=chunk_rows) if totals is None else totals
    cell_sums, gene_sums = totals.cells, totals.genes
    total = float(gene_sums.sum())
    detected = gene_sums > 0
    safe_sums = np.where(detected, gene_sums, 1.0)  # undefined for undetected genes
    # a zero's residual depends on the cell only through its total: counts give few distinct
    # totals (10,012 among the gate's 92,671 cells at 100k), so sum over those (6.4 -> 0.7 s)
    distinct_sums, n_cells_with_sum = np.unique(cell_sums, return_counts=True)
    first, second = _zero_residual_moments(
        safe_sums, distinct_sums, n_cells_with_sum.astype(np.float64), total, float(theta), clip
    )
    extra_first, extra_second = np.zeros(gene_sums.size), np.zeros(gene_sums.size)
    for rows, chunk in row_chunks(counts, chunk_rows=chunk_rows):
        _add_nonzero_residual_corrections(
            chunk.data, chunk.indices, chunk.indptr, safe_sums, cell_sums[rows], total,
            float(theta), clip, extra_first, extra_second,
        )  # fmt: skip
    mean = (first + extra_first) / n_cells
    variance = np.maximum((second + extra_second) / n_cells - mean * mean, 0.0)
    return np.where(detected, variance, np.nan)


@numba.njit(cache=True)
def _expm1_column_moments(data, indices, n_columns):
    """Per column: sum and sum of squares of expm1 of the stored values (zeros add nothing)."""
    sums = np.zeros(n_columns)
    squares = np.zeros(n_columns)
    for position in range(data.size):
        value = np.expm1(np.float64(data[position]))
        sums[indices[position]] += value
        squares[indices[position]] += value * value
    return sums, squares


def seurat_dispersions(
    logged, *, genes: np.ndarray | None = None, n_bins: int = 20
) -> pd.DataFrame:
    """Seurat-flavour gene dispersions of log1p-normalised values, in O(genes) memory.

    The quantities of ``scanpy.pp.highly_variable_genes(flavor="seurat")`` (Satija et al. 2015):
    mean and variance (ddof 1) of expm1(X), log dispersion var / mean, log1p mean, and the
    dispersion z-scored within `n_bins` equal-width bins of that mean (a bin holding one gene
    gives it 1). scanpy first copies X and takes expm1 of the copy (at 37k lineage cells, one
    of the trajectory stage's copies; measured); here the sums run over the stored values.
    `genes` (boolean mask) restricts the binning to those genes, as if the others had been
    sliced away first (without the column copy); the others get NaN.
    Returns a frame with columns ``means``, ``dispersions``, ``dispersions_norm`` (gene order).
    """
    if sparse.issparse(logged):
        logged = sparse.csr_matrix(logged)
        sums, squares = _expm1_column_moments(logged.data, logged.indices, logged.shape[1])
    else:
        values = np.expm1(np.asarray(logged, dtype=np.float64))
        sums, squares = values.sum(axis=0), (values * values).sum(axis=0)
    n_cells = logged.shape[0]
    mean = sums / n_cells
    variance = (squares - n_cells * mean * mean) / max(n_cells - 1, 1)
    mean[mean == 0] = 1e-12
    dispersion = variance / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(dispersion)
    frame = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    if genes is not None:
        frame.loc[~np.asarray(genes, dtype=bool)] = np.nan
    bins = pd.cut(frame["means"], bins=n_bins)
    grouped = frame.groupby(bins, observed=True)["dispersions"]
    average, deviation = grouped.transform("mean"), grouped.transform("std")
    single = deviation.isna()  # scanpy: a bin of one gene (with a dispersion) -> z of 1
    deviation = deviation.where(~single, average)
    average = average.where(~single, 0.0)
    frame["dispersions_norm"] = (frame["dispersions"] - average) / deviation
    return frame


def seurat_highly_variable(
    logged,
    *,
    n_top_genes: int | None = None,
    genes: np.ndarray | None = None,
    min_mean: float = 0.0125,
    max_mean: float = 3.0,
    min_disp: float = 0.5,
) -> np.ndarray:
    """Boolean mask of Seurat-flavour highly variable genes, as scanpy picks them.

    With `n_top_genes`, the genes whose normalised dispersion is among the top `n_top_genes`
    (ties at the cut kept); without, scanpy's default cut-offs on mean and dispersion. Only
    `genes` (a boolean mask; default all) can be picked, and only they are binned.
    """
    frame = seurat_dispersions(logged, genes=genes)
    norm = frame["dispersions_norm"].to_numpy()
    if n_top_genes is None:
        mean = frame["means"].to_numpy()
        with np.errstate(invalid="ignore"):
            return (mean > min_mean) & (mean < max_mean) & (np.nan_to_num(norm) > min_disp)
    finite = np.sort(norm[~np.isnan(norm)])[::-1]
    cut = finite[min(n_top_genes, finite.size) - 1]
    return np.nan_to_num(norm, nan=-np.inf) >= cut


@numba.njit(cache=True)
def _add_group_row_sums(data, indices, indptr, first, member_ptr, members, sums, detected):
    # row after row, in the order of the matrix: each group's sums add its rows in row order
    for row in range(indptr.size - 1):
        cell = first + row
        for m in range(member_ptr[cell], member_ptr[cell + 1]):
            group = members[m]
            for k in range(indptr[row], indptr[row + 1]):
                value = np.float64(data[k])
                sums[group, indices[k]] += value
                if value > 0:
                    detected[group, indices[k]] += 1.0


def group_row_sums(
    matrix, groups: list[np.ndarray], *, chunk_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per group of rows: the sum of its rows and the number of its rows with a value > 0, per
    column, in one pass over `matrix`, `chunk_rows` rows at a time (`utils.row_chunks`: a CSR
    matrix in memory or an anndata backed CSR dataset, so a file's matrix is never read whole).

    Each group's rows are added in float64 in row order: for a group given in increasing row
    order, the sums are scipy's ``matrix[rows].astype(float64).sum(axis=0)`` to the bit (its
    sum is a product with ones that also adds row after row). Groups may share rows.

    Parameters
    ----------
    matrix
        Cells x genes.
    groups
        Row positions of each group.
    chunk_rows
        Rows read at a time (default `utils.COUNTS_CHUNK_ROWS`).

    Returns
    -------
    sums, detected
        Groups x columns, float64.
    """
    n_rows, n_columns = matrix.shape
    sizes = np.array([len(rows) for rows in groups], dtype=np.int64)
    cells = np.concatenate([np.asarray(rows, dtype=np.int64) for rows in groups] or [[]])
    cells = cells.astype(np.int64)
    owners = np.repeat(np.arange(len(groups), dtype=np.int64), sizes)
    order = np.argsort(cells, kind="stable")
    members = owners[order]
    member_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=n_rows), out=member_ptr[1:])
    sums = np.zeros((len(groups), n_columns))
    detected = np.zeros((len(groups), n_columns))
    for rows, chunk in row_chunks(matrix, chunk_rows=chunk_rows):
        _add_group_row_sums(
            chunk.data, chunk.indices, chunk.indptr, rows.start, member_ptr, members, sums,
            detected,
        )  # fmt: skip
    return sums, detected
