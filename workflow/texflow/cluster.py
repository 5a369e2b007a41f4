"""The cluster stage: the CD8 cells' embedding (`texflow.embedding`), optional batch correction,
a Leiden resolution sweep with the chosen resolution, and UMAP.

Every parameter that depends on the number of cells (PCs, neighbours, HVGs) is capped by what
the data can support, and the cap is logged and recorded, so a 98-cell dataset gets sensible
settings rather than an error from deep inside a library.

Main entry point: :func:`run_clustering`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import silhouette_score

from .contract import CHOSEN, MODULARITY, N_CLUSTERS, RESOLUTION, SILHOUETTE, SMALLEST_CLUSTER
from .embedding import (
    LOGNORM_OF_COUNTS,
    UmapBeside,
    embed,
    knn_igraph,
    leiden,
    lognorm_hvgs,
    normalise,
    select_hvgs,
)
from .errors import InputDataError
from .features import CountTotals, lognormalise_rows, normalize_total_divisors
from .stage import SkipNotes, StageResult, texflow_uns
from .utils import row_chunks, write_h5ad_by_rows

logger = logging.getLogger(__name__)


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
                RESOLUTION: float(resolution),
                N_CLUSTERS: int(sizes.size),
                SMALLEST_CLUSTER: int(sizes.min()),
                MODULARITY: float(adata.uns.get(key, {}).get(MODULARITY, np.nan)),
                SILHOUETTE: _silhouette(
                    adata.obsm[representation], labels, max_cells=silhouette_max_cells, seed=seed
                ),
            }
        )
    return pd.DataFrame(rows)


def choose_resolution(sweep: pd.DataFrame, resolution: float | str) -> tuple[float, str]:
    """The resolution to use and why: the configured number, or the best silhouette ('auto')."""
    if resolution != "auto":
        return float(resolution), f"fixed in the config (cluster.resolution: {resolution})"
    usable = sweep[sweep[N_CLUSTERS] >= 2].dropna(subset=[SILHOUETTE])
    if usable.empty:
        best = float(sweep[RESOLUTION].iloc[0])
        return best, "auto: no resolution gave two or more clusters; the lowest was used"
    best_row = usable.loc[usable[SILHOUETTE].idxmax()]
    return float(best_row[RESOLUTION]), (
        f"auto: highest mean silhouette ({best_row[SILHOUETTE]:.3f}) among the sweep"
    )


def run_clustering(
    adata: ad.AnnData,
    *,
    params: ClusterParams | None = None,
    dataset: str | None = None,
    key_added: str = "cluster",
    threads: int = 1,
    counts=None,
    totals: CountTotals | None = None,
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
    threads
        The stage's threads: with 2 or more, the UMAP runs in a worker process beside the
        resolution sweep (`embedding.UmapBeside`; the same layout as on one thread).
    counts
        The cells' raw counts read from disk (`utils.backed_csr` of ``cd8.h5ad``), when
        `streams_counts`: X of `adata` is then not used (None) and not written; the HVGs and
        their log-normalised values come from blocks of rows (`embedding.lognorm_hvgs`), the
        same numbers as in memory, and `write_clustered` writes X and the counts layer.
        Without it, X holds the values in memory and is log-normalised in place.
    totals
        `features.count_totals` of `counts`, if the caller has them (saves a pass).

    Returns
    -------
    StageResult
        Table ``resolution_sweep`` (one row per resolution: clusters, smallest cluster,
        modularity, silhouette; ``chosen`` marks the one used); notes: the ``cluster.*`` steps
        not run and why.

    Writes
    ------
    X log-normalised float32 CSR, ``layers["counts"]`` (count data) (not with `counts`:
    `write_clustered`), var ``highly_variable`` (and ``residual_variances``),
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
    umap = UmapBeside(threads=threads)  # the worker's imports run beside the normalisation
    skipped = SkipNotes(adata)
    value_type = meta.get("value_type")
    if counts is None:
        how = normalise(adata, value_type=value_type)
        flavor, n_hvg = select_hvgs(
            adata, value_type=value_type, n_top_genes=params.n_top_genes, flavor=params.hvg_flavor
        )
        embedded = adata
    else:
        if not streams_counts(value_type=value_type, params=params):
            raise ValueError(
                f"run_clustering: counts= needs count data and Pearson-residual HVGs, not "
                f"value_type {value_type!r} with hvg_flavor {params.hvg_flavor!r}"
            )
        embedded = lognorm_hvgs(adata, counts=counts, n_top_genes=params.n_top_genes, totals=totals)
        embedded.obs = adata.obs
        how, flavor, n_hvg = LOGNORM_OF_COUNTS, "pearson_residuals", embedded.n_vars
        meta["x"] = "lognorm"
    batch_key = _batch_key(adata, params=params, skipped=skipped)
    used = embed(
        embedded,
        n_pcs=params.n_pcs,
        n_neighbors=params.n_neighbors,
        batch_key=batch_key,
        seed=params.seed,
    )
    if embedded is not adata:
        _take_embedding(adata, embedded)
    umap.start(adata, seed=params.seed)
    sweep, resolution, why = _sweep_and_choose(
        adata, params=params, representation=used["representation"]
    )
    _relabel_by_size(adata, f"leiden_{resolution:g}", key_added)
    for column in [c for c in adata.obs if c.startswith("leiden_")]:
        del adata.obs[column]
        adata.uns.pop(column, None)
    umap.finish(adata)
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


def streams_counts(*, value_type: str, params: ClusterParams) -> bool:
    """Whether `run_clustering` can read the counts from disk (``counts=``): count data whose
    HVGs are picked by Pearson residuals, the flavour computed from blocks of rows
    (`embedding.lognorm_hvgs`); other value types and flavours are held in memory."""
    return value_type == "counts" and params.hvg_flavor in ("auto", "pearson_residuals")


def _take_embedding(adata: ad.AnnData, embedded: ad.AnnData) -> None:
    """Copy what `embed` wrote on the cells x HVGs `embedded` to `adata` (all genes), as
    `embed` on `adata` itself writes it: varm ``PCs`` zero outside the HVGs."""
    adata.obsm.update(embedded.obsm)
    adata.obsp.update(embedded.obsp)
    for key in ("pca", "neighbors"):
        adata.uns[key] = embedded.uns[key]
    loadings = embedded.varm["PCs"]
    adata.varm["PCs"] = np.zeros((adata.n_vars, loadings.shape[1]), dtype=loadings.dtype)
    adata.varm["PCs"][adata.var["highly_variable"].to_numpy(dtype=bool)] = loadings


def write_clustered(
    adata: ad.AnnData, path: str | os.PathLike, *, counts, totals: CountTotals
) -> None:
    """Write the stage's file from counts on disk, without its matrices in memory.

    The annotations of `adata` (X and layers not held), then X (the log-normalised counts,
    `features.lognormalise_rows`, the values `normalise` gives) and ``layers["counts"]``,
    block by block of rows (`utils.write_h5ad_by_rows`). Atomic.

    Parameters
    ----------
    adata
        The clustered cells (`run_clustering` with ``counts=``), X None.
    path
        ``clustered.h5ad``.
    counts
        The raw counts of `adata`'s cells, as given to `run_clustering`.
    totals
        `features.count_totals` of `counts` (every cell's total: the divisors).
    """
    divisors = normalize_total_divisors(totals.cells)
    texflow_uns(adata).pop("counts_layer", None)  # the counts are a layer of their own now
    chunks = (
        {"X": lognormalise_rows(block, divisors=divisors[rows]), "counts": block}
        for rows, block in row_chunks(counts)
    )
    write_h5ad_by_rows(adata, path, chunks=chunks)


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
    if resolution not in set(sweep[RESOLUTION]):
        extra = resolution_sweep(
            adata, resolutions=[resolution], seed=params.seed, representation=representation,
            silhouette_max_cells=params.silhouette_max_cells,
        )  # fmt: skip
        sweep = pd.concat([sweep, extra], ignore_index=True).sort_values(RESOLUTION)
    sweep[CHOSEN] = sweep[RESOLUTION] == resolution
    return sweep, resolution, why


def _relabel_by_size(adata: ad.AnnData, source: str, key_added: str) -> None:
    """Copy clustering `source` to `key_added` as categorical strings "0".. from the largest."""
    labels = adata.obs[source].astype(str)
    order = labels.value_counts().index
    mapping = {old: str(new) for new, old in enumerate(order)}
    adata.obs[key_added] = pd.Categorical(
        labels.map(mapping), categories=[str(i) for i in range(len(order))]
    )
