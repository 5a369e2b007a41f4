"""Resistance genes across cohorts: the per-cohort DE and the meta-analysis on simulated cohorts.

Issue 21's "Done when": on 5 simulated cohorts x 20 seeds, the planted consistent genes are
recovered with AUPRC >= 0.8 at the meta level, null genes reach q < 0.05 in <= 5 %, and a gene
planted in one cohort only is flagged (heterogeneity or leave-one-dataset-out) and not ranked
as consistent.

For each seed, `texflow.simulation.simulate_cohorts` draws the cohorts (own patients,
depth, batch; planted genes, see that module and benchmarks/README.md for where each number
comes from), then each cohort goes through the resistance stage's functions as
workflow/scripts/resistance.py calls them, with the schema defaults of
workflow/schemas/config/resistance.schema.yaml:

    resistance.pseudobulk -> resistance.differential_expression    (per cohort)
    resistance_meta.meta_analyse                                    (across the cohorts)

twice: on the counts (pydeseq2, the path of 10x data) and on log-normalised values (scanpy
normalize_total + log1p, value_type lognorm: Welch t on per-patient mean log2, the path of
TPM data such as Sade-Feldman's). The per-cell states are the simulator's true states, not
the pipeline's calls (qc -> gate -> cluster -> states for 100 cohorts does not fit in ~15 min on
one core; benchmarks/validate_states.py measures the state calls themselves).

Printed per path and state: AUPRC of the planted consistent genes, ranking every gene by its
meta-analysis p (genes not pooled rank last; one-cohort genes count as negatives; also against
the null genes only), the share of null genes at q < 0.05 (and at p < 0.05, the calibration of
the pooled test), the false discovery proportion, and for the one-cohort genes: how many are
ranked consistent (the table's ``consistent``: significant, homogeneous, not resting on one
dataset, all datasets agreeing in sign), how many are flagged (``heterogeneous`` or
``rests_on_one_dataset``), also among those their own cohort calls at q < 0.05.

    PYTHONPATH=workflow .venv/bin/python benchmarks/validate_resistance.py [--seeds 20]
        [--cohorts 5] [--states all_cd8 Tex_term] [--paths counts lognorm] [--out per_seed.tsv]
        [--genes-out one_cohort_genes.tsv]
"""

from __future__ import annotations

import os

# pydeseq2 fits genes one by one with scipy's L-BFGS-B: BLAS threads only contend (measured:
# 8 s -> 3 s per 16-sample cohort on a shared 2-core machine with one thread)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "workflow"), str(ROOT)]

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.metrics import average_precision_score
from texflow import configuration, resistance, resistance_meta
from texflow.contract import (
    CELL_STATE_KEY,
    CONSISTENT,
    GENE,
    HETEROGENEOUS,
    I2,
    LOO_CRITICAL_DATASETS,
    P_VALUE,
    Q_VALUE,
    RESTS_ON_ONE_DATASET,
    STATE,
)
from texflow.simulation.cohorts import CONSISTENT as PLANTED_CONSISTENT
from texflow.simulation.cohorts import NULL, ONE_COHORT, simulate_cohorts

ALPHA = 0.05
TARGETS = {"auprc": 0.8, "null_q05": 0.05}


def stage_parameters() -> dict:
    """The resistance stage's parameters: config/config.yaml validated against the run schema
    with every default filled, as workflow/rules/common.smk does (texflow.configuration)."""
    config = configuration.load_yaml(ROOT / "config" / "config.yaml")
    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    return configuration.validate(config, schema, what="config/config.yaml")["resistance"]


def cohort_de(adata, *, path: str, states: list[str], params: dict) -> pd.DataFrame:
    """One cohort's resistance_de table, as workflow/scripts/resistance.py makes it."""
    adata = adata.copy()
    adata.obs[CELL_STATE_KEY] = adata.obs["true_state"].astype(str)
    if path == "lognorm":
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    _, matrices = resistance.pseudobulk(
        adata, value_type=path, min_cells=params["min_cells"], min_counts=params["min_counts"]
    )
    return resistance.differential_expression(
        {s: matrices[s] for s in states},
        value_type=path,
        min_patients_per_group=params["min_patients_per_group"],
        min_gene_count=params["min_gene_count"],
        min_gene_total_count=params["min_gene_total_count"],
        min_gene_detected_fraction=params["min_gene_detected_fraction"],
        log_method=params["log_method"],
        n_cpus=1,
    )


def score(
    meta: pd.DataFrame, truth: pd.DataFrame, tables: dict, *, state: str
) -> tuple[dict, list]:
    """The seed's numbers for one state: AUPRC, null rates, the one-cohort genes."""
    rows = meta.loc[(meta["state"] == state) & meta["gene"].notna()].set_index("gene")
    frame = truth.set_index(GENE).join(rows, how="left")
    pooled = frame[P_VALUE].notna()
    # rank by the meta p; genes not pooled rank last
    ranking = np.where(pooled, -np.log10(frame[P_VALUE].clip(lower=1e-300)), -1.0)
    positive = (frame["kind"] == PLANTED_CONSISTENT).to_numpy()
    not_one = (frame["kind"] != ONE_COHORT).to_numpy()
    null = (frame["kind"] == NULL) & pooled
    called = frame[Q_VALUE] < ALPHA
    out = {
        STATE: state,
        "n_pooled": int(pooled.sum()),
        "n_consistent_pooled": int((positive & pooled).sum()),
        "auprc": float(average_precision_score(positive, ranking)),
        "auprc_vs_null": float(average_precision_score(positive[not_one], ranking[not_one])),
        "n_null": int(null.sum()),
        "null_q05": int((null & called).sum()),
        "null_p05": int((null & (frame[P_VALUE] < ALPHA)).sum()),
        "n_called": int(called.sum()),
        "false_called": int((called & (frame["kind"] == NULL)).sum()),
        "consistent_called": int((called & positive).sum()),
        "consistent_flag": int((frame[CONSISTENT].fillna(False).astype(bool) & positive).sum()),
    }
    genes = []
    for gene, row in frame.loc[frame["kind"] == ONE_COHORT].iterrows():
        own = tables[row["planted_in"]]
        own = own.loc[(own[STATE] == state) & (own[GENE] == gene)]
        own_q = float(own[Q_VALUE].iloc[0]) if len(own) else np.nan
        genes.append(
            {
                STATE: state,
                GENE: gene,
                "planted_in": row["planted_in"],
                "log2fc": row["magnitude"],
                "own_q": own_q,
                "pooled": bool(pooled[gene]),
                "meta_q": row[Q_VALUE],
                I2: row[I2],
                HETEROGENEOUS: bool(row[HETEROGENEOUS]) if pooled[gene] else False,
                RESTS_ON_ONE_DATASET: bool(row[RESTS_ON_ONE_DATASET]) if pooled[gene] else False,
                CONSISTENT: bool(row[CONSISTENT]) if pooled[gene] else False,
                "critical": str(row[LOO_CRITICAL_DATASETS]) if pooled[gene] else "",
            }
        )
    return out, genes


def one_seed(seed: int, *, args, params: dict) -> tuple[list[dict], list[dict]]:
    started = time.time()
    cohorts, truth = simulate_cohorts(n_cohorts=args.cohorts, seed=seed)
    sizes = ",".join(str(a.uns["cohort"]["n_patients"]) for a in cohorts.values())
    rows, genes = [], []
    for path in args.paths:
        tables = {
            name: cohort_de(a, path=path, states=args.states, params=params)
            for name, a in cohorts.items()
        }
        meta = resistance_meta.meta_analyse(
            tables,
            alpha=params["meta_alpha"],
            min_datasets=params["meta_min_datasets"],
            states=args.states,
        )
        for state in args.states:
            row, one = score(meta, truth, tables, state=state)
            rows.append({"seed": seed, "path": path, "patients": sizes, **row})
            genes += [{"seed": seed, "path": path, **g} for g in one]
    for row in rows:
        row["seconds"] = round(time.time() - started, 1)
    return rows, genes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cohorts", type=int, default=5)
    parser.add_argument("--states", nargs="+", default=["all_cd8"])
    parser.add_argument(
        "--paths", nargs="+", default=["counts", "lognorm"], choices=["counts", "lognorm"]
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a resistance parameter of the schema defaults (e.g. log_method=welch)",
    )
    parser.add_argument("--out", help="per seed, path and state (TSV)")
    parser.add_argument("--genes-out", help="per one-cohort gene (TSV)")
    return parser.parse_args(argv)


def summarise(table: pd.DataFrame, genes: pd.DataFrame) -> bool:
    ok = True
    for (path, state), part in table.groupby(["path", STATE], sort=False):
        g = genes.loc[(genes["path"] == path) & (genes[STATE] == state)]
        null_rate = part["null_q05"].sum() / part["n_null"].sum()
        fdp = part["false_called"].sum() / max(part["n_called"].sum(), 1)
        own = g["own_q"] < ALPHA
        flagged = g[HETEROGENEOUS] | g[RESTS_ON_ONE_DATASET]
        checks = [
            (
                f"AUPRC consistent genes, mean (min) over {len(part)} seeds",
                f"{part['auprc'].mean():.3f} ({part['auprc'].min():.3f})",
                part["auprc"].mean() >= TARGETS["auprc"],
            ),
            ("  the same against null genes only", f"{part['auprc_vs_null'].mean():.3f}", None),
            (
                "null genes at q < 0.05",
                f"{part['null_q05'].sum()}/{part['n_null'].sum()} = {null_rate:.4f}",
                null_rate <= TARGETS["null_q05"],
            ),
            (
                "null genes at p < 0.05 (calibration; 0.05 expected)",
                f"{part['null_p05'].sum() / part['n_null'].sum():.4f}",
                None,
            ),
            (
                "false discovery proportion at q < 0.05",
                f"{part['false_called'].sum()}/{part['n_called'].sum()} = {fdp:.4f}",
                None,
            ),
            (
                "consistent genes at q < 0.05 / ranked consistent",
                (
                    f"{part['consistent_called'].sum()} / {part['consistent_flag'].sum()} of "
                    f"{part['n_consistent_pooled'].sum()} pooled"
                ),
                None,
            ),
            (
                "one-cohort genes ranked consistent",
                f"{int(g[CONSISTENT].sum())}/{len(g)}",
                not g[CONSISTENT].any(),
            ),
            (
                "one-cohort genes flagged (heterogeneous or rests on one dataset)",
                f"{int(flagged.sum())}/{len(g)}",
                None,
            ),
            (
                "  of those called in their own cohort (q < 0.05): flagged",
                f"{int((flagged & own).sum())}/{int(own.sum())}",
                None,
            ),
            (
                "  of those at meta q < 0.05: flagged",
                f"{int((flagged & (g['meta_q'] < ALPHA)).sum())}/"
                f"{int((g['meta_q'] < ALPHA).sum())}",
                bool((flagged | ~(g["meta_q"] < ALPHA)).all()),
            ),
        ]
        print(f"\n{path} / {state}:")
        for name, value, passed in checks:
            mark = "" if passed is None else ("PASS" if passed else "FAIL")
            ok &= passed is not False
            print(f"  {name:66s} {value:>24s}  {mark}")
    return ok


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    params = stage_parameters()
    for item in args.set:
        key, value = item.split("=", 1)
        params[key] = type(params[key])(value) if key in params else value
    if args.set:
        print(f"resistance parameters overridden: {', '.join(args.set)}")
    rows, genes = [], []
    started = time.time()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r, g = one_seed(seed, args=args, params=params)
        rows += r
        genes += g
        text = "; ".join(
            f"{x['path']}/{x[STATE]} AUPRC {x['auprc']:.2f}, nulls {x['null_q05']}/{x['n_null']}"
            for x in r
        )
        print(
            f"seed {seed} ({r[0]['patients']} patients; {r[0]['seconds']:.0f} s): {text}",
            flush=True,
        )
    table, genes = pd.DataFrame(rows), pd.DataFrame(genes)
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)
    if args.genes_out:
        genes.to_csv(args.genes_out, sep="\t", index=False)
    ok = summarise(table, genes)
    print(
        f"\n{len(table['seed'].unique())} seeds x {args.cohorts} cohorts in "
        f"{(time.time() - started) / 60:.1f} min"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
