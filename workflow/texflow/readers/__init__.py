"""Readers: one function per file layout met in public T-cell datasets, registered by name.

A matrix reader turns the downloaded files of a dataset into one AnnData (cells x genes,
float32 CSR ``X``, cell IDs as ``obs_names``, gene symbols -- not yet unique -- as
``var_names``, ``gene_ids`` in ``var`` when known, and whatever per-cell annotation the files
carry in ``obs``). Its signature is::

    reader(files: dict[str, Path], options: dict, dataset: str) -> AnnData

where ``files`` maps the dataset's source names (minus the metadata source) to local paths and
``options`` is the dataset file's ``reader_options``. A reader that leaves the matrix in its file
(``h5ad``) returns ``(AnnData without X, OnDiskMatrix)`` instead; :func:`split_matrix` gives
every reader's result in that form (ingest checks and writes the matrix chunk by chunk of rows).

A metadata reader turns one per-cell metadata file into a DataFrame of strings::

    reader(path: Path, options: dict, dataset: str) -> pd.DataFrame

Readers are looked up by the name the dataset file gives (``reader:``, ``metadata.format``);
:func:`register_reader` / :func:`register_metadata_reader` add new ones. Every reader raises
:class:`texflow.errors.InputDataError` naming dataset, file and problem on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anndata as ad
import pandas as pd

from ..errors import TexflowError
from ._common import InMemoryMatrix, OnDiskMatrix

MatrixReader = Callable[[dict[str, Path], dict, str], object]  # AnnData or (AnnData, matrix)
MetadataReader = Callable[[Path, dict, str], pd.DataFrame]

READERS: dict[str, MatrixReader] = {}
METADATA_READERS: dict[str, MetadataReader] = {}


def register_reader(name: str) -> Callable[[MatrixReader], MatrixReader]:
    """Decorator: make a matrix reader available as ``reader: <name>`` in dataset files."""

    def decorate(function: MatrixReader) -> MatrixReader:
        if name in READERS:
            raise ValueError(f"matrix reader {name!r} is registered twice")
        READERS[name] = function
        return function

    return decorate


def register_metadata_reader(name: str) -> Callable[[MetadataReader], MetadataReader]:
    """Decorator: make a metadata reader available as ``metadata.format: <name>``."""

    def decorate(function: MetadataReader) -> MetadataReader:
        if name in METADATA_READERS:
            raise ValueError(f"metadata reader {name!r} is registered twice")
        METADATA_READERS[name] = function
        return function

    return decorate


def get_reader(name: str, *, dataset: str | None = None) -> MatrixReader:
    """The matrix reader registered as `name`."""
    try:
        return READERS[name]
    except KeyError:
        raise TexflowError(
            f"unknown reader {name!r}; registered readers: {', '.join(sorted(READERS))}",
            dataset=dataset,
        ) from None


def split_matrix(result) -> tuple[ad.AnnData, InMemoryMatrix | OnDiskMatrix]:
    """A matrix reader's result as (cells and genes without X, the matrix as a source of row
    chunks): an AnnData's X becomes an `InMemoryMatrix`."""
    if isinstance(result, tuple):
        return result
    source = InMemoryMatrix(result.X)
    result.X = None
    return result, source


def get_metadata_reader(name: str, *, dataset: str | None = None) -> MetadataReader:
    """The metadata reader registered as `name`."""
    try:
        return METADATA_READERS[name]
    except KeyError:
        raise TexflowError(
            f"unknown metadata format {name!r}; registered: {', '.join(sorted(METADATA_READERS))}",
            dataset=dataset,
        ) from None


# importing the modules registers their readers
from . import matrix, metadata, text  # noqa: E402,F401

__all__ = [
    "METADATA_READERS",
    "InMemoryMatrix",
    "OnDiskMatrix",
    "READERS",
    "get_metadata_reader",
    "get_reader",
    "register_metadata_reader",
    "register_reader",
    "split_matrix",
]
