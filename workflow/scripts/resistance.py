"""Rule resistance: pseudobulk per patient and state, non-responders vs responders, programs on
the gene statistics (texflow.resistance)."""

import _texflow_path  # noqa: F401  (sys.path, numba cache, Agg: starts the rule process)
from texflow import resistance, signatures
from texflow.errors import InputDataError
from texflow.programs import LPO_PARTS, SIGNED_LPO
from texflow.utils import backed_csr, read_h5ad, run_step, write_tsv


def main(snakemake):
    path = snakemake.input.h5ad
    # the annotations; the values to pool are read from the file in blocks of rows
    adata = read_h5ad(path, layers=False, x=False)
    meta = adata.uns.get("texflow", {})
    dataset = meta.get("dataset", snakemake.wildcards.dataset)
    value_type = meta.get("value_type")
    with backed_csr(path, layer="counts" if value_type == "counts" else None) as matrix:
        if matrix is None and value_type == "counts":
            raise InputDataError(
                "count data without layers['counts'] (raw counts, float32 CSR)",
                dataset=dataset,
                path=path,
            )
        if matrix is None:  # X not float32 CSR: read as it is
            adata = read_h5ad(path, layers=False)
        tables = _analyse(snakemake, adata, matrix=matrix, path=path, dataset=dataset)
    for name, table in tables.items():
        write_tsv(table, getattr(snakemake.output, name))


def _analyse(snakemake, adata, *, matrix, path, dataset):
    value_type = adata.uns.get("texflow", {}).get("value_type")
    params = snakemake.params.resistance
    covariate = snakemake.params.design_covariate or None
    fix = (
        f"name an obs column of the cells (e.g. timepoint, tissue, or a batch column the "
        f"reader kept) as design_covariate in config/datasets/{dataset}.yaml, or remove it"
    )
    problem = resistance.covariate_problem(adata.obs, covariate=covariate) if covariate else ""
    if problem:
        raise InputDataError(f"{problem}; {fix}", dataset=dataset, path=path)
    if covariate is not None and params["log_method"] == "mann_whitney" and value_type != "counts":
        raise InputDataError(
            f"log_method {params['log_method']!r} (a rank test) cannot carry "
            f"design_covariate {covariate!r}; set resistance.log_method: limma_trend "
            "(or welch: least squares with the covariate then runs) or remove "
            "design_covariate from the dataset config",
            dataset=dataset,
            path=path,
        )
    programs = signatures.load_programs(
        adata.uns.get("texflow", {}).get("organism"), extra=snakemake.params.extra_file or None
    )
    return resistance.analyse(
        adata,
        value_type=value_type,
        programs=programs,
        combined={SIGNED_LPO: LPO_PARTS},
        min_cells=params["min_cells"],
        min_counts=params["min_counts"],
        min_patients_per_group=params["min_patients_per_group"],
        min_gene_count=params["min_gene_count"],
        min_gene_total_count=params["min_gene_total_count"],
        min_gene_detected_fraction=params["min_gene_detected_fraction"],
        log_method=params["log_method"],
        min_program_genes=params["min_program_genes"],
        n_cpus=snakemake.threads,
        covariate=covariate,
        dataset=dataset,
        matrix=matrix,
    )


run_step(main, snakemake)  # noqa: F821
