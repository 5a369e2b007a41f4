"""fetch + ingest through Snakemake on small files in the layouts of the real datasets, served
from 127.0.0.1: every shipped GEO dataset file, with its URLs pointed at the local server."""

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from texflow.utils import read_h5ad

from tests import ingest_fixtures as fx
from tests.httpserver import http_server  # noqa: F401  (pytest fixture)
from tests.workflow_runner import ROOT, not_shared, prepare_workdir, run_workflow

pytestmark = pytest.mark.slow


def _dataset(name: str, http_server, files: dict[str, bytes]) -> dict:  # noqa: F811
    """The shipped dataset file `name`, its sources served locally under their real names."""
    dataset = yaml.safe_load((ROOT / "config/datasets" / f"{name}.yaml").read_text())
    for source in dataset["sources"]:
        filename = source["url"].rsplit("/", 1)[1]
        source["url"] = http_server.add(f"/geo/{dataset['id']}/{filename}", files[source["name"]])
    return dataset


def _ingest_all(tmp_path: Path, datasets: list[dict]) -> dict[str, ad.AnnData]:
    """fetch + ingest of several datasets in one Snakemake run (one start-up, two jobs at once)."""
    prepare_workdir(tmp_path, datasets[0])
    config_path = tmp_path / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    for dataset in datasets[1:]:
        (tmp_path / f"config/datasets/{dataset['id']}.yaml").write_text(
            yaml.safe_dump(dataset, sort_keys=False)
        )
        config["datasets"].append(f"config/datasets/{dataset['id']}.yaml")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [f"results/{d['id']}/raw.h5ad" for d in datasets]
    umask = os.umask(0o022)  # a shared filesystem's usual umask: results must be group-readable
    try:
        done = run_workflow(tmp_path, None, *targets, cores=2)
    finally:
        os.umask(umask)
    assert done.returncode == 0, done.stdout[-5000:]
    written = [tmp_path / "results", tmp_path / "resources/downloads", tmp_path / "logs"]
    assert not_shared(*written) == [], "files others cannot read under umask 022"
    # texflow.utils.read_h5ad: raw.h5ad holds count data once, in X (the counts layer is X)
    return {d["id"]: read_h5ad(tmp_path / "results" / d["id"] / "raw.h5ad") for d in datasets}


def test_every_real_dataset_layout(tmp_path, http_server):  # noqa: F811
    """One workflow run over small copies of all shipped GEO dataset files; each checked."""
    cases = [
        gse120575_real_metadata(http_server),
        gse123813_bcc_layout(http_server),
        gse156728_layout_with_pan_cancer_metadata(http_server),
        miller_2019_tenx_layout(http_server, "GSE122675"),
        miller_2019_tenx_layout(http_server, "GSE122712"),
        luoma_2022_raw_h5_tar_layout(http_server),
        zhang_2021_single_triplet_layout(http_server),
        gse243013_matrix_market_layout(http_server),
    ]
    shipped = {p.stem for p in (ROOT / "config/datasets").glob("GSE*.yaml")}
    assert {dataset["id"] for dataset, _ in cases} == shipped, (
        "every shipped GEO dataset file is tested"
    )
    results = _ingest_all(tmp_path, [dataset for dataset, _ in cases])
    for dataset, check in cases:
        check(results[dataset["id"]])
    log = (tmp_path / "logs/GSE120575/ingest.log").read_text()
    assert log.count("organism human confirmed") == 1


def gse120575_real_metadata(http_server):  # noqa: F811
    cells = fx.geo_cell_subset(4)  # 60 real cell IDs (titles) of 15 real biopsies
    genes = fx.human_genes(300)
    X = fx.counts(len(cells), len(genes), seed=11) / 3
    samples = list(cells["sample"])
    dataset = _dataset(
        "GSE120575",
        http_server,
        {
            "matrix": fx.geo_two_header(X, list(cells["title"]), samples, genes),
            "cells": fx.GEO_METADATA.read_bytes(),
        },
    )

    def check(adata):
        _check_gse120575(adata, cells, X)

    return dataset, check


def _check_gse120575(adata, cells, X):
    assert adata.shape == (60, 300)
    np.testing.assert_allclose(adata.X.toarray(), X, atol=1e-4)
    truth = cells.set_index("title").loc[adata.obs_names]
    assert list(adata.obs["sample"]) == list(truth["sample"])
    assert list(adata.obs["patient"]) == [s.split("_")[1] for s in truth["sample"]]
    assert list(adata.obs["response"]) == [
        {"Responder": "responder", "Non-responder": "non_responder"}[r] for r in truth["response"]
    ]
    assert adata.obs.loc[truth.index[truth["sample"] == "Pre_P1"], "response"].eq("responder").all()
    assert (
        adata.obs.loc[truth.index[truth["sample"] == "Pre_P2"], "response"]
        .eq("non_responder")
        .all()
    )
    assert set(adata.obs["timepoint"]) == {"pre_treatment", "on_treatment"}
    sources = adata.uns["texflow"]["sources"]
    assert (
        sources["cells"]["bytes"] == fx.GEO_METADATA.stat().st_size
        and len(sources["cells"]["sha256"]) == 64
    )


def gse123813_bcc_layout(http_server):  # noqa: F811
    cells, genes = fx.barcodes(40, seed=3), fx.human_genes(150)
    X = fx.counts(40, 150, seed=12)
    patients = [f"su00{1 + i % 3}" for i in range(40)]
    treatment = ["pre" if i < 20 else "post" for i in range(40)]
    metadata = pd.DataFrame(
        {
            "cell.id": cells,
            "patient": patients,
            "treatment": treatment,
            "sort": "CD45+ CD3+",
            "cluster": "CD8_ex",
        }
    ).to_csv(sep="\t", index=False)
    dataset = _dataset(
        "GSE123813_bcc",
        http_server,
        {
            "matrix": fx.gz(fx.dense_table(X, cells, genes, corner=False)),
            "cells": fx.gz(metadata),
        },
    )

    def check(adata):
        assert adata.shape == (40, 150)
        np.testing.assert_array_equal(adata.layers["counts"].toarray(), X)
        assert list(adata.obs["patient"]) == patients
        assert list(adata.obs["timepoint"]) == ["pre_treatment"] * 20 + ["on_treatment"] * 20
        assert adata.obs["response"].isna().all()  # not in GEO: never guessed

    return dataset, check


def gse156728_layout_with_pan_cancer_metadata(http_server):  # noqa: F811
    cells = [b.replace("-1", ".1") for b in fx.barcodes(30, seed=5)]
    genes = fx.human_genes(120)
    X = fx.counts(30, 120, seed=13)
    loc = ["T", "N", "P"] * 10
    esca = pd.DataFrame(
        {
            "cellID": cells, "cancerType": "ESCA", "patient": [f"ESCA.P{i % 2}" for i in range(30)],
            "libraryID": [f"ESCA.P{i % 2}-{site}" for i, site in enumerate(loc)], "loc": loc,
            "meta.cluster": "CD8.c11.Tex.PDCD1", "platform": "10X",
        }
    )  # fmt: skip
    other = esca.head(10).assign(
        cancerType="UCEC", patient="UCEC.P1", loc="X"
    )  # same IDs, other type
    metadata = pd.concat([other, esca]).to_csv(sep="\t", index=False)
    dataset = _dataset(
        "GSE156728_ESCA_CD8",
        http_server,
        {"matrix": fx.gz(fx.dense_table(X, cells, genes, corner=False)), "cells": fx.gz(metadata)},
    )

    def check(adata):
        assert adata.shape == (30, 120)
        assert list(adata.obs["tissue"]) == ["tumour", "normal_adjacent", "blood"] * 10
        assert list(adata.obs["patient"]) == list(esca["patient"])
        assert set(adata.obs["meta.cluster"]) == {"CD8.c11.Tex.PDCD1"}

    return dataset, check


def miller_2019_tenx_layout(http_server, name):  # noqa: F811
    cells, genes = fx.barcodes(35, seed=8), fx.mouse_genes(200)
    X = fx.counts(35, 200, seed=14)
    triplet = fx.tenx_triplet(X, cells, genes, old_genes=True)
    files = {
        "matrix": triplet["matrix.mtx.gz"],
        "barcodes": triplet["barcodes.tsv.gz"],
        "genes": triplet["genes.tsv.gz"],
    }

    def check(adata):
        assert adata.shape == (35, 200)
        assert list(adata.obs_names) == cells and list(adata.var_names) == genes
        np.testing.assert_array_equal(adata.X.toarray(), X)
        assert adata.var["gene_ids"].str.startswith("ENSMUSG").all()

    return _dataset(name, http_server, files), check


def luoma_2022_raw_h5_tar_layout(http_server):  # noqa: F811
    """GSE200996: tumour raw_feature_bc_matrix .h5 files in GSE200996_RAW.tar (with a blood
    library, TCR files and empty droplets) + the CD45 tumour metadata with Path_response."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        raw, metadata, truth = fx.luoma_2022_layout(Path(tmp))
    dataset = _dataset("GSE200996", http_server, {"matrix": raw, "cells": metadata})

    def check(adata):
        assert adata.n_obs == len(truth) == 48  # the empty droplets never reach the join
        by_id = truth.set_index(truth["cell_id"].str.casefold())
        rows = by_id.loc[adata.obs_names.str.casefold()]
        np.testing.assert_array_equal(adata.X.toarray(), np.vstack(rows["X"]))
        assert list(adata.obs["patient"]) == list(rows["Patient_ID"])
        response = rows["Path_response"].map({"High": "responder", "Low": "non_responder"})
        observed = adata.obs["response"].astype(object).fillna("NA")
        assert observed.tolist() == response.fillna("NA").tolist()
        assert set(adata.obs["timepoint"]) == {"pre_treatment", "on_treatment"}
        assert adata.obs["sample"].nunique() == 4 and set(adata.obs["tissue"]) == {"tumour"}

    return dataset, check


def zhang_2021_single_triplet_layout(http_server):  # noqa: F811
    """GSE169246: one counts.mtx / barcode.tsv / feature.tsv triplet, samples in the barcodes."""
    titles = ["Pre_P002_t", "Post_P002_t", "Pre_P002_b", "Prog_P019_t"]
    cells = [f"{b}.{titles[i % 4]}" for i, b in enumerate(fx.barcodes(24, seed=2))]
    X = fx.counts(24, 150, seed=9)
    triplet = fx.tenx_triplet(X, cells, fx.human_genes(150))
    files = {
        "matrix": triplet["matrix.mtx.gz"],
        "barcodes": triplet["barcodes.tsv.gz"],
        "features": triplet["features.tsv.gz"],
    }
    dataset = _dataset("GSE169246", http_server, files)

    def check(adata):
        assert list(adata.obs_names) == cells
        np.testing.assert_array_equal(adata.X.toarray(), X)
        assert list(adata.obs["sample"]) == [titles[i % 4] for i in range(24)]
        assert set(adata.obs["patient"]) == {"P002", "P019"}
        assert set(adata.obs["tissue"]) == {"tumour", "blood"}
        assert adata.obs["response"].isna().all()  # not in GEO: never guessed

    return dataset, check


def gse243013_matrix_market_layout(http_server):  # noqa: F811
    """GSE243013: a cells x genes .mtx.gz, csv barcodes / genes with header lines, and the
    per-cell metadata with pathological_response; only the T/NK cells are read."""
    files, metadata, X = fx.gse243013_layout()
    dataset = _dataset("GSE243013", http_server, files)
    for source in dataset["sources"]:
        source.pop("bytes", None)  # the real files' sizes, pinned in the shipped file
    tnk = metadata[metadata["major_cell_type"] == "T/NK cell"]

    def check(adata):
        assert list(adata.obs_names) == list(tnk["cellID"])
        np.testing.assert_array_equal(adata.X.toarray(), X[tnk.index])
        assert list(adata.obs["patient"]) == list(tnk["sampleID"])
        assert set(adata.obs["response"].dropna()) == {"responder", "non_responder"}
        assert (
            adata.obs["response"].isna().sum() == (tnk["pathological_response"] == "unknowm").sum()
        )

    return dataset, check


def test_wrong_organism_stops_ingest_and_leaves_no_output(tmp_path, http_server):  # noqa: F811
    cells = fx.geo_cell_subset(1)
    genes = fx.mouse_genes(200)  # a mouse matrix behind a human dataset file
    X = fx.counts(len(cells), 200) / 3
    dataset = _dataset(
        "GSE120575",
        http_server,
        {
            "matrix": fx.geo_two_header(X, list(cells["title"]), list(cells["sample"]), genes),
            "cells": fx.GEO_METADATA.read_bytes(),
        },
    )
    done = run_workflow(tmp_path, dataset, "results/GSE120575/raw.h5ad", cores=1)
    assert done.returncode != 0
    assert (tmp_path / "resources/downloads/GSE120575/manifest.tsv").exists()  # fetch was fine
    assert not (tmp_path / "results/GSE120575/raw.h5ad").exists()
    assert not list((tmp_path / "results/GSE120575").glob("*raw.h5ad*"))  # no partial file either
    log = (tmp_path / "logs/GSE120575/ingest.log").read_text()
    assert (
        "dataset GSE120575" in log
        and "GSE120575_Sade_Feldman_melanoma_single_cells_TPM_GEO.txt.gz" in log
    )
    assert "organism: human" in log and "capitalised as in mouse" in log
    assert "Traceback" not in log
