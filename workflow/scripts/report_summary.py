"""Rule summary: every dataset's headline numbers side by side (results/summary.html, .tsv)."""

from pathlib import Path

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import report
from texflow.utils import run_step


def main(snakemake):
    options = dict(snakemake.params.report)
    datasets = list(snakemake.params.datasets)
    pages = [Path(path) for path in snakemake.input.reports]
    headlines = [
        report.headline_only(dataset, dataset_dir=page.parent, **{k: options[k] for k in ("alpha", "headline_programs") if k in options})
        for dataset, page in zip(datasets, pages, strict=True)
    ]
    meta = snakemake.params.resistance
    resistance = report.resistance_context(
        snakemake.input.get("resistance_genes"),
        snakemake.input.get("resistance_forest"),
        top_n=meta["meta_top_genes"],
        alpha=meta["meta_alpha"],
    )
    report.write_summary(
        headlines,
        resistance=resistance,
        tsv=snakemake.output.tsv,
        html_path=snakemake.output.html,
        report_links=dict(zip(datasets, pages, strict=True)),
    )


run_step(main, snakemake)  # noqa: F821
