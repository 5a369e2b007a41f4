"""Counts held once until the cluster stage: in memory, on disk, through subsets and normalising."""

import anndata as ad
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


def test_update_keeps_the_layers_a_stage_did_not_read(tmp_path):
    adata = _counts_adata()
    embedding.normalise(adata, value_type="counts")  # X log-normalised, counts a separate layer
    source, out = tmp_path / "clustered.h5ad", tmp_path / "states.h5ad"
    utils.write_h5ad(adata, source)
    light = utils.read_h5ad(source, layers=False)
    assert not light.layers and light.X.nnz == adata.X.nnz
    light.obs["state"] = "Tpex"
    light.obsm["X_new"] = np.ones((light.n_obs, 2))
    light.uns["texflow"]["states"] = {"n": 1}
    utils.update_h5ad(light, source=source, path=out)
    back = utils.read_h5ad(out)
    np.testing.assert_array_equal(back.layers["counts"].toarray(), adata.layers["counts"].toarray())
    np.testing.assert_array_equal(back.X.toarray(), adata.X.toarray())
    assert (back.obs["state"] == "Tpex").all() and back.obsm["X_new"].shape == (adata.n_obs, 2)
    assert back.uns["texflow"]["states"]["n"] == 1


def test_update_refuses_other_cells(tmp_path):
    import pytest

    adata = _counts_adata()
    utils.write_h5ad(adata, tmp_path / "a.h5ad")
    with pytest.raises(ValueError, match="cells or genes differ"):
        utils.update_h5ad(adata[:10].copy(), source=tmp_path / "a.h5ad", path=tmp_path / "b.h5ad")
    assert not (tmp_path / "b.h5ad").exists()


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
    utils.update_h5ad(utils.read_h5ad(h5ad, layers=False), source=h5ad, path=tmp_path / "u.h5ad")
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
