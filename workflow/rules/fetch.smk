# Stage fetch: download (or copy) each dataset's source files, check them, write manifest.tsv.
# Logic in workflow/texflow/fetch.py.
from texflow.fetch import local_source_paths


# Downloads run where the workflow was started, never as cluster jobs: compute nodes of many
# clusters have no internet access, and a download is I/O-bound, not worth a scheduler slot.
localrules:
    fetch,


rule fetch:
    input:
        # local paths and file:// sources: a changed file is copied again, a missing one stops
        # the run before any job starts
        lambda wildcards: local_source_paths(DATASETS[wildcards.dataset]["sources"]),
    output:
        # the manifest is the product: written last, it lists every file that passed the checks
        # (the files themselves sit beside it and are read through it by ingest)
        manifest=f"{DOWNLOADS}/{{dataset}}/manifest.tsv",
    log:
        "logs/{dataset}/fetch.log",
    benchmark:
        "logs/{dataset}/fetch.benchmark.tsv"
    conda:
        "../../envs/texflow.yaml"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(500),
        # generous: a 100 MB+ GEO table over a slow mirror, with retries and back-off
        runtime=scaled_runtime(240),
    params:
        # a params value, so that a changed source (URL, checksum, file name) makes Snakemake
        # fetch the dataset again (its default rerun trigger on params)
        sources=lambda wildcards: DATASETS[wildcards.dataset]["sources"],
        fetch=config["fetch"],
    script:
        "../scripts/fetch.py"
