"""Mean expression of genes per cell state, read from the matrix in chunks of cells.

The programs stage holds the cells and their states; it writes the per-state means of every
program gene (`program_gene_means`, tables/program_gene_means.tsv), and the report draws its
heatmap of program genes across states from that table without reading the matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .contract import (
    DIRECTION,
    GENE,
    MEAN_EXPRESSION,
    N_CELLS,
    PROGRAM,
    PROGRAM_GENE_MEANS_COLUMNS,
    STATE,
    lineage_state_key,
    missing_labels,
)

logger = logging.getLogger(__name__)

#: Cells read from X at a time (2000 cells x 20k genes of float32 CSR at 10% density: ~30 MB).
CHUNK_CELLS = 2000


def known_values(series: pd.Series) -> pd.Series:
    """True where a metadata value is present (`contract.missing_labels` says what is not)."""
    return ~missing_labels(series)


def state_gene_means(
    adata: ad.AnnData, *, genes: Sequence[str], chunk: int = CHUNK_CELLS, matrix=None
) -> tuple[pd.DataFrame, pd.Series]:
    """Mean expression of `genes` per cell state, over X as stored (log-normalised).

    Parameters
    ----------
    adata
        Cells with their states in ``obs`` (the column `contract.lineage_state_key` names: the
        per-cell call where there is one); X the log-normalised matrix, in memory or backed.
        X is read `chunk` cells at a time, so a backed AnnData is never loaded whole.
    genes
        Genes of ``var_names`` (each must be present).
    chunk
        Cells read at a time.
    matrix
        X to read instead of ``adata.X`` (which may then be None): an anndata backed CSR
        dataset (`texflow.utils.backed_csr`) of the same cells and genes. A backed AnnData
        would load every layer of its file (the counts: at 60k cells, 1.2 GB at the programs
        stage's peak; measured).

    Returns
    -------
    The means (genes x states, the states in the order of the column's categories, or sorted
    when it is not categorical; states without a cell left out) and the number of cells per
    state. Cells without a state count in none.
    """
    obs = adata.obs
    state_key = lineage_state_key(obs)
    states = obs[state_key].astype(str).where(known_values(obs[state_key]))
    categorical = isinstance(obs[state_key].dtype, pd.CategoricalDtype)
    order = list(obs[state_key].cat.categories) if categorical else sorted(states.dropna().unique())
    order = [s for s in order if (states == s).any()]
    columns = [adata.var_names.get_loc(g) for g in genes]
    index = np.array([order.index(s) if s in order else -1 for s in states.fillna("")])
    sums = np.zeros((len(order), len(genes)))
    source = adata.X if matrix is None else matrix
    for start in range(0, adata.n_obs, chunk):
        block = source[start : start + chunk]
        block = block[:, columns]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        rows = index[start : start + chunk]
        for i in range(len(order)):
            sums[i] += block[rows == i].sum(axis=0)
    counts = pd.Series([(index == i).sum() for i in range(len(order))], index=order)
    means = pd.DataFrame((sums / counts.to_numpy()[:, None]).T, index=list(genes), columns=order)
    return means, counts


def program_gene_means(
    adata: ad.AnnData, *, programs: Mapping[str, object], chunk: int = CHUNK_CELLS, matrix=None
) -> pd.DataFrame:
    """Mean expression of each program gene per cell state (`state_gene_means`), as a table.

    Parameters
    ----------
    adata
        As for `state_gene_means`: the states in ``obs``, X log-normalised (in memory or
        backed).
    programs
        Program name -> `texflow.signatures.GeneProgram` (its ``up`` and ``down`` genes), under
        the symbols of the data (`signatures.resolve_aliases`). Genes absent from
        ``var_names`` are left out.
    chunk
        Cells of X read at a time.
    matrix
        X to read instead of ``adata.X`` (`state_gene_means`).

    Returns
    -------
    One row per program, gene (up genes first, in the program's order) and state (in the
    order of `state_gene_means`): columns `contract.PROGRAM_GENE_MEANS_COLUMNS`. Empty (with
    those columns) when the data have no state annotation or no program gene.
    """
    empty = pd.DataFrame({column: [] for column in PROGRAM_GENE_MEANS_COLUMNS})
    key = lineage_state_key(adata.obs)
    if key not in adata.obs or not known_values(adata.obs[key]).any():
        logger.info("no '%s' annotation: no per-state means of program genes", key)
        return empty
    present = set(map(str, adata.var_names))
    listed = [
        (name, direction, gene)
        for name, program in programs.items()
        for direction in ("up", "down")
        for gene in dict.fromkeys(getattr(program, direction))
        if gene in present
    ]
    if not listed:
        logger.info("no program gene is in the data: no per-state means of program genes")
        return empty
    genes = list(dict.fromkeys(gene for _, _, gene in listed))
    means, counts = state_gene_means(adata, genes=genes, chunk=chunk, matrix=matrix)
    rows = [
        {
            PROGRAM: name,
            DIRECTION: direction,
            GENE: gene,
            STATE: state,
            MEAN_EXPRESSION: means.at[gene, state],
            N_CELLS: int(counts[state]),
        }
        for name, direction, gene in listed
        for state in means.columns
    ]
    return pd.DataFrame(rows, columns=list(PROGRAM_GENE_MEANS_COLUMNS))
