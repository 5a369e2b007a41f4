"""ingest_dataset: raw.h5ad written with the matrix read chunk by chunk of rows is the file
`read_dataset` + `write_h5ad` writes from memory."""

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.tests.helpers import assert_equal
from texflow import io, utils
from texflow.errors import InputDataError
from texflow.readers import _common

from tests import ingest_fixtures as fx

N_CELLS, N_GENES = 60, 80


def _h5ad_dataset(tmp_path, *, X=None, layer=False, value_type="counts"):
    """An h5ad source with duplicated symbols, a metadata table that annotates 45 of the
    60 cells (``on_unmatched: drop``), as a public dataset with a cell table would be."""
    genes = fx.human_genes(N_GENES)
    genes[10], genes[20], genes[30] = genes[5], genes[5], genes[6]  # symbols shared
    X = sp.csr_matrix(fx.counts(N_CELLS, N_GENES, seed=2)) if X is None else X
    cells = [f"cell{i}" for i in range(N_CELLS)]
    adata = ad.AnnData(
        X=X, obs=pd.DataFrame({"n": np.arange(N_CELLS)}, index=cells),
        var=pd.DataFrame(index=genes),
    )  # fmt: skip
    if layer:  # the counts in a layer, something else in X
        adata.layers["counts"] = adata.X.copy()
        adata.X = adata.X * 0.5
    directory = tmp_path / "dl"
    directory.mkdir()
    adata.write_h5ad(directory / "x.h5ad")
    annotated = [c for i, c in enumerate(cells) if i % 4 != 1]
    table = pd.DataFrame({"cell": annotated, "donor": [f"d{i % 3}" for i in range(45)]})
    manifest = fx.write_sources(
        directory,
        {
            "matrix": ("x.h5ad", (directory / "x.h5ad").read_bytes()),
            "cells": ("cells.tsv", table.to_csv(sep="\t", index=False).encode()),
        },
    )
    config = {
        "id": "h", "organism": "human", "value_type": value_type, "reader": "h5ad",
        "reader_options": {"layer": "counts"} if layer else {},
        "sources": [{"name": "matrix", "url": "x.h5ad"}, {"name": "cells", "url": "cells.tsv"}],
        "metadata": {"source": "cells", "on_unmatched": "drop", "columns": {"patient": "donor"}},
    }  # fmt: skip
    return manifest, config


@pytest.mark.parametrize("layer", [False, True])
def test_streamed_raw_h5ad_is_the_one_written_from_memory(tmp_path, monkeypatch, layer):
    monkeypatch.setattr(_common, "MATRIX_CHUNK_ROWS", 7)  # many chunks of rows
    manifest, config = _h5ad_dataset(tmp_path, layer=layer)
    utils.write_h5ad(io.read_dataset(manifest=manifest, config=config), tmp_path / "memory.h5ad")
    io.ingest_dataset(manifest=manifest, config=config, path=tmp_path / "streamed.h5ad")
    memory = ad.read_h5ad(tmp_path / "memory.h5ad")
    streamed = ad.read_h5ad(tmp_path / "streamed.h5ad")
    assert (
        streamed.n_obs == 45
        and list(streamed.var_names[[10, 20, 30]]) != [streamed.var_names[5]] * 3
    )  # the join dropped cells and the symbols were made unique: both paths exercised
    with h5py.File(tmp_path / "memory.h5ad") as a, h5py.File(tmp_path / "streamed.h5ad") as b:
        for array in ("data", "indices", "indptr"):
            assert a["X"][array].dtype == b["X"][array].dtype
            np.testing.assert_array_equal(a["X"][array][...], b["X"][array][...])
    assert streamed.obs.equals(memory.obs) and streamed.var.equals(memory.var)
    assert_equal(streamed.uns, memory.uns)  # counts_layer "X" included
    assert not streamed.layers and not memory.layers
    versions = streamed.uns["texflow"]
    assert versions["counts_layer"] == utils.COUNTS_IN_X


def test_a_dense_x_is_read_whole_and_gives_the_same_file(tmp_path):
    manifest, config = _h5ad_dataset(tmp_path, X=fx.counts(N_CELLS, N_GENES, seed=2))
    utils.write_h5ad(io.read_dataset(manifest=manifest, config=config), tmp_path / "memory.h5ad")
    io.ingest_dataset(manifest=manifest, config=config, path=tmp_path / "streamed.h5ad")
    memory, streamed = (ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("memory", "streamed"))
    assert (memory.X != streamed.X).nnz == 0 and streamed.obs.equals(memory.obs)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.nan, "1 values are NaN or infinite"),
        (-2.0, r"1 values are negative \(min -2\)"),
        (0.5, r"value_type is counts but 1 of \d+ non-zero values are not integers \(e.g. 0.5\)"),
    ],
)
def test_a_bad_value_in_a_late_chunk_stops_with_file_and_dataset(
    tmp_path, monkeypatch, values, message
):
    monkeypatch.setattr(_common, "MATRIX_CHUNK_ROWS", 7)
    X = fx.counts(N_CELLS, N_GENES, seed=2)
    X[N_CELLS - 1, N_GENES - 1] = values  # in the last chunk of rows
    manifest, config = _h5ad_dataset(tmp_path, X=sp.csr_matrix(X))
    with pytest.raises(InputDataError, match=rf"dataset h, file .*x\.h5ad\] {message}"):
        io.ingest_dataset(manifest=manifest, config=config, path=tmp_path / "raw.h5ad")
    assert not list(tmp_path.glob("*.h5ad")) and not list(tmp_path.glob(".*.part"))
