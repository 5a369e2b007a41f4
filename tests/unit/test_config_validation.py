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
        check=False,
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
STAGES = ("fetch", "qc", "gate", "cluster", "states", "trajectory", "programs", "stats", "report")


def run_schema() -> dict:
    from texflow.configuration import load_schema

    return load_schema(SCHEMAS / "config.schema.yaml")


def stage_defaults(stage: str) -> dict:
    from texflow.configuration import load_yaml, schema_defaults

    return schema_defaults(load_yaml(SCHEMAS / "config" / f"{stage}.schema.yaml"))


def validated_config(config: dict) -> dict:
    """`config` validated against the run schema as common.smk does it (defaults filled)."""
    from texflow.configuration import validate

    return validate(config, run_schema(), what="test config")


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
    from texflow.configuration import ConfigError

    with pytest.raises(ConfigError, match=r"\['gate'\]"):
        validated_config({"datasets": [], "gate": gate})


def test_snakemake_validate_leaves_stage_defaults_unfilled():
    """Why texflow.configuration exists: through $ref to a schema declaring its own $schema,
    snakemake.utils.validate fills no stage default (if this starts failing, Snakemake fixed it
    and texflow.configuration could go)."""
    from snakemake.utils import validate

    config = {"datasets": [], "gate": {"resolution": 1.0}}
    validate(config, str(SCHEMAS / "config.schema.yaml"))
    assert config["gate"] == {"resolution": 1.0}


def test_config_without_gate_and_states_gets_schema_defaults():
    """config/config.yaml with its gate: and states: sections removed: after validation both
    sections hold every key of their schema at its default, and the parameter objects built from
    them equal the schema's defaults."""
    from texflow.gating import GateParams
    from texflow.states import StatesParams

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    del config["gate"], config["states"]
    validated_config(config)
    assert config["gate"] == stage_defaults("gate")
    assert config["states"] == stage_defaults("states")
    assert GateParams.from_config(config["gate"]).as_dict() == stage_defaults("gate")
    assert StatesParams.from_config(config["states"]).as_dict() == stage_defaults("states")
    assert GateParams.from_config(config["gate"]) == GateParams(**stage_defaults("gate"))


def test_empty_config_gets_every_stage_default():
    config = validated_config({"datasets": []})
    for stage in STAGES:
        schema = yaml.safe_load((SCHEMAS / "config" / f"{stage}.schema.yaml").read_text())
        assert set(config[stage]) == set(schema["properties"]), stage
        assert config[stage] == stage_defaults(stage), stage
    assert config["results"] == "results" and config["downloads"] == "resources/downloads"


def test_given_values_kept_and_the_rest_filled():
    config = validated_config({"datasets": [], "cluster": {"n_pcs": 30}, "qc": {}})
    assert config["cluster"] == {**stage_defaults("cluster"), "n_pcs": 30}
    assert config["qc"] == stage_defaults("qc")


def test_defaults_are_copies():
    """Two configs never share a default list (a stage appending to one would change both)."""
    schema = run_schema()
    from texflow.configuration import validate

    first = validate({"datasets": []}, schema, what="first")
    first["states"]["keep_own_call"].append("Tex_term")
    second = validate({"datasets": []}, schema, what="second")
    assert second["states"]["keep_own_call"] == ["Tpex"]


def test_options_from_config_accepts_the_filled_trajectory_section():
    from texflow import trajectory

    options = trajectory.options_from_config(validated_config({"datasets": []})["trajectory"])
    assert options["states"] == ["Tpex", "Tex_int", "Tex_term"]


def test_dry_run_with_no_stage_section_at_all(tmp_path):
    """A run configuration naming no stage key (config/config.yaml replaced) is accepted: every
    stage runs on the schema defaults."""
    path = tmp_path / "config.yaml"
    path.write_text("datasets: [config/datasets/demo_wu_2020.yaml]\n")
    result = dry_run("--configfile", str(path), "--replace-workflow-config")
    assert result.returncode == 0, result.stdout


# --- YAML read with a loader that refuses a duplicate key ------------------------------------


SHIPPED_YAML = sorted(
    [
        *SCHEMAS.glob("*.schema.yaml"),
        *(SCHEMAS / "config").glob("*.schema.yaml"),
        ROOT / "config/config.yaml",
        *(ROOT / "config/datasets").glob("*.yaml"),
    ]
)


@pytest.mark.parametrize("path", SHIPPED_YAML, ids=lambda path: str(path.relative_to(ROOT)))
def test_shipped_schema_and_config_files_have_no_duplicate_key(path):
    from texflow.configuration import load_yaml

    load_yaml(path)


def test_unique_key_loader_catches_duplicates(tmp_path):
    from texflow.configuration import ConfigError, load_yaml

    path = tmp_path / "gate.schema.yaml"
    path.write_text("properties:\n  a: {type: number}\n  b: 1\n  a: {type: integer}\n")
    expected = r"gate\.schema\.yaml: duplicate key 'a' \(line 2 and again line 4\)"
    with pytest.raises(ConfigError, match=expected):
        load_yaml(path)
    path.write_text("{a: 1, a: 2}\n")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_yaml(path)


def test_duplicate_key_in_a_referenced_stage_schema_names_that_file(tmp_path):
    from texflow.configuration import ConfigError, load_schema

    (tmp_path / "config").mkdir()
    (tmp_path / "run.schema.yaml").write_text(
        "type: object\nproperties:\n  gate: {$ref: 'config/gate.schema.yaml', default: {}}\n"
    )
    gate = (SCHEMAS / "config/gate.schema.yaml").read_text()
    # the bug of issue 18: a key line lost, its body parsed into the key above it
    broken = gate + "  seed: {type: integer, default: 1}\n"
    (tmp_path / "config/gate.schema.yaml").write_text(broken)
    with pytest.raises(ConfigError, match=r"config/gate\.schema\.yaml: duplicate key 'seed'"):
        load_schema(tmp_path / "run.schema.yaml")


def test_dataset_file_with_duplicate_key_stops_the_run(tmp_path):
    path = tmp_path / "dataset.yaml"
    text = (ROOT / "config/datasets/demo_wu_2020.yaml").read_text()
    path.write_text(text + "organism: mouse\n")
    result = dry_run("--config", f"datasets=['{path}']")
    assert result.returncode != 0
    assert str(path) in result.stdout and "duplicate key 'organism'" in result.stdout, result.stdout


def test_config_file_with_duplicate_key_stops_the_run(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("gate:\n  resolution: 1.0\ngate:\n  seed: 1\n")
    result = dry_run("--configfile", str(path))
    assert result.returncode != 0
    assert str(path) in result.stdout and "duplicate key 'gate'" in result.stdout, result.stdout


def test_program_file_with_duplicate_program_fails(tmp_path):
    """programs.extra_file (YAML): a program named twice would replace the first silently."""
    from texflow.errors import InputDataError
    from texflow.signatures import load_programs

    path = tmp_path / "extra.yaml"
    path.write_text("my_program: [CD8A, GZMB]\nmy_program: [PDCD1]\n")
    with pytest.raises(InputDataError, match="duplicate key 'my_program'") as error:
        load_programs("human", extra=str(path))
    assert str(path) in str(error.value)


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


def test_the_cross_dataset_meta_analysis_pools_real_datasets_only():
    """The default run holds a simulated cohort beside three real subsets: the simulated one (a
    positive control) is not an input of rule resistance_meta."""
    done = dry_run("--forcerun", "resistance_meta", "--", "results/resistance_genes.tsv")
    block = done.stdout.split("rule resistance_meta:")[-1].split("output:")[0]
    assert "demo_sade_feldman_2018/tables/resistance_de.tsv" in block, done.stdout[-3000:]
    assert "demo_simulated_cohort" not in block
