"""The dataset report: one self-contained HTML page per dataset.

The page answers the question first (are IFN-I and LPO higher along the Tpex -> Tex-term
trajectory, in Tex-term than in Tpex, and in non-responders; how strongly; in how many
patients), then shows the evidence stage by stage, what was skipped and why, and the
provenance (sources with checksums, package versions, parameters).

The report renders, it does not decide: the verdicts come from ``tables/findings.tsv``, which
the programs stage writes next to its statistics (`texflow.findings`), and the page shows only
the tables and figures its rule declares as inputs (nothing is globbed, so nothing stale is
embedded). A missing table or figure is replaced by a sentence that says so and why. Figures
are embedded as base64 data URIs and the CSS is inline, so the page opens from disk.

Modules: this one assembles the page (`collect`, `render_dataset`); `report_answer` words the
findings, `report_figures` draws and sorts the figures, `report_html` reads files and draws
HTML, `report_summary` is the cross-dataset summary.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from . import batch_check
from .contract import (
    CELL_STATE_KEY,
    CHOSEN,
    CLUSTER_STATE_KEY,
    COMPARE_COMPOSITION,
    COMPARE_TRAJECTORY,
    DIRECTION,
    DOUBLETS_SCORED,
    FINDINGS_TABLE,
    GENE,
    NOTE,
    PATIENT,
    PROGRAM,
    SAMPLE,
    SILHOUETTE,
    SKIP_DOUBLETS,
    SKIP_TRAJECTORY,
    SKIPPED_PREFIX,
    STATE,
    VERDICT_UNTESTED,
)
from .expression import known_values
from .findings import read_findings
from .formatting import as_number, format_number
from .plotting import report as plots
from .report_answer import (
    ALL_COMPARISONS,
    COMPARISONS,
    HEADLINE_PROGRAMS,
    FindingText,
    answer_blocks,
    pick_headline,
)
from .report_figures import Figure, draw_figures, stage_figures
from .report_html import (
    environment,
    flatten_params,
    plain,
    read_summary,
    read_table,
    report_id,
    stylesheet,
)
from .report_tables import WIDE_COLUMNS, arrange, rows_phrase
from .stats import COMPOSITION_CAVEAT, POOLED_RESPONSE_CAVEAT, patient_response
from .utils import atomic_path, read_annotations

logger = logging.getLogger(__name__)


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
    "axis_associations.tsv": (
        "programs",
        "Programs along the exhaustion axis of the exhausted cells, per patient combined",
    ),
    "state_comparison.tsv": ("programs", "Tex-term vs Tpex per patient"),
    "response_comparison.tsv": ("programs", "Non-responders vs responders per patient"),
    "composition.tsv": ("states", "State composition per patient"),
    "trends.tsv": ("programs", "Smoothed trends along pseudotime"),
    **{
        f"{n}.tsv": ("programs", t)
        for n, t in (
            ("pseudobulk_samples", "Pseudobulk samples per patient and state"),
            ("resistance_de", "Genes, non-responders vs responders (pseudobulk DE)"),
            ("resistance_programs", "Programs on the DE statistics (ulm; genes are the units)"),
        )
    },
    "truth_recovery.tsv": ("truth", "The planted truth beside what texflow found"),
}
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


@dataclass
class Table:
    """A table for the page, cut to `max_rows` rows; `path` is the full file, linked from the
    page."""

    title: str
    frame: pd.DataFrame
    path: Path | None = None
    n_rows: int = 0
    section: str = "other"
    caption: str = ""


@dataclass
class DatasetReport:
    """Everything the dataset page shows, read from `results/{dataset}/`."""

    dataset: str
    title: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    findings: list[FindingText] = field(default_factory=list)
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
    composition: list[FindingText] = field(default_factory=list)
    findings_path: Path | None = None  # tables/findings.tsv, the verdicts shown (linked)
    alpha: float = 0.05
    simulated: bool = False  # the dataset file says simulated: true (texflow-simulate data)
    #: per section, sentences shown under its heading: (text, is_warning)
    notes: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def answer(self) -> list[tuple[str, list[FindingText]]]:
        """The opening answer: per headline program, its findings (`answer_blocks`)."""
        return answer_blocks(self.findings, self.headline_programs)


# ----------------------------------------------------------------------------------------------
# the page


def collect(
    dataset_dir: str | os.PathLike,
    *,
    dataset: str,
    findings: str | os.PathLike,
    tables: Iterable[str | os.PathLike] = (),
    figures: Iterable[str | os.PathLike] = (),
    final_h5ad: str | os.PathLike | None = None,
    summary_json: str | os.PathLike | None = None,
    gene_means: str | os.PathLike | None = None,
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
        `results/{dataset}`.
    findings
        ``tables/findings.tsv`` of the programs stage: the verdicts the page shows.
    tables
        The stage tables the page shows (the rule's inputs), by path; those not in
        `STAGE_TABLES` go to the "Other outputs" section.
    figures
        The stage figures the page embeds (the rule's inputs), by path.
    final_h5ad, summary_json
        The programs stage outputs (default: in `dataset_dir`). Only the annotations of the
        AnnData are read (`utils.read_annotations`): X and the layers never are.
    gene_means
        ``tables/program_gene_means.tsv`` of the programs stage (default: in `dataset_dir`),
        the heatmap of program genes across states (none when the file is absent).
    manifest
        `resources/downloads/{dataset}/manifest.tsv`, when the data were downloaded.
    figures_dir
        Where the report's own figures go (default `dataset_dir/figures/report`).
    formats
        Formats of the report's own figures beside PNG.
    alpha
        The significance level the verdicts were decided at (said on the page).
    max_rows
        Rows of a stage table shown on the page (the linked file has them all).
    min_cells
        Cells a patient needs in a state to be a point of the per-patient figures.
    headline_programs
        Programs whose findings open the page (others follow in the table).
    report_params
        The ``report`` section of the configuration, listed with the provenance.
    """
    dataset_dir = Path(dataset_dir)
    final_h5ad = Path(final_h5ad) if final_h5ad else dataset_dir / "final.h5ad"
    figures_dir = Path(figures_dir) if figures_dir else dataset_dir / "figures" / "report"
    summary = read_summary(summary_json or dataset_dir / "summary.json")
    report = DatasetReport(dataset=dataset, summary=summary, alpha=alpha)
    report.generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    adata = read_annotations(final_h5ad) if final_h5ad.is_file() else None
    meta = plain(adata.uns.get("texflow", {})) if adata is not None else {}
    _read_provenance(report, meta=meta, manifest=manifest, report_params=report_params)
    report.facts = facts(adata, meta, summary)
    frames = _read_tables(report, tables, max_rows=max_rows)
    read_findings_into(report, findings, headline_programs=headline_programs)

    existing = _stage_figures(report, stage_figures(figures), frames)
    if adata is not None:
        drawn = draw_figures(
            adata,
            outdir=figures_dir,
            formats=formats,
            min_cells=min_cells,
            draw_cluster_umap=not any(
                f.section == "cluster" and "umap" in f.path.stem.lower()
                for f in existing
                if f.path is not None
            ),
            skipped=report.skipped,
            programs=[f.program for f in report.findings] or None,
            tested=[f.program for f in report.findings if f.verdict != VERDICT_UNTESTED],
            headline=report.headline_programs,
            response_table=frames.get("response_comparison.tsv"),
            gene_means=read_gene_means(gene_means or dataset_dir / "tables/program_gene_means.tsv"),
        )
        if note := _cluster_sample_note(
            adata.obs, report.params, frames.get("resolution_sweep.tsv")
        ):
            report.notes.setdefault("cluster", []).append(note)
    else:
        drawn = [
            Figure(
                title="Figures of the cells",
                missing=f"no final AnnData ({final_h5ad}) to draw them from",
                section="programs",
            )
        ]
    report.figures = existing + drawn
    # the trend of each headline program answers the question at a glance: shown with the answer
    for figure in report.figures:
        if figure.path is not None and figure.path.stem in {
            f"trend_{p}" for p in report.headline_programs
        }:
            figure.section = "answer"
    return report


def read_gene_means(path: str | os.PathLike) -> pd.DataFrame | None:
    """program_gene_means.tsv as written (gene and state names as text), or None when absent."""
    path = Path(path)
    if not path.is_file():
        logger.info("no %s: no heatmap of program genes across states", path)
        return None
    text = {column: str for column in (PROGRAM, DIRECTION, GENE, STATE)}
    return pd.read_csv(path, sep="\t", dtype=text, keep_default_na=False, na_values={})


def read_findings_into(
    report: DatasetReport, path: str | os.PathLike, *, headline_programs: Sequence[str]
) -> None:
    """`report.findings` and `report.composition` from findings.tsv, and the headline programs."""
    found = [FindingText.of(f) for f in read_findings(path)]
    report.findings_path = Path(path)
    report.findings = [f for f in found if f.comparison != COMPARE_COMPOSITION]
    report.composition = [f for f in found if f.comparison == COMPARE_COMPOSITION]
    programs = list(dict.fromkeys(f.program for f in report.findings))
    report.headline_programs = pick_headline(programs, headline_programs)


def _read_provenance(
    report: DatasetReport,
    *,
    meta: Mapping[str, Any],
    manifest: str | os.PathLike | None,
    report_params: Mapping[str, Any] | None,
) -> None:
    """What was skipped, the title, versions, parameters and sources of the dataset."""
    summary = report.summary
    report.skipped = {str(k): str(v) for k, v in (meta.get("skipped") or {}).items()}
    for step, reason in (
        (summary.get("skipped") or {}).items() if isinstance(summary.get("skipped"), dict) else []
    ):
        report.skipped.setdefault(str(step), str(reason))
    report.title = str(summary.get("title") or meta.get("title") or "")
    report.simulated = bool(meta.get("simulated", False))
    report.versions = {str(k): str(v) for k, v in (meta.get("versions") or {}).items()}
    report.params = dict(meta.get("params") or {})
    if report_params:
        report.params["report"] = dict(report_params)
    report.sources = [
        {"name": name, **(info if isinstance(info, dict) else {"url": info})}
        for name, info in (meta.get("sources") or {}).items()
    ]
    if manifest is not None and (frame := read_table(manifest)) is not None:
        report.manifest = Table(
            title="Download manifest",
            frame=frame,
            path=Path(manifest),
            n_rows=len(frame),
            section="provenance",
        )


def _read_tables(
    report: DatasetReport, paths: Iterable[str | os.PathLike], *, max_rows: int
) -> dict[str, pd.DataFrame | None]:
    """The declared stage tables as page tables (stage order, then the others by name); returns
    every frame by file name."""
    paths = {Path(p).name: Path(p) for p in paths}
    frames = {name: read_table(path) for name, path in paths.items()}
    for name, (section, title) in STAGE_TABLES.items():
        if (frame := frames.get(name)) is not None:
            shown = (
                frame.iloc[:0, :0]
                if name in LINK_ONLY_TABLES
                else _truncate(arrange(name, frame), max_rows)
            )
            caption = _link_only_caption(frame) if name in LINK_ONLY_TABLES else ""
            report.tables.append(
                Table(
                    title=title,
                    frame=shown,
                    path=paths[name],
                    n_rows=len(frame),
                    section=section,
                    caption=caption,
                )
            )
    for name in sorted(set(frames) - set(STAGE_TABLES)):
        if (frame := frames[name]) is not None:
            title = Path(name).stem.replace("_", " ").capitalize()
            report.tables.append(
                Table(
                    title=title,
                    frame=_truncate(frame, max_rows),
                    path=paths[name],
                    n_rows=len(frame),
                    section="other",
                )
            )
    return frames


def _truncate(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    return frame.head(max_rows) if len(frame) > max_rows else frame


def _stage_figures(
    report: DatasetReport, existing: list[Figure], frames: Mapping[str, pd.DataFrame | None]
) -> list[Figure]:
    """The stage figures, with those a stage drew only as a placeholder (no doublet scores, no
    pseudotime) replaced by the sentence that says why."""
    why = _doublets_not_run(frames.get("qc_summary.tsv"), report.skipped.get(SKIP_DOUBLETS, ""))
    if why:  # the stage's figure is then only that sentence
        existing = [f for f in existing if f.path is None or f.path.stem != "qc_doublets"]
        existing.append(Figure(title="QC: doublet scores", missing=why, section="qc"))
    trajectory_tested = any(
        f.comparison == COMPARE_TRAJECTORY and f.verdict != VERDICT_UNTESTED
        for f in report.findings
    )
    trends = [f for f in existing if f.path is not None and f.path.stem.startswith("trend_")]
    if trends and not trajectory_tested:
        # without a pseudotime the stage draws a placeholder per program: one sentence says it
        reason = next(
            (f.reason for f in report.findings if f.comparison == COMPARE_TRAJECTORY and f.reason),
            "no pseudotime",
        )
        existing = [f for f in existing if f not in trends]
        existing.append(
            Figure(
                title="Trends along pseudotime",
                missing=f"no pseudotime to draw them along ({reason})",
                section="programs",
            )
        )
    if why := report.skipped.get(SKIP_TRAJECTORY):  # the stage's figure is then that sentence only
        existing = [f for f in existing if f.path is None or f.path.stem != "pseudotime"]
        existing.append(
            Figure(
                title="Pseudotime",
                missing=f"the trajectory was not run: {why}",
                section="trajectory",
            )
        )
    return existing


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
    if sweep is not None and {SILHOUETTE, CHOSEN} <= set(sweep.columns):
        chosen = sweep[sweep[CHOSEN].astype(str).str.lower() == "true"]
        silhouette = as_number(chosen[SILHOUETTE].iloc[0]) if len(chosen) else math.nan
    has_patients = PATIENT in obs and bool(known_values(obs[PATIENT]).any())
    sentence = batch_check.cluster_sample_sentence(
        result,
        batch_correction=None if correction is None else bool(correction),
        batch_key=str(cluster.get("batch_key") or "patient"),
        has_patients=has_patients,
        silhouette=silhouette,
    )
    return sentence, result["warn"]


def _doublets_not_run(qc_summary: pd.DataFrame | None, reason: str) -> str:
    """Why no cell got a doublet score ("" when some were scored, by the QC table): the stage's
    figure is then an empty panel holding this sentence, so the page says it instead. `reason`
    is the QC stage's skip record (``uns["texflow"]["skipped"][SKIP_DOUBLETS]``)."""
    if qc_summary is None or not {SAMPLE, DOUBLETS_SCORED} <= set(qc_summary.columns):
        return ""
    scored = pd.to_numeric(qc_summary[DOUBLETS_SCORED], errors="coerce").fillna(0)
    if (scored > 0).any():
        return ""
    if len(reason) > 200:  # one line per sample: the first few, the rest in the table
        reason = reason[:200].rsplit(";", 1)[0] + "; … (every sample in tables/qc_summary.tsv)"
    return "doublet detection did not run" + (f": {reason}" if reason else "")


def _link_only_caption(frame: pd.DataFrame) -> str:
    """What a table shown only as a link holds: its curves, or the stage's reason for none."""
    program = frame[PROGRAM] if PROGRAM in frame else pd.Series(dtype=object)
    if not program.notna().any() and NOTE in frame and frame[NOTE].notna().any():
        return f"No curves: {str(frame[NOTE].dropna().iloc[0]).removeprefix(SKIPPED_PREFIX)}."
    return f"{rows_phrase(len(frame))}: the curves drawn in the trend figures."


def facts(
    adata: ad.AnnData | None, meta: Mapping[str, Any], summary: Mapping[str, Any]
) -> dict[str, Any]:
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
    if PATIENT in obs:
        facts["patients"] = int(obs[PATIENT].astype("string").dropna().nunique())
    response = patient_response(obs)[0]
    if len(response):
        facts["patients by response"] = ", ".join(
            f"{(response == g).sum()} {plots.RESPONSE_LABELS[g]}" for g in plots.RESPONSE_COLOURS
        )
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
        facts["pseudotime vs exhaustion axis"] = (
            f"Spearman ρ = {format_number(trajectory['axis_spearman_rho'], 2)} "
            f"over {trajectory.get('axis_n_cells', '?')} lineage cells"
        )
    return facts


# ----------------------------------------------------------------------------------------------
# HTML


#: Files the workflow marks for `snakemake --report` (the stage tables): links to others (the
#: download manifest, other tables) cannot work inside its zip, and say so there.
IN_SNAKEMAKE_REPORT = {*STAGE_TABLES, FINDINGS_TABLE}


def render_dataset(report: DatasetReport, *, html_path: str | os.PathLike | None = None) -> str:
    """The dataset page as one HTML string (images inline). Links to tables are relative to
    `html_path`."""
    base = Path(html_path).parent if html_path else None

    def link(path: Path | None) -> str:
        if path is None:
            return ""
        return os.path.relpath(path, base) if base is not None else str(path)

    sections = [
        (key, title) for key, title in SECTIONS.items() if key != "truth" or report.simulated
    ]
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            report=report,
            sections=sections,
            comparisons=COMPARISONS,
            composition_name=ALL_COMPARISONS[COMPARE_COMPOSITION][1],
            composition_caveat=COMPOSITION_CAVEAT,
            pooled_caveat=POOLED_RESPONSE_CAVEAT,
            programs=list(
                dict.fromkeys([*report.headline_programs, *(f.program for f in report.findings)])
            ),
            finding_map={(f.program, f.comparison): f for f in report.findings},
            params=flatten_params(report.params),
            link=link,
            report_id=lambda path: (
                report_id(path) if Path(path).name in IN_SNAKEMAKE_REPORT else ""
            ),
            css=stylesheet(),
            wide_columns=WIDE_COLUMNS,
        )
    )


def write_dataset_report(report: DatasetReport, path: str | os.PathLike) -> None:
    """Write the dataset page atomically."""
    text = render_dataset(report, html_path=path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    logger.info(
        "report %s written (%d figures, %d tables, %.1f MB)",
        path,
        sum(f.path is not None for f in report.figures),
        len(report.tables),
        len(text) / 1e6,
    )
