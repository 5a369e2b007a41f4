"""texflow.resistance_meta: random-effects meta-analysis of the per-dataset resistance DE across
datasets (DerSimonian-Laird), leave-one-dataset-out, the single-dataset fallback (issue 21)."""

import numpy as np
import pandas as pd
import pytest
from texflow import resistance_meta
from texflow.contract import DE_COLUMNS
from texflow.stats import ALL_CD8


def de_table(rows, *, state=ALL_CD8, method="pydeseq2_wald_nb_glm"):
    """A resistance_de.tsv of (gene, log2 fold change, SE) rows, tested."""
    records = [
        {
            "gene": g,
            "state": state,
            "log2_fold_change": lfc,
            "lfc_se": se,
            "statistic": lfc / se,
            "p_value": 0.01,
            "q_value": 0.02,
            "n_non_responders": 3,
            "n_responders": 3,
            "mean_expression": 5.0,
            "method": method,
            "testable": True,
            "reason": "",
        }
        for g, lfc, se in rows
    ]
    return pd.DataFrame(records, columns=DE_COLUMNS)


def hand_dl(y, se):
    """DerSimonian-Laird by hand (Borenstein et al. 2009, ch. 12)."""
    y, v = np.asarray(y, float), np.asarray(se, float) ** 2
    w = 1 / v
    fixed = (w * y).sum() / w.sum()
    q = (w * (y - fixed) ** 2).sum()
    c = w.sum() - (w**2).sum() / w.sum()
    tau2 = max(0.0, (q - (len(y) - 1)) / c)
    w_star = 1 / (v + tau2)
    pooled = (w_star * y).sum() / w_star.sum()
    return pooled, np.sqrt(1 / w_star.sum()), tau2, max(0.0, (q - (len(y) - 1)) / q)


def test_matches_a_hand_computation_of_dersimonian_laird():
    # 3 datasets x 2 genes: A heterogeneous (tau2 > 0), B homogeneous (DL tau2 < 0 -> 0)
    a = [(0.8, 0.2), (1.6, 0.3), (0.1, 0.25)]
    b = [(0.50, 0.2), (0.52, 0.3), (0.49, 0.25)]
    tables = {f"d{i}": de_table([("A", *a[i]), ("B", *b[i])]) for i in range(3)}
    out = resistance_meta.meta_analyse(tables).set_index("gene")
    for gene, rows in (("A", a), ("B", b)):
        pooled, se, tau2, i2 = hand_dl([r[0] for r in rows], [r[1] for r in rows])
        row = out.loc[gene]
        assert row["pooled_log2_fold_change"] == pytest.approx(pooled, rel=1e-9)
        assert row["pooled_se"] == pytest.approx(se, rel=1e-9)
        assert row["tau2"] == pytest.approx(tau2, abs=1e-12)
        assert row["i2"] == pytest.approx(i2, abs=1e-12)
        assert row["ci_low"] == pytest.approx(pooled - 1.959964 * se, rel=1e-6)
        assert row["n_datasets"] == 3
    assert out.loc["A", "tau2"] > 0 and out.loc["B", "tau2"] == 0


def test_consistent_gene_ranks_above_a_gene_planted_in_one_dataset_which_is_flagged():
    rng = np.random.default_rng(0)
    tables = {}
    for i in range(3):
        rows = [("CONSISTENT", 1.0 + 0.1 * i, 0.2), ("ONE_COHORT", 2.0 if i == 0 else 0.0, 0.2)]
        rows += [(f"NULL{j}", rng.normal(0, 0.2), 0.2) for j in range(40)]
        tables[f"cohort{i}"] = de_table(rows)
    out = resistance_meta.meta_analyse(tables).set_index("gene")
    consistent, single = out.loc["CONSISTENT"], out.loc["ONE_COHORT"]
    assert consistent["rank"] == 1 and consistent["rank"] < single["rank"]
    assert consistent["q_value"] < 0.05 and bool(consistent["consistent"])
    assert consistent["n_same_sign"] == 3 and bool(consistent["loo_sign_stable"])
    assert single["q_value"] > 0.05 and not bool(single["consistent"])
    assert bool(single["heterogeneous"]) or bool(single["rests_on_one_dataset"])
    assert not bool(single["loo_sign_stable"]) and "cohort0" in single["loo_critical_datasets"]
    assert single["loo_max_change"] == pytest.approx(single["pooled_log2_fold_change"])


def test_significance_resting_on_one_dataset_is_flagged():
    # two datasets: a strong estimate in one, nothing in the other -> pooled significant only
    # with the first (tau2 small enough), lost without it
    tables = {
        "big": de_table([("G", 1.2, 0.25), *[(f"N{j}", 0.0, 0.3) for j in range(5)]]),
        "small": de_table([("G", 0.6, 0.6), *[(f"N{j}", 0.0, 0.3) for j in range(5)]]),
    }
    row = resistance_meta.meta_analyse(tables).set_index("gene").loc["G"]
    assert row["q_value"] < 0.05
    assert bool(row["rests_on_one_dataset"]) and row["loo_critical_datasets"] == "big"
    assert not bool(row["consistent"])


def test_fewer_than_two_datasets_says_so_and_carries_the_single_ranking():
    labelled = de_table([("G1", 0.5, 0.2), ("G2", 2.0, 0.3)])
    labelled["q_value"] = [0.04, 0.01]
    unlabelled = pd.DataFrame(
        [
            {
                "gene": np.nan,
                "state": ALL_CD8,
                "testable": False,
                "reason": "not testable: no response labels",
                "method": "welch_t_patient_mean_log2",
            }
        ],
        columns=DE_COLUMNS,
    )
    out = resistance_meta.meta_analyse({"one": labelled, "other": unlabelled})
    rows = out.loc[out["state"] == ALL_CD8]
    assert list(rows["gene"]) == ["G2", "G1"]  # the dataset's own q decides
    assert (rows["n_datasets"] == 1).all()
    assert rows["note"].str.contains("no cross-dataset meta-analysis").all()
    assert rows["note"].str.contains("other: not testable: no response labels").all()
    assert rows["method"].str.startswith(resistance_meta.METHOD_SINGLE).all()
    assert not resistance_meta.cross_dataset(out)
    # states no dataset tested get one row saying so
    tpex = out.loc[out["state"] == "Tpex"]
    assert len(tpex) == 1 and "no dataset has tested genes" in tpex["note"].iloc[0]


def test_forest_plot_and_summary_section(tmp_path):
    from texflow import report_summary

    tables = {f"d{i}": de_table([("A", 1.0 + 0.1 * i, 0.2), ("B", 0.1 * i, 0.3)]) for i in range(2)}
    table = resistance_meta.meta_analyse(tables)
    tsv = tmp_path / "resistance_genes.tsv"
    table.to_csv(tsv, sep="\t", index=False)
    png = resistance_meta.forest_plot(table, tables, tmp_path / "figures/forest.png", n_genes=5)
    assert png.read_bytes()[:4] == b"\x89PNG"
    context = report_summary.resistance_context(tsv, png, top_n=5)
    assert context["cross"] and [g["gene"] for g in context["rows"][ALL_CD8]] == ["A", "B"]
    assert context["forest"].startswith("data:image/png;base64,")
    assert "2 genes pooled over 2 datasets" in context["notes"][ALL_CD8]
