# Helpers shared by every stage: configuration, dataset registry, paths.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The texflow package lives next to the rules; the scripts import it the same way.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from texflow import configuration

SCHEMAS = Path(workflow.basedir) / "workflow/schemas"
# Schemas resolved into one document each (stage schemas inlined), read by the loader that
# refuses a duplicate key; validating against them fills every default of every stage.
DATASET_SCHEMA = configuration.load_schema(SCHEMAS / "dataset.schema.yaml")
CONFIG_SCHEMA = configuration.load_schema(SCHEMAS / "config.schema.yaml")
DATASET_KEYS = set(DATASET_SCHEMA["properties"])


def _validated(data, schema, *, what):
    """Validate `data` against `schema`, filling its defaults; name `what` and the key in the error."""
    try:
        configuration.validate(data, schema, what=what)
    except configuration.ConfigError as error:
        raise WorkflowError(str(error)) from None


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
    _validated(data, DATASET_SCHEMA, what=f"dataset file {path}")
    return data


def _load_datasets(config):
    """Dataset configs by id, from `config['datasets']` or from a dataset file given as --configfile."""
    if "id" in config:
        # `snakemake --configfile config/datasets/NEW.yaml` runs that one dataset
        dataset = {key: config.pop(key) for key in list(config) if key in DATASET_KEYS}
        _validated(
            dataset,
            DATASET_SCHEMA,
            what=f"dataset given with --configfile (id {dataset['id']!r})",
        )
        config["datasets"] = []
        datasets, files = {dataset["id"]: dataset}, {dataset["id"]: "--configfile"}
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
DATASETS, DATASET_FILES = _load_datasets(config)
_validated(
    config,
    CONFIG_SCHEMA,
    what="the run configuration (config/config.yaml and --config/--configfile)",
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
    "cluster_states",
    "signature_coverage",
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


def final_outputs():
    """The default target (all): every dataset's report page, which needs every stage before
    it, and the cross-dataset summary when several datasets run."""
    outputs = [results(dataset, "report.html") for dataset in DATASETS]
    if len(DATASETS) > 1:
        outputs += [f"{RESULTS}/summary.html", f"{RESULTS}/summary.tsv"]
    return outputs
