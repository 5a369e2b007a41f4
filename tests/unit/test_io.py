"""read_dataset: manifest + dataset config -> the AnnData contract; bad input stops clearly."""

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from texflow import io
from texflow.errors import InputDataError, TexflowError

from tests import ingest_fixtures as fx

GSE120575 = {
    "id": "GSE120575",
    "organism": "human",
    "value_type": "log_tpm",
    "sources": [
        {"name": "matrix", "url": "http://127.0.0.1/m.txt.gz"},
        {"name": "cells", "url": "http://127.0.0.1/c.txt.gz"},
    ],
    "reader": "geo_dense_two_header",
    "metadata": {
        "source": "cells",
        "format": "geo_template",
        "join_on": "title",
        "columns": {
            "sample": fx.PATIENT_COLUMN,
            "patient": fx.PATIENT_COLUMN,
            "response": fx.RESPONSE_COLUMN,
            "timepoint": fx.PATIENT_COLUMN,
        },
        "patterns": {"patient": r"^(?:Pre|Post)_(P\d+)", "timepoint": r"^(Pre|Post)_"},
        "values": {
            "response": {"Responder": "responder", "Non-responder": "non_responder"},
            "timepoint": {"Pre": "pre_treatment", "Post": "on_treatment"},
        },
        "constants": {"tissue": "tumour"},
    },
}


def _geo_dataset(tmp_path, cells=None, genes=None, X=None, config_changes=None):
    cells = fx.geo_cell_subset(4) if cells is None else cells
    genes = genes or fx.human_genes(200)
    X = fx.counts(len(cells), len(genes), seed=5) / 4 if X is None else X
    manifest = fx.write_sources(
        tmp_path / "downloads",
        {
            "matrix": (
                "m.txt.gz",
                fx.geo_two_header(X, list(cells["title"]), list(cells["sample"]), genes),
            ),
            "cells": ("c.txt.gz", fx.GEO_METADATA.read_bytes()),
        },
    )
    config = copy.deepcopy(GSE120575)
    for key, value in (config_changes or {}).items():
        config[key] = value
    return manifest, config, cells, X


def test_gse120575_layout_to_contract(tmp_path):
    manifest, config, cells, X = _geo_dataset(tmp_path)
    adata = io.read_dataset(manifest=manifest, config=config)

    assert adata.shape == (60, 200)
    assert list(adata.obs.columns[:5]) == list(io.CONTRACT_FIELDS)
    np.testing.assert_allclose(adata.X.toarray(), X, atol=1e-4)
    truth = cells.set_index("title")
    assert (adata.obs["sample"].astype(str) == truth.loc[adata.obs_names, "sample"].values).all()
    # patient from "Pre_P1" / "Post_P5_2": the patient, whichever biopsy
    assert adata.obs.loc[truth.index[truth["sample"] == "Post_P5_2"], "patient"].eq("P5").all()
    assert set(adata.obs["patient"]) == {
        "P1", "P2", "P3", "P28", "P24", "P4", "P6", "P5", "P35", "P12", "P17", "P15", "P23"
    }  # fmt: skip
    expected_response = truth.loc[adata.obs_names, "response"].map(
        {"Responder": "responder", "Non-responder": "non_responder"}
    )
    assert (adata.obs["response"].astype(str).values == expected_response.values).all()
    assert set(adata.obs["timepoint"]) == {"pre_treatment", "on_treatment"}
    assert set(adata.obs["tissue"]) == {"tumour"}
    assert "layers" not in adata.uns and "counts" not in adata.layers  # log_tpm: no counts layer

    meta = adata.uns["texflow"]
    assert (
        meta["dataset"] == "GSE120575"
        and meta["organism"] == "human"
        and meta["value_type"] == "log_tpm"
    )
    manifest_table = pd.read_csv(manifest, sep="\t")
    assert meta["sources"]["matrix"]["sha256"] == manifest_table.loc[0, "sha256"]
    assert meta["sources"]["cells"]["bytes"] == fx.GEO_METADATA.stat().st_size
    assert set(meta["versions"]) >= {"python", "scanpy", "anndata", "numpy", "texflow"}
    adata.write_h5ad(tmp_path / "raw.h5ad")  # everything is h5ad-serialisable
    back = ad.read_h5ad(tmp_path / "raw.h5ad")
    assert back.uns["texflow"]["sources"]["matrix"]["url"] == "http://127.0.0.1/m.txt.gz"


def test_unmapped_response_value_is_an_error_naming_it(tmp_path):
    manifest, config, *_ = _geo_dataset(tmp_path)
    config["metadata"]["values"]["response"] = {"Responder": "responder"}
    with pytest.raises(
        InputDataError, match=r"dataset GSE120575.*'Non-responder'.*not in metadata.values.response"
    ):
        io.read_dataset(manifest=manifest, config=config)


def test_response_without_values_map_must_already_be_harmonised(tmp_path):
    manifest, config, *_ = _geo_dataset(tmp_path)
    del config["metadata"]["values"]["response"]
    with pytest.raises(
        InputDataError, match="response values .*'Responder'.* are not responder / non_responder"
    ):
        io.read_dataset(manifest=manifest, config=config)


def test_pattern_that_does_not_match_is_an_error(tmp_path):
    manifest, config, *_ = _geo_dataset(tmp_path)
    config["metadata"]["patterns"]["patient"] = r"^Pre_(P\d+)"
    with pytest.raises(InputDataError, match=r"does not match .*'Post_P1'"):
        io.read_dataset(manifest=manifest, config=config)


def test_partial_join_stops_or_drops_as_configured(tmp_path):
    cells = fx.geo_cell_subset(4).copy()
    cells.loc[:4, "title"] = [f"NOT_A_CELL_{i}" for i in range(5)]
    manifest, config, *_ = _geo_dataset(tmp_path, cells=cells)
    with pytest.raises(InputDataError, match=r"file .*c\.txt\.gz.*only 55 of 60 cells \(91\.7%\)"):
        io.read_dataset(manifest=manifest, config=config)
    config["metadata"]["on_unmatched"] = "drop"
    adata = io.read_dataset(manifest=manifest, config=config)
    assert adata.n_obs == 55 and not adata.obs_names.str.startswith("NOT_A_CELL").any()


def test_join_matching_no_cell_stops(tmp_path):
    cells = fx.geo_cell_subset(1).copy()
    cells["title"] = [f"X{i}" for i in range(len(cells))]
    manifest, config, *_ = _geo_dataset(tmp_path, cells=cells)
    with pytest.raises(InputDataError, match=r"none of the 15 cells .* 'title'"):
        io.read_dataset(manifest=manifest, config=config)


def test_duplicate_cell_ids_stop(tmp_path):
    cells = fx.geo_cell_subset(2).copy()
    cells.loc[1, "title"] = cells.loc[0, "title"]
    manifest, config, *_ = _geo_dataset(tmp_path, cells=cells)
    with pytest.raises(
        InputDataError, match=r"dataset GSE120575, file .*m\.txt\.gz.*occur more than once"
    ):
        io.read_dataset(manifest=manifest, config=config)


def test_empty_matrix_stops(tmp_path):
    cells = fx.geo_cell_subset(1)
    manifest, config, *_ = _geo_dataset(
        tmp_path, cells=cells, X=np.zeros((15, 200), dtype=np.float32)
    )
    with pytest.raises(InputDataError, match=r"dataset GSE120575, file .*m\.txt\.gz.*only zeros"):
        io.read_dataset(manifest=manifest, config=config)
    header_only = fx.write_sources(
        tmp_path / "d2",
        {"matrix": ("m.txt.gz", fx.gz("\tA\tB\n\tPre_P1\tPre_P1\n")), "cells": ("c.txt.gz", b"")},
    )
    with pytest.raises(InputDataError, match="no data lines"):
        io.read_dataset(manifest=header_only, config=config)


def test_wrong_organism_stops_with_evidence(tmp_path):
    manifest, config, *_ = _geo_dataset(tmp_path, genes=fx.mouse_genes(200))
    with pytest.raises(
        InputDataError,
        match=r"dataset GSE120575, file .*m\.txt\.gz.*organism: human.*look mouse"
        r".*capitalised as in mouse",
    ):
        io.read_dataset(manifest=manifest, config=config)


def test_corrupt_gzip_stops(tmp_path):
    manifest, config, *_ = _geo_dataset(tmp_path)
    path = manifest.parent / "m.txt.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # damaged in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(
        InputDataError,
        match=r"dataset GSE120575, file .*m\.txt\.gz.*(corrupt|truncated|cannot be read)",
    ):
        io.read_dataset(manifest=manifest, config=config)


def test_counts_must_be_non_negative_integers(tmp_path):
    manifest, config, *_ = _geo_dataset(tmp_path, config_changes={"value_type": "counts"})
    with pytest.raises(InputDataError, match="value_type is counts but .* are not integers"):
        io.read_dataset(manifest=manifest, config=config)


def test_counts_get_a_counts_layer_and_unlogged_log_values_stop(tmp_path):
    cells = fx.geo_cell_subset(1)
    X = fx.counts(len(cells), 200) * 40
    manifest, config, *_ = _geo_dataset(
        tmp_path, cells=cells, X=X, config_changes={"value_type": "counts"}
    )
    adata = io.read_dataset(manifest=manifest, config=config)
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), X)
    config["value_type"] = "log_tpm"
    with pytest.raises(InputDataError, match="too large for log-scale"):
        io.read_dataset(manifest=manifest, config=config)


def _tpm(n_cells, n_genes=200, seed=5):
    X = fx.counts(n_cells, n_genes, seed=seed).astype(np.float64)
    return X / X.sum(axis=1, keepdims=True) * 1e6


def test_log_values_declared_tpm_stop_and_name_the_fix(tmp_path):
    cells = fx.geo_cell_subset(2)
    tpm = _tpm(len(cells))
    manifest, config, *_ = _geo_dataset(
        tmp_path, cells=cells, X=tpm, config_changes={"value_type": "tpm"}
    )
    assert io.read_dataset(manifest=manifest, config=config).X.max() > 1000  # real TPM passes
    for name, logged in [
        ("log2", np.log2(tpm + 1)),
        ("ln", np.log1p(tpm)),
        ("log2 of 1e-4", np.log2(tpm / 100 + 1)),
    ]:
        manifest, config, *_ = _geo_dataset(
            tmp_path / name, cells=cells, X=logged, config_changes={"value_type": "tpm"}
        )
        with pytest.raises(
            InputDataError,
            match=r"dataset GSE120575, file .*m\.txt\.gz.*value_type is tpm "
            r"but the largest value is "
            r".*already log-transformed.*set value_type: log_tpm",
        ):
            io.read_dataset(manifest=manifest, config=config)


def test_rounded_tpm_declared_counts_stops_and_names_the_fix(tmp_path):
    cells = fx.geo_cell_subset(2)
    rounded = np.round(_tpm(len(cells)))
    manifest, config, *_ = _geo_dataset(
        tmp_path, cells=cells, X=rounded, config_changes={"value_type": "counts"}
    )
    with pytest.raises(
        InputDataError,
        match=r"dataset GSE120575, file .*m\.txt\.gz.*value_type is counts "
        r"but 100% of the 30 cells "
        r"have a total within 1% of the median total 1,000,0.*set value_type: tpm",
    ):
        io.read_dataset(manifest=manifest, config=config)


def test_counts_with_equal_small_totals_only_warn(tmp_path, caplog):
    # downsampled to equal depth: genuine counts, so not refused (but said)
    cells = fx.geo_cell_subset(2)
    X = np.zeros((len(cells), 200), dtype=np.float32)
    X[:, :50] = 40  # every cell 2,000 counts
    manifest, config, *_ = _geo_dataset(
        tmp_path, cells=cells, X=X, config_changes={"value_type": "counts"}
    )
    with caplog.at_level("WARNING", logger="texflow"):
        io.read_dataset(manifest=manifest, config=config)
    assert "unless they were downsampled to equal depth" in caplog.text


def test_duplicate_symbols_most_expressed_keeps_the_name():
    X = np.array([[1, 5, 0, 2], [0, 7, 1, 2]], dtype=np.float32)
    adata = ad.AnnData(X=X, var=pd.DataFrame(index=["TOX", "TOX", "TOX", "CD8A"]))
    assert io.make_gene_symbols_unique(adata) == 2
    # totals 1, 12, 1: the second copy keeps TOX, then the others in file order
    assert list(adata.var_names) == ["TOX-1", "TOX", "TOX-2", "CD8A"]
    assert list(adata.var["gene_symbol"]) == ["TOX", "TOX", "TOX", "CD8A"]


def test_metadata_from_the_matrix_obs_and_constant_conflict(tmp_path):
    X = fx.counts(8, 100)
    obs = pd.DataFrame(
        {"donor": ["a", "a", "b", "b"] * 2, "site": ["Tumor", "Blood"] * 4, "cluster": ["1"] * 8},
        index=[f"c{i}" for i in range(8)],
    )
    path = tmp_path / "dl" / "x.h5ad"
    path.parent.mkdir()
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=fx.human_genes(100))).write_h5ad(path)
    manifest = fx.write_sources(tmp_path / "dl", {"matrix": ("x.h5ad", path.read_bytes())})
    config = {
        "id": "h", "organism": "human", "value_type": "counts", "reader": "h5ad",
        "sources": [{"name": "matrix", "url": "x.h5ad"}],
        "metadata": {
            "columns": {"patient": "donor", "tissue": "site"},
            "values": {"tissue": {"Tumor": "tumour", "Blood": "blood"}},
            "constants": {"timepoint": "baseline"},
        },
    }  # fmt: skip
    adata = io.read_dataset(manifest=manifest, config=config)
    assert list(adata.obs["patient"]) == list(obs["donor"])
    assert list(adata.obs["tissue"]) == ["tumour", "blood"] * 4
    assert adata.obs["response"].isna().all() and adata.obs["sample"].isna().all()
    assert "cluster_orig" in adata.obs  # a raw column named like a later-stage column is renamed
    config["metadata"]["constants"]["patient"] = "p"
    with pytest.raises(TexflowError, match="both as metadata.columns and metadata.constants"):
        io.read_dataset(manifest=manifest, config=config)


def test_memory_estimate_grows_with_input_and_reader(tmp_path):
    manifest = fx.write_sources(tmp_path, {"m": ("m.txt.gz", b"x" * 2**20 * 3)})
    assert io.estimate_ingest_mem_mb(manifest, "dense_table") == 1000 + 75
    assert io.estimate_ingest_mem_mb(manifest, "tenx_h5") == 1000 + 24
    with pytest.raises(FileNotFoundError):  # Snakemake re-evaluates once fetch has run
        io.estimate_ingest_mem_mb(tmp_path / "missing.tsv", "h5ad")
    assert io.estimate_ingest_runtime_min(manifest, "dense_table") == 10
    big = fx.write_sources(tmp_path / "big", {"m": ("m.txt.gz", b"x" * 2**20 * 60)})
    assert io.estimate_ingest_runtime_min(big, "geo_dense_two_header") == 10 + 12
    assert io.estimate_ingest_mem_mb(big, "h5ad") == 1000 + 15  # streamed: a quarter MB per MB


# --- gene identifiers instead of symbols (issue 17, item 4) --------------------------------------


@pytest.mark.parametrize(
    "ids, kind",
    [
        ([f"ENSG{i:011d}" for i in range(200)], "Ensembl"),
        ([f"ENSG{i:011d}.{i % 3 + 1}" for i in range(200)], "Ensembl"),
        ([f"GeneID:{1000 + i}" for i in range(200)], "NCBI Gene"),
    ],
)
def test_gene_ids_in_a_table_stop_and_name_the_fix(tmp_path, ids, kind):
    manifest, config, *_ = _geo_dataset(tmp_path, genes=ids)
    with pytest.raises(
        InputDataError,
        match=rf"dataset GSE120575, file .*m\.txt\.gz\] the gene names are {kind} IDs, not gene "
        r"symbols: 100% of 200 .*Fix: the table's gene labels must be gene symbols",
    ):
        io.read_dataset(manifest=manifest, config=config)


def _ids_h5ad(tmp_path, var):
    path = tmp_path / "dl" / "x.h5ad"
    path.parent.mkdir(exist_ok=True)
    ad.AnnData(
        X=fx.counts(20, len(var)), obs=pd.DataFrame(index=[f"c{i}" for i in range(20)]), var=var
    ).write_h5ad(path)
    manifest = fx.write_sources(tmp_path / "dl", {"matrix": ("x.h5ad", path.read_bytes())})
    config = {
        "id": "h", "organism": "human", "value_type": "counts", "reader": "h5ad",
        "sources": [{"name": "matrix", "url": "x.h5ad"}], "metadata": {},
    }  # fmt: skip
    return manifest, config


def test_gene_ids_in_an_h5ad_with_one_symbol_column_are_mapped_and_the_log_says_so(
    tmp_path, caplog
):
    genes = fx.human_genes(100)
    ids = [f"ENSG{i:011d}" for i in range(100)]
    var = pd.DataFrame({"feature_types": "Gene Expression", "symbol": genes}, index=ids)
    manifest, config = _ids_h5ad(tmp_path, var)
    with caplog.at_level("WARNING", logger="texflow.io"):
        adata = io.read_dataset(manifest=manifest, config=config)
    assert list(adata.var_names) == genes and list(adata.var["gene_ids"]) == ids
    assert "taken from var column 'symbol'" in caplog.text and "dataset h" in caplog.text
    assert adata.uns["texflow"]["params"]["ingest"]["gene_symbols_from_var_column"] == "symbol"
    config["reader_options"] = {"symbol_column": "symbol"}  # the explicit form gives the same
    assert list(io.read_dataset(manifest=manifest, config=config).var_names) == genes


def test_gene_ids_in_an_h5ad_with_two_symbol_columns_stop_and_name_both(tmp_path):
    genes = fx.human_genes(100)
    ids = [f"ENSG{i:011d}" for i in range(100)]
    var = pd.DataFrame({"symbol": genes, "gene_name": [g.lower() for g in genes]}, index=ids)
    manifest, config = _ids_h5ad(tmp_path, var)
    with pytest.raises(
        InputDataError,
        match=r"dataset h, file .*x\.h5ad\] the gene names are Ensembl IDs.*"
        r"symbol, gene_name; texflow does not choose",
    ):
        io.read_dataset(manifest=manifest, config=config)
    config["reader_options"] = {"symbol_column": "symbol"}  # the fix named works
    adata = io.read_dataset(manifest=manifest, config=config)
    assert list(adata.var_names) == genes and list(adata.var["gene_ids"]) == ids


def test_gene_ids_in_a_10x_features_file_name_its_symbol_column(tmp_path):
    ids = [f"ENSG{i:011d}" for i in range(60)]
    files = fx.tenx_triplet(fx.counts(12, 60), fx.barcodes(12), ids)  # IDs in both columns
    manifest = fx.write_sources(
        tmp_path / "dl", {name.split(".")[0]: (name, data) for name, data in files.items()}
    )
    config = {
        "id": "m", "organism": "human", "value_type": "counts", "reader": "tenx_mtx",
        "sources": [{"name": n, "url": n} for n in ("matrix", "barcodes", "features")],
        "metadata": {},
    }  # fmt: skip
    with pytest.raises(
        InputDataError, match=r"dataset m, file .*\] the gene names are Ensembl IDs.*features file"
    ):
        io.read_dataset(manifest=manifest, config=config)


def test_a_few_ids_among_symbols_pass():
    names = fx.human_genes(190) + [f"ENSG{i:011d}" for i in range(10)]
    adata = ad.AnnData(X=fx.counts(5, 200), var=pd.DataFrame(index=names))
    io.check_gene_identifiers(adata, reader="h5ad", dataset="d", path="x.h5ad")


def _raw_tar_dataset(tmp_path, metadata):
    genes, cells = fx.human_genes(120), fx.barcodes(15, seed=3)  # barcodes repeat between runs
    runs = {
        "GSM5001_tumour1": fx.tenx_triplet(fx.counts(15, 120, seed=1), cells, genes),
        "GSM5002_tumour2": fx.tenx_triplet(fx.counts(15, 120, seed=2), cells, genes),
    }
    manifest = fx.write_sources(tmp_path / "dl", {"raw": ("GSE5000_RAW.tar", fx.raw_tar(runs))})
    config = {
        "id": "GSE5000", "organism": "human", "value_type": "counts", "reader": "tenx_mtx",
        "sources": [{"name": "raw", "url": "GSE5000_RAW.tar"}], "metadata": metadata,
    }  # fmt: skip
    return manifest, config


def test_raw_tar_samples_default_to_their_gsm_accession_and_the_log_says_so(tmp_path, caplog):
    # without it every cell's sample was NA and Scrublet/QC pooled the two 10x runs
    manifest, config = _raw_tar_dataset(tmp_path, {})
    with caplog.at_level("INFO", logger="texflow"):
        adata = io.read_dataset(manifest=manifest, config=config)
    assert adata.obs["sample"].tolist() == ["GSM5001"] * 15 + ["GSM5002"] * 15
    assert adata.obs["patient"].isna().all()
    assert "GSM accession" in caplog.text and "metadata.columns.sample" in caplog.text
    # a mapping given by hand wins
    manifest, config = _raw_tar_dataset(tmp_path / "mapped", {"columns": {"sample": "sample"}})
    adata = io.read_dataset(manifest=manifest, config=config)
    assert adata.obs["sample"].tolist() == ["tumour1"] * 15 + ["tumour2"] * 15
    manifest, config = _raw_tar_dataset(tmp_path / "const", {"constants": {"sample": "s1"}})
    assert io.read_dataset(manifest=manifest, config=config).obs["sample"].eq("s1").all()


def _luoma_dataset(tmp_path, **layout):
    import yaml

    raw, metadata, truth = fx.luoma_2022_layout(tmp_path, **layout)
    manifest = fx.write_sources(
        tmp_path / "downloads",
        {
            "matrix": ("GSE200996_RAW.tar", raw),
            "cells": ("GSE200996_CD45.tumor.single.cell.meta.data.txt.gz", metadata),
        },
    )
    config = yaml.safe_load((fx.ROOT / "config/datasets/GSE200996.yaml").read_text())
    return manifest, config, truth


@pytest.mark.parametrize("quoted", [True, False], ids=["R-quoted", "plain"])
def test_gse200996_raw_h5_tar_reads_only_the_metadata_cells(tmp_path, caplog, quoted):
    """The shipped GSE200996 file on its layout: tumour .h5 members of the tar, raw droplets
    skipped while reading, IDs matched across pre-Tx / Pre-Tx, Path_response mapped."""
    manifest, config, truth = _luoma_dataset(tmp_path, quoted=quoted)
    with caplog.at_level("INFO", logger="texflow"):
        adata = io.read_dataset(manifest=manifest, config=config)
    assert adata.n_obs == len(truth) == 48
    # cells keep the matrix's IDs, built like the metadata's (which write Pre-Tx for pre-Tx)
    by_id = truth.set_index(truth["cell_id"].str.casefold())
    assert sorted(adata.obs_names.str.casefold()) == sorted(by_id.index)
    assert adata.obs_names.str.endswith(("_pre-Tx", "_post-Tx")).all()
    rows = by_id.loc[adata.obs_names.str.casefold()]
    assert list(adata.obs["barcode"]) == list(rows["barcode"])
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), np.vstack(rows["X"]))
    assert list(adata.obs["patient"]) == list(rows["Patient_ID"])
    assert list(adata.obs["sample"]) == [i.split("_", 1)[1] for i in adata.obs_names]
    expected = rows["Path_response"].map(
        {"High": "responder", "Low": "non_responder", "Medium": "NA"}
    )
    assert adata.obs["response"].astype(object).fillna("NA").tolist() == expected.tolist()
    assert set(expected) == {"responder", "non_responder", "NA"}  # Medium (P18) stays NA
    timepoint = rows["Stage"].map({"Pre-Tx": "pre_treatment", "Post-Tx": "on_treatment"})
    assert adata.obs["timepoint"].tolist() == timepoint.tolist()
    assert set(adata.obs["tissue"]) == {"tumour"}
    assert set(adata.obs["gsm"]) == {"GSM6048142", "GSM6048150", "GSM6048143", "GSM6048144"}
    assert set(adata.obs["Cohort"]) == {"Mono", "Combo"}  # raw columns kept
    # the blood library and the TCR file are not read; empty droplets never reach the join
    assert "reading 4 of 5 h5 files" in caplog.text
    assert caplog.text.count("12 of 37 barcodes are cells of the metadata") == 4
    assert "have no metadata" not in caplog.text


def test_gse200996_ids_that_differ_beyond_case_stop_naming_both_forms(tmp_path):
    manifest, config, _ = _luoma_dataset(tmp_path)
    config["reader_options"]["cell_id"] = "{sample}_{barcode}"  # not how the metadata name cells
    with pytest.raises(
        InputDataError, match=r"none of the barcodes .*metadata\.join_on, metadata\.ignore_case"
    ):
        io.read_dataset(manifest=manifest, config=config)
    config["reader_options"]["cell_id"] = "{barcode_core}_{sample}"
    config["metadata"]["ignore_case"] = False  # file names say pre-Tx, the metadata Pre-Tx
    with pytest.raises(InputDataError, match=r"none of the barcodes"):
        io.read_dataset(manifest=manifest, config=config)


def test_gse169246_single_triplet_samples_from_the_barcode_suffix(tmp_path):
    """The shipped GSE169246 file on its layout: one counts.mtx / barcode.tsv / feature.tsv
    triplet for all libraries, each barcode ending in .<timepoint>_<patient>_<compartment>."""
    import yaml

    titles = ["Pre_P002_t", "Post_P002_t", "Pre_P002_b", "Prog_P019_t"]
    cells = [f"{b}.{titles[i % 4]}" for i, b in enumerate(fx.barcodes(24, seed=2))]
    X = fx.counts(24, 80, seed=9)
    triplet = fx.tenx_triplet(X, cells, fx.human_genes(80))
    manifest = fx.write_sources(
        tmp_path / "downloads",
        {
            "matrix": ("GSE169246_TNBC_RNA.counts.mtx.gz", triplet["matrix.mtx.gz"]),
            "barcodes": ("GSE169246_TNBC_RNA.barcode.tsv.gz", triplet["barcodes.tsv.gz"]),
            "features": ("GSE169246_TNBC_RNA.feature.tsv.gz", triplet["features.tsv.gz"]),
        },
    )
    config = yaml.safe_load((fx.ROOT / "config/datasets/GSE169246.yaml").read_text())
    adata = io.read_dataset(manifest=manifest, config=config)
    assert list(adata.obs_names) == cells
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), X)
    assert list(adata.obs["sample"]) == [titles[i % 4] for i in range(24)]
    assert list(adata.obs["patient"]) == [t.split("_")[1] for t in adata.obs["sample"]]
    obs = adata.obs
    assert set(zip(obs["sample"], obs["timepoint"], obs["tissue"], strict=True)) == {
        ("Pre_P002_t", "pre_treatment", "tumour"),
        ("Post_P002_t", "on_treatment", "tumour"),
        ("Pre_P002_b", "pre_treatment", "blood"),
        ("Prog_P019_t", "progression", "tumour"),
    }
    assert adata.obs["response"].isna().all()  # not in GEO: never guessed


def test_ignore_case_refuses_matrix_ids_that_differ_only_in_case():
    adata = ad.AnnData(X=np.ones((3, 2), dtype=np.float32))
    adata.obs_names = ["AAC_P1_pre", "AAC_P1_Pre", "GGT_P1_pre"]
    table = pd.DataFrame({"cell": ["AAC_P1_Pre", "GGT_P1_Pre"], "Patient_ID": ["P1", "P1"]})
    with pytest.raises(InputDataError, match=r"2 matrix cell IDs differ only in letter case"):
        io.join_metadata(adata, table, join_on="cell", on_unmatched="error", row_filter=None,
                         dataset="d", path="m.tsv", ignore_case=True)  # fmt: skip
    table = pd.DataFrame({"cell": ["AAC_P1_Pre", "aac_p1_pre"], "Patient_ID": ["P1", "P1"]})
    with pytest.raises(InputDataError, match=r"occur more than once in metadata column 'cell'"):
        io.join_metadata(adata[[2]], table, join_on="cell", on_unmatched="error", row_filter=None,
                         dataset="d", path="m.tsv", ignore_case=True)  # fmt: skip
    one_row = table.iloc[[0]].assign(cell="aac_P1_PRE")
    joined = io.join_metadata(adata[[0, 2]], one_row, join_on="cell", on_unmatched="drop",
                              row_filter=None, dataset="d", path="m.tsv",
                              ignore_case=True)  # fmt: skip
    assert list(joined.obs_names) == ["AAC_P1_pre"] and list(joined.obs["Patient_ID"]) == ["P1"]


def test_gse243013_cells_x_genes_matrix_market_with_per_cell_response(tmp_path, caplog):
    """The shipped GSE243013 file on its layout: a cells x genes .mtx with csv label tables,
    only the T/NK cells of the metadata read, pathological_response mapped."""
    import yaml

    files, metadata, X = fx.gse243013_layout()
    names = {
        "matrix": "GSE243013_NSCLC_immune_scRNA_counts.mtx.gz",
        "barcodes": "GSE243013_barcodes.csv.gz",
        "features": "GSE243013_genes.csv.gz",
        "cells": "GSE243013_NSCLC_immune_scRNA_metadata.csv.gz",
    }
    manifest = fx.write_sources(
        tmp_path, {role: (names[role], data) for role, data in files.items()}
    )
    config = yaml.safe_load((fx.ROOT / "config/datasets/GSE243013.yaml").read_text())
    with caplog.at_level("INFO", logger="texflow"):
        adata = io.read_dataset(manifest=manifest, config=config)
    tnk = metadata[metadata["major_cell_type"] == "T/NK cell"]
    assert list(adata.obs_names) == list(tnk["cellID"])
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), X[tnk.index])
    assert list(adata.obs["patient"]) == list(tnk["sampleID"]) == list(adata.obs["sample"])
    expected = tnk["pathological_response"].map(
        {"MPR": "responder", "pCR": "responder", "non-MPR": "non_responder", "unknowm": "NA"}
    )
    assert adata.obs["response"].astype(object).fillna("NA").tolist() == expected.tolist()
    assert set(expected) == {"responder", "non_responder", "NA"}
    assert "26 of 40 cells are cells of the metadata (kept)" in caplog.text
