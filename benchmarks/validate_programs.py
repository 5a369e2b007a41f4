"""False-positive rate of the pseudotime association test on a program that does not move.

For each seed: simulate CD8 T cells of several patients with NO program rising along the
trajectory (``rising_programs={}``), label states from the truth (as the states stage would),
build the diffusion pseudotime exactly as the pipeline does (IFN-I/LPO genes out of the
features), score the programs with UCell and test each program's association with pseudotime
(per-patient Spearman, Fisher-z combined, within-patient permutations, BH across programs).
A flat program called significant (adjusted p < alpha) is a false positive; the rate over seeds
must stay <= alpha (5 %).

    .venv/bin/python benchmarks/validate_programs.py --seeds 40 [--out rates.tsv]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "workflow"), str(ROOT / "tests"), str(ROOT)]

import texflow

texflow.enable_numba_cache()  # before scanpy is imported: sparse kernels loaded from the cache

import numpy as np
import pandas as pd
from lineage_data import labelled_cd8
from texflow import programs, stats, trajectory
from texflow.contract import EFFECT, NOTE, P_ADJ, P_VALUE, PROGRAM, SCORE_PREFIX

FLAT_PROGRAMS = ("ifn_i_core", "ifn_alpha_hallmark", "lpo_drivers", "lpo_suppressors", "lpo_signed")


def one_seed(
    seed: int,
    *,
    n_cells: int,
    n_genes: int,
    n_patients: int,
    n_permutations: int,
    adjust: bool = False,
    equalise: bool = True,
    method: str = "principal_path",
) -> pd.DataFrame:
    adata = labelled_cd8(
        seed=seed, n_cells=n_cells, n_genes=n_genes, n_patients=n_patients, rising_programs={}
    )
    selected = programs.load_selected_programs(organism="human")
    exclude = programs.program_genes(selected, programs.TESTED_PROGRAMS, var_names=adata.var_names)
    trajectory.lineage_pseudotime(
        adata, exclude_genes=exclude, n_root_checks=0, seed=seed, method=method
    )
    info = adata.uns["texflow"]["trajectory"]
    if not info["orders_states"]:
        # as the programs stage does: a pseudotime that does not order Tpex before Tex_term is
        # not the axis under test, so nothing is tested (and nothing can be a false positive)
        return pd.DataFrame(
            {
                PROGRAM: [*programs.DEFAULT_PROGRAMS, programs.SIGNED_LPO],
                EFFECT: np.nan,
                P_VALUE: np.nan,
                P_ADJ: np.nan,
                "seed": seed,
                NOTE: f"not tested: state-order AUC {info['state_order_auc']:.2f}",
            }
        )
    programs.score_programs(adata, selected, equalise_depth=equalise, seed=seed)
    keys = programs.score_columns(adata, programs.DEFAULT_PROGRAMS)
    scores = adata.obs[keys].rename(columns=lambda c: c.removeprefix(SCORE_PREFIX))
    covariate = np.log1p(programs.genes_detected(adata)) if adjust else None
    table = stats.pseudotime_associations(
        adata.obs,
        scores,
        n_permutations=n_permutations,
        seed=seed,
        covariate=covariate,
        covariate_name="log genes detected" if adjust else "",
    )
    table["seed"] = seed
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed .. first-seed + seeds - 1 (fresh seeds: 40)",
    )
    parser.add_argument("--n-cells", type=int, default=1200)
    parser.add_argument("--n-genes", type=int, default=600)
    parser.add_argument("--n-patients", type=int, default=6)
    parser.add_argument("--n-permutations", type=int, default=1000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--out", help="per-seed association table (TSV)")
    parser.add_argument(
        "--adjust",
        action="store_true",
        help="partial out log genes detected in the association test",
    )
    parser.add_argument(
        "--trajectory-method",
        choices=trajectory.METHODS,
        default="principal_path",
        help="how the lineage is ordered",
    )
    parser.add_argument(
        "--no-equalise",
        action="store_true",
        help="score without downsampling to a common depth (shows the depth bias)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    start, tables = time.time(), []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        tables.append(
            one_seed(
                seed,
                n_cells=args.n_cells,
                n_genes=args.n_genes,
                n_patients=args.n_patients,
                n_permutations=args.n_permutations,
                adjust=args.adjust,
                equalise=not args.no_equalise,
                method=args.trajectory_method,
            )
        )
        print(f"seed {seed}: done ({time.time() - start:.0f} s)", flush=True)
    table = pd.concat(tables, ignore_index=True)
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)
    flat = table[table[PROGRAM].isin(FLAT_PROGRAMS)]
    rates = flat.groupby(PROGRAM).agg(
        seeds=("seed", "nunique"),
        called=("p_adj", lambda p: int((p < args.alpha).sum())),
        rate=("p_adj", lambda p: float((p < args.alpha).mean())),
        rate_unadjusted=("p_value", lambda p: float((p < args.alpha).mean())),
        mean_effect=(EFFECT, "mean"),
    )
    untested = [int(seed) for seed in table.loc[table[P_VALUE].isna(), "seed"].unique()]
    print(
        f"seeds not tested (pseudotime does not order Tpex before Tex_term): {len(untested)} "
        f"{list(untested)}; untested seeds count as no call"
    )
    print(rates.to_string())
    headline = rates.loc["ifn_i_core", "rate"]
    overall = float((flat[P_ADJ] < args.alpha).mean())
    print(
        f"flat ifn_i_core called significant (adj. p < {args.alpha}) in "
        f"{rates.loc['ifn_i_core', 'called']}/{args.seeds} seeds: rate {headline:.3f}"
    )
    print(
        f"all flat programs together: rate {overall:.3f}; "
        f"{'PASS' if overall <= args.alpha else 'FAIL'} (must be <= {args.alpha})"
    )
    sys.exit(0 if overall <= args.alpha else 1)


if __name__ == "__main__":
    main()
