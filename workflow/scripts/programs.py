"""Programs stage: IFN-I/LPO scores, trends along pseudotime, statistics, summary."""

from pathlib import Path

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import expression, findings, programs, signatures
from texflow.contract import SKIP_RESPONSE
from texflow.stage import organism_of
from texflow.utils import (
    backed_csr,
    read_annotated,
    read_rows,
    run_step,
    write_annotations,
    write_tsv,
)


def main(snakemake):
    path, annotations = snakemake.input.h5ad, snakemake.input.annotations
    # annotations and the counts (scored after downsampling, in place); X only for data
    # without counts, which are scored on it. The stage writes only its annotations, so the
    # matrices of final.h5ad (rule assemble) are the cluster stage's, untouched.
    adata = read_annotated(path, annotations, x=False, layers=["counts"])
    if "counts" not in adata.layers:
        adata.X = read_rows(path)
    dataset = adata.uns.get("texflow", {}).get("dataset", snakemake.wildcards.dataset)
    organism = organism_of(adata, dataset=dataset, path=path)
    params, stats = snakemake.params.programs, snakemake.params.stats
    selected = programs.load_selected_programs(
        organism=organism, names=params["programs"], extra_file=params["extra_file"]
    )
    result = programs.analyse(
        adata,
        programs=selected,
        program_names=params["programs"],
        options=programs.options_from_config(params, stats),
        overwrite_counts=True,
    )
    tables = result.tables
    outputs = snakemake.output
    for name, table in tables.items():
        write_tsv(table, getattr(outputs, name))
    # the verdicts, decided once next to the statistics; the report and the summary render them
    found = findings.dataset_findings(
        tables,
        dataset=dataset,
        alpha=snakemake.params.alpha,
        skipped=adata.uns["texflow"]["skipped"],
    )
    findings.write_findings(found, outputs.findings)
    figures = Path(outputs.figures[0]).parent
    extra = [name for name in selected if name not in params["programs"]]
    tested = programs.trend_programs([*params["programs"], *extra])
    programs.draw_trends(
        adata, tables["trends"], tables["associations"], figures, program_names=tested
    )
    summary = programs.build_summary(
        adata,
        associations=tables["associations"],
        state_comparison=tables["state_comparison"],
        response_comparison=tables["response_comparison"],
        response_skipped=result.notes.get(SKIP_RESPONSE, ""),
    )
    summary["dataset"] = summary["dataset"] or dataset
    programs.write_json(summary, outputs.summary)
    # each program gene's mean (log-normalised X, read in chunks) per state: the report's heatmap
    # is drawn from this table, so the report never reads the matrix
    resolved = signatures.resolve_aliases(selected, adata.var_names, organism=organism)
    # X of the matrix file read in chunks (not a backed AnnData: it would load the counts)
    with backed_csr(path) as on_disk:
        if adata.X is None and on_disk is None:  # X not float32 CSR: read whole
            adata.X = read_rows(path)
        matrix = on_disk if adata.X is None else None
        gene_means = expression.program_gene_means(adata, programs=resolved, matrix=matrix)
    write_tsv(gene_means, outputs.program_gene_means)
    write_annotations(adata, outputs.annotations, matrix=path, annotations=annotations)


run_step(main, snakemake)  # noqa: F821
