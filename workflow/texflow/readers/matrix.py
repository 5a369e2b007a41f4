"""Binary and 10x matrix readers: ``h5ad``, ``tenx_h5``, ``tenx_mtx``."""

from __future__ import annotations

import contextlib
import logging
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ..contract import SAMPLE
from ..errors import InputDataError
from . import register_reader
from ._common import (
    InMemoryMatrix,
    OnDiskMatrix,
    check_unique_cells,
    open_text,
    reading,
    to_csr32,
    wrap_member,
)

logger = logging.getLogger(__name__)

# GEO sample accession at the start of a supplementary file name (GSM3423794_LCMV1_...)
_GSM = re.compile(r"^(GSM\d+)(?:[_.-]+|$)")
# Folder names inside 10x archives that say nothing about the sample
_GENERIC_DIRS = {
    "outs",
    "filtered_feature_bc_matrix",
    "raw_feature_bc_matrix",
    "filtered_gene_bc_matrices",
    "raw_gene_bc_matrices",
    "hg19",
    "grch38",
    "mm10",
    "",
}


def _single_file(files: dict[str, Path], dataset: str, reader: str) -> tuple[str, Path]:
    if len(files) != 1:
        raise InputDataError(
            f"reader {reader} reads exactly one matrix file, but the dataset lists "
            f"{len(files)} non-metadata sources ({', '.join(files)}); set metadata.source for "
            "the metadata file or reader_options.source for the matrix",
            dataset=dataset,
        )
    return next(iter(files.items()))


def select_sources(files: dict[str, Path], options: dict, dataset: str) -> dict[str, Path]:
    """The sources a reader should read: `options['source']` (a name or list) or all of them."""
    wanted = options.get("source")
    if wanted is None:
        return files
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [name for name in wanted if name not in files]
    if missing:
        raise InputDataError(
            f"reader_options.source names {missing}, which are not among the sources "
            f"({', '.join(files)})",
            dataset=dataset,
        )
    return {name: files[name] for name in wanted}


def sample_from_prefix(prefix: str) -> tuple[str, str]:
    """(sample name, GSM accession or "") from a file-name prefix such as ``GSM123_sampleA_``."""
    prefix = prefix.strip("_.- ")
    match = _GSM.match(prefix)
    if match:
        rest = prefix[match.end() :].strip("_.- ")
        return (rest or match.group(1)), match.group(1)
    return prefix, ""


@dataclass
class SamplePart:
    """One sample's matrix, as read from its files."""

    sample: str
    gsm: str
    barcodes: list[str]
    gene_ids: list[str]
    symbols: list[str]
    X: sp.csr_matrix  # cells x genes
    origin: str
    extra_obs: dict[str, list] = field(default_factory=dict)
    #: the file the barcodes come from, when not `origin` (10x: barcodes.tsv.gz, not the matrix)
    barcodes_origin: str = ""


def combine_samples(
    parts: list[SamplePart], *, dataset: str, cell_id: str | None = None
) -> ad.AnnData:
    """Stack samples into one AnnData; genes are matched by ID (union, zero where absent).

    With several samples the cell IDs become ``<sample>_<barcode>``, because 10x barcodes
    repeat between samples; the original barcode stays in ``obs['barcode']``. A `cell_id`
    template (see :func:`format_cell_id`) names every cell instead.
    """
    if not parts:
        raise InputDataError("no matrix found among the files", dataset=dataset)
    names = [part.sample for part in parts]
    if len(parts) > 1 and len(set(names)) < len(names):
        raise InputDataError(
            f"two matrices give the same sample name ({', '.join(sorted(names))}); sample names "
            "come from the file-name prefixes and must differ",
            dataset=dataset,
        )
    for part in parts:
        check_unique_cells(part.barcodes, dataset=dataset, path=part.barcodes_origin or part.origin)

    union: dict[str, int] = {}
    symbols: list[str] = []
    for part in parts:
        for gene_id, symbol in zip(part.gene_ids, part.symbols, strict=True):
            if gene_id not in union:
                union[gene_id] = len(union)
                symbols.append(symbol)
    same_genes = all(part.gene_ids == parts[0].gene_ids for part in parts)
    if not same_genes:
        logger.warning(
            "samples do not list the same genes; using the union of %d gene IDs (a gene absent "
            "from a sample reads 0 there)",
            len(union),
        )
    blocks = []
    for part in parts:
        X = part.X.tocsr()
        if not same_genes:
            remap = np.array([union[gene_id] for gene_id in part.gene_ids], dtype=np.int64)
            X = sp.csr_matrix((X.data, remap[X.indices], X.indptr), shape=(X.shape[0], len(union)))
            X.sort_indices()
        blocks.append(X)
    X = to_csr32(sp.vstack(blocks, format="csr"))

    several = len(parts) > 1
    obs_names, obs = [], {SAMPLE: [], "barcode": [], "gsm": []}
    extra_keys = sorted({key for part in parts for key in part.extra_obs})
    extra = {key: [] for key in extra_keys}
    for part in parts:
        if cell_id:
            obs_names += [
                format_cell_id(cell_id, sample=part.sample, barcode=b) for b in part.barcodes
            ]
        else:
            obs_names += [f"{part.sample}_{b}" if several else b for b in part.barcodes]
        obs[SAMPLE] += [part.sample] * len(part.barcodes)
        obs["barcode"] += list(part.barcodes)
        obs["gsm"] += [part.gsm] * len(part.barcodes)
        for key in extra_keys:
            extra[key] += part.extra_obs.get(key, [None] * len(part.barcodes))
    obs_frame = pd.DataFrame({**obs, **extra}, index=pd.Index(obs_names, dtype=str))
    if not any(obs["gsm"]):
        obs_frame = obs_frame.drop(columns="gsm")
    check_unique_cells(obs_frame.index, dataset=dataset, path=", ".join(p.origin for p in parts))
    var = pd.DataFrame({"gene_ids": list(union)}, index=pd.Index(symbols, dtype=str))
    logger.info(
        "read %d sample(s) (%s): %d cells x %d genes",
        len(parts),
        ", ".join(f"{p.sample}: {len(p.barcodes)} cells" for p in parts),
        X.shape[0],
        X.shape[1],
    )
    return ad.AnnData(X=X, obs=obs_frame, var=var)


# --------------------------------------------------------------------------------------- h5ad


@register_reader("h5ad")
def read_h5ad_source(
    files: dict[str, Path], options: dict, dataset: str
) -> tuple[ad.AnnData, OnDiskMatrix | InMemoryMatrix]:
    """An AnnData file as is, its matrix left on disk.

    Options: ``source`` (which source, when several), ``layer`` (use this layer as X, e.g.
    ``counts``), ``use_raw`` (use ``.raw``), ``symbol_column`` (a var column holding gene
    symbols when the var index holds IDs).

    Returns the cells and genes (obs, var; no X) and the matrix: a CSR matrix stays in the file
    (`OnDiskMatrix`, read chunk by chunk of rows by ingest: a 1M-cell file is ~30 GB in memory);
    a dense or CSC one, which cannot be read by rows cheaply, is read whole (`InMemoryMatrix`).
    Either way as float32 CSR.
    """
    import h5py

    name, path = _single_file(select_sources(files, options, dataset), dataset, "h5ad")
    layer = options.get("layer")
    with reading(path, dataset, "reading the h5ad file"), h5py.File(path, "r") as file:
        obs = ad.io.read_elem(file["obs"])
        if options.get("use_raw"):
            if "raw" not in file:
                raise InputDataError(
                    "reader_options.use_raw is set but the file has no .raw",
                    dataset=dataset,
                    path=path,
                )
            var, key = ad.io.read_elem(file["raw/var"]), "raw/X"
        else:
            var, key = ad.io.read_elem(file["var"]), "X"
        if layer:
            present = list(file.get("layers", {}))
            if layer not in present:
                raise InputDataError(
                    f"reader_options.layer {layer!r} is not in the file (layers: {present})",
                    dataset=dataset,
                    path=path,
                )
            key = f"layers/{layer}"
        element = file[key]
        on_disk = isinstance(element, h5py.Group) and (
            element.attrs.get("encoding-type") == "csr_matrix"
        )
        matrix = (
            OnDiskMatrix(path, key, (obs.shape[0], var.shape[0]), dataset)
            if on_disk
            else InMemoryMatrix(to_csr32(ad.io.read_elem(element)))
        )
    var = var.copy()
    symbol_column = options.get("symbol_column")
    if symbol_column:
        if symbol_column not in var:
            raise InputDataError(
                f"reader_options.symbol_column {symbol_column!r} is not a var column "
                f"({list(var.columns)})",
                dataset=dataset,
                path=path,
            )
        if "gene_ids" not in var:
            var["gene_ids"] = var.index.astype(str)
        var.index = pd.Index(var[symbol_column].astype(str), dtype=str)
    check_unique_cells(obs.index, dataset=dataset, path=path)
    return ad.AnnData(obs=obs, var=var), matrix


# ------------------------------------------------------------------------------------ tenx_h5


def _strip_h5_name(filename: str) -> str:
    stem = re.sub(r"\.h5$", "", filename)
    stem = re.sub(r"(filtered|raw)_(feature|gene)_bc_matrix$", "", stem)
    return stem


#: The GEM-well suffix Cell Ranger appends to a barcode (``AAACCTGAGAAACCAT-1``).
_GEM_WELL = re.compile(r"-\d+$")
#: Placeholders of ``reader_options.cell_id``.
CELL_ID_FIELDS = ("sample", "barcode", "barcode_core")


def format_cell_id(template: str, *, sample: str, barcode: str) -> str:
    """A cell ID from a ``reader_options.cell_id`` template.

    ``{sample}`` is the sample name, ``{barcode}`` the barcode as in the file and
    ``{barcode_core}`` the barcode without its GEM-well suffix (``AAACCTGAGAAACCAT-1`` ->
    ``AAACCTGAGAAACCAT``), e.g. ``"{barcode_core}_{sample}"`` for metadata that name cells
    ``AAACCTGAGAAACCAT_P18_Pre-Tx``.
    """
    return template.format(sample=sample, barcode=barcode, barcode_core=_GEM_WELL.sub("", barcode))


def check_cell_id_template(template: str, *, dataset: str) -> None:
    """Stop on a ``reader_options.cell_id`` with unknown placeholders or without a barcode."""
    import string

    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise InputDataError(
            f"reader_options.cell_id {template!r} is not a valid template ({error})",
            dataset=dataset,
        ) from None
    unknown = fields - set(CELL_ID_FIELDS)
    if unknown or not fields & {"barcode", "barcode_core"}:
        raise InputDataError(
            f"reader_options.cell_id {template!r} must name the barcode ({{barcode}} or "
            f"{{barcode_core}}) and may use only {', '.join('{' + f + '}' for f in CELL_ID_FIELDS)}"
            + (f"; unknown: {sorted(unknown)}" if unknown else ""),
            dataset=dataset,
        )


@dataclass
class _H5File:
    """One 10x h5 file, loose or a member of a tar archive."""

    filename: str  # the file name, without folders
    origin: str  # what to name in messages
    source: str  # the dataset's source name
    materialise: Callable[[Path], Path]  # a path h5py can open (a tar member is copied out)


def _h5_files(name: str, path: Path, stack: contextlib.ExitStack, dataset: str) -> list[_H5File]:
    if not path.exists():
        raise InputDataError("file is missing (was it downloaded?)", dataset=dataset, path=path)
    with reading(path, dataset, "opening the file"):
        is_tar = tarfile.is_tarfile(path)
    if not is_tar:
        return [_H5File(path.name, str(path), name, lambda _tmp, path=path: path)]
    with reading(path, dataset, "listing the tar archive"):
        archive = stack.enter_context(tarfile.open(path))  # noqa: SIM115 (closed by the stack)
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".h5")]
    if not members:
        raise InputDataError(
            "the tar archive holds no .h5 file (for 10x matrix.mtx triplets use reader: tenx_mtx)",
            dataset=dataset,
            path=path,
        )

    def copy_out(tmp: Path, member: tarfile.TarInfo) -> Path:
        target = tmp / PurePosixPath(member.name).name
        with (
            reading(f"{path}:{member.name}", dataset, "copying the h5 member out of the tar"),
            archive.extractfile(member) as source,
            open(target, "wb") as sink,
        ):
            while chunk := source.read(1 << 24):
                sink.write(chunk)
        return target

    return [
        _H5File(
            PurePosixPath(m.name).name, f"{path}:{m.name}", name, lambda tmp, m=m: copy_out(tmp, m)
        )
        for m in members
    ]


def _h5_sample(item: _H5File, regex: re.Pattern | None) -> tuple[str, str] | None:
    """(sample, GSM accession) of an h5 file, or None when `regex` does not match its name."""
    gsm_match = _GSM.match(item.filename)
    gsm = gsm_match.group(1) if gsm_match else ""
    if regex is not None:
        match = regex.search(item.filename)
        return (match.group(1), gsm) if match else None
    sample, gsm = sample_from_prefix(_strip_h5_name(item.filename))
    return (sample or item.source), gsm


@register_reader("tenx_h5")
def read_tenx_h5(
    files: dict[str, Path],
    options: dict,
    dataset: str,
    *,
    keep_cells: Callable[[str], bool] | None = None,
) -> ad.AnnData:
    """10x Cell Ranger ``.h5`` matrices (one per sample), read with :func:`scanpy.read_10x_h5`.

    The files are loose sources or members of a tar archive (``GSE*_RAW.tar``; each member is
    copied to a temporary file, read, and deleted). Gene expression features only. The sample
    name comes from the file name: ``GSM123_tumour1_filtered_feature_bc_matrix.h5`` ->
    ``tumour1``, or the one group of ``member_pattern``.

    Options: ``source``, ``genome`` (for multi-genome files), ``member_pattern`` (a regular
    expression with one group, searched in each h5 file name: the group is the sample name;
    files it does not match are skipped and counted in the log), ``cell_id`` (a template of
    the cell IDs, :func:`format_cell_id`; default ``<sample>_<barcode>`` with several samples,
    the barcode with one).

    `keep_cells` (given by ingest when unannotated cells are dropped anyway,
    ``metadata.on_unmatched: drop``) keeps, sample by sample, only the cells whose ID it
    accepts, so that raw matrices (every droplet) are never stacked whole.
    """
    import tempfile

    import scanpy as sc

    pattern = options.get("member_pattern")
    regex = None
    if pattern:
        regex = re.compile(pattern)
        if regex.groups != 1:
            raise InputDataError(
                f"reader_options.member_pattern {pattern!r} must have exactly one group (the "
                "sample)",
                dataset=dataset,
            )
    template = options.get("cell_id")
    if template:
        check_cell_id_template(template, dataset=dataset)

    parts = []
    with contextlib.ExitStack() as stack:
        items = [
            item
            for name, path in select_sources(files, options, dataset).items()
            for item in _h5_files(name, path, stack, dataset)
        ]
        chosen = [(item, _h5_sample(item, regex)) for item in items]
        skipped = [item.filename for item, sample in chosen if sample is None]
        chosen = [(item, sample) for item, sample in chosen if sample is not None]
        if regex is not None:
            if not chosen:
                raise InputDataError(
                    f"reader_options.member_pattern {pattern!r} matches none of the {len(items)} "
                    f"h5 files (e.g. {', '.join(i.filename for i in items[:3])})",
                    dataset=dataset,
                )
            logger.info(
                "member_pattern %r: reading %d of %d h5 files (skipped e.g. %s)",
                pattern,
                len(chosen),
                len(items),
                ", ".join(skipped[:3]) or "none",
            )
        several = len(chosen) > 1
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="texflow-h5-")))
        for item, (sample, gsm) in chosen:
            path = item.materialise(tmp)
            with reading(item.origin, dataset, "reading the 10x h5 file"):
                adata = sc.read_10x_h5(path, genome=options.get("genome"), gex_only=True)
            if path.parent == tmp:
                path.unlink()
            barcodes = list(map(str, adata.obs_names))
            X = to_csr32(adata.X)
            if keep_cells is not None:
                ids = [
                    format_cell_id(template, sample=sample, barcode=b)
                    if template
                    else (f"{sample}_{b}" if several else b)
                    for b in barcodes
                ]
                keep = np.fromiter((keep_cells(i) for i in ids), dtype=bool, count=len(ids))
                logger.info(
                    "%s: %d of %d barcodes are cells of the metadata (kept)",
                    item.origin,
                    keep.sum(),
                    len(ids),
                )
                if not keep.any():
                    continue
                X = X[np.flatnonzero(keep)]
                barcodes = [b for b, k in zip(barcodes, keep, strict=True) if k]
            parts.append(
                SamplePart(
                    sample=sample,
                    gsm=gsm,
                    barcodes=barcodes,
                    gene_ids=list(map(str, adata.var.get("gene_ids", adata.var_names))),
                    symbols=list(map(str, adata.var_names)),
                    X=X,
                    origin=item.origin,
                )
            )
    if keep_cells is not None and not parts:
        raise InputDataError(
            f"none of the barcodes of the {len(chosen)} h5 file(s) is a cell of the metadata: "
            "compare the matrix cell IDs (reader_options.cell_id, member_pattern) with the "
            "metadata's join column (metadata.join_on, metadata.ignore_case)",
            dataset=dataset,
        )
    if template and several and "{sample}" not in template:
        logger.warning("reader_options.cell_id %r has no {sample}: barcodes may repeat", template)
    return combine_samples(parts, dataset=dataset, cell_id=template)


# ----------------------------------------------------------------------------------- tenx_mtx

_ROLE = re.compile(
    r"^(?P<prefix>.*?)(?P<role>matrix\.mtx|barcodes\.tsv|features\.tsv|genes\.tsv)(?:\.gz)?$"
)
_ROLE_BY_SOURCE_NAME = {
    "matrix": "matrix.mtx",
    "barcodes": "barcodes.tsv",
    "features": "features.tsv",
    "genes": "genes.tsv",
}


@dataclass
class _Member:
    """A file found loose, in a folder or in a tar archive."""

    name: str  # path inside the archive/folder, or the file name
    origin: str  # what to name in messages
    opener: Callable[[], IO[bytes]]


def _members(name: str, path: Path, stack: contextlib.ExitStack, dataset: str) -> list[_Member]:
    if path.is_dir():
        return [
            _Member(str(p.relative_to(path)), str(p), (lambda p=p: open(p, "rb")))
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
    if not path.exists():
        raise InputDataError("file is missing (was it downloaded?)", dataset=dataset, path=path)
    with reading(path, dataset, "opening the tar archive"):
        is_tar = tarfile.is_tarfile(path)
    if is_tar:
        with reading(path, dataset, "listing the tar archive"):
            archive = stack.enter_context(tarfile.open(path))
            members = [m for m in archive.getmembers() if m.isfile()]
        return [
            _Member(m.name, f"{path}:{m.name}", (lambda m=m: archive.extractfile(m)))
            for m in members
        ]
    # a loose file: decompression is decided by name below, so open the raw bytes
    return [_Member(path.name, str(path), (lambda: open(path, "rb")))]


def _group_triplets(
    members: list[tuple[str, _Member]], dataset: str
) -> dict[tuple[str, str], dict[str, _Member]]:
    """Group members into 10x triplets by folder + file-name prefix."""
    groups: dict[tuple[str, str], dict[str, _Member]] = {}
    for source_name, member in members:
        posix = PurePosixPath(member.name)
        match = _ROLE.match(posix.name)
        if match:
            prefix, role = match.group("prefix"), match.group("role")
        elif source_name in _ROLE_BY_SOURCE_NAME:
            prefix, role = "", _ROLE_BY_SOURCE_NAME[source_name]
        else:
            continue
        folder = "/".join(part for part in posix.parent.parts if part.lower() not in _GENERIC_DIRS)
        role = "features.tsv" if role == "genes.tsv" else role
        group = groups.setdefault((folder, prefix), {})
        if role in group:
            raise InputDataError(
                f"two {role} files for the same sample: {group[role].origin} and {member.origin}",
                dataset=dataset,
            )
        group[role] = member
    return groups


def _read_lines(member: _Member, dataset: str) -> list[list[str]]:
    with reading(member.origin, dataset, "reading"):
        with contextlib.closing(wrap_member(member.opener(), member.name)) as handle:
            text = handle.read().decode("utf-8")
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def _read_triplet(key: tuple[str, str], group: dict[str, _Member], dataset: str) -> SamplePart:
    folder, prefix = key
    missing = {"matrix.mtx", "barcodes.tsv", "features.tsv"} - set(group)
    if missing:
        found = ", ".join(m.origin for m in group.values())
        raise InputDataError(
            f"incomplete 10x triplet (prefix {prefix!r}): missing {', '.join(sorted(missing))} "
            f"(found {found})",
            dataset=dataset,
        )
    matrix = group["matrix.mtx"]
    barcodes = [row[0] for row in _read_lines(group["barcodes.tsv"], dataset)]
    features = _read_lines(group["features.tsv"], dataset)
    gene_ids = [row[0] for row in features]
    symbols = [row[1] if len(row) > 1 else row[0] for row in features]
    types = [row[2] if len(row) > 2 else "Gene Expression" for row in features]
    with reading(matrix.origin, dataset, "reading the Matrix Market file"):
        with contextlib.closing(wrap_member(matrix.opener(), matrix.name)) as handle:
            genes_by_cells = scipy.io.mmread(handle)
    if genes_by_cells.shape != (len(features), len(barcodes)):
        raise InputDataError(
            f"matrix is {genes_by_cells.shape[0]} x {genes_by_cells.shape[1]} but there are "
            f"{len(features)} features and {len(barcodes)} barcodes",
            dataset=dataset,
            path=matrix.origin,
        )
    X = to_csr32(sp.csr_matrix(genes_by_cells).T)
    keep = np.array([t == "Gene Expression" for t in types])
    if not keep.all():
        logger.info(
            "%s: keeping %d Gene Expression features, dropping %d others (%s)",
            matrix.origin,
            keep.sum(),
            (~keep).sum(),
            ", ".join(sorted(set(types) - {"Gene Expression"})),
        )
        X = X[:, np.flatnonzero(keep)]
        gene_ids = [g for g, k in zip(gene_ids, keep, strict=True) if k]
        symbols = [s for s, k in zip(symbols, keep, strict=True) if k]
    sample, gsm = sample_from_prefix(prefix)
    if not sample:
        sample, gsm = sample_from_prefix(folder.split("/")[-1] if folder else "")
    return SamplePart(
        sample=sample,
        gsm=gsm,
        barcodes=barcodes,
        gene_ids=gene_ids,
        symbols=symbols,
        X=X,
        origin=matrix.origin,
        barcodes_origin=group["barcodes.tsv"].origin,
    )


@register_reader("tenx_mtx")
def read_tenx_mtx(files: dict[str, Path], options: dict, dataset: str) -> ad.AnnData:
    """10x Matrix Market triplets: loose files, folders, or inside a ``GSE*_RAW.tar``.

    A triplet is ``matrix.mtx[.gz]``, ``barcodes.tsv[.gz]`` and ``features.tsv[.gz]`` (or the
    older ``genes.tsv[.gz]``), sharing a file-name prefix (``GSM123_sampleA_matrix.mtx.gz``) or
    a folder. Each triplet is one sample, named after its prefix without the GSM accession
    (kept in ``obs['gsm']``). Tar archives are read member by member, never unpacked to disk.
    Options: ``source`` (names of the sources to read), ``samples`` (list of sample names to
    keep).
    """
    with contextlib.ExitStack() as stack:
        members = [
            (name, member)
            for name, path in select_sources(files, options, dataset).items()
            for member in _members(name, path, stack, dataset)
        ]
        groups = _group_triplets(members, dataset)
        if not groups:
            raise InputDataError(
                "no 10x matrix.mtx / barcodes.tsv / features.tsv files found in "
                + ", ".join(str(p) for p in files.values()),
                dataset=dataset,
            )
        parts = [_read_triplet(key, groups[key], dataset) for key in sorted(groups)]
    wanted = options.get("samples")
    if wanted:
        unknown = set(wanted) - {p.sample for p in parts}
        if unknown:
            raise InputDataError(
                f"reader_options.samples names {sorted(unknown)}, not found among "
                f"{sorted(p.sample for p in parts)}",
                dataset=dataset,
            )
        parts = [p for p in parts if p.sample in wanted]
    return combine_samples(parts, dataset=dataset)


# ------------------------------------------------------------------------------ matrix_market

#: Matrix Market entries parsed at once (about 1.2 GB of int64/float32 arrays at most).
MTX_CHUNK_ENTRIES = 50_000_000
_MTX_ROLES = ("matrix", "barcodes", "features")


def _label_table(path: Path, column: str | None, dataset: str, what: str) -> list[str]:
    """The labels of a barcodes / features table: `column` of a table with a header line, or
    the first column (features: the second when there are two or more, as in 10x) without one."""
    sep = "," if path.name.removesuffix(".gz").endswith(".csv") else "\t"
    with reading(path, dataset, f"reading the {what} table"):
        frame = pd.read_csv(
            path, sep=sep, header=0 if column else None, dtype=str, keep_default_na=False
        )
    if column:
        if column not in frame:
            raise InputDataError(
                f"reader_options.{what}_column {column!r} is not a column of the {what} table "
                f"(header: {list(frame.columns)})",
                dataset=dataset,
                path=path,
            )
        return frame[column].tolist()
    index = 1 if what == "features" and frame.shape[1] > 1 else 0
    return frame.iloc[:, index].tolist()


def _mtx_header(handle: IO[str], path: Path, dataset: str) -> tuple[int, int, int]:
    banner = handle.readline().split()
    if (
        len(banner) < 5
        or banner[0].lower() != "%%matrixmarket"
        or banner[1:3] != ["matrix", "coordinate"]
        or banner[3] not in ("integer", "real")
        or banner[4] != "general"
    ):
        raise InputDataError(
            f"is not a Matrix Market 'matrix coordinate integer|real general' file (first line "
            f"{' '.join(banner)!r})",
            dataset=dataset,
            path=path,
        )
    line = handle.readline()
    while line.startswith("%"):
        line = handle.readline()
    try:
        n_rows, n_cols, n_entries = (int(x) for x in line.split())
    except ValueError:
        raise InputDataError(
            f"the size line of the Matrix Market file is {line.strip()!r}, not 'rows columns "
            "entries'",
            dataset=dataset,
            path=path,
        ) from None
    return n_rows, n_cols, n_entries


@register_reader("matrix_market")
def read_matrix_market(
    files: dict[str, Path],
    options: dict,
    dataset: str,
    *,
    keep_cells: Callable[[str], bool] | None = None,
) -> ad.AnnData:
    """One Matrix Market ``.mtx[.gz]`` with cell and gene label tables (tsv or csv, gzip or not).

    Sources named ``matrix``, ``barcodes`` and ``features``. The matrix is streamed in chunks of
    `MTX_CHUNK_ENTRIES` entries; with `keep_cells` (ingest gives it when unannotated cells are
    dropped anyway, ``metadata.on_unmatched: drop``) only the entries of those cells are kept,
    so a matrix far larger than memory can be read for the cells the metadata keep.

    Options: ``orientation`` (``auto``: from the matrix's size and the numbers of barcodes and
    features; ``genes_x_cells`` as 10x writes it; ``cells_x_genes``), ``barcodes_column`` /
    ``features_column`` (the column to read from a label table with a header line; without,
    the table has no header and its first column is read -- for features the second when
    there are two or more, as in 10x).
    """
    missing = [role for role in _MTX_ROLES if role not in files]
    if missing:
        raise InputDataError(
            f"reader matrix_market needs sources named {', '.join(_MTX_ROLES)}; missing "
            f"{', '.join(missing)} (sources: {', '.join(files)})",
            dataset=dataset,
        )
    path = files["matrix"]
    cells = _label_table(files["barcodes"], options.get("barcodes_column"), dataset, "barcodes")
    genes = _label_table(files["features"], options.get("features_column"), dataset, "features")
    check_unique_cells(cells, dataset=dataset, path=files["barcodes"])
    orientation = options.get("orientation", "auto")
    with reading(path, dataset, "reading the Matrix Market file"):
        with open_text(path, dataset) as handle:
            n_rows, n_cols, n_entries = _mtx_header(handle, path, dataset)
            shapes = {
                "genes_x_cells": (len(genes), len(cells)),
                "cells_x_genes": (len(cells), len(genes)),
            }
            if orientation == "auto":
                fits = [name for name, shape in shapes.items() if shape == (n_rows, n_cols)]
                orientation = fits[0] if len(fits) == 1 else None
                if orientation is None and len(fits) == 2:
                    raise InputDataError(
                        "as many barcodes as features: set reader_options.orientation",
                        dataset=dataset,
                        path=path,
                    )
            if orientation not in shapes or shapes[orientation] != (n_rows, n_cols):
                raise InputDataError(
                    f"the matrix is {n_rows} x {n_cols} but there are {len(cells)} barcodes and "
                    f"{len(genes)} features"
                    + (f" (reader_options.orientation: {orientation})" if orientation else ""),
                    dataset=dataset,
                    path=path,
                )
            cell_axis = 0 if orientation == "cells_x_genes" else 1
            keep = (
                np.fromiter((keep_cells(c) for c in cells), dtype=bool, count=len(cells))
                if keep_cells is not None
                else np.ones(len(cells), dtype=bool)
            )
            new_index = (np.cumsum(keep) - 1).astype(np.int32)
            parts, n_read = [], 0
            chunks = pd.read_csv(
                handle,
                sep=r"\s+",
                header=None,
                names=["row", "col", "value"],
                dtype={"row": np.int64, "col": np.int64, "value": np.float32},
                chunksize=MTX_CHUNK_ENTRIES,
            )
            for chunk in chunks:
                n_read += len(chunk)
                rows, cols = chunk["row"].to_numpy() - 1, chunk["col"].to_numpy() - 1
                if (
                    (rows < 0).any()
                    or (rows >= n_rows).any()
                    or (cols < 0).any()
                    or (cols >= n_cols).any()
                ):
                    raise InputDataError(
                        "an entry's row or column lies outside the size line's "
                        f"{n_rows} x {n_cols}",
                        dataset=dataset,
                        path=path,
                    )
                cell, gene = (rows, cols) if cell_axis == 0 else (cols, rows)
                chosen = keep[cell]
                values = chunk["value"].to_numpy()[chosen]
                del chunk, rows, cols
                # int32 indices: 12 bytes per kept entry until the CSR is built
                parts.append((new_index[cell[chosen]], gene[chosen].astype(np.int32), values))
    if n_read != n_entries:
        raise InputDataError(
            f"the size line announces {n_entries} entries but the file holds {n_read} "
            "(truncated download?)",
            dataset=dataset,
            path=path,
        )
    n_kept = int(keep.sum())
    if parts:
        cell_idx, gene_idx, values = (np.concatenate(x) for x in zip(*parts, strict=True))
        parts.clear()
    else:
        cell_idx = gene_idx = np.zeros(0, dtype=np.int64)
        values = np.zeros(0, dtype=np.float32)
    X = sp.csr_matrix(
        sp.coo_matrix((values, (cell_idx, gene_idx)), shape=(n_kept, len(genes))), dtype=np.float32
    )
    del cell_idx, gene_idx, values
    if keep_cells is not None:
        logger.info("%s: %d of %d cells are cells of the metadata (kept)", path, n_kept, len(cells))
    obs = pd.DataFrame(
        index=pd.Index([c for c, k in zip(cells, keep, strict=True) if k], dtype=str)
    )
    var = pd.DataFrame({"gene_ids": genes}, index=pd.Index(genes, dtype=str))
    return ad.AnnData(X=to_csr32(X), obs=obs, var=var)
