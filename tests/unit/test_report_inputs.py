"""The report rule declares every table and figure its page shows (issue 18 item 3): a figure
no stage makes any more is not an input, so the page cannot embed it as current, and a change
of the declared inputs makes Snakemake rerun the report (its "input" rerun trigger)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.workflow_runner import ROOT, run_workflow

DATASET = yaml.safe_load((ROOT / "config/datasets/demo_wu_2020.yaml").read_text())


def jobs(stdout: str) -> dict[str, list[dict[str, list[str]]]]:
    """rule -> its jobs' input and output lists, from a dry run's job listing."""
    found: dict[str, list[dict[str, list[str]]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        fields = dict(re.findall(r"^\s+(input|output): (.*)$", block, flags=re.MULTILINE))
        job = {
            k: [p.strip() for p in fields.get(k, "").split(",") if p.strip()]
            for k in ("input", "output")
        }
        found.setdefault(head.group(1), []).append(job)
    return found


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """The DAG of the demo dataset's page with the default programs, and with fewer programs."""
    runs = {}
    for name, programs in {"default": None, "fewer": ["ifn_i_core", "lpo_drivers"]}.items():
        workdir = tmp_path_factory.mktemp(name)
        config = {"programs": {"programs": programs}} if programs else {}
        done = run_workflow(
            workdir,
            DATASET,
            f"results/{DATASET['id']}/report.html",
            config=config,
            args=["--dry-run", "--forceall"],
        )
        assert done.returncode == 0, done.stdout[-3000:]
        runs[name] = jobs(done.stdout)
    return runs


def test_every_stage_figure_and_table_is_an_input_of_the_report(dry_runs):
    rules = dry_runs["default"]
    (report,) = rules["report"]
    made = {
        path
        for rule, rule_jobs in rules.items()
        if rule != "report"
        for job in rule_jobs
        for path in job["output"]
        if Path(path).suffix in (".png", ".tsv") and f"results/{DATASET['id']}/" in path
    }
    assert made, "the dry run listed no stage output"
    assert made <= set(report["input"]), sorted(made - set(report["input"]))
    assert f"results/{DATASET['id']}/tables/findings.tsv" in report["input"]


def test_a_figure_no_stage_makes_is_not_an_input(dry_runs):
    """With fewer programs, the trend figure of a dropped program is neither made nor shown."""
    (default,), (fewer,) = dry_runs["default"]["report"], dry_runs["fewer"]["report"]
    trend = f"results/{DATASET['id']}/figures/trend_lpo_signed.png"
    assert trend in default["input"]
    assert trend not in fewer["input"]
    assert set(fewer["input"]) < set(default["input"])
