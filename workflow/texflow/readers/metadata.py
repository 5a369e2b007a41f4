"""Per-cell metadata readers: ``geo_template`` and ``table``. Both return a DataFrame of strings
(missing = NA) with the file's own column names, stripped of surrounding blanks."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..contract import CELL_ID
from ..errors import InputDataError
from . import register_metadata_reader
from ._common import _guess_sep_name, open_text, reading, split_fields

logger = logging.getLogger(__name__)


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(lambda col: col.str.strip() if col.dtype == object else col)
    return frame.replace({"": pd.NA})


@register_metadata_reader("geo_template")
def read_geo_template(path: Path, options: dict, dataset: str) -> pd.DataFrame:
    """The GEO high-throughput sequencing submission template used as a per-cell table.

    A free-text preamble (SERIES section), then the SAMPLES table whose header line starts with
    ``Sample name`` (option ``header_starts_with``), one row per cell, until the first blank
    line; protocol sections follow and are ignored. Fields may carry trailing tabs and quotes;
    the encoding is latin-1 by default (option ``encoding``). Column names are kept as
    written, typos included (GSE120575: ``characteristics: patinet ID (Pre=baseline; Post= on
    treatment)``).
    """
    marker_text = options.get("header_starts_with", "Sample name").strip()
    marker = marker_text.lower()
    encoding = options.get("encoding", "latin-1")
    header, rows = None, []
    with (
        reading(
            path, dataset, "reading the GEO template", encoding_option="metadata.options.encoding"
        ),
        open_text(path, dataset, encoding=encoding) as handle,
    ):
        for line in handle:
            fields = [f.strip().strip('"').strip() for f in split_fields(line, "\t")]
            if header is None:
                if fields and fields[0].lower() == marker:
                    header = fields
                continue
            if not any(fields):
                break  # the SAMPLES table ends at the first blank line
            rows.append((fields + [""] * len(header))[: len(header)])
    if header is None:
        raise InputDataError(
            f"no line starting with {marker_text!r}: this is not a GEO submission template "
            "(set metadata.format: table for a plain table)",
            dataset=dataset,
            path=path,
        )
    if not rows:
        raise InputDataError(
            "the GEO template's sample table has no rows", dataset=dataset, path=path
        )
    frame = _tidy(pd.DataFrame(rows, columns=header, dtype=object))
    logger.info(
        "%s: GEO template with %d rows, columns %s", path.name, len(frame), list(frame.columns)
    )
    return frame


@register_metadata_reader("table")
def read_table(path: Path, options: dict, dataset: str) -> pd.DataFrame:
    """A plain tsv/csv table, gzip or not, one row per cell, with a header line.

    Options: ``sep`` (default: by file name, ``.csv`` -> comma, otherwise tab), ``encoding``
    (utf-8), ``comment`` (a comment character), ``skiprows``. A header with one field fewer
    than the rows (R's write.table) names the first column ``cell_id``.
    """
    sep = options.get("sep") or _guess_sep_name(path.name)
    encoding = options.get("encoding", "utf-8")
    with (
        reading(
            path, dataset, "reading the metadata table", encoding_option="metadata.options.encoding"
        ),
        open_text(path, dataset, encoding=encoding) as handle,
    ):
        frame = pd.read_csv(
            handle,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            comment=options.get("comment"),
            skiprows=options.get("skiprows"),
        )
    if frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex):
        # pandas took the first column as the index because the header is one field short
        frame = frame.rename_axis(CELL_ID).reset_index()
    frame = frame.loc[
        :, [not str(c).startswith("Unnamed:") or frame[c].ne("").any() for c in frame.columns]
    ]
    if frame.empty:
        raise InputDataError("the metadata table has no rows", dataset=dataset, path=path)
    return _tidy(frame)
