"""Programs stage: IFN-I/LPO scores, trends along pseudotime, statistics, summary."""

from pathlib import Path

import _texflow_path  # noqa: F401  (puts workflow/ on sys.path)
from texflow import findings, programs
from texflow.errors import InputDataError
from texflow.plotting import trajectory as plots
from texflow.utils import read_h5ad, read_rows, run_step, update_h5ad, write_tsv


def main(snakemake):
    path = snakemake.input.h5ad
    # annotations and the counts (scored after downsampling, in place); X only for data
    # without counts, which are scored on it. final.h5ad is the input with the annotations
    # replaced (update_h5ad), so its matrices are the trajectory stage's, untouched.
    adata = read_h5ad(path, x=False, layers=["counts"])
    if "counts" not in adata.layers:
        adata.X = read_rows(path)
    meta = adata.uns.setdefault("texflow", {})
    dataset = meta.get("dataset", snakemake.wildcards.dataset)
    organism = meta.get("organism")
    if organism not in ("human", "mouse"):
        raise InputDataError(f"uns['texflow']['organism'] is {organism!r}", dataset=dataset, path=path)
    params, stats = snakemake.params.programs, snakemake.params.stats
    selected = programs.load_selected_programs(
        organism=organism, names=params["programs"], extra_file=params["extra_file"]
    )
    tables = programs.analyse(
        adata,
        programs=selected,
        program_names=params["programs"],
        **programs.options_from_config(params, stats),
        overwrite_counts=True,
    )
    response_skipped = str(tables.pop("_response_skipped")["reason"].iloc[0])
    outputs = snakemake.output
    for name in ("program_coverage", "trends", "associations", "axis_associations",
                 "state_comparison", "response_comparison", "composition", "cells"):
        write_tsv(tables[name], getattr(outputs, name))
    # the verdicts, decided once next to the statistics; the report and the summary render them
    found = findings.dataset_findings(
        tables, dataset=dataset, alpha=snakemake.params.alpha,
        skipped=adata.uns["texflow"]["skipped"])
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
        response_skipped=response_skipped,
    )
    summary["dataset"] = summary["dataset"] or dataset
    programs.write_json(summary, outputs.summary)
    update_h5ad(adata, source=path, path=outputs.h5ad)


run_step(main, snakemake)  # noqa: F821
