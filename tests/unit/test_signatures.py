"""Shipped gene programs: both organisms, aliases, user files, coverage."""

import pandas as pd
import pytest
from texflow.errors import InputDataError, TexflowError
from texflow.signatures import (
    PROGRAMS_TSV,
    GeneProgram,
    coverage_table,
    load_programs,
    read_aliases,
    resolve_aliases,
)

REQUIRED = (
    "exhausted_gate tpex tex_term tex_int naive_like effector_memory cytotoxic trm mait isg "
    "cycling ifn_i_core ifn_alpha_hallmark lpo_drivers lpo_suppressors cd8_t cd4_t treg nk "
    "myeloid b_cell"
).split()


@pytest.mark.parametrize("organism", ["human", "mouse"])
def test_all_required_programs_ship_with_sources(organism):
    programs = load_programs(organism)
    assert set(REQUIRED) <= set(programs)
    for program in programs.values():
        assert program.up and program.source


def test_table_has_the_documented_columns_and_every_row_a_source():
    table = pd.read_csv(PROGRAMS_TSV, sep="\t", dtype=str, keep_default_na=False)
    assert list(table.columns) == [
        "program",
        "direction",
        "human",
        "mouse",
        "source",
        "version",
        "notes",
    ]
    assert (table["source"] != "").all() and (table["version"] != "").all()
    assert set(table["direction"]) == {"up", "down"}


def test_published_list_sizes():
    human = load_programs("human")
    assert len(human["ifn_alpha_hallmark"].up) == 97
    assert len(human["ifn_i_core"].up) == 28
    assert human["tpex"].down and "HAVCR2" in human["tpex"].down
    assert "TCF7" in human["tex_term"].down
    assert human["cd8_t"].down == ("CD4",)


def test_mouse_symbols_follow_the_ortholog_table():
    mouse = load_programs("mouse")
    core = mouse["ifn_i_core"]
    assert {"Oas1a", "Oas1g", "Oasl1", "Oasl2"} <= set(core.up)  # one-to-many kept
    assert "IFI6" in core.no_ortholog  # no mouse ortholog, reported
    assert mouse["tpex"].up.count("Xcl1") == 1  # XCL1 and XCL2 both map to Xcl1
    assert "Zfp683" in mouse["trm"].up
    assert "Cd8b1" in mouse["cd8_t"].up
    assert all(g[0].isupper() and not g.isupper() for g in mouse["tex_term"].up)


def test_aliases_resolve_old_symbols_both_ways():
    programs = {"p": GeneProgram("p", up=("WARS1", "TENT5A", "CMTR1", "STAT1"))}
    resolved = resolve_aliases(programs, ["WARS", "FAM46A", "FTSJD2", "STAT1"], organism="human")
    assert resolved["p"].up == ("WARS", "FAM46A", "FTSJD2", "STAT1")
    old = {"p": GeneProgram("p", up=("WARS",))}
    assert resolve_aliases(old, ["WARS1"], organism="human")["p"].up == ("WARS1",)
    assert "Wars1" in set(read_aliases("mouse")["current"])


def test_coverage_marks_untrusted_programs():
    programs = {
        "full": GeneProgram("full", up=("A", "B", "C", "D")),
        "half": GeneProgram("half", up=("A", "B", "X", "Y"), down=("Z",)),
        "few": GeneProgram("few", up=("A", "B", "X", "Y", "V", "W")),
    }
    table = coverage_table(programs, ["A", "B", "C", "D"]).set_index("program")
    assert table.loc["full", "trusted"] and table.loc["full", "fraction"] == 1.0
    assert not table.loc["half", "trusted"]  # 2 of 4: half, but fewer than 3 genes
    assert table.loc["half", "missing"] == "X,Y,Z"
    assert not table.loc["few", "trusted"]


def test_user_yaml_and_tsv(tmp_path):
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(
        "my_prog: [GZMB, PRF1+, TCF7-]\ntpex:\n  up: [TCF7, SLAMF6]\n  down: [HAVCR2]\n"
    )
    programs = load_programs("human", extra=yaml_file)
    assert programs["my_prog"].up == ("GZMB", "PRF1") and programs["my_prog"].down == ("TCF7",)
    assert programs["tpex"].up == ("TCF7", "SLAMF6")  # user list replaces the shipped one
    tsv = tmp_path / "mine.tsv"
    tsv.write_text("program\tgene\nx\tCd8a\nx\tCd8b1\n")
    assert load_programs("mouse", extra=tsv)["x"].up == ("Cd8a", "Cd8b1")
    bad = tmp_path / "bad.tsv"
    bad.write_text("name\tgene\nx\tA\n")
    with pytest.raises(InputDataError, match="program"):
        load_programs("human", extra=bad)
    with pytest.raises(TexflowError, match="organism"):
        load_programs("zebrafish")
    with pytest.raises(TexflowError, match="unknown"):
        load_programs("human", names=["nope"])
