"""Rule summary: every dataset's findings side by side (results/summary.html, .tsv)."""

from pathlib import Path

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import report_summary
from texflow.utils import run_step


def main(snakemake):
    options = dict(snakemake.params.report)
    datasets = list(snakemake.params.datasets)
    pages = [Path(path) for path in snakemake.input.reports]
    inputs = zip(
        datasets,
        pages,
        snakemake.input.findings,
        snakemake.input.finals,
        snakemake.input.summaries,
        strict=True,
    )
    headlines = [
        report_summary.headline_only(
            dataset,
            dataset_dir=page.parent,
            findings=findings,
            final_h5ad=final,
            summary_json=summary,
            headline_programs=options["headline_programs"],
        )
        for dataset, page, findings, final, summary in inputs
    ]
    meta = snakemake.params.resistance
    resistance = report_summary.resistance_context(
        snakemake.input.get("resistance_genes"),
        snakemake.input.get("resistance_forest"),
        top_n=meta["meta_top_genes"],
        alpha=meta["meta_alpha"],
    )
    report_summary.write_summary(
        headlines,
        resistance=resistance,
        tsv=snakemake.output.tsv,
        html_path=snakemake.output.html,
        report_links=dict(zip(datasets, pages, strict=True)),
    )


run_step(main, snakemake)  # noqa: F821
