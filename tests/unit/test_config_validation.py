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


# --- issue 17 item 6: traps of dataset files given with --configfile, typos, --config values


def test_misspelled_key_in_a_configfile_dataset_file_names_that_file(tmp_path):
    path = write_dataset(tmp_path, reeder_options={"source": "matrix"})
    result = dry_run("--configfile", str(path))
    assert result.returncode != 0
    assert f"dataset file {path}" in result.stdout and "reeder_options" in result.stdout
    assert "the run configuration" not in result.stdout, result.stdout


@pytest.mark.parametrize("how", ["listed", "configfile"])
def test_a_misspelled_required_key_gets_a_did_you_mean_hint(tmp_path, how):
    path = write_dataset(tmp_path, organism=None, organsim="human")
    listed = ("--config", f"datasets=['{path}']")
    args = ("--configfile", str(path)) if how == "configfile" else listed
    result = dry_run(*args)
    assert result.returncode != 0
    assert str(path) in result.stdout and "did you mean 'organism'" in result.stdout, result.stdout


@pytest.mark.parametrize("how", ["listed", "configfile"])
def test_an_all_digit_sha256_read_as_a_number_is_refused_with_the_fix(tmp_path, how):
    digits = "1234567890" * 6 + "1234"
    sources = [{**GOOD["sources"][0], "sha256": "DIGITS"}, *GOOD["sources"][1:]]
    path = write_dataset(tmp_path, sources=sources)
    text = path.read_text().replace("DIGITS", digits)  # unquoted, as a user writes it
    path.write_text(text)
    assert yaml.safe_load(text)["sources"][0]["sha256"] == int(digits)  # the trap itself
    listed = ("--config", f"datasets=['{path}']")
    args = ("--configfile", str(path)) if how == "configfile" else listed
    result = dry_run(*args)
    assert result.returncode != 0
    assert str(path) in result.stdout and "sha256" in result.stdout, result.stdout
    assert f'sha256: "{digits}"' in result.stdout and "quote" in result.stdout, result.stdout


def test_two_dataset_files_in_one_configfile_flag_are_refused(tmp_path):
    first = write_dataset(tmp_path)
    second = tmp_path / "other.yaml"
    second.write_text(yaml.safe_dump({**GOOD, "id": "other"}))
    result = dry_run("--configfile", str(first), str(second))
    assert result.returncode != 0
    assert str(first) in result.stdout and str(second) in result.stdout, result.stdout
    assert "datasets=" in result.stdout


def test_nested_values_given_with_config_are_typed_as_in_a_file():
    # Snakemake reads the values under a top-level key as strings ("4"); texflow types them
    done = dry_run("--config", "qc={nmads: 4, doublets: false}", "cluster={resolutions: [0.5, 1]}")
    assert done.returncode == 0, done.stdout[-3000:]
    wrong = dry_run("--config", "qc={nmads: four}")
    assert wrong.returncode != 0 and "nmads" in wrong.stdout and "four" in wrong.stdout
