# Stage truth (simulated datasets only, dataset file `simulated: true`): the run's answer beside
# the truth texflow.simulate planted, for the dataset's page. Logic: workflow/texflow/truth.py.


rule truth:
    input:
        manifest=f"{DOWNLOADS}/{{dataset}}/manifest.tsv",
        final=results("{dataset}", "final.h5ad"),
        response=results("{dataset}", "tables/response_comparison.tsv"),
        associations=results("{dataset}", "tables/associations.tsv"),
    output:
        table=report(
            results("{dataset}", "tables/truth_recovery.tsv"),
            caption="../report/truth_recovery.rst",
            category="Simulated truth",
            labels={"dataset": "{dataset}", "table": "truth_recovery"},
        ),
    log:
        "logs/{dataset}/truth.log",
    benchmark:
        "logs/{dataset}/truth.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 0.05),
        runtime=scaled_runtime(5, 1),
    params:
        alpha=config["report"]["alpha"],
    script:
        "../scripts/truth.py"
