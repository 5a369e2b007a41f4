"""Gate: results/{dataset}/qc.h5ad -> cd8.h5ad (CD8 T cells) and tables/gating.tsv."""

import _texflow_path  # noqa: F401  (puts workflow/ on sys.path)
from texflow import gating
from texflow.utils import atomic_path, read_h5ad, run_step


def main(snakemake):
    dataset = snakemake.wildcards.dataset
    adata = read_h5ad(snakemake.input.h5ad)
    params = gating.GateParams.from_config(snakemake.params.gate)
    adata, table = gating.gate_cd8(
        adata, params=params, cd8_sorted=bool(snakemake.params.cd8_sorted), dataset=dataset
    )
    with atomic_path(snakemake.output.table) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="NA", float_format="%.4g")
    # the table is written first: when no cluster passes, it is what explains why
    gating.write_cd8_cells(adata, snakemake.output.h5ad, dataset=dataset)


run_step(main, snakemake)  # noqa: F821
