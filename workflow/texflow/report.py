"""The report: one self-contained HTML page per dataset, and a cross-dataset summary.

The page answers the question first (are IFN-I and LPO higher along the Tpex -> Tex-term
trajectory, in Tex-term than in Tpex, and in non-responders; how strongly; in how many
patients), then shows the evidence stage by stage, what was skipped and why, and the
provenance (sources with checksums, package versions, parameters).

It is built on whatever the stages left in `results/{dataset}/`: every table and figure is
optional, and a missing one is replaced by a sentence that says so and why. Figures are embedded
as base64 data URIs and the CSS is inline, so the page opens from disk without a server.

Functions here read files and return plain Python objects (`DatasetReport`); the HTML is drawn
by the Jinja2 templates in `texflow/templates/`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import logging
import math
import mimetypes
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from . import batch_check, signatures
from .contract import (
    CELL_STATE_KEY,
    CLUSTER_STATE_KEY,
    NOT_TESTABLE,
    SKIP_ASSOCIATIONS,
    SKIP_COMPOSITION,
    SKIP_RESPONSE,
    SKIP_TRAJECTORY,
    SKIPPED,
)
from .errors import TexflowError
from .plotting import report as plots
from .report_tables import WIDE_COLUMNS, arrange, rows_phrase
from .stats import (
    ALL_CD8,
    BALANCE_MEASURE,
    BALANCE_ROW,
    COMPOSITION_CAVEAT,
    COMPOSITION_MEASURE,
    COVERAGE_COLUMN,
    EXHAUSTED_LINEAGE,
    POOLED_RESPONSE_CAVEAT,
)
from .utils import atomic_path, write_tsv

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"

#: Comparisons the headline answers, in the order shown: table file, what it compares, and the
#: direction a positive effect means.
COMPARISONS = {
    "trajectory": ("associations.tsv", "along the Tpex → Tex-term pseudotime", "rises along the trajectory", "falls along the trajectory", "no clear trend along the trajectory"),
    "axis": ("axis_associations.tsv", "along the exhaustion axis, exhausted cells", "rises with exhaustion", "falls with exhaustion", "no clear trend with exhaustion"),
    "state": ("state_comparison.tsv", "Tex-term vs Tpex", "higher in Tex-term than in Tpex", "lower in Tex-term than in Tpex", "no clear difference between Tex-term and Tpex"),
    "response": ("response_comparison.tsv", "non-responders vs responders, exhausted-lineage cells", "higher in non-responders", "lower in non-responders", "no clear difference between non-responders and responders"),
    "response_all": ("response_comparison.tsv", "non-responders vs responders, all CD8 cells", "higher in non-responders' CD8 cells", "lower in non-responders' CD8 cells", "no clear difference between non-responders' and responders' CD8 cells"),
}

#: The state-composition comparison: one finding per state (its share of a patient's CD8 cells)
#: and one for the Tpex : Tex_term balance, read from the composition rows of the response table.
COMPOSITION = "composition"
ALL_COMPARISONS = {
    **COMPARISONS,
    COMPOSITION: ("response_comparison.tsv", "state composition, non-responders vs responders", "higher in non-responders", "lower in non-responders", "no clear difference between non-responders and responders"),
}
RESPONSE_LIKE = (*COMPARISONS.keys() - {"trajectory", "axis", "state"}, COMPOSITION)
COMPOSITION_MEASURES = (COMPOSITION_MEASURE, BALANCE_MEASURE)

# Column names of the programs stage tables (texflow.stats): `effect`, `effect_type`, `p_value`,
# `p_adj` (BH), `n_patients`, `n_patients_positive`, `unit` ("patients" or "cells"), `note`;
# the response table has one row per state (and `exhausted_lineage`) with `mean_responders`,
# `mean_non_responders`, `n_responders`, `n_non_responders`. Alternative names follow, in order of
# preference, so that a renamed column degrades to "–" rather than to a guess.
EFFECT_COLUMNS = ["effect", "combined_rho", "mean_rho", "rho", "mean_difference", "difference", "estimate"]
P_COLUMNS = ["p_value", "p_combined", "p_permutation", "pvalue", "pval", "p"]
Q_COLUMNS = ["p_adj", "q", "qvalue", "q_value", "fdr", "padj", "p_adjusted"]
N_COLUMNS = ["n_patients", "n_pairs", "n"]
CONCORDANT_COLUMNS = ["n_patients_positive", "n_positive", "n_concordant"]
GROUP_N_COLUMNS = {"responder": ["n_responders", "n_responder"], "non_responder": ["n_non_responders", "n_non_responder"]}
#: Group means from which the response effect is computed, so that its sign is certain:
#: positive = higher in non-responders.
RESPONSE_MEAN_COLUMNS = (["mean_non_responders", "mean_non_responder"], ["mean_responders", "mean_responder"])
#: Row of the response table each response comparison of the headline reads: all
#: exhausted-lineage cells of a patient, and all its CD8 T cells.
HEADLINE_STATES = {"response": EXHAUSTED_LINEAGE, "response_all": ALL_CD8}
#: Programs whose findings are spelled out at the top of the page (the others are in the table
#: under them): the core ISG score is the primary IFN-I readout in T cells, because Hallmark
#: IFN-alpha carries T-cell-state genes (SELL, IL7, TXNIP...; gene_programs.md), and the signed
#: LPO score weighs drivers against suppressors.
HEADLINE_PROGRAMS = ("ifn_i_core", "lpo_signed")
EFFECT_NAMES = {
    "spearman_rho_combined": "combined per-patient Spearman ρ",
    "mean_paired_difference": "mean paired difference",
    "difference_of_patient_means": "difference of patient means",
    "difference_of_cell_means": "difference of cell means",
    "difference_of_mean_fractions": "difference of mean fractions of CD8 cells",
    "difference_of_mean_log_ratios": "difference of mean log(Tpex / Tex_term)",
}

#: Where each stage table goes in the evidence part of the page (file name -> section, title).
STAGE_TABLES = {
    "qc_summary.tsv": ("qc", "Quality control per sample"),
    "gating.tsv": ("gate", "CD8 gating"),
    "resolution_sweep.tsv": ("cluster", "Leiden resolution sweep"),
    "cluster_states.tsv": ("states", "State of each cluster"),
    "signature_coverage.tsv": ("states", "Coverage of the state signatures"),
    "root_sensitivity.tsv": ("trajectory", "Pseudotime stability when the root moves"),
    "program_coverage.tsv": ("programs", "Coverage of the IFN-I and LPO programs"),
    "associations.tsv": ("programs", "Programs along pseudotime, per patient combined"),
    "axis_associations.tsv": ("programs", "Programs along the exhaustion axis of the exhausted cells, per patient combined"),
    "state_comparison.tsv": ("programs", "Tex-term vs Tpex per patient"),
    "response_comparison.tsv": ("programs", "Non-responders vs responders per patient"),
    "composition.tsv": ("states", "State composition per patient"),
    "trends.tsv": ("programs", "Smoothed trends along pseudotime"),
    **{f"{n}.tsv": ("programs", t) for n, t in (("pseudobulk_samples", "Pseudobulk samples per patient and state"), ("resistance_de", "Genes, non-responders vs responders (pseudobulk DE)"), ("resistance_programs", "Programs on the DE statistics (ulm)"))},
    "truth_recovery.tsv": ("truth", "The planted truth beside what texflow found"),
}
#: Longer table cells (gene lists, citations) are cut on the page; the full text shows on hover.
#: Shorter text wraps (a reason, a note), and text up to SHORT_CELL_CHARS stays on one line.
MAX_CELL_CHARS = 120
SHORT_CELL_CHARS = 45
#: Tables too long to read on a page (a fitted curve per program): linked, and drawn by the stage.
LINK_ONLY_TABLES = {"trends.tsv"}
SECTIONS = {
    "truth": "Simulated truth",  # simulated datasets only (render_dataset)
    "qc": "Quality control",
    "gate": "CD8 gating",
    "cluster": "Clustering",
    "states": "States",
    "trajectory": "Trajectory",
    "programs": "IFN-I and LPO programs",
    "other": "Other outputs",
}
# Stage figures (drawn by the stages, embedded as they are) are sorted by their file name.
STAGE_FIGURE_PATTERNS = [
    (r"^trend", "programs"),
    (r"^qc", "qc"),
    (r"gat|cd8", "gate"),
    (r"^umap.*(cluster|leiden)|^cluster|resolution|leiden", "cluster"),
    (r"state|marker|dotplot", "states"),
    (r"pseudotime|trajector|root|diffusion|dpt", "trajectory"),
    (r"trend|program|score|ifn|lpo|response|association", "programs"),
]


#: What the response panels carry above each panel, read from response_comparison.tsv.
RESPONSE_PANEL_NOTE = (" Above each panel: q (BH) and patients per group (R = responders, "
                       "NR = non-responders) from the table's row.")

#: A PNG at least this wide (pixels) is shown across the page, not in a grid column (~470 px).
WIDE_FIGURE_PIXELS = 1200


@dataclass
class Figure:
    """A figure for the page: an image file, or the sentence that replaces a missing one."""

    title: str
    caption: str = ""
    path: Path | None = None
    missing: str = ""  # why there is no figure (empty when there is one)
    section: str = "programs"

    @property
    def wide(self) -> bool:
        """Spans the page: a multi-panel figure drawn wider than a grid column shows it legibly
        (the cluster UMAPs, the dot plot, the per-patient panels), by title or PNG width."""
        if self.path is None:
            return False
        if self.title.startswith(("Tpex vs", "Responders", "State composition", "Program genes")):
            return True
        head = self.path.read_bytes()[:24] if self.path.suffix.lower() == ".png" else b""
        return len(head) == 24 and int.from_bytes(head[16:20], "big") >= WIDE_FIGURE_PIXELS

    def data_uri(self) -> str:
        """The image as a base64 data URI, so the page carries it inside itself."""
        mime = mimetypes.guess_type(self.path.name)[0] or "image/png"
        return f"data:{mime};base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


@dataclass
class Table:
    """A table for the page, cut to `max_rows` rows; `path` is the full file, linked from the page."""

    title: str
    frame: pd.DataFrame
    path: Path | None = None
    n_rows: int = 0
    section: str = "other"
    caption: str = ""


@dataclass
class Finding:
    """One program in one comparison: the effect, its p (and q), the patients behind it, a verdict."""

    program: str
    comparison: str
    effect: float = math.nan
    effect_name: str = ""
    p: float = math.nan
    q: float = math.nan
    n_patients: float = math.nan
    n_concordant: float = math.nan
    n_groups: str = ""  # "3 vs 4" for group comparisons
    verdict: str = "not tested"  # "up", "down", "no clear difference", "not tested"
    reason: str = ""  # why not tested, or the stage's note on the test
    unit_note: str = ""  # set when cells, not patients, were the units
    power_note: str = ""  # set when so few patients that no p below alpha is possible
    coverage: str = ""  # coverage of each untrusted program the verdict rests on (stats)

    @property
    def untested_sentence(self) -> str:
        """'<comparison>: not tested (reason).' without the program (said once for all)."""
        what = ALL_COMPARISONS[self.comparison][1]
        reason = f" ({self.reason})" if self.reason else ""
        caveat = f" — {self.coverage}" if self.coverage else ""
        return f"{what[:1].upper()}{what[1:]}: not tested{reason}{caveat}."

    @property
    def sentence(self) -> str:
        """The finding in words: what it shows, how strongly, in how many patients."""
        label = plots.program_label(self.program)
        _, what, up, down, neither = ALL_COMPARISONS[self.comparison]
        caveat = f" — {self.coverage}" if self.coverage else ""
        if self.verdict == "not tested":
            reason = f" ({self.reason})" if self.reason else ""
            return f"{label}, {what}: not tested{reason}{caveat}."
        words = {"up": up, "down": down}.get(self.verdict, f"shows {neither}")
        return f"{label} {words} ({self.evidence}){caveat}."

    @property
    def short_evidence(self) -> str:
        """The evidence in a few symbols, for the table cells: effect, patients, q (or p)."""
        parts = []
        if np.isfinite(self.effect):
            parts.append(f"{'ρ' if self.comparison in ('trajectory', 'axis') else 'Δ'} = {format_number(self.effect)}")
        if np.isfinite(self.n_concordant) and np.isfinite(self.n_patients):
            parts.append(f"{int(self.n_concordant)}/{int(self.n_patients)} patients positive")
        elif self.n_groups:
            n_nr, n_r = re.findall(r"\d+", self.n_groups)[:2]
            parts.append(f"{n_nr} NR vs {n_r} R patients")
        elif np.isfinite(self.n_patients):
            parts.append(f"{int(self.n_patients)} patients")
        if np.isfinite(self.q):
            parts.append(f"q = {format_p(self.q)}")
        elif np.isfinite(self.p):
            parts.append(f"p = {format_p(self.p)}")
        if self.unit_note:
            parts.append("cells as units")
        if self.power_note:
            parts.append("too few patients: " + self.power_note.split("(")[-1].rstrip(")"))
        if self.coverage:
            parts.append(self.coverage)
        return " · ".join(parts)

    @property
    def evidence(self) -> str:
        parts = []
        if np.isfinite(self.effect):
            parts.append(f"{self.effect_name} = {format_number(self.effect)}")
        if np.isfinite(self.n_concordant) and np.isfinite(self.n_patients):
            parts.append(f"positive in {int(self.n_concordant)} of {int(self.n_patients)} patients")
        elif self.n_groups:
            parts.append(self.n_groups)
        elif np.isfinite(self.n_patients):
            parts.append(f"{int(self.n_patients)} patients")
        if np.isfinite(self.p):
            parts.append(f"p = {format_p(self.p)}")
        if np.isfinite(self.q):
            parts.append(f"q = {format_p(self.q)}")
        if self.unit_note:
            parts.append(self.unit_note)
        if self.power_note:
            parts.append(self.power_note)
        if self.reason and self.verdict != "not tested":
            parts.append(self.reason)
        return ", ".join(parts) or "no numbers in the table"


@dataclass
class DatasetReport:
    """Everything the dataset page shows, read from `results/{dataset}/`."""

    dataset: str
    title: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    manifest: Table | None = None
    versions: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    generated: str = ""
    headline_programs: list[str] = field(default_factory=list)
    composition: list[Finding] = field(default_factory=list)
    alpha: float = 0.05
    simulated: bool = False  # the dataset file says simulated: true (texflow-simulate data)
    #: per section, sentences shown under its heading: (text, is_warning)
    notes: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def answer(self) -> list[tuple[str, list[Finding]]]:
        """The opening answer: per headline program, its findings; a comparison that no headline
        program could be tested in is said once (program ""), not once per program."""
        headline = [f for f in self.findings if f.program in self.headline_programs]
        untested = [
            key for key in COMPARISONS
            if (these := [f for f in headline if f.comparison == key]) and all(f.verdict == "not tested" for f in these)
            and len({(f.reason, f.coverage) for f in these}) == 1
        ]  # fmt: skip
        blocks = [("", [next(f for f in headline if f.comparison == key) for key in untested])] if untested else []
        for program in self.headline_programs:
            tested = [f for f in headline if f.program == program and f.comparison not in untested]
            if tested:
                blocks.append((program, tested))
        return blocks


# ----------------------------------------------------------------------------------------------
# numbers


def format_number(value: Any, digits: int = 3) -> str:
    """A number for a human: 3 significant digits, integers as integers, NA as '–'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", " ") if abs(int(value)) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10 ** digits:
            return f"{value:.0f}"  # 1432.5 -> 1432, not 1.43e+03
        return f"{value:.{digits}g}"
    return str(value)


def format_p(value: float) -> str:
    """A p-value: two significant digits, scientific below 0.001."""
    if not np.isfinite(value):
        return "–"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.2g}"


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _first(row: Mapping[str, Any], names: Iterable[str]) -> tuple[str, float]:
    """The first of `names` that `row` has as a finite number: (name, value), else ('', nan)."""
    lower = {str(k).lower(): k for k in row.keys()}
    for name in names:
        if name in lower:
            value = _number(row[lower[name]])
            if np.isfinite(value):
                return lower[name], value
    return "", math.nan


# ----------------------------------------------------------------------------------------------
# reading the stage outputs


def read_table(path: str | os.PathLike) -> pd.DataFrame | None:
    """A TSV written by a stage, or None when it is absent or cannot be parsed (logged)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, sep="\t", comment=None)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        logger.warning("table %s could not be read (%s): shown as missing", path, error)
        return None


def read_summary(path: str | os.PathLike | None) -> dict[str, Any]:
    """`summary.json` of the programs stage, or {} when absent (logged)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        logger.warning("summary %s is not valid JSON (%s): ignored", path, error)
        return {}
    return data if isinstance(data, dict) else {"summary": data}


def plain(value: Any) -> Any:
    """h5ad `uns` values (numpy scalars, arrays, nested dicts) as plain Python for JSON/HTML."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _program_column(frame: pd.DataFrame) -> str | None:
    for name in ("program", "score", "signature", "program_name"):
        for column in frame.columns:
            if str(column).lower() == name:
                return column
    return None


def findings(
    tables: Mapping[str, pd.DataFrame | None], *, alpha: float, skipped: Mapping[str, str], programs: Sequence[str] = ()
) -> list[Finding]:
    """The headline: every program in every comparison, with effect, p, n and a verdict.

    Parameters
    ----------
    tables
        `associations.tsv`, `state_comparison.tsv`, `response_comparison.tsv` by comparison
        key (`trajectory`, `state`, `response`); None when the stage did not write it.
    alpha
        Significance level for the verdict; q (FDR) is used when the table has it, else p.
    skipped
        Steps not run and why (`uns["texflow"]["skipped"]`), to explain a missing comparison.
    programs
        Programs to list as "not tested" (with the reason) when no table names any program.

    Returns
    -------
    One `Finding` per program and comparison, IFN and LPO programs first.
    """
    fallback, programs = list(programs), []
    for frame in tables.values():
        if frame is not None and (column := _program_column(frame)) is not None:
            programs += [str(p) for p in frame[column].dropna() if str(p).strip() and str(p) not in programs and str(p) not in COMPOSITION_MEASURES]
    programs = programs or fallback
    programs = sorted(programs, key=lambda p: (0 if ("ifn" in p.lower() or "isg" in p.lower()) else 1 if "lpo" in p.lower() else 2))
    result = []
    for program in programs:
        for comparison in COMPARISONS:
            frame = tables.get(comparison)
            finding = Finding(program=program, comparison=comparison)
            rows = None
            if frame is not None and (column := _program_column(frame)) is not None:
                rows = frame[frame[column].astype(str) == program]
            if rows is None or rows.empty:
                finding.reason = _why_missing(comparison, frame, skipped)
                result.append(finding)
                continue
            if comparison in HEADLINE_STATES and "state" in rows and (rows["state"].astype(str) == HEADLINE_STATES[comparison]).any():
                rows = rows[rows["state"].astype(str) == HEADLINE_STATES[comparison]]
            elif comparison == "response_all":
                finding.reason = "no all-CD8 row in response_comparison.tsv"
                result.append(finding)
                continue
            _fill(finding, rows.iloc[0].to_dict(), alpha=alpha)
            result.append(finding)
    return result


def composition_program(state: str) -> str:
    """The name a composition finding goes by (a column of composition.tsv)."""
    return "log_ratio_tpex_to_tex_term" if state == BALANCE_ROW else f"fraction_{state}"


def composition_findings(frame: pd.DataFrame | None, *, alpha: float, skipped: Mapping[str, str]) -> list[Finding]:
    """One finding per composition row of `response_comparison.tsv` (each state's share of CD8
    cells, and the Tpex : Tex_term balance); one untested finding with the reason when there
    are none."""
    rows = frame[frame["program"].astype(str).isin(COMPOSITION_MEASURES)] if frame is not None and "program" in frame else None
    if rows is None or rows.empty:
        reason = (_table_skip_reason(frame) or skipped.get(SKIP_COMPOSITION, "")
                  or "no composition rows in response_comparison.tsv")
        return [Finding(program="all_states", comparison=COMPOSITION, reason=reason)]
    result = []
    for row in rows.to_dict("records"):
        finding = Finding(program=composition_program(str(row["state"])), comparison=COMPOSITION)
        _fill(finding, row, alpha=alpha)
        # the caveat is said once under the list, not in every sentence
        finding.reason = finding.reason.replace(COMPOSITION_CAVEAT, "").strip("; ")
        if not np.isfinite(finding.p):  # a share 0 in every patient: no test, not "no difference"
            finding.verdict, finding.effect = "not tested", math.nan
        result.append(finding)
    return result


def _table_skip_reason(frame: pd.DataFrame | None) -> str:
    """The reason a stage wrote into a table that holds only a 'skipped' row ("" otherwise)."""
    if frame is None or "note" not in frame or "test" not in frame:
        return ""
    skipped = frame[frame["test"].astype(str) == SKIPPED]
    return str(skipped["note"].iloc[0]).removeprefix("skipped: ") if len(skipped) else ""


#: The skipped steps (`uns["texflow"]["skipped"]` keys, exact) that explain a missing comparison;
#: the Tex-term vs Tpex table always has its rows, each with its own reason.
SKIP_STEPS = {
    "trajectory": (SKIP_ASSOCIATIONS, SKIP_TRAJECTORY),
    "axis": (),
    "state": (),
    "response": (SKIP_RESPONSE,),
    "response_all": (SKIP_RESPONSE,),
    COMPOSITION: (SKIP_COMPOSITION, SKIP_RESPONSE),
}


def _why_missing(comparison: str, frame: pd.DataFrame | None, skipped: Mapping[str, str]) -> str:
    if reason := _table_skip_reason(frame):
        return reason
    for step in SKIP_STEPS[comparison]:
        if skipped.get(step):
            return skipped[step]
    if frame is None:
        return f"no table {ALL_COMPARISONS[comparison][0]}"
    return "this program is not in the table"


def _fill(finding: Finding, row: dict[str, Any], *, alpha: float) -> None:
    """Read effect, p, q and patient counts of one table row into `finding` and decide the verdict."""
    comparison = finding.comparison
    effect_type = str(row.get("effect_type", "") or "")
    finding.effect_name, finding.effect = _first(row, EFFECT_COLUMNS)
    finding.effect_name = EFFECT_NAMES.get(effect_type, effect_type or finding.effect_name)
    if comparison == "state":
        # texflow.stats: effect = mean(second) - mean(first) of "second vs first"; make it
        # Tex-term minus Tpex whichever way round the table has it
        first_named = str(row.get("comparison", "")).split(" vs ")[0]
        if first_named and plots.find_state([first_named], "tpex") is not None:
            finding.effect = -finding.effect
        finding.effect_name += " (Tex-term − Tpex)"
    if comparison in RESPONSE_LIKE:
        (_, high), (_, low) = _first(row, RESPONSE_MEAN_COLUMNS[0]), _first(row, RESPONSE_MEAN_COLUMNS[1])
        if np.isfinite(high) and np.isfinite(low):
            finding.effect_name = EFFECT_NAMES.get(effect_type, "difference of patient means")
            finding.effect = high - low
        elif str(row.get("comparison", "")).split(" vs ")[0].strip().lower() == "responder":
            finding.effect = -finding.effect  # the table's effect is responders - non-responders
        finding.effect_name += " (non-responders − responders)"
    _, finding.p = _first(row, P_COLUMNS)
    _, finding.q = _first(row, Q_COLUMNS)
    _, finding.n_patients = _first(row, N_COLUMNS)
    _, finding.n_concordant = _first(row, CONCORDANT_COLUMNS)
    if comparison in RESPONSE_LIKE:
        (_, n_r), (_, n_nr) = _first(row, GROUP_N_COLUMNS["responder"]), _first(row, GROUP_N_COLUMNS["non_responder"])
        if np.isfinite(n_r) and np.isfinite(n_nr) and n_r + n_nr > 0:
            finding.n_groups = f"{int(n_nr)} non-responder vs {int(n_r)} responder patients"
            if not np.isfinite(finding.n_patients):
                finding.n_patients = n_r + n_nr
    if str(row.get("unit", "")) == "cells":
        finding.n_patients = math.nan  # 0 in the table: no patients, cells were the units
        finding.unit_note = "cells as units: no patient labels (pseudoreplication risk)"
    note = row.get("note")
    if isinstance(note, str) and note.strip() and note.strip().lower() != "nan":
        finding.reason = note.strip()
    caveat = row.get(COVERAGE_COLUMN)
    finding.coverage = caveat.strip() if isinstance(caveat, str) else ""
    smallest = smallest_p(str(row.get("test", "")), finding)
    if np.isfinite(smallest) and smallest >= alpha:
        finding.power_note = f"with so few patients this test cannot reach p < {format_number(alpha)} (smallest possible p = {format_p(smallest)})"
    decisive = finding.q if np.isfinite(finding.q) else finding.p
    if str(row.get("test", "")) == NOT_TESTABLE:  # the statistics said so, and why (the note)
        finding.verdict, finding.effect = "not tested", math.nan
        finding.reason = finding.reason or "not testable"
    elif not np.isfinite(finding.effect) or not np.isfinite(decisive):
        finding.verdict = "no clear difference" if np.isfinite(finding.effect) else "not tested"
        finding.reason = finding.reason or "the table holds no effect size or p-value for it"
    elif decisive < alpha and finding.effect > 0:
        finding.verdict = "up"
    elif decisive < alpha and finding.effect < 0:
        finding.verdict = "down"
    else:
        finding.verdict = "no clear difference"
    if finding.verdict == "not tested":  # no test: no patients behind it, nothing about power
        finding.n_patients = finding.n_concordant = math.nan
        finding.n_groups = finding.power_note = finding.unit_note = ""


def pick_headline(programs: Sequence[str], wanted: Sequence[str] = HEADLINE_PROGRAMS) -> list[str]:
    """The programs to spell out first: `wanted` where present, else every IFN/ISG/LPO program."""
    chosen = [p for p in wanted if p in programs]
    return chosen or [p for p in programs if re.search("ifn|isg|lpo", p.lower())]


def smallest_p(test: str, finding: Finding) -> float:
    """The smallest two-sided p-value an exact rank test can give with these patient numbers.

    Wilcoxon signed-rank on n paired patients: 2 / 2**n; Mann-Whitney on n1 vs n2 patients:
    2 / C(n1 + n2, n1). A "no clear difference" with 3 vs 3 patients (smallest p = 0.1) says
    nothing about the biology, and the page says so. NaN for other tests or unknown n.
    """
    if test.startswith("wilcoxon") and np.isfinite(finding.n_patients) and finding.n_patients > 0:
        return min(1.0, 2.0 / 2 ** int(finding.n_patients))
    if test.startswith("mann_whitney") and "patient" in test and finding.n_groups:
        n_nr, n_r = (int(n) for n in re.findall(r"\d+", finding.n_groups)[:2])
        if n_r and n_nr:
            return min(1.0, 2.0 / math.comb(n_r + n_nr, n_r))
    return math.nan


def _truncate(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    return frame.head(max_rows) if len(frame) > max_rows else frame


def stage_figures(figures_dir: Path, *, exclude: Path | None = None) -> list[Figure]:
    """The PNG figures the stages drew, each assigned to a section by its file name."""
    if not figures_dir.is_dir():
        return []
    found = []
    exclude = exclude.resolve() if exclude is not None else None
    for path in sorted(figures_dir.rglob("*.png")):
        if exclude is not None and exclude in path.resolve().parents:
            continue
        stem = path.stem.lower()
        section = next((s for pattern, s in STAGE_FIGURE_PATTERNS if re.search(pattern, stem)), "other")
        title, caption = _stage_figure_text(path.stem)
        found.append(Figure(title=title, path=path, section=section, caption=f"{caption} Drawn by the pipeline stage ({path.name})."))
    return found


def _stage_figure_text(stem: str) -> tuple[str, str]:
    """Title and caption of a stage figure, from its file name."""
    if stem.startswith("trend_"):
        label = plots.program_label(stem.removeprefix("trend_"))
        return f"{label} along pseudotime", "Smoothed trend (GAM) of the score along pseudotime; the band is a bootstrap over patients."
    if stem.startswith("qc_"):
        return "QC: " + re.sub(r"[_\-]+", " ", stem.removeprefix("qc_")), ""
    if stem == "umap_clusters":
        return "CD8 T cells by Leiden cluster and by metadata", (
            "UMAP of the QC-passing CD8 T cells: clusters, then sample, patient, response, tissue "
            "and timepoint where the dataset has them.")
    if stem == "state_markers_dotplot":
        return "State markers per cluster", "Mean expression and fraction of cells expressing the state markers, per cluster."
    title = re.sub(r"[_\-]+", " ", stem).strip()
    return title[:1].upper() + title[1:], ""


def draw_figures(
    adata: ad.AnnData,
    *,
    outdir: str | os.PathLike,
    formats: Sequence[str] = ("png",),
    min_cells: int = 3,
    draw_cluster_umap: bool = True,
    skipped: Mapping[str, str] | None = None,
    programs: Sequence[str] | None = None,
    tested: Sequence[str] = (),
    headline: Sequence[str] = HEADLINE_PROGRAMS,
    response_table: pd.DataFrame | None = None,
    gene_programs: Mapping[str, Sequence[str]] | None = None,
) -> list[Figure]:
    """Draw the report's own figures into `outdir` (PNG plus `formats`); one `Figure` per figure.

    A figure whose data are absent becomes a `Figure` with `missing` set to the reason (read
    from the exception, and from `skipped` when the pipeline recorded why a step did not run).
    Program scores are drawn (one UMAP each, one panel each in the per-patient figures) for the
    `programs` the comparisons are about (all scores when None), and not for a score that is
    the same in every cell; what is left out is said once. `tested`: the programs tested in at
    least one comparison, whose captions say how. `headline`: the programs whose distributions
    per state are drawn. `response_table` (response_comparison.tsv): its q and n per group are
    written on the response panels. `gene_programs`: program -> genes of the heatmap across
    states (none drawn when empty).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    skipped = dict(skipped or {})
    scores, left_out = _scores_to_draw(adata.obs, programs)
    specs: list[tuple[str, str, str, Any]] = []
    if draw_cluster_umap:
        specs.append(("umap_cluster", "cluster", "UMAP by Leiden cluster", dict(color="cluster", title="CD8 T cells by Leiden cluster")))
    specs += [
        ("umap_state", "states", "UMAP by state", dict(color="state", title="CD8 T cells by state")),
        ("umap_patient", "cluster", "UMAP by patient", dict(color="patient", title="CD8 T cells by patient")),
        ("umap_response", "programs", "UMAP by response", dict(color="response", title="CD8 T cells by response to immunotherapy")),
        ("umap_pseudotime", "trajectory", "UMAP by pseudotime", dict(color="pseudotime", title="Pseudotime (Tpex → Tex-term)", colorbar_label="pseudotime (0 = lineage start, 1 = end)")),
    ]
    for score in scores:
        label = plots.program_label(score)
        specs.append((f"umap_{score}", "programs", f"UMAP by {label} score", dict(color=score, title=f"{label} score", colorbar_label=f"{label} score (a.u.)")))
    for stale in outdir.glob("umap_score_*.*"):  # a score not drawn this time: no old image
        if stale.stem not in {f"umap_{s}" for s in scores}:
            stale.unlink()
    captions = {
        "umap_cluster": "Each point is a QC-passing CD8 T cell; colours are Leiden clusters (cells per cluster in the legend).",
        "umap_state": "Cluster-level state labels; clusters below the confidence margin are 'ambiguous'.",
        "umap_patient": "Patients mixing within clusters suggests that the clusters are not patient batches.",
        "umap_response": "Response labels are per patient, as published; grey cells have no label.",
        "umap_pseudotime": "Pseudotime over the exhausted lineage (Tpex → Tex_int → Tex_term); cells outside the lineage have no value (grey).",
    }
    figures = []
    for name, section, label, kwargs in specs:
        default = "Per-cell program score (rank-based); " + (
            "the tests use per-patient summaries, not cells."
            if name.removeprefix("umap_score_") in set(tested)
            else "not tested in this dataset (the answer table says why).")
        caption = captions.get(name, default)
        figures.append(_draw(plots.umap, adata, outdir / f"{name}.png", formats, label=label, caption=caption, section=section, skipped=skipped, **kwargs))
    if left_out:
        figures.append(Figure(title="Score UMAPs of the other programs", missing=left_out,
                              section="programs"))
    has_patients = "patient" in adata.obs and bool(plots._known(adata.obs["patient"]).any())
    if has_patients:  # else the composition per sample stands in for it (below)
        figures.append(_draw(
            plots.state_composition, adata, outdir / "state_composition.png", formats,
            section="states", label="State composition per patient and by response",
            caption="Fraction of each patient's CD8 T cells in each state (per-cell calls, as composition.tsv); the response panel averages per-patient fractions; the tests are the composition rows of the response table.",
            skipped=skipped))  # fmt: skip
    obs = adata.obs
    if not has_patients:
        for stale in outdir.glob("state_composition.*"):  # an earlier run's, with patients
            stale.unlink()
        figures.append(_draw(
            plots.composition_by, adata, outdir / "state_composition_sample.png", formats,
            section="states", label="States per sample (composition)", skipped=skipped, by="sample",
            title="State composition per sample (no patient labels)",
            caption="No patient labels in this dataset: the fraction of each sample's CD8 T cells "
                    "in each state (per-cell calls) stands in for the per-patient composition. "
                    "Samples are not independent patients: nothing is tested on them."))
    tissues = obs["tissue"][plots._known(obs["tissue"])] if "tissue" in obs else pd.Series()
    if tissues.astype(str).nunique() >= 2:
        figures.append(_draw(
            plots.composition_by, adata, outdir / "state_composition_tissue.png", formats,
            section="states", label="States per tissue (composition)", skipped=skipped, by="tissue",
            title="States per tissue (composition)",
            caption="Fraction of each tissue's CD8 T cells in each state (per-cell calls), the "
                    "cells of all patients pooled; the composition tests and the per-patient "
                    "figure take all tissues together."))
    distributions = [s for s in scores if s.removeprefix("score_") in set(headline)] or scores[:2]
    figures.append(_draw(
        plots.score_distributions, adata, outdir / "score_distributions.png", formats,
        section="programs", label="Scores per state, one point per patient", skipped=skipped,
        scores=distributions, min_cells=min_cells,
        caption="Box: the cells of each state (per-cell calls) and of all CD8 T cells; point: one "
                "patient's mean over its cells in the state, colour = response. A patient with "
                f"fewer than {min_cells} cells in a state has no point there (the count under "
                "the state says how many)."))
    if gene_programs:
        figures.append(_draw(
            plots.program_gene_heatmap, adata, outdir / "program_genes_states.png", formats,
            section="programs", label="Program genes across states", skipped=skipped,
            programs=gene_programs,
            caption="Mean expression of each program's genes per state (per-cell calls), z-scored "
                    "per gene across the states; per program the genes that vary most between "
                    "the states. The signed LPO score is its drivers minus its suppressors."))
    figures.append(
        _draw(plots.paired_states, adata, outdir / "paired_tpex_texterm.png", formats, section="programs",
              label="Tpex vs Tex-term per patient",
              caption="Per-patient mean score in Tpex and in Tex-term cells, joined by a line; colour = response.",
              skipped=skipped, scores=scores, min_cells=min_cells)
    )  # fmt: skip
    figures.append(
        _draw(plots.response_groups, adata, outdir / "response_groups.png", formats, section="programs",
              label="Responders vs non-responders, all CD8 T cells",
              caption="Per-patient mean score over all its CD8 T cells (the all-CD8 rows of the response table); bar = group mean; n = patients."
                      + RESPONSE_PANEL_NOTE,
              skipped=skipped, scores=scores, min_cells=min_cells, table=response_table)
    )  # fmt: skip
    figures.append(
        _draw(plots.response_groups, adata, outdir / "response_groups_lineage.png", formats, section="programs",
              label="Responders vs non-responders, exhausted-lineage cells",
              caption="Per-patient mean score over its cells called Tpex, Tex_int or Tex_term one by one (the exhausted-lineage rows of the response table); bar = group mean; n = patients."
                      + RESPONSE_PANEL_NOTE,
              skipped=skipped, scores=scores, min_cells=min_cells, lineage_only=True,
              table=response_table)
    )  # fmt: skip
    return figures


def _scores_to_draw(obs: pd.DataFrame, programs: Sequence[str] | None) -> tuple[list[str], str]:
    """The score columns to draw (of `programs`, when given, and not constant), and a sentence
    naming the ones left out and why ("" when none is)."""
    scores = plots.score_columns(obs)
    constant = [s for s in scores if pd.to_numeric(obs[s], errors="coerce").dropna().nunique() <= 1]
    wanted = None if programs is None else {f"score_{p}" for p in programs}
    other = [s for s in scores if wanted is not None and s not in wanted]
    parts = []
    if drop := [s for s in constant if s not in other]:
        parts.append(f"the same value in every cell, nothing to colour by: {_names(drop)}")
    if other:
        what = "gating or state signature" if len(other) == 1 else "gating and state signatures"
        parts.append(f"{len(other)} {what}, not compared between groups (they gate the CD8 cells "
                     f"and call the states: see the dot plot and the state tables): "
                     f"{_names(other)}")
    return [s for s in scores if s not in constant and s not in other], "; ".join(parts)


def _names(scores: Sequence[str]) -> str:
    return ", ".join(plots.program_label(s) for s in scores)


def _draw(function, adata, path: Path, formats, *, label: str, caption: str, section: str, skipped: Mapping[str, str], **kwargs) -> Figure:
    try:
        function(adata, path=path, formats=formats, **kwargs)
    except plots.FigureSkipped as why:
        reason = str(why)
        related = _related_skip(path.stem, skipped)
        if related:
            reason = f"{reason}; the pipeline recorded: {related}"
        logger.info("figure %s not drawn: %s", path.name, reason)
        for stale in path.parent.glob(f"{path.stem}.*"):
            stale.unlink()  # a figure from an earlier run must not be embedded as if current
        return Figure(title=label, caption=caption, missing=reason, section=section)
    return Figure(title=label, caption=caption, path=path, section=section)


#: The skipped steps (exact `uns["texflow"]["skipped"]` keys) that explain why a report figure
#: is not drawn; the other figures' own sentence (in numbers) is the whole reason.
FIGURE_SKIP_STEPS = {
    "umap_response": (SKIP_RESPONSE,),
    "response_groups": (SKIP_RESPONSE,),
    "response_groups_lineage": (SKIP_RESPONSE,),
    "umap_pseudotime": (SKIP_TRAJECTORY,),
}


def _related_skip(name: str, skipped: Mapping[str, str]) -> str:
    for step in FIGURE_SKIP_STEPS.get(name, ()):
        if skipped.get(step):
            return f"{step}: {skipped[step]}"
    return ""


def collect(
    dataset_dir: str | os.PathLike,
    *,
    dataset: str,
    final_h5ad: str | os.PathLike | None = None,
    summary_json: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    figures_dir: str | os.PathLike | None = None,
    formats: Sequence[str] = ("png",),
    alpha: float = 0.05,
    max_rows: int = 40,
    min_cells: int = 3,
    headline_programs: Sequence[str] = HEADLINE_PROGRAMS,
    report_params: Mapping[str, Any] | None = None,
) -> DatasetReport:
    """Read a dataset's outputs, draw the report's figures, and return what the page shows.

    Parameters
    ----------
    dataset_dir
        `results/{dataset}`: tables are read from `tables/`, stage figures from `figures/`.
    final_h5ad, summary_json
        The programs stage outputs (default: in `dataset_dir`). Only `obs`, `obsm` and `uns`
        of the AnnData are read (backed mode), so memory does not grow with the matrix.
    manifest
        `resources/downloads/{dataset}/manifest.tsv`, when the data were downloaded.
    figures_dir
        Where the report's own figures go (default `dataset_dir/figures/report`).
    headline_programs
        Programs whose findings open the page (others follow in the table).
    """
    dataset_dir = Path(dataset_dir)
    final_h5ad = Path(final_h5ad) if final_h5ad else dataset_dir / "final.h5ad"
    figures_dir = Path(figures_dir) if figures_dir else dataset_dir / "figures" / "report"
    summary = read_summary(summary_json or dataset_dir / "summary.json")
    report = DatasetReport(dataset=dataset, summary=summary, alpha=alpha)
    report.generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    adata = ad.read_h5ad(final_h5ad, backed="r") if final_h5ad.is_file() else None
    meta = plain(adata.uns.get("texflow", {})) if adata is not None else {}
    report.skipped = {str(k): str(v) for k, v in (meta.get("skipped") or {}).items()}
    for step, reason in (summary.get("skipped") or {}).items() if isinstance(summary.get("skipped"), dict) else []:
        report.skipped.setdefault(str(step), str(reason))
    report.title = str(summary.get("title") or meta.get("title") or "")
    report.simulated = bool(meta.get("simulated", False))
    report.versions = {str(k): str(v) for k, v in (meta.get("versions") or {}).items()}
    report.params = dict(meta.get("params") or {})
    if report_params:
        report.params["report"] = dict(report_params)
    report.sources = [{"name": name, **(info if isinstance(info, dict) else {"url": info})} for name, info in (meta.get("sources") or {}).items()]
    if manifest is not None and (frame := read_table(manifest)) is not None:
        report.manifest = Table(title="Download manifest", frame=frame, path=Path(manifest), n_rows=len(frame), section="provenance")
    report.facts = _facts(adata, meta, summary)

    tables = {}
    for name, (section, title) in STAGE_TABLES.items():
        frame = read_table(dataset_dir / "tables" / name)
        tables[name] = frame
        if frame is not None:
            shown = (frame.iloc[:0, :0] if name in LINK_ONLY_TABLES
                     else _truncate(arrange(name, frame), max_rows))
            caption = _link_only_caption(frame) if name in LINK_ONLY_TABLES else ""
            report.tables.append(Table(title=title, frame=shown, path=dataset_dir / "tables" / name, n_rows=len(frame), section=section, caption=caption))
    for path in sorted((dataset_dir / "tables").glob("*.tsv")) if (dataset_dir / "tables").is_dir() else []:
        if path.name not in STAGE_TABLES and (frame := read_table(path)) is not None:
            report.tables.append(Table(title=path.stem.replace("_", " ").capitalize(), frame=_truncate(frame, max_rows), path=path, n_rows=len(frame), section="other"))
    known_programs = _programs(tables.get("program_coverage.tsv"), adata)
    report.findings = findings({key: tables.get(spec[0]) for key, spec in COMPARISONS.items()}, alpha=alpha, skipped=report.skipped, programs=known_programs)
    report.composition = composition_findings(tables.get("response_comparison.tsv"), alpha=alpha, skipped=report.skipped)
    report.headline_programs = pick_headline(list(dict.fromkeys(f.program for f in report.findings)), headline_programs)

    existing = stage_figures(dataset_dir / "figures", exclude=figures_dir)
    if why := _doublets_not_run(tables.get("qc_summary.tsv")):  # the stage's figure is only that
        existing = [f for f in existing if f.path is None or f.path.stem != "qc_doublets"]
        existing.append(Figure(title="QC: doublet scores", missing=why, section="qc"))
    has_cluster_umap = any(f.section == "cluster" and "umap" in f.path.stem.lower() for f in existing)
    if adata is not None:
        drawn = draw_figures(
            adata, outdir=figures_dir, formats=formats, min_cells=min_cells,
            draw_cluster_umap=not has_cluster_umap, skipped=report.skipped,
            programs=[f.program for f in report.findings] or None,
            tested=[f.program for f in report.findings if f.verdict != "not tested"],
            headline=report.headline_programs,
            response_table=tables.get("response_comparison.tsv"),
            gene_programs=_heatmap_programs(adata, meta))
        sweep = tables.get("resolution_sweep.tsv")
        if note := _cluster_sample_note(adata.obs, report.params, sweep):
            report.notes.setdefault("cluster", []).append(note)
        adata.file.close()
    else:
        drawn = [Figure(title="Figures of the cells", missing=f"no final AnnData ({final_h5ad}) to draw them from", section="programs")]
    trajectory_tested = any(f.comparison == "trajectory" and f.verdict != "not tested" for f in report.findings)
    trends = [f for f in existing if f.path is not None and f.path.stem.startswith("trend_")]
    if trends and not trajectory_tested:
        # without a pseudotime the stage draws a placeholder per program: one sentence says it
        reason = next((f.reason for f in report.findings if f.comparison == "trajectory" and f.reason), "no pseudotime")
        existing = [f for f in existing if f not in trends]
        existing.append(Figure(title="Trends along pseudotime", missing=f"no pseudotime to draw them along ({reason})", section="programs"))
    if why := report.skipped.get(SKIP_TRAJECTORY):  # the stage's figure is then that sentence only
        existing = [f for f in existing if f.path is None or f.path.stem != "pseudotime"]
        existing.append(Figure(title="Pseudotime", missing=f"the trajectory was not run: {why}",
                               section="trajectory"))
    report.figures = existing + drawn
    # the trend of each headline program answers the question at a glance: shown with the answer
    for figure in report.figures:
        if figure.path is not None and figure.path.stem in {f"trend_{p}" for p in report.headline_programs}:
            figure.section = "answer"
    return report


#: Programs whose genes the heatmap across states shows: the headline IFN-I program and the
#: two halves of the signed LPO score.
HEATMAP_PROGRAMS = ("ifn_i_core", "lpo_drivers", "lpo_suppressors")


def _heatmap_programs(adata: ad.AnnData, meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """The up genes of `HEATMAP_PROGRAMS` in the data, under its symbols ({} when none is)."""
    try:
        organism = str(meta.get("organism") or "human")
        programs = signatures.load_programs(organism, names=HEATMAP_PROGRAMS)
        programs = signatures.resolve_aliases(programs, adata.var_names, organism=organism)
    except (TexflowError, OSError, ValueError) as error:  # optional: the page is silent
        logger.info("no program gene heatmap: %s", error)
        return {}
    present = set(adata.var_names)
    genes = {name: [g for g in program.up if g in present] for name, program in programs.items()}
    return {name: found for name, found in genes.items() if found}


def _cluster_sample_note(
    obs: pd.DataFrame, params: Mapping[str, Any], sweep: pd.DataFrame | None
) -> tuple[str, bool] | None:
    """The clustering section's sentence on whether the clusters follow the samples
    (`batch_check`), with the chosen resolution's silhouette and the batch-correction setting."""
    result = batch_check.cluster_sample_association(obs)
    if result is None:
        return None
    cluster = params.get("cluster") if isinstance(params.get("cluster"), Mapping) else {}
    correction = cluster.get("batch_correction")
    silhouette = math.nan
    if sweep is not None and {"silhouette", "chosen"} <= set(sweep.columns):
        chosen = sweep[sweep["chosen"].astype(str).str.lower() == "true"]
        silhouette = _number(chosen["silhouette"].iloc[0]) if len(chosen) else math.nan
    has_patients = "patient" in obs and bool(plots._known(obs["patient"]).any())
    sentence = batch_check.cluster_sample_sentence(
        result, batch_correction=None if correction is None else bool(correction),
        batch_key=str(cluster.get("batch_key") or "patient"), has_patients=has_patients,
        silhouette=silhouette)
    return sentence, result["warn"]


def _doublets_not_run(qc_summary: pd.DataFrame | None) -> str:
    """Why no cell got a doublet score, from the QC table ("" when some were scored): the
    stage's figure is then an empty panel holding this sentence, so the page says it instead."""
    if qc_summary is None or not {"sample", "doublets_scored"} <= set(qc_summary.columns):
        return ""
    scored = pd.to_numeric(qc_summary["doublets_scored"], errors="coerce").fillna(0)
    if (scored > 0).any():
        return ""
    notes = "; ".join(qc_summary.get("notes", pd.Series(dtype=object)).dropna().astype(str))
    reason = next((part.split("qc.doublets:", 1)[1].strip() for part in notes.split("; not run: ")
                   if "qc.doublets:" in part), "")
    if len(reason) > 200:  # one line per sample: the first few, the rest in the table
        reason = reason[:200].rsplit(";", 1)[0] + "; … (every sample in tables/qc_summary.tsv)"
    return "doublet detection did not run" + (f": {reason}" if reason else "")


def _link_only_caption(frame: pd.DataFrame) -> str:
    """What a table shown only as a link holds: its curves, or the stage's reason for none."""
    program = frame["program"] if "program" in frame else pd.Series(dtype=object)
    if not program.notna().any() and "note" in frame and frame["note"].notna().any():
        return f"No curves: {str(frame['note'].dropna().iloc[0]).removeprefix('skipped: ')}."
    return f"{rows_phrase(len(frame))}: the curves drawn in the trend figures."


def _programs(coverage: pd.DataFrame | None, adata: ad.AnnData | None) -> list[str]:
    """Programs the dataset was scored for: from the coverage table, else from the score columns."""
    if coverage is not None and (column := _program_column(coverage)) is not None:
        return [str(p) for p in coverage[column].dropna().unique()]
    if adata is not None:
        return [c.removeprefix("score_") for c in plots.score_columns(adata.obs)]
    return []


def _facts(adata: ad.AnnData | None, meta: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """Key facts of the dataset for the page header: cells, patients, response groups, states."""
    facts: dict[str, Any] = {}
    for key in ("organism", "value_type"):
        if meta.get(key):
            facts[key.replace("_", " ")] = meta[key]
    if adata is None:
        return facts
    obs = adata.obs
    facts["CD8 T cells analysed"] = adata.n_obs
    facts["genes"] = adata.n_vars
    if "patient" in obs:
        facts["patients"] = int(obs["patient"].astype("string").dropna().nunique())
    response = plots._patient_response(obs)
    if len(response):
        facts["patients by response"] = ", ".join(f"{(response == g).sum()} {plots.RESPONSE_LABELS[g]}" for g in plots.RESPONSE_COLOURS)
    else:
        facts["patients by response"] = "no response labels"
    if CELL_STATE_KEY in obs:
        counts = obs[CELL_STATE_KEY].astype("string").value_counts()
        facts["cells per state (per-cell calls)"] = ", ".join(f"{s} {n}" for s, n in counts.items())
    if CLUSTER_STATE_KEY in obs:
        counts = obs[CLUSTER_STATE_KEY].astype("string").value_counts()
        facts["cells per state (cluster labels)"] = ", ".join(f"{s} {n}" for s, n in counts.items())
    trajectory = meta.get("trajectory") or {}
    if "axis_spearman_rho" in trajectory:
        facts["pseudotime vs exhaustion axis"] = f"Spearman ρ = {format_number(trajectory['axis_spearman_rho'], 2)} over {trajectory.get('axis_n_cells', '?')} lineage cells"
    return facts


# ----------------------------------------------------------------------------------------------
# HTML


def _environment():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["num"] = format_number
    environment.filters["pval"] = format_p
    environment.filters["table"] = table_html
    environment.filters["label"] = plots.program_label
    environment.filters["tojson_pretty"] = lambda v: json.dumps(plain(v), indent=1, default=str)
    return environment


def _stylesheet() -> Any:
    """report.css as Markup: autoescape turned its quotes ("Segoe UI") into &#34; in <style>."""
    from markupsafe import Markup

    return Markup((TEMPLATES / "report.css").read_text())


def table_html(frame: pd.DataFrame) -> Any:
    """A table as HTML: numbers formatted, p/q columns as p-values, cells escaped."""
    from markupsafe import Markup

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            name = str(column).lower()
            if name in P_COLUMNS or name in Q_COLUMNS or name.startswith(("p_", "q_")):
                text = format_p(_number(value))
            elif isinstance(value, (float, np.floating, int, np.integer)) and not isinstance(value, bool):
                text = format_number(value)
            else:
                text = "–" if pd.isna(value) else str(value)
            numeric = isinstance(value, (float, np.floating, int, np.integer))
            if len(text) > MAX_CELL_CHARS:  # long gene lists and sources: cut, full text on hover
                cells.append(f'<td class="t" title="{html.escape(text)}">{html.escape(text[:MAX_CELL_CHARS - 1])}…</td>')
                continue
            kind = "n" if numeric else "t s" if len(text) <= SHORT_CELL_CHARS else "t"
            cells.append(f'<td class="{kind}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    wide = ' class="wide"' if frame.shape[1] > WIDE_COLUMNS else ""
    body = "".join(rows)
    return Markup(f"<table{wide}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _flatten_params(params: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for stage, values in params.items():
        if isinstance(values, Mapping):
            for key, value in values.items():
                rows.append((str(stage), str(key), json.dumps(plain(value), default=str) if not isinstance(value, str) else value))
        else:
            rows.append((str(stage), "", json.dumps(plain(values), default=str)))
    return rows


def report_id(path: str | os.PathLike) -> str:
    """The folder `snakemake --report x.zip` stores a report item in (data/raw/<id>/<name>): the
    sha256 of its path as the rule names it (Snakemake keeps a prefix; the page's script cuts it
    to the length of its own folder's name). Links carry it, so they also work inside the zip."""
    return hashlib.sha256(str(path).encode()).hexdigest()


#: Files the workflow marks for `snakemake --report` (the stage tables): links to others (the
#: download manifest, other tables) cannot work inside its zip, and say so there.
IN_SNAKEMAKE_REPORT = set(STAGE_TABLES)


def render_dataset(report: DatasetReport, *, html_path: str | os.PathLike | None = None) -> str:
    """The dataset page as one HTML string (images inline). Links to tables are relative to `html_path`."""
    base = Path(html_path).parent if html_path else None

    def link(path: Path | None) -> str:
        if path is None:
            return ""
        return os.path.relpath(path, base) if base is not None else str(path)

    sections = [(key, title) for key, title in SECTIONS.items()
                if key != "truth" or report.simulated]
    return _environment().get_template("report.html.j2").render(
        report=report,
        sections=sections,
        comparisons=COMPARISONS,
        composition_name=ALL_COMPARISONS[COMPOSITION][1],
        composition_caveat=COMPOSITION_CAVEAT,
        pooled_caveat=POOLED_RESPONSE_CAVEAT,
        programs=list(dict.fromkeys([*report.headline_programs, *(f.program for f in report.findings)])),
        finding_map={(f.program, f.comparison): f for f in report.findings},
        params=_flatten_params(report.params),
        link=link,
        report_id=lambda path: report_id(path) if Path(path).name in IN_SNAKEMAKE_REPORT else "",
        css=_stylesheet(),
        wide_columns=WIDE_COLUMNS,
    )


def write_dataset_report(report: DatasetReport, path: str | os.PathLike) -> None:
    """Write the dataset page atomically."""
    text = render_dataset(report, html_path=path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    logger.info("report %s written (%d figures, %d tables, %.1f MB)", path, sum(f.path is not None for f in report.figures), len(report.tables), len(text) / 1e6)


# ----------------------------------------------------------------------------------------------
# cross-dataset summary


def summary_rows(report: DatasetReport) -> list[dict[str, Any]]:
    """The headline numbers of one dataset as rows of `results/summary.tsv` (one per program and comparison)."""
    rows = []
    for finding in [*report.findings, *report.composition]:
        rows.append({
            "dataset": report.dataset,
            "program": finding.program,
            "comparison": finding.comparison,
            "verdict": finding.verdict,
            "effect_name": finding.effect_name,
            "effect": finding.effect,
            "p": finding.p,
            "q": finding.q,
            "n_patients": finding.n_patients,
            "n_concordant": finding.n_concordant,
            "groups": finding.n_groups,
            "note": finding.reason,
            "coverage": finding.coverage,
            "simulated": report.simulated,
        })  # fmt: skip
    return rows


def headline_only(
    dataset: str,
    *,
    dataset_dir: str | os.PathLike,
    alpha: float = 0.05,
    headline_programs: Sequence[str] = HEADLINE_PROGRAMS,
    final_h5ad: str | os.PathLike | None = None,
) -> DatasetReport:
    """What the cross-dataset summary needs of one dataset: facts and findings, no figures."""
    dataset_dir = Path(dataset_dir)
    summary = read_summary(dataset_dir / "summary.json")
    report = DatasetReport(dataset=dataset, summary=summary)
    final_h5ad = Path(final_h5ad) if final_h5ad else dataset_dir / "final.h5ad"
    meta: dict[str, Any] = {}
    if final_h5ad.is_file():
        adata = ad.read_h5ad(final_h5ad, backed="r")
        meta = plain(adata.uns.get("texflow", {}))
        report.facts = _facts(adata, meta, summary)
        adata.file.close()
    report.skipped = {str(k): str(v) for k, v in (meta.get("skipped") or {}).items()}
    report.title = str(summary.get("title") or meta.get("title") or "")
    report.simulated = bool(meta.get("simulated", False))
    tables = {key: read_table(dataset_dir / "tables" / spec[0]) for key, spec in COMPARISONS.items()}
    known_programs = _programs(read_table(dataset_dir / "tables" / "program_coverage.tsv"), None)
    report.findings = findings(tables, alpha=alpha, skipped=report.skipped, programs=known_programs)
    report.composition = composition_findings(tables["response"], alpha=alpha, skipped=report.skipped)
    report.headline_programs = pick_headline(list(dict.fromkeys(f.program for f in report.findings)), headline_programs)
    return report


def resistance_context(genes_tsv: str | os.PathLike | None, forest_png: str | os.PathLike | None, *, top_n: int = 10, alpha: float = 0.05) -> dict[str, Any]:
    """What the summary page shows of `results/resistance_genes.tsv` (`texflow.resistance_meta`).

    Parameters
    ----------
    genes_tsv
        The cross-dataset gene table (None or missing: the section says so).
    forest_png
        Its forest plot (inlined as a data URI).
    top_n
        Top-ranked genes shown per state.
    alpha
        q below which a gene counts as significant.

    Returns
    -------
    ``cross`` (any state pooled over two or more datasets), ``notes`` (state -> sentence),
    ``rows`` (state -> the top genes as dicts), ``forest`` (data URI or ""), ``missing`` (why
    there is no table) and ``tsv`` (its path, for the link).
    """
    from . import resistance_meta

    empty = {"cross": False, "notes": {}, "rows": {}, "forest": "", "tsv": "", "missing": ""}
    table = read_table(genes_tsv) if genes_tsv else None
    if table is None:
        return {**empty, "missing": "no cross-dataset gene table (results/resistance_genes.tsv) was made in this run"}
    top = resistance_meta.top_genes(table, n=top_n)
    rows = {state: [{k: plain(v) for k, v in row.items()} for _, row in part.iterrows()] for state, part in top.groupby("state", sort=False)}
    forest = Figure(title="forest", path=Path(forest_png)).data_uri() if forest_png and Path(forest_png).is_file() else ""
    return {"cross": resistance_meta.cross_dataset(table), "notes": resistance_meta.state_notes(table, alpha=alpha),
            "rows": rows, "forest": forest, "tsv": str(genes_tsv), "missing": ""}


def write_summary(reports: Sequence[DatasetReport], *, tsv: str | os.PathLike, html_path: str | os.PathLike, report_links: Mapping[str, str | os.PathLike], resistance: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Write `results/summary.tsv` (long: dataset, program, comparison, numbers) and `summary.html`
    (the datasets side by side, each linking to its own report; `resistance`, from
    `resistance_context`, adds the cross-dataset gene ranking). Returns the table."""
    columns = ["dataset", "program", "comparison", "verdict", "effect_name", "effect", "p", "q",
               "n_patients", "n_concordant", "groups", "note", "coverage", "simulated"]
    table = pd.DataFrame([row for report in reports for row in summary_rows(report)], columns=columns)
    write_tsv(table, tsv)
    base = Path(html_path).parent
    programs = list(dict.fromkeys([*(p for r in reports for p in r.headline_programs), *(f.program for r in reports for f in r.findings)]))
    text = _environment().get_template("summary.html.j2").render(
        reports=reports,
        programs=programs,
        comparisons=COMPARISONS,
        composition_name=ALL_COMPARISONS[COMPOSITION][1],
        composition_programs=list(dict.fromkeys(f.program for r in reports for f in r.composition if f.program != "all_states")),
        composition_map={(r.dataset, f.program): f for r in reports for f in r.composition},
        finding_map={(r.dataset, f.program, f.comparison): f for r in reports for f in r.findings},
        links={d: os.path.relpath(p, base) for d, p in report_links.items()},
        report_ids={d: report_id(p) for d, p in report_links.items()},
        tsv_id=report_id(tsv),
        resistance=resistance,
        resistance_link=os.path.relpath(resistance["tsv"], base) if resistance and resistance.get("tsv") else "",
        resistance_id=report_id(resistance["tsv"]) if resistance and resistance.get("tsv") else "",
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        css=_stylesheet(),
    )
    with atomic_path(html_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    logger.info("summary of %d datasets written to %s and %s", len(reports), tsv, html_path)
    return table
