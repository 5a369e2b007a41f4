"""The steps the gate, cluster and trajectory stages share: normalisation, highly variable genes,
PCA, the kNN graph and Leiden.

They sit below the stages so that no stage imports another (the gate's quick first pass and the
trajectory's lineage PCA run the same steps as the cluster stage, on other cells). Every size that
depends on the number of cells (PCs, neighbours, HVGs) is capped by what the data can support
(:func:`capped_sizes`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import linalg, sparse
from sklearn.utils.extmath import svd_flip

from ._numba_cache import cache_umap_kernels
from .errors import InputDataError
from .features import (
    CountTotals,
    cells_detected_per_gene,
    count_totals,
    csr_sums,
    lognormalise_counts,
    pearson_residual_variances,
)
from .stage import texflow_uns
from .utils import knn_transformer, share_counts

logger = logging.getLogger(__name__)

VALUE_TYPES = ("counts", "tpm", "log_tpm", "lognorm")

#: How count data are log-normalised (`normalise`, `features.lognormalise_counts`), as recorded.
LOGNORM_OF_COUNTS = "normalize_total (to the median library size) + log1p"


def normalise(adata: ad.AnnData, *, value_type: str) -> str:
    """Make X log-normalised float32 CSR according to `value_type`; return what was done.

    counts: `normalize_total` (median library size) + `log1p`, raw counts kept in
    `layers["counts"]`; tpm: `log1p`; log_tpm / lognorm: used as they are.
    Writes X, `layers["counts"]` (counts only) and `uns["texflow"]["x"] = "lognorm"`.
    """
    if value_type not in VALUE_TYPES:
        raise InputDataError(f"value_type {value_type!r} is not one of {', '.join(VALUE_TYPES)}")
    if texflow_uns(adata).get("x") == "lognorm":
        return "already log-normalised"
    if value_type == "counts" and "counts" not in adata.layers:
        share_counts(adata)
    # X becomes a new matrix: the counts layer may be the same one (share_counts), and the
    # normalisation works in place
    if value_type == "counts":
        adata.X = lognormalise_counts(adata.X)
        how = LOGNORM_OF_COUNTS
    else:
        adata.X = sparse.csr_matrix(adata.X, dtype=np.float32, copy=True)
        how = f"{value_type} used as given"
        if value_type == "tpm":
            sc.pp.log1p(adata)
            how = "log1p of TPM"
    adata.uns.pop("log1p", None)
    texflow_uns(adata)["x"] = "lognorm"
    return how


def select_hvgs(
    adata: ad.AnnData, *, value_type: str, n_top_genes: int, flavor: str = "auto"
) -> tuple[str, int]:
    """Flag highly variable genes in `var["highly_variable"]`; return (flavour, n genes).

    `flavor="auto"`: on counts, Pearson residuals of the raw counts (Lause et al. 2021 Genome
    Biol; the ranking of scanpy.experimental's flavour, computed by
    `pearson_residual_variances`, also written to var `residual_variances`), which model UMI
    sampling directly -- Seurat v3's flavour would be
    the other count-based choice but needs scikit-misc, not in the lock; on TPM/log values, the
    dispersion-based 'seurat' flavour on the log values, which is what it was designed for.
    `n_top_genes` is capped by the number of genes expressed.
    """
    expressed = int((cells_detected_per_gene(adata.X) > 0).sum())
    n_top = int(min(n_top_genes, expressed))
    if flavor == "auto":
        flavor = "pearson_residuals" if value_type == "counts" else "seurat"
    if flavor in ("pearson_residuals", "seurat_v3") and "counts" not in adata.layers:
        raise InputDataError(f"HVG flavour {flavor} needs raw counts in layers['counts']")
    if flavor == "pearson_residuals":
        _flag_top_residual_variances(
            adata, pearson_residual_variances(adata.layers["counts"]), n_top=n_top
        )
    elif flavor == "seurat_v3":
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", layer="counts", n_top_genes=n_top)
    else:
        sc.pp.highly_variable_genes(adata, flavor=flavor, n_top_genes=n_top)
    n_hvg = int(adata.var["highly_variable"].sum())
    logger.info("%d highly variable genes (flavour %s)", n_hvg, flavor)
    return flavor, n_hvg


def _flag_top_residual_variances(adata: ad.AnnData, variances: np.ndarray, *, n_top: int) -> None:
    """var ``residual_variances`` and ``highly_variable`` (the `n_top` largest variances; ties
    in gene order, as scanpy's stable sort)."""
    adata.var["residual_variances"] = variances
    top = np.argsort(-np.nan_to_num(variances, nan=-np.inf), kind="stable")[:n_top]
    adata.var["highly_variable"] = False
    adata.var.iloc[top, adata.var.columns.get_loc("highly_variable")] = True


def lognorm_hvgs(
    adata: ad.AnnData,
    *,
    counts,
    n_top_genes: int,
    totals: CountTotals | None = None,
    chunk_rows: int | None = None,
) -> ad.AnnData:
    """HVGs of raw counts by Pearson residuals and their log-normalised values, with the counts
    read `chunk_rows` rows at a time (from disk, or from memory).

    The HVGs of ``select_hvgs(flavor="pearson_residuals")`` (the `n_top_genes` largest residual
    variances, capped by the genes detected) and the HVG columns of
    ``lognormalise_counts(counts)`` (normalize_total to the median library size of all cells,
    log1p), to the last bit, without the counts in memory: one pass for the totals
    (`features.count_totals`), one for the residuals' corrections, one that fills the HVG
    block (`features.lognormalise_counts` with `columns`). Extra memory: the block, one chunk
    of rows and O(cells + genes) sums. The PCA input of the gate's first pass and the cluster
    stage (`embed`).

    Parameters
    ----------
    adata
        The cells and genes of `counts` (X may be None): its var gets the HVG flags.
    counts
        Raw counts, cells x genes: an anndata backed CSR dataset (`utils.backed_csr`) or a
        matrix in memory (anything `scipy.sparse.csr_matrix` takes).
    n_top_genes
        HVGs to select (capped by the genes with any count).
    totals
        `features.count_totals` of `counts`, if the caller has them (saves a pass).
    chunk_rows
        Rows read at a time (default `utils.COUNTS_CHUNK_ROWS`); the result does not depend
        on it.

    Returns
    -------
    AnnData
        Cells x HVGs (in gene order): X log-normalised float32 CSR, var ``highly_variable``
        (True), obs names of `adata`.

    Writes
    ------
    var ``residual_variances`` and ``highly_variable`` of `adata`.
    """
    if tuple(counts.shape) != tuple(adata.shape):
        raise ValueError(f"lognorm_hvgs: counts are {counts.shape}, adata is {adata.shape}")
    if totals is None:
        totals = count_totals(counts, chunk_rows=chunk_rows)
        logger.info("count totals of %d cells x %d genes", *counts.shape)
    n_top = int(min(n_top_genes, int((totals.detected > 0).sum())))
    variances = pearson_residual_variances(counts, totals=totals, chunk_rows=chunk_rows)
    _flag_top_residual_variances(adata, variances, n_top=n_top)
    columns = np.flatnonzero(adata.var["highly_variable"].to_numpy())
    values = lognormalise_counts(counts, columns=columns, totals=totals, chunk_rows=chunk_rows)
    logger.info("%d highly variable genes (flavour pearson_residuals)", columns.size)
    var = pd.DataFrame({"highly_variable": True}, index=adata.var_names[columns])
    return ad.AnnData(values, obs=pd.DataFrame(index=adata.obs_names), var=var)


def capped_sizes(n_cells: int, n_hvg: int, *, n_pcs: int, n_neighbors: int) -> tuple[int, int]:
    """(n_pcs, n_neighbors) that the number of cells and HVGs can support.

    PCA needs n_pcs < min(cells, genes); a kNN graph needs fewer neighbours than cells,
    and on tiny data fewer neighbours keep small groups from being absorbed (a fifth of the
    cells at most).
    """
    pcs = int(max(2, min(n_pcs, n_cells - 1, n_hvg - 1)))
    neighbors = int(
        max(2, min(n_neighbors, n_cells // 5 if n_cells < 5 * n_neighbors else n_neighbors))
    )
    return pcs, neighbors


#: Rows of X made dense at a time by `pca`: 8,192 x 2,000 HVGs in float32 is 66 MB. Blocks of
#: 2,048 rows took 1.4x as long (more, smaller matrix products; measured at 92k cells).
PCA_BLOCK_ROWS = 8192


def pca(adata: ad.AnnData, *, n_comps: int, mask_var: str | None = "highly_variable") -> None:
    """Exact PCA of X (of the `mask_var` genes) from the eigenvectors of its covariance matrix.

    The principal components of scanpy's default (ARPACK on the implicitly centred sparse
    matrix, `sklearn.decomposition.PCA`), found the way of sklearn's ``covariance_eigh`` solver
    and scanpy's dask PCA: the genes x genes covariance is summed over blocks of rows, each
    made dense and centred (float32 products, float64 sums), then `scipy.linalg.eigh` gives its
    top `n_comps` eigenvectors. On the gate's 92k cells x 2,000 HVGs (100k benchmark, 2 cores),
    `scanpy.pp.pca` took 16.6 s in ARPACK's single-threaded sparse products, this 3.5 s, with
    the same components: |correlation| of every PC with ARPACK's >= 0.99999995, same signs.
    On a small sparse sample, its loadings are within 2e-6 of the float64 eigenvectors and
    ARPACK's (float32 iterations) within 3e-5 (tests/unit/test_cluster.py). Extra memory: two
    blocks and the covariance, not a dense copy of X.

    Signs follow sklearn's (``svd_flip(u_based_decision=False)``: each component's largest
    loading is positive), so the coordinates match ARPACK's, not only up to sign.

    Writes obsm ``X_pca`` (float32), varm ``PCs`` (zero for genes outside `mask_var`) and uns
    ``pca`` (``variance``, ``variance_ratio``, ``params``), the slots of `scanpy.pp.pca`.
    """
    mask = (
        adata.var[mask_var].to_numpy(dtype=bool)
        if mask_var is not None
        else np.ones(adata.n_vars, bool)
    )
    matrix = adata.X[:, mask] if not mask.all() else adata.X
    n_cells, n_genes = matrix.shape
    if not 0 < n_comps < min(n_cells, n_genes):
        raise ValueError(f"pca: n_comps={n_comps} must be in [1, {min(n_cells, n_genes) - 1}]")
    if sparse.issparse(matrix):  # float64 sums without scipy's float64 copy of the data
        matrix = sparse.csr_matrix(matrix)
        mean = csr_sums(matrix.data, matrix.indices, matrix.indptr, n_genes)[1] / n_cells
    else:
        mean = np.mean(matrix, axis=0, dtype=np.float64)
    mean32 = mean.astype(np.float32)
    covariance = np.zeros((n_genes, n_genes))
    for start in range(0, n_cells, PCA_BLOCK_ROWS):
        block = matrix[start : start + PCA_BLOCK_ROWS]
        block = (
            np.asarray(block.toarray() if sparse.issparse(block) else block, dtype=np.float32)
            - mean32
        )
        covariance += block.T @ block
    covariance /= n_cells - 1
    variance, vectors = linalg.eigh(covariance, subset_by_index=[n_genes - n_comps, n_genes - 1])
    variance, components = variance[::-1], vectors[:, ::-1].T
    _, components = svd_flip(None, components, u_based_decision=False)
    loadings = components.T.astype(np.float32)
    coordinates = np.asarray(matrix @ loadings) - mean32 @ loadings
    adata.obsm["X_pca"] = coordinates.astype(np.float32, copy=False)
    adata.varm["PCs"] = np.zeros((adata.n_vars, n_comps))
    adata.varm["PCs"][mask] = components.T
    adata.uns["pca"] = {
        "params": {
            "zero_center": True,
            "use_highly_variable": mask_var == "highly_variable",
            "mask_var": mask_var,
        },
        "variance": variance,
        "variance_ratio": variance / np.trace(covariance),
    }


def embed(
    adata: ad.AnnData,
    *,
    n_pcs: int,
    n_neighbors: int,
    batch_key: str | None = None,
    seed: int = 0,
) -> dict:
    """PCA on the HVGs, optional Harmony by `batch_key`, kNN graph.

    Writes obsm `X_pca` (and `X_pca_harmony`), uns `pca`, obsp `distances`/`connectivities`.
    Returns what was used (n_pcs, n_neighbors, representation, notes).
    """
    n_hvg = int(adata.var["highly_variable"].sum())
    pcs, neighbors = capped_sizes(adata.n_obs, n_hvg, n_pcs=n_pcs, n_neighbors=n_neighbors)
    notes = []
    if pcs != n_pcs:
        notes.append(f"n_pcs capped from {n_pcs} to {pcs} ({adata.n_obs} cells, {n_hvg} HVGs)")
    if neighbors != n_neighbors:
        notes.append(f"n_neighbors capped from {n_neighbors} to {neighbors} ({adata.n_obs} cells)")
    for note in notes:
        logger.info(note)
    pca(adata, n_comps=pcs)
    representation = "X_pca"
    if batch_key:
        n_batches = adata.obs[batch_key].nunique()
        if n_batches < 2:
            notes.append(f"batch correction not run: one {batch_key} only")
        else:
            sc.external.pp.harmony_integrate(adata, batch_key, random_state=seed, verbose=False)
            representation = "X_pca_harmony"
    cache_umap_kernels()
    sc.pp.neighbors(
        adata,
        n_neighbors=neighbors,
        n_pcs=pcs,
        use_rep=representation,
        transformer=knn_transformer(adata.n_obs),
        random_state=seed,
    )
    return {
        "n_pcs": pcs,
        "n_neighbors": neighbors,
        "representation": representation,
        "notes": notes,
    }


def knn_igraph(adata: ad.AnnData):
    """The undirected, weighted igraph of ``obsp["connectivities"]``, as ``sc.tl.leiden`` builds it.

    One edge per non-zero entry, in the order of ``nonzero()`` (so each neighbour pair appears in
    both directions, as in scanpy's graph), weights in the edge attribute ``weight``: the
    vertices, edges, order and weights ``sc.tl.leiden`` (scanpy 1.12) builds, through igraph's
    public constructor. The Leiden result depends on the edge order, so it must not change.
    """
    import igraph

    adjacency = adata.obsp["connectivities"]
    sources, targets = adjacency.nonzero()
    weights = np.asarray(adjacency[sources, targets]).ravel() if len(sources) else []
    # the edges as one (edges x 2) array, not a list of tuples (at 92k cells 0.1 GB less)
    return igraph.Graph(
        n=adjacency.shape[0],
        edges=np.column_stack([sources, targets]),
        directed=False,
        edge_attrs={"weight": weights},
    )


class _IgraphRandom:
    """A seeded random source for igraph with the draws scanpy's ``sc.tl.leiden`` makes.

    igraph asks its generator for ``getrandbits``, ``randint``, ``random`` and ``gauss``
    (:func:`igraph.set_random_number_generator`); scanpy answers them from a
    ``numpy.random.RandomState(seed)``, so the same answers here give the same partition.
    """

    def __init__(self, seed: int) -> None:
        self._rng = np.random.RandomState(seed)

    def getrandbits(self, k: int) -> int:
        return self._rng.tomaxint() & ((1 << k) - 1)

    def randint(self, a: int, b: int) -> int:
        return self._rng.randint(a, b + 1)

    def random(self) -> float:
        return self._rng.random()

    def gauss(self, mu: float, sigma: float) -> float:
        return self._rng.normal(mu, sigma)


@contextmanager
def _igraph_seeded(seed: int):
    """igraph draws from `_IgraphRandom(seed)` inside the block, from Python's `random` after."""
    import random

    import igraph

    igraph.set_random_number_generator(_IgraphRandom(seed))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)


def leiden(adata: ad.AnnData, *, resolution: float, seed: int, key_added: str, graph=None) -> None:
    """Leiden (igraph flavour, fixed seed) on the kNN graph into `obs[key_added]`.

    The steps and arguments of ``sc.tl.leiden(flavor="igraph", n_iterations=2, directed=False)``,
    labels and modularity identical (tested), through igraph's public API; `graph`
    (:func:`knn_igraph`) lets a resolution sweep build the igraph once, where scanpy rebuilds it
    in every call (~0.7 s per call at 60k cells).

    Writes obs `key_added` (categorical strings) and uns `key_added` (params, modularity).
    """
    graph = knn_igraph(adata) if graph is None else graph
    with _igraph_seeded(seed):
        partition = graph.community_leiden(
            objective_function="modularity", weights="weight", resolution=resolution, n_iterations=2
        )
    groups = np.array(partition.membership)
    # memberships are 0..k-1, so numeric order is scanpy's natural-sort order of the labels
    adata.obs[key_added] = pd.Categorical(
        values=groups.astype("U"), categories=[str(g) for g in np.unique(groups)]
    )
    adata.uns[key_added] = {
        "params": {"resolution": resolution, "random_state": seed, "n_iterations": 2},
        "modularity": partition.modularity,
    }


#: The worker process of `UmapBeside`: texflow's imports (and numba cache) as in a rule process,
#: then, for each input file named on stdin, ``sc.tl.umap`` of the AnnData in it.
_UMAP_WORKER = """
import pickle, sys
sys.path.insert(0, sys.argv[1])
import texflow
if sys.argv[2] == "cache":
    texflow.enable_numba_cache()
from texflow import embedding
embedding._umap_worker(sys.stdin)
"""


def _umap_worker(requests) -> None:
    """The loop of `UmapBeside`'s worker: one line per job, naming its input and output files."""
    import pickle

    import numba

    cache_umap_kernels()
    for line in requests:
        source, target = line.rstrip("\n").split("\t")
        with open(source, "rb") as handle:
            light, seed, numba_threads = pickle.load(handle)
        numba.set_num_threads(numba_threads)
        sc.tl.umap(light, random_state=seed)
        with open(target, "wb") as handle:
            pickle.dump((light.obsm["X_umap"], light.uns["umap"]), handle)
        print("done", flush=True)


class UmapBeside:
    """``sc.tl.umap`` of an AnnData's kNN graph in a worker process, beside this one's next steps.

    The cluster stage's UMAP (seeded, so umap-learn lays it out on one thread: ~29 s of the
    stage's ~62 s at 60k cells) and its Leiden sweep (igraph, one thread) need the same kNN graph
    and not each other. With ``threads >= 2`` the UMAP runs in a worker process on the second
    core: the worker starts (and imports scanpy) when this object is made, gets the graph, the
    representation and the seed at `start`, and `finish` writes its result. The worker runs
    ``sc.tl.umap`` on the same arrays with this process's thread settings (environment, numba
    threads), so the layout is the one this process would compute, bit for bit (tested); with
    one thread `finish` runs ``sc.tl.umap`` here. The worker ends when this process closes its
    pipe (`finish`, or this process's end).

    Parameters
    ----------
    threads
        The stage's threads; below 2, no worker.
    """

    def __init__(self, *, threads: int) -> None:
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        from . import _numba_cache

        self._seed: int | None = None
        self._process = None
        if int(threads or 1) < 2:
            return
        self._folder = tempfile.TemporaryDirectory(prefix="texflow-umap-")
        self._stderr = open(Path(self._folder.name) / "stderr.txt", "w+b")  # noqa: SIM115
        workflow = str(Path(__file__).resolve().parent.parent)
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _UMAP_WORKER,
                workflow,
                "cache" if _numba_cache._enabled else "no-cache",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def start(self, adata: ad.AnnData, *, seed: int) -> None:
        """Send `adata`'s kNN graph (obsp, uns ``neighbors``) and representation to the worker."""
        self._seed = seed
        if self._process is None:
            return
        import pickle
        from pathlib import Path

        import numba

        neighbors = adata.uns["neighbors"]
        params = neighbors.get("params", {})
        rep = params.get("use_rep") or "X_pca"
        light = ad.AnnData(
            obs=pd.DataFrame(index=adata.obs_names),
            obsm={rep: adata.obsm[rep]},
            obsp={
                neighbors[key]: adata.obsp[neighbors[key]]
                for key in ("connectivities_key", "distances_key")
            },
            uns={"neighbors": neighbors},
        )
        folder = Path(self._folder.name)
        source, self._target = folder / "input.pkl", folder / "output.pkl"
        with open(source, "wb") as handle:
            pickle.dump((light, seed, numba.get_num_threads()), handle, pickle.HIGHEST_PROTOCOL)
        self._process.stdin.write(f"{source}\t{self._target}\n")
        self._process.stdin.flush()

    def finish(self, adata: ad.AnnData) -> None:
        """Write obsm ``X_umap`` and uns ``umap`` to `adata`, as ``sc.tl.umap`` writes them."""
        if self._seed is None:
            raise RuntimeError("UmapBeside.finish before start")
        if self._process is None:
            sc.tl.umap(adata, random_state=self._seed)
            return
        import pickle

        done = False
        for line in self._process.stdout:  # until the worker's "done" (or its end)
            if line.strip() == "done":
                done = True
                break
        self._process.stdin.close()
        code = self._process.wait()
        if not done or code != 0:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"UMAP worker process failed (exit {code}):\n{tail}")
        with open(self._target, "rb") as handle:
            layout, record = pickle.load(handle)
        self._stderr.close()
        self._folder.cleanup()
        adata.obsm["X_umap"] = layout
        adata.uns["umap"] = record
