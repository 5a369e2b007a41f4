# Stage ingest: downloaded files -> results/{dataset}/raw.h5ad (cells x genes, harmonised obs,
# provenance in uns["texflow"]). Logic in workflow/texflow/io.py and workflow/texflow/readers/.
from texflow.io import estimate_ingest_mem_mb, estimate_ingest_runtime_min


rule ingest:
    input:
        manifest=f"{DOWNLOADS}/{{dataset}}/manifest.tsv",
    output:
        h5ad=f"{RESULTS}/{{dataset}}/raw.h5ad",
    log:
        "logs/{dataset}/ingest.log",
    benchmark:
        "logs/{dataset}/ingest.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    threads: 1
    resources:
        # From the downloaded bytes listed in the manifest, scaled per reader (dense text
        # expands most; texflow.io). Before fetch has run, reading the manifest raises
        # FileNotFoundError and Snakemake evaluates the resource again when the job is ready.
        mem_mb=lambda wildcards, input, attempt: attempt
        * estimate_ingest_mem_mb(input.manifest, DATASETS[wildcards.dataset]["reader"]),
        runtime=lambda wildcards, input, attempt: attempt
        * estimate_ingest_runtime_min(
            input.manifest, DATASETS[wildcards.dataset]["reader"]
        ),
    params:
        dataset=dataset_config,
    script:
        "../scripts/ingest.py"
