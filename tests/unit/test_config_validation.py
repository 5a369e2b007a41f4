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


SCHEMAS = ROOT / "workflow/schemas"


def validated_config(config: dict) -> dict:
    """`config` validated against the run schema (as common.smk does), stage schemas by $ref."""
    from snakemake.utils import validate

    validate(config, str(SCHEMAS / "config.schema.yaml"))
    return config


def test_gate_min_cells_clustering_and_cd8b_nk_like_reach_gate_params():
    from texflow.gating import GateParams

    gate = {"min_cells_clustering": 10, "min_frac_cd8b_nk_like": 0.4}
    config = validated_config({"datasets": [], "gate": gate})
    params = GateParams.from_config(config["gate"])
    assert params.min_cells_clustering == 10
    assert params.min_frac_cd8b_nk_like == 0.4


@pytest.mark.parametrize(
    "gate",
    [{"min_cells_clustering": 2}, {"min_cells_clustering": 10.5}, {"min_frac_cd8b_nk_like": 1.5}],
)
def test_gate_bad_values_rejected(gate):
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError):
        validated_config({"datasets": [], "gate": gate})


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that raises on a mapping key given twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@pytest.mark.parametrize(
    "schema", sorted((SCHEMAS / "config").glob("*.schema.yaml")), ids=lambda path: path.name
)
def test_stage_schema_has_no_duplicate_key(schema):
    yaml.load(schema.read_text(), Loader=UniqueKeyLoader)


def test_unique_key_loader_catches_duplicates():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        text = "properties:\n  a: {type: number}\n  a: {type: integer}\n"
        yaml.load(text, Loader=UniqueKeyLoader)
