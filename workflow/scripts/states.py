"""States stage: per-cell program scores and one state label per cluster (texflow.states),
written as an annotation file of clustered.h5ad's cells (texflow.utils.write_annotations)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import states
from texflow.plotting import states as plots
from texflow.stage import organism_of
from texflow.utils import read_annotated, run_step, write_annotations, write_tsv


def main(snakemake):
    path = snakemake.input.h5ad
    # X and annotations only: the stage writes only what it adds, the matrices stay where they are
    adata = read_annotated(path, layers=False)
    dataset = adata.uns.get("texflow", {}).get("dataset", snakemake.wildcards.dataset)
    organism = organism_of(adata, dataset=dataset, path=path)
    params = states.StatesParams.from_config(snakemake.params.states)
    result = states.label_states(
        adata,
        organism=organism,
        params=params,
        extra_programs=snakemake.params.extra_file or None,
        dataset=dataset,
    )
    outputs = snakemake.output
    write_tsv(result.tables["cluster_states"], outputs.cluster_states, na_rep="")
    write_tsv(result.tables["signature_coverage"], outputs.coverage, na_rep="")
    write_tsv(result.tables["cluster_program_scores"], outputs.summary, na_rep="")
    plots.state_marker_dotplot(
        adata,
        outputs.figure,
        organism=organism,
        table=result.tables["cluster_states"],
        cluster_key=params.cluster_key,
        title=f"{dataset}: state markers per cluster",
    )
    write_annotations(adata, outputs.annotations, matrix=path)


run_step(main, snakemake)  # noqa: F821
