"""Counts held once until the cluster stage: in memory, on disk, through subsets and normalising."""

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from texflow import embedding, utils


def _counts_adata(n_cells=40, n_genes=30, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(rng.poisson(1.0, (n_cells, n_genes)).astype(np.float32))
    adata = ad.AnnData(
        X,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    adata.uns["texflow"] = {"value_type": "counts"}
    return utils.share_counts(adata)


def test_shared_counts_are_written_once_and_read_back_shared(tmp_path):
    adata = _counts_adata()
    expected = adata.X.toarray()
    path = tmp_path / "raw.h5ad"
    utils.write_h5ad(adata, path)
    assert utils.counts_are_x(adata)  # the caller's object is left as it was
    on_disk = ad.read_h5ad(path)
    assert "counts" not in on_disk.layers
    assert on_disk.uns["texflow"]["counts_layer"] == "X"
    back = utils.read_h5ad(path)
    assert utils.counts_are_x(back)
    np.testing.assert_array_equal(back.layers["counts"].toarray(), expected)


def test_a_separate_counts_layer_is_written_as_it_is(tmp_path):
    adata = _counts_adata()
    adata.layers["counts"] = adata.X.copy()
    utils.write_h5ad(adata, tmp_path / "x.h5ad")
    on_disk = ad.read_h5ad(tmp_path / "x.h5ad")
    assert "counts" in on_disk.layers and "counts_layer" not in on_disk.uns["texflow"]


def test_subset_keeps_counts_shared_and_leaves_the_parent_intact():
    adata = _counts_adata()
    mask = np.arange(adata.n_obs) % 3 == 0
    subset = utils.subset_cells(adata, mask)
    assert utils.counts_are_x(subset) and utils.counts_are_x(adata)
    assert subset.n_obs == mask.sum()
    np.testing.assert_array_equal(subset.X.toarray(), adata.X[mask].toarray())


def test_normalising_does_not_touch_the_shared_counts():
    adata = _counts_adata()
    expected = adata.X.toarray()
    embedding.normalise(adata, value_type="counts")
    assert not utils.counts_are_x(adata)
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), expected)
    assert not np.allclose(adata.X.toarray(), expected)


def _matrix_file(tmp_path):
    """A clustered.h5ad-like file: X log-normalised, the counts a separate layer, a graph."""
    adata = _counts_adata()
    raw = adata.layers["counts"].copy()
    embedding.normalise(adata, value_type="counts")  # X log-normalised, counts a separate layer
    adata.obs["cluster"] = pd.Categorical(np.arange(adata.n_obs) % 2)
    adata.obsm["X_pca"] = np.ones((adata.n_obs, 3), dtype=np.float32)
    adata.obsp["distances"] = sp.random(adata.n_obs, adata.n_obs, density=0.1, format="csr")
    adata.uns["texflow"]["dataset"] = "sim"
    path = tmp_path / "clustered.h5ad"
    utils.write_h5ad(adata, path)
    return path, adata, raw


def test_a_stage_writes_only_what_it_adds(tmp_path):
    matrix, adata, _ = _matrix_file(tmp_path)
    stage = utils.read_annotated(matrix, layers=False)
    assert not stage.layers and stage.X.nnz == adata.X.nnz
    stage.obs["state"] = "Tpex"
    stage.obs["cluster"] = pd.Categorical(np.arange(stage.n_obs) % 3)  # changed
    stage.obsm["X_new"] = np.ones((stage.n_obs, 2))
    stage.uns["texflow"]["states"] = {"n": 1}
    first = tmp_path / "annotations/states.h5ad"
    utils.write_annotations(stage, first, matrix=matrix)
    added = ad.read_h5ad(first)
    assert added.X is None and not added.layers
    assert list(added.obs) == ["cluster", "state"] and list(added.obsm) == ["X_new"]
    assert not added.obsp and added.uns["texflow"]["states"]["n"] == 1
    # the next stage reads the matrix file and the first stage's annotations
    later = utils.read_annotated(matrix, [first], layers=False, x=False)
    assert later.X is None and (later.obs["state"] == "Tpex").all()
    assert (later.obs["cluster"].astype(int) == np.arange(later.n_obs) % 3).all()
    assert set(later.obsm) == {"X_pca", "X_new"} and set(later.obsp) == {"distances"}
    later.obs["pseudotime"] = np.linspace(0, 1, later.n_obs)
    second = tmp_path / "annotations/trajectory.h5ad"
    utils.write_annotations(later, second, matrix=matrix, annotations=[first])
    assert list(ad.read_h5ad(second).obs) == ["pseudotime"]


def test_an_annotation_file_of_other_cells_is_refused(tmp_path):
    from texflow.errors import InputDataError

    matrix, adata, _ = _matrix_file(tmp_path)
    other = tmp_path / "other.h5ad"
    ad.AnnData(obs=adata.obs.iloc[:10], var=adata.var).write_h5ad(other)
    with pytest.raises(InputDataError, match="not those of"):
        utils.read_annotated(matrix, [other])
    stage = utils.read_annotated(matrix, layers=False)
    del stage.obs["cluster"]
    with pytest.raises(ValueError, match="removed"):
        utils.write_annotations(stage, tmp_path / "a.h5ad", matrix=matrix)
    assert not (tmp_path / "a.h5ad").exists()


def test_final_file_is_plain_anndata_with_the_ingested_counts(tmp_path):
    matrix, adata, raw = _matrix_file(tmp_path)
    stage = utils.read_annotated(matrix, layers=False)
    stage.obs["state"] = "Tpex"
    added = tmp_path / "annotations/states.h5ad"
    utils.write_annotations(stage, added, matrix=matrix)
    final = tmp_path / "final.h5ad"
    utils.assemble_h5ad(matrix=matrix, annotations=[added], path=final, chunk_elements=64)
    back = ad.read_h5ad(final)  # anndata alone, no texflow reader
    counts = back.layers["counts"]
    assert counts.format == "csr" and (counts != raw).nnz == 0
    np.testing.assert_array_equal(counts.data, np.round(counts.data))
    assert (back.X != adata.X).nnz == 0 and back.X.dtype == adata.X.dtype
    assert (back.obs["state"] == "Tpex").all() and "cluster" in back.obs
    assert (
        set(back.obsm) == {"X_pca"} and (back.obsp["distances"] != adata.obsp["distances"]).nnz == 0
    )
    assert "counts_layer" not in back.uns["texflow"]
    with h5py.File(final) as file:  # compressed (utils.FINAL_COMPRESSION)
        assert {file[f"{m}/data"].compression for m in ("X", "layers/counts")} == {"gzip"}
        assert file["X/indices"].shuffle and file["X/indices"].chunks == (64,)
    assert not list(tmp_path.glob(".*.part"))


def _chunks(path):
    """Every stored chunk of every dataset of the h5ad at `path`: (filter mask, bytes) by name."""
    found = {}

    def visit(name, node):
        if isinstance(node, h5py.Dataset) and node.chunks:
            for i in range(node.id.get_num_chunks()):
                info = node.id.get_chunk_info(i)
                found[(name, info.chunk_offset)] = node.id.read_direct_chunk(info.chunk_offset)

    with h5py.File(path) as file:
        file.visititems(visit)
    return found


def test_final_file_is_the_same_on_one_thread_or_more(tmp_path):
    adata = _counts_adata(n_cells=300, n_genes=50)
    embedding.normalise(adata, value_type="counts")
    utils.write_h5ad(adata, tmp_path / "clustered.h5ad")
    written = {}
    for threads in (1, 2, 3):
        written[threads] = tmp_path / f"final_{threads}.h5ad"
        utils.assemble_h5ad(
            matrix=tmp_path / "clustered.h5ad",
            annotations=[],
            path=written[threads],
            threads=threads,
            chunk_elements=128,  # many blocks of chunks, and an edge chunk
        )
    chunks = _chunks(written[1])
    assert sum(name == "layers/counts/data" for name, _ in chunks) > 2 * 8 * 3  # > 2 blocks
    for threads in (2, 3):
        assert _chunks(written[threads]) == chunks
    back = ad.read_h5ad(written[2])
    assert (back.X != adata.X).nnz == 0 and (
        back.layers["counts"] != adata.layers["counts"]
    ).nnz == 0


def test_final_file_chunks_are_those_hdf5_filters_write(tmp_path):
    """The chunks compressed by texflow are the bytes HDF5's own shuffle and gzip filters store."""
    adata = _counts_adata(n_cells=200, n_genes=50)
    utils.write_h5ad(adata, tmp_path / "cd8.h5ad")
    final = tmp_path / "final.h5ad"
    utils.assemble_h5ad(
        matrix=tmp_path / "cd8.h5ad", annotations=[], path=final, threads=2, chunk_elements=100
    )
    reference = tmp_path / "reference.h5"
    with h5py.File(final) as file, h5py.File(reference, "w") as out:
        for name in ("X/data", "X/indices", "X/indptr"):
            out.create_dataset(
                name,
                data=file[name][:],
                chunks=(100,),
                maxshape=(None,),
                **utils.FINAL_COMPRESSION,
            )
    ours = {key: value for key, value in _chunks(final).items() if key[0].startswith("X/")}
    assert ours == _chunks(reference) and len(ours) > 3


def test_final_file_writes_out_counts_held_in_x(tmp_path):
    adata = _counts_adata()  # counts shared with X (the counts_layer shorthand on disk)
    utils.write_h5ad(adata, tmp_path / "cd8.h5ad")
    utils.assemble_h5ad(matrix=tmp_path / "cd8.h5ad", annotations=[], path=tmp_path / "f.h5ad")
    back = ad.read_h5ad(tmp_path / "f.h5ad")
    assert (back.layers["counts"] != adata.X).nnz == 0 and (back.X != adata.X).nnz == 0
    assert "counts_layer" not in back.uns["texflow"]
    with h5py.File(tmp_path / "f.h5ad") as file:  # one chunk, larger than the arrays
        assert file["layers/counts/data"].chunks == (utils.MATRIX_CHUNK,)


@pytest.mark.parametrize("shared", [True, False])
def test_streamed_subset_is_the_subset_written_whole(tmp_path, shared, monkeypatch):
    adata = _counts_adata()
    if not shared:
        del adata.layers["counts"]
    adata.obsm["X_test"] = np.arange(adata.n_obs * 2, dtype=float).reshape(-1, 2)
    utils.write_h5ad(adata, tmp_path / "full.h5ad")
    adata = utils.read_h5ad(tmp_path / "full.h5ad")  # as a stage holds it (anndata adds layer None)
    mask = np.random.default_rng(0).random(adata.n_obs) < 0.6

    def no_copy(*args, **kwargs):
        raise AssertionError("the subset was copied in memory, not streamed")

    with monkeypatch.context() as patch:
        patch.setattr(utils, "subset_cells", no_copy)
        utils.write_subset_h5ad(adata, mask, tmp_path / "streamed.h5ad", chunk_rows=7)
    utils.write_h5ad(utils.subset_cells(adata, mask), tmp_path / "whole.h5ad")
    streamed = utils.read_h5ad(tmp_path / "streamed.h5ad")
    whole = utils.read_h5ad(tmp_path / "whole.h5ad")
    assert streamed.obs.equals(whole.obs) and streamed.var.equals(whole.var)
    assert (streamed.X != whole.X).nnz == 0 and streamed.X.dtype == whole.X.dtype
    np.testing.assert_array_equal(streamed.obsm["X_test"], whole.obsm["X_test"])
    assert utils.counts_are_x(streamed) == shared
    assert streamed.uns["texflow"] == whole.uns["texflow"]
    assert not list(tmp_path.glob(".*.part"))


def test_annotations_then_rows_read_as_the_whole_file(tmp_path):
    adata = _counts_adata(n_cells=50)
    adata.obs["group"] = np.arange(50) % 3
    path = tmp_path / "stage.h5ad"
    utils.write_h5ad(adata, path)
    annotations = utils.read_h5ad(path, layers=False, x=False)
    assert annotations.X is None and annotations.shape == adata.shape
    assert annotations.obs["group"].equals(adata.obs["group"])
    rows = annotations.obs["group"].to_numpy() == 1
    np.testing.assert_array_equal(utils.read_rows(path, rows).toarray(), adata.X[rows].toarray())
    np.testing.assert_array_equal(
        utils.read_rows(path, np.flatnonzero(rows)).toarray(), adata.X[rows].toarray()
    )
    # shared counts: the counts layer alone is X's matrix
    counts_only = utils.read_h5ad(path, x=False, layers=["counts"])
    assert counts_only.X is None
    np.testing.assert_array_equal(counts_only.layers["counts"].toarray(), adata.X.toarray())


def test_a_named_layer_is_read_without_x(tmp_path):
    adata = _counts_adata()
    embedding.normalise(adata, value_type="counts")  # X log-normalised, counts a layer of its own
    path = tmp_path / "stage.h5ad"
    utils.write_h5ad(adata, path)
    back = utils.read_h5ad(path, x=False, layers=["counts", "absent"])
    assert back.X is None and [k for k in back.layers if k is not None] == ["counts"]
    np.testing.assert_array_equal(back.layers["counts"].toarray(), adata.layers["counts"].toarray())
    # anndata 0.13 lists X itself as layer None
    assert [k for k in utils.read_h5ad(path, layers=["absent"]).layers if k is not None] == []


def test_numba_runs_on_the_rules_threads():
    import numba
    from texflow.utils import limit_numba_threads

    before = numba.get_num_threads()
    try:
        limit_numba_threads(1)
        assert numba.get_num_threads() == 1
        limit_numba_threads(10_000)  # more than the machine has: every core, no error
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
        limit_numba_threads(None)  # no threads given (a script run outside Snakemake): unchanged
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        numba.set_num_threads(before)


# --- permissions: atomic_path honours the umask (issue 17, item 5) -------------------------------


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    import os

    old = os.umask(0o022)
    try:
        yield lambda value: os.umask(value)
    finally:
        os.umask(old)


def _mode(path):
    import stat

    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_allows(tmp_path, umask, mask, expected):
    from matplotlib.figure import Figure

    umask(mask)
    table, h5ad, figure = tmp_path / "t.tsv", tmp_path / "raw.h5ad", tmp_path / "fig.png"
    utils.write_tsv(pd.DataFrame({"a": [1, 2]}), table)
    utils.write_tsv(pd.DataFrame({"a": [1, 2]}), tmp_path / "cells.tsv.gz")
    utils.write_h5ad(_counts_adata(), h5ad)
    utils.assemble_h5ad(matrix=h5ad, annotations=[], path=tmp_path / "u.h5ad")
    with utils.atomic_path(figure) as tmp:
        Figure().savefig(tmp, format="png")
    for path in (table, tmp_path / "cells.tsv.gz", h5ad, tmp_path / "u.h5ad", figure):
        assert _mode(path) == expected, f"{path.name}: {oct(_mode(path))}"
    assert utils.current_umask() == mask  # read right, and left as it was


def test_a_failed_write_leaves_no_file(tmp_path, umask):
    umask(0o022)
    with pytest.raises(RuntimeError), utils.atomic_path(tmp_path / "t.tsv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_tsv_gz_bytes_are_the_same_from_run_to_run(tmp_path):
    """The gzip header stores a file name: it must not be the temporary file's random name."""
    import gzip

    table = pd.DataFrame({"cell_id": ["a", "b", "c"], "score": [0.1, 0.25, np.nan]})
    first, second = tmp_path / "one" / "cells.tsv.gz", tmp_path / "two" / "cells.tsv.gz"
    utils.write_tsv(table, first)
    utils.write_tsv(table, second)
    data = first.read_bytes()
    assert data == second.read_bytes()
    flags, mtime = data[3], int.from_bytes(data[4:8], "little")
    assert not flags & 0x08 and mtime == 0, "gzip header carries a file name or a time"
    assert gzip.decompress(data).decode() == "cell_id\tscore\na\t0.1\nb\t0.25\nc\tNA\n"


@pytest.mark.parametrize("limit", [utils.INT32_NNZ_MAX, 100])
def test_csr_rows_past_the_int32_limit_get_an_int64_indptr(tmp_path, monkeypatch, limit):
    # a limit of 100 non-zeros stands for 2^31 - 1: the third block crosses it
    monkeypatch.setattr(utils, "INT32_NNZ_MAX", limit)
    X = _counts_adata(n_cells=40).X
    blocks = [X[start : start + 10] for start in range(0, 40, 10)]
    for block in blocks:  # as the simulator's and the backed reads' blocks are
        block.indptr = block.indptr.astype(np.int32)
    with h5py.File(tmp_path / "m.h5", "w") as file:
        nnz = utils.write_csr_rows(file, "X", iter(blocks), n_cols=X.shape[1])
        back = ad.io.read_elem(file["X"])
        indptr_dtype = file["X/indptr"].dtype
    assert nnz == X.nnz and X.nnz > 2 * 100
    assert indptr_dtype == (np.int32 if limit > X.nnz else np.int64)
    np.testing.assert_array_equal(back.indptr, X.indptr)
    np.testing.assert_array_equal(back.indices, X.indices)
    np.testing.assert_array_equal(back.data, X.data)


def test_a_streamed_subset_past_the_int32_limit_is_the_subset(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "INT32_NNZ_MAX", 100)
    adata = _counts_adata(n_cells=60)
    utils.write_h5ad(adata, tmp_path / "full.h5ad")
    mask = np.arange(60) % 4 != 1
    with utils.backed_csr(tmp_path / "full.h5ad") as matrix:
        meta = utils.read_h5ad(tmp_path / "full.h5ad", layers=False, x=False)
        utils.write_subset_h5ad(meta, mask, tmp_path / "sub.h5ad", chunk_rows=9, matrix=matrix)
    with h5py.File(tmp_path / "sub.h5ad") as file:
        assert file["X/indptr"].dtype == np.int64
    assert (utils.read_h5ad(tmp_path / "sub.h5ad").X != adata.X[mask]).nnz == 0
