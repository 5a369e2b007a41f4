"""The report's figures: the stages' figures the report rule declares, and the report's own.

Stage figures are embedded as the stages drew them, each assigned to a page section by its
file name; only the figures the rule names as inputs are shown (`stage_figures`), so a figure
an earlier configuration left in ``figures/`` is never embedded as current. The report's own
figures (UMAPs, per-patient panels, compositions) are drawn from the annotations of the final
AnnData (never its matrix), the program-gene heatmap from the programs stage's
program_gene_means.tsv, into the rule's figure directory; one that cannot be drawn becomes a
sentence.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from .contract import (
    CLUSTER_STATE_KEY,
    DIRECTION,
    PATIENT,
    PROGRAM,
    SAMPLE,
    SCORE_PREFIX,
    SKIP_RESPONSE,
    SKIP_TRAJECTORY,
)
from .expression import known_values
from .plotting import report as plots
from .report_answer import HEADLINE_PROGRAMS

logger = logging.getLogger(__name__)

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
RESPONSE_PANEL_NOTE = (
    " Above each panel: q (BH) and patients per group (R = responders, "
    "NR = non-responders) from the table's row."
)

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


def stage_figures(paths: Iterable[str | os.PathLike]) -> list[Figure]:
    """The PNG figures the stages drew, as the report rule declares them (its inputs), each
    assigned to a section by its file name. Nothing is globbed: a figure in ``figures/`` that
    the rule does not name (an earlier configuration's) is not shown."""
    found = []
    for path in sorted((Path(p) for p in paths), key=lambda p: str(p)):
        if path.suffix.lower() != ".png":
            continue
        if not path.is_file():
            raise FileNotFoundError(
                f"stage figure {path}: declared as an input of the report "
                "rule but absent; rerun the stage that draws it"
            )
        stem = path.stem.lower()
        section = next(
            (s for pattern, s in STAGE_FIGURE_PATTERNS if re.search(pattern, stem)), "other"
        )
        title, caption = _stage_figure_text(path.stem)
        found.append(
            Figure(
                title=title,
                path=path,
                section=section,
                caption=f"{caption} Drawn by the pipeline stage ({path.name}).",
            )
        )
    return found


def _stage_figure_text(stem: str) -> tuple[str, str]:
    """Title and caption of a stage figure, from its file name."""
    if stem.startswith("trend_"):
        label = plots.program_label(stem.removeprefix("trend_"))
        return (
            f"{label} along pseudotime",
            "Smoothed trend (GAM) of the score along pseudotime; "
            "the band is a bootstrap over patients.",
        )
    if stem.startswith("qc_"):
        return "QC: " + re.sub(r"[_\-]+", " ", stem.removeprefix("qc_")), ""
    if stem == "umap_clusters":
        return "CD8 T cells by Leiden cluster and by metadata", (
            "UMAP of the QC-passing CD8 T cells: clusters, then sample, patient, response, tissue "
            "and timepoint where the dataset has them."
        )
    if stem == "state_markers_dotplot":
        return (
            "State markers per cluster",
            "Mean expression and fraction of cells expressing the state markers, per cluster.",
        )
    title = re.sub(r"[_\-]+", " ", stem).strip()
    return title[:1].upper() + title[1:], ""


@dataclass(frozen=True)
class _FigureSpec:
    """One report figure to draw: the plotting function, its data, its file, its text."""

    name: str  # file stem in the figure directory (also the `FIGURE_SKIP_STEPS` key)
    draw: Callable[..., Any]  # a `texflow.plotting.report` function
    data: Any  # what `draw` takes first: the AnnData, or a table
    section: str
    label: str
    caption: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


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
    gene_means: pd.DataFrame | None = None,
) -> list[Figure]:
    """Draw the report's own figures into `outdir` (PNG plus `formats`); one `Figure` per figure.

    A figure whose data are absent becomes a `Figure` with `missing` set to the reason (read
    from the exception, and from `skipped` when the pipeline recorded why a step did not run).
    Program scores are drawn (one UMAP each, one panel each in the per-patient figures) for the
    `programs` the comparisons are about (all scores when None), and not for a score that is
    the same in every cell; what is left out is said once. `tested`: the programs tested in at
    least one comparison, whose captions say how. `headline`: the programs whose distributions
    per state are drawn. `response_table` (response_comparison.tsv): its q and n per group are
    written on the response panels. `gene_means`: program_gene_means.tsv of the programs stage,
    the heatmap of program genes across states (none drawn when it has no up gene of
    `HEATMAP_PROGRAMS`).

    The figures come in this order: the UMAPs (`_umap_specs`), the sentence on the score UMAPs
    left out, the state compositions (`_composition_specs`), the programs across states
    (`_program_state_specs`), the per-patient comparisons (`_patient_comparison_specs`).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    skipped = dict(skipped or {})
    scores, left_out = _scores_to_draw(adata.obs, programs)
    has_patients = PATIENT in adata.obs and bool(known_values(adata.obs[PATIENT]).any())
    _remove_stale_figures(outdir=outdir, scores=scores, has_patients=has_patients)
    umaps = _umap_specs(adata, scores=scores, tested=tested, draw_cluster_umap=draw_cluster_umap)
    figures = _draw_specs(umaps, outdir=outdir, formats=formats, skipped=skipped)
    if left_out:
        figures.append(
            Figure(title="Score UMAPs of the other programs", missing=left_out, section="programs")
        )
    rest = [
        *_composition_specs(adata, has_patients=has_patients),
        *_program_state_specs(
            adata, scores=scores, headline=headline, min_cells=min_cells, gene_means=gene_means
        ),
        *_patient_comparison_specs(
            adata, scores=scores, min_cells=min_cells, response_table=response_table
        ),
    ]
    return figures + _draw_specs(rest, outdir=outdir, formats=formats, skipped=skipped)


def _remove_stale_figures(*, outdir: Path, scores: Sequence[str], has_patients: bool) -> None:
    """Delete an earlier run's figures that this run does not draw, so none is embedded as
    current: the UMAP of a score not drawn this time, and the per-patient composition when
    the data have no patient labels (the per-sample one stands in for it).

    Parameters
    ----------
    outdir
        The report's figure directory.
    scores
        The score columns drawn this time (`_scores_to_draw`).
    has_patients
        Whether any cell has a patient label.
    """
    drawn = {f"umap_{s}" for s in scores}
    for stale in outdir.glob(f"umap_{SCORE_PREFIX}*.*"):
        if stale.stem not in drawn:
            stale.unlink()
    if not has_patients:
        for stale in outdir.glob("state_composition.*"):
            stale.unlink()


def _umap_specs(
    adata: ad.AnnData, *, scores: Sequence[str], tested: Sequence[str], draw_cluster_umap: bool
) -> list[_FigureSpec]:
    """The UMAPs: by cluster (when `draw_cluster_umap`), state, patient, response and
    pseudotime, then one per program score.

    Parameters
    ----------
    adata
        The final AnnData (its ``obs`` and UMAP coordinates).
    scores
        The score columns to draw, one UMAP each.
    tested
        Programs tested in at least one comparison (their captions say the tests use
        per-patient summaries; the others' say they were not tested).
    draw_cluster_umap
        Whether to draw the UMAP by Leiden cluster (the cluster stage may have drawn its own).
    """

    def umap(name: str, section: str, label: str, caption: str, **kwargs: Any) -> _FigureSpec:
        return _FigureSpec(name, plots.umap, adata, section, label, caption, kwargs)

    specs = []
    if draw_cluster_umap:
        specs.append(
            umap(
                "umap_cluster",
                "cluster",
                "UMAP by Leiden cluster",
                "Each point is a QC-passing CD8 T cell; colours are Leiden clusters "
                "(cells per cluster in the legend).",
                color="cluster",
                title="CD8 T cells by Leiden cluster",
            )
        )
    specs += [
        umap(
            "umap_state",
            "states",
            "UMAP by state",
            "Cluster-level state labels; clusters below the confidence margin are 'ambiguous'.",
            color=CLUSTER_STATE_KEY,
            title="CD8 T cells by state",
        ),
        umap(
            "umap_patient",
            "cluster",
            "UMAP by patient",
            "Patients mixing within clusters suggests that the clusters are not patient batches.",
            color="patient",
            title="CD8 T cells by patient",
        ),
        umap(
            "umap_response",
            "programs",
            "UMAP by response",
            "Response labels are per patient, as published; grey cells have no label.",
            color="response",
            title="CD8 T cells by response to immunotherapy",
        ),
        umap(
            "umap_pseudotime",
            "trajectory",
            "UMAP by pseudotime",
            "Pseudotime over the exhausted lineage (Tpex → Tex_int → Tex_term); "
            "cells outside the lineage have no value (grey).",
            color="pseudotime",
            title="Pseudotime (Tpex → Tex-term)",
            colorbar_label="pseudotime (0 = lineage start, 1 = end)",
        ),
    ]
    for score in scores:
        label = plots.program_label(score)
        specs.append(
            umap(
                f"umap_{score}",
                "programs",
                f"UMAP by {label} score",
                "Per-cell program score (rank-based); "
                + (
                    "the tests use per-patient summaries, not cells."
                    if score.removeprefix(SCORE_PREFIX) in set(tested)
                    else "not tested in this dataset (the answer table says why)."
                ),
                color=score,
                title=f"{label} score",
                colorbar_label=f"{label} score (a.u.)",
            )
        )
    return specs


def _composition_specs(adata: ad.AnnData, *, has_patients: bool) -> list[_FigureSpec]:
    """The state compositions: per patient and by response (per sample instead when no cell
    has a patient label), then per tissue when the data have two tissues or more.

    Parameters
    ----------
    adata
        The final AnnData (its ``obs``).
    has_patients
        Whether any cell has a patient label.
    """
    if has_patients:
        specs = [
            _FigureSpec(
                "state_composition",
                plots.state_composition,
                adata,
                section="states",
                label="State composition per patient and by response",
                caption="Fraction of each patient's CD8 T cells in each state "
                "(per-cell calls, as composition.tsv); "
                "the response panel averages per-patient fractions; "
                "the tests are the composition rows of the response table.",
            )
        ]
    else:
        specs = [
            _FigureSpec(
                "state_composition_sample",
                plots.composition_by,
                adata,
                section="states",
                label="States per sample (composition)",
                caption="No patient labels in this dataset: "
                "the fraction of each sample's CD8 T cells "
                "in each state (per-cell calls) stands in for the per-patient composition. "
                "Samples are not independent patients: nothing is tested on them.",
                kwargs={
                    "by": SAMPLE,
                    "title": "State composition per sample (no patient labels)",
                },
            )
        ]
    obs = adata.obs
    tissues = obs["tissue"][known_values(obs["tissue"])] if "tissue" in obs else pd.Series()
    if tissues.astype(str).nunique() >= 2:
        specs.append(
            _FigureSpec(
                "state_composition_tissue",
                plots.composition_by,
                adata,
                section="states",
                label="States per tissue (composition)",
                caption="Fraction of each tissue's CD8 T cells in each state (per-cell calls), "
                "the cells of all patients pooled; the composition tests and the per-patient "
                "figure take all tissues together.",
                kwargs={"by": "tissue", "title": "States per tissue (composition)"},
            )
        )
    return specs


def _program_state_specs(
    adata: ad.AnnData,
    *,
    scores: Sequence[str],
    headline: Sequence[str],
    min_cells: int,
    gene_means: pd.DataFrame | None,
) -> list[_FigureSpec]:
    """The programs across states: the score distributions per state (of the `headline`
    programs, else the first two scores), then the heatmap of program genes when `gene_means`
    has an up gene of `HEATMAP_PROGRAMS`.

    Parameters
    ----------
    adata
        The final AnnData (its ``obs``).
    scores
        The score columns drawn.
    headline
        The programs whose distributions per state are drawn.
    min_cells
        Fewest cells of a patient in a state for its point.
    gene_means
        program_gene_means.tsv of the programs stage, or None.
    """
    distributions = [s for s in scores if s.removeprefix(SCORE_PREFIX) in set(headline)]
    specs = [
        _FigureSpec(
            "score_distributions",
            plots.score_distributions,
            adata,
            section="programs",
            label="Scores per state, one point per patient",
            caption="Box: the cells of each state (per-cell calls) and of all CD8 T cells; "
            "point: one "
            "patient's mean over its cells in the state, colour = response. A patient with "
            f"fewer than {min_cells} cells in a state has no point there (the count under "
            "the state says how many).",
            kwargs={"scores": distributions or scores[:2], "min_cells": min_cells},
        )
    ]
    if heatmap_has_genes(gene_means):
        specs.append(
            _FigureSpec(
                "program_genes_states",
                plots.program_gene_heatmap,
                gene_means,
                section="programs",
                label="Program genes across states",
                caption="Mean expression of each program's genes per state (per-cell calls), "
                "z-scored "
                "per gene across the states; per program the genes that vary most between "
                "the states. The signed LPO score is its drivers minus its suppressors.",
                kwargs={"programs": HEATMAP_PROGRAMS},
            )
        )
    return specs


def _patient_comparison_specs(
    adata: ad.AnnData,
    *,
    scores: Sequence[str],
    min_cells: int,
    response_table: pd.DataFrame | None,
) -> list[_FigureSpec]:
    """The per-patient comparisons, one panel per score: Tpex vs Tex-term (paired), then
    responders vs non-responders over all CD8 T cells and over the exhausted lineage.

    Parameters
    ----------
    adata
        The final AnnData (its ``obs``).
    scores
        The score columns drawn, one panel each.
    min_cells
        Fewest cells of a patient (in a state, or in all) for its point.
    response_table
        response_comparison.tsv, whose q and n per group the response panels carry, or None.
    """
    panels = {"scores": scores, "min_cells": min_cells}
    return [
        _FigureSpec(
            "paired_tpex_texterm",
            plots.paired_states,
            adata,
            section="programs",
            label="Tpex vs Tex-term per patient",
            caption="Per-patient mean score in Tpex and in Tex-term cells, joined by a line; "
            "colour = response.",
            kwargs=panels,
        ),
        _FigureSpec(
            "response_groups",
            plots.response_groups,
            adata,
            section="programs",
            label="Responders vs non-responders, all CD8 T cells",
            caption="Per-patient mean score over all its CD8 T cells "
            "(the all-CD8 rows of the response table); bar = group mean; n = patients."
            + RESPONSE_PANEL_NOTE,
            kwargs={**panels, "table": response_table},
        ),
        _FigureSpec(
            "response_groups_lineage",
            plots.response_groups,
            adata,
            section="programs",
            label="Responders vs non-responders, exhausted-lineage cells",
            caption="Per-patient mean score over its cells called Tpex, Tex_int or Tex_term "
            "one by one (the exhausted-lineage rows of the response table); "
            "bar = group mean; n = patients." + RESPONSE_PANEL_NOTE,
            kwargs={**panels, "lineage_only": True, "table": response_table},
        ),
    ]


def _draw_specs(
    specs: Iterable[_FigureSpec],
    *,
    outdir: Path,
    formats: Sequence[str],
    skipped: Mapping[str, str],
) -> list[Figure]:
    """Draw each spec into ``outdir/<name>.png`` (plus `formats`), in order (`_draw`).

    Parameters
    ----------
    specs
        The figures to draw.
    outdir
        The report's figure directory.
    formats
        Further formats to save besides PNG.
    skipped
        The pipeline's skipped steps (``uns["texflow"]["skipped"]``), quoted in the reason of a
        figure that cannot be drawn.
    """
    return [
        _draw(
            spec.draw,
            spec.data,
            outdir / f"{spec.name}.png",
            formats,
            label=spec.label,
            caption=spec.caption,
            section=spec.section,
            skipped=skipped,
            **spec.kwargs,
        )
        for spec in specs
    ]


def _scores_to_draw(obs: pd.DataFrame, programs: Sequence[str] | None) -> tuple[list[str], str]:
    """The score columns to draw (of `programs`, when given, and not constant), and a sentence
    naming the ones left out and why ("" when none is)."""
    scores = plots.scores_in(obs)
    constant = [s for s in scores if pd.to_numeric(obs[s], errors="coerce").dropna().nunique() <= 1]
    wanted = None if programs is None else {f"{SCORE_PREFIX}{p}" for p in programs}
    other = [s for s in scores if wanted is not None and s not in wanted]
    parts = []
    if drop := [s for s in constant if s not in other]:
        parts.append(f"the same value in every cell, nothing to colour by: {_names(drop)}")
    if other:
        what = "gating or state signature" if len(other) == 1 else "gating and state signatures"
        parts.append(
            f"{len(other)} {what}, not compared between groups (they gate the CD8 cells "
            f"and call the states: see the dot plot and the state tables): "
            f"{_names(other)}"
        )
    return [s for s in scores if s not in constant and s not in other], "; ".join(parts)


def _names(scores: Sequence[str]) -> str:
    return ", ".join(plots.program_label(s) for s in scores)


def _draw(
    function,
    adata,
    path: Path,
    formats,
    *,
    label: str,
    caption: str,
    section: str,
    skipped: Mapping[str, str],
    **kwargs,
) -> Figure:
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


#: Programs whose genes the heatmap across states shows: the headline IFN-I program and the
#: two halves of the signed LPO score.
HEATMAP_PROGRAMS = ("ifn_i_core", "lpo_drivers", "lpo_suppressors")


def heatmap_has_genes(table: pd.DataFrame | None) -> bool:
    """Whether program_gene_means.tsv has an up gene of `HEATMAP_PROGRAMS` (the heatmap is
    optional: without one the page is silent about it)."""
    if table is None or table.empty:
        logger.info("no program gene heatmap: no per-state program gene means")
        return False
    rows = table[PROGRAM].astype(str).isin(HEATMAP_PROGRAMS) & (
        table[DIRECTION].astype(str) == "up"
    )
    if not rows.any():
        logger.info("no program gene heatmap: no gene of %s in the data", HEATMAP_PROGRAMS)
    return bool(rows.any())
