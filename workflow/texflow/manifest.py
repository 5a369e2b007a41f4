"""The download manifest: what the fetch stage hands to the ingest stage.

``resources/downloads/{dataset}/manifest.tsv`` lists, one row per source, the file that passed
every check of :mod:`texflow.fetch` (name, url, filename, bytes, sha256, downloaded_at); the
files sit beside it. The fetch stage writes it (and its per-source bookkeeping file in the same
format), the ingest and truth rules read it. One definition of the format, below both stages,
so neither imports the other. Standard library only: the Snakefile imports the fetch module.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import InputDataError

__all__ = ["MANIFEST_COLUMNS", "FetchedFile", "read_manifest", "write_manifest"]

#: columns of manifest.tsv, in order
MANIFEST_COLUMNS = ("name", "url", "filename", "bytes", "sha256", "downloaded_at")


@dataclass(frozen=True)
class FetchedFile:
    """One row of manifest.tsv: a source file that passed every check."""

    name: str
    url: str
    filename: str
    bytes: int
    sha256: str
    #: ISO-8601 UTC time the file was downloaded (kept when a rerun skips the download)
    downloaded_at: str


def read_manifest(path: str | os.PathLike, *, dataset: str | None = None) -> list[FetchedFile]:
    """The rows of a manifest written by :func:`write_manifest`, in their order.

    Parameters
    ----------
    path
        ``manifest.tsv`` (or the fetch stage's bookkeeping file in the same format).
    dataset
        Dataset id, for error messages.

    Raises
    ------
    InputDataError
        When the file cannot be read, or its columns are not `MANIFEST_COLUMNS`.
    """
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
                raise InputDataError(
                    f"not a texflow manifest: columns {reader.fieldnames}, expected "
                    f"{list(MANIFEST_COLUMNS)}",
                    dataset=dataset,
                    path=path,
                )
            return [
                _row(values, line=reader.line_num, dataset=dataset, path=path) for values in reader
            ]
    except OSError as error:
        raise InputDataError(
            f"cannot read the download manifest: {error}", dataset=dataset, path=path
        ) from None


def write_manifest(path: str | os.PathLike, rows: Iterable[FetchedFile]) -> None:
    """Write `rows` to `path` atomically (a reader never sees half a manifest)."""
    # imported here: texflow.utils imports anndata, which the Snakefile (importing texflow.fetch
    # for local_source_paths) and the fetch job need not pay for
    from .utils import atomic_path

    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for row in rows:
            writer.writerow([getattr(row, column) for column in MANIFEST_COLUMNS])


_INTEGER_COLUMNS = {field.name for field in fields(FetchedFile) if field.type in ("int", int)}


def _row(
    values: dict[str, str | None], *, line: int, dataset: str | None, path: Path
) -> FetchedFile:
    """One manifest line as a `FetchedFile`; a short line or a non-integer size stops."""
    if None in values.values():
        raise InputDataError(
            f"not a texflow manifest: line {line} has fewer than {len(MANIFEST_COLUMNS)} fields "
            "(rerun the fetch rule)",
            dataset=dataset,
            path=path,
        )
    try:
        return FetchedFile(
            **{
                key: int(value) if key in _INTEGER_COLUMNS else value
                for key, value in values.items()
            }
        )
    except (TypeError, ValueError):
        raise InputDataError(
            f"not a texflow manifest: line {line} has fields {values} (bytes must be an integer; "
            "rerun the fetch rule)",
            dataset=dataset,
            path=path,
        ) from None
