"""States stage: per-cell program scores and one state label per cluster (texflow.states)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import states
from texflow.plotting import states as plots
from texflow.stage import organism_of
from texflow.utils import read_h5ad, run_step, update_h5ad, write_tsv


def main(snakemake):
    path = snakemake.input.h5ad
    # X and annotations only: the counts layer is carried over on disk by update_h5ad
    adata = read_h5ad(path, layers=False)
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
    update_h5ad(adata, source=path, path=outputs.h5ad)


run_step(main, snakemake)  # noqa: F821
