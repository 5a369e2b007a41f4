"""The fetch rule, run by Snakemake, downloads from a local server and writes the manifest."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import pytest
from texflow.manifest import read_manifest

from tests.httpserver import http_server  # noqa: F401
from tests.workflow_runner import ROOT, run_workflow

DEMO = "resources/demo/wu_2020_tcells_200.h5ad"
MANIFEST = "resources/downloads/mini_fetch/manifest.tsv"

# each Snakemake start costs 15-30 s on the shared 2-core machine
pytestmark = pytest.mark.slow


def test_fetch_rule_downloads_checks_and_skips_on_rerun(http_server, tmp_path):
    matrix = gzip.compress(b"".join(b"GENE%d\t%d\n" % (i, i) for i in range(20_000)), mtime=0)
    # the first answer is cut short: the rule's job must resume it
    http_server.add("/geo/mini_matrix.txt.gz", matrix, cut_after=len(matrix) // 3)
    dataset = {
        "id": "mini_fetch",
        "organism": "human",
        "value_type": "counts",
        "reader": "h5ad",
        "sources": [
            {
                "name": "matrix",
                "url": http_server.url("/geo/mini_matrix.txt.gz"),
                "sha256": hashlib.sha256(matrix).hexdigest(),
            },
            {"name": "cells", "url": DEMO, "filename": "cells.h5ad"},  # a local path
        ],
    }
    config = {"fetch": {"retries": 2, "backoff_seconds": 0.1, "timeout_seconds": 10}}

    done = run_workflow(tmp_path, dataset, MANIFEST, config=config)
    assert done.returncode == 0, done.stdout
    rows = {row.name: row for row in read_manifest(tmp_path / MANIFEST)}
    assert rows["matrix"].bytes == len(matrix)
    assert rows["matrix"].sha256 == hashlib.sha256(matrix).hexdigest()
    assert rows["cells"].sha256 == hashlib.sha256((ROOT / DEMO).read_bytes()).hexdigest()
    downloads = tmp_path / "resources/downloads/mini_fetch"
    assert (downloads / "mini_matrix.txt.gz").read_bytes() == matrix
    assert (downloads / "cells.h5ad").read_bytes() == (ROOT / DEMO).read_bytes()
    assert [r.range for r in http_server.requests_for("/geo/mini_matrix.txt.gz")] == [
        None,
        f"bytes={len(matrix) // 3}-",
    ]
    log = (tmp_path / "logs/mini_fetch/fetch.log").read_text()
    assert "resuming at byte" in log and "gzip intact" in log

    # nothing changed: nothing to do
    again = run_workflow(tmp_path, None, MANIFEST)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout, again.stdout

    # a changed source (here: its file name) makes Snakemake fetch again; the unchanged
    # download is not requested again
    dataset["sources"][1]["filename"] = "cells_renamed.h5ad"
    shutil.rmtree(tmp_path / "config")
    rerun = run_workflow(tmp_path, dataset, MANIFEST, config=config)
    assert rerun.returncode == 0, rerun.stdout
    assert "rule fetch" in rerun.stdout
    assert (downloads / "cells_renamed.h5ad").is_file()
    assert len(http_server.requests_for("/geo/mini_matrix.txt.gz")) == 2


def test_fetch_rule_failure_names_dataset_url_and_problem(http_server, tmp_path):
    http_server.add("/geo/mini_matrix.txt.gz", b"", html_error=True)
    dataset = {
        "id": "mini_fetch",
        "organism": "human",
        "value_type": "counts",
        "reader": "h5ad",
        "sources": [{"name": "matrix", "url": http_server.url("/geo/mini_matrix.txt.gz")}],
    }
    done = run_workflow(tmp_path, dataset, MANIFEST)
    assert done.returncode != 0
    expected = (
        f"[dataset mini_fetch, file {http_server.url('/geo/mini_matrix.txt.gz')}] "
        "server sent an HTML page"
    )
    assert expected in (tmp_path / "logs/mini_fetch/fetch.log").read_text()
    assert expected in done.stdout
    assert not (tmp_path / MANIFEST).exists()
    assert not (tmp_path / "resources/downloads/mini_fetch/mini_matrix.txt.gz").exists()
