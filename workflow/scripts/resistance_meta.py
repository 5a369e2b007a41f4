"""Rule resistance_meta: each gene's log2 fold change per state pooled across datasets by a
random-effects meta-analysis, and a forest plot of the top genes (texflow.resistance_meta)."""

import logging

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
import pandas as pd
from texflow import resistance_meta
from texflow.utils import run_step, write_tsv

logger = logging.getLogger("texflow.resistance_meta")


def main(snakemake):
    params = snakemake.params.resistance
    tables = {
        dataset: pd.read_csv(path, sep="\t")
        for dataset, path in zip(snakemake.params.datasets, snakemake.input.de, strict=True)
    }
    table = resistance_meta.meta_analyse(
        tables, alpha=params["meta_alpha"], min_datasets=params["meta_min_datasets"]
    )
    write_tsv(table, snakemake.output.tsv)
    resistance_meta.forest_plot(
        table, tables, snakemake.output.forest, n_genes=params["meta_top_genes"]
    )
    for state, note in resistance_meta.state_notes(table, alpha=params["meta_alpha"]).items():
        logger.info("%s: %s", state, note)


run_step(main, snakemake)  # noqa: F821
