"""Bad configuration stops the run before any job starts, naming the file and the key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
GOOD = yaml.safe_load((ROOT / "config/datasets/demo_wu_2020.yaml").read_text())


def dry_run(*args: str) -> subprocess.CompletedProcess:
    """Snakemake dry run from the repository; `.stdout` holds stdout and stderr together."""
    return subprocess.run(
        [*SNAKEMAKE, "--dry-run", "--cores", "1", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def write_dataset(tmp_path: Path, **changes) -> Path:
    dataset = {**GOOD, **changes}
    dataset = {k: v for k, v in dataset.items() if v is not None}
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(dataset))
    return path


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour": "blue"}, "colour"),
        ({"reader": "excel_sheet"}, "excel_sheet"),
        ({"organism": "zebrafish"}, "zebrafish"),
        ({"sources": [{"name": "matrix"}]}, "url"),
        ({"value_type": None}, "value_type"),
    ],
    ids=["unknown-key", "unknown-reader", "organism", "missing-url", "missing-value-type"],
)
def test_bad_dataset_file_listed_in_config(tmp_path, changes, expected):
    path = write_dataset(tmp_path, **changes)
    result = dry_run("--config", f"datasets=['{path}']")
    assert result.returncode != 0
    assert str(path) in result.stdout, result.stdout
    assert expected in result.stdout, result.stdout


def test_bad_dataset_file_given_as_configfile(tmp_path):
    path = write_dataset(tmp_path, organism="zebrafish")
    result = dry_run("--configfile", str(path))
    assert result.returncode != 0
    assert "zebrafish" in result.stdout and "organism" in result.stdout, result.stdout


def test_unknown_top_level_key():
    result = dry_run("--config", "resolutoin=2")
    assert result.returncode != 0
    assert "resolutoin" in result.stdout and "config" in result.stdout, result.stdout


def test_missing_dataset_file():
    result = dry_run("--config", "datasets=['config/datasets/nope.yaml']")
    assert result.returncode != 0
    assert "config/datasets/nope.yaml" in result.stdout and "does not exist" in result.stdout


def test_duplicate_dataset_id():
    demo = "config/datasets/demo_wu_2020.yaml"
    result = dry_run("--config", f"datasets=['{demo}','{demo}']")
    assert result.returncode != 0
    assert "appears twice" in result.stdout


def test_gate_schema_accepts_both_of_its_thresholds():
    """gate.schema.yaml had lost the key line of min_cells_clustering, whose body then replaced
    min_frac_cd8b_nk_like's: neither could be set."""
    from snakemake.utils import validate

    schema = Path(__file__).resolve().parents[2] / "workflow/schemas/config/gate.schema.yaml"
    validate({"min_cells_clustering": 10, "min_frac_cd8b_nk_like": 0.4}, str(schema), set_default=False)
    with pytest.raises(Exception):
        validate({"min_frac_cd8b_nk_like": 30}, str(schema), set_default=False)
