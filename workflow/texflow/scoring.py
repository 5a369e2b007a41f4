"""Rank-based per-cell gene-program scores (UCell).

UCell (Andreatta & Carmona 2021, Comput Struct Biotechnol J 19:3796) scores a program in one
cell from that cell's gene ranks alone: genes are ranked by expression within the cell
(highest = 1, ties averaged), ranks above `max_rank` are set to ``max_rank + 1``, and the
Mann-Whitney U statistic of the program's genes is turned into an AUC-like score in [0, 1]::

    U = sum(ranks of the n program genes) - n (n + 1) / 2
    score = 1 - U / (n * max_rank)

(0 when no program gene is within `max_rank`). Negative markers (UCell's ``GENE-``) are scored
the same way and subtracted: ``score = max(0, up - w_neg * down)``.

Because only a cell's own ranks enter its score, the score does not depend on which other cells
are in the dataset (unlike `scanpy.tl.score_genes`, which subtracts a dataset-wide control set),
and it is the same on counts, TPM or log values (ranks are invariant to monotone transforms of
a cell's values). This is why gating and state labelling use it.

Implementation: our own, vectorised over a sparse CSR matrix in chunks of cells (one sort of a
chunk's non-zero values, no dense cells x genes matrix). Zero values are unranked: a gene with
zero expression counts as ``max_rank + 1``, as in UCell's sparse path. The PyPI package pyucell
(0.8.0) implements the same statistic but loops over cells in Python and would add joblib and
session-info2 to the lock; see `tests/unit/test_scoring.py` for the comparison against a naive
reference and the speed measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numba
import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .contract import SCORE_PREFIX
from .errors import InputDataError
from .signatures import GeneProgram

logger = logging.getLogger(__name__)

# UCell's default: ranks beyond 1500 carry no information (Andreatta & Carmona 2021); 1500 is
# about the median number of detected genes per cell in 10x data.
DEFAULT_MAX_RANK = 1500
# 2,000 cells per chunk keep the transient sort buffers near 100 MB at 2,000 detected genes per
# cell; larger chunks were not faster on 100k x 20k (see test_scoring speed measurement).
DEFAULT_CHUNK_SIZE = 2000


def _as_program(name: str, program: GeneProgram | Sequence[str]) -> GeneProgram:
    """Accept a GeneProgram or a plain gene list in UCell notation (``GENE-`` = negative)."""
    if isinstance(program, GeneProgram):
        return program
    genes = [str(g) for g in program]
    return GeneProgram(
        name=name,
        up=tuple(g.rstrip("+") for g in genes if not g.endswith("-")),
        down=tuple(g[:-1] for g in genes if g.endswith("-")),
    )


@numba.njit(cache=True, parallel=True)
def _rank_rows(indptr, indices, data, column_to_union, max_rank, out):  # pragma: no cover
    # Per cell: sort its values once, then look up the rank of each program gene by binary
    # search (descending rank = values above + (ties + 1) / 2). Only program genes are ranked,
    # so the cost is one sort per cell; measured ~6x faster than a numpy lexsort of the chunk.
    # Cells are independent (each writes its own row of `out`): one thread per core.
    for row in numba.prange(indptr.size - 1):
        start, stop = indptr[row], indptr[row + 1]
        n = stop - start
        if n == 0:
            continue
        ordered = np.sort(data[start:stop])
        for k in range(start, stop):
            target = column_to_union[indices[k]]
            if target < 0:
                continue
            value = data[k]
            left = np.searchsorted(ordered, value, side="left")
            right = np.searchsorted(ordered, value, side="right")
            rank = (n - right) + (right - left + 1) / 2.0
            if rank <= max_rank:
                out[row, target] = rank


def _u_score(ranks: np.ndarray, n_missing: int, max_rank: int) -> np.ndarray:
    """UCell score of one gene set from capped ranks (cells x present genes)."""
    n = ranks.shape[1] + n_missing
    if n == 0:
        return np.zeros(ranks.shape[0])
    rank_sum = ranks.sum(axis=1) + n_missing * (max_rank + 1)
    score = 1.0 - (rank_sum - n * (n + 1) / 2.0) / (n * max_rank)
    # UCell: a cell in which no gene of the set is within max_rank scores 0
    nothing_ranked = (ranks > max_rank).all(axis=1)
    score[nothing_ranked] = 0.0
    return score


def ucell(
    adata: AnnData,
    programs: Mapping[str, GeneProgram | Sequence[str]],
    *,
    max_rank: int = DEFAULT_MAX_RANK,
    key_prefix: str = SCORE_PREFIX,
    layer: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    w_neg: float = 1.0,
    missing_genes: str = "impute",
    matrix=None,
) -> None:
    """Score gene programs per cell with UCell.

    Parameters
    ----------
    adata
        Cells x genes; any non-negative values (counts, TPM, log-normalised): only each cell's
        ranking of its genes is used.
    programs
        Program name -> `GeneProgram` (or a gene list in UCell notation, ``GENE-`` negative).
        Gene symbols must match ``adata.var_names`` (use `signatures.resolve_aliases` first).
    max_rank
        Ranks above this count as ``max_rank + 1`` (UCell default 1500).
    key_prefix
        Scores go to ``adata.obs[f"{key_prefix}{name}"]``.
    layer
        Score this layer instead of ``X``.
    chunk_size
        Cells ranked at once (memory ~ chunk_size x detected genes per cell).
    w_neg
        Weight of the negative markers (UCell default 1).
    missing_genes
        ``"impute"`` (UCell default): a gene absent from the data counts as not expressed
        (rank ``max_rank + 1``), so the score keeps the scale of the full list; ``"skip"``: it is
        dropped from the list.
    matrix
        The values to rank instead of X or `layer` (which may then be None): an anndata backed
        CSR dataset of the same cells x genes (`utils.backed_csr`), `chunk_size` rows read from
        disk at a time. The same scores: each cell's are its own values' ranks.

    Writes
    ------
    ``adata.obs[f"{key_prefix}{name}"]`` (float, 0..1) for every program, and
    ``adata.uns["ucell"][name]`` = {"used": genes found, "missing": genes not found, "max_rank"}
    (comma-separated strings). Missing genes are logged.
    """
    if missing_genes not in ("impute", "skip"):
        raise ValueError("missing_genes must be 'impute' or 'skip'")
    if max_rank < 1:
        raise ValueError("max_rank must be a positive integer")
    if matrix is None:
        matrix = adata.layers[layer] if layer is not None else adata.X
    gene_index = pd.Index(adata.var_names.astype(str))
    if not gene_index.is_unique:
        raise InputDataError("gene symbols (var_names) must be unique to score gene programs")

    parsed = {name: _as_program(name, program) for name, program in programs.items()}
    # column positions of every gene any program uses ("union"), and per program its members
    union: dict[int, int] = {}
    plan = {}
    record = adata.uns.setdefault("ucell", {})
    for name, program in parsed.items():
        sets = {}
        for direction, genes in (("up", program.up), ("down", program.down)):
            positions = gene_index.get_indexer(list(genes))
            found = [g for g, p in zip(genes, positions, strict=True) if p >= 0]
            missing = [g for g, p in zip(genes, positions, strict=True) if p < 0]
            columns = [union.setdefault(int(p), len(union)) for p in positions if p >= 0]
            n_missing = len(missing) if missing_genes == "impute" else 0
            sets[direction] = (np.asarray(columns, dtype=np.int64), n_missing, found, missing)
        plan[name] = sets
        all_missing = sets["up"][3] + sets["down"][3]
        if all_missing:
            logger.warning(
                "program %s: %d of %d genes not in the data (%s): %s",
                name,
                len(all_missing),
                len(program.genes),
                missing_genes,
                ",".join(all_missing),
            )
        if not sets["up"][2]:
            logger.warning(
                "program %s: none of its positive genes is in the data; score is 0", name
            )
        record[name] = {
            "used": ",".join(sets["up"][2] + sets["down"][2]),
            "missing": ",".join(all_missing),
            "max_rank": int(max_rank),
        }

    union_columns = np.fromiter(union.keys(), dtype=np.int64, count=len(union))
    column_to_union = np.full(adata.n_vars, -1, dtype=np.int64)
    column_to_union[union_columns] = np.arange(len(union_columns))

    scores = {name: np.zeros(adata.n_obs, dtype=np.float64) for name in parsed}
    for start in range(0, adata.n_obs, chunk_size):
        stop = min(start + chunk_size, adata.n_obs)
        capped = _capped_ranks(matrix[start:stop], column_to_union, len(union), max_rank)
        for name, sets in plan.items():
            up_columns, up_missing, up_found, _ = sets["up"]
            score = _u_score(capped[:, up_columns], up_missing, max_rank) if up_found else 0.0
            down_columns, down_missing, _, down_all_missing = sets["down"]
            if down_columns.size:
                score = score - w_neg * _u_score(capped[:, down_columns], down_missing, max_rank)
            scores[name][start:stop] = np.clip(score, 0.0, 1.0)
    for name, values in scores.items():
        adata.obs[f"{key_prefix}{name}"] = values


def _capped_ranks(chunk, column_to_union: np.ndarray, n_union: int, max_rank: int) -> np.ndarray:
    """Dense (cells x program genes) ranks of one chunk, capped at max_rank + 1."""
    chunk = sparse.csr_matrix(chunk, dtype=np.float64)  # a copy: safe to drop zeros in place
    chunk.eliminate_zeros()
    chunk.sum_duplicates()
    if chunk.nnz and chunk.data.min() < 0:
        raise InputDataError(
            "UCell needs non-negative expression values (counts, TPM or log-normalised), "
            "found negative values (scaled or centred data?)"
        )
    capped = np.full((chunk.shape[0], n_union), max_rank + 1, dtype=np.float64)
    if n_union and chunk.nnz:
        _rank_rows(
            chunk.indptr.astype(np.int64),
            chunk.indices.astype(np.int64),
            chunk.data,
            column_to_union,
            max_rank,
            capped,
        )
    return capped
