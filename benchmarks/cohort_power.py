"""Patients per group for a given power: from the per-patient values of `validate_cohort.py`.

Reads one or more `validate_cohort.py --patients-out` tables (the values the composition rows
and the all-CD8 rows of response_comparison.tsv compare, one row per simulated patient) and
gives two estimates of how often the programs stage's test finds the planted effects at n
patients per group:

1. **Resampling** (no distributional assumption). The patients of every seed are pooled per
   condition and response group after subtracting, for each value, the mean over all patients of
   their own seed and run (both groups together: the planted difference stays, each seed's own
   level, e.g. its gene baselines' effect on the UCell scores, goes). For each n, `--draws`
   cohorts of n non-responders and n responders are drawn without replacement from the pools,
   and each goes through the test the stage uses: Mann-Whitney U (scipy's default, two-sided)
   on every row of a row group, BH across the row group (the 8 composition rows together; the
   all-CD8 programs together), a call at q < 0.05. "Found" = q < 0.05 with the planted sign, as
   in `validate_cohort.py`. With `no_difference` patients: the rate of calls.
2. **Noether's formula** for the Wilcoxon-Mann-Whitney test (Noether 1987, J Am Stat Assoc
   82:645), equal groups: n per group = (z_{1-a/2} + z_{power})^2 / (6 (P - 1/2)^2), with
   P = P(non-responder > responder) = (1 + Cliff's delta) / 2, or P = Phi(g / sqrt 2) from
   Hedges' g for normal data. BH's threshold for one row lies between a/m (the row alone moves;
   Bonferroni) and a (every row of its group moves): both are given.

    .venv/bin/python benchmarks/cohort_power.py benchmarks/out/cohort_n64_patients.tsv
        [more.tsv ...] [--n-per-group 8 16 24 32 ...] [--draws 2000] [--power 0.9] [--out T]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import numpy as np
import pandas as pd
from scipy import stats
from texflow.contract import (
    CLIFFS_DELTA,
    HEDGES_G,
    INCLUDED,
    NON_RESPONDER,
    RESPONDER,
    RESPONSE,
)
from texflow.stats import cliffs_delta, hedges_g

ALPHA = 0.05
COMPOSITION_ROW = "fraction_Tex_term"
IFN_ROW = "all_cd8_ifn_i_core"
IFN_ROWS = ("all_cd8_ifn_i_core", "all_cd8_ifn_alpha_hallmark")


def row_groups(columns) -> dict[str, list[str]]:
    """The BH families of `stats.compare_composition` and of `stats.compare_response`'s all-CD8
    rows, as columns of the per-patient table."""
    columns = list(columns)
    return {
        "composition": [c for c in columns if c.startswith(("fraction_", "log_ratio_"))],
        "all_cd8": [c for c in columns if c.startswith("all_cd8_")],
    }


def load(paths: list[str], *, centre: bool = True) -> pd.DataFrame:
    """The per-patient tables, patients with >= the stage's minimum CD8 cells (``included``)
    and a response; each value centred on its seed's mean (per file, seed and condition)."""
    frames = []
    for i, path in enumerate(paths):
        frame = pd.read_csv(path, sep="\t")
        frame["run"] = str(i) + ":" + frame["seed"].astype(str) + ":" + frame["condition"]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table = table[table[INCLUDED].astype(bool) & table[RESPONSE].isin([NON_RESPONDER, RESPONDER])]
    values = [c for group in row_groups(table.columns).values() for c in group]
    if centre:
        table[values] = table[values] - table.groupby("run")[values].transform("mean")
    return table.reset_index(drop=True)


def resampled_rates(
    table: pd.DataFrame, *, n_per_group: int, draws: int, seed: int
) -> dict[str, float]:
    """Rates over `draws` cohorts of `n_per_group` patients per group drawn without replacement
    from the pooled `table` (one condition): Tex_term row found, ifn_i_core row found, a call on
    either, a call on any composition or all-CD8 IFN-I row."""
    rng = np.random.default_rng(seed)
    groups = row_groups(table.columns)
    q = {}
    for name, columns in groups.items():
        nr = table.loc[table[RESPONSE] == NON_RESPONDER, columns].to_numpy(float)
        r = table.loc[table[RESPONSE] == RESPONDER, columns].to_numpy(float)
        x = np.stack([nr[rng.permutation(len(nr))[:n_per_group]] for _ in range(draws)])
        y = np.stack([r[rng.permutation(len(r))[:n_per_group]] for _ in range(draws)])
        test = stats.mannwhitneyu(x, y, axis=1)  # draws x rows
        p = test.pvalue
        # a row whose values all tie in a draw: p = 1 (kept in the family; the stage would drop
        # a row only when no patient has the state at all)
        p = np.where(np.isfinite(p), p, 1.0)
        q[name] = pd.DataFrame(stats.false_discovery_control(p, axis=1), columns=columns)
        # the direction of the row's effect (the stage's effect is the difference of means)
        q[name + "_sign"] = pd.DataFrame(np.sign(x.mean(1) - y.mean(1)), columns=columns)
    comp_q, ifn_q = q["composition"][COMPOSITION_ROW], q["all_cd8"][IFN_ROW]
    comp_up = q["composition_sign"][COMPOSITION_ROW] > 0
    ifn_up = q["all_cd8_sign"][IFN_ROW] > 0
    ifn_rows = [c for c in IFN_ROWS if c in q["all_cd8"]]
    return {
        "composition_found": float(((comp_q < ALPHA) & comp_up).mean()),
        "ifn_found": float(((ifn_q < ALPHA) & ifn_up).mean()),
        "either_called": float(((comp_q < ALPHA) | (ifn_q < ALPHA)).mean()),
        "any_row_called": float(
            (
                (q["composition"].min(axis=1) < ALPHA)
                | (q["all_cd8"][ifn_rows].min(axis=1) < ALPHA)
            ).mean()
        ),
    }


def patients_for_power(
    table: pd.DataFrame, *, key: str, power: float, draws: int, seed: int, low: int = 3
) -> int | None:
    """Smallest n per group at which the resampled rate `key` (`resampled_rates`) reaches
    `power`, by bisection between `low` and the smaller pool; None when the pool is too small."""
    high = int(table[RESPONSE].value_counts().min())

    def rate(n: int) -> float:
        return resampled_rates(table, n_per_group=n, draws=draws, seed=seed + n)[key]

    if rate(high) < power:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if rate(middle) >= power:
            high = middle
        else:
            low = middle
    return high


def bootstrap_runs(table: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The runs (seeds) of `table` drawn with replacement, each drawn copy a run of its own."""
    runs = table["run"].unique()
    chosen = rng.choice(runs, size=runs.size, replace=True)
    parts = [table[table["run"] == run].assign(run=f"{run}#{i}") for i, run in enumerate(chosen)]
    return pd.concat(parts, ignore_index=True)


def noether_n(p_superiority: float, *, alpha: float, power: float) -> float:
    """Patients per group for a two-sided Wilcoxon-Mann-Whitney test at `alpha` to reach `power`
    when P(X > Y) = `p_superiority` (Noether 1987, equal groups)."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z**2 / (6 * (p_superiority - 0.5) ** 2))


def effect_sizes(table: pd.DataFrame, column: str) -> dict[str, float]:
    """Cliff's delta and Hedges' g (non-responders minus responders) of the pooled patients."""
    x = table.loc[table[RESPONSE] == NON_RESPONDER, column].to_numpy(float)
    y = table.loc[table[RESPONSE] == RESPONDER, column].to_numpy(float)
    return {
        "n_nr": x.size,
        "n_r": y.size,
        CLIFFS_DELTA: cliffs_delta(x, y),
        HEDGES_G: hedges_g(x, y),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("patients", nargs="+", help="validate_cohort.py --patients-out tables")
    parser.add_argument(
        "--n-per-group", type=int, nargs="+", default=[8, 16, 24, 32, 40, 48, 64, 80, 96, 128]
    )
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--power", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-centre", action="store_true", help="pool without centring per seed")
    parser.add_argument(
        "--bootstrap-runs",
        type=int,
        default=0,
        help="redo the n for --power this many times on runs (seeds) drawn with replacement",
    )
    parser.add_argument("--out", help="resampled rates by n (TSV)")
    args = parser.parse_args(argv)
    table = load(args.patients, centre=not args.no_centre)
    groups = row_groups(table.columns)
    print(f"row groups (BH families): {groups}")
    rows = []
    for condition, sub in table.groupby("condition"):
        counts = sub[RESPONSE].value_counts()
        print(
            f"\n{condition}: {sub['run'].nunique()} runs, pooled {counts.get(NON_RESPONDER, 0)} "
            f"non-responders / {counts.get(RESPONDER, 0)} responders"
        )
        for n in args.n_per_group:
            if n > counts.min():
                continue
            rates = resampled_rates(sub, n_per_group=n, draws=args.draws, seed=args.seed + n)
            rows.append({"condition": condition, "n_per_group": n, **rates})
            print(f"  n = {n:3d} per group: " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()))
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, sep="\t", index=False)
    planted = table[table["condition"] == "planted"]
    if not len(planted):
        return
    print(
        f"\nresampling: patients per group for power {args.power} (bisection, {args.draws} draws)"
    )
    rng = np.random.default_rng(args.seed)
    for key in ("composition_found", "ifn_found"):
        n = patients_for_power(planted, key=key, power=args.power, draws=args.draws, seed=args.seed)
        line = f"  {key}: {n}"
        if args.bootstrap_runs:
            again = [
                patients_for_power(
                    bootstrap_runs(planted, rng),
                    key=key,
                    power=args.power,
                    draws=args.draws,
                    seed=args.seed,
                )
                for _ in range(args.bootstrap_runs)
            ]
            found = np.array([np.nan if v is None else v for v in again], float)
            low, mid, high = np.nanpercentile(found, [5, 50, 95])
            line += (
                f"; over {args.bootstrap_runs} bootstraps of the runs: median {mid:.0f}, "
                f"5-95 % {low:.0f}-{high:.0f} ({int(np.isnan(found).sum())} beyond the pool)"
            )
        print(line, flush=True)
    print(f"\nNoether: patients per group for power {args.power} (two-sided Mann-Whitney)")
    for name, column, family in (
        ("Tex_term composition", COMPOSITION_ROW, "composition"),
        ("all-CD8 IFN-I", IFN_ROW, "all_cd8"),
    ):
        m = len(groups[family])
        sizes = effect_sizes(planted, column)
        from_delta = (1 + sizes[CLIFFS_DELTA]) / 2
        from_g = float(stats.norm.cdf(sizes[HEDGES_G] / np.sqrt(2)))
        print(
            f"  {name}: pooled {sizes['n_nr']} / {sizes['n_r']} patients, Cliff's delta "
            f"{sizes[CLIFFS_DELTA]:.3f} (P {from_delta:.3f}), Hedges' g {sizes[HEDGES_G]:.3f} "
            f"(normal P {from_g:.3f}); BH family of {m} rows"
        )
        for label, p_sup in (("delta", from_delta), ("g", from_g)):
            loose = noether_n(p_sup, alpha=ALPHA, power=args.power)
            strict = noether_n(p_sup, alpha=ALPHA / m, power=args.power)
            print(f"    from {label}: alpha 0.05 -> {loose:.0f}, alpha 0.05/{m} -> {strict:.0f}")


if __name__ == "__main__":
    main()
