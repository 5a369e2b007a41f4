# Stage report: one self-contained HTML page per dataset (figures inline), and a cross-dataset
# summary (results/summary.html + results/summary.tsv). Logic: workflow/texflow/report.py and
# report_summary.py. The report renders, it does not decide: the verdicts are the programs
# stage's tables/findings.tsv, and every table and figure a page shows is an input here (a
# figure dropped from a stage's outputs drops out of the page and reruns the report).

# The stage figures each dataset page embeds: the figure outputs of the stages.
STAGE_FIGURES = [
    rules.qc.output.metrics_png,
    rules.qc.output.doublets_png,
    rules.cluster.output.umap_png,
    rules.cluster.output.sweep_png,
    rules.states.output.figure,
    rules.trajectory.output.figure,
    *rules.programs.output.figures,
]


# Both take 10-20 s: on a cluster they run where Snakemake was started instead of waiting in the
# queue (their threads, mem_mb and runtime still count against --local-cores / --resources).
localrules:
    report,
    summary,


rule report:
    input:
        final=results("{dataset}", "final.h5ad"),
        summary=results("{dataset}", "summary.json"),
        findings=rules.programs.output.findings,
        # the heatmap of program genes across states: drawn from this table, not from the matrix
        gene_means=rules.programs.output.program_gene_means,
        tables=expand(results("{{dataset}}", "tables/{table}.tsv"), table=REPORT_TABLES),
        figures=STAGE_FIGURES,
        truth=truth_table,
    output:
        html=report(
            results("{dataset}", "report.html"),
            caption="../report/report_html.rst",
            category="Dataset reports",
            labels={"dataset": "{dataset}"},
        ),
        figures=report(
            directory(results("{dataset}", "figures/report")),
            patterns=["{name}.png"],
            caption="../report/report_figures.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "{name}"},
        ),
    log:
        "logs/{dataset}/report.log",
    benchmark:
        "logs/{dataset}/report.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, 0.2),
        runtime=scaled_runtime(10, 5),
    params:
        manifest=lambda wildcards: f"{DOWNLOADS}/{wildcards.dataset}/manifest.tsv",
        report=config["report"],
    script:
        "../scripts/report.py"


rule summary:
    input:
        reports=expand(results("{dataset}", "report.html"), dataset=DATASETS),
        finals=expand(results("{dataset}", "final.h5ad"), dataset=DATASETS),
        summaries=expand(results("{dataset}", "summary.json"), dataset=DATASETS),
        findings=expand(results("{dataset}", "tables/findings.tsv"), dataset=DATASETS),
        resistance_genes=f"{RESULTS}/resistance_genes.tsv",
        resistance_forest=f"{RESULTS}/figures/resistance_forest.png",
    output:
        html=report(
            f"{RESULTS}/summary.html",
            caption="../report/summary_html.rst",
            category="Cross-dataset summary",
        ),
        tsv=report(
            f"{RESULTS}/summary.tsv",
            caption="../report/summary_tsv.rst",
            category="Cross-dataset summary",
        ),
    log:
        "logs/summary.log",
    benchmark:
        "logs/summary.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 0.05),
        runtime=scaled_runtime(5, 1),
    params:
        datasets=list(DATASETS),
        report=config["report"],
        resistance=config["resistance"],
    script:
        "../scripts/report_summary.py"
