# Stage trajectory: pseudotime over the exhausted lineage (Tpex -> Tex_int -> Tex_term),
# root chosen from the data, with a root-sensitivity check; an annotation file (no matrix).
# Logic: workflow/texflow/trajectory.py.


rule trajectory:
    input:
        h5ad=results("{dataset}", "clustered.h5ad"),
        states=results("{dataset}", "annotations/states.h5ad"),
    output:
        annotations=temp(results("{dataset}", "annotations/trajectory.h5ad")),
        root_sensitivity=report(
            results("{dataset}", "tables/root_sensitivity.tsv"),
            caption="../report/root_sensitivity.rst",
            category="Trajectory",
            labels={"dataset": "{dataset}", "table": "root sensitivity"},
        ),
        figure=report(
            results("{dataset}", "figures/pseudotime.png"),
            caption="../report/pseudotime.rst",
            category="Trajectory",
            labels={"dataset": "{dataset}", "figure": "pseudotime"},
        ),
    log:
        "logs/{dataset}/trajectory.log",
    benchmark:
        "logs/{dataset}/trajectory.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # OpenMP (scikit-learn's exact kNN), BLAS and numba use both; Snakemake caps it at --cores
    threads: 2
    resources:
        # true peak / input file size: 0.87 at 100k cells (2.24 of 2.58 GB), 0.80 at 500k (10.48 of 13.02 GB),
        # 18.97 GB at 1M (~0.73). 0.8: ~23 GB asked at 1M (1.2 asked ~33 GB, more than a 24 GB node);
        # benchmarks/README.md
        mem_mb=scaled_mem_mb(2000, 0.8),
        runtime=scaled_runtime(15, 20),
    params:
        trajectory=config["trajectory"],
        extra_file=config["programs"]["extra_file"],
    script:
        "../scripts/trajectory.py"
