"""Gate: results/{dataset}/qc.h5ad -> cd8.h5ad (CD8 T cells) and tables/gating.tsv."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import gating
from texflow.utils import backed_csr, read_h5ad, run_step, write_tsv


def main(snakemake):
    # the counts stay on disk (float32 CSR, as QC writes them): the scores, markers, the first
    # pass's HVG block and the CD8 cells written read a chunk of rows at a time, never the
    # whole matrix (benchmarks/README.md: memory)
    with backed_csr(snakemake.input.h5ad, without_layers=True) as counts:
        run(snakemake, counts)


def run(snakemake, counts):
    dataset = snakemake.wildcards.dataset
    if counts is None:  # not float32 CSR on disk: X in memory
        adata = read_h5ad(snakemake.input.h5ad)
    else:
        adata = read_h5ad(snakemake.input.h5ad, layers=False, x=False)
    params = gating.GateParams.from_config(snakemake.params.gate)
    # when the gate stops (no CD8 T cells, or a refused cd8_sorted dataset), its table goes to a
    # file beside the log: Snakemake deletes the outputs of a failed job, not that file
    result = gating.gate_cd8(
        adata,
        params=params,
        cd8_sorted=bool(snakemake.params.cd8_sorted),
        dataset=dataset,
        path=snakemake.input.h5ad,
        evidence=gating.evidence_path(snakemake.log[0] if snakemake.log else None),
        counts=counts,
    )
    write_tsv(result.tables["gating"], snakemake.output.table, float_format="%.4g")
    gating.write_cd8_cells(adata, snakemake.output.h5ad, dataset=dataset, counts=counts)


run_step(main, snakemake)  # noqa: F821
