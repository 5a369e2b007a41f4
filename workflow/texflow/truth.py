"""How well a run recovered the known truth of a simulated dataset (`texflow.simulation`).

A simulated dataset (dataset file ``simulated: true``) carries its truth: per cell
``true_is_cd8``, ``true_doublet``, ``true_low_quality``, ``true_state`` and
``true_pseudotime`` in obs, and the planted effects in ``uns["simulation"]`` of the source
file (programs rising along pseudotime, programs and state shares shifted in non-responders).
`recovery` sets the pipeline's answer beside that truth, one row per check, so the dataset's
page shows a positive control: what texflow finds when the answer is known.

Rows (``RECOVERY_COLUMNS``, the verdict first so that it shows on a narrow page): ``check``
(what is compared), ``recovered`` (True / False; empty where a number is reported without a
pass mark), ``value`` (a precision, recall or Spearman rho; the q value for planted effects),
``n`` (cells, or patients), ``found`` (what the run reports), ``truth`` (what was planted),
``note``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .contract import (
    CELL_STATE_KEY,
    CHECK,
    EFFECT,
    EXHAUSTION_AXIS_KEY,
    FOUND,
    N_NON_RESPONDERS,
    N_PATIENTS,
    N_RESPONDERS,
    NOTE,
    P_ADJ,
    PROGRAM,
    RECOVERED,
    STATE,
    STATE_CATEGORIES,
    TRUTH,
    TRUTH_N,
    VALUE,
)
from .errors import InputDataError
from .simulation.populations import STATE_OF_POPULATION
from .stats import ALL_CD8, COMPOSITION_MEASURE

logger = logging.getLogger(__name__)

RECOVERY_COLUMNS = [CHECK, RECOVERED, VALUE, TRUTH_N, FOUND, TRUTH, NOTE]
TRUTH_OBS = ("true_is_cd8", "true_doublet", "true_low_quality", "true_state", "true_pseudotime")
#: The direction a planted non-responder effect must be found in (response table effects are
#: non-responders minus responders).
NON_RESPONDERS_HIGHER, NON_RESPONDERS_LOWER = "higher in non-responders", "lower in non-responders"


def _row(check, truth, found, value=np.nan, n=0, recovered=None, note="") -> dict:
    return {
        CHECK: check,
        TRUTH: truth,
        FOUND: found,
        VALUE: value,
        TRUTH_N: int(n),
        RECOVERED: "" if recovered is None else bool(recovered),
        NOTE: note,
    }


def cell_truth(obs: pd.DataFrame) -> pd.Series:
    """Each cell's true state, with doublets as 'doublet' (a doublet called Tpex is wrong)."""
    truth = obs["true_state"].astype(str)
    return truth.where(~obs["true_doublet"].astype(bool).to_numpy(), "doublet")


def precision_recall(called: pd.Series, truth: pd.Series, state: str) -> tuple[float, float]:
    """Precision and recall of the cells `called` `state` against `truth` (NaN without any)."""
    hit = int(((called == state) & (truth == state)).sum())
    n_called, n_true = int((called == state).sum()), int((truth == state).sum())
    return (hit / n_called if n_called else np.nan, hit / n_true if n_true else np.nan)


def gate_rows(source_obs: pd.DataFrame, final_obs: pd.DataFrame) -> list[dict]:
    """Precision and recall of the CD8 T cells kept (QC and gate together)."""
    true_cd8 = (
        source_obs["true_is_cd8"].astype(bool)
        & ~source_obs["true_doublet"].astype(bool)
        & ~source_obs["true_low_quality"].astype(bool)
    )
    kept = source_obs.index.isin(final_obs.index)
    hit = int((kept & true_cd8.to_numpy()).sum())
    precision = hit / kept.sum() if kept.sum() else np.nan
    recall = hit / true_cd8.sum() if true_cd8.sum() else np.nan
    found = f"{int(kept.sum())} cells kept, {hit} of them true CD8 singlets"
    truth = f"{int(true_cd8.sum())} healthy CD8 singlets of {len(source_obs)} cells"
    return [
        _row("CD8 T cells kept: precision", truth, found, precision, kept.sum()),
        _row("CD8 T cells kept: recall", truth, found, recall, true_cd8.sum()),
    ]


def state_rows(final_obs: pd.DataFrame) -> list[dict]:
    """Per-cell precision and recall of each state the simulator plants."""
    truth = cell_truth(final_obs)
    called = final_obs[CELL_STATE_KEY].astype(str)
    rows = []
    for state in (s for s in STATE_CATEGORIES if s in set(STATE_OF_POPULATION.values())):
        is_true, is_called = truth == state, called == state
        hit = int((is_true & is_called).sum())
        found = f"{int(is_called.sum())} cells called {state}, {hit} truly {state}"
        truth_text = f"{int(is_true.sum())} {state} cells among the CD8 cells kept"
        precision, recall = precision_recall(called, truth, state)
        rows.append(
            _row(f"{state} per cell: precision", truth_text, found, precision, is_called.sum())
        )
        rows.append(_row(f"{state} per cell: recall", truth_text, found, recall, is_true.sum()))
    return rows


def ordering_rows(final_obs: pd.DataFrame) -> list[dict]:
    """Spearman rho of the pseudotime and of the exhaustion axis with the true pseudotime."""
    rows = []
    lineage = final_obs.get("in_lineage", pd.Series(False, index=final_obs.index))
    has_truth = final_obs["true_pseudotime"].notna() & ~final_obs["true_doublet"].astype(bool)
    for column, check in (
        ("pseudotime", "Pseudotime vs true pseudotime"),
        (EXHAUSTION_AXIS_KEY, "Exhaustion axis vs true pseudotime"),
    ):
        values = pd.to_numeric(final_obs.get(column), errors="coerce")
        cells = lineage.astype(bool) & has_truth & np.isfinite(values)
        if cells.sum() < 3:
            rows.append(
                _row(
                    check,
                    "true pseudotime of the exhausted lineage",
                    "not computed",
                    n=cells.sum(),
                    note=f"{int(cells.sum())} lineage cells with both",
                )
            )
            continue
        rho = float(spearmanr(values[cells], final_obs.loc[cells, "true_pseudotime"])[0])
        rows.append(
            _row(
                check,
                "true pseudotime of the exhausted lineage",
                f"Spearman rho {rho:.2f} over the lineage cells",
                rho,
                cells.sum(),
            )
        )
    return rows


def _response_row(table: pd.DataFrame | None, *, state: str, program: str) -> pd.Series | None:
    if table is None or table.empty:
        return None
    rows = table[(table[STATE].astype(str) == state) & (table[PROGRAM].astype(str) == program)]
    return rows.iloc[0] if len(rows) else None


def _planted_effect_row(
    check: str, planted: str, log2fc: float, row: pd.Series | None, *, alpha: float
) -> dict:
    wanted = NON_RESPONDERS_HIGHER if log2fc > 0 else NON_RESPONDERS_LOWER
    truth = f"{planted}: log2 fold change {log2fc:+.2f} in non-responders ({wanted})"
    if row is None:
        return _row(check, truth, "no row in response_comparison.tsv", recovered=False)
    q, effect = float(row.get(P_ADJ, np.nan)), float(row.get(EFFECT, np.nan))
    n_nr, n_r = (int(row.get(key, 0) or 0) for key in (N_NON_RESPONDERS, N_RESPONDERS))
    n = f"{n_nr} NR vs {n_r} R"
    if not np.isfinite(q):
        return _row(check, truth, f"not tested: {row.get(NOTE, '')}", recovered=False)
    direction = NON_RESPONDERS_HIGHER if effect > 0 else NON_RESPONDERS_LOWER
    found = f"effect {effect:+.3g} ({direction}), q = {q:.3g}, patients {n}"
    recovered = q < alpha and direction == wanted
    return _row(
        check,
        truth,
        found,
        q,
        int(row.get(N_PATIENTS, 0) or 0),
        recovered,
        note=f"recovered: q < {alpha} in the planted direction",
    )


def response_rows(
    simulation: Mapping, response: pd.DataFrame | None, *, alpha: float
) -> list[dict]:
    """Each planted non-responder effect against the patient-level response table."""
    rows = []
    for program, log2fc in dict(simulation.get("response_effects") or {}).items():
        row = _response_row(response, state=ALL_CD8, program=program)
        rows.append(
            _planted_effect_row(
                f"{program} in non-responders (all CD8 cells)",
                program,
                float(log2fc),
                row,
                alpha=alpha,
            )
        )
    for population, log2fc in dict(simulation.get("response_composition") or {}).items():
        state = STATE_OF_POPULATION.get(population)
        if state is None:
            continue
        row = _response_row(response, state=state, program=COMPOSITION_MEASURE)
        rows.append(
            _planted_effect_row(
                f"{state} share of CD8 cells in non-responders",
                f"{state} share",
                float(log2fc),
                row,
                alpha=alpha,
            )
        )
    if not rows:
        rows.append(
            _row(
                "Planted response effects",
                "none planted",
                "-",
                note="the simulation planted no difference between response groups",
            )
        )
    return rows


def trend_rows(
    simulation: Mapping, associations: pd.DataFrame | None, *, alpha: float
) -> list[dict]:
    """Each program planted to rise along pseudotime against the association table."""
    rows = []
    for program, log2fc in dict(simulation.get("rising_programs") or {}).items():
        truth = f"{program}: log2 fold change {float(log2fc):+.2f} from pseudotime 0 to 1"
        check = f"{program} along pseudotime"
        match = None
        if associations is not None and len(associations):
            found_rows = associations[associations[PROGRAM].astype(str) == program]
            match = found_rows.iloc[0] if len(found_rows) else None
        if match is None:
            rows.append(_row(check, truth, "no row in associations.tsv", recovered=False))
            continue
        q, effect = float(match.get(P_ADJ, np.nan)), float(match.get(EFFECT, np.nan))
        if not np.isfinite(q):
            rows.append(_row(check, truth, f"not tested: {match.get(NOTE, '')}", recovered=False))
            continue
        rising = effect > 0
        found = f"rho {effect:+.2f} ({'rises' if rising else 'falls'}), q = {q:.3g}"
        rows.append(
            _row(
                check,
                truth,
                found,
                q,
                int(match.get(N_PATIENTS, 0) or 0),
                q < alpha and rising == (float(log2fc) > 0),
                note=f"recovered: q < {alpha} in the planted direction",
            )
        )
    return rows


def recovery(
    *,
    source_obs: pd.DataFrame,
    final_obs: pd.DataFrame,
    simulation: Mapping,
    response: pd.DataFrame | None,
    associations: pd.DataFrame | None,
    alpha: float = 0.05,
    dataset: str | None = None,
) -> pd.DataFrame:
    """The run's answer beside the simulated truth.

    Parameters
    ----------
    source_obs
        obs of the simulated file as ingested (every cell, with the ``true_*`` columns).
    final_obs
        obs of ``final.h5ad`` (the CD8 cells kept, their calls, pseudotime and truth).
    simulation
        ``uns["simulation"]`` of the simulated file (`texflow.simulation.simulate`).
    response, associations
        ``tables/response_comparison.tsv`` and ``tables/associations.tsv``.
    alpha
        FDR level at which a planted effect counts as recovered.

    Returns
    -------
    One row per check, columns `RECOVERY_COLUMNS`.
    """
    missing = [c for c in TRUTH_OBS if c not in source_obs or c not in final_obs]
    if missing:
        raise InputDataError(
            f"the dataset file says simulated: true, but the cells carry no {missing} "
            "(texflow.simulation writes them): remove 'simulated: true' for real data",
            dataset=dataset,
        )
    # the planted effects first: the answer a reader checks (the page shows the first rows)
    rows = [
        *trend_rows(simulation, associations, alpha=alpha),
        *response_rows(simulation, response, alpha=alpha),
        *ordering_rows(final_obs),
        *gate_rows(source_obs, final_obs),
        *state_rows(final_obs),
    ]
    table = pd.DataFrame(rows, columns=RECOVERY_COLUMNS)
    table[VALUE] = table[VALUE].astype(float).round(4)
    for row in table.itertuples():
        logger.info("truth: %s: %s (truth: %s)", row.check, row.found, row.truth)
    return table
