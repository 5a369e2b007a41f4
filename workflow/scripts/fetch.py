"""Fetch a dataset's sources into resources/downloads/{dataset}/ and write manifest.tsv last."""

from pathlib import Path

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow.fetch import fetch_dataset
from texflow.utils import run_step


def main(snakemake):
    manifest = Path(snakemake.output.manifest)
    fetch_dataset(
        {"id": snakemake.wildcards.dataset, "sources": snakemake.params.sources},
        directory=manifest.parent,
        manifest=manifest,
        retries=snakemake.params.fetch["retries"],
        backoff_seconds=snakemake.params.fetch["backoff_seconds"],
        timeout_seconds=snakemake.params.fetch["timeout_seconds"],
        local_sources=snakemake.params.fetch["local_sources"],
    )


run_step(main, snakemake)  # noqa: F821
