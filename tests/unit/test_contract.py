"""One definition of every name stages share: state labels and table columns live in
`texflow.contract`, and no other module spells them (issue 18 item 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from texflow import contract, findings

PACKAGE = Path(__file__).resolve().parents[2] / "workflow" / "texflow"

#: State labels. naive_like and effector_memory are also the names of the gene programs that
#: define those states (`contract.STATE_PROGRAMS`, the signature files), so their spelling is
#: legitimately a program name too: they are checked through STATE_PROGRAMS, not here.
STATE_LABELS = {
    s for s in contract.STATE_CATEGORIES if s not in set(contract.STATE_PROGRAMS.values())
}
#: Columns of the statistics tables whose names say only that (generic words such as
#: "program", "state" or "note" are also obs keys and plain words, and are not scanned).
COLUMNS = {
    contract.P_VALUE, contract.P_ADJ, contract.N_PATIENTS, contract.N_PATIENTS_POSITIVE,
    contract.N_RESPONDERS, contract.N_NON_RESPONDERS, contract.MEAN_RESPONDERS,
    contract.MEAN_NON_RESPONDERS, contract.EFFECT_TYPE, contract.COVERAGE,
    contract.COMPOSITION_MEASURE, contract.BALANCE_COLUMN, contract.ALL_CD8,
    contract.EXHAUSTED_LINEAGE,
}  # fmt: skip
#: Test and benchmark tooling with its own parameter names (`texflow.simulation`: its
#: ``n_patients`` is the number of patients to simulate, a key of its own metadata).
COLUMN_EXEMPT = {"simulation"}


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of `path` that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "contract.py")


def test_the_scan_sees_a_spelled_label(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Tpex in a docstring is prose."""\nx = {"Tpex": 1, "p_adj": 2}\n')
    assert {text for _, text in literals(module)} == {"Tpex", "p_adj"}


def test_no_module_spells_a_state_label():
    spelled = [
        f"{path.relative_to(PACKAGE)}:{line} {text!r}"
        for path in modules()
        for line, text in literals(path)
        if text in STATE_LABELS
    ]
    assert spelled == [], "use the texflow.contract constant: " + ", ".join(spelled)


def test_no_module_spells_a_statistics_column():
    spelled = [
        f"{path.relative_to(PACKAGE)}:{line} {text!r}"
        for path in modules()
        if path.relative_to(PACKAGE).parts[0] not in COLUMN_EXEMPT
        for line, text in literals(path)
        if text in COLUMNS
    ]
    assert spelled == [], "use the texflow.contract constant: " + ", ".join(spelled)


@pytest.mark.parametrize(
    "name", ["patient_means", "score_columns", "find_state", "lineage_states", "smallest_p"]
)
def test_one_definition_of_a_function(name):
    """Functions that were defined twice (or decided science in the report) are defined once,
    and not in the report."""
    defined = [
        str(path.relative_to(PACKAGE))
        for path in modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    assert len(defined) <= 1, defined
    assert not any(p.startswith(("report", "plotting/report")) for p in defined), defined


def test_the_report_accepts_no_alias_spelling():
    """texflow reads the tables it writes by their one name: no 'pvalue', 'fdr', 'padj', no
    'progenitorexhausted' or 'TPEX'."""
    aliases = {"pvalue", "fdr", "padj", "qvalue", "progenitorexhausted", "TPEX",
               "terminalexhausted", "n_pairs", "n_concordant_patients"}  # fmt: skip
    report_modules = [
        p for p in modules() if p.name.startswith("report") or p.name == "findings.py"
    ]
    report_modules.append(PACKAGE / "plotting" / "report.py")
    spelled = [
        f"{path.relative_to(PACKAGE)}:{line} {text!r}"
        for path in report_modules
        for line, text in literals(path)
        if text in aliases
    ]
    assert spelled == []


def test_a_finding_has_a_field_for_every_column_of_findings_tsv():
    assert sorted(findings.FINDINGS_FIELDS.values()) == sorted(contract.FINDINGS_COLUMNS)
