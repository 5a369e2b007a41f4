# Stage gate: qc.h5ad -> cd8.h5ad (CD8 T cells; temporary, read by the cluster stage) +
# tables/gating.tsv. Skipped (every cell kept,
# recorded) when the dataset config says cd8_sorted: true, unless almost no cell has CD8A/CD8B
# detected. When the gate stops, the gating table is kept in logs/{dataset}/gate.gating.tsv
# (beside the log, no output: Snakemake deletes a failed job's outputs). Logic:
# workflow/texflow/gating.py.


rule gate:
    input:
        h5ad=results("{dataset}", "qc.h5ad"),
    output:
        h5ad=temp(results("{dataset}", "cd8.h5ad")),
        table=report(
            results("{dataset}", "tables/gating.tsv"),
            caption="../report/gating.rst",
            category="Gating",
            labels={"dataset": "{dataset}", "table": "CD8 gating"},
        ),
    log:
        "logs/{dataset}/gate.log",
    benchmark:
        "logs/{dataset}/gate.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # OpenMP (scikit-learn's exact kNN), BLAS and numba use both; Snakemake caps it at --cores
    threads: 2
    resources:
        # true peak / input file size: 1.57 at 100k cells (3.13 of 1.99 GB), 1.46 at 500k (14.48 of 9.94 GB);
        # 1.41 at 100k (2.81 GB) after the fifth session; 0.74 at 100k (1.48 GB) since the counts stay
        # on disk (the HVG block, 0.39 GB, and 10k-row chunks); 0.36 at 1M (7.17 of 19.90 GB).
        # 0.6: 13.9 GB asked at 1M (2.0 asked 42 GB); benchmarks/README.md "1M cells"
        mem_mb=scaled_mem_mb(2000, 0.6),
        runtime=scaled_runtime(10, 20),
    params:
        gate=config["gate"],
        cd8_sorted=lambda wildcards: dataset_config(wildcards).get("cd8_sorted", False),
    script:
        "../scripts/gate.py"
