"""Per-state mean expression of program genes: the programs stage's table behind the heatmap."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from texflow import contract, expression
from texflow.signatures import GeneProgram

from tests.report_fixtures import fake_adata


def _groupby_means(adata, genes):
    """The means as pandas computes them from the whole dense matrix (the reference)."""
    dense = pd.DataFrame(adata[:, genes].X.toarray(), columns=genes, index=adata.obs_names)
    return dense.groupby(adata.obs["state"].astype(str)).mean().T


def test_state_gene_means_read_in_chunks_equal_the_means_of_the_whole_matrix():
    adata = fake_adata(n_cells=300)
    genes = ["G1", "G2", "G3"]
    means, counts = expression.state_gene_means(adata, genes=genes, chunk=7)  # chunks cut states
    expected = _groupby_means(adata, genes)
    assert list(means.columns) == ["Tpex", "Tex_term", "effector"]  # the categories' order
    assert means[expected.columns].to_numpy() == pytest.approx(expected.to_numpy())
    assert counts.to_dict() == adata.obs["state"].astype(str).value_counts().to_dict()


def test_per_cell_calls_define_the_states_and_cells_without_one_count_in_none():
    adata = fake_adata(n_cells=200)
    call = adata.obs["state"].astype(str).where(np.arange(adata.n_obs) % 5 != 0, "nan")
    adata.obs[contract.CELL_STATE_KEY] = pd.Categorical(call)
    means, counts = expression.state_gene_means(adata, genes=["G4"])
    called = adata[adata.obs[contract.CELL_STATE_KEY] != "nan"]
    assert counts.sum() == called.n_obs < adata.n_obs
    expected = _groupby_means(called, ["G4"])
    assert means.loc["G4", expected.columns].to_numpy() == pytest.approx(expected.loc["G4"])


def test_program_gene_means_table_holds_every_present_gene_per_state(tmp_path):
    adata = fake_adata(n_cells=300)
    programs = {
        "one": GeneProgram(name="one", up=("G1", "G2", "ABSENT"), down=("G5",)),
        "two": GeneProgram(name="two", up=("G2", "G3")),
    }
    table = expression.program_gene_means(adata, programs=programs, chunk=11)
    assert tuple(table.columns) == contract.PROGRAM_GENE_MEANS_COLUMNS
    keys = list(
        table[[contract.PROGRAM, contract.DIRECTION, contract.GENE]]
        .drop_duplicates()
        .itertuples(index=False, name=None)
    )
    assert keys == [
        ("one", "up", "G1"),
        ("one", "up", "G2"),
        ("one", "down", "G5"),
        ("two", "up", "G2"),
        ("two", "up", "G3"),
    ]
    expected = _groupby_means(adata, ["G1", "G2", "G3", "G5"])
    counts = adata.obs["state"].astype(str).value_counts()
    for row in table.itertuples(index=False):
        assert row.mean_expression == pytest.approx(expected.at[row.gene, row.state])
        assert row.n_cells == counts[row.state]
    assert list(pd.unique(table[contract.STATE])) == ["Tpex", "Tex_term", "effector"]
    # a backed AnnData (the programs stage reads X from disk) gives the same numbers
    adata.write_h5ad(tmp_path / "final.h5ad")
    backed = ad.read_h5ad(tmp_path / "final.h5ad", backed="r")
    try:
        again = expression.program_gene_means(backed, programs=programs)
    finally:
        backed.file.close()
    pd.testing.assert_frame_equal(again, table)
    # X read from the file's CSR dataset (`matrix`), the annotations in memory without X
    from scipy import sparse
    from texflow.utils import backed_csr

    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    adata.write_h5ad(tmp_path / "clustered.h5ad")
    annotations = ad.AnnData(obs=adata.obs, var=adata.var)
    with backed_csr(tmp_path / "clustered.h5ad") as matrix:
        assert matrix is not None
        from_disk = expression.program_gene_means(annotations, programs=programs, matrix=matrix)
    pd.testing.assert_frame_equal(
        from_disk, expression.program_gene_means(adata, programs=programs)
    )
    pd.testing.assert_frame_equal(from_disk, table, check_exact=False)


def test_program_gene_means_is_empty_without_states_or_genes():
    adata = fake_adata(n_cells=50)
    program = {"one": GeneProgram(name="one", up=("G1",))}
    no_gene = expression.program_gene_means(
        adata, programs={"x": GeneProgram(name="x", up=("ABSENT",))}
    )
    adata.obs["state"] = pd.Categorical(["nan"] * adata.n_obs)
    no_state = expression.program_gene_means(adata, programs=program)
    for table in (no_gene, no_state):
        assert table.empty and tuple(table.columns) == contract.PROGRAM_GENE_MEANS_COLUMNS
