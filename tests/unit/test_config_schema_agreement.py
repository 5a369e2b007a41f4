"""One definition of every parameter: the stage schemas (workflow/schemas/config/) hold each
key, its type, default and reason; the code's parameter objects, the keywords the scripts pass,
config/config.yaml and config/README.md must agree with them key by key."""

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "workflow/schemas/config"
SCRIPTS = ROOT / "workflow/scripts"
STAGES = sorted(path.name.removesuffix(".schema.yaml") for path in SCHEMAS.glob("*.schema.yaml"))


def properties(stage: str) -> dict:
    return yaml.safe_load((SCHEMAS / f"{stage}.schema.yaml").read_text())["properties"]


def defaults(stage: str) -> dict:
    return {key: sub["default"] for key, sub in properties(stage).items()}


def plain(value):
    """Tuples as lists: the dataclasses hold tuples where the schema's YAML has lists."""
    return list(value) if isinstance(value, tuple) else value


def keyword_defaults(function) -> dict:
    return {
        name: plain(parameter.default)
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def subscripted_keys(script: str, variable: str) -> set[str]:
    """Keys a script reads as `variable["key"]` (the scripts run on import; read, not run)."""
    return set(re.findall(rf'{variable}\["(\w+)"\]', (SCRIPTS / script).read_text()))


@pytest.mark.parametrize("stage", STAGES)
def test_every_key_has_a_default_and_a_reason(stage):
    for key, sub in properties(stage).items():
        assert "default" in sub, f"{stage}.{key} has no default"
        assert sub.get("description", "").strip(), f"{stage}.{key} has no description"


def dataclass_defaults(cls) -> dict:
    values = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            values[field.name] = plain(field.default)
        else:
            values[field.name] = plain(field.default_factory())
    return values


def params_classes():
    from texflow.cluster import ClusterParams
    from texflow.gating import GateParams
    from texflow.qc import QCParams
    from texflow.states import StatesParams

    return {"qc": QCParams, "gate": GateParams, "cluster": ClusterParams, "states": StatesParams}


@pytest.mark.parametrize("stage", ["qc", "gate", "cluster", "states"])
def test_params_dataclass_equals_schema(stage):
    cls = params_classes()[stage]
    assert dataclass_defaults(cls) == defaults(stage)
    # built from the schema's defaults, the object gives them back unchanged
    assert cls.from_config(defaults(stage)).as_dict() == defaults(stage)


def test_trajectory_options_equal_schema():
    from texflow import trajectory

    expected = defaults("trajectory")
    options = trajectory.options_from_config(expected)
    # every key but exclude_programs (the script turns it into genes) reaches the function ...
    assert {*options, "exclude_programs"} == {*expected, "states"} - {"lineage_states"}
    assert {"lineage_states", "exclude_programs"} <= subscripted_keys("trajectory.py", "params")
    # ... and the function's own defaults are the schema's
    signature = keyword_defaults(trajectory.lineage_pseudotime)
    for name in trajectory.CONFIG_OPTIONS:
        assert signature[name] == expected[name], name
    assert signature["states"] == expected["lineage_states"]


def test_programs_and_stats_keys_equal_schema():
    from texflow import programs

    mapped = programs.ANALYSE_OPTIONS
    read = {stage: {key for (s, key) in mapped if s == stage} for stage in ("programs", "stats")}
    read["programs"] |= subscripted_keys("programs.py", "params")
    read["stats"] |= subscripted_keys("programs.py", "stats")
    assert read["programs"] == set(properties("programs"))
    assert read["stats"] == set(properties("stats"))
    option_defaults = dataclass_defaults(programs.AnalyseOptions)
    assert set(mapped.values()) == set(option_defaults)
    # stats_seed None = the programs seed; both schema defaults are 0
    assert option_defaults["stats_seed"] is None
    option_defaults["stats_seed"] = option_defaults["seed"]
    for stage in ("programs", "stats"):
        for key, default in defaults(stage).items():
            if (stage, key) == ("programs", "extra_file"):
                continue  # read by load_selected_programs, no default there
            if (stage, key) == ("programs", "programs"):
                assert list(programs.DEFAULT_PROGRAMS) == default
                continue
            field = programs.ANALYSE_OPTIONS[(stage, key)]
            assert option_defaults[field] == default, f"{stage}.{key}"
    # built from the schema's defaults, the options are the defaults
    options = programs.options_from_config(defaults("programs"), defaults("stats"))
    assert options == programs.AnalyseOptions(stats_seed=defaults("stats")["seed"])


def test_report_options_equal_schema():
    from texflow import report

    tree = ast.parse((SCRIPTS / "report.py").read_text())
    options = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "OPTIONS"
    )
    assert set(options) == set(properties("report"))
    signature = keyword_defaults(report.collect)
    for key, default in defaults("report").items():
        assert signature[options[key]] == default, key


def test_fetch_keys_equal_schema():
    from texflow import fetch

    assert subscripted_keys("fetch.py", "snakemake.params.fetch") == set(properties("fetch"))
    for function in (fetch.fetch_dataset, fetch.fetch_source):
        signature = keyword_defaults(function)
        for key, default in defaults("fetch").items():
            assert signature[key] == default, f"{function.__name__}: {key}"


def test_shipped_config_sets_only_schema_defaults():
    """config/config.yaml shows the defaults; it does not define them. A key set there to
    another value than its schema default would be a second definition."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for stage in STAGES:
        for key, value in config.get(stage, {}).items():
            assert value == defaults(stage)[key], f"{stage}.{key}: {value!r} in config.yaml"


def readme_rows() -> dict[str, dict[str, str]]:
    """config/README.md: section (## stage) -> key -> the row's default cell. A row may name
    several keys (`n_top_genes`, `n_pcs`) with as many comma-separated defaults."""
    rows: dict[str, dict[str, str]] = {}
    section = None
    for line in (ROOT / "config/README.md").read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if section not in STAGES or len(cells) < 3 or not line.startswith("| `"):
            continue
        keys = [key.removeprefix(f"{section}.") for key in re.findall(r"`([\w.]+)`", cells[0])]
        values = cells[-1].split(", ") if len(keys) > 1 else [cells[-1]]
        for index, key in enumerate(keys):
            rows.setdefault(section, {})[key] = values[index] if len(values) == len(keys) else ""
    return rows


@pytest.mark.parametrize("stage", STAGES)
def test_every_key_has_a_row_in_config_readme(stage):
    rows = readme_rows().get(stage, {})
    assert set(rows) == set(properties(stage)), f"## {stage} in config/README.md"


@pytest.mark.parametrize("stage", STAGES)
def test_readme_defaults_equal_schema(stage):
    """Each README default, read as YAML, equals the schema's."""
    for key, cell in readme_rows().get(stage, {}).items():
        value, expected = yaml.safe_load(cell.strip("`")), defaults(stage)[key]
        assert value == expected, f"{stage}.{key}: README {cell!r}, schema {expected!r}"
