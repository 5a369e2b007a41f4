"""Why does the pseudotime truth check fail? Rebuild the trajectory with groups of cells left out.

Reads a simulated run's ``final.h5ad`` (the stages' own files are temporary), rebuilds the
pseudotime exactly as the trajectory stage does (the pipeline's config: lineage states,
excluded programs, features, PCs, neighbours, components), once on the whole lineage and once
per ``--leave-out`` column with those cells taken out of the lineage, and reports for each:
lineage cells, Spearman rho with ``obs["true_pseudotime"]``, the median pseudotime of each
state, the share of (Tpex, Tex_term) pairs in order and the root stability.

    .venv/bin/python benchmarks/diagnose_pseudotime.py \
        benchmarks/out/texflow_100000/results/bench/final.h5ad \
        --leave-out predicted_doublet true_doublet [--out table.tsv]

The leave-out columns are boolean obs columns: ``true_doublet`` (the simulator's truth) shows
what perfect doublet removal would do, ``predicted_doublet`` (Scrublet's call) what the
pipeline could do.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "workflow"), str(ROOT)]

import texflow

texflow.enable_numba_cache()  # before scanpy is imported: sparse kernels loaded from the cache

import numpy as np
import pandas as pd
import yaml
from scipy import stats
from texflow import programs, trajectory, utils
from texflow.contract import CLUSTER_STATE_KEY, IS_MAIN_ROOT, PSEUDOTIME, SPEARMAN_RHO

logger = logging.getLogger("diagnose_pseudotime")


def rebuild(
    annotations, lineage_x, *, params: dict, exclude: list[str], leave_out: np.ndarray | None
) -> dict:
    """Trajectory of `annotations` (read without X) with the `leave_out` cells out of the lineage.

    `lineage_x`: X's rows of the whole lineage, read once; a leave-out only removes cells from
    it, so each rebuild takes its rows from there rather than from the file again.
    """
    adata = annotations.copy()
    full = trajectory.lineage_mask(adata, states=params["lineage_states"])
    if leave_out is not None:
        # a state outside the lineage keeps the cells out of it, as the states stage's labels would
        states = adata.obs[CLUSTER_STATE_KEY].astype(str)
        adata.obs[CLUSTER_STATE_KEY] = states.where(~leave_out, "ambiguous").astype("category")
    mask = trajectory.lineage_mask(adata, states=params["lineage_states"])
    table = trajectory.lineage_pseudotime(
        adata,
        lineage_x=lineage_x[mask[full]],
        exclude_genes=exclude,
        **trajectory.options_from_config(params),
    )
    obs = adata.obs[mask]
    known = obs["true_pseudotime"].notna() & obs[PSEUDOTIME].notna()
    record = adata.uns["texflow"]["trajectory"]
    row = {
        "lineage_cells": int(mask.sum()),
        "true_doublet_share": round(float(obs["true_doublet"].astype(bool).mean()), 4),
        "pseudotime_rho": round(
            float(
                stats.spearmanr(
                    obs.loc[known, PSEUDOTIME], obs.loc[known, "true_pseudotime"]
                ).statistic
            ),
            3,
        ),
        "state_order_auc": round(float(record["state_order_auc"]), 3),
        "root_sensitivity_median_rho": round(
            float(table.loc[~table[IS_MAIN_ROOT], SPEARMAN_RHO].median()), 3
        ),
    }
    for state in params["lineage_states"]:
        row[f"median_{state}"] = round(
            float(obs.loc[obs[CLUSTER_STATE_KEY].astype(str) == state, PSEUDOTIME].median()), 3
        )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("h5ad", type=Path, help="a simulated run's final.h5ad")
    parser.add_argument(
        "--leave-out", nargs="*", default=[], help="boolean obs columns, one rebuild each"
    )
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--out", type=Path, help="write the table here (TSV)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    params = yaml.safe_load(args.config.read_text())["trajectory"]
    annotations = utils.read_h5ad(args.h5ad, layers=False, x=False)
    if "true_pseudotime" not in annotations.obs:
        sys.exit(f"{args.h5ad}: no obs['true_pseudotime']; this needs a simulated dataset")
    names = params["exclude_programs"]
    tested = programs.load_selected_programs(
        organism=annotations.uns["texflow"]["organism"], names=names, extra_file=""
    )
    exclude = programs.program_genes(tested, names, var_names=annotations.var_names)
    lineage_x = utils.read_rows(
        args.h5ad, trajectory.lineage_mask(annotations, states=params["lineage_states"])
    )
    rows = []
    for column in [None, *args.leave_out]:
        if column is not None and column not in annotations.obs:
            sys.exit(f"{args.h5ad}: no obs[{column!r}] to leave out")
        leave_out = None if column is None else annotations.obs[column].to_numpy(dtype=bool)
        logger.info("rebuilding with %s left out", column or "nothing")
        rows.append(
            {
                "left_out": column or "-",
                **rebuild(
                    annotations, lineage_x, params=params, exclude=exclude, leave_out=leave_out
                ),
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)


if __name__ == "__main__":
    main()
