"""Responders vs non-responders on simulated cohorts: power and false-positive rate (issue 16).

For each seed: simulate a cohort (`--n-patients` patients, half of them non-responders, the
patient is the unit), once with planted differences and once without (condition
`no_difference`; the same seed: the same patients, response labels and cells; only the planted
effects differ), then run the pipeline's own stage functions in the order and with the
arguments the workflow scripts use (workflow/scripts/{qc,gate,cluster,states,programs}.py),
every parameter from config/config.yaml validated against the run schema (which fills the
schema defaults, as workflow/rules/common.smk does):

    qc.run_qc -> qc.passing_cells -> gating.gate_cd8 -> gating.cd8_cells
    -> cluster.run_clustering -> states.label_states -> programs.analyse

`programs.analyse` is the programs stage's function: it scores the programs (UCell on counts
downsampled to a common depth; ifn_i_core among them), then `stats.compare_response` (per-patient
means, Mann-Whitney, BH across programs within each row group) and `stats.patient_composition` +
`stats.compare_composition` (per-patient state fractions of CD8 cells, Mann-Whitney, BH across
the composition rows): the rows of response_comparison.tsv. The trajectory stage is left out:
the response and composition rows do not read the pseudotime (without one, `analyse` skips the
trends and the pseudotime associations, which are not measured here).

Cohort (defaults; see benchmarks/README.md for why these numbers): 16 patients, 8
non-responders and 8 responders (a typical public ICB cohort), 3,200 cells (~200 per patient,
~125 CD8 T cells after QC and gating), the default populations and doublets, and patients as
different from one another as in the bundled Sade-Feldman subset:

- `composition_concentration = 10` (Dirichlet): between-patient SD of the Tex_term share of CD8
  cells ~0.14 (Sade-Feldman subset: 0.13 responders, 0.24 non-responders, sampling noise
  removed); the simulator's default 100 gives ~0.05;
- `patient_programs = {"ifn_i_core": 0.3}`: each patient's ifn_i_core genes offset by
  N(0, 0.3) log2, which gives a between-patient SD of the all-CD8 IFN-I score ~0.035 (subset:
  ~0.04); without it the simulator's patients differ by ~0.01.

Planted: `response_composition = {"cd8_tex_term": 1.0}` (each non-responder's Tex_term share
doubled before renormalising; subset: non-responders 0.31, responders 0.16 of CD8 cells) and
`response_effects = {"ifn_i_core": 0.25}` (the ifn_i_core genes 1.19-fold in every cell of a
non-responder), which gives an all-CD8 IFN-I score difference of ~0.04, the subset's 0.040.
`--concentration 100 --patient-ifn-sd 0` gives the simulator's own (smaller) patient spread.

Recorded per seed and condition: q (p_adj) of the Tex_term composition row
(``state == "Tex_term"``, ``program == "fraction_of_cd8_cells"``) and of the IFN-I all-CD8 row
(``state == "all_cd8"``, ``program == "ifn_i_core"``), their effects and patient counts, and the
smallest q over every composition row and over the all-CD8 IFN-I rows (ifn_i_core,
ifn_alpha_hallmark). Rates: planted composition found (Tex_term row q < 0.05 with the planted
sign), planted IFN-I found (all-CD8 ifn_i_core q < 0.05, planted sign); null: seeds with a call
at q < 0.05 on either of those two rows (and, stricter, on any composition or all-CD8 IFN-I row).

    PYTHONPATH=workflow .venv/bin/python benchmarks/validate_cohort.py [--seeds 20]
        [--out per_seed.tsv] [--conditions planted no_difference] [--concentration 10]
        [--patient-ifn-sd 0.3] [--composition-log2fc 1.0] [--ifn-log2fc 0.25]
        [--n-patients 16] [--n-cells 3200] [--patients-out per_patient.tsv]

`--n-cells` is all cells, not per patient: keep ~200 per patient (`--n-cells 200 x n-patients`)
when changing `--n-patients`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "workflow"), str(ROOT / "benchmarks"), str(ROOT)]

import texflow

texflow.enable_numba_cache()  # before scanpy is imported: sparse kernels loaded from the cache

import numpy as np
import pandas as pd
from texflow import programs, stats
from texflow.contract import (
    BALANCE_COLUMN,
    CLIFFS_DELTA,
    EFFECT,
    FRACTION_PREFIX,
    HEDGES_G,
    INCLUDED,
    MEAN_NON_RESPONDERS,
    MEAN_RESPONDERS,
    N_CD8_CELLS,
    N_NON_RESPONDERS,
    N_RESPONDERS,
    NON_RESPONDER,
    P_ADJ,
    P_VALUE,
    PATIENT,
    PROGRAM,
    RESPONDER,
    RESPONSE,
    SCORE_PREFIX,
    STATE,
)
from texflow.simulation import simulate
from validate_states import pipeline_config, run_to_states

ALPHA = 0.05
TARGETS = {"power": 0.9, "false_positive": 0.05}
COMPOSITION_STATE = "Tex_term"
IFN_PROGRAM = "ifn_i_core"
IFN_ROWS = ("ifn_i_core", "ifn_alpha_hallmark")


def run_pipeline(adata, config: dict, *, dataset: str) -> dict[str, pd.DataFrame]:
    """qc -> gate -> cluster -> states (`validate_states.run_to_states`) -> programs, as the
    workflow scripts call them; the trajectory stage is skipped: nothing below reads the
    pseudotime. Returns the programs stage's tables (response_comparison, composition, ...)."""
    organism = adata.uns["texflow"]["organism"]
    adata, _ = run_to_states(adata, config, dataset=dataset)
    params = config["programs"]
    selected = programs.load_selected_programs(
        organism=organism, names=params["programs"], extra_file=params["extra_file"]
    )
    tables = programs.analyse(
        adata,
        programs=selected,
        program_names=params["programs"],
        options=programs.options_from_config(params, config["stats"]),
        overwrite_counts=True,
    ).tables
    tables["_n_cd8_cells"] = pd.DataFrame({N_CD8_CELLS: [adata.n_obs]})
    tables["_obs"] = adata.obs
    return tables


def _pooled_sd(values: pd.Series, groups: pd.Series) -> float:
    frame = pd.DataFrame({"v": values.to_numpy(float), "g": groups.to_numpy()})
    grouped = frame.groupby("g")["v"]
    dof = (grouped.size() - 1).clip(lower=0)
    return float(np.sqrt((grouped.var(ddof=1) * dof).sum() / dof.sum()))


def _row(table: pd.DataFrame, state: str, program: str) -> pd.Series:
    hit = table[(table[STATE].astype(str) == state) & (table[PROGRAM].astype(str) == program)]
    if len(hit) != 1:
        raise RuntimeError(f"response_comparison has {len(hit)} rows for {state} / {program}")
    return hit.iloc[0]


def one_run(seed: int, *, condition: str, args, config: dict, patients: list | None = None) -> dict:
    started = time.time()
    planted = condition == "planted"
    composition = {"cd8_tex_term": args.composition_log2fc} if planted else {}
    effects = {IFN_PROGRAM: args.ifn_log2fc} if planted else {}
    raw = simulate(
        n_cells=args.n_cells,
        n_patients=args.n_patients,
        organism=args.organism,
        seed=seed,
        response_composition=composition,
        response_effects=effects,
        composition_concentration=args.concentration,
        patient_programs={IFN_PROGRAM: args.patient_ifn_sd} if args.patient_ifn_sd > 0 else {},
    )
    # the truth: each patient's share of true Tex_term among its singlet CD8 cells
    truth = raw.obs[~raw.obs["true_doublet"].to_numpy() & raw.obs["true_is_cd8"].to_numpy()]
    true_share = (
        (truth["true_state"] == COMPOSITION_STATE).groupby(truth[PATIENT], observed=True).mean()
    )
    true_response = truth.groupby(PATIENT, observed=True)[RESPONSE].first().astype(str)
    tables = run_pipeline(raw, config, dataset=f"cohort_{condition}_{seed}")
    response = tables["response_comparison"]
    row = {
        "seed": seed,
        "condition": condition,
        "n_cells_sim": raw.n_obs,
        N_CD8_CELLS: int(tables["_n_cd8_cells"][N_CD8_CELLS].iloc[0]),
    }
    row["true_tex_term_share_nr"] = float(true_share[true_response == NON_RESPONDER].mean())
    row["true_tex_term_share_r"] = float(true_share[true_response == RESPONDER].mean())
    comp = _row(response, COMPOSITION_STATE, stats.COMPOSITION_MEASURE)
    ifn = _row(response, stats.ALL_CD8, IFN_PROGRAM)
    for key, r in (("composition", comp), ("ifn", ifn)):
        row[f"{key}_mean_nr"] = float(r[MEAN_NON_RESPONDERS])
        row[f"{key}_mean_r"] = float(r[MEAN_RESPONDERS])
        row[f"{key}_effect"] = float(r[EFFECT])
        row[f"{key}_cliffs_delta"] = float(r[CLIFFS_DELTA])
        row[f"{key}_hedges_g"] = float(r[HEDGES_G])
        row[f"{key}_n_nr_r"] = f"{int(r[N_NON_RESPONDERS])}/{int(r[N_RESPONDERS])}"
        row[f"{key}_p"] = float(r[P_VALUE])
        row[f"{key}_q"] = float(r[P_ADJ])
        row[f"{key}_called"] = bool(r[P_ADJ] < ALPHA)
        row[f"{key}_found"] = bool(r[P_ADJ] < ALPHA and r[EFFECT] > 0)
    # between-patient spread (pooled within-group SD of the patient values the tests compare)
    composition_table = tables["composition"]
    used = composition_table[composition_table[INCLUDED]]
    row["composition_patient_sd"] = _pooled_sd(
        used[f"{FRACTION_PREFIX}{COMPOSITION_STATE}"], used[RESPONSE]
    )
    obs = tables["_obs"]
    means = obs.groupby(PATIENT, observed=True).agg(
        score=(f"{SCORE_PREFIX}{IFN_PROGRAM}", "mean"), response=(RESPONSE, "first")
    )
    row["ifn_patient_sd"] = _pooled_sd(means["score"], means[RESPONSE].astype(str))
    is_comp = response[PROGRAM].astype(str) == stats.COMPOSITION_MEASURE
    row["min_q_any_composition_row"] = float(response.loc[is_comp, P_ADJ].min())
    row["composition_rows_called"] = ",".join(
        response.loc[is_comp & (response[P_ADJ] < ALPHA), STATE].astype(str)
    )
    is_ifn = (response[STATE].astype(str) == stats.ALL_CD8) & response[PROGRAM].isin(IFN_ROWS)
    row["min_q_all_cd8_ifn_rows"] = float(response.loc[is_ifn, P_ADJ].min())
    # the IFN-I shift inside a state (free of composition): Tex_term and exhausted lineage rows
    for state in (COMPOSITION_STATE, stats.EXHAUSTED_LINEAGE):
        r = _row(response, state, IFN_PROGRAM)
        row[f"ifn_{state}_q"] = float(r[P_ADJ])
    row["seconds"] = round(time.time() - started, 1)
    if patients is not None:
        patients.append(_patient_values(tables, seed=seed, condition=condition))
    return row


def _patient_values(tables: dict, *, seed: int, condition: str) -> pd.DataFrame:
    """One row per patient: the values the composition rows and the all-CD8 rows compare (state
    fractions and Tpex : Tex_term log ratio from the composition table, per-patient mean over
    all CD8 cells of every program of the all-CD8 row group), for resampling (power by n)."""
    response = tables["response_comparison"]
    all_cd8 = response.loc[response[STATE].astype(str) == stats.ALL_CD8, PROGRAM].astype(str)
    columns = [f"{SCORE_PREFIX}{p}" for p in all_cd8]
    obs = tables["_obs"]
    means = obs.groupby(PATIENT, observed=True)[columns].mean()
    means.index = means.index.astype(str)
    composition = tables["composition"].set_index(PATIENT)
    kept = [c for c in composition.columns if c.startswith(FRACTION_PREFIX) or c == BALANCE_COLUMN]
    out = composition[[RESPONSE, N_CD8_CELLS, INCLUDED, *kept]].join(
        means.rename(columns=lambda c: f"all_cd8_{c.removeprefix(SCORE_PREFIX)}")
    )
    out.insert(0, "condition", condition)
    out.insert(0, "seed", seed)
    return out.reset_index()


def rates(table: pd.DataFrame) -> list[tuple[str, int, int, bool]]:
    """(name, hits, runs, meets target) for the issue's three rates."""
    out = []
    planted = table[table["condition"] == "planted"]
    null = table[table["condition"] == "no_difference"]
    if len(planted):
        for key, name in (
            ("composition", "planted composition found (Tex_term row, q < 0.05)"),
            ("ifn", "planted IFN-I found (all-CD8 ifn_i_core row, q < 0.05)"),
        ):
            hits = int(planted[f"{key}_found"].sum())
            out.append((name, hits, len(planted), hits >= TARGETS["power"] * len(planted)))
    if len(null):
        called = null["composition_called"] | null["ifn_called"]
        hits = int(called.sum())
        out.append(
            (
                "null: a call on either row (q < 0.05)",
                hits,
                len(null),
                hits <= TARGETS["false_positive"] * len(null),
            )
        )
        wider = (null["min_q_any_composition_row"] < ALPHA) | (
            null["min_q_all_cd8_ifn_rows"] < ALPHA
        )
        hits = int(wider.sum())
        out.append(
            (
                "null: any composition or all-CD8 IFN-I row",
                hits,
                len(null),
                hits <= TARGETS["false_positive"] * len(null),
            )
        )
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=["planted", "no_difference"],
        choices=["planted", "no_difference"],
    )
    parser.add_argument("--n-patients", type=int, default=16, help="half are non-responders")
    parser.add_argument("--n-cells", type=int, default=3200, help="all cells, ~200 per patient")
    parser.add_argument("--organism", default="human", choices=["human", "mouse"])
    parser.add_argument(
        "--composition-log2fc",
        type=float,
        default=1.0,
        help="log2 fold change of the Tex_term fraction in non-responders",
    )
    parser.add_argument(
        "--ifn-log2fc",
        type=float,
        default=0.25,
        help="log2 fold change of the ifn_i_core genes in non-responders",
    )
    parser.add_argument(
        "--concentration",
        type=float,
        default=10.0,
        help="Dirichlet concentration of the patients' population fractions",
    )
    parser.add_argument(
        "--patient-ifn-sd",
        type=float,
        default=0.3,
        help="SD of each patient's log2 offset of the ifn_i_core genes",
    )
    parser.add_argument("--out", help="per-seed table (TSV)")
    parser.add_argument(
        "--patients-out",
        help="per-patient table (TSV): the values each composition and all-CD8 row compares",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    config = pipeline_config()
    rows = []
    patients = [] if args.patients_out else None
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for condition in args.conditions:
            row = one_run(seed, condition=condition, args=args, config=config, patients=patients)
            rows.append(row)
            # written as they grow: a long run can be read before it ends
            if args.out:
                pd.DataFrame(rows).to_csv(args.out, sep="\t", index=False)
            if patients:
                pd.concat(patients).to_csv(args.patients_out, sep="\t", index=False)
            print(
                f"seed {seed} {condition}: composition q {row['composition_q']:.3g}, "
                f"IFN-I q {row['ifn_q']:.3g} ({row['seconds']:.0f} s)",
                flush=True,
            )
    table = pd.DataFrame(rows)
    shown = [
        "seed",
        "condition",
        "n_cd8_cells",
        "true_tex_term_share_nr",
        "true_tex_term_share_r",
        "composition_mean_nr",
        "composition_mean_r",
        "composition_cliffs_delta",
        "composition_q",
        "ifn_mean_nr",
        "ifn_mean_r",
        "ifn_cliffs_delta",
        "ifn_hedges_g",
        "ifn_q",
        "composition_patient_sd",
        "ifn_patient_sd",
        "min_q_any_composition_row",
        "min_q_all_cd8_ifn_rows",
        "seconds",
    ]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(
        f"\nplanted: Tex_term composition log2FC {args.composition_log2fc}, ifn_i_core log2FC "
        f"{args.ifn_log2fc}; {args.n_patients} patients ({args.n_patients // 2} non-responders), "
        f"{args.n_cells} cells, concentration {args.concentration}, patient IFN-I SD "
        f"{args.patient_ifn_sd} log2"
    )
    print("rates (issue 16: found in >= 90% of seeds; null calls in <= 5%):")
    ok = True
    for name, hits, n, passed in rates(table):
        ok &= passed
        print(f"  {name:58s} {hits:3d}/{n} = {hits / n:.2f}  {'PASS' if passed else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
