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
#: Smoothed Tex-term minus Tpex score per cell (the states stage's second ordering).
EXHAUSTION_AXIS_KEY = "exhaustion_axis"


def lineage_state_key(obs: pd.DataFrame) -> str:
    """The obs column that defines states downstream: the per-cell call where the states stage
    wrote one (human tumour Tpex seldom form a cluster of their own), else the cluster label
    (data labelled before per-cell states existed)."""
    return CELL_STATE_KEY if CELL_STATE_KEY in obs else CLUSTER_STATE_KEY
