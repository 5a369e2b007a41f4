"""Trajectory stage: pseudotime over the exhausted lineage (texflow.trajectory), written as an
annotation file of clustered.h5ad's cells (texflow.utils.write_annotations)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import programs, trajectory
from texflow.errors import InputDataError
from texflow.plotting import trajectory as plots
from texflow.utils import read_annotated, read_rows, run_step, write_annotations, write_tsv


def main(snakemake):
    path, annotations = snakemake.input.h5ad, [snakemake.input.states]
    # annotations, then X's lineage rows only (at 100k cells the CD8 cells' X was 1.2 GB of the
    # stage's peak); the stage writes only what it adds
    adata = read_annotated(path, annotations, layers=False, x=False)
    meta = adata.uns.setdefault("texflow", {})
    dataset = meta.get("dataset", snakemake.wildcards.dataset)
    organism = meta.get("organism")
    if organism not in ("human", "mouse"):
        raise InputDataError(
            f"uns['texflow']['organism'] is {organism!r}", dataset=dataset, path=path
        )
    params = snakemake.params.trajectory
    tested = programs.load_selected_programs(
        organism=organism,
        names=params["exclude_programs"],
        extra_file=snakemake.params.extra_file,
    )
    exclude = programs.program_genes(tested, params["exclude_programs"], var_names=adata.var_names)
    lineage = trajectory.lineage_mask(adata, states=params["lineage_states"])
    table = trajectory.lineage_pseudotime(
        adata,
        lineage_x=read_rows(path, lineage) if lineage.any() else None,
        exclude_genes=exclude,
        **trajectory.options_from_config(params),
    )
    write_tsv(table, snakemake.output.root_sensitivity)
    skipped = meta.get("skipped", {}).get("trajectory", "")
    if skipped:
        plots.message_figure(snakemake.output.figure, title="Trajectory skipped", message=skipped)
    else:
        # the states that defined the lineage (per-cell calls), not the cluster labels
        state_key = meta["trajectory"]["state_key"]
        plots.pseudotime_overview(adata, snakemake.output.figure, state_key=state_key)
    write_annotations(adata, snakemake.output.annotations, matrix=path, annotations=annotations)


run_step(main, snakemake)  # noqa: F821
