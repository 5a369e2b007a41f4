"""Rule truth: a simulated dataset's known truth beside the run's answer."""

from pathlib import Path

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
import pandas as pd
from texflow import truth
from texflow.errors import InputDataError
from texflow.manifest import read_manifest
from texflow.utils import read_annotations, run_step, write_tsv


def main(snakemake):
    dataset = snakemake.wildcards.dataset
    manifest = Path(snakemake.input.manifest)
    files = [manifest.parent / row.filename for row in read_manifest(manifest, dataset=dataset)]
    sources = [p for p in files if str(p).endswith(".h5ad")]
    if len(sources) != 1:
        raise InputDataError(
            "a simulated dataset is one .h5ad written by texflow-simulate; the manifest lists "
            f"{[str(p) for p in files]}",
            dataset=dataset,
            path=snakemake.input.manifest,
        )
    # annotations only: backed mode would read every layer into memory
    source = read_annotations(sources[0])
    simulation = dict(source.uns.get("simulation", {}))
    source_obs = source.obs
    final_obs = read_annotations(snakemake.input.final).obs
    table = truth.recovery(
        source_obs=source_obs,
        final_obs=final_obs,
        simulation=simulation,
        response=pd.read_csv(snakemake.input.response, sep="\t"),
        associations=pd.read_csv(snakemake.input.associations, sep="\t"),
        alpha=snakemake.params.alpha,
        dataset=dataset,
    )
    write_tsv(table, snakemake.output.table)


run_step(main, snakemake)  # noqa: F821
