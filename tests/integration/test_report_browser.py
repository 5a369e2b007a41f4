"""The report pages, opened from disk in a real (headless) Chromium: they load, with every image.

Each page carries a small script that, once the page has loaded, writes on <body> how many of
its images decoded (`data-images-loaded`) and how many did not (`data-images-broken`);
`chromium --dump-dom` prints the DOM after scripts ran, so the test reads those numbers.

Skipped when Chromium is not installed (`scripts/install-chromium` installs it), except when
the environment sets TEXFLOW_REQUIRE_BROWSER=1 (CI does, after installing it): then it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from texflow import report, report_summary
from texflow.programs import DEFAULT_PROGRAMS, trend_programs

from tests.report_fixtures import declared, fake_results

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# flags for a quiet, offline, throw-away browser: no sandbox (containers, root), no GPU, no
# network side traffic, its own profile directory
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-dev-shm-usage",
]  # fmt: skip


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    reason = "Chromium is not installed (run scripts/install-chromium)"
    if os.environ.get("TEXFLOW_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and TEXFLOW_REQUIRE_BROWSER=1 requires it")
    pytest.skip(reason)


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def image_counts(browser: str, page: Path, profile: Path) -> dict[str, int]:
    """Load `page` from disk and return the counts its image-check script wrote on <body>."""
    done = _run(
        browser,
        profile,
        "--virtual-time-budget=10000",
        "--run-all-compositor-stages-before-draw",
        "--dump-dom",
        page.resolve().as_uri(),
    )
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body, f"no <body> in the DOM of {page} (exit {done.returncode}):\n{done.stderr[-2000:]}"
    counts = dict(re.findall(r'data-images-(total|loaded|broken)="(\d+)"', body.group(1)))
    assert counts, f"the page's image check did not run in {page}: <body{body.group(1)}>"
    return {key: int(value) for key, value in counts.items()}


def screenshot(
    browser: str, page: Path, target: Path, profile: Path, *, height: int = 4000
) -> Path:
    done = _run(
        browser,
        profile,
        f"--screenshot={target}",
        f"--window-size=1280,{height}",
        page.resolve().as_uri(),
    )
    assert target.is_file(), (
        f"no screenshot of {page} (exit {done.returncode}):\n{done.stderr[-2000:]}"
    )
    return target


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Two fake datasets reported, plus the cross-dataset summary: the pages to open."""
    root = tmp_path_factory.mktemp("browser")
    results = root / "results"
    for dataset, kwargs in {
        "complete": {},
        "no_labels": {"with_response": False, "with_tpex": False},
    }.items():
        out = fake_results(root, dataset, **kwargs)
        report.write_dataset_report(
            report.collect(out, dataset=dataset, **declared(out)), out / "report.html"
        )
    datasets = ["complete", "no_labels"]
    report_summary.write_summary(
        [report_summary.headline_only(d, dataset_dir=results / d,
                                      findings=results / d / "tables/findings.tsv")
         for d in datasets],
        tsv=results / "summary.tsv", html_path=results / "summary.html",
        report_links={d: results / d / "report.html" for d in datasets},
    )  # fmt: skip
    return {
        "complete": results / "complete/report.html",
        "no_labels": results / "no_labels/report.html",
        "summary": results / "summary.html",
    }


@pytest.mark.parametrize("name", ["complete", "no_labels", "summary"])
def test_page_loads_with_all_its_images(pages, name, tmp_path):
    browser = _browser()
    page = pages[name]
    expected = page.read_text(encoding="utf-8").count("<img ")
    counts = image_counts(browser, page, tmp_path / "profile")
    assert counts == {"total": expected, "loaded": expected, "broken": 0}
    if name != "summary":
        assert expected >= 8  # UMAPs, composition, stage figures

    shot = screenshot(browser, page, tmp_path / f"{name}.png", tmp_path / "profile")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        # something was drawn: the header band and text are not one flat colour
        top = image.convert("L").crop((0, 0, 1280, 600))
        low, high = top.getextrema()
        assert high - low > 100, f"the screenshot of {page} looks blank"


def test_broken_image_is_detected(pages, tmp_path):
    """The check can fail: a page whose image points at a missing file reports it broken."""
    browser = _browser()
    text = pages["complete"].read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(
        re.sub(r'src="data:image/png;base64,[^"]+"', 'src="no-such-figure.png"', text, count=1),
        encoding="utf-8",
    )
    counts = image_counts(browser, broken, tmp_path / "profile")
    assert counts["broken"] == 1 and counts["loaded"] == counts["total"] - 1


# ----------------------------------------------------------------------------------------------
# the rules: pages written by the workflow itself, and `snakemake --report`


@pytest.mark.slow
def test_rules_write_pages_summary_and_snakemake_report(tmp_path):
    """`rule report` and `rule summary` on two hand-made result trees (the stages are not run:
    their outputs exist), then `snakemake --report report.zip`; the pages open in Chromium."""
    import zipfile

    import yaml

    from tests.workflow_runner import ROOT, prepare_workdir, run_workflow

    base = yaml.safe_load((ROOT / "config/datasets/demo_sade_feldman_2018.yaml").read_text())
    datasets = {"alpha_ds": {}, "beta_ds": {"with_response": False, "with_tpex": False}}
    files = []
    for dataset, kwargs in datasets.items():
        files.append(prepare_workdir(tmp_path, {**base, "id": dataset}))
        out = fake_results(tmp_path, dataset, **kwargs)
        # the rule's other inputs (REPORT_TABLES of workflow/rules/common.smk)
        for table in (
            "signature_coverage",
            "trends",
            "state_comparison",
            "composition",
            "axis_associations",
            "pseudobulk_samples",
            "resistance_de",
            "resistance_programs",
            "resolution_sweep",
            "root_sensitivity",
            "cluster_program_scores",
        ):
            if not (out / f"tables/{table}.tsv").exists():
                (out / f"tables/{table}.tsv").write_text("program\tnote\nifn_i_core\tnot run\n")
        # and the stage figures it declares (a placeholder image each)
        stage_figures = [
            "qc_metrics",
            "qc_doublets",
            "umap_clusters",
            "resolution_sweep",
            "state_markers_dotplot",
            "pseudotime",
            *(f"trend_{p}" for p in trend_programs(DEFAULT_PROGRAMS)),
        ]
        for name in stage_figures:
            if not (out / f"figures/{name}.png").exists():
                shutil.copy(out / "figures/qc_total_counts.png", out / f"figures/{name}.png")
    config = yaml.safe_load((tmp_path / "config/config.yaml").read_text())
    config["datasets"] = [str(f) for f in files]
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    # the stages' outputs are hand-made, with no upstream files: only the report's rules may run
    only_report = ["--allowed-rules", "report", "summary", "resistance_meta"]
    done = run_workflow(
        tmp_path, None, "results/summary.html", "results/summary.tsv", cores=2, args=only_report
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "rule programs" not in done.stdout  # only the report's own rules ran
    summary = pd.read_csv(tmp_path / "results/summary.tsv", sep="\t")
    assert set(summary["dataset"]) == set(datasets)
    for dataset in datasets:
        assert (tmp_path / f"results/{dataset}/report.html").is_file()
        assert (tmp_path / f"logs/{dataset}/report.log").is_file()

    done = run_workflow(
        tmp_path, None, "results/summary.html", args=[*only_report, "--report", "report.zip"]
    )
    assert done.returncode == 0, done.stdout[-4000:]
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        names = archive.namelist()
    assert sum(n.endswith("/report.html") for n in names) == 3  # two pages + snakemake's index
    assert any(n.endswith("/summary.html") for n in names) and any(
        n.endswith("/summary.tsv") for n in names
    )
    assert sum(n.endswith("paired_tpex_texterm.png") for n in names) == 1  # drawn for alpha_ds only

    browser = _browser()
    for page in [
        tmp_path / "results/summary.html",
        *(tmp_path / f"results/{d}/report.html" for d in datasets),
    ]:
        expected = page.read_text(encoding="utf-8").count("<img ")
        assert image_counts(browser, page, tmp_path / "profile") == {
            "total": expected,
            "loaded": expected,
            "broken": 0,
        }

    # inside the zip, links go where the zip holds the file (issue 19, 9): the summary's to the
    # pages and summary.tsv; here the stages did not run, so their tables are not in the zip
    unpacked = tmp_path / "unzipped"
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        archive.extractall(unpacked)
    inside = list(unpacked.rglob("data/raw/*/*.html"))
    assert len(inside) == 3  # the summary and the two pages
    packed = {p.name for p in unpacked.rglob("data/raw/*/*")}
    for page in inside:
        dom = _run(browser, tmp_path / "profile", "--dump-dom", page.resolve().as_uri()).stdout
        hrefs = re.findall(r'<a href="([^"#]+)"[^>]*data-report-id', dom)
        assert hrefs and all(h.startswith("../") for h in hrefs), page
        held = [h for h in hrefs if h.split("/")[-1] in packed]
        assert [h for h in held if not (page.parent / h).is_file()] == [], page
        if page.name == "summary.html":
            assert len(held) == len(hrefs) >= 3, hrefs  # pages and summary.tsv, every link


def test_decisive_columns_visible_at_1400_px(tmp_path):
    """Wide stage tables in Chromium at 1400 px: the columns a reader decides by (gating's
    decision, n_vetoed and reason; a test's p, q and note) sit inside the visible table box."""
    browser = _browser()
    out = fake_results(tmp_path, "wide")
    cell_types = ("cd8_t", "cd4_t", "treg", "nk", "myeloid", "b_cell")
    many = {f"mean_score_{c}": [0.1, 0.2] for c in cell_types}
    fractions = {f"frac_{c}": [0.9, 0.1] for c in ("cd8", "cd8b", "cd3", "cd4")}
    pd.DataFrame(
        {
            "cluster": ["0", "1"],
            "n_cells": [79, 43],
            **many,
            **fractions,
            "decision": ["CD8", "not CD8"],
            "reason": ["cd8_t highest (0.63; next cd4_t 0.04)"] * 2,
            "n_vetoed": [6, 0],
        }
    ).to_csv(out / "tables/gating.tsv", sep="\t", index=False)
    page = out / "report.html"
    report.write_dataset_report(report.collect(out, dataset="wide", **declared(out)), page)
    probe = """<script>window.addEventListener("load", function () {
      var hidden = [];
      document.querySelectorAll(".scroll").forEach(function (box) {
        var edge = box.getBoundingClientRect().right;
        box.querySelectorAll("th").forEach(function (th) {
          var name = th.textContent.trim();
          if (["decision", "n_vetoed", "reason", "p_value", "p_adj", "note"].indexOf(name) >= 0
              && th.getBoundingClientRect().right > edge + 1) { hidden.push(name); }
        });
      });
      document.body.setAttribute("data-hidden", hidden.join(",") || "none");
    });</script></body>"""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    dom = _run(
        browser,
        tmp_path / "profile",
        "--window-size=1400,3000",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.resolve().as_uri(),
    ).stdout
    assert re.search(r'data-hidden="none"', dom), re.search(r'data-hidden="[^"]*"', dom)
