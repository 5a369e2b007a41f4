"""Trajectory stage: pseudotime over the exhausted lineage (texflow.trajectory)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import programs, trajectory
from texflow.errors import InputDataError
from texflow.plotting import trajectory as plots
from texflow.utils import read_h5ad, read_rows, run_step, update_h5ad, write_tsv


def main(snakemake):
    path = snakemake.input.h5ad
    # annotations, then X's lineage rows only: the matrices are carried over on disk by
    # update_h5ad (at 100k cells the CD8 cells' X was 1.2 GB of the stage's peak)
    adata = read_h5ad(path, layers=False, x=False)
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
    update_h5ad(adata, source=path, path=snakemake.output.h5ad)


run_step(main, snakemake)  # noqa: F821
