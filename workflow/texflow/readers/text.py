"""Dense text-table readers: ``dense_table`` and ``geo_dense_two_header`` (GSE120575 layout).

Both stream the table in chunks of rows and keep only the non-zero values (CSR), so a table of
N cells x G genes needs about one chunk of dense memory plus the sparse result, not N x G
floats of pandas objects.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputDataError
from . import register_reader
from ._common import (
    check_unique_cells,
    detect_genes_axis,
    open_text,
    reading,
    split_fields,
    to_csr32,
)
from .matrix import _single_file, select_sources

logger = logging.getLogger(__name__)

# Dense float32 values held at once while parsing (about 80 MB); the sparse result grows instead.
CHUNK_VALUES = 20_000_000
# Data lines looked at to find the row labels and the number of fields per row.
PEEK_LINES = 500
ORIENTATIONS = {"auto", "genes_x_cells", "cells_x_genes"}


def _guess_sep(line: str) -> str:
    return "\t" if line.count("\t") >= line.count(",") else ","


def _header_labels(
    fields: list[str], n_data_fields: int, *, line_no: int, path: Path, dataset: str
) -> list[str]:
    """Column labels from a header line, with or without a leading corner field."""
    if len(fields) == n_data_fields:  # corner field (often empty) above the row labels
        return fields[1:]
    if len(fields) == n_data_fields - 1:  # no corner: one label per value column
        return fields
    raise InputDataError(
        f"header line {line_no} has {len(fields)} fields but the first data line has "
        f"{n_data_fields} (label + {n_data_fields - 1} values); the table is not rectangular",
        dataset=dataset,
        path=path,
    )


#: the dataset-file key that sets a table reader's encoding, named when a file does not decode
ENCODING_OPTION = "reader_options.encoding"


def read_dense_text(
    path: Path,
    *,
    dataset: str,
    header_lines: int,
    sep: str | None,
    encoding: str,
    orientation: str,
) -> tuple[sp.csr_matrix, list[str], list[str], list[list[str]]]:
    """Stream a dense table into CSR.

    Returns ``(X cells x genes, cell labels, gene labels, extra header lines)``; the extra
    header lines (after the first) are aligned with the cells.
    """
    if orientation not in ORIENTATIONS:
        raise InputDataError(
            f"reader_options.orientation must be one of {sorted(ORIENTATIONS)}, "
            f"not {orientation!r}",
            dataset=dataset,
            path=path,
        )
    with (
        reading(path, dataset, "reading the table header", encoding_option=ENCODING_OPTION),
        open_text(path, dataset, encoding=encoding) as handle,
    ):
        first = handle.readline()
        if not first.strip():
            raise InputDataError("the table is empty (no header line)", dataset=dataset, path=path)
        sep = sep or _guess_sep(first)
        headers = [split_fields(first, sep)]
        headers += [split_fields(handle.readline(), sep) for _ in range(header_lines - 1)]
        peek = [split_fields(line, sep) for line in itertools.islice(handle, PEEK_LINES)]
    peek = [fields for fields in peek if fields]
    if not peek:
        raise InputDataError("the table has a header but no data lines", dataset=dataset, path=path)
    n_fields = len(peek[0])
    if n_fields < 2:
        raise InputDataError(
            f"the first data line has a single field; is the separator {sep!r} right?",
            dataset=dataset,
            path=path,
        )
    column_labels = _header_labels(headers[0], n_fields, line_no=1, path=path, dataset=dataset)
    extra_headers = [
        _header_labels(fields, n_fields, line_no=i + 2, path=path, dataset=dataset)
        for i, fields in enumerate(headers[1:])
    ]
    row_labels = [fields[0] for fields in peek]

    if orientation == "auto":
        genes_axis, evidence = detect_genes_axis(row_labels, column_labels[:PEEK_LINES])
        if genes_axis is None:
            raise InputDataError(
                "cannot tell whether genes are the rows or the columns of this table ("
                + evidence
                + "); set reader_options.orientation to genes_x_cells or cells_x_genes",
                dataset=dataset,
                path=path,
            )
        logger.info("%s: detected genes in the %s (%s)", path.name, genes_axis, evidence)
    else:
        genes_axis = "rows" if orientation == "genes_x_cells" else "columns"
        logger.info("%s: orientation %s as configured", path.name, orientation)

    n_values = n_fields - 1
    rows_per_chunk = max(1, CHUNK_VALUES // max(n_values, 1))
    dtypes = {0: str, **{i: np.float32 for i in range(1, n_fields)}}
    blocks, labels = [], []
    with (
        reading(path, dataset, "parsing the table values", encoding_option=ENCODING_OPTION),
        open_text(path, dataset, encoding=encoding) as handle,
    ):
        chunks = pd.read_csv(
            handle,
            sep=sep,
            header=None,
            skiprows=header_lines,
            usecols=range(n_fields),  # drops the trailing empty fields some files carry
            index_col=0,
            dtype=dtypes,
            chunksize=rows_per_chunk,
            skip_blank_lines=True,
            engine="c",
        )
        for chunk in chunks:
            values = chunk.to_numpy(dtype=np.float32)
            missing = np.isnan(values)
            if missing.any():
                row = int(np.flatnonzero(missing.any(axis=1))[0])
                raise InputDataError(
                    f"missing or empty value in the row labelled {chunk.index[row]!r} (data line "
                    f"{len(labels) + row + 1}); a row is shorter than the header",
                    dataset=dataset,
                    path=path,
                )
            labels.extend(map(str, chunk.index))
            blocks.append(sp.csr_matrix(values))
    if not blocks:
        raise InputDataError("the table has no data rows", dataset=dataset, path=path)
    stacked = sp.vstack(blocks, format="csr")
    del blocks
    if genes_axis == "rows":
        return to_csr32(stacked.T.tocsr()), column_labels, labels, extra_headers
    return to_csr32(stacked), labels, column_labels, [[] for _ in extra_headers]


@register_reader("dense_table")
def read_dense_table(files: dict[str, Path], options: dict, dataset: str) -> ad.AnnData:
    """A dense text table of values, genes x cells or cells x genes, gzip or not.

    Options: ``source``; ``sep`` (default: tab or comma, whichever the header line has more
    of); ``encoding`` (default utf-8); ``orientation`` (``auto`` -- the default, detected from
    the labels and logged with the evidence --, ``genes_x_cells`` or ``cells_x_genes``).
    """
    _, path = _single_file(select_sources(files, options, dataset), dataset, "dense_table")
    X, cells, genes, _ = read_dense_text(
        path,
        dataset=dataset,
        header_lines=1,
        sep=options.get("sep"),
        encoding=options.get("encoding", "utf-8"),
        orientation=options.get("orientation", "auto"),
    )
    check_unique_cells(cells, dataset=dataset, path=path)
    return ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(cells, dtype=str)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )


@register_reader("geo_dense_two_header")
def read_geo_dense_two_header(files: dict[str, Path], options: dict, dataset: str) -> ad.AnnData:
    """The GSE120575 (Sade-Feldman 2018) layout: genes x cells with two header lines.

    Line 1 holds the cell IDs, line 2 the sample of each cell (``Pre_P1``, ``Post_P1_2``,
    sometimes with ``_T_enriched`` / ``_myeloid_enriched``), then one line per gene; both
    header lines start with an empty corner field and data lines end with a trailing tab.
    The file is latin-1. Line 2 is kept as ``obs['geo_sample']`` (or the name in option
    ``second_header``). Options: ``source``, ``sep`` (tab), ``encoding`` (latin-1),
    ``second_header``.
    """
    _, path = _single_file(select_sources(files, options, dataset), dataset, "geo_dense_two_header")
    X, cells, genes, extra = read_dense_text(
        path,
        dataset=dataset,
        header_lines=2,
        sep=options.get("sep", "\t"),
        encoding=options.get("encoding", "latin-1"),
        orientation="genes_x_cells",
    )
    check_unique_cells(cells, dataset=dataset, path=path)
    obs = pd.DataFrame(
        {options.get("second_header", "geo_sample"): extra[0]}, index=pd.Index(cells, dtype=str)
    )
    logger.info(
        "%s: %d cells in %d samples (line 2)", path.name, len(cells), obs.iloc[:, 0].nunique()
    )
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
