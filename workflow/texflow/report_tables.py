"""How the report page lays out a stage table: the columns a reader decides by first, rows with
a result before rows without one.

A table wider than the page scrolls sideways; what sits off-screen on the right is what a
reader does not see. So each stage table names its decisive columns (the decision and its
reason, the state and its markers, p, q and the note of a test), and they come right after the
row's name; the other columns follow in the stage's order. The file linked from the page is
the stage's file, unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .contract import (
    AGREES_WITH_CELLS,
    BALANCE_COLUMN,
    CELL_STATE_NOTE,
    CELLS_IN,
    CELLS_OUT,
    CELLS_REMOVED,
    CLUSTER,
    COMPARISON,
    CONFIDENCE,
    COVERAGE,
    DECISION,
    EFFECT,
    FRACTION_PREFIX,
    FRACTION_UP,
    IS_MAIN_ROOT,
    MARKERS_DOWN,
    MARKERS_UP,
    MISSING,
    N_CD8_CELLS,
    N_CELLS,
    N_NON_RESPONDERS,
    N_PATIENTS,
    N_RESPONDERS,
    N_UP,
    N_UP_PRESENT,
    N_VETOED,
    NOTE,
    NOTES,
    P_ADJ,
    P_VALUE,
    PATIENT,
    PROGRAM,
    REASON,
    RESPONSE,
    ROOT_CELL,
    SAMPLE,
    SECOND_BEST,
    SPEARMAN_RHO,
    STATE,
    TRUSTED,
    UNTRUSTED_PROGRAMS,
)

#: Per stage table: the columns shown first, in this order (absent ones are passed over).
LEAD_COLUMNS: dict[str, tuple[str, ...]] = {
    "qc_summary.tsv": (SAMPLE, CELLS_IN, CELLS_OUT, CELLS_REMOVED, NOTES),
    "gating.tsv": (CLUSTER, N_CELLS, DECISION, N_VETOED, REASON),
    "cluster_states.tsv": (
        CLUSTER, N_CELLS, STATE, CONFIDENCE, SECOND_BEST, MARKERS_UP, MARKERS_DOWN,
        AGREES_WITH_CELLS, CELL_STATE_NOTE, UNTRUSTED_PROGRAMS,
    ),
    "signature_coverage.tsv": (
        PROGRAM, TRUSTED, N_UP_PRESENT, N_UP, FRACTION_UP, MISSING,
    ),
    "program_coverage.tsv": (
        PROGRAM, TRUSTED, N_UP_PRESENT, N_UP, FRACTION_UP, MISSING,
    ),
    "associations.tsv": (PROGRAM, EFFECT, P_VALUE, P_ADJ, N_PATIENTS, NOTE, COVERAGE),
    "state_comparison.tsv": (
        PROGRAM, COMPARISON, EFFECT, P_VALUE, P_ADJ, N_PATIENTS, NOTE, COVERAGE,
    ),
    "response_comparison.tsv": (
        STATE, PROGRAM, EFFECT, P_VALUE, P_ADJ, N_NON_RESPONDERS, N_RESPONDERS,
        NOTE, COVERAGE,
    ),
    "root_sensitivity.tsv": (ROOT_CELL, IS_MAIN_ROOT, SPEARMAN_RHO, N_CELLS, NOTE),
    "composition.tsv": (PATIENT, RESPONSE, N_CD8_CELLS, BALANCE_COLUMN),
}  # fmt: skip

#: Tables of tests: rows with a p-value come first (in the stage's order), then the rows that
#: were not tested, so a table does not open with a screenful of empty rows.
TEST_TABLES = {"associations.tsv", "state_comparison.tsv", "response_comparison.tsv"}

#: A table with more columns than this is drawn in a smaller font (class "wide").
WIDE_COLUMNS = 9


def arrange(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` of stage table `name` with its decisive columns first and, for a table of tests,
    the rows with a result before those without; other tables come back unchanged."""
    lead = [c for c in LEAD_COLUMNS.get(name, ()) if c in frame.columns]
    if name == "composition.tsv":  # each state's share of the patient's CD8 cells, then counts
        lead += [c for c in frame.columns if str(c).startswith(FRACTION_PREFIX)]
    frame = frame[lead + [c for c in frame.columns if c not in lead]]
    if name in TEST_TABLES and P_VALUE in frame.columns:
        tested = np.isfinite(pd.to_numeric(frame[P_VALUE], errors="coerce").to_numpy(dtype=float))
        frame = pd.concat([frame[tested], frame[~tested]])
    return frame


def rows_phrase(n: int) -> str:
    """'1 row', '43 rows'."""
    return f"{n} row" if n == 1 else f"{n} rows"
