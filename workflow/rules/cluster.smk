# Stage cluster: cd8.h5ad -> clustered.h5ad (X log-normalised, layers["counts"], PCA, kNN graph,
# Leiden `cluster`, UMAP) + tables/resolution_sweep.tsv + UMAP figures. clustered.h5ad is the
# matrix file of every later stage (they write only annotations) and goes into final.h5ad;
# temporary. Logic: workflow/texflow/cluster.py.


rule cluster:
    input:
        h5ad=results("{dataset}", "cd8.h5ad"),
    output:
        h5ad=temp(results("{dataset}", "clustered.h5ad")),
        sweep=report(
            results("{dataset}", "tables/resolution_sweep.tsv"),
            caption="../report/resolution_sweep.rst",
            category="Clusters",
            labels={"dataset": "{dataset}", "table": "resolution sweep"},
        ),
        umap_png=report(
            results("{dataset}", "figures/umap_clusters.png"),
            caption="../report/umap_clusters.rst",
            category="Clusters",
            labels={"dataset": "{dataset}", "figure": "UMAP"},
        ),
        sweep_png=results("{dataset}", "figures/resolution_sweep.png"),
    log:
        "logs/{dataset}/cluster.log",
    benchmark:
        "logs/{dataset}/cluster.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # OpenMP (scikit-learn's exact kNN), BLAS and numba use both; Snakemake caps it at --cores
    threads: 2
    resources:
        # true peak / input file size: 2.38 at 100k cells (3.04 of 1.28 GB), 2.21 at 500k (14.29 of 6.46 GB);
        # 2.0 at 100k (2.56 GB) after the fifth session; 1.34 at 100k (1.71 GB) since count data stay on
        # disk (the HVG block alone in memory); ~0.5 at 1M (6.11 GB, 604k cells). 1.0: ~15 GB asked
        # at 1M (3.0 asked ~40 GB); benchmarks/README.md "1M cells"
        mem_mb=scaled_mem_mb(2000, 1.0),
        runtime=scaled_runtime(10, 30),
    params:
        cluster=config["cluster"],
    script:
        "../scripts/cluster.py"
