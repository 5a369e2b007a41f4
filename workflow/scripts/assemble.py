"""Assemble: clustered.h5ad's matrices + the annotations of states, trajectory and programs ->
results/{dataset}/final.h5ad, a plain AnnData (texflow.utils.assemble_h5ad)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow.utils import assemble_h5ad, run_step


def main(snakemake):
    assemble_h5ad(
        matrix=snakemake.input.h5ad,
        annotations=snakemake.input.annotations,
        path=snakemake.output.h5ad,
        threads=snakemake.threads,
    )


run_step(main, snakemake)  # noqa: F821
