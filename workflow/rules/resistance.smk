# Stage resistance: pseudobulk per patient and state, differential expression non-responders vs
# responders with patients as the unit (pydeseq2 on counts, Welch t on log data), and the
# programs scored on the gene statistics (ulm). Logic: workflow/texflow/resistance.py.


rule resistance:
    input:
        h5ad=results("{dataset}", "final.h5ad"),
    output:
        pseudobulk_samples=report(
            results("{dataset}", "tables/pseudobulk_samples.tsv"),
            caption="../report/pseudobulk_samples.rst",
            category="Resistance",
            labels={"dataset": "{dataset}", "table": "pseudobulk_samples"},
        ),
        resistance_de=report(
            results("{dataset}", "tables/resistance_de.tsv"),
            caption="../report/resistance_de.rst",
            category="Resistance",
            labels={"dataset": "{dataset}", "table": "resistance_de"},
        ),
        resistance_programs=report(
            results("{dataset}", "tables/resistance_programs.tsv"),
            caption="../report/resistance_programs.rst",
            category="Resistance",
            labels={"dataset": "{dataset}", "table": "resistance_programs"},
        ),
    log:
        "logs/{dataset}/resistance.log",
    benchmark:
        "logs/{dataset}/resistance.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # pydeseq2 fits genes in parallel (joblib)
    threads: 2
    resources:
        mem_mb=scaled_mem_mb(2000, 1.0),
        runtime=scaled_runtime(20, 30),
    params:
        resistance=config["resistance"],
        extra_file=config["programs"]["extra_file"],
    script:
        "../scripts/resistance.py"
