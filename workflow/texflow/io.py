"""Ingest: from downloaded files + a dataset config to one AnnData following the texflow contract.

:func:`read_dataset` is the entry point of the ``ingest`` stage. It reads the fetch stage's
manifest, reads the matrix with the registered reader named in the dataset config
(:mod:`texflow.readers`), joins per-cell metadata, maps it onto the contract's ``obs`` fields
(``sample``, ``patient``, ``response``, ``timepoint``, ``tissue``), makes gene symbols
unique, checks values and organism, and records provenance in ``uns["texflow"]``. The
manifest's format is :mod:`texflow.manifest`'s, shared with the fetch stage.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
import logging
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .contract import (
    CLUSTER,
    CLUSTER_STATE_KEY,
    DOUBLET_SCORE,
    EXHAUSTION_AXIS_KEY,
    IS_CD8,
    NON_RESPONDER,
    PATIENT,
    PSEUDOTIME,
    QC_PASS,
    RESPONDER,
    RESPONSE,
    SAMPLE,
    SCORE_PREFIX,
    STATE_CONFIDENCE,
    TIMEPOINT,
    TISSUE,
    missing_labels,
)
from .errors import InputDataError, TexflowError
from .manifest import FetchedFile, read_manifest
from .readers import (
    InMemoryMatrix,
    OnDiskMatrix,
    get_metadata_reader,
    get_reader,
    split_matrix,
)
from .utils import COUNTS_IN_X, share_counts, write_h5ad_by_rows

logger = logging.getLogger(__name__)

CONTRACT_FIELDS = (SAMPLE, PATIENT, RESPONSE, TIMEPOINT, TISSUE)
RESPONSE_VALUES = (RESPONDER, NON_RESPONDER)
# obs names later stages write: a raw column of the same name is renamed `<name>_orig`
RESERVED_OBS = set(CONTRACT_FIELDS) | {
    QC_PASS,
    DOUBLET_SCORE,
    IS_CD8,
    CLUSTER,
    CLUSTER_STATE_KEY,
    STATE_CONFIDENCE,
    EXHAUSTION_AXIS_KEY,
    PSEUDOTIME,
}

# Peak memory of ingest per MB of downloaded input, by reader, on top of a 1000 MB base. Dense
# text expands most: the parsed CSR (8 bytes per non-zero) is held up to three times while chunks
# are stacked and transposed, and a ~80 MB dense chunk plus pandas' parse buffers is a fixed
# cost. Measured: a generated 20,000 genes x 2,500 cells count table (8% non-zero, 5.8 MB
# gzipped, ~100 MB of text) peaked at 491 MB RSS (120 MB of it imports) and took 18 s; the
# factor is sized for real tables with less compressible values (GSE120575: 121 MB gzipped).
MEMORY_MB_PER_INPUT_MB = {
    "dense_table": 25.0,
    "geo_dense_two_header": 25.0,
    "tenx_mtx": 12.0,
    "tenx_h5": 8.0,
    # streamed in chunks of 50M entries (only the metadata's cells kept with on_unmatched: drop);
    # measured: a 51.6 MB gzipped 100,000 x 2,000 matrix of 10M entries peaks at 592 MB with
    # every cell kept, 190 MB of it the interpreter, and reads in 9 s
    "matrix_market": 8.0,
    # a CSR X (or layer) stays on disk and is checked and copied a chunk of rows at a time
    # (`ingest_dataset`); measured (benchmarks/README, "1M cells"): a 2.04 GB file of 100k
    # cells peaked at 1.02 GB, 20.5 GB of 1M cells at 1.41 GB (in memory before: 3.80 GB and,
    # at 500k, 18.01 GB). A dense or CSC X is read whole (~2x its file): the retry at twice the
    # memory (`attempt`) covers a small one; a large one needs --set-resources.
    "h5ad": 0.25,
}


# ------------------------------------------------------------------------- job resources

# Minutes of ingest per MB of downloaded input: parsing gzipped text runs at a few MB of
# compressed input per minute on one core (the C parser handles ~50 MB/s of decompressed text,
# ~10x the compressed size, plus float conversion); binary formats are an order faster.
MINUTES_PER_INPUT_MB = {"dense_table": 0.2, "geo_dense_two_header": 0.2}


def _downloaded_mb(manifest: str | Path) -> float:
    manifest = Path(manifest)
    if not manifest.is_file():  # Snakemake evaluates the resource again once fetch has run
        raise FileNotFoundError(errno.ENOENT, "download manifest not written yet", str(manifest))
    return sum(row.bytes for row in read_manifest(manifest)) / 2**20


def estimate_ingest_mem_mb(manifest: str | Path, reader: str, *, base_mb: float = 1000.0) -> int:
    """Memory (MB) to request for ingesting the files in `manifest` with `reader`.

    Parameters
    ----------
    manifest
        The fetch stage's ``manifest.tsv``; its ``bytes`` are summed.
    reader
        The dataset's reader: its factor in `MEMORY_MB_PER_INPUT_MB` (25 when not listed).
    base_mb
        Memory of the imports and of a small dataset.

    Raises FileNotFoundError while the manifest does not exist yet (Snakemake then evaluates
    the resource again once fetch has run).
    """
    return int(base_mb + MEMORY_MB_PER_INPUT_MB.get(reader, 25.0) * _downloaded_mb(manifest))


def estimate_ingest_runtime_min(
    manifest: str | Path, reader: str, *, base_min: float = 10.0
) -> int:
    """Runtime (minutes) to request for ingesting the files in `manifest` with `reader`.

    As :func:`estimate_ingest_mem_mb`, with `MINUTES_PER_INPUT_MB` (0.02 when not listed) on top
    of `base_min`.
    """
    return int(base_min + MINUTES_PER_INPUT_MB.get(reader, 0.02) * _downloaded_mb(manifest))


# -------------------------------------------------------------------------------- value checks

#: Values declared ``tpm`` whose largest value is below this are log-scale, not TPM. log2(TPM+1)
#: cannot exceed log2(1e6 + 1) = 19.93 (ln and log10 stay lower), while TPM puts hundreds to
#: thousands on a cell's most expressed genes (MALAT1, B2M, mitochondrial and ribosomal genes):
#: a cell's values sum to 1e6, so even spread evenly over 50,000 genes its largest is 20.
LOG_SCALE_MAX = 20.0

#: Values declared ``counts`` are normalised (TPM or CPM rounded to integers) when at least
#: `CONSTANT_TOTAL_SHARE` of the cells have totals within `CONSTANT_TOTAL_TOLERANCE` of the
#: median total, that median is at least `CONSTANT_TOTAL_MIN` and there are at least
#: `CONSTANT_TOTAL_MIN_CELLS` cells. Raw counts differ from cell to cell several-fold (library
#: size, cell size, capture), even after QC. Rounding each of a cell's TPM values moves its
#: total by at most 0.5 per detected gene: 5,000 of 1e6 (0.5%) for 10,000 genes, so rounded TPM
#: stays within 1%. Genuine counts have equal totals only when downsampled to equal depth, which
#: is done at UMI depths far below 1e5 per cell; below `CONSTANT_TOTAL_MIN` equal totals are
#: therefore only a warning.
CONSTANT_TOTAL_TOLERANCE = 0.01
CONSTANT_TOTAL_SHARE = 0.9
CONSTANT_TOTAL_MIN = 1e5
CONSTANT_TOTAL_MIN_CELLS = 10


def _check_counts_are_not_normalised(
    totals: np.ndarray, *, maximum: float, dataset: str, path: str
) -> None:
    """Stop when integer "counts" have (almost) the same total in every cell: rounded TPM/CPM."""
    n_cells = totals.size
    if n_cells < CONSTANT_TOTAL_MIN_CELLS:
        return
    median = float(np.median(totals))
    if median <= 0:
        return
    share = float(np.mean(np.abs(totals - median) <= CONSTANT_TOTAL_TOLERANCE * median))
    if share < CONSTANT_TOTAL_SHARE:
        return
    evidence = (
        f"{100 * share:.0f}% of the {n_cells} cells have a total within "
        f"{100 * CONSTANT_TOTAL_TOLERANCE:.0f}% of the median total {median:,.0f} "
        f"(range {totals.min():,.0f}-{totals.max():,.0f}; largest value {maximum:,.0f})"
    )
    if median < CONSTANT_TOTAL_MIN:
        logger.warning(
            "value_type is counts but %s; raw counts differ from cell to cell, so unless they "
            "were downsampled to equal depth on purpose these are normalised values: set "
            "value_type to tpm",
            evidence,
        )
        return
    raise InputDataError(
        f"value_type is counts but {evidence}: raw counts differ from cell to cell several-fold, "
        "so these are values normalised to a fixed total per cell (TPM or CPM, here rounded to "
        "integers); set value_type: tpm in the dataset file, or supply the raw counts",
        dataset=dataset,
        path=path,
    )


@dataclass
class _ValueSummary:
    """What `check_matrix` needs to know of a matrix's values, gathered chunk by chunk of rows."""

    stored: int = 0  # values stored (sparse: the entries as stored; dense: all)
    listed: int = 0  # non-zeros as logged: sparse, the stored entries; dense, the non-zeros
    nonzero: int = 0  # values that are not 0 (NaN included)
    non_finite: int = 0
    negative: int = 0
    minimum: float = np.inf
    maximum: float = -np.inf
    fractional: int = 0
    fractional_examples: list = dataclasses.field(default_factory=list)
    row_totals: list = dataclasses.field(default_factory=list)

    def add(self, chunk) -> None:
        data = chunk.data if sp.issparse(chunk) else np.asarray(chunk).ravel()
        nonzero = int(np.count_nonzero(data))
        self.stored += data.size
        self.listed += data.size if sp.issparse(chunk) else nonzero
        self.nonzero += nonzero
        finite = np.isfinite(data)
        self.non_finite += int(data.size - finite.sum())
        negative = data < 0
        self.negative += int(negative.sum())
        if data.size:
            self.minimum = min(self.minimum, float(data.min()))
            self.maximum = max(self.maximum, float(data.max()))
        fractional = data != np.round(data)
        self.fractional += int(fractional.sum())
        if len(self.fractional_examples) < 3:
            self.fractional_examples.extend(data[fractional][: 3 - len(self.fractional_examples)])
        # float32 sums per cell, as the whole matrix's X.sum(axis=1) gives them
        self.row_totals.append(np.asarray(chunk.sum(axis=1), dtype=np.float64).ravel())


def _as_matrix(source) -> InMemoryMatrix | OnDiskMatrix:
    """An AnnData's X, or a matrix source as it is."""
    return InMemoryMatrix(source.X) if isinstance(source, ad.AnnData) else source


def check_matrix(matrix, *, value_type: str, dataset: str, path: str) -> None:
    """Stop on an empty matrix, non-finite or negative values, or values that contradict the
    configured `value_type`: non-integer "counts", "counts" with the same total in every cell
    (rounded TPM), "tpm" already on a log scale, unlogged "log" values.

    Parameters
    ----------
    matrix
        The matrix as read (cells x genes; not changed): an AnnData (its X) or a reader's
        matrix source (`InMemoryMatrix`, `OnDiskMatrix`), read chunk by chunk of rows, so a
        matrix left on disk is checked without being held in memory.
    value_type
        The dataset file's ``value_type``: counts, tpm, log_tpm or lognorm.
    dataset, path
        Dataset id and the matrix file(s), for error messages.
    """
    matrix = _as_matrix(matrix)
    n_obs, n_vars = matrix.shape
    if n_obs == 0 or n_vars == 0:
        raise InputDataError(
            f"the matrix is empty ({n_obs} cells x {n_vars} genes)",
            dataset=dataset,
            path=path,
        )
    values = _ValueSummary()
    for chunk in matrix.chunks():
        values.add(chunk)
    if values.nonzero == 0:
        raise InputDataError(
            f"the matrix ({n_obs} cells x {n_vars} genes) holds only zeros",
            dataset=dataset,
            path=path,
        )
    if values.non_finite:
        raise InputDataError(
            f"{values.non_finite} values are NaN or infinite", dataset=dataset, path=path
        )
    if values.negative:
        raise InputDataError(
            f"{values.negative} values are negative (min {values.minimum:.3g}): scaled or "
            f"centred data cannot be analysed as {value_type}; supply the unscaled matrix",
            dataset=dataset,
            path=path,
        )
    maximum = values.maximum
    if value_type == "counts":
        if values.fractional:
            example = values.fractional_examples
            raise InputDataError(
                f"value_type is counts but {values.fractional} of {values.stored} non-zero "
                f"values are not integers (e.g. {', '.join(f'{v:.4g}' for v in example)}); these "
                "look normalised: set value_type to tpm, log_tpm or lognorm, or supply raw counts",
                dataset=dataset,
                path=path,
            )
        _check_counts_are_not_normalised(
            np.concatenate(values.row_totals), maximum=maximum, dataset=dataset, path=path
        )
    elif value_type == "tpm" and maximum < LOG_SCALE_MAX:
        raise InputDataError(
            f"value_type is tpm but the largest value is {maximum:.4g}: TPM puts hundreds to "
            "thousands on a cell's most expressed genes (each cell's values sum to 1e6), while "
            f"log-scale values stay below {LOG_SCALE_MAX:g} (log2(TPM+1) <= 19.93); these values "
            "are already log-transformed and would be logged twice: set value_type: log_tpm "
            "(log of TPM) or lognorm (log of normalised counts) in the dataset file",
            dataset=dataset,
            path=path,
        )
    elif value_type in ("log_tpm", "lognorm") and maximum > 50:
        # log2(TPM+1) cannot exceed log2(1e6+1) ~ 20; ln(x+1) of normalised counts stays < ~15
        raise InputDataError(
            f"value_type is {value_type} but values reach {maximum:.4g}, too large for log-scale "
            "values; set value_type to counts or tpm",
            dataset=dataset,
            path=path,
        )
    logger.info(
        "values: %d non-zero of %d (%.1f%%), max %.4g, as %s",
        values.listed,
        n_obs * n_vars,
        100 * values.listed / (n_obs * n_vars),
        maximum,
        value_type,
    )


# ---------------------------------------------------------------------------------- gene names


def make_gene_symbols_unique(
    adata: ad.AnnData,
    *,
    matrix: InMemoryMatrix | OnDiskMatrix | None = None,
    rows: np.ndarray | None = None,
) -> int:
    """Make ``var_names`` unique, in place; return how many genes were renamed.

    Rule: among genes sharing a symbol, the one with the largest total value across cells keeps
    the plain symbol and the others get ``-1``, ``-2``, ... in decreasing order of total (the
    separator scanpy's ``var_names_make_unique`` uses). Values are never summed or dropped:
    duplicated symbols usually are distinct loci (paralogs, readthrough or pseudogene
    annotations mapped to one name), summing is wrong for log-scale values, and keeping the most
    expressed under the plain name means signature scores use the copy that carries the signal
    rather than whichever came first in the file. The original symbol stays in
    ``var['gene_symbol']``.

    Parameters
    ----------
    adata
        The matrix; a blank or ``nan`` name takes its ``var['gene_ids']`` when there is one.
    matrix, rows
        Where the values are when `adata` has no X: the rows `rows` (None: all) of a reader's
        matrix source, summed chunk by chunk of rows.

    Writes ``var_names`` and, when genes shared a symbol, ``var['gene_symbol']`` (the names
    before suffixing).
    """
    names = pd.Index(adata.var_names.astype(str))
    if "gene_ids" in adata.var:
        ids = adata.var["gene_ids"].astype(str).to_numpy()
        blank = (names == "") | (names.str.lower() == "nan")
        names = pd.Index(np.where(blank, ids, names))
    if names.is_unique:
        adata.var_names = names
        return 0
    # float64 sums, chunk by chunk of rows: float32 loses integer counts past 2^24 per gene
    totals = np.zeros(adata.n_vars)
    for chunk in (matrix or InMemoryMatrix(adata.X)).chunks(rows):
        totals += np.asarray(chunk.sum(axis=0, dtype=np.float64)).ravel()
    new = names.to_numpy(dtype=object).copy()
    taken = set(names)
    renamed = 0
    for symbol, positions in (
        pd.Series(np.arange(len(names))).groupby(names.to_numpy()).groups.items()
    ):
        if len(positions) < 2:
            continue
        order = sorted(positions, key=lambda i: (-totals[i], i))
        suffix = 0
        for i in order[1:]:
            suffix += 1
            while f"{symbol}-{suffix}" in taken:
                suffix += 1
            new[i] = f"{symbol}-{suffix}"
            taken.add(new[i])
            renamed += 1
    adata.var["gene_symbol"] = names.to_numpy()
    adata.var_names = pd.Index(new.astype(str))
    logger.info(
        "%d genes shared a symbol with another; the most expressed copy keeps the symbol, the "
        "others were suffixed -1, -2, ...",
        renamed,
    )
    return renamed


# ----------------------------------------------------------------------------- gene identifiers

#: Gene identifiers that are not symbols: Ensembl gene IDs of any species (ENSG..., ENSMUSG...,
#: with or without a version suffix) and NCBI Gene IDs (``GeneID:1234`` or bare digits).
_GENE_ID_PATTERNS = {
    "Ensembl": re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$"),
    "NCBI Gene": re.compile(r"^(GeneID:)?\d+$"),
}
#: Above this share of identifiers among the gene names, the names are identifiers. Symbol
#: matrices carry a few IDs where a gene has no symbol (the Wu 2020 demo: 135 ``GeneID:`` names
#: of 30,727, 0.4%; Seurat objects keep the ENSG IDs of unnamed genes); an ID matrix is all IDs.
#: Half separates them with room either side.
MAX_ID_SHARE = 0.5

#: Where the symbols come from, by reader: the fix named in the message.
_SYMBOL_FIX = {
    "h5ad": "set reader_options.symbol_column to the var column that holds gene symbols",
    "tenx_mtx": (
        "the features file (features.tsv / genes.tsv) must hold the gene symbol in its second "
        "column: use the provider's features file with symbols, or one annotated with them"
    ),
    "tenx_h5": "the h5 file's feature names must be gene symbols: use a file annotated with them",
}
_SYMBOL_FIX_TABLE = (
    "the table's gene labels must be gene symbols: use the provider's table with symbols, or map "
    "the IDs to symbols (e.g. Ensembl BioMart) before ingest"
)


def _id_kind(names: pd.Index) -> tuple[str | None, float, list[str]]:
    """The kind of gene identifier most of `names` are (None: symbols), its share, examples."""
    best, best_share, examples = None, 0.0, []
    for kind, pattern in _GENE_ID_PATTERNS.items():
        hits = np.asarray(names.str.match(pattern), dtype=bool)
        share = float(hits.mean()) if len(names) else 0.0
        if share > best_share:
            best, best_share, examples = kind, share, list(names[hits][:3])
    return best, best_share, examples


def _symbol_columns(var: pd.DataFrame) -> list[str]:
    """var columns whose values look like gene symbols: mostly distinct, mostly not IDs."""
    found = []
    for column in var.columns:
        values = var[column]
        if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
            continue
        values = pd.Index(values.astype(str))
        if values.nunique() < 0.5 * len(values) or not values.str.contains("[A-Za-z]").all():
            continue
        if _id_kind(values)[1] <= 0.1:
            found.append(column)
    return found


def check_gene_identifiers(adata: ad.AnnData, *, reader: str, dataset: str, path: str) -> str:
    """Stop when the gene names are Ensembl or NCBI Gene IDs instead of symbols, or map them.

    texflow's signatures and markers are gene symbols: with IDs no marker is found, and the
    organism check misreads ``GeneID:`` as mouse capitalisation. An h5ad file that carries the
    symbols too, in exactly one var column, is mapped: the symbols become the gene names, the
    IDs go to ``var["gene_ids"]``, and the log says which column was used (a warning, so the
    choice is never silent). Otherwise the message names the fix for the reader (`_SYMBOL_FIX`;
    for an h5ad file with several symbol-like columns, each of them).

    Parameters
    ----------
    adata
        The matrix as read. Writes ``var_names`` and ``var['gene_ids']`` when symbols are mapped.
    reader
        The dataset's reader, which decides the fix the message names.
    dataset, path
        Dataset id and the matrix file(s), for error and log messages.

    Returns
    -------
    The var column the symbols were taken from ("" when the names were symbols already).
    """
    names = pd.Index(adata.var_names.astype(str))
    kind, share, examples = _id_kind(names)
    if kind is None or share <= MAX_ID_SHARE:
        if kind is not None and share > 0:
            logger.info("%.1f%% of gene names are %s IDs (e.g. %s)", 100 * share, kind, examples[0])
        return ""
    fix = _SYMBOL_FIX.get(reader, _SYMBOL_FIX_TABLE)
    if reader == "h5ad":
        candidates = _symbol_columns(adata.var)
        if len(candidates) == 1:
            column = candidates[0]
            if "gene_ids" not in adata.var:
                adata.var["gene_ids"] = names.to_numpy()
            adata.var_names = pd.Index(adata.var[column].astype(str).to_numpy())
            logger.warning(
                "dataset %s, file %s: the gene names are %s IDs (%.0f%% of %d); the gene symbols "
                "are taken from var column %r, the only column of symbols in the file (the IDs "
                "are kept in var['gene_ids']; reader_options.symbol_column names a column "
                "explicitly)",
                dataset,
                path,
                kind,
                100 * share,
                len(names),
                column,
            )
            return column
        if candidates:
            fix += (
                f" (here one of the var columns that hold symbols: "
                f"{', '.join(candidates)}; texflow does not choose between them)"
            )
        else:
            fix += f" (var has no such column: {list(adata.var.columns) or 'no columns'})"
    raise InputDataError(
        f"the gene names are {kind} IDs, not gene symbols: {share:.0%} of {len(names):,} "
        f"(e.g. {', '.join(examples)}); texflow's signatures and markers are symbols, so no "
        f"marker would be found. Fix: {fix}",
        dataset=dataset,
        path=path,
    )


# -------------------------------------------------------------------------------- organism check

_ENSEMBL_HUMAN = re.compile(r"^ENSG\d+")
_ENSEMBL_MOUSE = re.compile(r"^ENSMUSG\d+")
# Minimum number of informative symbols before the organism check is trusted
MIN_SYMBOLS_FOR_ORGANISM = 50
# Share of informative symbols that must agree before an organism is inferred. Human symbols
# are upper case (CD8A) except ~4% C1orf112-style names; mouse symbols are capitalised (Cd8a)
# except a few like H2-K1: 80% leaves room for both exceptions.
ORGANISM_AGREEMENT = 0.8


def infer_organism(symbols: list[str], gene_ids: list[str] | None = None) -> tuple[str | None, str]:
    """Guess human or mouse from gene symbol case (and Ensembl prefixes): (guess, evidence)."""
    upper, capital, examples = 0, 0, {"human": [], "mouse": []}
    for symbol in symbols:
        letters = [c for c in symbol if c.isalpha()]
        if len(letters) < 2 or symbol.startswith("ENS"):
            continue
        if symbol.startswith("mt-") or (symbol[0].isupper() and any(c.islower() for c in letters)):
            capital += 1
            if len(examples["mouse"]) < 5:
                examples["mouse"].append(symbol)
        elif all(c.isupper() for c in letters):
            upper += 1
            if len(examples["human"]) < 5:
                examples["human"].append(symbol)
    n = upper + capital
    parts = []
    guess = None
    if n >= MIN_SYMBOLS_FOR_ORGANISM:
        parts.append(
            f"{upper} of {n} gene symbols ({upper / n:.0%}) are upper case as in human "
            f"(e.g. {', '.join(examples['human'][:3]) or '-'}), {capital} ({capital / n:.0%}) are "
            f"capitalised as in mouse (e.g. {', '.join(examples['mouse'][:3]) or '-'})"
        )
        if upper / n >= ORGANISM_AGREEMENT:
            guess = "human"
        elif capital / n >= ORGANISM_AGREEMENT:
            guess = "mouse"
    if gene_ids:
        human = sum(bool(_ENSEMBL_HUMAN.match(g)) for g in gene_ids)
        mouse = sum(bool(_ENSEMBL_MOUSE.match(g)) for g in gene_ids)
        if human + mouse >= MIN_SYMBOLS_FOR_ORGANISM:
            parts.append(f"{human} ENSG (human) and {mouse} ENSMUSG (mouse) gene IDs")
            if human / (human + mouse) >= ORGANISM_AGREEMENT:
                guess = guess or "human"
                guess = guess if guess == "human" else None
            elif mouse / (human + mouse) >= ORGANISM_AGREEMENT:
                guess = guess or "mouse"
                guess = guess if guess == "mouse" else None
    return guess, "; ".join(parts) or f"only {n} informative gene symbols"


def check_organism(adata: ad.AnnData, *, organism: str, dataset: str, path: str) -> None:
    """Stop when the genes say another organism than the dataset config does.

    Parameters
    ----------
    adata
        The matrix, its symbols unique (``var['gene_symbol']`` is used where present) and
        ``var['gene_ids']`` when known; not changed.
    organism
        The dataset file's ``organism``: human or mouse.
    dataset, path
        Dataset id and the matrix file(s), for the error message.
    """
    symbols = list(adata.var.get("gene_symbol", adata.var_names).astype(str))
    gene_ids = list(adata.var["gene_ids"].astype(str)) if "gene_ids" in adata.var else None
    guess, evidence = infer_organism(symbols, gene_ids)
    if guess is None:
        logger.warning("organism %s could not be confirmed from the genes (%s)", organism, evidence)
    elif guess != organism:
        raise InputDataError(
            f"the dataset file says organism: {organism}, but the genes look {guess}: {evidence}. "
            "Fix 'organism' in the dataset file or check that the right files were downloaded",
            dataset=dataset,
            path=path,
        )
    else:
        logger.info("organism %s confirmed: %s", organism, evidence)


# ------------------------------------------------------------------------------------ metadata


def join_metadata(
    adata: ad.AnnData,
    table: pd.DataFrame,
    *,
    join_on: str | None,
    on_unmatched: str,
    row_filter: Mapping[str, object] | None,
    dataset: str,
    path: str,
    ignore_case: bool = False,
) -> ad.AnnData:
    """Attach the rows of a per-cell metadata `table` to the cells of `adata` by cell ID.

    Every cell must find its row: a join that matches no cell, or only some (``on_unmatched:
    error``, the default), stops with how many matched; ``on_unmatched: drop`` keeps only the
    annotated cells and says how many were dropped. Metadata rows without a cell are fine (a
    metadata file often covers several matrices). Returns the (possibly subset) AnnData with
    the metadata columns added to ``obs`` (a matrix column of the same name becomes
    ``<name>_matrix``).

    Parameters
    ----------
    adata
        The matrix, its cell IDs as ``obs_names``.
    table
        The per-cell metadata as a metadata reader returns it.
    join_on
        ``metadata.join_on``: the column of cell IDs; None: the first column.
    on_unmatched
        ``metadata.on_unmatched``: ``error`` or ``drop`` (cells without metadata).
    row_filter
        ``metadata.filter``: column -> value(s) a row must have to be used.
    dataset, path
        Dataset id and the metadata file, for error messages.
    ignore_case
        ``metadata.ignore_case``: compare cell IDs without regard to letter case
        (``P18_pre-Tx`` in a file name, ``P18_Pre-Tx`` in the metadata); the cells keep the
        matrix's IDs, and matrix IDs that differ only in case stop.
    """
    key = join_on or table.columns[0]
    table = metadata_by_cell_id(
        table, join_on=join_on, row_filter=row_filter, ignore_case=ignore_case, dataset=dataset,
        path=path,
    )  # fmt: skip
    lookup = _fold_case(adata.obs_names, dataset=dataset, path=path) if ignore_case else None
    matched = _cells_with_metadata(
        adata.obs_names, table, key, on_unmatched=on_unmatched, dataset=dataset, path=path,
        lookup=lookup,
    )  # fmt: skip
    if not matched.all():
        adata = adata[matched].copy()
    rows = table.loc[adata.obs_names if lookup is None else lookup[matched]]
    obs = adata.obs.copy()
    obs.columns = [f"{c}_matrix" if c in rows.columns else c for c in obs.columns]
    adata.obs = pd.concat([obs, rows.set_index(adata.obs_names)], axis=1)
    return adata


def metadata_by_cell_id(
    table: pd.DataFrame,
    *,
    join_on: str | None,
    row_filter: Mapping[str, object] | None,
    ignore_case: bool,
    dataset: str,
    path: str,
) -> pd.DataFrame:
    """The rows of the metadata `table` that ``metadata.filter`` keeps, indexed by cell ID (the
    `join_on` column, default the first; case-folded with `ignore_case`). Duplicate IDs stop."""
    table = _filter_rows(table, row_filter or {}, dataset=dataset, path=path)
    key = join_on or table.columns[0]
    return _index_by_cell_id(table, key, ignore_case=ignore_case, dataset=dataset, path=path)


def _fold_case(cells: pd.Index, *, dataset: str, path: str) -> pd.Index:
    """`cells` case-folded; two IDs that differ only in case stop (they would share a row)."""
    folded = cells.str.casefold()
    if folded.has_duplicates:
        twins = cells[folded.duplicated(keep=False)]
        raise InputDataError(
            f"metadata.ignore_case: {len(twins)} matrix cell IDs differ only in letter case (e.g. "
            f"{', '.join(map(str, twins[:4]))}), so they cannot be told apart; set "
            "metadata.ignore_case: false",
            dataset=dataset,
            path=path,
        )
    return folded


def _filter_rows(
    table: pd.DataFrame, row_filter: Mapping[str, object], *, dataset: str, path: str
) -> pd.DataFrame:
    """The rows of `table` whose value in each column of `row_filter` is one it allows."""
    for column, allowed in row_filter.items():
        if column not in table:
            raise InputDataError(
                f"metadata.filter names column {column!r}, not in the metadata "
                f"({list(table.columns)})",
                dataset=dataset,
                path=path,
            )
        allowed = [allowed] if isinstance(allowed, str | int | float) else list(allowed)
        before = len(table)
        table = table[table[column].isin([str(a) for a in allowed])]
        logger.info(
            "metadata.filter %s in %s: %d of %d rows kept", column, allowed, len(table), before
        )
    return table


def _index_by_cell_id(
    table: pd.DataFrame, key: str, *, ignore_case: bool = False, dataset: str, path: str
) -> pd.DataFrame:
    """`table` indexed by its cell-ID column `key` (rows without an ID dropped; case-folded with
    `ignore_case`); an ID that occurs twice stops (the join would be ambiguous)."""
    if key not in table:
        raise InputDataError(
            f"metadata.join_on {key!r} is not a column of the metadata (columns: "
            f"{list(table.columns)})",
            dataset=dataset,
            path=path,
        )
    ids = table[key].astype("string")
    if ids.isna().any():
        table, ids = table[ids.notna()], ids[ids.notna()]
    if ignore_case:
        ids = ids.str.casefold()
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise InputDataError(
            f"{len(duplicated)} cell IDs occur more than once in metadata column {key!r} (e.g. "
            f"{', '.join(map(str, duplicated[:5]))}); the join would be ambiguous (use "
            "metadata.filter to keep the rows of this matrix only)",
            dataset=dataset,
            path=path,
        )
    return table.set_index(pd.Index(ids.astype(str), name=None))


def _cells_with_metadata(
    cells: pd.Index,
    table: pd.DataFrame,
    key: str,
    *,
    on_unmatched: str,
    dataset: str,
    path: str,
    lookup: pd.Index | None = None,
) -> np.ndarray:
    """Which `cells` have a row in `table` (looked up as `lookup`, e.g. case-folded, when
    given); none, or only some unless ``on_unmatched: drop``, stops."""
    matched = (cells if lookup is None else lookup).isin(table.index)
    n_matched, n_cells = int(matched.sum()), len(cells)
    examples = (
        f"matrix cell IDs look like {', '.join(map(str, cells[:3]))}; metadata {key!r} values look "
        f"like {', '.join(map(str, table.index[:3]))}"
    )
    if n_matched == 0:
        raise InputDataError(
            f"none of the {n_cells} cells of the matrix is found in metadata column {key!r} "
            f"({examples})",
            dataset=dataset,
            path=path,
        )
    if n_matched < n_cells:
        problem = (
            f"only {n_matched} of {n_cells} cells ({n_matched / n_cells:.1%}) are found in "
            f"metadata column {key!r}; {n_cells - n_matched} have no metadata (e.g. "
            f"{', '.join(map(str, cells[~matched][:3]))})"
        )
        if on_unmatched != "drop":
            raise InputDataError(
                problem + "; set metadata.on_unmatched: drop to analyse only the annotated cells",
                dataset=dataset,
                path=path,
            )
        logger.warning("%s: dropping them (metadata.on_unmatched: drop)", problem)
    unused = len(table) - n_matched
    if unused:
        logger.info("%d metadata rows describe cells that are not in this matrix (ignored)", unused)
    logger.info("metadata joined on %r for %d of %d cells", key, n_matched, n_cells)
    return matched


def _strings(column: pd.Series) -> pd.Series:
    """A column as strings with missing values as NA (categories, numbers and bools alike)."""
    values = column.astype(object)
    return values.astype(str).str.strip().where(~missing_labels(column), pd.NA).astype("string")


def _list(values: pd.Series, limit: int = 10) -> str:
    unique = list(dict.fromkeys(map(str, values)))
    more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
    return ", ".join(repr(v) for v in unique[:limit]) + more


#: obs column of the 10x readers holding each cell's GEO sample accession (GSM123 of
#: ``GSM123_tumour1_matrix.mtx.gz``): the default sample when the dataset file maps none
GSM_COLUMN = "gsm"


def _has_gsm(obs: pd.DataFrame) -> bool:
    """True when every cell carries a GSM accession from its file name (10x readers)."""
    if GSM_COLUMN not in obs:
        return False
    values = _strings(obs[GSM_COLUMN])
    return bool(values.notna().all() and values.str.fullmatch(r"GSM\d+").all())


@dataclass(frozen=True)
class _FieldRules:
    """How the dataset file's ``metadata`` section makes the contract fields (checked)."""

    #: field -> the raw column it comes from
    columns: dict[str, str]
    #: field -> a regular expression with one group, applied to the raw value
    patterns: dict[str, str]
    #: field -> {raw value: harmonised value or None}
    values: dict[str, Mapping]
    #: field -> one value for every cell
    constants: dict[str, object]


def _field_rules(mapping: Mapping, *, dataset: str) -> _FieldRules:
    """The rules of `mapping`; patterns or values without a column, or a field given both a
    column and a constant, stop."""
    rules = _FieldRules(
        columns=dict(mapping.get("columns") or {}),
        patterns=dict(mapping.get("patterns") or {}),
        values=dict(mapping.get("values") or {}),
        constants=dict(mapping.get("constants") or {}),
    )
    for field in set(rules.patterns) | set(rules.values):
        if field not in rules.columns:
            raise TexflowError(
                f"metadata.patterns/values give {field!r} but metadata.columns does not say which "
                "column it comes from",
                dataset=dataset,
            )
    both = set(rules.columns) & set(rules.constants)
    if both:
        raise TexflowError(
            f"{sorted(both)} given both as metadata.columns and metadata.constants; choose one",
            dataset=dataset,
        )
    return rules


def harmonise_metadata(
    obs: pd.DataFrame, mapping: Mapping, *, dataset: str, path: str
) -> pd.DataFrame:
    """Contract ``obs`` columns from the raw per-cell columns, as the dataset config says.

    For each of ``sample``, ``patient``, ``response``, ``timepoint``, ``tissue``:
    ``metadata.columns[field]`` names the raw column; ``metadata.patterns[field]`` (a regular
    expression with one group) extracts part of it (``^(?:Pre|Post)_(P\\d+)`` -> ``P1``); then
    ``metadata.values[field]`` maps raw values to harmonised ones (null -> NA). With a values
    map, every raw value must be in it: an unmapped value stops with its name, never a guess.
    ``metadata.constants[field]`` sets one value for every cell. ``response`` must end as
    ``responder`` / ``non_responder`` / NA. Fields without a source are NA, except ``sample``
    of cells read from GSM-prefixed 10x files (a ``GSE*_RAW.tar``): their GSM accession (logged).

    Parameters
    ----------
    obs
        The raw per-cell columns (the matrix's, joined with the metadata file's).
    mapping
        The dataset config's ``metadata`` section.
    dataset, path
        Dataset id and the metadata file, for error messages.

    Returns
    -------
    The new obs: contract columns first, then the raw columns (those named like a contract or
    later-stage column are renamed ``<name>_orig``), as strings/categories.
    """
    rules = _field_rules(mapping, dataset=dataset)
    harmonised = {
        field: _contract_field(obs, field, rules, dataset=dataset, path=path)
        for field in CONTRACT_FIELDS
    }
    _check_response(harmonised[RESPONSE], dataset=dataset, path=path)
    result = _with_raw_columns(harmonised, obs)
    _log_contract_fields(result)
    return result


def _contract_field(
    obs: pd.DataFrame, field: str, rules: _FieldRules, *, dataset: str, path: str
) -> pd.Series:
    """One contract field: from its raw column, its constant, the GSM accession (``sample``
    only), or NA."""
    if field in rules.columns:
        return _field_from_column(obs, field, rules, dataset=dataset, path=path)
    if field in rules.constants:
        return pd.Series(str(rules.constants[field]), index=obs.index, dtype="string")
    if field == "sample" and _has_gsm(obs):
        return _samples_from_gsm(obs)
    return pd.Series(pd.NA, index=obs.index, dtype="string")


def _field_from_column(
    obs: pd.DataFrame, field: str, rules: _FieldRules, *, dataset: str, path: str
) -> pd.Series:
    """The raw column of `field`, its pattern's group extracted, its values mapped."""
    column = rules.columns[field]
    if column not in obs:
        raise InputDataError(
            f"metadata.columns.{field} names column {column!r}, which is not in the cell "
            f"metadata (columns: {list(obs.columns)})",
            dataset=dataset,
            path=path,
        )
    raw = _strings(obs[column])
    if field in rules.patterns:
        raw = _extract(raw, field, rules.patterns[field], column=column, dataset=dataset, path=path)
    if field in rules.values:
        raw = _map_values(
            raw, field, rules.values[field], column=column, dataset=dataset, path=path
        )
    return raw


def _extract(
    raw: pd.Series, field: str, pattern: str, *, column: str, dataset: str, path: str
) -> pd.Series:
    """The group of `pattern` in each value; a value it does not match stops."""
    regex = re.compile(pattern)
    if regex.groups != 1:
        raise TexflowError(
            f"metadata.patterns.{field} {pattern!r} must have exactly one group",
            dataset=dataset,
        )
    extracted = raw.str.extract(regex, expand=False).astype("string")
    unmatched = raw.notna() & extracted.isna()
    if unmatched.any():
        raise InputDataError(
            f"metadata.patterns.{field} {pattern!r} does not match "
            f"{int(unmatched.sum())} values of column {column!r}: "
            f"{_list(raw[unmatched])}",
            dataset=dataset,
            path=path,
        )
    return extracted


def _map_values(
    raw: pd.Series, field: str, mapping: Mapping, *, column: str, dataset: str, path: str
) -> pd.Series:
    """Each value mapped by the dataset file's `mapping`; a value it does not name stops."""
    table = {str(k): v for k, v in mapping.items()}
    unmapped = raw.notna() & ~raw.isin(list(table))
    if unmapped.any():
        raise InputDataError(
            f"{field}: raw values {_list(raw[unmapped])} of column {column!r} "
            f"({int(unmapped.sum())} cells) are not in metadata.values.{field} "
            f"(which maps {_list(pd.Series(list(table)))}); add them -- texflow never "
            "guesses a label",
            dataset=dataset,
            path=path,
        )
    return raw.map(lambda v: table.get(v) if v is not pd.NA else pd.NA).astype("string")


def _samples_from_gsm(obs: pd.DataFrame) -> pd.Series:
    """Each cell's GSM accession as its sample (cells read from GSM-prefixed 10x files)."""
    samples = _strings(obs[GSM_COLUMN])
    logger.info(
        "obs sample: not mapped in the dataset file, so each cell's sample is the GSM "
        "accession of its file-name prefix (obs %s: %s), one per 10x run: QC thresholds "
        "and Scrublet doublets are computed per run, not pooled. Set "
        "metadata.columns.sample (e.g. to the column sample, the prefix without the "
        "accession) or metadata.constants.sample to choose otherwise",
        GSM_COLUMN,
        _list(samples.drop_duplicates()),
    )
    return samples


def _check_response(response: pd.Series, *, dataset: str, path: str) -> None:
    wrong = response.notna() & ~response.isin(RESPONSE_VALUES)
    if wrong.any():
        raise InputDataError(
            f"response values {_list(response[wrong])} are not {' / '.join(RESPONSE_VALUES)}; map "
            "them with metadata.values.response (null for unknown)",
            dataset=dataset,
            path=path,
        )


def _with_raw_columns(harmonised: Mapping[str, pd.Series], obs: pd.DataFrame) -> pd.DataFrame:
    """The contract fields as categories, then `obs`'s columns (``<name>_orig`` when a stage
    writes that name)."""
    result = pd.DataFrame(
        {field: values.astype("category") for field, values in harmonised.items()}, index=obs.index
    )
    for column in obs.columns:
        name = (
            f"{column}_orig"
            if column in RESERVED_OBS or column.startswith(SCORE_PREFIX)
            else column
        )
        result[name] = _serialisable(obs[column])
    return result


def _log_contract_fields(obs: pd.DataFrame) -> None:
    for field in CONTRACT_FIELDS:
        counts = obs[field].value_counts(dropna=False)
        logger.info(
            "obs %s: %s",
            field,
            ", ".join(f"{k if pd.notna(k) else 'NA'}={v}" for k, v in counts.head(12).items())
            + (f" (+{len(counts) - 12} more)" if len(counts) > 12 else ""),
        )


def _serialisable(column: pd.Series) -> pd.Series:
    """A raw obs column in a form h5ad can write: numbers and bools as they are, else categories."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column
    return _strings(column).astype("category")


# -------------------------------------------------------------------------------- provenance


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    versions = {"python": platform.python_version(), "texflow": __version__}
    for package in ("scanpy", "anndata", "numpy", "scipy", "pandas", "h5py"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _without_none(value):
    """Drop None (h5ad cannot store it) from nested dicts/lists."""
    if isinstance(value, Mapping):
        return {str(k): _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value if v is not None]
    return value


def provenance(config: Mapping, manifest: list[FetchedFile], *, n_renamed_genes: int) -> dict:
    """``uns["texflow"]`` for raw.h5ad: dataset, organism, value type, sources, versions, params.

    Parameters
    ----------
    config
        The validated dataset config.
    manifest
        The download manifest's rows (:func:`texflow.manifest.read_manifest`).
    n_renamed_genes
        How many genes :func:`make_gene_symbols_unique` renamed.
    """
    sources = {}
    for row in manifest:
        entry = {"url": row.url, "filename": row.filename, "sha256": row.sha256, "bytes": row.bytes}
        if row.downloaded_at:
            entry["downloaded_at"] = row.downloaded_at
        sources[row.name] = entry
    params = {
        "reader": config["reader"],
        "reader_options": config.get("reader_options") or {},
        "metadata": config.get("metadata") or {},
        "duplicate_genes": "most expressed keeps the symbol, others suffixed -1, -2, ...",
        "n_genes_renamed": n_renamed_genes,
    }
    return _without_none(
        {
            "dataset": config["id"],
            "title": config.get("title", ""),
            "organism": config["organism"],
            "value_type": config["value_type"],
            "cd8_sorted": bool(config.get("cd8_sorted", False)),
            "simulated": bool(config.get("simulated", False)),
            "sources": sources,
            "versions": _versions(),
            "params": {"ingest": params},
            "skipped": {},
        }
    )


# ----------------------------------------------------------------------------------- entry point


def read_dataset(*, manifest: str | Path, config: Mapping) -> ad.AnnData:
    """Read one dataset into the texflow AnnData contract.

    Parameters
    ----------
    manifest
        ``resources/downloads/{dataset}/manifest.tsv`` written by the fetch stage; the files it
        lists sit beside it.
    config
        The validated dataset config (``config/datasets/<id>.yaml``).

    Returns
    -------
    AnnData with cells x genes float32 CSR ``X`` (values as given), ``layers['counts']`` (the
    X matrix itself, `share_counts`) when ``value_type`` is counts, ``obs`` with ``sample``,
    ``patient``, ``response``, ``timepoint``, ``tissue`` then the raw per-cell columns, unique
    gene symbols as ``var_names`` (``gene_ids`` when known), and ``uns['texflow']`` (dataset,
    organism, value_type, sources with sha256/bytes, versions, params, skipped).

    `ingest_dataset` writes the same to a file without the matrix in memory.
    """
    adata, matrix, rows = _read_dataset(manifest=manifest, config=config)
    adata.X = matrix.take(rows)
    if config["value_type"] == "counts":
        share_counts(adata)  # one matrix until the cluster stage normalises X
    return adata


def ingest_dataset(*, manifest: str | Path, config: Mapping, path: str | Path) -> None:
    """Write the dataset `read_dataset` returns to the h5ad file `path` (as
    `texflow.utils.write_h5ad` writes it), its matrix copied chunk by chunk of rows.

    A matrix the reader leaves in its file (an h5ad source's CSR X or layer) is then never
    whole in memory: checked (`check_matrix`), summed for duplicate gene symbols and written a
    chunk of rows at a time; 1M cells x 20k genes hold ~2.5e9 non-zeros, ~30 GB as scipy CSR
    (int64 indices past 2^31 non-zeros) on a 24 GB machine. Atomic.
    """
    adata, matrix, rows = _read_dataset(manifest=manifest, config=config)
    if config["value_type"] == "counts":  # X holds the counts, once (`utils.write_h5ad`)
        adata.uns["texflow"]["counts_layer"] = COUNTS_IN_X
    write_h5ad_by_rows(adata, path, chunks=({"X": block} for block in matrix.chunks(rows)))


def _read_dataset(
    *, manifest: str | Path, config: Mapping
) -> tuple[ad.AnnData, InMemoryMatrix | OnDiskMatrix, np.ndarray | None]:
    """`read_dataset` without X: the cells and genes of the contract, the reader's matrix
    source and the rows of it those cells are (None: all, in order)."""
    dataset = config["id"]
    rows = read_manifest(manifest, dataset=dataset)
    mapping = dict(config.get("metadata") or {})
    files = _downloaded_files(rows, manifest=Path(manifest), config=config, mapping=mapping)
    metadata_source = mapping.get("source")
    matrix_files = {name: path for name, path in files.items() if name != metadata_source}
    matrix_label = ", ".join(str(p) for p in matrix_files.values())

    metadata_label, metadata, keep_cells = matrix_label, None, None
    if metadata_source is not None:
        metadata_label = str(files[metadata_source])
        if _reads_only_annotated_cells(config, mapping):
            metadata = _read_metadata_file(files[metadata_source], mapping=mapping, dataset=dataset)
            keep_cells = _annotated_cells(
                metadata, mapping=mapping, dataset=dataset, path=metadata_label
            )
    adata, matrix, symbols_from = _read_matrix(
        matrix_files, config=config, path=matrix_label, keep_cells=keep_cells
    )
    cells = adata.obs_names
    if metadata_source is not None:
        if metadata is None:
            metadata = _read_metadata_file(files[metadata_source], mapping=mapping, dataset=dataset)
        adata = _join_metadata(
            adata, metadata, mapping=mapping, dataset=dataset, path=metadata_label
        )
    # the join keeps the annotated cells in the matrix's order; cell IDs are unique (readers)
    kept = None if adata.n_obs == len(cells) else cells.get_indexer(adata.obs_names)
    adata.obs = harmonise_metadata(adata.obs, mapping, dataset=dataset, path=metadata_label)

    n_renamed = make_gene_symbols_unique(adata, matrix=matrix, rows=kept)
    check_organism(adata, organism=config["organism"], dataset=dataset, path=matrix_label)
    adata.obs_names = adata.obs_names.astype(str)
    adata.uns["texflow"] = provenance(config, rows, n_renamed_genes=n_renamed)
    if symbols_from:
        adata.uns["texflow"]["params"]["ingest"]["gene_symbols_from_var_column"] = symbols_from
    logger.info("ingested %s: %d cells x %d genes", dataset, adata.n_obs, adata.n_vars)
    return adata, matrix, kept


def _downloaded_files(
    rows: list[FetchedFile], *, manifest: Path, config: Mapping, mapping: Mapping
) -> dict[str, Path]:
    """Source name -> downloaded file, for every row of the manifest; a source of the dataset
    file that is not in the manifest, or a ``metadata.source`` that is no source, stops."""
    dataset = config["id"]
    files = {row.name: manifest.parent / row.filename for row in rows}
    missing = [s["name"] for s in config["sources"] if s["name"] not in files]
    if missing:
        raise InputDataError(
            f"sources {missing} of the dataset file are not in the download manifest (rerun fetch)",
            dataset=dataset,
            path=manifest,
        )
    metadata_source = mapping.get("source")
    if metadata_source is not None and metadata_source not in files:
        raise TexflowError(
            f"metadata.source {metadata_source!r} is not one of the sources ({', '.join(files)})",
            dataset=dataset,
        )
    return files


def _reads_only_annotated_cells(config: Mapping, mapping: Mapping) -> bool:
    """Whether the reader can skip the cells the join would drop anyway (``on_unmatched: drop``
    and a reader that takes `keep_cells`: raw droplet matrices, matrices larger than memory)."""
    reader = get_reader(config["reader"], dataset=config["id"])
    return (
        mapping.get("on_unmatched", "error") == "drop"
        and "keep_cells" in inspect.signature(reader).parameters
    )


def _annotated_cells(
    metadata: pd.DataFrame, *, mapping: Mapping, dataset: str, path: str
) -> Callable[[str], bool]:
    """Whether a matrix cell ID has a row in the metadata (after ``metadata.filter``)."""
    ignore_case = bool(mapping.get("ignore_case", False))
    annotated = frozenset(
        metadata_by_cell_id(
            metadata, join_on=mapping.get("join_on"), row_filter=mapping.get("filter"),
            ignore_case=ignore_case, dataset=dataset, path=path,
        ).index
    )  # fmt: skip
    logger.info(
        "reading only the %d cells of %s (metadata.on_unmatched: drop)", len(annotated), path
    )
    if ignore_case:
        return lambda cell: cell.casefold() in annotated
    return annotated.__contains__


def _read_matrix(
    files: dict[str, Path],
    *,
    config: Mapping,
    path: str,
    keep_cells: Callable[[str], bool] | None = None,
) -> tuple[ad.AnnData, InMemoryMatrix | OnDiskMatrix, str]:
    """The cells and genes (no X) and the matrix read by the dataset's reader (only the cells
    `keep_cells` accepts, when given), its values and gene names checked; and the var column
    gene symbols were taken from ("" when the names were symbols already)."""
    dataset = config["id"]
    reader = get_reader(config["reader"], dataset=dataset)
    logger.info("reading %s with reader %s", path, config["reader"])
    extra = {} if keep_cells is None else {"keep_cells": keep_cells}
    adata, matrix = split_matrix(
        reader(files, dict(config.get("reader_options") or {}), dataset, **extra)
    )
    logger.info("matrix: %d cells x %d genes", adata.n_obs, adata.n_vars)
    check_matrix(matrix, value_type=config["value_type"], dataset=dataset, path=path)
    symbols_from = check_gene_identifiers(
        adata, reader=config["reader"], dataset=dataset, path=path
    )
    return adata, matrix, symbols_from


def _read_metadata_file(file: Path, *, mapping: Mapping, dataset: str) -> pd.DataFrame:
    """The per-cell metadata `file`, read by the ``metadata.format`` reader."""
    read_metadata = get_metadata_reader(mapping.get("format", "table"), dataset=dataset)
    return read_metadata(file, dict(mapping.get("options") or {}), dataset)


def _join_metadata(
    adata: ad.AnnData, metadata: pd.DataFrame, *, mapping: Mapping, dataset: str, path: str
) -> ad.AnnData:
    """`adata` with the per-cell rows of `metadata` joined (``metadata.*`` options)."""
    return join_metadata(
        adata,
        metadata,
        join_on=mapping.get("join_on"),
        on_unmatched=mapping.get("on_unmatched", "error"),
        row_filter=mapping.get("filter"),
        dataset=dataset,
        path=path,
        ignore_case=bool(mapping.get("ignore_case", False)),
    )
