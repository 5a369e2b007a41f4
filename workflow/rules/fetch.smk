# Stage fetch: download (or copy) each dataset's source files, check them, write manifest.tsv.
from urllib.parse import urlparse
from urllib.request import url2pathname


# Downloads run where the workflow was started, never as cluster jobs: compute nodes of many
# clusters have no internet access, and a download is I/O-bound, not worth a scheduler slot.
localrules:
    fetch,


def fetch_sources(wildcards):
    """The dataset's sources (name, url, filename, sha256, bytes) as configured.

    Given as a params value, so that a change to any source (a new URL, checksum or file
    name) makes Snakemake fetch the dataset again (its default rerun trigger on params).
    """
    return DATASETS[wildcards.dataset]["sources"]


def fetch_local_inputs(wildcards):
    """Local paths and file:// URLs among the sources: inputs, so a changed file is re-copied.

    A missing local file thus stops the run before any job starts, naming the file.
    """
    paths = []
    for source in DATASETS[wildcards.dataset]["sources"]:
        parsed = urlparse(source["url"])
        if parsed.scheme == "file":
            paths.append(url2pathname(parsed.path))
        elif len(parsed.scheme) <= 1:
            # no scheme (or a one-letter one: a Windows drive): a local path
            paths.append(source["url"])
    return paths


rule fetch:
    input:
        fetch_local_inputs,
    output:
        # the manifest is the product: written last, it lists every file that passed the checks
        # (the files themselves sit beside it and are read through it by ingest)
        manifest=f"{DOWNLOADS}/{{dataset}}/manifest.tsv",
    log:
        "logs/{dataset}/fetch.log",
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(500),
        # generous: a 100 MB+ GEO table over a slow mirror, with retries and back-off
        runtime=scaled_runtime(240),
    params:
        sources=fetch_sources,
        fetch=config["fetch"],
    script:
        "../scripts/fetch.py"
