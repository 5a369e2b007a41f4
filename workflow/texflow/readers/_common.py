"""Helpers shared by the readers: opening (possibly gzipped) files, turning low-level errors into
:class:`InputDataError`, and telling gene labels from cell labels."""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputDataError

GZIP_MAGIC = b"\x1f\x8b"

# Errors a broken file raises from deep inside gzip, zlib, tarfile, h5py or pandas.
LOW_LEVEL_ERRORS: tuple[type[BaseException], ...] = (
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    tarfile.TarError,
    UnicodeDecodeError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    OSError,
    ValueError,
)


@contextlib.contextmanager
def reading(
    path: str | Path, dataset: str, what: str = "reading", *, encoding_option: str | None = None
) -> Iterator[None]:
    """Turn a low-level error raised while `what`-ing `path` into an InputDataError naming both.

    A text that is not in the expected encoding names `encoding_option`, the dataset-file key
    that sets it (e.g. ``metadata.options.encoding``), as the fix.
    """
    try:
        yield
    except InputDataError:
        raise
    except UnicodeDecodeError as error:
        fix = (
            f"; set {encoding_option} in the dataset file to the file's encoding (latin-1 for "
            "most files that are not utf-8)"
            if encoding_option
            else ""
        )
        raise InputDataError(
            f"is not {error.encoding} text (byte {error.object[error.start : error.end]!r} while "
            f"{what}){fix}",
            dataset=dataset,
            path=path,
        ) from None
    except gzip.BadGzipFile as error:
        raise InputDataError(
            f"corrupt gzip data while {what}: {error}", dataset=dataset, path=path
        ) from None
    except (EOFError, zlib.error) as error:
        raise InputDataError(
            f"truncated or corrupt compressed data while {what} ({error}); download it again",
            dataset=dataset,
            path=path,
        ) from None
    except LOW_LEVEL_ERRORS as error:
        raise InputDataError(
            f"cannot be read ({what}): {type(error).__name__}: {error}", dataset=dataset, path=path
        ) from None


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_binary(path: Path, dataset: str) -> IO[bytes]:
    """Open `path` for reading bytes, decompressing gzip (detected by content, not by name)."""
    if not path.exists():
        raise InputDataError("file is missing (was it downloaded?)", dataset=dataset, path=path)
    if is_gzip(path):
        return gzip.open(path, "rb")
    if path.name.endswith(".gz"):
        raise InputDataError(
            "file is named .gz but is not gzip-compressed (an HTML error page or a truncated "
            "download?)",
            dataset=dataset,
            path=path,
        )
    return open(path, "rb")


def open_text(path: Path, dataset: str, *, encoding: str = "utf-8") -> IO[str]:
    """Open `path` as text in `encoding` (gzip detected by content); newlines are universal."""
    return io.TextIOWrapper(open_binary(path, dataset), encoding=encoding, newline=None)


def wrap_member(handle: IO[bytes], name: str) -> IO[bytes]:
    """Decompress a tar member or loose file object when its name says it is gzipped."""
    return gzip.GzipFile(fileobj=handle, mode="rb") if name.endswith(".gz") else handle


def split_fields(line: str, sep: str) -> list[str]:
    """Split a text line and drop the trailing empty fields some exporters leave."""
    fields = line.rstrip("\r\n").split(sep)
    while fields and fields[-1].strip() == "":
        fields.pop()
    return fields


def to_csr32(matrix) -> sp.csr_matrix:
    """Any matrix as float32 CSR (the contract's X)."""
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix, dtype=np.float32)
    return sp.csr_matrix(np.asarray(matrix, dtype=np.float32))


def check_unique_cells(cells: Iterable[str], *, dataset: str, path: str | Path) -> None:
    """Duplicate cell IDs make every join ambiguous: stop, naming a few."""
    index = pd.Index(list(cells))
    duplicated = index[index.duplicated()].unique()
    if len(duplicated):
        raise InputDataError(
            f"{len(duplicated)} cell barcodes/IDs occur more than once "
            f"(e.g. {', '.join(map(str, duplicated[:5]))}); cell IDs must be unique",
            dataset=dataset,
            path=path,
        )


# ---------------------------------------------------------------------------------------------
# Which axis holds genes? Used by dense_table to detect the orientation of a table.

# A run of >= 10 nucleotides is a 10x/Drop-seq cell barcode; no gene symbol has one.
_BARCODE = re.compile(r"[ACGTN]{10,}")
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
# Gene symbols: a letter, then letters/digits, optionally joined by - or . (HLA-A, RP11-34P13.3,
# Cd8b1, mt-Co1, C1orf112); at most 25 characters; no underscore, space or colon.
_SYMBOL_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-.][A-Za-z0-9]+)*$")
# Genes every T-cell dataset measures, human and mouse spellings: a strong, organism-free hint.
COMMON_GENES = frozenset(
    """ACTB GAPDH B2M PTPRC CD3E CD3D CD3G CD2 CD8A CD8B CD4 MALAT1 TMSB4X EEF1A1 FTL FTH1 TPT1
    RPL13 RPL3 RPS27 RPS12 RPLP0 MT-CO1 MT-ND1 CCL5 GZMB GZMK PDCD1 HAVCR2 TOX TCF7 IL7R SELL
    LAG3 CTLA4 LCK ZAP70 NKG7 HLA-A HLA-B HLA-DRA CD74 LYZ CD14 MS4A1 CD19 IFIT1 ISG15 MKI67 TOP2A
    Actb Gapdh B2m Ptprc Cd3e Cd3d Cd3g Cd2 Cd8a Cd8b1 Cd4 Malat1 Tmsb4x Eef1a1 Ftl1 Fth1 Tpt1
    Rpl13 Rpl3 Rps27 Rps12 Rplp0 mt-Co1 mt-Nd1 Ccl5 Gzmb Gzmk Pdcd1 Havcr2 Tox Tcf7 Il7r Sell
    Lag3 Ctla4 Lck Zap70 Nkg7 H2-K1 H2-D1 Cd74 Lyz2 Cd14 Ms4a1 Cd19 Ifit1 Isg15 Mki67 Top2a
    """.split()
)


def label_evidence(labels: Iterable[str]) -> dict[str, float]:
    """Fractions of `labels` that look like cell barcodes, known genes, and gene-symbol shapes."""
    labels = [str(label) for label in labels]
    n = max(len(labels), 1)
    barcode = sum(bool(_BARCODE.search(label)) for label in labels)
    known = sum(label in COMMON_GENES for label in labels)
    shaped = sum(
        (bool(_ENSEMBL.match(label)) or bool(_SYMBOL_SHAPE.match(label)))
        and len(label) <= 25
        and not _BARCODE.search(label)
        for label in labels
    )
    return {"n_labels": len(labels), "barcode": barcode / n, "known": known, "symbol": shaped / n}


def detect_genes_axis(row_labels: list[str], column_labels: list[str]) -> tuple[str | None, str]:
    """Decide whether the rows or the columns of a table are genes.

    Returns ``("rows" | "columns" | None, evidence)``; None when the labels do not tell.
    Rules, in order: an axis of cell barcodes is the cell axis; an axis with several
    well-known genes (CD3E, ACTB, ...) and the other without is the gene axis; an axis whose
    labels nearly all have the shape of gene symbols while the other's mostly do not is the
    gene axis.
    """
    rows, cols = label_evidence(row_labels), label_evidence(column_labels)
    evidence = (
        f"row labels (first {rows['n_labels']}): {rows['barcode']:.0%} barcode-like, "
        f"{rows['known']:.0f} well-known genes, {rows['symbol']:.0%} gene-symbol-shaped; "
        f"column labels (first {cols['n_labels']}): {cols['barcode']:.0%} barcode-like, "
        f"{cols['known']:.0f} well-known genes, {cols['symbol']:.0%} gene-symbol-shaped"
    )
    if rows["barcode"] > 0.5 and cols["barcode"] < 0.1:
        return "columns", evidence + " -> rows are cell barcodes"
    if cols["barcode"] > 0.5 and rows["barcode"] < 0.1:
        return "rows", evidence + " -> columns are cell barcodes"
    if rows["known"] >= 3 and cols["known"] * 5 <= rows["known"]:
        return "rows", evidence + " -> rows hold well-known genes"
    if cols["known"] >= 3 and rows["known"] * 5 <= cols["known"]:
        return "columns", evidence + " -> columns hold well-known genes"
    if rows["symbol"] >= 0.8 and rows["symbol"] - cols["symbol"] >= 0.3:
        return "rows", evidence + " -> row labels are shaped like gene symbols"
    if cols["symbol"] >= 0.8 and cols["symbol"] - rows["symbol"] >= 0.3:
        return "columns", evidence + " -> column labels are shaped like gene symbols"
    return None, evidence


def _guess_sep_name(filename: str) -> str:
    """Separator by file name: comma for .csv(.gz), tab otherwise."""
    return "," if filename.removesuffix(".gz").endswith(".csv") else "\t"


# ------------------------------------------------------------------------------ matrix sources

#: Rows per chunk when a matrix is checked or written chunk by chunk (10k cells x ~2.5k genes:
#: ~0.2 GB of CSR), as `texflow.utils.SUBSET_CHUNK_ROWS` for the QC stage's subset.
MATRIX_CHUNK_ROWS = 10_000


def _row_slices(n_rows: int, rows: np.ndarray | None, chunk_rows: int | None) -> Iterator:
    """Row selections of at most `chunk_rows` rows (None: `MATRIX_CHUNK_ROWS`): slices of all
    rows, or pieces of `rows`."""
    chunk_rows = chunk_rows or MATRIX_CHUNK_ROWS
    total = n_rows if rows is None else rows.size
    for start in range(0, total, chunk_rows):
        stop = min(start + chunk_rows, total)
        yield slice(start, stop) if rows is None else rows[start:stop]


@dataclass(frozen=True)
class InMemoryMatrix:
    """A reader's matrix held in memory (cells x genes), read chunk by chunk of rows as a
    matrix left on disk is (`OnDiskMatrix`), so ingest checks and writes both alike."""

    matrix: object  # scipy sparse or dense, as the reader returned it

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def chunks(self, rows: np.ndarray | None = None, *, chunk_rows: int | None = None):
        """The rows (all, or the positions `rows`, in that order), `chunk_rows` at a time."""
        for selection in _row_slices(self.shape[0], rows, chunk_rows):
            yield self.matrix[selection]

    def take(self, rows: np.ndarray | None = None):
        """The rows as one matrix (the reader's object itself for all rows)."""
        return self.matrix if rows is None else self.matrix[rows]


@dataclass(frozen=True)
class OnDiskMatrix:
    """A CSR matrix of an h5ad file (`key`: ``X``, ``layers/<name>`` or ``raw/X``), left on
    disk and read as float32 CSR, chunk by chunk of rows: a 1M-cell matrix (~30 GB in memory)
    is never whole in memory."""

    path: Path
    key: str
    shape: tuple[int, int]
    dataset: str

    def chunks(self, rows: np.ndarray | None = None, *, chunk_rows: int | None = None):
        """As `InMemoryMatrix.chunks`; read errors name the file and dataset."""
        import anndata as ad
        import h5py

        with reading(self.path, self.dataset, f"reading {self.key}"):
            with h5py.File(self.path, "r") as file:
                matrix = ad.io.sparse_dataset(file[self.key])
                for selection in _row_slices(self.shape[0], rows, chunk_rows):
                    yield to_csr32(matrix[selection])

    def take(self, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """The rows as one float32 CSR matrix in memory."""
        import anndata as ad
        import h5py

        with reading(self.path, self.dataset, f"reading {self.key}"):
            with h5py.File(self.path, "r") as file:
                matrix = to_csr32(ad.io.read_elem(file[self.key]))
        return matrix if rows is None else matrix[rows]
