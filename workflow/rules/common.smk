# Helpers shared by every stage: configuration, dataset registry, paths.
import difflib
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

# The texflow package lives next to the rules; the scripts import it the same way.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from texflow import configuration

SCHEMAS = Path(workflow.basedir) / "workflow/schemas"
# Schemas resolved into one document each (stage schemas inlined), read by the loader that
# refuses a duplicate key; validating against them fills every default of every stage.
DATASET_SCHEMA = configuration.load_schema(SCHEMAS / "dataset.schema.yaml")
CONFIG_SCHEMA = configuration.load_schema(SCHEMAS / "config.schema.yaml")
DATASET_KEYS = set(DATASET_SCHEMA["properties"])
CONFIG_KEYS = set(CONFIG_SCHEMA["properties"])


def _did_you_mean(data, known):
    """' (did you mean ...?)' hints for the top-level keys of `data` that are not `known`."""
    hints = []
    for key in data:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)
        if close:
            hints.append(f"did you mean {close[0]!r} instead of {key!r}?")
    return f" -- {'; '.join(hints)}" if hints else ""


def _validated(data, schema, *, what, known=None):
    """Validate `data` against `schema`, filling its defaults; name `what` and the key in the
    error, with a 'did you mean' hint for a top-level key that is a typo of one of `known`.
    """
    try:
        configuration.validate(data, schema, what=what)
    except configuration.ConfigError as error:
        hint = _did_you_mean(data, known) if known else ""
        raise WorkflowError(f"{error}{hint}") from None


def _check_checksums(data, what):
    """An unquoted sha256 of digits only is read by YAML as a number: refuse it, saying how to
    write it (a number also loses the leading zeros a checksum may have)."""
    for i, source in enumerate(data.get("sources") or []):
        value = source.get("sha256") if isinstance(source, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise WorkflowError(
                f"{what}: sources[{i}] ({source.get('name', '?')}): sha256 {value} was read by "
                f'YAML as a number, not as text; quote it: sha256: "{value}" (with the leading '
                "zeros of the checksum, if it has any)"
            )


def _validated_dataset(data, what):
    _check_checksums(data, what)
    _validated(data, DATASET_SCHEMA, what=what, known=DATASET_KEYS)


def _typed_config_overrides(config):
    """Give the values under a top-level `--config` key the types YAML gives them in a file.

    Snakemake parses a top-level value (`--config results=out`) as int, float, bool or string,
    but reads a mapping or list (`--config 'qc={nmads: 4}'`) with YAML's BaseLoader, which
    leaves every value a string ('4'), so the schema would refuse it. Strings that YAML reads as
    a number or a boolean become one; other strings stay as they are. Snakemake merges the
    mapping into the defaults, so the other keys of that stage keep theirs."""

    def typed(value):
        if isinstance(value, Mapping):
            return {key: typed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [typed(item) for item in value]
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return parsed if isinstance(parsed, (bool, int, float)) else value
        return value

    overrides = workflow.config_settings.config or {}
    nested = {
        key: typed(value)
        for key, value in overrides.items()
        if not isinstance(value, str)
    }
    update_config(
        config, {k: v for k, v in nested.items() if isinstance(v, (Mapping, list))}
    )


def _check_config_files():
    """Snakemake reads the config files itself (a key given twice: the last one silently wins);
    read each again with the loader that refuses a duplicate key."""
    for path in workflow.configfiles:
        try:
            configuration.load_yaml(path)
        except configuration.ConfigError as error:
            raise WorkflowError(f"config file {error}") from None


def _load_dataset_file(path):
    path = Path(path)
    if not path.is_file():
        raise WorkflowError(
            f"dataset file {path} (listed in config 'datasets') does not exist"
        )
    try:
        data = configuration.load_yaml(path)
    except configuration.ConfigError as error:
        raise WorkflowError(f"dataset file {error}") from None
    if not isinstance(data, dict):
        raise WorkflowError(
            f"dataset file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    _validated_dataset(data, f"dataset file {path}")
    return data


def _configfile_datasets():
    """(path, content) of each --configfile that is a dataset file (it holds `id`)."""
    found = []
    for path in workflow.config_settings.configfiles:
        try:
            data = configuration.load_yaml(path)
        except (OSError, configuration.ConfigError):
            continue  # Snakemake has read it already, or _check_config_files says why not
        if isinstance(data, dict) and "id" in data:
            found.append((path, data))
    return found


def _load_datasets(config):
    """Dataset configs by id, from `config['datasets']` or from a dataset file given as --configfile."""
    given = _configfile_datasets()
    if len(given) > 1:
        raise WorkflowError(
            f"{len(given)} dataset files given with --configfile ("
            + ", ".join(str(path) for path, _ in given)
            + "): Snakemake merges them key by key into one dataset. Run several datasets with "
            "--config datasets=[FILE1,FILE2] (or list them under datasets: in a run "
            "configuration file)"
        )
    if "id" in config:
        # `snakemake --configfile config/datasets/NEW.yaml` runs that one dataset: every key of
        # that file that is not a run-configuration key belongs to the dataset, so a misspelled
        # one is blamed on the file, not on the run configuration
        keys = {key for key in config if key in DATASET_KEYS}
        if given:
            path, content = given[0]
            keys |= {key for key in content if key not in CONFIG_KEYS}
            what = f"dataset file {path} (given with --configfile)"
        else:
            path, what = "--config", "dataset given with --config id=..."
        dataset = {key: config.pop(key) for key in list(config) if key in keys}
        _validated_dataset(dataset, what)
        config["datasets"] = []
        datasets, files = {dataset["id"]: dataset}, {dataset["id"]: str(path)}
    else:
        datasets, files = {}, {}
    for path in config.get("datasets", []):
        dataset = _load_dataset_file(path)
        if dataset["id"] in datasets:
            raise WorkflowError(
                f"dataset id {dataset['id']!r} appears twice: in {files[dataset['id']]} and in {path}"
            )
        datasets[dataset["id"]], files[dataset["id"]] = dataset, path
    if not datasets:
        raise WorkflowError(
            "no dataset to analyse: list dataset files under 'datasets' in the config"
        )
    return datasets, files


_check_config_files()
_typed_config_overrides(config)
DATASETS, DATASET_FILES = _load_datasets(config)
_validated(
    config,
    CONFIG_SCHEMA,
    what="the run configuration (config/config.yaml and --config/--configfile)",
    known=CONFIG_KEYS,
)

RESULTS = config["results"]
DOWNLOADS = config["downloads"]


def dataset_config(wildcards):
    """The validated dataset config of `wildcards.dataset`."""
    return DATASETS[wildcards.dataset]


def results(dataset, name):
    return f"{RESULTS}/{dataset}/{name}"


def scaled_mem_mb(base_mb, per_input_mb=0.0):
    """mem_mb that grows with the input size and with the retry attempt (after an OOM kill)."""

    def mem_mb(wildcards, input, attempt):
        return int((base_mb + per_input_mb * input.size_mb) * attempt)

    return mem_mb


def scaled_runtime(base_min, per_input_gb_min=0.0):
    """runtime (minutes) that grows with the input size and with the retry attempt."""

    def runtime(wildcards, input, attempt):
        return int((base_min + per_input_gb_min * input.size_mb / 1024) * attempt)

    return runtime


# Tables of earlier stages shown on each dataset's page (inputs of the report step).
REPORT_TABLES = [
    "composition",
    "qc_summary",
    "gating",
    "resolution_sweep",
    "cluster_states",
    "signature_coverage",
    "cluster_program_scores",
    "root_sensitivity",
    "program_coverage",
    "associations",
    "axis_associations",
    "state_comparison",
    "response_comparison",
    "trends",
    "pseudobulk_samples",
    "resistance_de",
    "resistance_programs",
]


def truth_table(wildcards):
    """The truth-recovery table of a simulated dataset (dataset file `simulated: true`)."""
    if DATASETS[wildcards.dataset].get("simulated", False):
        return [results(wildcards.dataset, "tables/truth_recovery.tsv")]
    return []


def meta_datasets():
    """Datasets the cross-dataset meta-analysis pools: the real ones. A simulated dataset is a
    positive control, not a cohort, so it is never pooled with real data; a run of simulated
    datasets only (a validation) pools those."""
    real = [d for d in DATASETS if not DATASETS[d].get("simulated", False)]
    return real or list(DATASETS)


def final_outputs():
    """The default target (all): every dataset's report page, which needs every stage before
    it, and the cross-dataset summary and gene meta-analysis with several datasets."""
    outputs = [results(dataset, "report.html") for dataset in DATASETS]
    if len(DATASETS) > 1:
        outputs += [
            f"{RESULTS}/summary.html",
            f"{RESULTS}/summary.tsv",
            f"{RESULTS}/resistance_genes.tsv",
            f"{RESULTS}/figures/resistance_forest.png",
        ]
    return outputs
