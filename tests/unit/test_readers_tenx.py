"""10x readers: loose triplets, GSM-prefixed samples (loose and in a GSE*_RAW.tar), .h5, and
Matrix Market files with their label tables (matrix_market)."""

import gzip

import numpy as np
import pytest
from texflow.errors import InputDataError
from texflow.readers import READERS

from tests import ingest_fixtures as fx


def _write(directory, files):
    paths = {}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        paths[name.split(".")[0].split("_")[-1]] = directory / name
    return paths


@pytest.mark.parametrize("old_genes", [False, True], ids=["features.tsv", "genes.tsv"])
def test_single_triplet_loose(tmp_path, old_genes):
    X = fx.counts(30, 40)
    cells, genes = fx.barcodes(30), fx.human_genes(40)
    files = fx.tenx_triplet(X, cells, genes, old_genes=old_genes)
    paths = {name: tmp_path / f"GSE1_{name}" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    sources = {name.split(".")[0]: path for name, path in paths.items()}

    adata = READERS["tenx_mtx"](sources, {}, "mini")

    assert adata.shape == (30, 40)
    assert list(adata.obs_names) == cells  # one sample: barcodes kept as they are
    assert list(adata.var_names) == genes
    assert adata.var["gene_ids"].iloc[0] == "ENSG00000000000"
    assert adata.X.dtype == np.float32 and adata.X.format == "csr"
    np.testing.assert_array_equal(adata.X.toarray(), X)
    assert set(adata.obs["sample"]) == {"GSE1"}


def _samples():
    genes = fx.human_genes(25)
    shared = fx.barcodes(12, seed=1)  # the same barcodes in both samples, as 10x runs do
    truth = {
        "GSM100001_tumour1": (fx.counts(12, 25, seed=2), shared),
        "GSM100002_tumour2": (fx.counts(12, 25, seed=3), shared),
    }
    return genes, truth


def _check_two_samples(adata, genes, truth):
    assert adata.shape == (24, 25)
    assert adata.obs_names.is_unique
    assert list(adata.obs["sample"].unique()) == ["tumour1", "tumour2"]
    assert list(adata.obs["gsm"].unique()) == ["GSM100001", "GSM100002"]
    for prefix, (X, cells) in truth.items():
        sample = prefix.split("_", 1)[1]
        rows = adata[adata.obs["sample"] == sample]
        assert list(rows.obs_names) == [f"{sample}_{c}" for c in cells]
        assert list(rows.obs["barcode"]) == cells
        np.testing.assert_array_equal(rows.X.toarray(), X)


def test_gsm_prefixed_samples_loose(tmp_path):
    genes, truth = _samples()
    sources = {}
    for prefix, (X, cells) in truth.items():
        for name, data in fx.tenx_triplet(X, cells, genes).items():
            path = tmp_path / f"{prefix}_{name}"
            path.write_bytes(data)
            sources[f"{prefix}_{name.split('.')[0]}"] = path
    _check_two_samples(READERS["tenx_mtx"](sources, {}, "mini"), genes, truth)


def test_gsm_prefixed_samples_in_raw_tar(tmp_path):
    genes, truth = _samples()
    tar = tmp_path / "GSE100000_RAW.tar"
    tar.write_bytes(fx.raw_tar({p: fx.tenx_triplet(X, c, genes) for p, (X, c) in truth.items()}))
    adata = READERS["tenx_mtx"]({"raw": tar}, {}, "mini")
    _check_two_samples(adata, genes, truth)
    assert not list(tmp_path.glob("*.mtx*")), "the tar must not be unpacked to disk"
    only = READERS["tenx_mtx"]({"raw": tar}, {"samples": ["tumour2"]}, "mini")
    assert set(only.obs["sample"]) == {"tumour2"} and only.n_obs == 12


def test_duplicate_barcodes_in_a_sample_stop(tmp_path):
    cells = fx.barcodes(10)
    cells[3] = cells[0]
    files = fx.tenx_triplet(fx.counts(10, 20), cells, fx.human_genes(20))
    sources = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        sources[name.split(".")[0]] = tmp_path / name
    with pytest.raises(
        InputDataError, match=r"dataset mini.*barcodes.*1 cell barcodes/IDs occur more than once"
    ):
        READERS["tenx_mtx"](sources, {}, "mini")


def test_incomplete_triplet_names_the_missing_file(tmp_path):
    files = fx.tenx_triplet(fx.counts(5, 8), fx.barcodes(5), fx.human_genes(8))
    del files["barcodes.tsv.gz"]
    sources = {}
    for name, data in files.items():
        (tmp_path / f"GSM1_a_{name}").write_bytes(data)
        sources[name.split(".")[0]] = tmp_path / f"GSM1_a_{name}"
    with pytest.raises(InputDataError, match="missing barcodes.tsv"):
        READERS["tenx_mtx"](sources, {}, "mini")


def test_corrupt_gzip_member_names_the_file(tmp_path):
    files = fx.tenx_triplet(fx.counts(5, 8), fx.barcodes(5), fx.human_genes(8))
    files["matrix.mtx.gz"] = files["matrix.mtx.gz"][: len(files["matrix.mtx.gz"]) // 2]
    sources = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        sources[name.split(".")[0]] = tmp_path / name
    with pytest.raises(InputDataError, match=r"matrix\.mtx\.gz.*(truncated|corrupt)"):
        READERS["tenx_mtx"](sources, {}, "mini")


def test_tenx_h5_two_samples(tmp_path):
    genes = fx.human_genes(30)
    truth = {}
    sources = {}
    for i, name in enumerate(
        ["GSM5_pre_filtered_feature_bc_matrix.h5", "GSM6_post_filtered_feature_bc_matrix.h5"]
    ):
        X, cells = fx.counts(15, 30, seed=i), fx.barcodes(15, seed=7)
        fx.tenx_h5(tmp_path / name, X, cells, genes)
        truth[name.split("_")[1]] = (X, cells)
        sources[f"s{i}"] = tmp_path / name
    adata = READERS["tenx_h5"](sources, {}, "mini")
    assert adata.shape == (30, 30)
    assert list(adata.var_names) == genes
    for sample, (X, cells) in truth.items():
        part = adata[adata.obs["sample"] == sample]
        assert list(part.obs["barcode"]) == cells
        np.testing.assert_array_equal(part.X.toarray(), X)


def test_duplicate_barcodes_are_blamed_on_the_barcodes_file(tmp_path):
    cells = fx.barcodes(10)
    cells[3] = cells[0]
    files = fx.tenx_triplet(fx.counts(10, 30), cells, fx.human_genes(30))
    sources = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        sources[name.split(".")[0]] = tmp_path / name
    expected = r"file \S*barcodes\.tsv\.gz\b.*occur more than once"
    with pytest.raises(InputDataError, match=expected) as error:
        READERS["tenx_mtx"](sources, {}, "mini")
    assert "matrix.mtx" not in str(error.value)


def test_tenx_h5_in_a_tar_member_pattern_and_cell_id(tmp_path):
    genes = fx.human_genes(20)
    members, truth = {}, {}
    stem = "raw_feature_bc_matrix_P1_{}-Tx_GEX_sc_tumor.h5"
    names = [f"GSM7_{stem.format('pre')}", f"GSM8_{stem.format('post')}"]
    for i, name in enumerate(names):
        X, cells = fx.counts(6, 20, seed=i), fx.barcodes(6, seed=3)  # barcodes repeat between runs
        members[name] = fx.tenx_h5(tmp_path / name, X, cells, genes).read_bytes()
        truth[name.split("_")[5] + "_" + name.split("_")[6]] = (X, cells)
    members["GSM9_raw_feature_bc_matrix_P1_pre-Tx_GEX_sc_PBMC.h5"] = members[next(iter(members))]
    members["GSM7_contigs.csv.gz"] = fx.gz("barcode\n")
    (tmp_path / "GSE9_RAW.tar").write_bytes(fx.tar(members))
    options = {
        "member_pattern": r"_(P\d+_(?:pre|post)-Tx)_GEX_sc_tumor\.h5$",
        "cell_id": "{barcode_core}_{sample}",
    }
    adata = READERS["tenx_h5"]({"matrix": tmp_path / "GSE9_RAW.tar"}, options, "mini")
    assert adata.shape == (12, 20) and set(adata.obs["sample"]) == set(truth)
    for sample, (X, cells) in truth.items():
        part = adata[adata.obs["sample"] == sample]
        assert list(part.obs_names) == [f"{c.removesuffix('-1')}_{sample}" for c in cells]
        np.testing.assert_array_equal(part.X.toarray(), X)
    # keep_cells: only the cells it accepts, sample by sample
    keep = {f"{truth['P1_pre-Tx'][1][0].removesuffix('-1')}_P1_pre-Tx"}
    sources = {"matrix": tmp_path / "GSE9_RAW.tar"}
    kept = READERS["tenx_h5"](sources, options, "mini", keep_cells=keep.__contains__)
    assert list(kept.obs_names) == sorted(keep)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"member_pattern": r"_(P\d+)_tumour\.h5$"}, r"matches none of the 1 h5 files"),
        ({"member_pattern": r"_P\d+_"}, "exactly one group"),
        ({"cell_id": "{sample}"}, r"must name the barcode"),
        ({"cell_id": "{barcode}_{patient}"}, r"unknown: \['patient'\]"),
    ],
)
def test_tenx_h5_options_that_cannot_work_stop(tmp_path, options, message):
    path = tmp_path / "GSM7_a_filtered_feature_bc_matrix.h5"
    fx.tenx_h5(path, fx.counts(4, 10), fx.barcodes(4), fx.human_genes(10))
    with pytest.raises(InputDataError, match=message):
        READERS["tenx_h5"]({"matrix": path}, options, "mini")


def test_tar_without_h5_names_the_other_reader(tmp_path):
    (tmp_path / "GSE9_RAW.tar").write_bytes(fx.tar({"GSM1_matrix.mtx.gz": fx.gz("x")}))
    with pytest.raises(InputDataError, match=r"GSE9_RAW\.tar.*no \.h5 file.*tenx_mtx"):
        READERS["tenx_h5"]({"matrix": tmp_path / "GSE9_RAW.tar"}, {}, "mini")


def _write_sources(tmp_path, files, names):
    paths = {}
    for role, data in files.items():
        if role in names:
            paths[role] = tmp_path / names[role]
            paths[role].write_bytes(data)
    return paths


GSE243013_NAMES = {
    "matrix": "GSE243013_NSCLC_immune_scRNA_counts.mtx.gz",
    "barcodes": "GSE243013_barcodes.csv.gz",
    "features": "GSE243013_genes.csv.gz",
}


@pytest.mark.parametrize("chunk", [7, 50_000_000], ids=["many-chunks", "one-chunk"])
def test_matrix_market_cells_x_genes_with_csv_labels_streams_only_kept_cells(
    tmp_path, monkeypatch, chunk
):
    from texflow.readers import matrix

    monkeypatch.setattr(matrix, "MTX_CHUNK_ENTRIES", chunk)
    files, metadata, X = fx.gse243013_layout()
    sources = _write_sources(tmp_path, files, GSE243013_NAMES)
    options = {"barcodes_column": "barcode", "features_column": "geneSymbol"}
    adata = READERS["matrix_market"](sources, options, "mini")  # orientation auto: cells x genes
    assert list(adata.obs_names) == list(metadata["cellID"]) and adata.var_names[0] == "CD8A"
    np.testing.assert_array_equal(adata.X.toarray(), X)
    wanted = set(metadata["cellID"][1::3])
    kept = READERS["matrix_market"](sources, options, "mini", keep_cells=wanted.__contains__)
    assert list(kept.obs_names) == list(metadata["cellID"][1::3])
    np.testing.assert_array_equal(kept.X.toarray(), X[1::3])


def test_matrix_market_reads_a_10x_triplet_the_10x_way(tmp_path):
    X, cells, genes = fx.counts(12, 30), fx.barcodes(12), fx.human_genes(30)
    triplet = fx.tenx_triplet(X, cells, genes)
    names = {"matrix": "m.mtx.gz", "barcodes": "b.tsv.gz", "features": "f.tsv.gz"}
    files = dict(zip(names, triplet.values(), strict=True))
    adata = READERS["matrix_market"](_write_sources(tmp_path, files, names), {}, "mini")
    assert list(adata.obs_names) == cells and list(adata.var_names) == genes
    np.testing.assert_array_equal(adata.X.toarray(), X)


def test_matrix_market_bad_input_stops_naming_the_file_and_the_fix(tmp_path):
    files, _, _ = fx.gse243013_layout()
    sources = _write_sources(tmp_path, files, GSE243013_NAMES)
    with pytest.raises(InputDataError, match=r"barcodes_column 'cellID' is not a column"):
        READERS["matrix_market"](sources, {"barcodes_column": "cellID"}, "mini")
    # without the header options the header lines are read as a barcode and a gene
    with pytest.raises(InputDataError, match=r"mtx\.gz.*40 x 150 but there are 41 barcodes"):
        READERS["matrix_market"](sources, {}, "mini")
    options = {"barcodes_column": "barcode", "features_column": "geneSymbol"}
    with pytest.raises(InputDataError, match=r"orientation: genes_x_cells"):
        READERS["matrix_market"](sources, {**options, "orientation": "genes_x_cells"}, "mini")
    text = gzip.decompress(files["matrix"]).decode()
    sources["matrix"].write_bytes(fx.gz(text[: text.rindex("\n", 0, len(text) - 1) + 1]))
    with pytest.raises(InputDataError, match=r"announces \d+ entries but the file holds"):
        READERS["matrix_market"](sources, options, "mini")
    with pytest.raises(InputDataError, match="needs sources named matrix, barcodes, features"):
        READERS["matrix_market"]({"matrix": sources["matrix"]}, options, "mini")
