"""Normalisation, highly variable genes, PCA, optional batch correction, kNN graph, Leiden, UMAP.

Used by the cluster stage (on the QC-passing CD8 cells) and, as a quick first pass, by the gate
stage. Every parameter that depends on the number of cells (PCs, neighbours, HVGs) is capped by
what the data can support, and the cap is logged and recorded, so a 98-cell dataset gets
sensible settings rather than an error from deep inside a library.

Main entry point: :func:`run_clustering`.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import linalg, sparse
from sklearn.metrics import silhouette_score
from sklearn.utils.extmath import svd_flip

from ._numba_cache import cache_umap_kernels
from .errors import InputDataError
from .features import (
    cells_detected_per_gene,
    csr_sums,
    lognormalise_counts,
    pearson_residual_variances,
)
from .stage import SkipNotes, StageResult, texflow_uns
from .utils import knn_transformer, share_counts

logger = logging.getLogger(__name__)

VALUE_TYPES = ("counts", "tpm", "log_tpm", "lognorm")


@dataclass
class ClusterParams:
    """Parameters of the cluster stage (defaults and reasons:
    schemas/config/cluster.schema.yaml)."""

    n_top_genes: int = 2000
    hvg_flavor: str = "auto"
    n_pcs: int = 15
    n_neighbors: int = 15
    batch_correction: bool = False
    batch_key: str = "patient"
    resolutions: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0, 1.4])
    resolution: float | str = 1.0
    min_cells: int = 20
    silhouette_max_cells: int = 5000
    seed: int = 0

    @classmethod
    def from_config(cls, config: dict | None) -> ClusterParams:
        config = dict(config or {})
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in config.items() if key in known})

    def as_dict(self) -> dict:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["resolutions"] = [float(r) for r in self.resolutions]
        return values


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
        how = "normalize_total (to the median library size) + log1p"
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
        variances = pearson_residual_variances(adata.layers["counts"])
        adata.var["residual_variances"] = variances
        top = np.argsort(-np.nan_to_num(variances, nan=-np.inf), kind="stable")[:n_top]
        adata.var["highly_variable"] = False
        adata.var.iloc[top, adata.var.columns.get_loc("highly_variable")] = True
    elif flavor == "seurat_v3":
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", layer="counts", n_top_genes=n_top)
    else:
        sc.pp.highly_variable_genes(adata, flavor=flavor, n_top_genes=n_top)
    n_hvg = int(adata.var["highly_variable"].sum())
    logger.info("%d highly variable genes (flavour %s)", n_hvg, flavor)
    return flavor, n_hvg


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
    weights = np.asarray(adjacency[sources, targets]).ravel().tolist() if len(sources) else []
    return igraph.Graph(
        n=adjacency.shape[0],
        edges=list(zip(sources.tolist(), targets.tolist(), strict=True)),
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


def _silhouette(
    representation: np.ndarray, labels: np.ndarray, *, max_cells: int, seed: int
) -> float:
    if len(np.unique(labels)) < 2:
        return np.nan
    sample = min(len(labels), max_cells)
    return float(silhouette_score(representation, labels, sample_size=sample, random_state=seed))


def resolution_sweep(
    adata: ad.AnnData,
    *,
    resolutions: list[float],
    seed: int,
    representation: str = "X_pca",
    silhouette_max_cells: int = 5000,
) -> pd.DataFrame:
    """Leiden at each resolution; number of clusters, smallest cluster, modularity, silhouette.

    The silhouette (mean, on the representation the graph was built on) measures how well
    separated the clusters are; modularity is the Leiden objective on the kNN graph. Writes obs
    `leiden_<resolution>` for each resolution (removed again by :func:`run_clustering`).
    """
    rows = []
    graph = knn_igraph(adata)
    for resolution in resolutions:
        key = f"leiden_{resolution:g}"
        leiden(adata, resolution=resolution, seed=seed, key_added=key, graph=graph)
        labels = adata.obs[key].to_numpy()
        sizes = adata.obs[key].value_counts()
        rows.append(
            {
                "resolution": float(resolution),
                "n_clusters": int(sizes.size),
                "smallest_cluster": int(sizes.min()),
                "modularity": float(adata.uns.get(key, {}).get("modularity", np.nan)),
                "silhouette": _silhouette(
                    adata.obsm[representation], labels, max_cells=silhouette_max_cells, seed=seed
                ),
            }
        )
    return pd.DataFrame(rows)


def choose_resolution(sweep: pd.DataFrame, resolution: float | str) -> tuple[float, str]:
    """The resolution to use and why: the configured number, or the best silhouette ('auto')."""
    if resolution != "auto":
        return float(resolution), f"fixed in the config (cluster.resolution: {resolution})"
    usable = sweep[sweep["n_clusters"] >= 2].dropna(subset=["silhouette"])
    if usable.empty:
        best = float(sweep["resolution"].iloc[0])
        return best, "auto: no resolution gave two or more clusters; the lowest was used"
    best_row = usable.loc[usable["silhouette"].idxmax()]
    return float(best_row["resolution"]), (
        f"auto: highest mean silhouette ({best_row['silhouette']:.3f}) among the sweep"
    )


def run_clustering(
    adata: ad.AnnData,
    *,
    params: ClusterParams | None = None,
    dataset: str | None = None,
    key_added: str = "cluster",
) -> StageResult:
    """Normalise, HVGs, PCA, (Harmony), kNN, Leiden sweep, chosen clustering, UMAP; in place.

    Parameters
    ----------
    adata
        QC-passing CD8 cells (`cd8.h5ad`), X as given, `uns["texflow"]["value_type"]`.
    params
        Cluster parameters.
    dataset
        Dataset id for messages.
    key_added
        obs column of the chosen clustering.

    Returns
    -------
    StageResult
        Table ``resolution_sweep`` (one row per resolution: clusters, smallest cluster,
        modularity, silhouette; ``chosen`` marks the one used); notes: the ``cluster.*`` steps
        not run and why.

    Writes
    ------
    X log-normalised float32 CSR, ``layers["counts"]`` (count data), var ``highly_variable``,
    obsm ``X_pca`` (``X_pca_harmony``), ``X_umap``, obsp graph, obs ``<key_added>``
    (categorical strings "0", "1", ... by size), ``uns["texflow"]["params"]["cluster"]``,
    ``uns["texflow"]["cluster"]`` (what was used and why),
    ``uns["texflow"]["skipped"]["cluster.batch_correction"]``.

    Raises
    ------
    InputDataError
        Fewer than `params.min_cells` cells.
    """
    params = params or ClusterParams()
    meta = texflow_uns(adata)
    dataset = dataset or meta.get("dataset")
    if adata.n_obs < params.min_cells:
        raise InputDataError(
            f"{adata.n_obs} cells to cluster, fewer than the {params.min_cells} needed for a "
            "kNN graph and clusters worth labelling (cluster.min_cells)",
            dataset=dataset,
        )
    skipped = SkipNotes(adata)
    value_type = meta.get("value_type")
    how = normalise(adata, value_type=value_type)
    flavor, n_hvg = select_hvgs(
        adata, value_type=value_type, n_top_genes=params.n_top_genes, flavor=params.hvg_flavor
    )
    batch_key = _batch_key(adata, params=params, skipped=skipped)
    used = embed(
        adata,
        n_pcs=params.n_pcs,
        n_neighbors=params.n_neighbors,
        batch_key=batch_key,
        seed=params.seed,
    )
    sweep, resolution, why = _sweep_and_choose(
        adata, params=params, representation=used["representation"]
    )
    _relabel_by_size(adata, f"leiden_{resolution:g}", key_added)
    for column in [c for c in adata.obs if c.startswith("leiden_")]:
        del adata.obs[column]
        adata.uns.pop(column, None)
    sc.tl.umap(adata, random_state=params.seed)
    n_clusters = adata.obs[key_added].nunique()
    logger.info("resolution %g (%s): %d clusters", resolution, why, n_clusters)
    meta["params"]["cluster"] = params.as_dict()
    meta["cluster"] = {
        "normalisation": how,
        "hvg_flavor": flavor,
        "n_hvg": n_hvg,
        "n_pcs": used["n_pcs"],
        "n_neighbors": used["n_neighbors"],
        "representation": used["representation"],
        "resolution": resolution,
        "resolution_reason": why,
        "n_clusters": int(n_clusters),
        "notes": "; ".join(used["notes"]),
    }
    return StageResult("cluster", {"resolution_sweep": sweep}, dict(skipped.recorded))


def _batch_key(
    adata: ad.AnnData, *, params: ClusterParams, skipped: MutableMapping[str, str]
) -> str | None:
    """The obs column Harmony corrects by, or None (switched off, or the column is missing:
    the reason goes to `skipped`). Cells without a batch form one batch ``(unknown)``, written
    to that obs column."""
    if not params.batch_correction:
        skipped["cluster.batch_correction"] = (
            "switched off (cluster.batch_correction: false): correcting by patient would also "
            "remove real between-patient differences in state composition that the response "
            "comparison tests"
        )
        return None
    column = adata.obs.get(params.batch_key)
    if column is None or column.isna().all():
        skipped["cluster.batch_correction"] = (
            f"obs[{params.batch_key!r}] is missing: no batch correction"
        )
        return None
    if column.isna().any():
        adata.obs[params.batch_key] = column.astype("string").fillna("(unknown)").astype("category")
    return params.batch_key


def _sweep_and_choose(
    adata: ad.AnnData, *, params: ClusterParams, representation: str
) -> tuple[pd.DataFrame, float, str]:
    """The resolution sweep (`resolution_sweep`), the resolution chosen from it
    (`choose_resolution`) and why; a chosen resolution outside the sweep is added to it.

    Writes obs ``leiden_<resolution>`` for every resolution of the table.
    """
    sweep = resolution_sweep(
        adata,
        resolutions=list(params.resolutions),
        seed=params.seed,
        representation=representation,
        silhouette_max_cells=params.silhouette_max_cells,
    )
    resolution, why = choose_resolution(sweep, params.resolution)
    if resolution not in set(sweep["resolution"]):
        extra = resolution_sweep(
            adata, resolutions=[resolution], seed=params.seed, representation=representation,
            silhouette_max_cells=params.silhouette_max_cells,
        )  # fmt: skip
        sweep = pd.concat([sweep, extra], ignore_index=True).sort_values("resolution")
    sweep["chosen"] = sweep["resolution"] == resolution
    return sweep, resolution, why


def _relabel_by_size(adata: ad.AnnData, source: str, key_added: str) -> None:
    """Copy clustering `source` to `key_added` as categorical strings "0".. from the largest."""
    labels = adata.obs[source].astype(str)
    order = labels.value_counts().index
    mapping = {old: str(new) for new, old in enumerate(order)}
    adata.obs[key_added] = pd.Categorical(
        labels.map(mapping), categories=[str(i) for i in range(len(order))]
    )
