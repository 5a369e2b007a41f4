"""Small shared helpers: atomic outputs, logging for workflow scripts, the kNN method."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import tempfile
import zlib
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

logger = logging.getLogger("texflow")

#: Up to this many points a kNN search is exact (scikit-learn, brute force); above it approximate
#: (pynndescent). Measured on 2 cores: exact search of 100k points x 30 dimensions takes 16 s,
#: 200k 63 s (it grows with the square), while pynndescent spends ~35 s compiling its numba
#: kernels in every process (they are not cached across processes) before it starts; at 20k
#: cells that compilation was half of the QC stage. Exact neighbours are never less accurate.
EXACT_KNN_MAX_POINTS = 150_000


#: gzip settings of texflow's .tsv.gz tables: zlib's default level 6 (also gzip's) wrote the
#: 60k-cell table of the 100k benchmark in 1.8 s, pandas' default level 9 in 4.5 s, for a file
#: 4% smaller (measured). mtime 0 and an empty file name in the header (`write_tsv`; pandas
#: would store the temporary file's random name there) give the same bytes from run to run.
GZIP_TSV = {"compresslevel": 6, "mtime": 0}


def knn_transformer(n_points: int) -> str | None:
    """The `transformer` for `scanpy.pp.neighbors`: "sklearn" (exact) or None (pynndescent)."""
    return "sklearn" if n_points <= EXACT_KNN_MAX_POINTS else None


def current_umask() -> int:
    """The process's umask, read without changing it.

    Linux reports it in ``/proc/self/status`` (since 4.7). Elsewhere the only way is to set it
    and set it back (`os.umask`), which for an instant leaves the umask 0 for every thread of
    the process; that fallback is taken only when the status file has no ``Umask:`` line.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def shared_mode() -> int:
    """The mode a newly created file gets from `open` under the current umask (0644 under 022)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    An interrupted or failed step thus never leaves a file that looks finished. The finished
    file gets the permissions the umask allows (`shared_mode`, rw-r--r-- under umask 022), as
    a file written with `open` would: `tempfile.mkstemp` creates it private (0600), and on a
    shared filesystem collaborators must be able to read the tables and figures.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # a writer may have renamed or removed it; os.replace then says so
            os.chmod(tmp, shared_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_tsv(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    na_rep: str = "NA",
    float_format: str | None = None,
) -> None:
    """Write `table` as TSV (no index) atomically; gzip-compressed (`GZIP_TSV`) when `path` ends
    in .gz, with neither a time nor a file name in the gzip header, so that identical tables give
    identical bytes."""
    options = {"sep": "\t", "index": False, "na_rep": na_rep, "float_format": float_format}
    with atomic_path(path) as tmp:
        if not str(path).endswith(".gz"):
            table.to_csv(tmp, **options)
            return
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, **GZIP_TSV) as compressed,
            io.TextIOWrapper(compressed, encoding="utf-8", newline="") as text,
        ):
            table.to_csv(text, lineterminator="\n", **options)


#: ``uns["texflow"]["counts_layer"]`` value of a file whose X *is* the raw counts: the
#: ``counts`` layer is then not stored twice and `read_h5ad` makes it X again.
COUNTS_IN_X = "X"


def counts_are_x(adata: ad.AnnData) -> bool:
    """True when ``layers["counts"]`` is the very matrix object in X (counts held once)."""
    return "counts" in adata.layers and adata.layers["counts"] is adata.X


def share_counts(adata: ad.AnnData) -> ad.AnnData:
    """Make ``layers["counts"]`` the X matrix itself (no copy); X must hold the raw counts.

    Until the cluster stage normalises X, the counts layer and X are the same numbers: holding
    them once halves the memory of ingest, QC and gating and the size of their files
    (measured at 100k cells x 20k genes: 1.95 GB per copy of the counts).
    """
    adata.layers["counts"] = adata.X
    return adata


def subset_cells(adata: ad.AnnData, mask) -> ad.AnnData:
    """``adata[mask].copy()`` that keeps shared counts shared (anndata would copy them twice)."""
    if not counts_are_x(adata):
        return adata[mask].copy()
    del adata.layers["counts"]
    try:
        subset = adata[mask].copy()
    finally:
        share_counts(adata)
    return share_counts(subset)


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike) -> None:
    """Write `adata` to `path` atomically (temporary file, then rename).

    When ``layers["counts"]`` is X itself (`share_counts`), the layer is not written again:
    ``uns["texflow"]["counts_layer"] = "X"`` records that X holds the counts, and
    `read_h5ad` restores the layer.
    """
    shared = counts_are_x(adata)
    meta = adata.uns.setdefault("texflow", {})
    if shared:
        del adata.layers["counts"]
        meta["counts_layer"] = COUNTS_IN_X
    else:
        meta.pop("counts_layer", None)
    try:
        with atomic_path(path) as tmp:
            adata.write_h5ad(tmp)
    finally:
        if shared:
            share_counts(adata)


def read_h5ad(
    path: str | os.PathLike, *, layers: bool | Collection[str] = True, x: bool = True
) -> ad.AnnData:
    """Read a stage's h5ad; a file written with shared counts gets ``layers["counts"]`` = X.

    `layers`: True reads every layer; False none (a stage that only needs X saves a copy of
    the matrix: 2 GB at 100k cells); a collection of names reads those present. With
    ``x=False`` X is not read (None): `read_rows` reads the rows of X a stage needs. A stage
    that reads part of a file writes only what it adds (`write_annotations`).
    """
    if layers is True and x:
        adata = ad.read_h5ad(path)
        if adata.uns.get("texflow", {}).get("counts_layer") == COUNTS_IN_X:
            share_counts(adata)
        return adata
    import h5py

    wanted = None if layers is True else set(layers or ())
    with h5py.File(path, "r") as file:
        slots = {key: ad.io.read_elem(file[key]) for key in file if key not in ("layers", "X")}
        uns = slots.get("uns", {})
        shared = uns.get("texflow", {}).get("counts_layer") == COUNTS_IN_X
        names = [n for n in file.get("layers", {}) if wanted is None or n in wanted]
        read = {n: ad.io.read_elem(file["layers"][n]) for n in names}
        counts_are_x = shared and (wanted is None or "counts" in wanted)
        if x or counts_are_x:
            matrix = ad.io.read_elem(file["X"])
            if x:
                slots["X"] = matrix
            if counts_are_x:
                read["counts"] = matrix
    adata = ad.AnnData(**slots)
    for name, matrix in read.items():
        adata.layers[name] = matrix
    return adata


def read_annotations(path: str | os.PathLike) -> ad.AnnData:
    """An h5ad without X and its layers (obs, var, obsm, obsp, uns): for what reads cells'
    annotations only (report pages, truth recovery).

    anndata's backed mode keeps X on disk but reads every layer into memory: the counts layer
    of a 1M-cell dataset's `final.h5ad` took the report to 13.09 GB (measured; 1.17 GB so).
    """
    return read_h5ad(path, layers=False, x=False)


def read_rows(path: str | os.PathLike, rows: np.ndarray | None = None):
    """Rows of X of the h5ad at `path` (a boolean mask or positions; CSR X), read from disk
    without the rest of the matrix; ``rows=None`` reads all of X as stored (for a stage that
    read the annotations with ``read_h5ad(x=False)`` and finds it needs X after all)."""
    import h5py

    with h5py.File(path, "r") as file:
        if rows is None:
            return ad.io.read_elem(file["X"])
        rows = np.asarray(rows)
        positions = np.flatnonzero(rows) if rows.dtype == bool else rows
        matrix = ad.io.sparse_dataset(file["X"])
        if matrix.format != "csr":
            raise ValueError(f"read_rows: X of {path} is {matrix.format}, not csr")
        return sparse.csr_matrix(matrix[positions])


@contextlib.contextmanager
def backed_csr(
    path: str | os.PathLike, *, without_layers: bool = False, layer: str | None = None
) -> Iterator:
    """X (or `layer`) of the h5ad at `path` as an anndata backed CSR dataset (rows read from
    disk on indexing, as scipy CSR), open for the block; None when it is not float32 CSR (the
    form texflow writes), not there, or, with `without_layers`, when the file has layers of its
    own: for a caller that then reads the file into memory."""
    import h5py

    with h5py.File(path, "r") as file:
        element = file.get("X" if layer is None else f"layers/{layer}")
        usable = (
            element is not None
            and element.attrs.get("encoding-type") == "csr_matrix"
            and not (without_layers and len(file.get("layers", {})))
        )
        matrix = ad.io.sparse_dataset(element) if usable else None
        yield matrix if matrix is not None and matrix.dtype == np.float32 else None


#: Rows of a count matrix read at a time by the streamed passes over it (`row_chunks`;
#: `features.count_totals`, `features.pearson_residual_variances`, the HVG block of
#: `embedding.lognorm_hvgs`): 10k cells x ~2,500 stored values of float32 and int32 (int64
#: above 2**31 values) indices: 0.2-0.3 GB, as QC's metrics chunks.
COUNTS_CHUNK_ROWS = 10_000


def row_chunks(
    matrix, *, chunk_rows: int | None = None
) -> Iterator[tuple[slice, sparse.csr_matrix]]:
    """(rows, scipy CSR of those rows) for consecutive blocks of `chunk_rows` rows of `matrix`
    (default `COUNTS_CHUNK_ROWS`, read when called): an anndata backed CSR dataset
    (`backed_csr`: each block read from disk), or anything `scipy.sparse.csr_matrix` takes
    (in memory: each block a copy of its rows, or the matrix itself when it is one block)."""
    chunk_rows = COUNTS_CHUNK_ROWS if chunk_rows is None else int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError(f"row_chunks: chunk_rows must be positive, got {chunk_rows}")
    if not isinstance(matrix, ad.abc.CSRDataset):
        matrix = sparse.csr_matrix(matrix)  # no copy of a CSR matrix
        if matrix.shape[0] <= chunk_rows:  # one block: the matrix itself, not a copy
            yield slice(0, matrix.shape[0]), matrix
            return
    n_rows = matrix.shape[0]
    for start in range(0, n_rows, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n_rows))
        yield rows, sparse.csr_matrix(matrix[rows])


#: Non-zeros an int32 indptr can index: anndata's `append` refuses to grow an int32 indptr past
#: it (OverflowError, anndata 0.12) rather than widening it, so `append_csr_rows` widens it first.
INT32_NNZ_MAX = np.iinfo(np.int32).max


def _widen_indptr(element) -> None:
    """Rewrite the indptr of the on-disk CSR group `element` as int64 (one value per row)."""
    values = element["indptr"][...].astype(np.int64)
    del element["indptr"]
    element.create_dataset("indptr", data=values, maxshape=(None,))


def append_csr_rows(group, key: str, block: sparse.csr_matrix) -> None:
    """Add the CSR rows `block` under the CSR matrix `key` of the open h5py `group` (the first
    block writes it, as anndata writes a matrix: `anndata.io.write_elem`; later blocks are
    appended: anndata's `sparse_dataset(...).append`). A matrix that fits the int32 indptr of
    its first block keeps it, as a file written from memory would; before a block that would
    take it past `INT32_NNZ_MAX` non-zeros the indptr becomes int64 (the indices stay as
    written: gene positions fit int32)."""
    block = sparse.csr_matrix(block)
    if key not in group:
        ad.io.write_elem(group, key, block)
        return
    element = group[key]
    nnz = element["indices"].shape[0] + block.nnz
    if element["indptr"].dtype == np.int32 and nnz >= INT32_NNZ_MAX:
        logger.info("%s: %d non-zeros from here on, indptr widened to int64", key, nnz)
        _widen_indptr(element)
    ad.io.sparse_dataset(element).append(block)


def write_csr_rows(group, key: str, blocks: Iterable[sparse.csr_matrix], *, n_cols: int) -> int:
    """Write CSR blocks of consecutive rows as one CSR matrix `key` of the open h5py `group`,
    block after block (`append_csr_rows`), so the whole matrix is never in memory; return its
    non-zeros. No block: an empty ``0 x n_cols`` matrix."""
    for block in blocks:
        append_csr_rows(group, key, block)
    if key not in group:
        ad.io.write_elem(group, key, sparse.csr_matrix((0, n_cols), dtype=np.float32))
    return int(group[key]["indices"].shape[0])


#: Rows copied at a time by `write_subset_h5ad` (10k cells x 2.5k genes: ~0.2 GB).
SUBSET_CHUNK_ROWS = 10_000


def write_subset_h5ad(
    adata: ad.AnnData,
    mask,
    path: str | os.PathLike,
    *,
    chunk_rows: int = SUBSET_CHUNK_ROWS,
    matrix=None,
) -> None:
    """Write ``adata[mask]`` to `path` as `write_h5ad` would, without the subset in memory.

    For X held as CSR with shared counts (or no layers): the annotations of the subset are
    written first, then X is appended `chunk_rows` rows at a time, so the subset's matrix never
    sits beside the full one (at 100k cells, the QC stage held 1.9 GB for its passing cells;
    measured). Anything else falls back to `subset_cells` + `write_h5ad`. Atomic.

    `matrix`: X's rows are read from it, not from ``adata.X`` (which may be None): an anndata
    backed CSR dataset of the file `adata` was read from (`backed_csr`), whose
    ``uns["texflow"]["counts_layer"]`` says whether X holds the counts; `adata` then has no
    layers.
    """

    mask = np.asarray(mask)
    rows = np.flatnonzero(mask) if mask.dtype == bool else mask
    if matrix is not None:
        if [key for key in adata.layers if key is not None] or rows.size == 0:
            raise ValueError("write_subset_h5ad: with `matrix`, adata has no layers and rows")
        shared = adata.uns.get("texflow", {}).get("counts_layer") == COUNTS_IN_X
        source = matrix
    else:
        shared = counts_are_x(adata)
        source = adata.X
        # anndata 0.13 lists X itself as layer None
        layers = [
            key for key in adata.layers if key is not None and not (shared and key == "counts")
        ]
        if layers or not (sparse.issparse(source) and source.format == "csr") or rows.size == 0:
            write_h5ad(subset_cells(adata, rows), path)
            return
    meta = ad.AnnData(
        obs=adata.obs.iloc[rows],
        var=adata.var,
        uns=dict(adata.uns),
        obsm={key: value[rows] for key, value in adata.obsm.items()},
        varm=dict(adata.varm),
        obsp={key: value[rows][:, rows] for key, value in adata.obsp.items()},
        varp=dict(adata.varp),
    )
    record = {
        key: value for key, value in adata.uns.get("texflow", {}).items() if key != "counts_layer"
    }
    meta.uns["texflow"] = {**record, "counts_layer": COUNTS_IN_X} if shared else record
    chunks = (
        {"X": source[rows[start : start + chunk_rows]]} for start in range(0, rows.size, chunk_rows)
    )
    write_h5ad_by_rows(meta, path, chunks=chunks)


def write_h5ad_by_rows(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    chunks: Iterable[Mapping[str, sparse.spmatrix]],
) -> None:
    """Write the annotations of `adata` (no X, no layers), then its matrices block by block.

    Parameters
    ----------
    adata
        Everything but the matrices: obs and var of the file, obsm, obsp, uns, ...
    path
        The h5ad to write (atomically: nothing at `path` until the last block is written).
    chunks
        Consecutive blocks of rows, in order, covering every cell: each maps ``"X"`` and layer
        names to that block's CSR rows (`append_csr_rows`). Only one block is held at a time.
    """
    import h5py

    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
        with h5py.File(tmp, "r+") as file:
            for chunk in chunks:
                for key, block in chunk.items():
                    append_csr_rows(
                        file if key == "X" else file.require_group("layers"), key, block
                    )
            if "X" not in file:  # no block (no cells): an empty X, as `write_csr_rows` writes
                write_csr_rows(file, "X", [], n_cols=adata.n_vars)
            n_rows = {key: element.attrs["shape"][0] for key, element in _matrices(file).items()}
            if set(n_rows.values()) != {adata.n_obs}:
                raise ValueError(
                    f"write_h5ad_by_rows: {n_rows} rows written for {adata.n_obs} cells"
                )


def _matrices(file) -> dict:
    """X and the layers of an open h5ad file: name -> its h5py group."""
    found = {"X": file["X"]} if "X" in file else {}
    return found | dict(file.get("layers", {}).items())


#: Compression of ``final.h5ad`` (`assemble_h5ad`): gzip at level 1 with HDF5's byte-shuffle
#: filter, both built into every HDF5 reader (R's rhdf5 included; lzf is h5py's own). Measured
#: on the X and counts of the 2,000-cell benchmark (size over raw.h5ad; the whole final.h5ad
#: was 1.37x uncompressed): gzip level 1 0.358x, with shuffle 0.334x, with shuffle and
#: `MATRIX_CHUNK` chunks 0.299x (the indices and the counts shrink, X's values grow), level 4
#: with both 0.280x for 60% more time; lzf with shuffle was 0.45x on the demo cohort.
FINAL_COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}

#: Elements per HDF5 chunk of the matrices of ``final.h5ad`` (1 MB of float32); h5py's own
#: choice for them was ~5k elements, which compresses less (above).
MATRIX_CHUNK = 2**18


def _same_values(old, new) -> bool:
    """True when two obs/var columns, embeddings or graphs hold the same values."""
    if isinstance(old, pd.Series) or isinstance(new, pd.Series):
        return isinstance(old, pd.Series) and isinstance(new, pd.Series) and old.equals(new)
    if sparse.issparse(old) or sparse.issparse(new):
        return (
            sparse.issparse(old)
            and sparse.issparse(new)
            and old.shape == new.shape
            and (old != new).nnz == 0
        )
    if isinstance(old, pd.DataFrame) or isinstance(new, pd.DataFrame):
        return isinstance(old, pd.DataFrame) and isinstance(new, pd.DataFrame) and old.equals(new)
    old, new = np.asarray(old), np.asarray(new)
    if old.shape != new.shape or old.dtype != new.dtype:
        return False
    return bool(np.array_equal(old, new, equal_nan=old.dtype.kind in "fc"))


def read_annotated(
    matrix: str | os.PathLike,
    annotations: Collection[str | os.PathLike] = (),
    *,
    layers: bool | Collection[str] = True,
    x: bool = True,
) -> ad.AnnData:
    """The cells of the matrix file with the annotations of the stages after it.

    Parameters
    ----------
    matrix
        The h5ad that holds the matrices (``clustered.h5ad``); read with `read_h5ad`, whose
        `layers` and `x` choose what of them is read.
    annotations
        Annotation files of later stages (`write_annotations`), in the order the stages ran:
        each one's obs and var columns, obsm, varm and obsp entries are set on the cells (a
        later file's entry replaces an earlier one's), and its ``uns``, which holds the whole
        record of the run up to that stage, replaces ``uns``.

    Returns
    -------
    The AnnData a stage works on, as if every earlier stage had written the whole file.
    """
    adata = read_h5ad(matrix, layers=layers, x=x)
    for path in annotations:
        added = ad.read_h5ad(path)
        for axis, names in (("cells", added.obs_names), ("genes", added.var_names)):
            expected = adata.obs_names if axis == "cells" else adata.var_names
            if not names.equals(expected):
                from .errors import InputDataError

                raise InputDataError(
                    f"its {axis} are not those of {matrix}: the two files come from different "
                    "runs; run the workflow again so the stage that wrote it reruns "
                    "(snakemake --forcerun with that stage's rule)",
                    dataset=adata.uns.get("texflow", {}).get("dataset"),
                    path=path,
                )
        for column in added.obs:
            adata.obs[column] = added.obs[column]
        for column in added.var:
            adata.var[column] = added.var[column]
        for slot in ("obsm", "varm", "obsp"):
            getattr(adata, slot).update(dict(getattr(added, slot)))
        adata.uns = added.uns
    return adata


def write_annotations(
    adata: ad.AnnData,
    path: str | os.PathLike,
    *,
    matrix: str | os.PathLike,
    annotations: Collection[str | os.PathLike] = (),
) -> None:
    """Write what a stage added to the cells of the matrix file, as an h5ad without matrices.

    A stage after the cluster stage adds annotations and leaves the matrices as they were: its
    file holds only the obs and var columns, obsm, varm and obsp entries that are new or changed
    against what it read (`read_annotated` of `matrix` and `annotations`), and the whole ``uns``
    (the run's record: kilobytes). Atomic like `write_h5ad`; a plain h5ad with no X.

    Parameters
    ----------
    adata
        The stage's cells (those of `matrix`, in its order).
    path
        The annotation file to write.
    matrix, annotations
        What the stage read (`read_annotated`).
    """
    before = read_annotated(matrix, annotations, layers=False, x=False)
    if not (before.obs_names.equals(adata.obs_names) and before.var_names.equals(adata.var_names)):
        raise ValueError(f"write_annotations: cells or genes differ from those of {matrix}")
    slots = {}
    for slot in ("obs", "var"):
        old, new = getattr(before, slot), getattr(adata, slot)
        gone = [c for c in old if c not in new]
        changed = [c for c in new if c not in old or not _same_values(old[c], new[c])]
        if gone:
            raise ValueError(f"write_annotations: {slot} columns {gone} were removed")
        slots[slot] = new[changed].copy()
    for slot in ("obsm", "varm", "obsp"):
        old, new = getattr(before, slot), getattr(adata, slot)
        gone = [k for k in old if k not in new]
        if gone:
            raise ValueError(f"write_annotations: {slot} entries {gone} were removed")
        slots[slot] = {k: v for k, v in new.items() if k not in old or not _same_values(old[k], v)}
    added = ad.AnnData(uns=dict(adata.uns), **slots)
    with atomic_path(path) as tmp:
        added.write_h5ad(tmp)


#: Chunks of a matrix's arrays compressed at a time per thread by `assemble_h5ad` (1 MB each).
BLOCK_CHUNKS_PER_THREAD = 8


def _shuffle_deflate(chunk: np.ndarray, *, level: int) -> bytes:
    """One chunk as HDF5's shuffle and deflate filters store it.

    The shuffle filter groups the chunk's bytes by their position in the element (all first
    bytes, then all second bytes, ...); the deflate filter compresses that with zlib's
    ``compress2`` at `level`, the stream `zlib.compress` writes. zlib releases the GIL while it
    compresses, so chunks compress side by side on threads.
    """
    planes = np.ascontiguousarray(chunk.view(np.uint8).reshape(-1, chunk.itemsize).T)
    return zlib.compress(planes, level)


def _copy_array(
    source, group, name: str, *, chunk_elements: int, pool: ThreadPoolExecutor, threads: int
) -> None:
    """Copy the 1-D dataset `source` to `group[name]`, compressed as `FINAL_COMPRESSION` in
    chunks of `chunk_elements`, its chunks compressed on the `threads` of `pool`.

    Each chunk is compressed as HDF5 would compress it (`_shuffle_deflate`; the last one padded
    with zeros to the full chunk, as HDF5 stores an edge chunk) and written as it is
    (``write_direct_chunk``): the same bytes, whatever the number of threads. `chunk_elements`
    x ``BLOCK_CHUNKS_PER_THREAD`` x `threads` elements are read at a time, and the next block's
    compression runs while the last one's chunks are written.
    """
    if FINAL_COMPRESSION != {"compression": "gzip", "compression_opts": 1, "shuffle": True}:
        raise NotImplementedError("_copy_array writes gzip with shuffle (FINAL_COMPRESSION)")
    level = FINAL_COMPRESSION["compression_opts"]
    size = source.shape[0]
    # resizable (maxshape) as anndata writes a sparse matrix's arrays: a chunk may exceed them
    target = group.create_dataset(
        name,
        shape=source.shape,
        dtype=source.dtype,
        chunks=(chunk_elements,),
        maxshape=(None,),
        **FINAL_COMPRESSION,
    )
    block = chunk_elements * BLOCK_CHUNKS_PER_THREAD * max(1, threads)
    pending: deque = deque()

    def write_oldest() -> None:
        for offset, compressed in pending.popleft():
            target.id.write_direct_chunk((offset,), compressed.result())

    for start in range(0, size, block):
        values = source[start : min(start + block, size)]
        futures = []
        for offset in range(0, values.size, chunk_elements):
            chunk = values[offset : offset + chunk_elements]
            if chunk.size < chunk_elements:
                chunk = np.concatenate([chunk, np.zeros(chunk_elements - chunk.size, chunk.dtype)])
            futures.append((start + offset, pool.submit(_shuffle_deflate, chunk, level=level)))
        pending.append(futures)
        if len(pending) > 1:
            write_oldest()
    while pending:
        write_oldest()


def _copy_matrix(
    source,
    target,
    key: str,
    *,
    to: str,
    chunk_elements: int,
    pool: ThreadPoolExecutor,
    threads: int,
) -> None:
    """Copy the matrix at `key` of one open h5ad to `to` in another, compressed
    (`FINAL_COMPRESSION`); a CSR matrix array by array (`_copy_array`), with the attributes
    that make it an AnnData sparse matrix (encoding, shape), so it never sits whole in memory."""
    element = source[key]
    parent, _, name = to.rpartition("/")
    group = target.require_group(parent) if parent else target  # anndata refuses "a/b" keys
    if element.attrs.get("encoding-type") != "csr_matrix":
        ad.io.write_elem(group, name, ad.io.read_elem(element), dataset_kwargs=FINAL_COMPRESSION)
        return
    copy = group.create_group(name)
    copy.attrs.update(dict(element.attrs))
    for array in ("data", "indices", "indptr"):
        _copy_array(
            element[array],
            copy,
            array,
            chunk_elements=chunk_elements,
            pool=pool,
            threads=threads,
        )


def assemble_h5ad(
    *,
    matrix: str | os.PathLike,
    annotations: Collection[str | os.PathLike],
    path: str | os.PathLike,
    threads: int = 1,
    chunk_elements: int = MATRIX_CHUNK,
) -> None:
    """Write ``final.h5ad``: the matrices of `matrix` and the annotations of every stage.

    A plain AnnData that `anndata.read_h5ad` opens without texflow: X as the matrix file holds
    it (log-normalised), each layer (``counts``, the raw counts) written out, never the
    ``counts_layer`` shorthand of `write_h5ad`. The matrices are copied a block at a time,
    compressed (`FINAL_COMPRESSION`), so neither sits whole in memory; their chunks are
    compressed on `threads` threads, and the file is the same whatever their number. Atomic.

    Parameters
    ----------
    matrix, annotations
        As for `read_annotated`.
    path
        The file to write.
    threads
        Threads that compress the matrices' chunks (the rule's threads).
    chunk_elements
        Elements per HDF5 chunk of the matrices' arrays (`MATRIX_CHUNK`).
    """
    import h5py

    adata = read_annotated(matrix, annotations, layers=False, x=False)
    record = adata.uns.get("texflow", {})
    counts_in_x = record.pop("counts_layer", None) == COUNTS_IN_X
    threads = max(1, int(threads))
    with atomic_path(path) as tmp:
        # the annotations: gzip as the matrices (anndata's writer takes no shuffle option)
        adata.write_h5ad(
            tmp,
            compression=FINAL_COMPRESSION["compression"],
            compression_opts=FINAL_COMPRESSION["compression_opts"],
        )
        with (
            h5py.File(matrix, "r") as source,
            h5py.File(tmp, "r+") as target,
            ThreadPoolExecutor(max_workers=threads) as pool,
        ):
            copies = {"X": "X", **{f"layers/{n}": f"layers/{n}" for n in source.get("layers", {})}}
            if counts_in_x:  # the counts were X itself: written out as the layer
                copies["layers/counts"] = "X"
            for to, key in copies.items():
                _copy_matrix(
                    source,
                    target,
                    key,
                    to=to,
                    chunk_elements=chunk_elements,
                    pool=pool,
                    threads=threads,
                )


def setup_logging(log_path: str | os.PathLike | None = None, *, level: int = logging.INFO) -> None:
    """Send the `texflow` logger (and warnings) to `log_path` and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)


#: Start of the log line in which `run_step` reports the process's peak memory.
PEAK_MEMORY_LOG = "peak memory (ru_maxrss):"


def limit_numba_threads(threads: int | None) -> None:
    """Run numba's parallel loops on the rule's `threads`, not on every core.

    Snakemake passes a job's `threads` to OpenMP and BLAS through the environment, but numba
    reads neither and would start a thread per core: on a cluster node, more threads than the
    job asked for.
    """
    if not threads:
        return
    import numba

    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


def run_step(main, snakemake) -> None:
    """Run a workflow script's `main(snakemake)` with logging to the rule's log.

    A `TexflowError` ends the job with its message (dataset, file, problem) in the log and on
    stderr, rather than a traceback from deep inside a library.
    """
    import resource

    from .errors import TexflowError

    setup_logging(snakemake.log[0] if snakemake.log else None)
    limit_numba_threads(getattr(snakemake, "threads", None))
    try:
        main(snakemake)
    except TexflowError as error:
        logger.error("%s", error)
        raise SystemExit(f"texflow: {error}") from None
    # the kernel's high-water mark of this process (Snakemake's benchmark files sample RSS and
    # miss short peaks); benchmarks/run.py reads it back
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    logger.info("%s %.2f GB", PEAK_MEMORY_LOG, peak_gb)
