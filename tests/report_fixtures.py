"""A hand-made `results/{dataset}/` tree for the report tests (no pipeline run needed).

`fake_results(root, dataset, ...)` writes what the stages write: `final.h5ad` with the contract's
obs columns, a UMAP and `uns["texflow"]`, the tables the report reads, a few stage figures and
`summary.json`. The numbers are built so that the truth is known: IFN-I rises with pseudotime
and is higher in non-responders; LPO does neither.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
from texflow import expression, findings, signatures
from texflow.contract import FINDINGS_TABLE
from texflow.stats import compare_states

#: program_gene_means.tsv of the programs stage, the heatmap's table (the report's own input)
GENE_MEANS_TABLE = "program_gene_means.tsv"
#: Genes of `fake_results`' final.h5ad named after genes of the heatmap's programs.
PROGRAM_GENES = ("ISG15", "MX1", "IFI6", "ACSL4", "TFRC", "GPX4")

PATIENTS = ["P1", "P2", "P3", "P4", "P5", "P6"]
RESPONSE = {
    "P1": "responder",
    "P2": "responder",
    "P3": "responder",
    "P4": "non_responder",
    "P5": "non_responder",
    "P6": "non_responder",
}


def fake_adata(
    *, n_cells: int = 600, with_response: bool = True, with_tpex: bool = True, seed: int = 0
) -> ad.AnnData:
    """A small final.h5ad-like AnnData with known structure (see module docstring)."""
    rng = np.random.default_rng(seed)
    patient = rng.choice(PATIENTS, n_cells)
    states = (
        ["Tpex", "Tex_term", "effector"] if with_tpex else ["Tex_term", "effector", "ambiguous"]
    )
    state = rng.choice(states, n_cells, p=[0.35, 0.45, 0.2])
    lineage = np.isin(state, ["Tpex", "Tex_term"]) if with_tpex else np.zeros(n_cells, bool)
    pseudotime = np.where(
        state == "Tpex", rng.uniform(0, 0.5, n_cells), rng.uniform(0.4, 1, n_cells)
    )
    pseudotime = np.where(lineage, pseudotime, np.nan)
    non_responder = np.array([RESPONSE[p] == "non_responder" for p in patient])
    ifn = (
        0.5 * np.nan_to_num(pseudotime, nan=0.5) + 0.3 * non_responder + rng.normal(0, 0.1, n_cells)
    )
    lpo = rng.normal(0, 0.1, n_cells)
    centres = {"Tpex": (0, 0), "Tex_term": (6, 1), "effector": (2, 6), "ambiguous": (-4, 5)}
    umap = np.array([centres[s] for s in state]) + rng.normal(0, 1.0, (n_cells, 2))
    obs = pd.DataFrame(
        {
            "sample": [f"{p}_pre" for p in patient],
            "patient": pd.Categorical(patient),
            "response": pd.Categorical([RESPONSE[p] if with_response else np.nan for p in patient]),
            "qc_pass": True,
            "is_cd8": True,
            "cluster": pd.Categorical(
                [str(states.index(s) * 2 + int(rng.integers(2))) for s in state]
            ),
            "state": pd.Categorical(state, categories=states),
            "state_confidence": rng.uniform(0.2, 1, n_cells),
            "pseudotime": pseudotime,
            "score_ifn_i_core": ifn,
            "score_lpo_signed": lpo,
            "score_tpex": (state == "Tpex") + rng.normal(0, 0.2, n_cells),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(
        sp.random(n_cells, 20, density=0.1, format="csr", dtype=np.float32, random_state=seed),
        obs=obs,
    )
    adata.var_names = [f"G{i}" for i in range(20)]
    adata.obsm["X_umap"] = umap
    skipped = (
        {}
        if with_response
        else {"response_comparison": "no response labels in this dataset's metadata"}
    )
    if not with_tpex:
        skipped["trajectory"] = (
            "no cluster was labelled Tpex with enough confidence: no root for the pseudotime"
        )
    adata.uns["texflow"] = {
        "dataset": "fake",
        "organism": "human",
        "value_type": "counts",
        "x": "lognorm",
        "sources": {
            "matrix": {
                "url": "https://example.org/GSE0_matrix.txt.gz",
                "sha256": "ab" * 32,
                "bytes": 123456,
            }
        },
        "versions": {"scanpy": "1.12.4", "anndata": "0.13.4"},
        "params": {
            "qc": {"n_mads": 5, "max_pct_mito": 20.0},
            "cluster": {"resolution": 1.0, "seed": 0},
        },
        "skipped": skipped,
    }
    return adata


def _png(path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [1, 3, 2])
    ax.set_title(title)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def write_findings(out: Path, *, dataset: str, skipped, alpha: float = 0.05) -> Path:
    """tables/findings.tsv from the tables in `out`, as the programs stage decides it."""
    tables = {
        name: pd.read_csv(out / "tables" / f"{name}.tsv", sep="\t")
        for name in (
            "program_coverage",
            "associations",
            "axis_associations",
            "state_comparison",
            "response_comparison",
        )
        if (out / "tables" / f"{name}.tsv").is_file()
    }
    found = findings.dataset_findings(tables, dataset=dataset, alpha=alpha, skipped=dict(skipped))
    findings.write_findings(found, out / "tables" / FINDINGS_TABLE)
    return out / "tables" / FINDINGS_TABLE


def declared(out: str | Path) -> dict:
    """The inputs the report rule declares, for `report.collect`: findings.tsv, the stage
    tables and the stage figures in `out` (the tests' stand-in for the rule's input lists)."""
    out = Path(out)
    own = (FINDINGS_TABLE, GENE_MEANS_TABLE)
    return {
        "findings": out / "tables" / FINDINGS_TABLE,
        "tables": sorted(p for p in (out / "tables").glob("*.tsv") if p.name not in own),
        "figures": sorted((out / "figures").glob("*.png")),
        "gene_means": out / "tables" / GENE_MEANS_TABLE,
    }


def fake_results(
    root: str | Path, dataset: str = "fake", *, with_response: bool = True, with_tpex: bool = True
) -> Path:
    """Write a fake `root/results/{dataset}/` and
    `root/resources/downloads/{dataset}/manifest.tsv`; return the dataset dir."""
    root = Path(root)
    out = root / "results" / dataset
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    adata = fake_adata(with_response=with_response, with_tpex=with_tpex)
    adata.uns["texflow"]["dataset"] = dataset
    adata.var_names = [*PROGRAM_GENES, *adata.var_names[len(PROGRAM_GENES) :]]
    adata.write_h5ad(out / "final.h5ad")
    # as the programs stage writes it, from the same cells and matrix
    programs = signatures.load_programs(
        "human", names=("ifn_i_core", "lpo_drivers", "lpo_suppressors")
    )
    expression.program_gene_means(adata, programs=programs).to_csv(
        tables / GENE_MEANS_TABLE, sep="\t", index=False
    )
    pd.DataFrame(
        {
            "sample": ["P1_pre", "P2_pre"],
            "n_cells": [120, 98],
            "n_pass": [110, 90],
            "median_genes": [1500.0, 1432.5],
        }
    ).to_csv(tables / "qc_summary.tsv", sep="\t", index=False)
    pd.DataFrame(
        {"cluster": ["0", "1"], "cd8_score": [0.61, 0.12], "is_cd8": [True, False]}
    ).to_csv(tables / "gating.tsv", sep="\t", index=False)
    pd.DataFrame(
        {"cluster": ["0", "2"], "state": ["Tpex", "Tex_term"], "confidence": [0.8, 0.7]}
    ).to_csv(tables / "cluster_states.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "program": ["ifn_i_core", "lpo_signed"],
            "n_genes": [28, 32],
            "n_present": [20, 12],
            "coverage": [0.714, 0.375],
        }
    ).to_csv(tables / "program_coverage.tsv", sep="\t", index=False)
    programs = ["ifn_i_core", "lpo_signed"]
    if with_tpex:
        # the programs stage's format (texflow.stats): IFN-I rises and is higher in Tex_term
        pd.DataFrame(
            {
                "program": programs,
                "unit": "patients",
                "n_permutations": 2000,
                "effect": [0.62, 0.01],
                "effect_type": "spearman_rho_combined",
                "p_value": [0.0005, 0.81],
                "p_adj": [0.001, 0.81],
                "p_value_random_effects": [0.002, 0.7],
                "n_patients": [6, 6],
                "n_patients_positive": [6, 3],
                "n_cells": [480, 480],
                "note": ["", ""],
            }
        ).to_csv(tables / "associations.tsv", sep="\t", index=False, na_rep="NA")
        pd.DataFrame(
            {
                "program": programs,
                "comparison": "Tex_term vs Tpex",
                "unit": "patients",
                "test": "wilcoxon_signed_rank_paired",
                "effect": [0.25, -0.01],
                "effect_type": "mean_paired_difference",
                "effect_standardised": [2.1, -0.1],
                "n_patients": [6, 6],
                "n_cells": [480, 480],
                "p_value": [0.03, 0.9],
                "note": ["", ""],
                "p_adj": [0.06, 0.9],
            }
        ).to_csv(tables / "state_comparison.tsv", sep="\t", index=False, na_rep="NA")
        _png(out / "figures" / "trend_ifn_i_core.png", "trend IFN-I core")
    else:
        # as the programs stage writes it: every row not testable, the reason in numbers
        scores = adata.obs[[f"score_{p}" for p in programs]].rename(columns=lambda c: c[6:])
        compare_states(adata.obs, scores).to_csv(
            tables / "state_comparison.tsv", sep="\t", index=False, na_rep="NA"
        )
        pd.DataFrame(
            {
                "program": programs,
                "unit": "cells",
                "n_permutations": 2000,
                "effect": np.nan,
                "effect_type": "spearman_rho_combined",
                "p_value": np.nan,
                "p_adj": np.nan,
                "p_value_random_effects": np.nan,
                "n_patients": 0,
                "n_patients_positive": 0,
                "n_cells": 0,
                "note": "no pseudotime: trajectory skipped",
            }
        ).to_csv(tables / "associations.tsv", sep="\t", index=False, na_rep="NA")
    if with_response:
        # effect = non-responders - responders, as texflow.stats writes it; one row per state
        rows = []
        for state in ["Tpex", "Tex_term", "exhausted_lineage"]:
            for program, nr, r, p in [
                ("ifn_i_core", 0.6, 0.3, 0.01),
                ("lpo_signed", 0.0, 0.02, 0.7),
            ]:
                rows.append(
                    {
                        "state": state,
                        "program": program,
                        "comparison": "non_responder vs responder",
                        "unit": "patients",
                        "test": "mann_whitney_patient_means",
                        "effect": nr - r,
                        "effect_type": "difference_of_patient_means",
                        "cliffs_delta": 1.0,
                        "hedges_g": 2.0,
                        "mean_responders": r,
                        "mean_non_responders": nr,
                        "n_patients": 6,
                        "n_responders": 3,
                        "n_non_responders": 3,
                        "n_cells": 400,
                        "p_value": p,
                        "p_adj": p,
                        "note": "",
                    }
                )
        pd.DataFrame(rows).to_csv(
            tables / "response_comparison.tsv", sep="\t", index=False, na_rep="NA"
        )
    else:
        pd.DataFrame(
            [
                {
                    "state": "",
                    "program": "",
                    "unit": "",
                    "test": "skipped",
                    "note": "skipped: no response labels in this dataset",
                }
            ]
        ).to_csv(tables / "response_comparison.tsv", sep="\t", index=False, na_rep="NA")
    _png(out / "figures" / "qc_total_counts.png", "qc total counts")
    _png(out / "figures" / "state_markers_dotplot.png", "markers")
    (out / "summary.json").write_text(
        json.dumps({"dataset": dataset, "title": f"Fake dataset {dataset}", "n_cells": adata.n_obs})
    )
    write_findings(out, dataset=dataset, skipped=adata.uns["texflow"].get("skipped", {}))
    manifest = root / "resources" / "downloads" / dataset / "manifest.tsv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "name": ["matrix"],
            "file": ["GSE0_matrix.txt.gz"],
            "sha256": ["ab" * 32],
            "bytes": [123456],
        }
    ).to_csv(manifest, sep="\t", index=False)
    return out
