"""Rule report: the dataset's self-contained HTML page and the report's own figures."""

from pathlib import Path

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import report
from texflow.utils import run_step

# config key -> keyword of texflow.report.collect (keys left out keep the function's default)
OPTIONS = {
    "figure_formats": "formats",
    "alpha": "alpha",
    "max_table_rows": "max_rows",
    "min_cells_per_patient": "min_cells",
    "headline_programs": "headline_programs",
}


def main(snakemake):
    options = dict(snakemake.params.report)
    html = Path(snakemake.output.html)
    manifest = Path(snakemake.params.manifest)
    page = report.collect(
        html.parent,
        dataset=snakemake.wildcards.dataset,
        findings=snakemake.input.findings,
        # only the declared inputs are shown: nothing left in tables/ or figures/ is globbed
        tables=[*snakemake.input.tables, *snakemake.input.truth],
        figures=snakemake.input.figures,
        final_h5ad=snakemake.input.final,
        summary_json=snakemake.input.summary,
        gene_means=snakemake.input.gene_means,
        manifest=manifest if manifest.is_file() else None,
        figures_dir=snakemake.output.figures,
        report_params=options,
        **{OPTIONS[key]: value for key, value in options.items() if key in OPTIONS},
    )
    report.write_dataset_report(page, html)


run_step(main, snakemake)  # noqa: F821
