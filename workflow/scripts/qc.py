"""QC: results/{dataset}/raw.h5ad -> qc.h5ad (passing cells only), QC tables and figures."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import qc
from texflow.plotting import qc as qc_plots
from texflow.utils import backed_csr, read_h5ad, run_step, write_tsv


def main(snakemake):
    # the counts stay on disk (float32 CSR, as ingest writes them): read a chunk of rows or one
    # sample at a time, never the whole matrix at once (benchmarks/README.md: memory)
    with backed_csr(snakemake.input.h5ad, without_layers=True) as counts:
        run(snakemake, counts)


def run(snakemake, counts):
    dataset = snakemake.wildcards.dataset
    if counts is None:  # not float32 CSR on disk: X in memory
        adata = read_h5ad(snakemake.input.h5ad)
    else:
        adata = read_h5ad(snakemake.input.h5ad, layers=False, x=False)
    params = qc.QCParams.from_config(snakemake.params.qc)
    result = qc.run_qc(
        adata, params=params, dataset=dataset, threads=snakemake.threads, counts=counts
    )
    table = result.tables["qc_summary"]
    # tables and figures first: when too few cells pass, they are what explains why
    write_tsv(table, snakemake.output.summary, float_format="%.4g")
    write_tsv(result.tables["qc_cells"], snakemake.output.cells, float_format="%.4g")
    qc_plots.qc_metrics(adata, table, snakemake.output.metrics_png)
    note = "; ".join(f"{k}: {v}" for k, v in result.notes.items() if k.startswith("qc.doublets"))
    qc_plots.doublet_scores(adata, snakemake.output.doublets_png, note=note)
    qc.write_passing_cells(
        adata,
        snakemake.output.h5ad,
        min_cells=params.min_cells_out,
        dataset=dataset,
        counts=counts,
    )


run_step(main, snakemake)  # noqa: F821
