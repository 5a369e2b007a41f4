# Stage ingest: downloaded files -> results/{dataset}/raw.h5ad (cells x genes, harmonised obs,
# provenance in uns["texflow"]). Logic in workflow/texflow/io.py and workflow/texflow/readers/.


def ingest_mem_mb(wildcards, input, attempt):
    """Memory from the downloaded bytes in the manifest, scaled per reader (dense text expands).

    Until fetch has written the manifest this raises FileNotFoundError, and Snakemake evaluates
    the resource again when the job is about to run.
    """
    from texflow.io import estimate_ingest_mem_mb

    reader = DATASETS[wildcards.dataset]["reader"]
    return estimate_ingest_mem_mb(input.manifest, reader) * attempt


rule ingest:
    input:
        manifest=f"{DOWNLOADS}/{{dataset}}/manifest.tsv",
    output:
        h5ad=f"{RESULTS}/{{dataset}}/raw.h5ad",
    log:
        "logs/{dataset}/ingest.log",
    threads: 1
    resources:
        mem_mb=ingest_mem_mb,
        runtime=scaled_runtime(10, 30),
    params:
        dataset=dataset_config,
    script:
        "../scripts/ingest.py"
