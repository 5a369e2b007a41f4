# Stage resistance: pseudobulk per patient and state, differential expression non-responders vs
# responders with patients as the unit (pydeseq2 on counts, limma-trend moderated t on log
# data), and the programs scored on the gene statistics (ulm).
# Logic: workflow/texflow/resistance.py.


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
        # 1.03 GB at 100k cells (final.h5ad 0.5 GB): the pools are summed from row blocks read from
        # disk (6.33 GB when the counts were copied to float64 in memory); benchmarks/README.md
        mem_mb=scaled_mem_mb(2000, 1.0),
        runtime=scaled_runtime(20, 30),
    params:
        # the meta_* keys belong to rule resistance_meta: changing them reruns only that rule
        resistance={
            key: value
            for key, value in config["resistance"].items()
            if not key.startswith("meta_")
        },
        extra_file=config["programs"]["extra_file"],
        # the dataset config's design covariate (an obs column), or None: ~ response
        design_covariate=lambda wildcards: dataset_config(wildcards).get(
            "design_covariate"
        ),
    script:
        "../scripts/resistance.py"


# Across datasets: each gene's log2 fold change per state pooled by a random-effects
# meta-analysis (DerSimonian-Laird, statsmodels), leave-one-dataset-out, forest plot of the top
# genes. Runs when several datasets run (final_outputs); the summary page shows it.
# Logic: workflow/texflow/resistance_meta.py.
rule resistance_meta:
    input:
        # real datasets only, when there are any (common.smk meta_datasets)
        de=expand(
            results("{dataset}", "tables/resistance_de.tsv"), dataset=meta_datasets()
        ),
    output:
        tsv=report(
            f"{RESULTS}/resistance_genes.tsv",
            caption="../report/resistance_genes.rst",
            category="Cross-dataset summary",
        ),
        forest=report(
            f"{RESULTS}/figures/resistance_forest.png",
            caption="../report/resistance_forest.rst",
            category="Cross-dataset summary",
        ),
    log:
        "logs/resistance_meta.log",
    benchmark:
        "logs/resistance_meta.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 2.0),
        runtime=scaled_runtime(10, 10),
    params:
        datasets=meta_datasets(),
        resistance=config["resistance"],
    script:
        "../scripts/resistance_meta.py"
