"""States stage: per-cell program scores and one state label per cluster (texflow.states)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import states
from texflow.errors import InputDataError
from texflow.plotting import states as plots
from texflow.utils import read_h5ad, run_step, update_h5ad, write_tsv


def main(snakemake):
    path = snakemake.input.h5ad
    # X and annotations only: the counts layer is carried over on disk by update_h5ad
    adata = read_h5ad(path, layers=False)
    meta = adata.uns.setdefault("texflow", {})
    dataset = meta.get("dataset", snakemake.wildcards.dataset)
    organism = meta.get("organism")
    if organism not in ("human", "mouse"):
        raise InputDataError(
            f"uns['texflow']['organism'] is {organism!r}, expected 'human' or 'mouse'",
            dataset=dataset, path=path,
        )
    params = states.StatesParams.from_config(snakemake.params.states)
    table, summary, coverage = states.label_states(
        adata, organism=organism, params=params, extra_programs=snakemake.params.extra_file or None,
        dataset=dataset,
    )
    write_tsv(table, snakemake.output.cluster_states, na_rep="")
    write_tsv(coverage, snakemake.output.coverage, na_rep="")
    write_tsv(summary, snakemake.output.summary, na_rep="")
    plots.state_marker_dotplot(
        adata, snakemake.output.figure, organism=organism, table=table,
        cluster_key=params.cluster_key, title=f"{dataset}: state markers per cluster",
    )
    update_h5ad(adata, source=path, path=snakemake.output.h5ad)


run_step(main, snakemake)  # noqa: F821
