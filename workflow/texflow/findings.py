"""Findings: the verdict of every program in every comparison, decided once, next to the tests.

The programs stage tests each program (`texflow.stats`); this module reads those tables and
decides, per program and comparison, what they say: "up" (higher in Tex-term, in
non-responders, rising along the trajectory), "down", "no clear difference", or "not tested"
with the reason. The verdicts are written to ``tables/findings.tsv`` (`write_findings`), and
the dataset report and the cross-dataset summary only read and render them (`read_findings`).

A verdict follows the Benjamini-Hochberg q of its row where the table has one (else p) at the
significance level ``report.alpha`` of the configuration.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from .contract import (
    ALL_CD8,
    ALL_STATES,
    BALANCE_COLUMN,
    BALANCE_MEASURE,
    BALANCE_ROW,
    COMPARE_AXIS,
    COMPARE_COMPOSITION,
    COMPARE_RESPONSE,
    COMPARE_RESPONSE_ALL,
    COMPARE_STATES,
    COMPARE_TRAJECTORY,
    COMPARISON,
    COMPOSITION_MEASURE,
    COVERAGE,
    EFFECT,
    EFFECT_TYPE,
    EXHAUSTED_LINEAGE,
    FINDINGS_COLUMNS,
    FRACTION_PREFIX,
    MEAN_NON_RESPONDERS,
    MEAN_RESPONDERS,
    N_CONCORDANT,
    N_NON_RESPONDERS,
    N_PATIENTS,
    N_PATIENTS_POSITIVE,
    N_RESPONDERS,
    NOT_TESTABLE,
    NOTE,
    P_ADJ,
    P_VALUE,
    PROGRAM,
    SKIP_ASSOCIATIONS,
    SKIP_COMPOSITION,
    SKIP_RESPONSE,
    SKIP_TRAJECTORY,
    SKIPPED,
    SKIPPED_PREFIX,
    STATE,
    SUMMARY_P,
    SUMMARY_Q,
    TEST,
    TPEX,
    UNIT,
    UNIT_CELLS,
    VERDICT_DOWN,
    VERDICT_NONE,
    VERDICT_UNTESTED,
    VERDICT_UP,
)
from .formatting import as_number, format_number, format_p
from .stats import COMPOSITION_CAVEAT
from .utils import write_tsv

logger = logging.getLogger(__name__)

#: The programs stage table each comparison reads (response, response_all and composition share
#: the response table: its exhausted-lineage rows, its all-CD8 rows, its composition rows).
COMPARISON_TABLES: dict[str, str] = {
    COMPARE_TRAJECTORY: "associations",
    COMPARE_AXIS: "axis_associations",
    COMPARE_STATES: "state_comparison",
    COMPARE_RESPONSE: "response_comparison",
    COMPARE_RESPONSE_ALL: "response_comparison",
}
#: The row of the response table each response comparison reads.
RESPONSE_ROWS = {COMPARE_RESPONSE: EXHAUSTED_LINEAGE, COMPARE_RESPONSE_ALL: ALL_CD8}
#: Comparisons of non-responders with responders: the effect is non-responders - responders.
RESPONSE_LIKE = (COMPARE_RESPONSE, COMPARE_RESPONSE_ALL, COMPARE_COMPOSITION)
COMPOSITION_MEASURES = (COMPOSITION_MEASURE, BALANCE_MEASURE)
#: What each ``effect_type`` of the statistics tables is, in words.
EFFECT_NAMES = {
    "spearman_rho_combined": "combined per-patient Spearman ρ",
    "mean_paired_difference": "mean paired difference",
    "difference_of_patient_means": "difference of patient means",
    "difference_of_cell_means": "difference of cell means",
    "difference_of_mean_fractions": "difference of mean fractions of CD8 cells",
    "difference_of_mean_log_ratios": "difference of mean log(Tpex / Tex_term)",
}
#: The skipped steps (`uns["texflow"]["skipped"]` keys, exact) that explain a missing comparison;
#: the Tex-term vs Tpex table always has its rows, each with its own reason.
SKIP_STEPS = {
    COMPARE_TRAJECTORY: (SKIP_ASSOCIATIONS, SKIP_TRAJECTORY),
    COMPARE_AXIS: (),
    COMPARE_STATES: (),
    COMPARE_RESPONSE: (SKIP_RESPONSE,),
    COMPARE_RESPONSE_ALL: (SKIP_RESPONSE,),
    COMPARE_COMPOSITION: (SKIP_COMPOSITION, SKIP_RESPONSE),
}
UNIT_NOTE_CELLS = "cells as units: no patient labels (pseudoreplication risk)"


@dataclass
class Finding:
    """One program in one comparison: the effect, its p (and q), the patients behind it, a verdict.

    One row of ``tables/findings.tsv`` (`FINDINGS_FIELDS` maps the attributes to its columns).
    """

    program: str
    comparison: str
    effect: float = math.nan
    effect_name: str = ""
    p: float = math.nan
    q: float = math.nan
    n_patients: float = math.nan
    n_concordant: float = math.nan
    n_non_responders: float = math.nan  # group comparisons: patients per response group
    n_responders: float = math.nan
    verdict: str = VERDICT_UNTESTED
    reason: str = ""  # why not tested, or the stage's note on the test
    unit_note: str = ""  # set when cells, not patients, were the units
    power_note: str = ""  # set when so few patients that no p below alpha is possible
    coverage: str = ""  # coverage of each untrusted program the verdict rests on (stats)
    dataset: str = ""

    @property
    def has_groups(self) -> bool:
        """Patients per response group are known (a tested response comparison)."""
        n_nr, n_r = self.n_non_responders, self.n_responders
        return bool(np.isfinite(n_nr) and np.isfinite(n_r) and n_nr + n_r > 0)


#: Finding attribute -> column of findings.tsv (`contract.FINDINGS_COLUMNS`).
_RENAMED = {SUMMARY_P: P_VALUE, SUMMARY_Q: P_ADJ, N_CONCORDANT: N_PATIENTS_POSITIVE}
FINDINGS_FIELDS = _RENAMED | {f.name: f.name for f in fields(Finding) if f.name not in _RENAMED}
NUMERIC_FIELDS = {f.name for f in fields(Finding) if f.type == "float"}


# ----------------------------------------------------------------------------------------------
# deciding


def program_order(program: str) -> int:
    """IFN-I programs first, then LPO, then the others."""
    name = program.lower()
    return 0 if ("ifn" in name or "isg" in name) else 1 if "lpo" in name else 2


def findings(
    tables: Mapping[str, pd.DataFrame | None],
    *,
    alpha: float,
    skipped: Mapping[str, str],
    programs: Sequence[str] = (),
) -> list[Finding]:
    """Every program in every comparison, with effect, p, n and a verdict.

    Parameters
    ----------
    tables
        The programs stage's tables by comparison key (`COMPARISON_TABLES`: ``trajectory``,
        ``axis``, ``state``, ``response``, ``response_all``); None when there is none.
    alpha
        Significance level of the verdict; q (BH) is used where the table has it, else p.
    skipped
        Steps not run and why (`uns["texflow"]["skipped"]`), to explain a missing comparison.
    programs
        Programs to list as "not tested" (with the reason) when no table names any program.

    Returns
    -------
    One `Finding` per program and comparison, IFN-I and LPO programs first.
    """
    found: list[str] = []
    for frame in tables.values():
        if frame is not None and PROGRAM in frame:
            found += [
                str(p)
                for p in frame[PROGRAM].dropna()
                if str(p).strip() and str(p) not in found and str(p) not in COMPOSITION_MEASURES
            ]
    ordered = sorted(found or list(programs), key=program_order)
    return [
        _finding(program, comparison, tables.get(comparison), alpha=alpha, skipped=skipped)
        for program in ordered
        for comparison in COMPARISON_TABLES
    ]


def _finding(
    program: str,
    comparison: str,
    frame: pd.DataFrame | None,
    *,
    alpha: float,
    skipped: Mapping[str, str],
) -> Finding:
    finding = Finding(program=program, comparison=comparison)
    rows = (
        None
        if frame is None or PROGRAM not in frame
        else frame[frame[PROGRAM].astype(str) == program]
    )
    if rows is None or rows.empty:
        finding.reason = _why_missing(comparison, frame, skipped)
        return finding
    if comparison in RESPONSE_ROWS:
        wanted = RESPONSE_ROWS[comparison]
        if STATE not in rows or not (rows[STATE].astype(str) == wanted).any():
            finding.reason = f"no {wanted} row in response_comparison.tsv"
            return finding
        rows = rows[rows[STATE].astype(str) == wanted]
    decide(finding, rows.iloc[0].to_dict(), alpha=alpha)
    return finding


def composition_program(state: str) -> str:
    """The name a composition finding goes by (a column of composition.tsv)."""
    return BALANCE_COLUMN if state == BALANCE_ROW else f"{FRACTION_PREFIX}{state}"


def composition_findings(
    frame: pd.DataFrame | None, *, alpha: float, skipped: Mapping[str, str]
) -> list[Finding]:
    """One finding per composition row of `response_comparison.tsv` (each state's share of CD8
    cells, and the Tpex : Tex_term balance); one untested finding with the reason when there
    are none. `stats.COMPOSITION_CAVEAT` is said once under the list by the report, so it is
    taken out of each finding's reason."""
    rows = None
    if frame is not None and PROGRAM in frame:
        rows = frame[frame[PROGRAM].astype(str).isin(COMPOSITION_MEASURES)]
    if rows is None or rows.empty:
        reason = (
            _table_skip_reason(frame)
            or skipped.get(SKIP_COMPOSITION, "")
            or "no composition rows in response_comparison.tsv"
        )
        return [Finding(program=ALL_STATES, comparison=COMPARE_COMPOSITION, reason=reason)]
    result = []
    for row in rows.to_dict("records"):
        finding = Finding(
            program=composition_program(str(row[STATE])), comparison=COMPARE_COMPOSITION
        )
        decide(finding, row, alpha=alpha)
        finding.reason = finding.reason.replace(COMPOSITION_CAVEAT, "").strip("; ")
        if not np.isfinite(finding.p):  # a share 0 in every patient: no test, not "no difference"
            finding.verdict, finding.effect, finding.effect_name = VERDICT_UNTESTED, math.nan, ""
        result.append(finding)
    return result


def _table_skip_reason(frame: pd.DataFrame | None) -> str:
    """The reason a stage wrote into a table that holds only a 'skipped' row ("" otherwise)."""
    if frame is None or NOTE not in frame or TEST not in frame:
        return ""
    rows = frame[frame[TEST].astype(str) == SKIPPED]
    return str(rows[NOTE].iloc[0]).removeprefix(SKIPPED_PREFIX) if len(rows) else ""


def _why_missing(comparison: str, frame: pd.DataFrame | None, skipped: Mapping[str, str]) -> str:
    if reason := _table_skip_reason(frame):
        return reason
    for step in SKIP_STEPS[comparison]:
        if skipped.get(step):
            return skipped[step]
    if frame is None:
        return f"no table {COMPARISON_TABLES[comparison]}.tsv"
    return "this program is not in the table"


def _text(value) -> str:
    return value.strip() if isinstance(value, str) and value.strip().lower() != "nan" else ""


def decide(finding: Finding, row: Mapping, *, alpha: float) -> None:
    """Read effect, p, q and patient counts of one table row into `finding`, and its verdict."""
    comparison = finding.comparison
    effect_type = _text(row.get(EFFECT_TYPE))
    finding.effect = as_number(row.get(EFFECT))
    finding.effect_name = EFFECT_NAMES.get(
        effect_type, effect_type or (EFFECT if np.isfinite(finding.effect) else "")
    )
    if comparison == COMPARE_STATES:
        # texflow.stats: effect = mean(second) - mean(first) of "second vs first"; make it
        # Tex-term minus Tpex whichever way round the table has it
        if str(row.get(COMPARISON, "")).split(" vs ")[0] == TPEX:
            finding.effect = -finding.effect
        finding.effect_name += " (Tex-term − Tpex)"
    if comparison in RESPONSE_LIKE:
        high, low = as_number(row.get(MEAN_NON_RESPONDERS)), as_number(row.get(MEAN_RESPONDERS))
        if np.isfinite(high) and np.isfinite(low):  # the sign from the group means: certain
            finding.effect_name = EFFECT_NAMES.get(effect_type, "difference of patient means")
            finding.effect = high - low
        finding.effect_name += " (non-responders − responders)"
    finding.p, finding.q = as_number(row.get(P_VALUE)), as_number(row.get(P_ADJ))
    finding.n_patients = as_number(row.get(N_PATIENTS))
    finding.n_concordant = as_number(row.get(N_PATIENTS_POSITIVE))
    if comparison in RESPONSE_LIKE:
        n_r, n_nr = as_number(row.get(N_RESPONDERS)), as_number(row.get(N_NON_RESPONDERS))
        if np.isfinite(n_r) and np.isfinite(n_nr) and n_r + n_nr > 0:
            finding.n_responders, finding.n_non_responders = n_r, n_nr
            if not np.isfinite(finding.n_patients):
                finding.n_patients = n_r + n_nr
    if str(row.get(UNIT, "")) == UNIT_CELLS:
        finding.n_patients = math.nan  # 0 in the table: no patients, cells were the units
        finding.unit_note = UNIT_NOTE_CELLS
    finding.reason = _text(row.get(NOTE))
    finding.coverage = _text(row.get(COVERAGE))
    test = str(row.get(TEST, ""))
    smallest = smallest_p(test, finding)
    if np.isfinite(smallest) and smallest >= alpha:
        finding.power_note = (
            f"with so few patients this test cannot reach p < {format_number(alpha)} "
            f"(smallest possible p = {format_p(smallest)})"
        )
    decisive = finding.q if np.isfinite(finding.q) else finding.p
    if test == NOT_TESTABLE:  # the statistics said so, and why (the note)
        finding.verdict, finding.effect = VERDICT_UNTESTED, math.nan
        finding.reason = finding.reason or "not testable"
    elif not np.isfinite(finding.effect) or not np.isfinite(decisive):
        finding.verdict = VERDICT_NONE if np.isfinite(finding.effect) else VERDICT_UNTESTED
        finding.reason = finding.reason or "the table holds no effect size or p-value for it"
    elif decisive < alpha:
        finding.verdict = (
            VERDICT_UP
            if finding.effect > 0
            else VERDICT_DOWN
            if finding.effect < 0
            else VERDICT_NONE
        )
    else:
        finding.verdict = VERDICT_NONE
    if finding.verdict == VERDICT_UNTESTED:  # no test: no effect, no patients, nothing on power
        finding.effect_name = ""
        finding.n_patients = finding.n_concordant = math.nan
        finding.n_responders = finding.n_non_responders = math.nan
        finding.power_note = finding.unit_note = ""


def smallest_p(test: str, finding: Finding) -> float:
    """The smallest two-sided p-value an exact rank test can give with these patient numbers.

    Wilcoxon signed-rank on n paired patients: 2 / 2**n; Mann-Whitney on n1 vs n2 patients:
    2 / C(n1 + n2, n1). A "no clear difference" with 3 vs 3 patients (smallest p = 0.1) says
    nothing about the biology, and the page says so. NaN for other tests or unknown n.
    """
    if test.startswith("wilcoxon") and np.isfinite(finding.n_patients) and finding.n_patients > 0:
        return min(1.0, 2.0 / 2 ** int(finding.n_patients))
    if test.startswith("mann_whitney") and "patient" in test and finding.has_groups:
        n_nr, n_r = int(finding.n_non_responders), int(finding.n_responders)
        if n_r and n_nr:
            return min(1.0, 2.0 / math.comb(n_r + n_nr, n_r))
    return math.nan


def dataset_findings(
    tables: Mapping[str, pd.DataFrame | None],
    *,
    dataset: str,
    alpha: float,
    skipped: Mapping[str, str],
) -> list[Finding]:
    """Every finding of a dataset from the programs stage's tables (by output name:
    ``program_coverage``, ``associations``, ``axis_associations``, ``state_comparison``,
    ``response_comparison``): the program findings, then the composition findings."""
    by_comparison = {key: tables.get(name) for key, name in COMPARISON_TABLES.items()}
    coverage = tables.get("program_coverage")
    programs = (
        []
        if coverage is None or PROGRAM not in coverage
        else [str(p) for p in coverage[PROGRAM].dropna().unique()]
    )
    found = findings(by_comparison, alpha=alpha, skipped=skipped, programs=programs)
    found += composition_findings(tables.get("response_comparison"), alpha=alpha, skipped=skipped)
    for finding in found:
        finding.dataset = dataset
    return found


# ----------------------------------------------------------------------------------------------
# the table


def findings_table(found: Sequence[Finding]) -> pd.DataFrame:
    """`found` as findings.tsv's rows (`contract.FINDINGS_COLUMNS`)."""
    rows = [{FINDINGS_FIELDS[k]: v for k, v in asdict(f).items()} for f in found]
    return pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))


def write_findings(found: Sequence[Finding], path: str | os.PathLike) -> pd.DataFrame:
    """Write ``tables/findings.tsv``; returns the table."""
    table = findings_table(found)
    write_tsv(table, path)
    logger.info("%d findings written to %s", len(table), path)
    return table


def read_findings(path: str | os.PathLike) -> list[Finding]:
    """The findings of ``tables/findings.tsv``, as written (numbers as floats, NA as NaN, text
    as text: an empty reason stays empty)."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in FINDINGS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: findings table lacks the columns {missing}; it was written by an older "
            "texflow: rerun the programs stage (snakemake --forcerun programs)"
        )
    columns = {column: name for name, column in FINDINGS_FIELDS.items()}
    found = []
    for row in table.to_dict("records"):
        values = {columns[c]: row[c] for c in FINDINGS_COLUMNS}
        for name in NUMERIC_FIELDS:
            values[name] = as_number(values[name])
        found.append(Finding(**values))
    return found
