"""Names every stage shares: state labels and the obs columns that carry them.

One definition of each: the states stage writes these labels and columns, the trajectory,
programs and report stages read them. Import from here; never spell a label again.
"""

from __future__ import annotations

import pandas as pd

TPEX, TEX_INT, TEX_TERM = "Tpex", "Tex_int", "Tex_term"
NAIVE_LIKE, EFFECTOR_MEMORY = "naive_like", "effector_memory"
OTHER_STATE, AMBIGUOUS_STATE = "other_cd8", "ambiguous"
#: States that form the exhausted lineage, in their expected order along pseudotime.
EXHAUSTED_STATES: tuple[str, ...] = (TPEX, TEX_INT, TEX_TERM)
#: Every label a CD8 cell or cluster can get, in display order.
STATE_CATEGORIES: tuple[str, ...] = (
    TPEX,
    TEX_INT,
    TEX_TERM,
    NAIVE_LIKE,
    EFFECTOR_MEMORY,
    OTHER_STATE,
    AMBIGUOUS_STATE,
)

#: The states stage's per-cell call, and the cluster label it is kept beside.
CELL_STATE_KEY, CLUSTER_STATE_KEY = "cell_state", "state"
CONFIDENCE_KEYS = {CELL_STATE_KEY: "cell_state_confidence", CLUSTER_STATE_KEY: "state_confidence"}
#: Which scores decided a cell's call: its kNN-smoothed scores, or its own (a rare state whose
#: neighbours are other states; states.cell_states).
CELL_STATE_BASIS_KEY = "cell_state_basis"
SMOOTHED_BASIS, OWN_SCORES_BASIS = "kNN-smoothed", "own scores"
#: State label -> the gene program (signatures/) whose score defines it.
STATE_PROGRAMS: dict[str, str] = {
    TPEX: "tpex",
    TEX_INT: "tex_int",
    TEX_TERM: "tex_term",
    NAIVE_LIKE: "naive_like",
    EFFECTOR_MEMORY: "effector_memory",
}
#: The programs the exhaustion axis is made of: never tested along it (a score against itself).
EXHAUSTION_AXIS_PROGRAMS: tuple[str, ...] = (STATE_PROGRAMS[TPEX], STATE_PROGRAMS[TEX_TERM])
REASON_AXIS_PROGRAM = (
    "the exhaustion axis is made of this program (smoothed Tex-term minus Tpex score): "
    "tested along it, a score would be correlated with itself"
)
#: Smoothed Tex-term minus Tpex score per cell (the states stage's second ordering).
EXHAUSTION_AXIS_KEY = "exhaustion_axis"


def lineage_state_key(obs: pd.DataFrame) -> str:
    """The obs column that defines states downstream: the per-cell call where the states stage
    wrote one (human tumour Tpex seldom form a cluster of their own), else the cluster label
    (data labelled before per-cell states existed)."""
    return CELL_STATE_KEY if CELL_STATE_KEY in obs else CLUSTER_STATE_KEY


# ----------------------------------------------------------------------------------------------
# tests that did not run, and why

#: ``test`` of a statistics row that could not be computed (the ``note`` says why, in numbers),
#: and of the one row a stage writes when it skipped a whole table.
NOT_TESTABLE, SKIPPED = "not_testable", "skipped"
#: The note of a stage's one 'skipped' row starts with this, then the reason.
SKIPPED_PREFIX = "skipped: "
#: Keys of ``uns["texflow"]["skipped"]`` (the step that did not run) that the report reads.
SKIP_TRAJECTORY, SKIP_TRENDS, SKIP_ASSOCIATIONS = "trajectory", "trends", "associations"
SKIP_RESPONSE, SKIP_COMPOSITION = "response_comparison", "composition"

#: Why a comparison was not tested, filled with the numbers that block it (``str.format``).
#: One of the two states has no cell at all.
REASON_STATE_ABSENT = (
    "no {absent} cell in this dataset ({key}: {n_first} {first}, {n_second} {second})"
)
#: A row of one state (the response comparison within a state) whose state has no cell.
REASON_NO_CELLS = "no {state} cell in this dataset ({key}: 0 {state})"
#: Cells are the units (no patients) and a state has fewer cells than a test needs.
REASON_TOO_FEW_CELLS = (
    "too few cells to test: {n_second} {second} and {n_first} {first} cells, "
    ">= {min_cells} of each needed"
)
#: Patients are the units and too few of them have enough cells of each state.
REASON_TOO_FEW_PATIENTS_STATES = (
    "too few patients to test: {n_second} with >= {min_cells} {second} cells, {n_first} with "
    ">= {min_cells} {first} cells, >= 2 of each needed"
)
#: Patients are the units and a response group has too few patients with cells of the state.
REASON_TOO_FEW_PATIENTS_RESPONSE = (
    "too few patients to test: {n_non_responders} non-responder and {n_responders} responder "
    "patient(s) with >= {min_cells} {state} cells, >= 2 of each needed"
)
#: One value covers nearly every cell compared (`texflow.stats.MAX_TIED_FRACTION`).
REASON_CONSTANT_SCORE = (
    "score (near) constant: {value} in {percent}% of the {n_cells} cells compared "
    "(>= {threshold}%): not testable"
)
#: A caveat on a test that ran: cells were the units.
NOTE_CELLS_AS_UNITS = "no patient labels: cells are the units (pseudoreplication risk)"


# ----------------------------------------------------------------------------------------------
# columns of the statistics tables (texflow.stats writes them, the findings and report read them)

#: Score columns of ``obs``: ``score_<program>`` (programs stage, states stage).
SCORE_PREFIX = "score_"
#: The programs the state calls and the exhaustion axis rest on (program names, not states).
TPEX_PROGRAM, TEX_TERM_PROGRAM = EXHAUSTION_AXIS_PROGRAMS

#: Row identity: the program (or composition measure), the comparison, the state a row is about.
PROGRAM, COMPARISON, STATE = "program", "comparison", "state"
#: The test run (or `NOT_TESTABLE` / `SKIPPED`), the unit of the test, and the row's note.
TEST, UNIT, NOTE = "test", "unit", "note"
#: The effect and what it is (``effect_type``), the p-value and its Benjamini-Hochberg q.
EFFECT, EFFECT_TYPE, P_VALUE, P_ADJ = "effect", "effect_type", "p_value", "p_adj"
#: Patients behind a row, those with a positive per-patient effect, and cells.
N_PATIENTS, N_PATIENTS_POSITIVE, N_CELLS = "n_patients", "n_patients_positive", "n_cells"
#: The response comparison: patients and mean score per response group.
N_RESPONDERS, N_NON_RESPONDERS = "n_responders", "n_non_responders"
MEAN_RESPONDERS, MEAN_NON_RESPONDERS = "mean_responders", "mean_non_responders"
#: The coverage of each untrusted program a row's verdict rests on (`texflow.stats.with_coverage`).
COVERAGE = "coverage"

#: program_gene_means.tsv (`texflow.expression.program_gene_means`): one row per program gene
#: and state; the gene, whether it is an up or a down gene of the program, and its mean
#: expression (log-normalised X) over the state's cells (`N_CELLS` of them).
GENE, DIRECTION, MEAN_EXPRESSION = "gene", "direction", "mean_expression"
PROGRAM_GENE_MEANS_COLUMNS: tuple[str, ...] = (
    PROGRAM,
    DIRECTION,
    GENE,
    STATE,
    MEAN_EXPRESSION,
    N_CELLS,
)

#: ``unit`` of a test: patients (their per-patient summaries) or cells (no patient labels).
UNIT_PATIENTS, UNIT_CELLS = "patients", "cells"
#: Response labels (``obs["response"]``, per patient).
RESPONDER, NON_RESPONDER = "responder", "non_responder"
#: ``state`` of the response rows over every CD8 T cell of a patient, whatever its state, and
#: over its exhausted-lineage cells.
ALL_CD8, EXHAUSTED_LINEAGE = "all_cd8", "exhausted_lineage"
#: ``program`` of the composition rows of the response table, and the state of the balance row.
COMPOSITION_MEASURE, BALANCE_MEASURE = "fraction_of_cd8_cells", "log_ratio"
BALANCE_ROW = f"{TPEX}:{TEX_TERM}"
#: composition.tsv: a state's share of a patient's CD8 cells, and the Tpex : Tex_term balance.
FRACTION_PREFIX, BALANCE_COLUMN = "fraction_", "log_ratio_tpex_to_tex_term"


# ----------------------------------------------------------------------------------------------
# findings: the verdicts of the programs stage (tables/findings.tsv), rendered by the report

#: The comparisons a finding answers (``comparison`` of findings.tsv), in the order shown.
COMPARE_TRAJECTORY, COMPARE_AXIS, COMPARE_STATES = "trajectory", "axis", "state"
COMPARE_RESPONSE, COMPARE_RESPONSE_ALL, COMPARE_COMPOSITION = (
    "response",
    "response_all",
    "composition",
)
#: The verdict of a finding.
VERDICT_UP, VERDICT_DOWN = "up", "down"
VERDICT_NONE, VERDICT_UNTESTED = "no clear difference", "not tested"
#: ``program`` of the one composition finding written when no composition row exists.
ALL_STATES = "all_states"
FINDINGS_TABLE = "findings.tsv"
#: Columns of findings.tsv: one row per dataset x program x comparison.
FINDINGS_COLUMNS: tuple[str, ...] = (
    "dataset", PROGRAM, COMPARISON, "verdict", EFFECT, "effect_name", P_VALUE, P_ADJ,
    N_PATIENTS, N_PATIENTS_POSITIVE, N_NON_RESPONDERS, N_RESPONDERS, "unit_note", "power_note",
    "reason", COVERAGE,
)  # fmt: skip
#: Columns of results/summary.tsv: the findings of every dataset, one row per dataset x program
#: x comparison (the cross-dataset summary; ``groups`` = patients per response group in words).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "dataset", PROGRAM, COMPARISON, "verdict", "effect_name", EFFECT, "p", "q", N_PATIENTS,
    "n_concordant", "groups", NOTE, COVERAGE, "simulated",
)  # fmt: skip

# ----------------------------------------------------------------------------------------------
# resistance genes: tables/resistance_de.tsv, read by the cross-dataset meta-analysis

#: The cell sets of the pseudobulk DE: all CD8 cells, then each exhausted state.
RESISTANCE_STATES: tuple[str, ...] = (ALL_CD8, TPEX, TEX_INT, TEX_TERM)
#: Columns of ``resistance_de.tsv`` (`texflow.resistance`), in order.
DE_COLUMNS = [
    "gene",
    "state",
    "log2_fold_change",
    "lfc_se",
    "statistic",
    P_VALUE,
    "q_value",
    N_NON_RESPONDERS,
    N_RESPONDERS,
    "mean_expression",
    "method",
    "testable",
    "reason",
    "design",
]
