# Stage programs: IFN-I, LPO, Tpex and Tex-term scores (UCell), GAM trends along pseudotime with
# a bootstrap over patients, and statistics with the patient as the unit (texflow.stats).
# Logic: workflow/texflow/programs.py, workflow/texflow/stats.py.
from texflow.programs import trend_programs


rule programs:
    input:
        h5ad=results("{dataset}", "clustered.h5ad"),
        annotations=[
            results("{dataset}", "annotations/states.h5ad"),
            results("{dataset}", "annotations/trajectory.h5ad"),
        ],
    output:
        annotations=temp(results("{dataset}", "annotations/programs.h5ad")),
        cells=results("{dataset}", "tables/cells.tsv.gz"),
        summary=results("{dataset}", "summary.json"),
        program_coverage=report(
            results("{dataset}", "tables/program_coverage.tsv"),
            caption="../report/program_coverage.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "program_coverage"},
        ),
        trends=report(
            results("{dataset}", "tables/trends.tsv"),
            caption="../report/trends.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "trends"},
        ),
        associations=report(
            results("{dataset}", "tables/associations.tsv"),
            caption="../report/associations.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "associations"},
        ),
        axis_associations=report(
            results("{dataset}", "tables/axis_associations.tsv"),
            caption="../report/axis_associations.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "axis_associations"},
        ),
        state_comparison=report(
            results("{dataset}", "tables/state_comparison.tsv"),
            caption="../report/state_comparison.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "state_comparison"},
        ),
        response_comparison=report(
            results("{dataset}", "tables/response_comparison.tsv"),
            caption="../report/response_comparison.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "response_comparison"},
        ),
        findings=report(
            results("{dataset}", "tables/findings.tsv"),
            caption="../report/findings.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "findings"},
        ),
        composition=report(
            results("{dataset}", "tables/composition.tsv"),
            caption="../report/composition.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "composition"},
        ),
        program_gene_means=report(
            results("{dataset}", "tables/program_gene_means.tsv"),
            caption="../report/program_gene_means.rst",
            category="Programs",
            labels={"dataset": "{dataset}", "table": "program_gene_means"},
        ),
        figures=report(
            expand(
                results("{{dataset}}", "figures/trend_{program}.png"),
                program=trend_programs(config["programs"]["programs"]),
            ),
            caption="../report/trend_figures.rst",
            category="Programs",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "logs/{dataset}/programs.log",
    benchmark:
        "logs/{dataset}/programs.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # a second BLAS thread: 59.5 s with one, 48.5 s with two at 100k cells (benchmarks/README.md)
    threads: 2
    resources:
        # true peak / input file size: 0.63 at 100k cells (1.64 of 2.59 GB), 0.52 at 500k (6.79 of 13.05 GB),
        # 13.71 GB at 1M (~0.5). 0.75: ~21 GB asked at 1M (1.0 asked more than a 24 GB node); benchmarks/README.md
        mem_mb=scaled_mem_mb(2000, 0.75),
        runtime=scaled_runtime(20, 30),
    params:
        programs=config["programs"],
        stats=config["stats"],
        # the significance level of the verdicts (tables/findings.tsv), which the report shows
        alpha=config["report"]["alpha"],
    script:
        "../scripts/programs.py"


# final.h5ad, written once: the cluster stage's matrices (X log-normalised, layers["counts"] the
# raw counts) with the annotations of the states, trajectory and programs stages; a plain
# AnnData (anndata.read_h5ad needs no texflow), its matrices compressed. Once it exists, the
# matrix and annotation files it was made from are deleted (temp()). Logic: texflow.utils.
rule assemble:
    input:
        h5ad=results("{dataset}", "clustered.h5ad"),
        annotations=[
            results("{dataset}", "annotations/states.h5ad"),
            results("{dataset}", "annotations/trajectory.h5ad"),
            results("{dataset}", "annotations/programs.h5ad"),
        ],
    output:
        h5ad=results("{dataset}", "final.h5ad"),
    log:
        "logs/{dataset}/assemble.log",
    benchmark:
        "logs/{dataset}/assemble.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    # the matrices' chunks are compressed on both (zlib, side by side; the same file on one)
    threads: 2
    resources:
        # true peak / input file size: 0.12 at 100k cells (0.31 of 2.62 GB; copied a block of
        # chunks at a time), 12.5-14 s; benchmarks/README.md
        mem_mb=scaled_mem_mb(1000, 0.4),
        runtime=scaled_runtime(10, 10),
    script:
        "../scripts/assemble.py"
