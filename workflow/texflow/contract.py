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
    TPEX, TEX_INT, TEX_TERM, NAIVE_LIKE, EFFECTOR_MEMORY, OTHER_STATE, AMBIGUOUS_STATE,
)

#: The states stage's per-cell call, and the cluster label it is kept beside.
CELL_STATE_KEY, CLUSTER_STATE_KEY = "cell_state", "state"
CONFIDENCE_KEYS = {CELL_STATE_KEY: "cell_state_confidence", CLUSTER_STATE_KEY: "state_confidence"}
#: Which scores decided a cell's call: its kNN-smoothed scores, or its own (a rare state whose
#: neighbours are other states; states.cell_states).
CELL_STATE_BASIS_KEY = "cell_state_basis"
SMOOTHED_BASIS, OWN_SCORES_BASIS = "kNN-smoothed", "own scores"
#: The programs the exhaustion axis is made of: never tested along it (a score against itself).
EXHAUSTION_AXIS_PROGRAMS: tuple[str, ...] = ("tpex", "tex_term")
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
