"""Cluster: results/{dataset}/cd8.h5ad -> clustered.h5ad, resolution sweep table, UMAP figures."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import cluster
from texflow.features import count_totals
from texflow.plotting import clusters as cluster_plots
from texflow.utils import backed_csr, read_h5ad, run_step, write_h5ad, write_tsv


def main(snakemake):
    dataset = snakemake.wildcards.dataset
    path = snakemake.input.h5ad
    params = cluster.ClusterParams.from_config(snakemake.params.cluster)
    adata = read_h5ad(path, layers=False, x=False)
    value_type = adata.uns["texflow"].get("value_type")
    with backed_csr(path, without_layers=True) as counts:
        # count data stay on disk (the HVG block alone in memory); other values are read whole
        on_disk = counts is not None and cluster.streams_counts(
            value_type=value_type, params=params
        )
        if not on_disk:
            adata = read_h5ad(path)
        totals = count_totals(counts) if on_disk else None
        sweep = cluster.run_clustering(
            adata,
            params=params,
            dataset=dataset,
            threads=snakemake.threads,
            counts=counts if on_disk else None,
            totals=totals,
        ).tables["resolution_sweep"]
        write_tsv(sweep, snakemake.output.sweep, float_format="%.4g")
        cluster_plots.umap_panels(adata, snakemake.output.umap_png)
        cluster_plots.resolution_sweep(sweep, snakemake.output.sweep_png)
        if on_disk:
            cluster.write_clustered(adata, snakemake.output.h5ad, counts=counts, totals=totals)
        else:
            write_h5ad(adata, snakemake.output.h5ad)


run_step(main, snakemake)  # noqa: F821
