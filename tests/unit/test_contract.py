"""One definition of every name stages share: state labels and table columns live in
`texflow.contract`, and no other module spells them (issue 18 item 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from texflow import contract, findings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "workflow" / "texflow"

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


# ----------------------------------------------------------------------------------------------
# table columns: every column name of every table texflow writes is spelled once, in contract

#: Every fixed column name of every table. ``exhausted_gate`` and ``cycling`` (cluster_states'
#: flags) are also the names of the gene programs they rest on, spelled as program names in the
#: signatures and the simulator: like the state labels above, they are not scanned.
TABLE_COLUMN_NAMES = {name for columns in contract.TABLE_COLUMNS.values() for name in columns} - {
    contract.EXHAUSTED_GATE,
    contract.CYCLING,
}
#: Prefixes of the column families named after a program or a state (``score_<program>``,
#: ``z_<program>``, ``fraction_<state>``, ...): a column named by spelling one is a hit too.
COLUMN_PREFIXES = (
    contract.SCORE_PREFIX, contract.Z_PREFIX, contract.MEAN_SCORE_PREFIX,
    contract.QC_FAIL_PREFIX, contract.FAIL_PREFIX, contract.FRACTION_PREFIX,
)  # fmt: skip
#: Where texflow reads or writes tables: the package, the rule scripts, the benchmarks.
TABLE_SOURCES = (PACKAGE, ROOT / "workflow" / "scripts", ROOT / "benchmarks")
#: The plain-scanpy baseline imports nothing from texflow by design (benchmarks/run.py times
#: it against texflow): its scanpy column names are scanpy's.
NOT_SCANNED = {ROOT / "benchmarks" / "baseline_scanpy.py"}
#: pandas methods whose positional arguments are column names.
COLUMN_METHODS = {
    "groupby", "sort_values", "set_index", "pivot", "pivot_table", "drop", "get", "rename",
    "reindex", "drop_duplicates", "nlargest", "nsmallest", "merge", "dropna", "pop", "melt",
    "setdefault", "value_counts", "insert", "rename_axis", "to_frame",
}  # fmt: skip
#: Keyword arguments whose values are column names (``columns=[...]``, ``by=``, ...).
COLUMN_KEYWORDS = {
    "columns", "by", "on", "subset", "index", "values", "id_vars", "value_vars", "usecols",
    "left_on", "right_on", "names", "name",
}  # fmt: skip
#: Calls whose keyword names are column (or key) names: ``dict(p_value=...)``,
#: ``row.update(note=...)``, ``table.assign(q_value=...)``.
KEYWORD_NAMED_CALLS = {"dict", "update", "assign", "DataFrame"}
#: Dictionaries that are metadata, not tables (the config, ``uns``, a stage's parameters, a
#: dataset file's mapping): a key of theirs spelled like a column is not a column. A subscript,
#: a ``.get`` or a dict assigned into one of them whose expression starts from one of these
#: names is not scanned.
METADATA_ROOTS = {
    "config", "meta", "uns", "texflow_uns", "params", "options", "mapping", "spec", "kwargs",
    "wildcards", "upstream", "simulation", "record", "parameters",
}  # fmt: skip
#: Other names that are spelled like a table column but are not one, each with its reason:
#: (module relative to the repository, the word).
NOT_A_COLUMN = {
    ("workflow/texflow/simulation/dataset.py", contract.DATASET):
        "a key of the simulated file's uns['texflow'] (its provenance), not a column",
    ("workflow/texflow/io.py", contract.DATASET): "a key of uns['texflow'], not a column",
    ("workflow/texflow/io.py", contract.SIMULATED): "a key of uns['texflow'], not a column",
    ("workflow/texflow/embedding.py", contract.NOTES):
        "a key of the embedding's record (uns['texflow']['cluster']), not a column",
    ("workflow/texflow/report.py", contract.TRUTH): "the id of a report section",
    ("workflow/texflow/report.py", contract.CLUSTER): "the id of a report section (a stage)",
    ("workflow/texflow/findings.py", contract.PATIENT):
        "a word looked for in a test's name (mann_whitney_patient_means), not a column",
    ("workflow/texflow/report_summary.py", contract.NOTES): "a key of a template's context",
    ("workflow/texflow/report_summary.py", contract.MISSING): "a key of a template's context",
    ("workflow/texflow/readers/matrix.py", contract.VALUE):
        "the value column of a MatrixMarket file's (row, col, value) triplets, an input",
    ("workflow/texflow/trajectory.py", contract.TRUTH_N):
        "a scratch aggregate (cells per Tpex cluster) while choosing the root cluster",
    ("workflow/scripts/programs.py", contract.DATASET): "a key of summary.json",
    ("workflow/texflow/cluster.py", contract.NOTES):
        "a key of the embedding's record (texflow.embedding), not a column",
    ("benchmarks/validate_states.py", "z_raw_{}"): "the benchmark's own per-cell z-scores",
    ("benchmarks/validate_states.py", "z_smooth_{}"): "the benchmark's own per-cell z-scores",
    ("benchmarks/validate_states.py", contract.SIMULATED): "a key of the benchmark's cache key",
    ("benchmarks/validate_states.py", contract.TRUTH):
        "the benchmark's own per-cell column of true states",
}  # fmt: skip


def _strings(node: ast.AST):
    """The string constants of `node`: itself, or the elements of a list, tuple or set; an
    f-string as its leading text followed by ``{}`` (``f"score_{name}"`` -> ``score_{}``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.lineno, node.value
    elif isinstance(node, ast.JoinedStr):
        head = node.values[0] if node.values else None
        text = head.value if isinstance(head, ast.Constant) else ""
        yield node.lineno, text + "{}"
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        for element in node.elts:
            yield from _strings(element)


def _call_name(node: ast.Call) -> str:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return node.func.id if isinstance(node.func, ast.Name) else ""


def _is_metadata(node: ast.AST) -> bool:
    """Whether an expression reads a metadata dictionary (`METADATA_ROOTS`): ``config[...]``,
    ``adata.uns[...]``, ``meta["trajectory"]``, ``texflow_uns(adata).get(...)``."""
    while True:
        if isinstance(node, ast.Name):
            return node.id in METADATA_ROOTS
        if isinstance(node, ast.Attribute):
            if node.attr in METADATA_ROOTS:
                return True
            node = node.value
        elif isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return False


def _metadata_dicts(tree: ast.AST) -> set[int]:
    """ids of the dict literals stored into a metadata dictionary (``meta["qc"] = {...}``,
    ``record = {...}``)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            _is_metadata(target.value if isinstance(target, ast.Subscript) else target)
            for target in node.targets
        ):
            inside |= {id(n) for n in ast.walk(node.value) if isinstance(n, ast.Dict)}
    return inside


def column_spellings(source: str, words: set[str]) -> list[tuple[int, str]]:
    """(line, word) of every string literal in `source` that is one of `words` where it is used
    as a column: a subscript (``df["x"]``, ``.loc[rows, "x"]``, ``df[["x", "y"]]``), a dict key
    (a row or a table under construction), a column argument of a pandas method
    (``sort_values("x")``, ``columns=[...]``, ``rename(columns={...})``), a keyword name of
    ``dict``/``update``/``assign``, a membership test (``"x" in table``), or a list, tuple or set
    of two or more column names. Docstrings, messages and log text are not columns, nor are the
    keys of metadata dictionaries (`METADATA_ROOTS`)."""
    found = []
    tree = ast.parse(source)
    metadata_dicts = _metadata_dicts(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            if not _is_metadata(node.value):
                found += _strings(node.slice)
        elif isinstance(node, ast.Dict) and id(node) not in metadata_dicts:
            for key in node.keys:
                if key is not None:
                    found += _strings(key)
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name in COLUMN_METHODS and not _is_metadata(node.func):
                for argument in node.args:
                    found += _strings(argument)
            for keyword in node.keywords:
                if keyword.arg in COLUMN_KEYWORDS:
                    found += _strings(keyword.value)
                    if isinstance(keyword.value, ast.Dict):
                        for value in keyword.value.values:
                            found += _strings(value)
                if name in KEYWORD_NAMED_CALLS and keyword.arg in words:
                    found.append((keyword.value.lineno, keyword.arg))
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            found += _strings(node.left)
        elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            texts = list(_strings(node))
            # every string element a column name (a list that mixes constants and spellings,
            # ``[STATE, "program"]``, is a hit too)
            if len(texts) >= 2 and all(w in words for _, w in texts):
                found += texts
    return sorted(
        {(line, word) for line, word in found if word in words or word.startswith(COLUMN_PREFIXES)}
    )


def table_sources() -> list[Path]:
    return sorted(
        path
        for root in TABLE_SOURCES
        for path in root.rglob("*.py")
        if path.name != "contract.py" and path not in NOT_SCANNED
    )


def test_the_column_scan_sees_each_way_of_naming_a_column():
    source = (
        '"""p_value in a docstring is prose."""\n'
        'table["p_value"]; table.loc[rows, "q_value"]; table[["note", "state"]]\n'
        'rows.append({"gene": g}); table.sort_values("rank"); table.rename(columns={"x": "z"})\n'
        'pd.DataFrame(columns=["dataset"]); row.update(method="ulm"); "verdict" in table\n'
        'KEYS = ("patient", "sample"); obs[f"score_{name}"]; obs[f"{SCORE_PREFIX}{name}"]\n'
        'logger.info("p_value %s", x); raise ValueError("no column note")\n'
        'config["resolution"]; adata.uns["texflow"]["dataset"]; meta.get("method")\n'
        'meta["qc"] = {"cells_in": 3}; texflow_uns(adata).get("dataset"); record = {"gene": 1}\n'
        'KEYS = ("patient", "not a column")\n'
        'COLUMNS = [STATE, "program", "slope"]\n'
    )
    assert sorted(word for _, word in column_spellings(source, TABLE_COLUMN_NAMES)) == sorted([
        "p_value", "q_value", "note", "state", "gene", "rank", "z", "dataset", "method",
        "verdict", "patient", "sample", "score_{}", "program", "slope",
    ])  # fmt: skip


def test_no_module_spells_a_table_column():
    """Every column of every table texflow writes is named by its texflow.contract constant
    wherever a stage, a script, the report or a benchmark reads or writes it."""
    spelled = []
    for path in table_sources():
        module = str(path.relative_to(ROOT))
        for line, word in column_spellings(path.read_text(), TABLE_COLUMN_NAMES):
            if (module, word) not in NOT_A_COLUMN:
                spelled.append(f"{module}:{line} {word!r}")
    assert spelled == [], (
        f"{len(spelled)} column names spelled outside texflow.contract (import its constant): "
        + ", ".join(spelled)
    )


def test_every_exemption_is_still_needed():
    """An exemption whose word no longer occurs in its module is removed, not kept."""
    stale = [
        pair
        for pair in NOT_A_COLUMN
        if pair[1]
        not in {w for _, w in column_spellings((ROOT / pair[0]).read_text(), TABLE_COLUMN_NAMES)}
    ]
    assert stale == []


def test_every_table_column_is_defined_once():
    """No column name is spelled twice in contract either (two constants, one value, would be
    two definitions of one fact; an alias for another role is assigned the constant). The
    ``COMPARE_*`` constants are values of the ``comparison`` column, not column names."""
    spelled = []
    for node in ast.parse((PACKAGE / "contract.py").read_text()).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
        if any(name.startswith("COMPARE_") for name in names):
            continue
        spelled += [
            n.value
            for n in ast.walk(node.value)
            if isinstance(n, ast.Constant) and n.value in TABLE_COLUMN_NAMES
        ]
    assert sorted({w for w in spelled if spelled.count(w) > 1}) == []
