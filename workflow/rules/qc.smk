# Stage qc: raw.h5ad -> qc.h5ad (QC-passing cells only; temporary, read by the gate) +
# per-sample QC table, per-cell QC table and figures. Logic: workflow/texflow/qc.py (per-sample MAD outliers) and
# workflow/texflow/doublets.py (Scrublet per sample).


rule qc:
    input:
        h5ad=results("{dataset}", "raw.h5ad"),
    output:
        h5ad=temp(results("{dataset}", "qc.h5ad")),
        summary=report(
            results("{dataset}", "tables/qc_summary.tsv"),
            caption="../report/qc_summary.rst",
            category="QC",
            labels={"dataset": "{dataset}", "table": "QC summary"},
        ),
        cells=results("{dataset}", "tables/qc_cells.tsv.gz"),
        metrics_png=report(
            results("{dataset}", "figures/qc_metrics.png"),
            caption="../report/qc_metrics.rst",
            category="QC",
            labels={"dataset": "{dataset}", "figure": "QC metrics"},
        ),
        doublets_png=report(
            results("{dataset}", "figures/qc_doublets.png"),
            caption="../report/qc_doublets.rst",
            category="QC",
            labels={"dataset": "{dataset}", "figure": "doublet scores"},
        ),
    log:
        "logs/{dataset}/qc.log",
    benchmark:
        "logs/{dataset}/qc.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # Scrublet scores two samples at once: one sample's kNN search (OpenMP) beside the next one's
    # steps before it, which run one sample at a time (the memory peak; a third of a sample's
    # time), so more threads would gain little. 100k cells: 152 -> 112 s (benchmarks/README.md).
    # Snakemake caps it at --cores.
    threads: 2
    resources:
        # true peak / input file size since the counts stay on disk: 0.82 at 100k cells (1.67 of
        # 2.04 GB), 0.51 at 1M (10.52 of 20.46 GB; six 167k-cell samples, two in Scrublet at once).
        # 1.0: 22.5 GB asked at 1M (2.0 asked 43 GB, more than a 24 GB node); benchmarks/README.md
        mem_mb=scaled_mem_mb(2000, 1.0),
        runtime=scaled_runtime(10, 20),
    params:
        qc=config["qc"],
    script:
        "../scripts/qc.py"
