"""`simulate(out=...)`: the dataset written chunk by chunk is the one built in memory."""

import anndata as ad
import h5py
import numpy as np
import pytest
from anndata.tests.helpers import assert_equal
from texflow import utils
from texflow.simulation import counts, simulate


@pytest.mark.parametrize("int32_limit", [utils.INT32_NNZ_MAX, 50_000])
def test_streamed_file_is_the_dataset_built_in_memory(tmp_path, monkeypatch, int32_limit):
    # small chunks: many singlet and doublet-parent chunks, as at 1M cells; a low int32 limit
    # makes the writer widen the indptr midway, as past 2^31 - 1 non-zeros
    monkeypatch.setattr(counts, "_CHUNK_CELLS", 64)
    monkeypatch.setattr(utils, "INT32_NNZ_MAX", int32_limit)
    arguments = {"n_cells": 900, "n_genes": 600, "seed": 4, "counts_layer": False}
    utils.write_h5ad(simulate(**arguments), tmp_path / "memory.h5ad")
    returned = simulate(**arguments, out=tmp_path / "streamed.h5ad")
    memory = ad.read_h5ad(tmp_path / "memory.h5ad")
    streamed = ad.read_h5ad(tmp_path / "streamed.h5ad")
    assert returned.X is None and returned.obs.equals(memory.obs)
    assert memory.X.nnz > 50_000  # the low limit is crossed
    for array in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(streamed.X, array), getattr(memory.X, array))
    assert streamed.X.dtype == memory.X.dtype == np.float32
    assert streamed.obs.equals(memory.obs) and streamed.var.equals(memory.var)
    assert_equal(streamed.uns, memory.uns)
    assert not streamed.layers
    with h5py.File(tmp_path / "streamed.h5ad") as file:
        widened = int32_limit < memory.X.nnz
        assert file["X/indptr"].dtype == (np.int64 if widened else np.int32)


def test_streaming_refuses_a_counts_layer(tmp_path):
    with pytest.raises(ValueError, match="counts_layer=False"):
        simulate(n_cells=50, n_genes=500, out=tmp_path / "x.h5ad")
    assert not list(tmp_path.iterdir())
