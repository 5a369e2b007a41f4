"""The report's plumbing: reading the stage files, and drawing HTML with the Jinja2 templates.

Nothing here knows what a page says (`texflow.report`, `texflow.report_summary`): how a stage
table or file is read, how a table becomes HTML, where `snakemake --report` keeps a file.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import contract
from .contract import P_ADJ, P_VALUE
from .formatting import as_number, format_number, format_p
from .plotting.report import program_label
from .report_tables import WIDE_COLUMNS

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
#: Longer table cells (gene lists, citations) are cut on the page; the full text shows on hover.
#: Shorter text wraps (a reason, a note), and text up to SHORT_CELL_CHARS stays on one line.
MAX_CELL_CHARS = 120
SHORT_CELL_CHARS = 45


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


def environment():
    """The Jinja2 environment of the templates, with the number, p-value and table filters."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["contract"] = contract  # the verdict and comparison names
    environment.filters["num"] = format_number
    environment.filters["pval"] = format_p
    environment.filters["table"] = table_html
    environment.filters["label"] = program_label
    environment.filters["tojson_pretty"] = lambda v: json.dumps(plain(v), indent=1, default=str)
    return environment


def stylesheet() -> Any:
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
            if name in (P_VALUE, P_ADJ) or name.startswith(("p_", "q_")):
                text = format_p(as_number(value))
            elif isinstance(value, (float, np.floating, int, np.integer)) and not isinstance(
                value, bool
            ):
                text = format_number(value)
            else:
                text = "–" if pd.isna(value) else str(value)
            numeric = isinstance(value, (float, np.floating, int, np.integer))
            if len(text) > MAX_CELL_CHARS:  # long gene lists and sources: cut, full text on hover
                cells.append(
                    f'<td class="t" title="{html.escape(text)}">'
                    f"{html.escape(text[: MAX_CELL_CHARS - 1])}…</td>"
                )
                continue
            kind = "n" if numeric else "t s" if len(text) <= SHORT_CELL_CHARS else "t"
            cells.append(f'<td class="{kind}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    wide = ' class="wide"' if frame.shape[1] > WIDE_COLUMNS else ""
    body = "".join(rows)
    return Markup(f"<table{wide}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def flatten_params(params: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for stage, values in params.items():
        if isinstance(values, Mapping):
            for key, value in values.items():
                rows.append(
                    (
                        str(stage),
                        str(key),
                        json.dumps(plain(value), default=str)
                        if not isinstance(value, str)
                        else value,
                    )
                )
        else:
            rows.append((str(stage), "", json.dumps(plain(values), default=str)))
    return rows


def report_id(path: str | os.PathLike) -> str:
    """The folder `snakemake --report x.zip` stores a report item in (data/raw/<id>/<name>): the
    sha256 of its path as the rule names it (Snakemake keeps a prefix; the page's script cuts it
    to the length of its own folder's name). Links carry it, so they also work inside the zip."""
    return hashlib.sha256(str(path).encode()).hexdigest()
