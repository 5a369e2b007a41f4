"""Per-cell states and the per-cell lineage on simulated data with rare Tpex (issue 16).

For human and mouse x each seed: simulate the rare-Tpex mode (`texflow.simulation.RARE_TPEX`:
Tpex ~3 % of CD8 cells, not a Leiden cluster of their own; ~3,000 cells, 6 patients, doublets
and low-quality cells included), then run the pipeline's own stage functions in the order and
with the arguments the workflow scripts use (workflow/scripts/{qc,gate,cluster,states,
trajectory}.py), every parameter from config/config.yaml validated against the run schema
(which fills the schema defaults, as workflow/rules/common.smk does):

    qc.run_qc -> qc.passing_cells -> gating.gate_cd8 -> gating.cd8_cells
    -> cluster.run_clustering -> states.label_states -> trajectory.lineage_pseudotime

and compare with the truth: per-cell Tpex and Tex_term precision and recall of
``obs["cell_state"]`` against ``obs["true_state"]`` (over the cells that reach the states
stage; a true doublet's truth is "doublet", so a doublet called Tpex is a false positive),
whether the true Tpex formed a Leiden cluster of their own (a cluster in which they are the
majority), whether a trajectory was built (else the stage's skip reason), and the Spearman
correlation of ``obs["pseudotime"]`` with ``obs["true_pseudotime"]`` on the lineage cells that
have one. Then the rates against the issue's targets.

    .venv/bin/python benchmarks/validate_states.py [--seeds 5] [--out per_seed.tsv]
        [--cells-out cells.tsv.gz] [--cache-dir DIR] [--trajectory-method dpt]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "workflow"), str(ROOT / "tests"), str(ROOT)]

import texflow

texflow.enable_numba_cache()  # before scanpy is imported: sparse kernels loaded from the cache

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from texflow import cluster, gating, programs, qc, states, trajectory
from texflow.contract import (
    CELL_STATE_BASIS_KEY,
    CELL_STATE_KEY,
    CLUSTER,
    EXHAUSTION_AXIS_KEY,
    N_CD8_CELLS,
    N_CLUSTERS,
    PSEUDOTIME,
    SCORE_PREFIX,
    SMOOTHED_BASIS,
    STATE,
)
from texflow.simulation import RARE_TPEX, simulate
from texflow.truth import cell_truth, precision_recall

TARGETS = {"tpex": 0.8, "tex_term": 0.9, "spearman": 0.8}
TRUTH_COLUMNS = ["true_state", "true_population", "true_pseudotime", "true_doublet"]


def pipeline_config() -> dict:
    """config/config.yaml validated against the run schema with every default filled, as
    workflow/rules/common.smk does (texflow.configuration)."""
    from texflow import configuration

    config = configuration.load_yaml(ROOT / "config" / "config.yaml")
    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    return configuration.validate(config, schema, what="config/config.yaml")


def run_to_states(adata, config: dict, *, dataset: str):
    """The stages qc -> gate -> cluster -> states, as the workflow scripts call them. Returns
    the CD8 cells after the states stage and the cluster-state table."""
    organism = adata.uns["texflow"]["organism"]
    # qc.py
    params = qc.QCParams.from_config(config["qc"])
    qc.run_qc(adata, params=params, dataset=dataset)
    adata = qc.passing_cells(adata, min_cells=params.min_cells_out, dataset=dataset)
    # gate.py (simulated data hold every cell type: not cd8_sorted)
    gating.gate_cd8(
        adata,
        params=gating.GateParams.from_config(config["gate"]),
        cd8_sorted=False,
        dataset=dataset,
    )
    adata = gating.cd8_cells(adata, dataset=dataset)
    # cluster.py
    cluster.run_clustering(
        adata, params=cluster.ClusterParams.from_config(config["cluster"]), dataset=dataset
    )
    # states.py (reads X and annotations only)
    table = states.label_states(
        adata,
        organism=organism,
        params=states.StatesParams.from_config(config["states"]),
        extra_programs=config["programs"].get("extra_file") or None,
        dataset=dataset,
    ).tables["cluster_states"]
    return adata, table


def run_pipeline(adata, config: dict, *, dataset: str):
    """The stages qc -> gate -> cluster -> states -> trajectory, as the workflow scripts call
    them. Returns the CD8 cells after the trajectory stage and the cluster-state table."""
    adata, table = run_to_states(adata, config, dataset=dataset)
    return run_trajectory(adata, config), table


def fingerprint(raw) -> str:
    """Digest of a simulated matrix: a cached run is reused only for the same simulated data."""
    digest = hashlib.sha256()
    for part in (raw.X.indptr, raw.X.indices, raw.X.data):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def cached_to_states(raw, config: dict, *, dataset: str, cache_dir: Path):
    """`run_to_states`, read from `cache_dir` when a file there was made from the same simulated
    matrix (its digest) and the same config, else run and written there. The cluster-state
    table is not cached (None when read)."""
    path = Path(cache_dir) / f"{dataset}.h5ad"
    upstream = {stage: config[stage] for stage in ("qc", "gate", "cluster", "states", "programs")}
    key = {"simulated": fingerprint(raw), "config": json.dumps(upstream, sort_keys=True)}
    if path.exists():
        cached = ad.read_h5ad(path)
        if cached.uns.get("validate_states_cache") == key:
            return cached, None
    adata, table = run_to_states(raw, config, dataset=dataset)
    adata.uns["validate_states_cache"] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return adata, table


def run_trajectory(adata, config: dict):
    """The trajectory stage on the states stage's output, as workflow/scripts/trajectory.py
    calls it."""
    organism = adata.uns["texflow"]["organism"]
    extra = config["programs"].get("extra_file") or None
    # trajectory.py: reads the annotations without X and layers, then the lineage rows of X
    x = adata.X
    adata = ad.AnnData(
        obs=adata.obs, var=adata.var, uns=adata.uns, obsm=dict(adata.obsm), obsp=dict(adata.obsp)
    )
    params = config["trajectory"]
    tested = programs.load_selected_programs(
        organism=organism, names=params["exclude_programs"], extra_file=extra
    )
    exclude = programs.program_genes(tested, params["exclude_programs"], var_names=adata.var_names)
    lineage = trajectory.lineage_mask(adata, states=params["lineage_states"])
    trajectory.lineage_pseudotime(
        adata,
        lineage_x=x[lineage] if lineage.any() else None,
        exclude_genes=exclude,
        **trajectory.options_from_config(params),
    )
    return adata


def smoothing_diagnosis(adata, truth: pd.Series, params: states.StatesParams) -> pd.DataFrame:
    """Per cell: the calls the states stage would make from the unsmoothed UCell scores, each
    program's z before and after the kNN smoothing, and the share of the cell's `smooth_k`
    nearest neighbours (the graph the smoothing averages over) that share its true state.

    The smoothing and the decision rule are the states stage's own (`states.knn_neighbours`,
    `states.smooth_scores`, `states.decide_cells`) with the config's parameters; only the
    unsmoothed call is extra, to show what the smoothing changes."""
    programs = [p for p in states.SCORED_PROGRAMS if f"{SCORE_PREFIX}{p}" in adata.obs]
    raw = adata.obs[[f"{SCORE_PREFIX}{p}" for p in programs]].astype(float)
    raw.columns = programs
    neighbours = states.knn_neighbours(adata, k=params.smooth_k)
    smoothed = states.smooth_scores(raw, neighbours, decay=params.smooth_decay)
    sd = raw.std(ddof=0).replace(0.0, np.nan)
    z_raw, z_smooth = (raw - raw.mean()) / sd, (smoothed - raw.mean()) / sd
    usable = set(programs)
    out = pd.DataFrame(index=adata.obs_names)
    out["raw_call"] = states.decide_cells(z_raw, params, usable)[STATE].to_numpy()
    out["smooth_call"] = states.decide_cells(z_smooth, params, usable)[STATE].to_numpy()
    labels = truth.to_numpy()
    out["same_truth_neighbour_share"] = (labels[neighbours] == labels[:, None]).mean(axis=1)
    for program in ("exhausted_gate", *states.STATE_PROGRAMS.values()):
        out[f"z_raw_{program}"] = z_raw[program].to_numpy()
        out[f"z_smooth_{program}"] = z_smooth[program].to_numpy()
    return out


def one_run(
    organism: str,
    seed: int,
    *,
    n_cells: int,
    n_patients: int,
    config: dict,
    simulation: Mapping = RARE_TPEX,
    cache_dir: Path | None = None,
):
    started = time.time()
    raw = simulate(
        n_cells=n_cells, organism=organism, seed=seed, n_patients=n_patients, **simulation
    )
    raw_obs = raw.obs[TRUTH_COLUMNS].copy()
    dataset = f"sim_{organism}_{seed}"
    if cache_dir is None:
        adata, table = run_pipeline(raw, config, dataset=dataset)
    else:
        adata, table = cached_to_states(raw, config, dataset=dataset, cache_dir=cache_dir)
        adata = run_trajectory(adata, config)
    obs = adata.obs
    truth = cell_truth(obs)
    called = obs[CELL_STATE_KEY].astype(str)
    row = {"organism": organism, "seed": seed, "n_cells_sim": raw.n_obs, N_CD8_CELLS: adata.n_obs}
    singlet_cd8 = (
        raw_obs["true_state"].astype(str).isin(states.STATE_PROGRAMS) & ~raw_obs["true_doublet"]
    )
    row["tpex_share_of_cd8_sim"] = float((raw_obs.loc[singlet_cd8, "true_state"] == "Tpex").mean())
    row["n_true_tpex_sim"] = int(
        ((raw_obs["true_state"] == "Tpex") & ~raw_obs["true_doublet"]).sum()
    )
    for state, key in (("Tpex", "tpex"), ("Tex_term", "tex_term")):
        precision, recall = precision_recall(called, truth, state)
        row[f"n_true_{key}"] = int((truth == state).sum())
        row[f"n_called_{key}"] = int((called == state).sum())
        row[f"{key}_precision"], row[f"{key}_recall"] = precision, recall
    # Did the true Tpex form a cluster of their own?
    crosstab = pd.crosstab(obs[CLUSTER].astype(str), truth)
    share = crosstab.div(crosstab.sum(axis=1), axis=0)
    tpex_share = share["Tpex"] if "Tpex" in share else pd.Series(0.0, index=share.index)
    tpex_counts = crosstab["Tpex"] if "Tpex" in crosstab else pd.Series(0, index=crosstab.index)
    row["tpex_own_cluster"] = bool((tpex_share > 0.5).any())
    top = tpex_counts.idxmax()
    row["tpex_top_cluster"] = f"{top} ({int(tpex_counts[top])}/{int(crosstab.loc[top].sum())})"
    row["tpex_max_cluster_share"] = float(tpex_share.max())
    row[N_CLUSTERS] = int(obs[CLUSTER].nunique())
    if table is not None:  # not kept in the cache
        row["cluster_labels"] = ",".join(f"{r.cluster}:{r.state}" for r in table.itertuples())
    meta = adata.uns["texflow"]
    reason = meta.get("skipped", {}).get("trajectory", "")
    row["trajectory_built"] = not reason
    row["skip_reason"] = reason
    lineage = obs["in_lineage"].to_numpy(bool) & obs["true_pseudotime"].notna().to_numpy()
    lineage &= np.isfinite(obs[PSEUDOTIME].to_numpy(float))
    row["n_lineage_cells"] = int(obs["in_lineage"].sum())
    if not reason and lineage.sum() > 2:
        row["spearman"] = float(
            spearmanr(obs.loc[lineage, PSEUDOTIME], obs.loc[lineage, "true_pseudotime"]).statistic
        )
        info = meta["trajectory"]
        row["state_order_auc"] = float(info["state_order_auc"])
        row["root_stable"] = bool(info["root_stable"])
        # Diagnosis of the ordering: the same cells' smoothed exhaustion axis and the diffusion
        # component the stage oriented the root by, against the truth; how squashed DPT is
        true_time = obs.loc[lineage, "true_pseudotime"]
        row["spearman_axis"] = float(spearmanr(obs.loc[lineage, EXHAUSTION_AXIS_KEY], true_time)[0])
        if "separating_component" in info:  # the DPT method's root rule
            component = adata.obsm["X_diffmap_lineage"][lineage, info["separating_component"]]
            row["spearman_separating_dc"] = abs(float(spearmanr(component, true_time)[0]))
        row["path_is_minimum_spanning_tree"] = info.get("path_is_minimum_spanning_tree")
        row["root_median_rho"] = float(info["root_sensitivity_median_rho"])
        pt = obs.loc[lineage, PSEUDOTIME].to_numpy(float)
        row["pseudotime_q10_q90"] = f"{np.quantile(pt, 0.1):.3f}-{np.quantile(pt, 0.9):.3f}"
        state_median = obs.loc[lineage].groupby(truth[lineage], observed=True)[PSEUDOTIME]
        row["median_pseudotime_tpex_int_term"] = "/".join(
            f"{state_median.median().get(s, np.nan):.3f}" for s in ("Tpex", "Tex_int", "Tex_term")
        )
    else:
        row["spearman"] = np.nan
        row["state_order_auc"] = np.nan
        row["root_stable"] = False
    # Where the per-cell calls miss: the same rule on unsmoothed scores, and the neighbours
    diagnosis = smoothing_diagnosis(adata, truth, states.StatesParams.from_config(config["states"]))
    is_tpex = truth.to_numpy() == "Tpex"
    # the stage's own calls, where it decided on the smoothed scores (states.keep_own_call
    # keeps a rare state's call on the cell's own scores: obs["cell_state_basis"])
    smoothed_basis = (obs[CELL_STATE_BASIS_KEY].astype(str) == SMOOTHED_BASIS).to_numpy()
    same = diagnosis["smooth_call"].to_numpy() == called.to_numpy()
    assert same[smoothed_basis].all()
    row["n_kept_own_call"] = int((~smoothed_basis).sum())
    row["n_true_tpex_kept_own_call"] = int((~smoothed_basis & is_tpex).sum())
    for state, key in (("Tpex", "tpex"), ("Tex_term", "tex_term")):
        precision, recall = precision_recall(diagnosis["raw_call"], truth, state)
        row[f"{key}_precision_unsmoothed"], row[f"{key}_recall_unsmoothed"] = precision, recall
        mine = truth.to_numpy() == state
        row[f"{key}_same_state_neighbours"] = float(
            diagnosis.loc[mine, "same_truth_neighbour_share"].mean()
        )
    misses = called[is_tpex].value_counts()
    row["tpex_called_as"] = ", ".join(f"{name} {n}" for name, n in misses.items() if n)
    row["seconds"] = round(time.time() - started, 1)
    cells = obs[
        [
            c
            for c in obs.columns
            if c.startswith((SCORE_PREFIX, CELL_STATE_KEY, STATE))
            or c in ("cluster", "exhaustion_axis", "pseudotime", "in_lineage", "patient")
            or c in TRUTH_COLUMNS
        ]
    ].copy()
    cells = cells.join(diagnosis)
    cells["truth"] = truth
    cells.insert(0, "organism", organism)
    cells.insert(1, "seed", seed)
    return row, crosstab, cells


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--organisms", nargs="+", default=["human", "mouse"], choices=["human", "mouse"]
    )
    parser.add_argument("--n-cells", type=int, default=3000)
    parser.add_argument("--n-patients", type=int, default=6)
    parser.add_argument("--out", help="per-seed table (TSV)")
    parser.add_argument("--cells-out", help="per-cell calls, scores and truth (TSV, .gz ok)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="keep each run's states-stage output here and reuse it when the simulated matrix "
        "and the config are the same (to rerun the trajectory stage alone)",
    )
    parser.add_argument(
        "--trajectory-method",
        choices=trajectory.METHODS,
        help="order the lineage with this method instead of the config's trajectory.method",
    )
    parser.add_argument(
        "--crosstabs", action="store_true", help="print each run's cluster x true-state table"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    config = pipeline_config()
    if args.trajectory_method:
        config["trajectory"]["method"] = args.trajectory_method
    rows, all_cells = [], []
    for organism in args.organisms:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row, crosstab, cells = one_run(
                organism,
                seed,
                n_cells=args.n_cells,
                n_patients=args.n_patients,
                config=config,
                cache_dir=args.cache_dir,
            )
            rows.append(row)
            all_cells.append(cells)
            print(f"{organism} seed {seed}: done ({row['seconds']:.0f} s)", flush=True)
            if args.crosstabs:
                print(crosstab.to_string(), flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)
    if args.cells_out:
        pd.concat(all_cells).to_csv(args.cells_out, sep="\t")
    shown = [
        "organism",
        "seed",
        "n_cd8_cells",
        "n_true_tpex",
        "tpex_precision",
        "tpex_recall",
        "n_true_tex_term",
        "tex_term_precision",
        "tex_term_recall",
        "tpex_own_cluster",
        "tpex_top_cluster",
        "trajectory_built",
        "n_lineage_cells",
        "spearman",
        "state_order_auc",
    ]
    diagnosis = [
        "organism",
        "seed",
        "tpex_same_state_neighbours",
        "tpex_precision_unsmoothed",
        "tpex_recall_unsmoothed",
        "tex_term_same_state_neighbours",
        "n_kept_own_call",
        "n_true_tpex_kept_own_call",
        "tpex_called_as",
    ]
    ordering = [
        "organism",
        "seed",
        "spearman",
        "spearman_axis",
        "spearman_separating_dc",
        "root_median_rho",
        "path_is_minimum_spanning_tree",
        "pseudotime_q10_q90",
        "median_pseudotime_tpex_int_term",
    ]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        for columns in (shown, diagnosis, ordering):
            present = [c for c in columns if c in table]
            print(table[present].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            print()
    for reason in table.loc[~table["trajectory_built"], "skip_reason"]:
        print(f"skipped: {reason}")
    n = len(table)
    checks = {
        "Tpex precision >= 0.8": table["tpex_precision"] >= TARGETS["tpex"],
        "Tpex recall >= 0.8": table["tpex_recall"] >= TARGETS["tpex"],
        "Tex_term precision >= 0.9": table["tex_term_precision"] >= TARGETS["tex_term"],
        "Tex_term recall >= 0.9": table["tex_term_recall"] >= TARGETS["tex_term"],
        "trajectory built": table["trajectory_built"],
        "Spearman with true pseudotime >= 0.8": table["spearman"] >= TARGETS["spearman"],
        "Tpex NOT a cluster of their own": ~table["tpex_own_cluster"],
    }
    print("\nrates over", n, "runs (issue 16 asks every run to pass):")
    for name, passed in checks.items():
        print(f"  {name:40s} {int(passed.sum()):3d}/{n}  {'PASS' if passed.all() else 'FAIL'}")
    sys.exit(0 if all(passed.all() for passed in checks.values()) else 1)


if __name__ == "__main__":
    main()
