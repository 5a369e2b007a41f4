"""The answer in words: each finding of ``tables/findings.tsv`` as a sentence and a table cell.

The verdicts are decided by the programs stage (`texflow.findings`); here they are only worded:
what a comparison compares, what "up" and "down" mean in it, and the evidence behind a verdict
(effect, patients, q) as a sentence and in a few symbols.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .contract import (
    COMPARE_AXIS,
    COMPARE_COMPOSITION,
    COMPARE_RESPONSE,
    COMPARE_RESPONSE_ALL,
    COMPARE_STATES,
    COMPARE_TRAJECTORY,
    VERDICT_DOWN,
    VERDICT_UNTESTED,
    VERDICT_UP,
)
from .findings import Finding
from .formatting import format_number, format_p
from .plotting.report import program_label

#: Comparisons the headline answers, in the order shown: the table file, what it compares, and
#: the words of an "up", a "down" and a "no clear difference" verdict.
COMPARISONS = {
    COMPARE_TRAJECTORY: (
        "associations.tsv", "along the Tpex → Tex-term pseudotime",
        "rises along the trajectory", "falls along the trajectory",
        "no clear trend along the trajectory",
    ),
    COMPARE_AXIS: (
        "axis_associations.tsv", "along the exhaustion axis, exhausted cells",
        "rises with exhaustion", "falls with exhaustion",
        "no clear trend with exhaustion",
    ),
    COMPARE_STATES: (
        "state_comparison.tsv", "Tex-term vs Tpex",
        "higher in Tex-term than in Tpex", "lower in Tex-term than in Tpex",
        "no clear difference between Tex-term and Tpex",
    ),
    COMPARE_RESPONSE: (
        "response_comparison.tsv", "non-responders vs responders, exhausted-lineage cells",
        "higher in non-responders", "lower in non-responders",
        "no clear difference between non-responders and responders",
    ),
    COMPARE_RESPONSE_ALL: (
        "response_comparison.tsv", "non-responders vs responders, all CD8 cells",
        "higher in non-responders' CD8 cells", "lower in non-responders' CD8 cells",
        "no clear difference between non-responders' and responders' CD8 cells",
    ),
}  # fmt: skip
#: The state-composition comparison: one finding per state (its share of a patient's CD8 cells)
#: and one for the Tpex : Tex_term balance, read from the composition rows of the response table.
ALL_COMPARISONS = {
    **COMPARISONS,
    COMPARE_COMPOSITION: (
        "response_comparison.tsv", "state composition, non-responders vs responders",
        "higher in non-responders", "lower in non-responders",
        "no clear difference between non-responders and responders",
    ),
}  # fmt: skip
#: Comparisons along an ordering: their effect is a correlation (ρ), the others' a difference.
CORRELATIONS = (COMPARE_TRAJECTORY, COMPARE_AXIS)
#: Programs whose findings are spelled out at the top of the page (the others are in the table
#: under them): the core ISG score is the primary IFN-I readout in T cells, because Hallmark
#: IFN-alpha carries T-cell-state genes (SELL, IL7, TXNIP...; gene_programs.md), and the signed
#: LPO score weighs drivers against suppressors.
HEADLINE_PROGRAMS = ("ifn_i_core", "lpo_signed")


class FindingText(Finding):
    """A `Finding` with its words: the sentence, the table cell, the evidence."""

    @classmethod
    def of(cls, finding: Finding) -> FindingText:
        """`finding` with its words."""
        return cls(**vars(finding))

    @property
    def n_groups(self) -> str:
        """'3 non-responder vs 4 responder patients' for a group comparison, else ''."""
        if not self.has_groups:
            return ""
        return (
            f"{int(self.n_non_responders)} non-responder vs "
            f"{int(self.n_responders)} responder patients"
        )

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
        label = program_label(self.program)
        _, what, up, down, neither = ALL_COMPARISONS[self.comparison]
        caveat = f" — {self.coverage}" if self.coverage else ""
        if self.verdict == VERDICT_UNTESTED:
            reason = f" ({self.reason})" if self.reason else ""
            return f"{label}, {what}: not tested{reason}{caveat}."
        words = {VERDICT_UP: up, VERDICT_DOWN: down}.get(self.verdict, f"shows {neither}")
        return f"{label} {words} ({self.evidence}){caveat}."

    @property
    def short_evidence(self) -> str:
        """The evidence in a few symbols, for the table cells: effect, patients, q (or p)."""
        parts = []
        if np.isfinite(self.effect):
            symbol = "ρ" if self.comparison in CORRELATIONS else "Δ"
            parts.append(f"{symbol} = {format_number(self.effect)}")
        if np.isfinite(self.n_concordant) and np.isfinite(self.n_patients):
            parts.append(f"{int(self.n_concordant)}/{int(self.n_patients)} patients positive")
        elif self.has_groups:
            parts.append(f"{int(self.n_non_responders)} NR vs {int(self.n_responders)} R patients")
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
        """The evidence as a clause: effect, patients, p and q, and the caveats."""
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
        if self.reason and self.verdict != VERDICT_UNTESTED:
            parts.append(self.reason)
        return ", ".join(parts) or "no numbers in the table"


def pick_headline(programs: Sequence[str], wanted: Sequence[str] = HEADLINE_PROGRAMS) -> list[str]:
    """The programs to spell out first: `wanted` where present, else every IFN/ISG/LPO program."""
    chosen = [p for p in wanted if p in programs]
    return chosen or [p for p in programs if re.search("ifn|isg|lpo", p.lower())]


def answer_blocks(
    findings: Sequence[FindingText], headline_programs: Sequence[str]
) -> list[tuple[str, list[FindingText]]]:
    """The opening answer: per headline program, its findings; a comparison that no headline
    program could be tested in is said once (program ""), not once per program."""
    headline = [f for f in findings if f.program in headline_programs]
    untested = [
        key for key in COMPARISONS
        if (these := [f for f in headline if f.comparison == key])
        and all(f.verdict == VERDICT_UNTESTED for f in these)
        and len({(f.reason, f.coverage) for f in these}) == 1
    ]  # fmt: skip
    blocks = []
    if untested:
        blocks.append(("", [next(f for f in headline if f.comparison == key) for key in untested]))
    for program in headline_programs:
        tested = [f for f in headline if f.program == program and f.comparison not in untested]
        if tested:
            blocks.append((program, tested))
    return blocks
