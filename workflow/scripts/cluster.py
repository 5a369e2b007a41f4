"""Cluster: results/{dataset}/cd8.h5ad -> clustered.h5ad, resolution sweep table, UMAP figures."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import cluster
from texflow.plotting import clusters as cluster_plots
from texflow.utils import read_h5ad, run_step, write_h5ad, write_tsv


def main(snakemake):
    dataset = snakemake.wildcards.dataset
    adata = read_h5ad(snakemake.input.h5ad)
    params = cluster.ClusterParams.from_config(snakemake.params.cluster)
    sweep = cluster.run_clustering(
        adata, params=params, dataset=dataset, threads=snakemake.threads
    ).tables["resolution_sweep"]
    write_tsv(sweep, snakemake.output.sweep, float_format="%.4g")
    cluster_plots.umap_panels(adata, snakemake.output.umap_png)
    cluster_plots.resolution_sweep(sweep, snakemake.output.sweep_png)
    write_h5ad(adata, snakemake.output.h5ad)


run_step(main, snakemake)  # noqa: F821
