"""Rule truth: a simulated dataset's known truth beside the run's answer."""

from pathlib import Path

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
import anndata as ad
import pandas as pd
from texflow import truth
from texflow.errors import InputDataError
from texflow.manifest import read_manifest
from texflow.utils import run_step, write_tsv


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
    source = ad.read_h5ad(sources[0], backed="r")
    simulation = dict(source.uns.get("simulation", {}))
    source_obs = source.obs.copy()
    source.file.close()
    final = ad.read_h5ad(snakemake.input.final, backed="r")
    final_obs = final.obs.copy()
    final.file.close()
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
