"""Metadata readers on the real GSE120575 GEO template and on plain tables."""

import pytest
from texflow.errors import InputDataError
from texflow.readers import METADATA_READERS

from tests import ingest_fixtures as fx


def test_real_geo_template():
    table = METADATA_READERS["geo_template"](fx.GEO_METADATA, {}, "GSE120575")
    # 16,291 cells per the GEO series; the protocol sections after the table are not rows
    assert len(table) == 16291
    assert table.columns[:2].tolist() == ["Sample name", "title"]
    assert fx.PATIENT_COLUMN in table  # GEO's typo kept as written
    assert table["title"].is_unique
    assert table.loc[0, "title"] == "A10_P3_M11"
    assert table.loc[0, fx.PATIENT_COLUMN] == "Pre_P1"
    assert set(table[fx.RESPONSE_COLUMN]) == {"Responder", "Non-responder"}
    assert table["molecule"].isna().all()  # empty fields are missing, not ""


def test_plain_file_is_not_a_geo_template(tmp_path):
    path = tmp_path / "meta.tsv"
    path.write_text("cell\tpatient\nA\tP1\n")
    with pytest.raises(InputDataError, match=r"dataset x, file .*meta\.tsv.*Sample name"):
        METADATA_READERS["geo_template"](path, {}, "x")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("meta.tsv", "cell.id\tpatient\ttreatment\nAAAC-1\tsu001\tpre\nAAAG-1\tsu002\tpost\n"),
        # R's write.table: the header has no field above the row names
        ("meta.txt.gz", "patient\ttreatment\nAAAC-1\tsu001\tpre\nAAAG-1\tsu002\tpost\n"),
        ("meta.csv", "cell.id,patient,treatment\nAAAC-1,su001,pre\nAAAG-1,su002,post\n"),
    ],
)
def test_table_reader(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(fx.gz(content) if name.endswith(".gz") else content.encode())
    table = METADATA_READERS["table"](path, {}, "x")
    assert table.iloc[:, 0].tolist() == ["AAAC-1", "AAAG-1"]
    assert table["patient"].tolist() == ["su001", "su002"]
    assert table["treatment"].tolist() == ["pre", "post"]


@pytest.mark.parametrize("reader", ["table", "geo_template"])
def test_wrong_encoding_names_the_option_that_fixes_it(tmp_path, reader):
    path = tmp_path / "meta.tsv"
    text = "Sample name\tcell\tpatient\nS1\tA\tSão Paulo\n"
    path.write_bytes(text.encode("latin-1"))  # "ã" in latin-1 is not valid utf-8
    encoding = "utf-8"
    with pytest.raises(InputDataError, match=r"(?s)meta\.tsv.*metadata\.options\.encoding"):
        METADATA_READERS[reader](path, {"encoding": encoding}, "x")
    # the named fix reads it
    table = METADATA_READERS[reader](path, {"encoding": "latin-1"}, "x")
    assert table["patient"].tolist() == ["São Paulo"]
