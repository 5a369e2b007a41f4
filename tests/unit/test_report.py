"""The report: headline numbers read right, pages self-contained, missing data explained."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from texflow import (
    contract,
    expression,
    findings,
    formatting,
    report,
    report_answer,
    report_figures,
    report_html,
    report_summary,
    stats,
)
from texflow.plotting import report as plots
from texflow.report_answer import FindingText
from texflow.signatures import GeneProgram

from tests.report_fixtures import PATIENTS, RESPONSE, declared, fake_adata, fake_results


class _Page(HTMLParser):
    """Collects what a self-contained page must not have: external images, styles, scripts."""

    def __init__(self):
        super().__init__()
        self.images, self.external, self.sections = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.external.append(attrs.get("href") or attrs.get("src"))
        if tag == "section":
            self.sections.append(attrs.get("id"))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two fake datasets (one complete, one without response labels or a Tpex cluster), reported."""
    root = tmp_path_factory.mktemp("results_tree")
    pages = {}
    for dataset, kwargs in {
        "full": {},
        "bare": {"with_response": False, "with_tpex": False},
    }.items():
        out = fake_results(root, dataset, **kwargs)
        page = report.collect(
            out,
            dataset=dataset,
            **declared(out),
            manifest=root / "resources/downloads" / dataset / "manifest.tsv",
            formats=["png", "svg"],
        )
        report.write_dataset_report(page, out / "report.html")
        pages[dataset] = page
    return root, pages


def decided(tables, **options):
    """The findings the programs stage decides from `tables`, with their words."""
    return [FindingText.of(f) for f in findings.findings(tables, **options)]


def decided_composition(table, **options):
    return [FindingText.of(f) for f in findings.composition_findings(table, **options)]


def _finding(page, program, comparison):
    return next(f for f in page.findings if f.program == program and f.comparison == comparison)


# ----------------------------------------------------------------------------------------------
# headline numbers


def test_headline_reads_the_programs_tables(built):
    _, pages = built
    page = pages["full"]
    trajectory = _finding(page, "ifn_i_core", "trajectory")
    assert trajectory.verdict == "up"
    assert trajectory.effect == pytest.approx(0.62)
    assert (trajectory.n_concordant, trajectory.n_patients) == (6, 6)
    assert trajectory.q == pytest.approx(0.001)
    # p = 0.03 but q = 0.06: the verdict follows q, so no claim at alpha 0.05
    state = _finding(page, "ifn_i_core", "state")
    assert state.verdict == "no clear difference" and state.effect == pytest.approx(0.25)
    # the headline effect is non-responders - responders, from the group means
    response = _finding(page, "ifn_i_core", "response")
    assert response.verdict == "up"
    assert response.effect == pytest.approx(0.6 - 0.3)
    assert response.n_groups == "3 non-responder vs 3 responder patients"
    assert "higher in non-responders" in response.sentence
    assert _finding(page, "lpo_signed", "trajectory").verdict == "no clear difference"
    assert page.headline_programs == ["ifn_i_core", "lpo_signed"]


def test_state_effect_sign_follows_the_comparison_column():
    row = {
        "program": "x",
        "comparison": "Tpex vs Tex_term",
        "effect": 0.4,
        "p_value": 0.001,
        "n_patients": 5,
    }
    (flipped,) = [
        f
        for f in decided({"state": pd.DataFrame([row])}, alpha=0.05, skipped={})
        if f.comparison == "state"
    ]
    assert flipped.effect == pytest.approx(-0.4) and flipped.verdict == "down"
    row["comparison"] = "Tex_term vs Tpex"
    (kept,) = [
        f
        for f in decided({"state": pd.DataFrame([row])}, alpha=0.05, skipped={})
        if f.comparison == "state"
    ]
    assert kept.effect == pytest.approx(0.4) and kept.verdict == "up"


def test_cells_as_units_are_flagged():
    row = {
        "program": "x",
        "unit": "cells",
        "effect": 0.3,
        "p_value": 1e-9,
        "n_patients": 0,
        "effect_type": "difference_of_cell_means",
    }
    (finding,) = [
        f
        for f in decided({"state": pd.DataFrame([row])}, alpha=0.05, skipped={})
        if f.comparison == "state"
    ]
    assert math.isnan(finding.n_patients)
    assert "cells as units" in finding.sentence


def test_missing_comparisons_say_why(built):
    _, pages = built
    page = pages["bare"]
    assert {f.verdict for f in page.findings} == {"not tested"}
    assert _finding(page, "ifn_i_core", "response").reason == "no response labels in this dataset"
    assert "trajectory skipped" in _finding(page, "ifn_i_core", "trajectory").reason
    # the stage's reason, in numbers; no borrowed skip of another step
    reason = _finding(page, "lpo_signed", "state").reason
    assert reason.startswith("no Tpex cell in this dataset (state: 0 Tpex")


# ----------------------------------------------------------------------------------------------
# the page


def test_page_is_self_contained_and_answers_first(built):
    root, _ = built
    html_path = root / "results/full/report.html"
    page = _parse(html_path)
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.external == []
    assert page.sections[0] == "answer"
    assert page.sections[-2:] == ["skipped", "provenance"]
    text = html_path.read_text()
    assert text.index("rises along the trajectory") < text.index('id="qc"')
    # provenance: the source checksum and a package version
    assert "ab" * 32 in text and "1.12.4" in text
    # tables link to the files next to the page
    assert 'href="tables/associations.tsv"' in text
    assert (html_path.parent / "tables/associations.tsv").is_file()


def _style_text(html_text: str) -> str:
    styles = re.findall(r"<style[^>]*>(.*?)</style>", html_text, flags=re.DOTALL)
    assert styles, "no <style> element"
    return "".join(styles)


def test_stylesheet_inserted_unescaped(built):
    """Autoescape turned the CSS's quotes ("Segoe UI") into &#34; inside <style>: rule void."""
    root, _ = built
    css = (report_html.TEMPLATES / "report.css").read_text()
    style = _style_text((root / "results/full/report.html").read_text(encoding="utf-8"))
    for entity in ("&#", "&quot;", "&amp;", "&lt;", "&gt;"):
        assert entity not in style, entity
    assert css.strip() in style
    assert '"Segoe UI"' in style


def test_stage_figures_embedded_and_own_figures_drawn(built):
    root, pages = built
    figures = {f.path.name: f for f in pages["full"].figures if f.path is not None}
    # drawn by stages, embedded as they are
    assert figures["qc_total_counts.png"].section == "qc"
    # the headline program's trend is shown with the answer
    assert figures["trend_ifn_i_core.png"].section == "answer"
    assert figures["trend_ifn_i_core.png"].title == "IFN-I core along pseudotime"
    assert figures["state_markers_dotplot.png"].section == "states"
    # drawn by the report, in PNG and SVG
    own = root / "results/full/figures/report"
    for name in [
        "umap_state",
        "umap_response",
        "umap_pseudotime",
        "umap_score_ifn_i_core",
        "state_composition",
        "paired_tpex_texterm",
        "response_groups",
    ]:
        assert (own / f"{name}.png").stat().st_size > 5000, name
        assert (own / f"{name}.svg").is_file(), name
    # every figure drawn; the one sentence: the score not compared between groups has no UMAP
    missing = [f.title for f in pages["full"].figures if f.missing]
    assert missing == ["Score UMAPs of the other programs"]


def test_absent_data_replaced_by_a_sentence(built):
    root, pages = built
    missing = {f.title: f.missing for f in pages["bare"].figures if f.missing}
    assert "response labels" in missing["Responders vs non-responders, all CD8 T cells"]
    assert "response labels" in missing["Responders vs non-responders, exhausted-lineage cells"]
    assert "no cell was called Tpex" in missing["Tpex vs Tex-term per patient"]
    assert "pseudotime" in missing["UMAP by pseudotime"]
    own = root / "results/bare/figures/report"
    assert not (own / "response_groups.png").exists()
    text = (root / "results/bare/report.html").read_text()
    assert "Responders vs non-responders, all CD8 T cells: not drawn." in text
    assert "no response labels in this dataset" in text


def test_stale_figure_of_an_earlier_run_is_removed(tmp_path):
    out = fake_results(tmp_path, "again", with_response=False)
    own = out / "figures/report"
    own.mkdir(parents=True)
    (own / "response_groups.png").write_bytes(b"old")
    page = report.collect(out, dataset="again", **declared(out))
    assert not (own / "response_groups.png").exists()
    assert any(
        f.title == "Responders vs non-responders, all CD8 T cells" and f.missing
        for f in page.figures
    )


def test_cluster_umap_of_the_stage_is_not_redrawn(tmp_path):
    out = fake_results(tmp_path, "withumap")
    import shutil

    shutil.copy(out / "figures/qc_total_counts.png", out / "figures/umap_leiden_clusters.png")
    page = report.collect(out, dataset="withumap", **declared(out))
    assert not (out / "figures/report/umap_cluster.png").exists()
    assert any(
        f.path is not None and f.path.name == "umap_leiden_clusters.png" and f.section == "cluster"
        for f in page.figures
    )


# ----------------------------------------------------------------------------------------------
# cross-dataset summary


def test_summary_side_by_side(built):
    root, _ = built
    results = root / "results"
    headlines = [
        report_summary.headline_only(
            d, dataset_dir=results / d, findings=results / d / "tables/findings.tsv"
        )
        for d in ("full", "bare")
    ]
    table = report_summary.write_summary(
        headlines, tsv=results / "summary.tsv", html_path=results / "summary.html",
        report_links={d: results / d / "report.html" for d in ("full", "bare")},
    )  # fmt: skip
    # datasets x programs x comparisons, and each dataset's composition findings
    n_composition = sum(len(h.composition) for h in headlines)
    assert len(table) == 2 * 2 * len(report_answer.COMPARISONS) + n_composition
    assert (table["comparison"] == contract.COMPARE_COMPOSITION).sum() == n_composition
    back = pd.read_csv(results / "summary.tsv", sep="\t")
    up = back[
        (back["dataset"] == "full")
        & (back["program"] == "ifn_i_core")
        & (back["comparison"] == "trajectory")
    ]
    assert up["verdict"].item() == "up" and up["effect"].item() == pytest.approx(0.62)
    text = (results / "summary.html").read_text()
    links = set(re.findall(r'href="([^"#]+)"', text))
    assert {"full/report.html", "bare/report.html", "summary.tsv"} <= links
    assert all((results / link).exists() for link in links)


# ----------------------------------------------------------------------------------------------
# figures and numbers


def test_patient_means_are_per_patient_per_state():
    adata = fake_adata(n_cells=300)
    scores = ["score_ifn_i_core"]
    means = plots.patient_state_means(adata, scores=scores, min_cells=1)
    obs = adata.obs
    for patient in PATIENTS[:2]:
        cells = obs[(obs["patient"] == patient) & (obs["state"] == "Tex_term")]
        row = means[(means["patient"] == patient) & (means["state"] == "Tex_term")]
        assert row["score_ifn_i_core"].item() == pytest.approx(cells["score_ifn_i_core"].mean())
        assert row["n_cells"].item() == len(cells)
        assert row["response"].item() == RESPONSE[patient]


def test_the_paired_figure_reads_the_contract_labels_only(tmp_path):
    """texflow writes Tpex and Tex_term; another spelling is not taken for them."""
    adata = fake_adata()
    key = contract.lineage_state_key(adata.obs)
    adata.obs[key] = adata.obs[key].astype(str).replace({contract.TPEX: "TPEX"})
    with pytest.raises(plots.FigureSkipped, match="no cell was called Tpex"):
        plots.paired_states(adata, scores=["score_ifn_i_core"], path=tmp_path / "p.png")


def test_paired_figure_needs_both_states(tmp_path):
    adata = fake_adata(n_cells=200, with_tpex=False)
    with pytest.raises(plots.FigureSkipped, match="Tpex"):
        plots.paired_states(adata, scores=["score_ifn_i_core"], path=tmp_path / "x.png")


def test_umap_draws_all_cells(tmp_path):
    adata = fake_adata(n_cells=200)
    saved = plots.umap(
        adata, color="pseudotime", path=tmp_path / "pt.png", title="t", formats=["png", "pdf"]
    )
    assert [p.suffix for p in saved] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in saved)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.123456, "0.123"),
        (1432.5, "1432"),
        (3, "3"),
        (np.float64(2.0), "2"),
        (float("nan"), "–"),
        (123456, "123 456"),
        (0.00001234, "1.23e-05"),
    ],
)
def test_format_number(value, text):
    assert formatting.format_number(value) == text


def test_format_p():
    assert formatting.format_p(0.0004) == "4.0e-04"
    assert formatting.format_p(0.0312) == "0.031"
    assert formatting.format_p(float("nan")) == "–"


def test_too_few_patients_is_said():
    """3 vs 3 patients: Mann-Whitney cannot go below p = 0.1; 4 paired patients: Wilcoxon not
    below 0.125."""
    response = {
        "state": "exhausted_lineage",
        "program": "x",
        "unit": "patients",
        "test": "mann_whitney_patient_means",
        "mean_responders": 0.1,
        "mean_non_responders": 0.5,
        "n_responders": 3,
        "n_non_responders": 3,
        "p_value": 0.1,
    }
    state = {
        "program": "x",
        "comparison": "Tex_term vs Tpex",
        "unit": "patients",
        "test": "wilcoxon_signed_rank_paired",
        "effect": 0.3,
        "n_patients": 4,
        "p_value": 0.125,
    }
    found = decided(
        {"response": pd.DataFrame([response]), "state": pd.DataFrame([state])},
        alpha=0.05,
        skipped={},
    )
    by = {f.comparison: f for f in found}
    assert "smallest possible p = 0.1" in by["response"].sentence
    assert "smallest possible p = 0.12" in by["state"].sentence
    state["n_patients"] = 8  # 2 / 2**8 < 0.05: no note
    (again,) = [
        f
        for f in decided({"state": pd.DataFrame([state])}, alpha=0.05, skipped={})
        if f.comparison == "state"
    ]
    assert again.power_note == ""


def test_response_sign_without_group_means():
    """texflow.stats writes the response effect as non-responders - responders: taken as it is."""
    row = {
        "state": "exhausted_lineage",
        "program": "x",
        "unit": "patients",
        "test": "mann_whitney_patient_means",
        "effect": 0.3,
        "p_value": 0.001,
        "n_responders": 5,
        "n_non_responders": 5,
        "comparison": "non_responder vs responder",
    }
    (found,) = [
        f
        for f in decided({"response": pd.DataFrame([row])}, alpha=0.05, skipped={})
        if f.comparison == "response"
    ]
    assert found.effect == pytest.approx(0.3) and found.verdict == "up"
    # the group means, where present, decide the sign whatever the effect column says
    row.update(mean_non_responders=0.1, mean_responders=0.5)
    (found,) = [
        f
        for f in decided({"response": pd.DataFrame([row])}, alpha=0.05, skipped={})
        if f.comparison == "response"
    ]
    assert found.effect == pytest.approx(-0.4) and found.verdict == "down"


def test_the_page_shows_the_findings_table_and_decides_nothing(built, tmp_path):
    """The report's findings are findings.tsv's rows, as the programs stage decided them from its
    tables; a changed verdict in the table is what the page shows."""
    root, pages = built
    for dataset, page in pages.items():
        out = root / "results" / dataset
        written = findings.read_findings(out / "tables/findings.tsv")
        tables = {
            name: pd.read_csv(out / "tables" / f"{name}.tsv", sep="\t")
            for name in (
                "program_coverage",
                "associations",
                "state_comparison",
                "response_comparison",
            )
        }
        fresh = findings.dataset_findings(
            tables,
            dataset=dataset,
            alpha=0.05,
            skipped={
                "response_comparison": "no response labels in this dataset's metadata",
                "trajectory": "no cluster was labelled Tpex with enough confidence: "
                "no root for the pseudotime",
            }
            if dataset == "bare"
            else {},
        )
        shown = [*page.findings, *page.composition]
        assert findings.findings_table(shown).equals(findings.findings_table(written)), dataset
        assert findings.findings_table(written).equals(findings.findings_table(fresh)), dataset
    # the page renders the table: flip one verdict in the file, and the page follows it
    out = fake_results(tmp_path, "flipped")
    table = pd.read_csv(out / "tables/findings.tsv", sep="\t", keep_default_na=False)
    row = (table["program"] == "ifn_i_core") & (table["comparison"] == "trajectory")
    assert table.loc[row, "verdict"].item() == "up"
    table.loc[row, "verdict"] = "down"
    table.to_csv(out / "tables/findings.tsv", sep="\t", index=False)
    page = report.collect(out, dataset="flipped", **declared(out))
    assert _finding(page, "ifn_i_core", "trajectory").verdict == "down"
    assert "IFN-I core falls along the trajectory" in report.render_dataset(page)


def test_findings_table_round_trips(tmp_path):
    found = decided(
        {
            "response": pd.DataFrame(
                [
                    {
                        "state": "exhausted_lineage",
                        "program": "x",
                        "unit": "patients",
                        "test": "mann_whitney_patient_means",
                        "effect": 0.1,
                        "mean_non_responders": 0.6,
                        "mean_responders": 0.3,
                        "p_value": 0.1,
                        "p_adj": 0.2,
                        "n_responders": 3,
                        "n_non_responders": 3,
                        "note": "",
                        "coverage": "x: 3 of 20 genes",
                    }
                ]
            )
        },
        alpha=0.05,
        skipped={},
    )
    found[0].dataset = "d"
    path = tmp_path / "findings.tsv"
    findings.write_findings(found, path)
    again = findings.read_findings(path)
    assert findings.findings_table(again).equals(findings.findings_table(found))
    response = next(f for f in again if f.comparison == "response")
    assert FindingText.of(response).n_groups == "3 non-responder vs 3 responder patients"
    assert "smallest possible p = 0.1" in response.power_note
    # a table written by an older texflow says so, and how to mend it
    pd.DataFrame({"program": ["x"]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match="rerun the programs stage"):
        findings.read_findings(path)


def test_only_the_declared_stage_figures_are_embedded(tmp_path):
    """A figure an earlier configuration left in figures/ (not an input of the rule) is not
    shown."""
    out = fake_results(tmp_path, "stale")
    import shutil

    shutil.copy(out / "figures/qc_total_counts.png", out / "figures/trend_lpo_signed.png")  # stale
    inputs = declared(out)
    pd.DataFrame({"a": [1]}).to_csv(
        out / "tables/left_over.tsv", sep="\t", index=False
    )  # nor a table
    inputs["figures"] = [p for p in inputs["figures"] if p.name != "trend_lpo_signed.png"]
    page = report.collect(out, dataset="stale", **inputs)
    shown = {f.path.name for f in page.figures if f.path is not None}
    assert "trend_ifn_i_core.png" in shown and "trend_lpo_signed.png" not in shown
    assert "qc_total_counts.png" in shown
    assert not any(t.path.name == "left_over.tsv" for t in page.tables)
    assert any(t.path.name == "gating.tsv" for t in page.tables)
    # a declared figure that is absent is an error, not a silent gap
    with pytest.raises(FileNotFoundError, match="declared as an input"):
        report.collect(out, dataset="stale", **{**inputs, "figures": [out / "figures/absent.png"]})


def test_trend_placeholders_replaced_without_pseudotime(tmp_path):
    out = fake_results(tmp_path, "notraj", with_tpex=False)
    for program in ("ifn_i_core", "tpex"):
        (out / "figures" / f"trend_{program}.png").write_bytes(
            (out / "figures/qc_total_counts.png").read_bytes()
        )
    page = report.collect(out, dataset="notraj", **declared(out))
    assert not [f for f in page.figures if f.path is not None and f.path.stem.startswith("trend_")]
    (trends,) = [f for f in page.figures if f.title == "Trends along pseudotime"]
    assert "trajectory skipped" in trends.missing


def test_long_cells_are_cut():
    html = str(
        report_html.table_html(pd.DataFrame({"missing": [",".join(["GENE"] * 40)], "n": [3]}))
    )
    assert "…" in html and 'title="GENE,GENE' in html


def test_composition_rows_become_their_own_findings_not_programs():
    from texflow import stats

    rng = np.random.default_rng(0)
    rows = []
    for p in range(12):
        nr = p % 2 == 1
        share = 0.5 if nr else 0.1
        for _ in range(40):
            state = (
                "Tex_term"
                if rng.random() < share
                else ("Tpex" if rng.random() < 0.3 else "naive_like")
            )
            rows.append(
                {
                    "patient": f"P{p}",
                    "response": "non_responder" if nr else "responder",
                    "cell_state": state,
                }
            )
    table = stats.compare_composition(stats.patient_composition(pd.DataFrame(rows)))
    found = decided_composition(table, alpha=0.05, skipped={})
    by_name = {f.program: f for f in found}
    tex_term = by_name["fraction_Tex_term"]
    assert (
        tex_term.verdict == "up" and tex_term.n_groups == "6 non-responder vs 6 responder patients"
    )
    assert stats.COMPOSITION_CAVEAT not in tex_term.reason  # said once on the page, not per row
    assert "Tex-term share" in tex_term.sentence and "higher in non-responders" in tex_term.sentence
    assert by_name["log_ratio_tpex_to_tex_term"].verdict == "down"
    # the composition measures are not taken for programs of the program x comparison grid
    programs = {f.program for f in decided({"response": table}, alpha=0.05, skipped={})}
    assert not programs & {stats.COMPOSITION_MEASURE, stats.BALANCE_MEASURE}
    # without composition rows: one untested finding with the recorded reason
    none = decided_composition(None, alpha=0.05, skipped={"composition": "no patient labels"})
    assert [(f.verdict, f.reason) for f in none] == [("not tested", "no patient labels")]


def test_an_untestable_composition_row_is_not_tested_not_no_difference():
    from texflow import stats

    rows = [
        {
            "patient": f"P{p}",
            "response": "non_responder" if p % 2 else "responder",
            "cell_state": "Tex_term" if c % 3 else "naive_like",
        }
        for p in range(8)
        for c in range(30)
    ]
    table = stats.compare_composition(stats.patient_composition(pd.DataFrame(rows)))
    by_name = {f.program: f for f in decided_composition(table, alpha=0.05, skipped={})}
    assert by_name["fraction_Tpex"].verdict == "not tested"
    assert "not testable" in by_name["fraction_Tpex"].reason
    assert by_name["log_ratio_tpex_to_tex_term"].verdict == "not tested"


# ----------------------------------------------------------------------------------------------
# "not tested": the true reason, and no numbers of a test that did not run


def _lineage_obs(*, n_patients=6, n_per_patient=60, seed=0):
    rng = np.random.default_rng(seed)
    n = n_patients * n_per_patient
    patient = np.repeat([f"P{i}" for i in range(n_patients)], n_per_patient)
    obs = pd.DataFrame(
        {
            "patient": patient,
            "response": ["responder" if int(p[1:]) % 2 else "non_responder" for p in patient],
            "cell_state": rng.choice(["Tpex", "Tex_int", "Tex_term"], n),
            "ifn_i_core": rng.normal(0, 1, n),
            "lpo_signed": rng.normal(0, 1, n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    return obs


def _state_findings(obs):
    table = stats.compare_states(obs, obs[["ifn_i_core", "lpo_signed"]])
    found = decided({"state": table}, alpha=0.05, skipped={})
    return [f for f in found if f.comparison == "state"]


@pytest.mark.parametrize("absent", ["Tpex", "Tex_term"])
def test_a_comparison_without_cells_of_a_state_says_so_and_counts_no_patients(absent):
    obs = _lineage_obs()
    obs["cell_state"] = obs["cell_state"].replace({absent: "Tex_int"})
    found = _state_findings(obs)
    assert {f.verdict for f in found} == {"not tested"}
    reason = f"no {absent} cell in this dataset (cell_state: "
    assert all(f.reason.startswith(reason) for f in found)
    rows = report_summary.summary_rows(report.DatasetReport(dataset="d", findings=found))
    assert all(math.isnan(row["n_patients"]) and row["groups"] == "" for row in rows)


def test_no_patients_and_one_cell_per_state_is_a_cell_count_not_pseudoreplication():
    """The LCMV demo: no patient labels, 1 Tpex and 1 Tex_term cell."""
    obs = _lineage_obs(n_patients=1).drop(columns=["patient", "response"])
    obs["cell_state"] = "Tex_int"
    obs.iloc[:2, obs.columns.get_loc("cell_state")] = ["Tpex", "Tex_term"]
    for finding in _state_findings(obs):
        assert finding.verdict == "not tested"
        assert finding.reason == (
            "too few cells to test (Tex_term: 1, Tpex: 1; >= 3 of each needed)"
        )
        assert "pseudoreplication" not in finding.untested_sentence + finding.sentence


def test_a_response_row_not_tested_gives_no_patient_numbers():
    row = {
        "state": "exhausted_lineage",
        "program": "x",
        "comparison": "non_responder vs responder",
        "unit": "patients",
        "test": contract.NOT_TESTABLE,
        "effect": np.nan,
        "n_patients": 0,
        "n_responders": 0,
        "n_non_responders": 10,
        "mean_non_responders": 0.2,
        "p_value": np.nan,
        "note": "too few patients to test: 10 non-responder and 0 responder patient(s) with "
        ">= 3 exhausted_lineage cells, >= 2 of each needed",
    }
    found = decided({"response": pd.DataFrame([row])}, alpha=0.05, skipped={})
    (found,) = [f for f in found if f.comparison == "response"]
    assert found.verdict == "not tested" and found.reason == row["note"]
    (summary,) = report_summary.summary_rows(report.DatasetReport(dataset="d", findings=[found]))
    assert math.isnan(summary["n_patients"]) and summary["groups"] == ""


def test_a_constant_score_is_not_tested_even_with_group_means():
    """Sade-Feldman, tpex in the exhausted lineage: both group means 0, no test. It was shown as
    "no clear difference, Δ = 0" (the effect recomputed from the means)."""
    note = "score (near) constant: 0 in 100% of the 116 cells compared (>= 95%): not testable"
    row = {
        "state": "exhausted_lineage",
        "program": "tpex",
        "comparison": "non_responder vs responder",
        "unit": "patients",
        "test": contract.NOT_TESTABLE,
        "effect": np.nan,
        "n_patients": 0,
        "mean_responders": 0.0,
        "mean_non_responders": 0.0,
        "n_responders": 4,
        "n_non_responders": 9,
        "p_value": np.nan,
        "p_adj": np.nan,
        "note": note,
    }
    found = decided({"response": pd.DataFrame([row])}, alpha=0.05, skipped={})
    (found,) = [f for f in found if f.comparison == "response"]
    assert found.verdict == "not tested" and found.reason == note and math.isnan(found.effect)


def test_a_missing_comparison_never_borrows_an_unrelated_skip():
    skipped = {"states.mait": "no gene of program mait is in the data: not used"}
    found = decided(
        {"state": None, "trajectory": None}, alpha=0.05, skipped=skipped, programs=["ifn_i_core"]
    )
    assert all("mait" not in f.reason for f in found)


def test_the_paired_figure_box_quotes_no_unrelated_skip(tmp_path):
    adata = fake_adata(n_cells=200, with_tpex=False)
    skipped = {"states.mait": "no gene of program mait is in the data: not used"}
    figure = report_figures._draw(
        plots.paired_states,
        adata,
        tmp_path / "paired_tpex_texterm.png",
        ["png"],
        label="Tpex vs Tex-term per patient",
        caption="",
        section="programs",
        skipped=skipped,
        scores=["score_ifn_i_core"],
    )
    assert figure.path is None and "Tpex" in figure.missing and "mait" not in figure.missing


def test_the_paired_figure_without_patients_says_so_with_the_cell_counts(tmp_path):
    """LCMV: no patient labels. It said 'no patient has at least 3 cells in both states'."""
    adata = fake_adata(n_cells=200)
    adata.obs["patient"] = pd.Categorical([np.nan] * adata.n_obs, categories=["P1"])
    n = adata.obs["state"].astype(str).value_counts()
    with pytest.raises(plots.FigureSkipped) as why:
        plots.paired_states(adata, scores=["score_ifn_i_core"], path=tmp_path / "x.png")
    assert str(why.value) == (
        f"no patient labels in this dataset ({n['Tpex']} Tpex and "
        f"{n['Tex_term']} Tex_term cells): one line per patient needs them"
    )


def test_a_page_with_nothing_tested_is_not_introduced_as_tested():
    untested = pd.DataFrame(
        {
            "program": ["ifn_i_core", "lpo_signed", "tpex"],
            "comparison": "Tex_term vs Tpex",
            "unit": "patients",
            "test": contract.NOT_TESTABLE,
            "effect": np.nan,
            "p_value": np.nan,
            "note": "no Tpex cell in this dataset (cell_state: 0 Tpex, 50 Tex_term)",
        }
    )
    found = decided({"state": untested}, alpha=0.05, skipped={})
    page = report.render_dataset(
        report.DatasetReport(
            dataset="d", findings=found, headline_programs=["ifn_i_core", "lpo_signed"]
        )
    )
    assert "All programs tested" not in page
    assert "No program could be tested in this dataset" in page


# ----------------------------------------------------------------------------------------------
# a verdict on a program texflow does not trust carries its coverage


def test_every_verdict_on_an_untrusted_program_carries_its_coverage():
    caveat = (
        "lpo_drivers: 3 of 16 genes measured, not trusted; "
        "lpo_suppressors: 5 of 16 genes measured, not trusted"
    )
    rows = []
    for program, coverage in [("lpo_signed", caveat), ("ifn_i_core", "")]:
        rows.append(
            {
                "state": "exhausted_lineage",
                "program": program,
                "comparison": "non_responder vs responder",
                "unit": "patients",
                "test": "mann_whitney_patient_means",
                "effect": 0.02,
                "effect_type": "difference_of_patient_means",
                "mean_responders": 0.01,
                "mean_non_responders": 0.03,
                "n_patients": 19,
                "n_responders": 9,
                "n_non_responders": 10,
                "p_value": 0.044,
                "p_adj": 0.044,
                "note": "",
                "coverage": coverage,
            }
        )
    found = decided({"response": pd.DataFrame(rows)}, alpha=0.05, skipped={})
    found = {f.program: f for f in found if f.comparison == "response"}
    lpo = found["lpo_signed"]
    assert lpo.verdict == "up" and lpo.coverage == caveat
    assert lpo.sentence.endswith(f"q = 0.044) — {caveat}.")
    assert caveat in lpo.short_evidence and lpo.sentence.count(caveat) == 1
    assert found["ifn_i_core"].coverage == "" and "not trusted" not in found["ifn_i_core"].sentence
    (summary,) = report_summary.summary_rows(report.DatasetReport(dataset="d", findings=[lpo]))
    assert summary["coverage"] == caveat
    page = report.render_dataset(
        report.DatasetReport(
            dataset="d", findings=list(found.values()), headline_programs=["lpo_signed"]
        )
    )
    assert page.count(caveat) >= 2  # the sentence of the answer and its cell in the table


# ----------------------------------------------------------------------------------------------
# colours: one per state on every page, none repeated within a figure


def _drawn(monkeypatch, function, *args, **kwargs):
    """The matplotlib figure `function` draws (kept open instead of saved)."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, formats: figures.append(fig) or [])
    function(*args, **kwargs)
    (figure,) = figures
    return figure


def _legend_colours(legend) -> dict[str, str]:
    from matplotlib.colors import to_hex

    colours = {}
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
        label = re.sub(r" \(\d+\)$", "", text.get_text())
        colours[label] = to_hex(np.atleast_2d(handle.get_facecolor())[0])  # points or patch
    return colours


def test_state_colours_are_identical_across_datasets(monkeypatch, tmp_path):
    from texflow.plotting import colours

    with_tpex = fake_adata(n_cells=300, with_tpex=True)  # Tpex, Tex_term, effector
    without = fake_adata(n_cells=300, with_tpex=False, seed=1)  # Tex_term, effector, ambiguous
    seen: dict[str, set[str]] = {}
    for adata in (with_tpex, without):
        umap = _drawn(
            monkeypatch, plots.umap, adata, color="state", path=tmp_path / "u.png", title="t"
        )
        composition = _drawn(monkeypatch, plots.state_composition, adata, path=tmp_path / "c.png")
        for legend in (umap.axes[0].get_legend(), composition.legends[0]):
            for state, colour in _legend_colours(legend).items():
                seen.setdefault(state, set()).add(colour)
    assert set(seen) >= {"Tpex", "Tex_term", "effector", "ambiguous"}
    assert all(len(found) == 1 for found in seen.values()), seen
    assert seen["Tex_term"] == {colours.STATE_COLOURS["Tex_term"].lower()}
    assert seen["ambiguous"] == {colours.STATE_COLOURS["ambiguous"].lower()}
    lineage = {colours.state_colour(s) for s in ("Tpex", "Tex_int", "Tex_term")}
    assert len(lineage) == 3


def test_patient_colours_do_not_repeat_within_a_figure(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    from texflow.plotting import clusters

    adata = fake_adata(n_cells=600)
    patients = [f"P{i + 1}" for i in range(23)]
    adata.obs["patient"] = pd.Categorical(np.array(patients)[np.arange(adata.n_obs) % 23])
    umap = _drawn(
        monkeypatch, plots.umap, adata, color="patient", path=tmp_path / "p.png", title="t"
    )
    found = _legend_colours(umap.axes[0].get_legend())
    assert len(found) == 23 and len(set(found.values())) == 23
    fig, ax = plt.subplots()
    clusters._scatter_categories(
        ax, adata.obsm["X_umap"], adata.obs["patient"], "patients", on_data=False, column="patient"
    )
    drawn = [to_hex(c.get_facecolor()[0]) for c in ax.collections]
    plt.close(fig)
    assert len(drawn) == 23 and len(set(drawn)) == 23


def test_only_a_simulated_dataset_gets_the_banner_and_the_truth_section(built):
    _root, pages = built
    real = report.render_dataset(pages["full"])
    assert 'id="truth"' not in real and "Simulated data, not a real cohort" not in real
    simulated = pages["full"]
    simulated.simulated = True
    simulated.tables.append(
        report.Table(
            title=report.STAGE_TABLES["truth_recovery.tsv"][1],
            frame=pd.DataFrame({"check": ["Tpex per cell: recall"], "value": [0.9]}),
            n_rows=1,
            section="truth",
        )
    )
    text = report.render_dataset(simulated)
    simulated.simulated = False
    simulated.tables.pop()
    assert text.index("Simulated data, not a real cohort") < text.index('id="answer"')
    assert text.index('id="answer"') < text.index('id="truth"') < text.index('id="qc"')
    assert "Tpex per cell: recall" in text
    assert report_summary.summary_rows(pages["full"])[0]["simulated"] is False


def test_the_pooled_response_caveat_is_said_once_where_a_response_row_was_tested(built):
    root, _pages = built
    caveat = stats.POOLED_RESPONSE_CAVEAT
    full = (root / "results/full/report.html").read_text()
    bare = (root / "results/bare/report.html").read_text()
    assert full.count(caveat) == 1
    assert caveat not in bare  # no response labels: nothing pooled was tested


# ----------------------------------------------------------------------------------------------
# layout: tables readable at 1400 px, figures legible where shown, no noise (issue 19, 4/5/7)


def test_wide_tables_show_their_decisive_columns_first():
    from texflow.report_tables import arrange

    gating = pd.DataFrame(
        {
            "cluster": ["2"],
            "n_cells": [79],
            **{f"mean_score_{c}": [0.1] for c in "abcdefg"},
            "frac_cd8": [0.9],
            "decision": ["CD8"],
            "reason": ["cd8_t highest"],
            "n_vetoed": [6],
        }
    )
    html = str(report_html.table_html(arrange("gating.tsv", gating)))
    header = re.findall(r"<th>([^<]+)</th>", html)
    assert header[:5] == ["cluster", "n_cells", "decision", "n_vetoed", "reason"]
    assert header[5:] == [c for c in gating.columns if c not in header[:5]]  # the rest as written
    assert '<table class="wide">' in html  # many columns: the smaller font
    states = pd.DataFrame(
        {
            "cluster": ["0"],
            "n_cells": [91],
            "state": ["Tex_term"],
            "confidence": [0.6],
            **{f"z_{c}": [0.1] for c in "abcdefgh"},
            "markers_up": ["HAVCR2 2.5 vs 1.1"],
        }
    )
    html = str(report_html.table_html(arrange("cluster_states.tsv", states)))
    header = re.findall(r"<th>([^<]+)</th>", html)
    assert header.index("markers_up") == 4
    # p, q and the note of a test before its bookkeeping columns
    tests = pd.DataFrame(
        {
            "state": ["all_cd8"],
            "program": ["ifn_i_core"],
            "comparison": ["nr vs r"],
            "unit": ["patients"],
            "test": ["mann_whitney"],
            "effect": [0.1],
            "effect_type": ["d"],
            "p_value": [0.2],
            "p_adj": [0.4],
            "note": ["fine"],
        }
    )
    first = list(arrange("response_comparison.tsv", tests).columns[:6])
    assert first == ["state", "program", "effect", "p_value", "p_adj", "note"]


def test_a_test_table_opens_with_the_rows_that_have_results():
    from texflow.report_tables import arrange

    table = pd.DataFrame(
        {
            "state": ["Tpex", "Tex_int", "Tex_term", "all_cd8"],
            "program": "ifn_i_core",
            "test": ["not_testable", "not_testable", "mann_whitney", "mann_whitney"],
            "p_value": [np.nan, np.nan, 0.03, 0.5],
            "note": ["no Tpex cell", "no Tex_int cell", "", ""],
        }
    )
    shown = list(arrange("response_comparison.tsv", table)["state"])
    assert shown == ["Tex_term", "all_cd8", "Tpex", "Tex_int"]
    # not a table of tests: the stage's order
    assert list(arrange("gating.tsv", table)["state"]) == list(table["state"])


def test_table_cells_wrap_long_text_and_keep_short_text_on_one_line():
    frame = pd.DataFrame(
        {
            "comparison": ["Tex_term vs Tpex"],
            "note": ["no Tpex cell in this dataset " * 3],
            "missing": [",".join(f"GENE{i}" for i in range(60))],
        }
    )
    html = str(report_html.table_html(frame))
    assert '<td class="t s">Tex_term vs Tpex</td>' in html  # nowrap: rows no taller than their note
    assert '<td class="t">no Tpex cell' in html  # wraps
    assert 'title="GENE0,GENE1' in html and "…</td>" in html  # a gene list cut, all of it on hover
    assert "<table>" in html  # three columns: the page's font
    css = (report_html.TEMPLATES / "report.css").read_text()
    assert "td.t.s { white-space: nowrap" in css and "position: sticky; left: 0" in css


def test_row_counts_are_worded_for_one_row_and_a_link_only_table():
    one = report._link_only_caption(pd.DataFrame({"program": ["a"], "fit": [1.0]}))
    assert one == "1 row: the curves drawn in the trend figures."
    skipped = pd.DataFrame(
        {"program": [np.nan], "pseudotime": [np.nan], "note": ["skipped: too few Tpex cells"]}
    )
    assert report._link_only_caption(skipped) == "No curves: too few Tpex cells."


def test_page_wording_and_not_run_figures(tmp_path):
    out = fake_results(tmp_path, "noqc", with_tpex=False)
    notes = (
        "not run: qc.mito: no MT- genes; not run: qc.doublets: value_type is log_tpm, not counts"
    )
    pd.DataFrame(
        {
            "sample": ["S1", "S2", "(all)"],
            "cells_in": [40, 30, 70],
            "doublets_scored": [np.nan, np.nan, np.nan],
            "notes": ["", "", notes],
        },
    ).to_csv(out / "tables/qc_summary.tsv", sep="\t", index=False, na_rep="NA")
    pd.DataFrame({"program": [np.nan], "fit": [np.nan], "note": ["skipped: no pseudotime"]}).to_csv(
        out / "tables/trends.tsv", sep="\t", index=False, na_rep="NA"
    )
    final = ad.read_h5ad(out / "final.h5ad")  # the QC stage's skip record, as it writes it
    final.uns["texflow"]["skipped"][contract.SKIP_DOUBLETS] = "value_type is log_tpm, not counts"
    final.write_h5ad(out / "final.h5ad")
    for stem in ("qc_doublets", "pseudotime"):  # the stage's placeholder images
        placeholder = (out / "figures/qc_total_counts.png").read_bytes()
        (out / "figures" / f"{stem}.png").write_bytes(placeholder)
    page = report.collect(out, dataset="noqc", **declared(out))
    missing = {f.title: f.missing for f in page.figures if f.missing}
    why = "doublet detection did not run: value_type is log_tpm, not counts"
    assert missing["QC: doublet scores"] == why
    assert missing["Pseudotime"].startswith(
        "the trajectory was not run: no cluster was labelled Tpex"
    )
    stems = {f.path.stem for f in page.figures if f.path is not None}
    assert not stems & {"qc_doublets", "pseudotime"}
    text = report.render_dataset(page)
    assert "First 0 of" not in text and "1 rows" not in text
    assert "No curves: no pseudotime." in text


def test_a_wide_png_spans_the_page(tmp_path):
    import matplotlib.pyplot as plt

    for name, width in (("narrow", 6), ("umap_clusters", 15)):
        fig = plt.figure(figsize=(width, 3))
        fig.savefig(tmp_path / f"{name}.png", dpi=100)
        plt.close(fig)
    assert not report_figures.Figure(title="UMAP by state", path=tmp_path / "narrow.png").wide
    assert report_figures.Figure(title="Umap clusters", path=tmp_path / "umap_clusters.png").wide
    assert report_figures.Figure(
        title="State composition per patient", path=tmp_path / "narrow.png"
    ).wide
    assert not report_figures.Figure(
        title="State composition per patient", missing="no patients"
    ).wide


def test_constant_and_untested_programs_get_no_score_umap_and_no_panel(tmp_path):
    adata = fake_adata()
    adata.obs["score_mait"] = 0.0  # no gene of the program measured: 0 in every cell
    adata.obs["score_nk"] = np.linspace(0, 1, adata.n_obs)  # a gating signature, never compared
    adata.obs["score_lpo_drivers"] = 0.0  # a compared program, constant
    figures = report_figures.draw_figures(
        adata,
        outdir=tmp_path,
        tested=["ifn_i_core"],
        programs=["ifn_i_core", "lpo_signed", "lpo_drivers", "tpex"],
    )
    drawn = {f.path.stem: f for f in figures if f.path is not None}
    assert {"umap_score_ifn_i_core", "umap_score_lpo_signed", "umap_score_tpex"} <= set(drawn)
    assert not {"umap_score_mait", "umap_score_nk", "umap_score_lpo_drivers"} & set(drawn)
    # said once
    (said,) = [f.missing for f in figures if f.title == "Score UMAPs of the other programs"]
    assert "the same value in every cell, nothing to colour by: LPO drivers" in said
    assert "2 gating and state signatures" in said and said.endswith(": mait, nk")
    # the caption says "tests" only for a program that was tested
    assert "the tests use per-patient summaries" in drawn["umap_score_ifn_i_core"].caption
    assert "not tested in this dataset" in drawn["umap_score_lpo_signed"].caption
    # the per-patient grids: one panel per drawn program (3), not per score column (6)
    import matplotlib.image as mpimg

    width = mpimg.imread(tmp_path / "response_groups.png").shape[1]
    assert width < 1600  # 3 panels in a row, not 4 columns of 6 scores
    assert not list(tmp_path.glob("umap_score_nk.*"))


def test_snakemake_report_captions_say_what_a_placeholder_is():
    """`snakemake --report` captions are static: they must not describe a placeholder image as
    a fit, nor promise panels for QC criteria that may not run; each renders as Snakemake does."""
    import jinja2
    from docutils.core import publish_parts

    folder = report_html.TEMPLATES.parents[1] / "report"
    captions = {path.stem: path.read_text() for path in folder.glob("*.rst")}
    for stem in ("trend_figures", "pseudotime"):
        assert "placeholder" in captions[stem], stem
    assert "Only where the trajectory ran" in captions["trend_figures"]
    assert "one panel per criterion that ran" in captions["qc_metrics"]
    assert "Panels of criteria that were not run" not in captions["qc_metrics"]
    assert "is then one line of text" in captions["qc_doublets"]
    assert "not drawn" in captions["report_figures"]

    snakemake = {"wildcards": {"dataset": "demo"}}  # what the captions read of it
    for stem, text in captions.items():
        rendered = jinja2.Environment().from_string(text).render(snakemake=snakemake)
        assert publish_parts(rendered, writer_name="html")["body"].strip(), stem


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(str(path).encode()).hexdigest()


def test_links_carry_where_snakemake_report_zip_stores_the_file(built):
    """`snakemake --report x.zip` stores each report item in data/raw/<sha256 of its path>/; the
    links of the pages carry that id (a script follows it inside the zip), and links to files the
    zip does not hold are marked so."""
    root, _ = built
    results = root / "results"
    page = (results / "full/report.html").read_text(encoding="utf-8")
    gating = results / "full/tables/gating.tsv"
    assert f'<a href="tables/gating.tsv" data-report-id="{_sha(gating)}">' in page
    assert re.search(r'<a href="[^"]*manifest.tsv" data-local="1">', page)
    assert "data/raw" in page and "data-report-id" in page  # the script
    headlines = [
        report_summary.headline_only(
            d, dataset_dir=results / d, findings=results / d / "tables/findings.tsv"
        )
        for d in ("full", "bare")
    ]
    report_summary.write_summary(
        headlines,
        tsv=results / "summary.tsv",
        html_path=results / "summary.html",
        report_links={d: results / d / "report.html" for d in ("full", "bare")},
    )
    text = (results / "summary.html").read_text(encoding="utf-8")
    page_id = _sha(results / "full/report.html")
    assert f'<a href="full/report.html" data-report-id="{page_id}">' in text
    assert f'<a href="summary.tsv" data-report-id="{_sha(results / "summary.tsv")}">' in text


def test_cluster_umap_panels_are_drawn_page_wide(tmp_path):
    """The stage's cluster UMAPs (clusters + metadata) are drawn >= 1200 px, so the page shows
    them across its width with legible legends, and not in a ~470 px grid column."""
    from PIL import Image
    from texflow.plotting import clusters as cluster_plots

    adata = fake_adata()
    cluster_plots.umap_panels(adata[:, :0].copy(), tmp_path / "umap_clusters.png")
    with Image.open(tmp_path / "umap_clusters.png") as image:
        assert image.width >= report_figures.WIDE_FIGURE_PIXELS
    assert report_figures.Figure(title="x", path=tmp_path / "umap_clusters.png").wide


# ----------------------------------------------------------------------------------------------
# issue 19 item 8: what a computational immunologist expects on the page


def test_score_distributions_one_point_per_patient_and_the_left_out_counted(monkeypatch):
    from matplotlib.colors import to_hex

    adata = fake_adata(n_cells=600)
    # P6 keeps 2 Tpex cells: below min_cells, no point there, and the figure says so
    tpex_p6 = np.flatnonzero(
        (adata.obs["patient"] == "P6").to_numpy() & (adata.obs["state"] == "Tpex").to_numpy()
    )
    adata.obs.loc[adata.obs_names[tpex_p6[2:]], "state"] = "effector"
    fig = _drawn(
        monkeypatch,
        plots.score_distributions,
        adata,
        scores=["score_ifn_i_core", "score_lpo_signed"],
        path="unused.png",
        min_cells=3,
    )
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert (
        labels[0].startswith("Tpex")
        and "5 patients" in labels[0]
        and "(1 with <3 cells" in labels[0]
    )
    assert (
        labels[-1].startswith("all CD8")
        and "600 cells" in labels[-1]
        and "6 patients" in labels[-1]
    )
    points = [c for c in ax.collections if len(c.get_offsets())]
    assert [len(c.get_offsets()) for c in points] == [5, 6, 6]  # Tpex, Tex_term, all CD8
    # each point is that patient's mean, coloured by its response
    means = (
        adata.obs[adata.obs["state"] == "Tex_term"]
        .groupby("patient", observed=True)["score_ifn_i_core"]
        .mean()
    )
    assert sorted(points[1].get_offsets()[:, 1]) == pytest.approx(sorted(means))
    colours = {to_hex(c) for c in points[1].get_facecolors()}
    assert colours == {"#0072b2", "#d55e00"}


def test_score_distributions_without_patients_use_the_sample_and_say_so(monkeypatch):
    adata = fake_adata(n_cells=300, with_response=False)
    adata.obs["patient"] = np.nan
    fig = _drawn(
        monkeypatch,
        plots.score_distributions,
        adata,
        scores=["score_ifn_i_core"],
        path="unused.png",
    )
    assert "samples are not patients" in fig._suptitle.get_text()
    assert "6 samples" in fig.axes[0].get_xticklabels()[-1].get_text()


def test_clusters_that_are_the_samples_are_flagged_and_mixed_ones_are_not():
    from texflow import batch_check

    rng = np.random.default_rng(0)
    sample = np.repeat(["rep1", "rep2"], 50)
    follows = pd.DataFrame({"sample": sample, "cluster": np.where(sample == "rep1", "0", "1")})
    result = batch_check.cluster_sample_association(follows)
    assert result["warn"] and result["ami"] == pytest.approx(1.0) and result["max_share"] == 1.0
    assert result["n_dominated"] == 2 and result["cramers_v"] > 0.9
    mixed = pd.DataFrame({"sample": sample, "cluster": rng.choice(["0", "1", "2"], 100)})
    assert not batch_check.cluster_sample_association(mixed)["warn"]
    assert batch_check.cluster_sample_association(follows.assign(sample="rep1")) is None
    sentence = batch_check.cluster_sample_sentence(
        result, batch_correction=False, has_patients=False, silhouette=0.30
    )
    assert sentence.startswith("Warning: the clusters follow the samples")
    assert "silhouette 0.30, batch correction off" in sentence
    assert "cluster.batch_correction: true" in sentence and "here sample" in sentence


def test_the_clustering_section_warns_when_clusters_follow_samples(tmp_path):
    out = fake_results(tmp_path, "reps", with_response=False)
    adata = report.ad.read_h5ad(out / "final.h5ad")
    adata.obs["patient"] = np.nan
    adata.obs["sample"] = np.where(adata.obs["cluster"].astype(int) < 3, "LCMV1", "LCMV2")
    adata.uns["texflow"]["params"]["cluster"]["batch_correction"] = False
    adata.write_h5ad(out / "final.h5ad")
    pd.DataFrame(
        {"resolution": [1.0], "n_clusters": [6], "silhouette": [0.3], "chosen": [True]}
    ).to_csv(out / "tables" / "resolution_sweep.tsv", sep="\t", index=False)
    page = report.collect(out, dataset="reps", **declared(out))
    ((text, warning),) = page.notes["cluster"]
    assert warning and "silhouette 0.30" in text and "batch correction off" in text
    report.write_dataset_report(page, out / "report.html")
    html = (out / "report.html").read_text(encoding="utf-8")
    clustering = html[html.index('<section id="cluster">') : html.index('<section id="states">')]
    assert '<p class="warning">Warning: the clusters follow the samples' in clustering
    # no patients: the composition figure per sample stands in for the per-patient one
    figure = next(f for f in page.figures if f.title == "States per sample (composition)")
    assert figure.path is not None and figure.path.is_file() and figure.section == "states"


def test_composition_per_tissue_only_where_tissues_are_mixed(monkeypatch, tmp_path):
    adata = fake_adata(n_cells=300)
    drawn = {f.title for f in report_figures.draw_figures(adata, outdir=tmp_path / "one")}
    assert "States per tissue (composition)" not in drawn
    assert "States per sample (composition)" not in drawn  # patients are known
    adata.obs["tissue"] = np.where(np.arange(adata.n_obs) % 3 == 0, "blood", "tumour")
    drawn = report_figures.draw_figures(adata, outdir=tmp_path / "two")
    figure = next(f for f in drawn if f.title == "States per tissue (composition)")
    assert figure.path is not None and figure.path.is_file()
    fig = _drawn(
        monkeypatch, plots.composition_by, adata, by="tissue", path="unused.png", title="t"
    )
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[0].startswith("blood\n100 cells\n") and ticks[1].startswith("tumour\n200 cells\n")


def test_response_panels_carry_q_and_n_read_from_the_table(monkeypatch):
    adata = fake_adata(n_cells=300)
    table = pd.DataFrame(
        [
            {
                "state": "all_cd8",
                "program": "ifn_i_core",
                "p_value": 0.004,
                "p_adj": 0.0123,
                "n_responders": 3,
                "n_non_responders": 2,
                "note": "",
            },
            {
                "state": "exhausted_lineage",
                "program": "ifn_i_core",
                "p_value": 0.2,
                "p_adj": 0.4,
                "n_responders": 3,
                "n_non_responders": 3,
                "note": "",
            },
            {
                "state": "all_cd8",
                "program": "lpo_signed",
                "p_value": np.nan,
                "p_adj": np.nan,
                "n_responders": 1,
                "n_non_responders": 3,
                "note": "too few patients to test: 1 responder (needs 2)",
            },
        ]
    )
    fig = _drawn(
        monkeypatch,
        plots.response_groups,
        adata,
        scores=["score_ifn_i_core", "score_lpo_signed"],
        path="unused.png",
        table=table,
    )
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_visible()]
    # the table's numbers, not a recomputation (the 2 NR are the table's, the figure has 3)
    assert "q = 0.012; n = 3 R vs 2 NR" in titles[0]
    assert "not tested: too few patients to test: 1 responder" in titles[1]
    fig = _drawn(
        monkeypatch,
        plots.response_groups,
        adata,
        scores=["score_ifn_i_core"],
        path="unused.png",
        table=table,
        lineage_only=True,
    )
    assert "q = 0.4; n = 3 R vs 3 NR" in fig.axes[0].get_title()


HEATMAP_GENES = {"ifn_i_core": ["ISG15", "MX1", "IFI6"], "lpo_drivers": ["ACSL4"]}


def _with_program_genes(adata):
    """`fake_adata` whose first genes are named after genes of the heatmap's programs."""
    names = [g for genes in HEATMAP_GENES.values() for g in genes]
    adata.var_names = names + list(adata.var_names[len(names) :])
    return adata


def _gene_means_table(adata):
    programs = {
        name: GeneProgram(name=name, up=tuple(genes), down=())
        for name, genes in {
            **HEATMAP_GENES,
            "ifn_i_core": ["ISG15", "MX1", "IFI6", "NOT_A_GENE"],
        }.items()
    }
    return expression.program_gene_means(adata, programs=programs)


def test_program_gene_heatmap_is_drawn_from_the_gene_means_table(monkeypatch):
    adata = _with_program_genes(fake_adata(n_cells=300))
    table = _gene_means_table(adata)
    means, _ = expression.state_gene_means(adata, genes=["ISG15", "MX1", "IFI6"])
    fig = _drawn(
        monkeypatch,
        plots.program_gene_heatmap,
        table,
        path="unused.png",
        programs=report_figures.HEATMAP_PROGRAMS,
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == sorted(
        ["ISG15", "MX1", "IFI6"], key=lambda g: -means.loc[g].std()
    ) + ["ACSL4"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    counts = adata.obs["state"].value_counts()
    assert labels == [f"{s} ({counts[s]})" for s in ["Tpex", "Tex_term", "effector"]]
    assert "3 of 3 genes" in " ".join(t.get_text() for t in ax.texts)  # the absent gene left out
    # the z-scores are those of the per-state means
    z = means.loc[ax.get_xticklabels()[0].get_text(), ["Tpex", "Tex_term", "effector"]]
    expected = ((z - z.mean()) / z.std()).to_numpy()
    assert np.asarray(ax.images[0].get_array())[:, 0] == pytest.approx(expected)


def test_the_report_never_reads_the_matrix(tmp_path):
    """final.h5ad without X or layers: the page, with its heatmap, is drawn all the same."""
    out = fake_results(tmp_path, "nomatrix")
    final = ad.read_h5ad(out / "final.h5ad")
    ad.AnnData(obs=final.obs, var=final.var, obsm=dict(final.obsm), uns=final.uns).write_h5ad(
        out / "final.h5ad"
    )
    inputs = declared(out)
    page = report.collect(out, dataset="nomatrix", **inputs)
    heatmap = next(f for f in page.figures if f.title == "Program genes across states")
    assert not heatmap.missing and heatmap.path.is_file()
    assert "program_gene_means.tsv" not in {p.name for p in inputs["tables"]}  # not a page table
    # without the table, no heatmap (and no matrix read in its place)
    inputs["gene_means"].unlink()
    page = report.collect(out, dataset="nomatrix", **inputs)
    assert not [f for f in page.figures if f.title == "Program genes across states"]


def test_an_axis_finding_shows_rho_not_a_difference():
    finding = FindingText(program="ifn_i_core", comparison="axis")
    finding.effect, finding.n_patients, finding.n_concordant = 0.55, 12, 12
    assert finding.short_evidence.startswith("ρ = 0.55")
