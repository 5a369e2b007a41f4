"""Small files in the layouts of real GEO datasets, written by code, for the ingest tests.

Every writer takes the truth (a cells x genes array, cell IDs, gene symbols) and lays it out the
way the real files do, so a test can read it back and compare with the truth.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from functools import cache
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GEO_METADATA = DATA / "GSE120575_patient_ID_single_cells.txt.gz"
PATIENT_COLUMN = "characteristics: patinet ID (Pre=baseline; Post= on treatment)"
RESPONSE_COLUMN = "characteristics: response"


@cache
def human_genes(n: int = 300) -> list[str]:
    """Real human gene symbols (from the shipped Sade-Feldman demo), CD8A/CD3E/PTPRC first."""
    genes = list(
        ad.read_h5ad(ROOT / "resources/demo/sade_feldman_2018_subset550.h5ad", backed="r").var_names
    )
    first = ["CD8A", "CD3E", "PTPRC", "ACTB", "GAPDH", "B2M"]
    return (first + [g for g in genes if g not in first])[:n]


@cache
def mouse_genes(n: int = 300) -> list[str]:
    """Real mouse gene symbols (from the shipped LCMV demo), Cd8a/Cd3e/Ptprc first."""
    genes = list(
        ad.read_h5ad(ROOT / "resources/demo/lcmv_mouse_cd44_98.h5ad", backed="r").var_names
    )
    first = ["Cd8a", "Cd3e", "Ptprc", "Actb", "Gapdh", "B2m"]
    return (first + [g for g in genes if g not in first])[:n]


def counts(n_cells: int, n_genes: int, *, seed: int = 0, density: float = 0.3) -> np.ndarray:
    """Integer counts, cells x genes, every cell and gene with at least one non-zero."""
    rng = np.random.default_rng(seed)
    values = rng.poisson(3.0, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < density)
    values[np.arange(n_cells), np.arange(n_cells) % n_genes] += 1
    values[np.arange(n_genes) % n_cells, np.arange(n_genes)] += 1
    return values.astype(np.float32)


def barcodes(n: int, *, seed: int = 0, suffix: str = "-1") -> list[str]:
    rng = np.random.default_rng(seed)
    codes = set()
    while len(codes) < n:
        codes.add("".join(rng.choice(list("ACGT"), 16)) + suffix)
    return sorted(codes)


def gz(data: bytes | str, encoding: str = "utf-8") -> bytes:
    return gzip.compress(data.encode(encoding) if isinstance(data, str) else data, mtime=0)


# ------------------------------------------------------------------------------- 10x triplets


def tenx_triplet(
    X: np.ndarray, cells: list[str], genes: list[str], *, old_genes: bool = False
) -> dict[str, bytes]:
    """The three gzipped 10x files (``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz``
    or ``genes.tsv.gz``) for a cells x genes matrix."""
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, sp.coo_matrix(np.asarray(X).T), field="integer")
    ids = [f"ENSG{i:011d}" if genes[0].isupper() else f"ENSMUSG{i:011d}" for i in range(len(genes))]
    if old_genes:
        features_name = "genes.tsv.gz"
        features = "".join(f"{i}\t{g}\n" for i, g in zip(ids, genes, strict=True))
    else:
        features_name = "features.tsv.gz"
        features = "".join(f"{i}\t{g}\tGene Expression\n" for i, g in zip(ids, genes, strict=True))
    return {
        "matrix.mtx.gz": gz(buffer.getvalue()),
        "barcodes.tsv.gz": gz("".join(f"{c}\n" for c in cells)),
        features_name: gz(features),
    }


def raw_tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    """A ``GSE*_RAW.tar`` holding ``<prefix>_<file>`` members for each sample prefix."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for prefix, files in samples.items():
            for name, data in files.items():
                info = tarfile.TarInfo(f"{prefix}_{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tenx_h5(path: Path, X: np.ndarray, cells: list[str], genes: list[str]) -> Path:
    """A Cell Ranger v3 ``filtered_feature_bc_matrix.h5`` for a cells x genes matrix."""
    import h5py

    genes_by_cells = sp.csc_matrix(np.asarray(X).T.astype(np.int32))
    with h5py.File(path, "w") as handle:
        group = handle.create_group("matrix")
        group["data"] = genes_by_cells.data
        group["indices"] = genes_by_cells.indices.astype(np.int64)
        group["indptr"] = genes_by_cells.indptr.astype(np.int64)
        group["shape"] = np.array(genes_by_cells.shape, dtype=np.int32)
        group["barcodes"] = np.array(cells, dtype="S")
        features = group.create_group("features")
        features["id"] = np.array([f"ENSG{i:011d}" for i in range(len(genes))], dtype="S")
        features["name"] = np.array(genes, dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * len(genes), dtype="S")
        features["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")
        features["_all_tag_keys"] = np.array([b"genome"])
    return path


def tar(members: dict[str, bytes]) -> bytes:
    """An uncompressed tar (GEO's ``GSE*_RAW.tar``) holding `members` (name -> bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


#: GSE200996 (Luoma 2022) tumour libraries: the member name and the metadata's sample tag
LUOMA_LIBRARIES = {
    "GSM6048142_raw_feature_bc_matrix_P18_pre-Tx_GEX_sc_tumor.h5": "P18_Pre-Tx",
    "GSM6048150_raw_feature_bc_matrix_P18_post-Tx_GEX_sc_tumor.h5": "P18_Post-Tx",
    "GSM6048143_raw_feature_bc_matrix_P23_pre-Tx_GEX_sc_tumor.h5": "P23_Pre-Tx",
    "GSM6048144_raw_feature_bc_matrix_P24_pre-Tx_GEX_sc_tumor.h5": "P24_Pre-Tx",
}
LUOMA_RESPONSE = {"P18": "Medium", "P23": "High", "P24": "Low"}


def luoma_2022_layout(
    tmp: Path, *, n_cells: int = 12, n_empty: int = 25, n_genes: int = 120, quoted: bool = True
) -> tuple[bytes, bytes, pd.DataFrame]:
    """GSE200996's layout: a ``GSE200996_RAW.tar`` of Cell Ranger raw_feature_bc_matrix .h5
    files (annotated cells plus empty droplets, which repeat barcodes between libraries), a
    blood library and TCR files beside them, and the gzipped CD45 tumour metadata (first
    column unnamed: ``<barcode without -1>_<P18>_<Pre-Tx|Post-Tx>``; Patient_ID, Stage, Cohort,
    Path_response, CellType_ID, UMAP_1, UMAP_2).

    Returns (tar bytes, metadata bytes, truth: one row per annotated cell with ``cell_id``
    (the metadata ID), ``member``, ``barcode`` and its counts in ``X``).
    """
    genes = human_genes(n_genes)
    shared_empty = barcodes(n_empty, seed=99)  # empty droplets: same barcodes in every library
    members, rows = {}, []
    for i, (member, tag) in enumerate(LUOMA_LIBRARIES.items()):
        cells = barcodes(n_cells, seed=10 + i)
        X = counts(n_cells, n_genes, seed=20 + i)
        empty = np.zeros((n_empty, n_genes), dtype=np.float32)
        empty[np.arange(n_empty), np.arange(n_empty) % n_genes] = 1
        path = tenx_h5(tmp / member, np.vstack([X, empty]), cells + shared_empty, genes)
        members[member] = path.read_bytes()
        patient, stage = tag.split("_")
        for j, barcode in enumerate(cells):
            rows.append({
                "cell_id": f"{barcode.removesuffix('-1')}_{tag}", "member": member,
                "barcode": barcode, "X": X[j], "Patient_ID": patient, "Stage": stage,
                "Cohort": "Mono" if i % 2 else "Combo",
                "Path_response": LUOMA_RESPONSE[patient], "CellType_ID": "T cell",
                "UMAP_1": 0.5 * j, "UMAP_2": -0.5 * j,
            })  # fmt: skip
    blood = tenx_h5(tmp / "blood.h5", counts(5, n_genes, seed=3), barcodes(5, seed=4), genes)
    members["GSM6048200_raw_feature_bc_matrix_P18_pre-Tx_GEX_sc_PBMC.h5"] = blood.read_bytes()
    members["GSM6048142_filtered_contig_annotations_P18_pre-Tx_TCR_sc_tumor.csv.gz"] = gz(
        "barcode\n"
    )
    truth = pd.DataFrame(rows)
    table = truth.drop(columns=["member", "barcode", "X"]).rename(columns={"cell_id": ""})
    text = table.to_csv(
        sep="\t", index=False, quoting=2 if quoted else 0
    )  # 2: csv.QUOTE_NONNUMERIC, as R
    return tar(members), gz(text), truth


#: GSE243013 pathological_response values (as spelled in the GEO file, "unknowm" included)
GSE243013_RESPONSES = ("MPR", "pCR", "non-MPR", "unknowm")


def gse243013_layout(
    n_cells: int = 40, n_genes: int = 150, *, seed: int = 4
) -> tuple[dict[str, bytes], pd.DataFrame, np.ndarray]:
    """GSE243013's layout: ``GSE243013_NSCLC_immune_scRNA_counts.mtx.gz`` written cells x genes,
    ``GSE243013_barcodes.csv.gz`` (header ``barcode``), ``GSE243013_genes.csv.gz`` (header
    ``geneSymbol``) and ``GSE243013_NSCLC_immune_scRNA_metadata.csv.gz`` (cellID, sampleID,
    pathological_response, major_cell_type, sub_cell_type, ... in the barcodes' order).

    Returns (files by source name, the metadata, X cells x genes).
    """
    X = counts(n_cells, n_genes, seed=seed)
    codes = barcodes(n_cells, seed=seed)
    cells = [f"{b.removesuffix('-1')}-{i // 10}" for i, b in enumerate(codes)]
    genes = human_genes(n_genes)
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, sp.coo_matrix(X), field="integer")  # cells x genes, as GEO's
    samples = [f"P{i // 10:03d}" for i in range(n_cells)]
    metadata = pd.DataFrame({
        "cellID": cells, "sampleID": samples,
        "pathological_response": [GSE243013_RESPONSES[i // 10 % 4] for i in range(n_cells)],
        "major_cell_type": ["T/NK cell" if i % 3 else "Myeloid cell" for i in range(n_cells)],
        "sub_cell_type": ["CD8T_Tex_CXCL13" if i % 3 else "Mono_CD14" for i in range(n_cells)],
        "cancer_type": "LUSC", "anti-PD1_therapy": "Pembrolizumab",
    })  # fmt: skip
    files = {
        "matrix": gz(buffer.getvalue()),
        "barcodes": gz("barcode\n" + "".join(f"{c}\n" for c in cells)),
        "features": gz("geneSymbol\n" + "".join(f"{g}\n" for g in genes)),
        "cells": gz(metadata.to_csv(index=False)),
    }
    return files, metadata, X


# ---------------------------------------------------------------------------------- text tables


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"


def dense_table(
    X: np.ndarray,
    cells: list[str],
    genes: list[str],
    *,
    genes_in_rows: bool = True,
    sep: str = "\t",
    corner: bool = True,
    trailing_sep: bool = False,
) -> str:
    """A dense text table; with ``corner`` the header starts with an empty field above the row
    labels (GEO style), without it the header has one field fewer than the rows (R style)."""
    matrix = np.asarray(X).T if genes_in_rows else np.asarray(X)
    rows, columns = (genes, cells) if genes_in_rows else (cells, genes)
    end = sep if trailing_sep else ""
    lines = [sep.join(([""] if corner else []) + list(columns)) + "\n"]
    for label, values in zip(rows, matrix, strict=True):
        lines.append(sep.join([label, *map(_number, values)]) + end + "\n")
    return "".join(lines)


def geo_two_header(X: np.ndarray, cells: list[str], samples: list[str], genes: list[str]) -> bytes:
    """The GSE120575 matrix layout, gzipped latin-1: corner + cell IDs, corner + sample IDs,
    then one line per gene with a trailing tab."""
    lines = ["\t" + "\t".join(cells) + "\n", "\t" + "\t".join(samples) + "\n"]
    for gene, values in zip(genes, np.asarray(X).T, strict=True):
        lines.append(gene + "\t" + "\t".join(map(_number, values)) + "\t\n")
    return gz("".join(lines), encoding="latin-1")


# ---------------------------------------------------------------------------- GEO metadata file


@cache
def geo_cells() -> pd.DataFrame:
    """The real GSE120575 per-cell table: title, patient/sample field, response."""
    from texflow.readers.metadata import read_geo_template

    table = read_geo_template(GEO_METADATA, {}, "test")
    return table[["title", PATIENT_COLUMN, RESPONSE_COLUMN]].rename(
        columns={PATIENT_COLUMN: "sample", RESPONSE_COLUMN: "response"}
    )


def geo_cell_subset(
    n_per_sample: int = 4,
    samples: tuple[str, ...] = (
        "Pre_P1",
        "Pre_P2",
        "Post_P1",
        "Post_P3",
        "Pre_P28",
        "Pre_P24",
        "Post_P4",
        "Pre_P6",
        "Post_P5_2",
        "Post_P6",
        "Pre_P35",
        "Pre_P12",
        "Post_P17",
        "Pre_P15",
        "Post_P23_2",
    ),
) -> pd.DataFrame:
    """Real cells of GSE120575: `n_per_sample` cells from each of `samples`."""
    table = geo_cells()
    picked = [table[table["sample"] == s].head(n_per_sample) for s in samples]
    return pd.concat(picked, ignore_index=True)


# ---------------------------------------------------------------------------------- manifests


def write_sources(directory: Path, files: dict[str, tuple[str, bytes]]) -> Path:
    """Write source files and a fetch-style manifest.tsv into `directory`; return the manifest.

    `files` maps source name -> (filename, bytes).
    """
    import hashlib

    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (filename, data) in files.items():
        (directory / filename).write_bytes(data)
        rows.append(
            {
                "name": name,
                "url": f"http://127.0.0.1/{filename}",
                "filename": filename,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "downloaded_at": "2026-11-22T00:00:00Z",
            }
        )
    manifest = directory / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    return manifest
