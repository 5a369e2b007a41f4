"""Ingest: the downloaded files of one dataset -> results/{dataset}/raw.h5ad (texflow contract)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import io
from texflow.utils import run_step


def main(snakemake):
    io.ingest_dataset(
        manifest=snakemake.input.manifest,
        config=snakemake.params.dataset,
        path=snakemake.output.h5ad,
    )


run_step(main, snakemake)  # noqa: F821
