"""Every shipped dataset file validates against the dataset schema and uses a tested reader."""

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from texflow.readers import METADATA_READERS, READERS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow/schemas/dataset.schema.yaml"
DATASET_FILES = sorted((ROOT / "config/datasets").glob("*.yaml"))
GEO_URL = "https://ftp.ncbi.nlm.nih.gov/geo/series/"


def test_there_are_real_and_demo_dataset_files():
    names = {path.stem for path in DATASET_FILES}
    assert {"GSE120575", "GSE123813_bcc", "GSE156728_ESCA_CD8", "GSE122675"} <= names
    assert {"demo_wu_2020", "demo_sade_feldman_2018", "demo_lcmv_mouse"} <= names


@pytest.mark.parametrize("path", DATASET_FILES, ids=lambda p: p.stem)
def test_dataset_file_is_valid(path):
    dataset = yaml.safe_load(path.read_text())
    validate(dataset, str(SCHEMA))
    assert dataset["id"] == path.stem, "the file name is the dataset id"
    assert dataset["reader"] in READERS
    metadata = dataset.get("metadata", {})
    assert metadata.get("format", "table") in METADATA_READERS
    names = [source["name"] for source in dataset["sources"]]
    assert len(names) == len(set(names))
    if "source" in metadata:
        assert metadata["source"] in names
    for field in set(metadata.get("patterns", {})) | set(metadata.get("values", {})):
        assert field in metadata.get("columns", {}), field
    if dataset["id"].startswith("GSE"):
        accession = dataset["id"].split("_")[0]
        stem = accession[:-3] + "nnn"
        for source in dataset["sources"]:
            # GEO layout: .../GSE<first digits>nnn/<GSE>/suppl/<GSE>_<file>
            assert source["url"].startswith(f"{GEO_URL}{stem}/{accession}/suppl/{accession}_"), (
                source["url"]
            )


def test_schema_rejects_a_response_value_that_is_not_harmonised():
    dataset = yaml.safe_load((ROOT / "config/datasets/GSE120575.yaml").read_text())
    dataset["metadata"]["values"]["response"]["Responder"] = "yes"
    with pytest.raises(Exception, match="yes"):
        validate(dataset, str(SCHEMA))


def test_gse120575_patients_with_both_labels_are_the_four_its_notes_name():
    """GEO labels response per biopsy: the patients texflow leaves out (both labels) are the
    four GSE120575.yaml names, counted on the real GEO template (copy in tests/data)."""
    from texflow.io import harmonise_metadata
    from texflow.readers.metadata import read_geo_template
    from texflow.stats import patient_response

    dataset = yaml.safe_load((ROOT / "config/datasets/GSE120575.yaml").read_text())
    template = ROOT / "tests/data/GSE120575_patient_ID_single_cells.txt.gz"
    table = read_geo_template(template, {}, "GSE120575")
    obs = harmonise_metadata(table, dataset["metadata"], dataset="GSE120575", path=str(template))
    labels, note = patient_response(obs)
    assert obs["patient"].nunique() == 32
    assert note.endswith("P1, P28, P4, P5") and "4 patient(s) left out" in note
    assert labels.value_counts().to_dict() == {"non_responder": 18, "responder": 10}
    assert "4 of the 32 (P1, P4, P5, P28" in " ".join(dataset["notes"].split())


def test_design_covariate_is_an_obs_column_name_other_than_patient_or_response():
    dataset = yaml.safe_load((ROOT / "config/datasets/GSE120575.yaml").read_text())
    validate({**dataset, "design_covariate": "timepoint"}, str(SCHEMA))
    for bad in ("patient", "response", "batch id"):
        with pytest.raises(Exception, match="design_covariate|patient|response|batch id"):
            validate({**dataset, "design_covariate": bad}, str(SCHEMA))
