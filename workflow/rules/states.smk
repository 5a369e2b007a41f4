# Stage states: per-cell UCell scores of the state programs and one label per cluster (Tpex,
# Tex_int, Tex_term, naive_like, effector_memory, other_cd8 or ambiguous) with a margin-based
# confidence, written as an annotation file (no matrix; texflow.utils.write_annotations).
# Logic: workflow/texflow/states.py.


rule states:
    input:
        h5ad=results("{dataset}", "clustered.h5ad"),
    output:
        annotations=temp(results("{dataset}", "annotations/states.h5ad")),
        cluster_states=report(
            results("{dataset}", "tables/cluster_states.tsv"),
            caption="../report/cluster_states.rst",
            category="States",
            labels={"dataset": "{dataset}", "table": "cluster states"},
        ),
        coverage=report(
            results("{dataset}", "tables/signature_coverage.tsv"),
            caption="../report/signature_coverage.rst",
            category="States",
            labels={"dataset": "{dataset}", "table": "signature coverage"},
        ),
        summary=results("{dataset}", "tables/cluster_program_scores.tsv"),
        figure=report(
            results("{dataset}", "figures/state_markers_dotplot.png"),
            caption="../report/state_markers_dotplot.rst",
            category="States",
            labels={"dataset": "{dataset}", "figure": "state markers"},
        ),
    log:
        "logs/{dataset}/states.log",
    benchmark:
        "logs/{dataset}/states.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # UCell ranks cells in parallel (numba prange): 4.7 -> 3.6 s for 60k cells on 2 threads
    threads: 2
    resources:
        # true peak / input file size: 0.68 at 100k cells (1.74 of 2.57 GB), 0.52 at 500k (6.68 of 12.97 GB),
        # 13.62 GB at 1M (~0.5). 0.75: ~21 GB asked at 1M (1.0 asked more than a 24 GB node); benchmarks/README.md
        mem_mb=scaled_mem_mb(2000, 0.75),
        runtime=scaled_runtime(10, 10),
    params:
        states=config["states"],
        extra_file=config["programs"]["extra_file"],
    script:
        "../scripts/states.py"
