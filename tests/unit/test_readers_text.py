"""Dense text readers: orientation detection, separators, gzip, chunking, the GSE120575 layout."""

import logging

import numpy as np
import pytest
from texflow.errors import InputDataError
from texflow.readers import READERS, text

from tests import ingest_fixtures as fx


def _read(tmp_path, name, content, options=None, reader="dense_table"):
    path = tmp_path / name
    path.write_bytes(fx.gz(content) if name.endswith(".gz") else content.encode())
    return READERS[reader]({"matrix": path}, options or {}, "mini")


@pytest.mark.parametrize(
    ("name", "genes_in_rows", "sep", "corner", "cells", "expected_reason"),
    [
        # GSE123813/GSE156728 style: genes x 10x barcodes, gzip, tab, R header (no corner)
        ("counts.txt.gz", True, "\t", False, "barcodes", "columns are cell barcodes"),
        # cells x genes csv with barcodes as rows
        ("counts.csv", False, ",", True, "barcodes", "rows are cell barcodes"),
        # Smart-seq style cell IDs (no barcode): the well-known genes decide
        ("tpm.tsv", True, "\t", True, "wells", "rows hold well-known genes"),
        ("tpm_t.tsv.gz", False, "\t", True, "wells", "columns hold well-known genes"),
    ],
)
def test_dense_table_orientation_is_detected_and_logged(
    tmp_path, caplog, name, genes_in_rows, sep, corner, cells, expected_reason
):
    X = fx.counts(25, 60, seed=4)
    cell_ids = (
        fx.barcodes(25) if cells == "barcodes" else [f"A{i}_P{i % 4}_M{i}" for i in range(25)]
    )
    genes = fx.human_genes(60)
    content = fx.dense_table(
        X, cell_ids, genes, genes_in_rows=genes_in_rows, sep=sep, corner=corner
    )
    with caplog.at_level(logging.INFO, logger="texflow"):
        adata = _read(tmp_path, name, content)
    assert list(adata.obs_names) == cell_ids
    assert list(adata.var_names) == genes
    np.testing.assert_array_equal(adata.X.toarray(), X)
    assert adata.X.dtype == np.float32
    assert expected_reason in caplog.text
    assert "detected genes in the " + ("rows" if genes_in_rows else "columns") in caplog.text


def test_orientation_override_and_ambiguous_table(tmp_path):
    X = fx.counts(6, 5)
    # neither axis looks like genes or barcodes: auto must refuse, the option decides
    content = fx.dense_table(
        X, [f"c{i}" for i in range(6)], [f"g{i}" for i in range(5)], genes_in_rows=True
    )
    with pytest.raises(InputDataError, match=r"dataset mini.*reader_options.orientation"):
        _read(tmp_path, "t.tsv", content)
    adata = _read(tmp_path, "t.tsv", content, {"orientation": "genes_x_cells"})
    assert adata.shape == (6, 5)
    np.testing.assert_array_equal(adata.X.toarray(), X)
    flipped = _read(tmp_path, "t.tsv", content, {"orientation": "cells_x_genes"})
    assert flipped.shape == (5, 6)


def test_chunked_reading_gives_the_same_matrix(tmp_path, monkeypatch):
    X = fx.counts(40, 120, seed=9)
    content = fx.dense_table(X, fx.barcodes(40), fx.human_genes(120), trailing_sep=True)
    monkeypatch.setattr(text, "CHUNK_VALUES", 100)  # 2-3 gene rows per chunk
    adata = _read(tmp_path, "c.txt.gz", content)
    np.testing.assert_array_equal(adata.X.toarray(), X)


def test_ragged_and_non_numeric_tables_stop(tmp_path):
    X = fx.counts(5, 20)
    good = fx.dense_table(X, fx.barcodes(5), fx.human_genes(20))
    lines = good.splitlines(keepends=True)
    short = "".join(lines[:3] + [lines[3].rsplit("\t", 2)[0] + "\n"] + lines[4:])
    with pytest.raises(InputDataError, match="shorter than the header"):
        _read(tmp_path, "short.tsv", short, {"orientation": "genes_x_cells"})
    text_value = good.replace("\t1\t", "\tone\t", 1)
    with pytest.raises(InputDataError, match=r"file .*text\.tsv.*cannot be read"):
        _read(tmp_path, "text.tsv", text_value, {"orientation": "genes_x_cells"})


def test_corrupt_and_mislabelled_gzip_stop(tmp_path):
    data = fx.gz(fx.dense_table(fx.counts(5, 20), fx.barcodes(5), fx.human_genes(20)))
    (tmp_path / "cut.txt.gz").write_bytes(data[: len(data) - 20])
    with pytest.raises(
        InputDataError, match=r"dataset mini, file .*cut\.txt\.gz.*(truncated|corrupt)"
    ):
        READERS["dense_table"]({"matrix": tmp_path / "cut.txt.gz"}, {}, "mini")
    (tmp_path / "page.txt.gz").write_bytes(b"<html>Service unavailable</html>")
    with pytest.raises(InputDataError, match="not gzip-compressed"):
        READERS["dense_table"]({"matrix": tmp_path / "page.txt.gz"}, {}, "mini")


def test_geo_dense_two_header_layout(tmp_path):
    cells = fx.geo_cell_subset(2)
    genes = fx.human_genes(80)
    X = fx.counts(len(cells), 80, seed=3) / 3.7  # log-scale-like, non-integer values
    samples = [s + ("_T_enriched" if s.startswith("Post") else "") for s in cells["sample"]]
    data = fx.geo_two_header(X, list(cells["title"]), samples, genes)
    path = tmp_path / "GSE120575_Sade_Feldman_melanoma_single_cells_TPM_GEO.txt.gz"
    path.write_bytes(data)
    adata = READERS["geo_dense_two_header"]({"matrix": path}, {}, "GSE120575")
    assert list(adata.obs_names) == list(cells["title"])
    assert list(adata.obs["geo_sample"]) == samples
    assert list(adata.var_names) == genes
    np.testing.assert_allclose(adata.X.toarray(), X, atol=1e-4)


def test_geo_dense_two_header_with_misaligned_header_stops(tmp_path):
    cells = fx.geo_cell_subset(1)
    X = fx.counts(len(cells), 10)
    data = fx.geo_two_header(
        X, list(cells["title"])[:-2], list(cells["sample"]), fx.human_genes(10)
    )
    path = tmp_path / "m.txt.gz"
    path.write_bytes(data)
    with pytest.raises(
        InputDataError, match="header line 1 has .* fields but the first data line has"
    ):
        READERS["geo_dense_two_header"]({"matrix": path}, {}, "GSE120575")
