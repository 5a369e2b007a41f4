"""The cross-dataset summary: every dataset's findings side by side (results/summary.html and
results/summary.tsv), and the cross-dataset gene ranking.

Each dataset's findings are read from its ``tables/findings.tsv`` (the programs stage decided
them); nothing is recomputed here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .contract import (
    ALL_STATES,
    COMPARE_COMPOSITION,
    STATE,
    SUMMARY_COLUMNS,
)
from .report import DatasetReport, facts, read_findings_into
from .report_answer import ALL_COMPARISONS, COMPARISONS, HEADLINE_PROGRAMS
from .report_figures import Figure
from .report_html import environment, plain, read_summary, read_table, report_id, stylesheet
from .utils import atomic_path, read_annotations, write_tsv

logger = logging.getLogger(__name__)


def summary_rows(report: DatasetReport) -> list[dict[str, Any]]:
    """The findings of one dataset as rows of `results/summary.tsv` (`contract.SUMMARY_COLUMNS`;
    one per program and comparison)."""
    rows = []
    for f in [*report.findings, *report.composition]:
        values = (
            report.dataset,
            f.program,
            f.comparison,
            f.verdict,
            f.effect_name,
            f.effect,
            f.p,
            f.q,
            f.n_patients,
            f.n_concordant,
            f.n_groups,
            f.reason,
            f.coverage,
            report.simulated,
        )
        rows.append(dict(zip(SUMMARY_COLUMNS, values, strict=True)))
    return rows


def headline_only(
    dataset: str,
    *,
    dataset_dir: str | os.PathLike,
    findings: str | os.PathLike,
    headline_programs: Sequence[str] = HEADLINE_PROGRAMS,
    final_h5ad: str | os.PathLike | None = None,
    summary_json: str | os.PathLike | None = None,
) -> DatasetReport:
    """What the cross-dataset summary needs of one dataset: facts and findings, no figures.

    Parameters
    ----------
    dataset
        The dataset id.
    dataset_dir
        `results/{dataset}` (the default place of `final_h5ad` and `summary_json`).
    findings
        Its ``tables/findings.tsv`` (programs stage): the verdicts, read, not recomputed.
    headline_programs
        Programs spelled out first.
    final_h5ad, summary_json
        The programs stage's AnnData (its annotations: the facts) and summary.
    """
    dataset_dir = Path(dataset_dir)
    summary = read_summary(summary_json or dataset_dir / "summary.json")
    report = DatasetReport(dataset=dataset, summary=summary)
    final_h5ad = Path(final_h5ad) if final_h5ad else dataset_dir / "final.h5ad"
    meta: dict[str, Any] = {}
    if final_h5ad.is_file():
        adata = read_annotations(final_h5ad)
        meta = plain(adata.uns.get("texflow", {}))
        report.facts = facts(adata, meta, summary)
    report.skipped = {str(k): str(v) for k, v in (meta.get("skipped") or {}).items()}
    report.title = str(summary.get("title") or meta.get("title") or "")
    report.simulated = bool(meta.get("simulated", False))
    read_findings_into(report, findings, headline_programs=headline_programs)
    return report


def resistance_context(
    genes_tsv: str | os.PathLike | None,
    forest_png: str | os.PathLike | None,
    *,
    top_n: int = 10,
    alpha: float = 0.05,
) -> dict[str, Any]:
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
        return {
            **empty,
            "missing": "no cross-dataset gene table (results/resistance_genes.tsv) "
            "was made in this run",
        }
    top = resistance_meta.top_genes(table, n=top_n)
    rows = {
        state: [{k: plain(v) for k, v in row.items()} for _, row in part.iterrows()]
        for state, part in top.groupby(STATE, sort=False)
    }
    forest = (
        Figure(title="forest", path=Path(forest_png)).data_uri()
        if forest_png and Path(forest_png).is_file()
        else ""
    )
    return {
        "cross": resistance_meta.cross_dataset(table),
        "notes": resistance_meta.state_notes(table, alpha=alpha),
        "rows": rows,
        "forest": forest,
        "tsv": str(genes_tsv),
        "missing": "",
    }


def write_summary(
    reports: Sequence[DatasetReport],
    *,
    tsv: str | os.PathLike,
    html_path: str | os.PathLike,
    report_links: Mapping[str, str | os.PathLike],
    resistance: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Write `results/summary.tsv` (long: dataset, program, comparison, numbers) and `summary.html`
    (the datasets side by side, each linking to its own report; `resistance`, from
    `resistance_context`, adds the cross-dataset gene ranking). Returns the table."""
    rows = [row for report in reports for row in summary_rows(report)]
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    write_tsv(table, tsv)
    base = Path(html_path).parent
    programs = list(
        dict.fromkeys(
            [
                *(p for r in reports for p in r.headline_programs),
                *(f.program for r in reports for f in r.findings),
            ]
        )
    )
    text = (
        environment()
        .get_template("summary.html.j2")
        .render(
            reports=reports,
            programs=programs,
            comparisons=COMPARISONS,
            composition_name=ALL_COMPARISONS[COMPARE_COMPOSITION][1],
            composition_programs=list(
                dict.fromkeys(
                    f.program for r in reports for f in r.composition if f.program != ALL_STATES
                )
            ),
            composition_map={(r.dataset, f.program): f for r in reports for f in r.composition},
            finding_map={
                (r.dataset, f.program, f.comparison): f for r in reports for f in r.findings
            },
            links={d: os.path.relpath(p, base) for d, p in report_links.items()},
            report_ids={d: report_id(p) for d, p in report_links.items()},
            tsv_id=report_id(tsv),
            resistance=resistance,
            resistance_link=os.path.relpath(resistance["tsv"], base)
            if resistance and resistance.get("tsv")
            else "",
            resistance_id=report_id(resistance["tsv"])
            if resistance and resistance.get("tsv")
            else "",
            generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            css=stylesheet(),
        )
    )
    with atomic_path(html_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    logger.info("summary of %d datasets written to %s and %s", len(reports), tsv, html_path)
    return table
