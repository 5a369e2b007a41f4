"""IFN-I and LPO programs: per-cell scores, trends along pseudotime, the tidy cell table, summary.

Scores are rank-based (UCell, ``texflow.scoring.ucell``), so each cell is scored on its own
ranking and the score does not depend on the rest of the dataset or on the value type. The LPO
program is signed: drivers and suppressors are scored separately and ``score_lpo_signed`` is
drivers - suppressors (both UCell scores live in [0, 1], so the difference is in [-1, 1]).

Trends: a penalised spline GAM (pygam ``LinearGAM``; Servén & Brummitt 2018) of each score on
pseudotime, with the smoothing penalty chosen once by generalised cross-validation on all lineage
cells; the band is a percentile bootstrap over *patients* (resample patients with replacement and
refit), so it reflects patient-to-patient variation rather than cell counts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from . import stats
from .contract import (
    CELL_ID,
    CELL_STATE_BASIS_KEY,
    CELL_STATE_CONFIDENCE,
    CELL_STATE_KEY,
    CLIFFS_DELTA,
    CLUSTER,
    COVARIATE,
    DATASET,
    EFFECT,
    EFFECT_TYPE,
    EXHAUSTION_AXIS_KEY,
    EXHAUSTION_AXIS_PROGRAMS,
    FIT,
    HEDGES_G,
    LAM,
    LOWER,
    N_BOOTSTRAP_OK,
    N_CELLS,
    N_NON_RESPONDERS,
    N_PATIENTS,
    N_PATIENTS_POSITIVE,
    N_PERMUTATIONS,
    N_RESPONDERS,
    N_SPLINES,
    NOTE,
    P_ADJ,
    P_VALUE,
    PATIENT,
    PROGRAM,
    PSEUDOTIME,
    RESPONSE,
    SAMPLE,
    SCORE_PREFIX,
    SKIP_ASSOCIATIONS,
    SKIP_COMPOSITION,
    SKIP_RESPONSE,
    SKIP_TRAJECTORY,
    SKIP_TRENDS,
    SKIPPED,
    SKIPPED_PREFIX,
    STATE,
    STATE_CONFIDENCE,
    STATE_PROGRAMS,
    TEST,
    UNIT,
    UPPER,
)
from .errors import InputDataError
from .features import downsample_counts, positive_per_cell
from .signatures import GeneProgram
from .stage import SkipNotes, StageResult, texflow_uns

logger = logging.getLogger(__name__)

#: Programs scored by default (names in ``texflow.signatures.load_programs``).
DEFAULT_PROGRAMS: tuple[str, ...] = (
    "ifn_i_core",
    "ifn_alpha_hallmark",
    "lpo_drivers",
    "lpo_suppressors",
    "tpex",
    "tex_term",
)
#: Programs whose genes are kept out of the trajectory features (tested along it).
TESTED_PROGRAMS: tuple[str, ...] = (
    "ifn_i_core",
    "ifn_alpha_hallmark",
    "lpo_drivers",
    "lpo_suppressors",
)
SIGNED_LPO = "lpo_signed"
LPO_PARTS = ("lpo_drivers", "lpo_suppressors")
CELL_COLUMNS = (
    SAMPLE,
    PATIENT,
    RESPONSE,
    CLUSTER,
    STATE,
    STATE_CONFIDENCE,
    CELL_STATE_KEY,
    CELL_STATE_CONFIDENCE,
    CELL_STATE_BASIS_KEY,
    EXHAUSTION_AXIS_KEY,
    PSEUDOTIME,
)


def load_selected_programs(
    *, organism: str, names: Sequence[str] = DEFAULT_PROGRAMS, extra_file: str | None = None
) -> dict:
    """The programs `names` plus every program of `extra_file`, from texflow.signatures."""
    from . import signatures

    programs = signatures.load_programs(organism, extra=extra_file or None)
    missing = [n for n in names if n not in programs]
    if missing:
        raise InputDataError(
            f"program(s) {missing} are not defined (known: {sorted(programs)})",
            path=extra_file or None,
        )
    selected = {n: programs[n] for n in names}
    if extra_file:
        extra_names = set(signatures.load_programs(organism, extra=None))
        for name, program in programs.items():
            if name not in extra_names and name not in selected:
                selected[name] = program
    return selected


def program_genes(programs: dict, names: Sequence[str], *, var_names=None) -> set[str]:
    """All genes (up and down) of the programs `names` in `programs`.

    With `var_names`, the symbols the dataset uses for them (old/new aliases) are added too, so
    that excluding these genes also excludes e.g. WARS when the program lists WARS1.
    """
    from . import signatures

    chosen = {n: programs[n] for n in names if n in programs}
    versions = [chosen]
    if var_names is not None:
        versions.append(signatures.resolve_aliases(chosen, var_names))
    genes: set[str] = set()
    for version in versions:
        for program in version.values():
            genes |= set(program.up) | set(program.down)
    return genes


def trend_programs(program_names: Sequence[str]) -> list[str]:
    """Programs that get a trend figure: `program_names` plus lpo_signed when both LPO halves are
    listed (programs of an extra file get one too, named after them)."""
    names = list(program_names)
    if "lpo_drivers" in names and "lpo_suppressors" in names:
        names.insert(names.index("lpo_suppressors") + 1, SIGNED_LPO)
    return names


def equalised_counts(
    adata: ad.AnnData, *, quantile: float = 0.1, seed: int = 0, copy: bool = True
) -> ad.AnnData | None:
    """Counts downsampled to a common depth (the `quantile` of library sizes), or None.

    A rank score (UCell) of a gene set with many lowly expressed genes rises with a cell's depth:
    the deeper the cell, the more of those genes are detected and ranked. Measured on simulated
    counts with flat IFN-I genes: UCell IFN-I score vs library size rho = 0.64, and a flat score
    "rising" along pseudotime (rho 0.11-0.15, called in 2/2 seeds) because depth drifts along the
    lineage; after downsampling to a common depth, rho = 0.002. Cells shallower than the target
    keep their counts. Only for count data (``layers["counts"]``); None otherwise. With
    ``copy=False`` ``layers["counts"]`` itself is downsampled (no copy of the matrix).
    """
    if "counts" not in adata.layers:
        return None
    matrix = adata.layers["counts"]
    if not (sparse.issparse(matrix) and matrix.format == "csr"):
        matrix = sparse.csr_matrix(matrix)  # a copy: only a CSR layer is downsampled in place
    counts = ad.AnnData(
        X=matrix.copy() if copy else matrix,
        obs=pd.DataFrame(index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
    )
    depth = np.asarray(counts.X.sum(axis=1)).ravel()
    target = int(max(1, np.quantile(depth, quantile)))
    downsample_counts(counts.X, counts_per_cell=target, seed=seed)
    counts.uns["target_depth"] = target
    return counts


def score_programs(
    adata: ad.AnnData,
    programs: dict,
    *,
    max_rank: int = 1500,
    equalise_depth: bool = True,
    depth_quantile: float = 0.1,
    seed: int = 0,
    overwrite_counts: bool = False,
    skipped: MutableMapping[str, str] | None = None,
) -> pd.DataFrame:
    """Score every program per cell (UCell) and add the signed LPO score.

    With `equalise_depth` and count data, cells are scored on counts downsampled to a common
    depth (see `equalised_counts`), so a score does not follow sequencing depth; for other value
    types the reason it could not be done is recorded in `skipped` (default
    ``uns["texflow"]["skipped"]``; a stage passes its `texflow.stage.SkipNotes`). With
    `overwrite_counts`, ``layers["counts"]`` itself is downsampled, for a caller that keeps
    the original counts on disk (the programs stage: one copy of the counts less, 1.2 GB at
    60k CD8 cells).

    Writes
    ------
    ``obs["score_<program>"]`` for each program, ``obs["score_lpo_signed"]`` when both
    ``lpo_drivers`` and ``lpo_suppressors`` are scored; ``uns["texflow"]["scoring"]``.

    Returns
    -------
    The coverage table of texflow.signatures (genes of each program found in ``var_names``).
    """
    from . import scoring, signatures

    uns = adata.uns.setdefault("texflow", {})
    organism = uns.get("organism") or None
    # old and new symbols (WARS/WARS1, ...): score the genes under the names the data use
    programs = signatures.resolve_aliases(programs, adata.var_names, organism=organism)
    target = adata
    info = {"depth_equalised": False, "target_depth": 0}
    if equalise_depth:
        counts = equalised_counts(
            adata, quantile=depth_quantile, seed=seed, copy=not overwrite_counts
        )
        if counts is None:
            reason = (
                f"value type {uns.get('value_type', '?')!r} has no counts: scores were not "
                "depth-equalised (rank scores may follow sequencing depth)"
            )
            if skipped is None:
                skipped = uns.setdefault("skipped", {})
            skipped["depth_equalisation"] = reason
            logger.warning("%s", reason)
        else:
            target = counts
            info = {"depth_equalised": True, "target_depth": int(counts.uns["target_depth"])}
            logger.info("scoring on counts downsampled to %d UMIs per cell", info["target_depth"])
    # one definition of each score: programs the states stage already scored (tpex, tex_term;
    # recorded in uns["ucell"]) keep its scores, which its state labels and exhaustion axis use
    reused = [
        n for n in programs if n in adata.uns.get("ucell", {}) and f"{SCORE_PREFIX}{n}" in adata.obs
    ]
    if reused:
        logger.info("scores of %s reused from the states stage", ", ".join(reused))
    info["reused_from_states"] = reused
    to_score = {n: p for n, p in programs.items() if n not in reused}
    if to_score:
        scoring.ucell(target, to_score, max_rank=max_rank, key_prefix=SCORE_PREFIX)
    for name in to_score:
        adata.obs[f"{SCORE_PREFIX}{name}"] = target.obs[f"{SCORE_PREFIX}{name}"].to_numpy()
    if "lpo_drivers" in programs and "lpo_suppressors" in programs:
        adata.obs[f"{SCORE_PREFIX}{SIGNED_LPO}"] = adata.obs[f"{SCORE_PREFIX}lpo_drivers"].astype(
            float
        ) - adata.obs[f"{SCORE_PREFIX}lpo_suppressors"].astype(float)
    uns["scoring"] = info
    return signatures.coverage_table(programs, adata.var_names)


def genes_detected(adata: ad.AnnData) -> np.ndarray:
    """Genes detected per cell (from ``layers["counts"]`` when present, else X > 0).

    Rank scores (UCell) rise with it, so the association test partials it out.
    """
    matrix = adata.layers["counts"] if "counts" in adata.layers else adata.X
    return positive_per_cell(matrix).astype(float)  # (matrix > 0).sum(axis=1), no copy


def score_columns(adata: ad.AnnData, programs: Sequence[str]) -> list[str]:
    """The ``score_*`` columns of the programs `programs` (plus signed LPO), as present in obs."""
    return [
        f"{SCORE_PREFIX}{n}" for n in trend_programs(programs) if f"{SCORE_PREFIX}{n}" in adata.obs
    ]


# ----------------------------------------------------------------------------------------------
# trends


def _gam(n_splines: int):
    from pygam import LinearGAM, s

    return LinearGAM(s(0, n_splines=n_splines))


def _basis(gam, x: np.ndarray):
    """The fitted GAM's spline basis (sparse CSC model matrix) at `x` (n x 1), its fitted knots.

    ``gam.terms.build_columns``, the public method pygam's own ``predict`` evaluates.
    """
    return gam.terms.build_columns(np.asarray(x, dtype=float))


def _penalty(gam) -> np.ndarray:
    """The fitted GAM's lam-weighted penalty, with pygam's conditioning ridge on the diagonal."""
    penalty = gam.terms.build_penalties().toarray()
    penalty[np.diag_indices_from(penalty)] += np.sqrt(np.finfo(float).eps)
    return penalty


def penalised_refit(gam, x: np.ndarray, y: np.ndarray, *, grid: np.ndarray) -> np.ndarray:
    """Refit a fitted `pygam.LinearGAM` (fixed lam, no constraints) to (`x`, `y`); predict `grid`.

    The solution pygam's PIRLS converges to for a Gaussian identity-link GAM, in closed form:
    ``(B'B + P + sqrt(eps) I)^-1 B'y`` with B the GAM's spline basis (its knots, from the data
    it was first fitted to) and P its lam-weighted penalty.
    """
    basis = _basis(gam, x)
    coef = np.linalg.solve((basis.T @ basis).toarray() + _penalty(gam), basis.T @ y)
    return _basis(gam, grid[:, None]) @ coef


def trend(
    pseudotime: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    *,
    grid: np.ndarray,
    n_splines: int = 8,
    n_bootstrap: int = 200,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """GAM fit of `score` on `pseudotime` over `grid`, with a bootstrap band over `groups`.

    lam is chosen by pygam's gridsearch (GCV) on all cells; each bootstrap resample of the
    groups is refitted with that lam on the same spline basis (`penalised_refit`'s solution).
    A resample's B'B and B'y are sums over its groups, so they are computed once per group:
    pygam rebuilt the basis and its fit statistics for each of the ~200 refits per program (at
    100k cells, 54 of the programs stage's 109 s; measured).

    Returns a frame with ``pseudotime``, ``fit``, ``lower``, ``upper`` (2.5 and 97.5 percentiles
    of the bootstrap fits) and ``n_bootstrap_ok``.
    """
    x, y = pseudotime[:, None], score
    n_splines = int(max(4, min(n_splines, np.unique(pseudotime).size // 3)))
    gam = _gam(n_splines).gridsearch(x, y, progress=False, lam=np.logspace(-2, 4, 9))
    lam = float(np.ravel(gam.lam)[0])
    grid_basis = _basis(gam, grid[:, None])
    fit = gam.predict(grid[:, None])
    basis, penalty = _basis(gam, x).tocsr(), _penalty(gam)
    unique = pd.unique(groups)
    index = {g: np.flatnonzero(groups == g) for g in unique}
    gram = {g: (basis[rows].T @ basis[rows]).toarray() for g, rows in index.items()}
    moment = {g: basis[rows].T @ y[rows] for g, rows in index.items()}
    distinct = {g: np.unique(pseudotime[rows]) for g, rows in index.items()}
    boots = []
    for _ in range(n_bootstrap):
        picks = rng.choice(unique, size=unique.size, replace=True)
        if max(distinct[g].size for g in picks) < n_splines + 2:
            n_distinct = np.unique(np.concatenate([distinct[g] for g in picks])).size
            if n_distinct < n_splines + 2:
                continue  # a resample too small to fit a spline of this size
        coef = np.linalg.solve(sum(gram[g] for g in picks) + penalty, sum(moment[g] for g in picks))
        boots.append(grid_basis @ coef)
    if boots:
        lower, upper = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
    else:
        lower = upper = np.full(grid.size, np.nan)
    return pd.DataFrame(
        {
            PSEUDOTIME: grid,
            FIT: fit,
            LOWER: lower,
            UPPER: upper,
            N_BOOTSTRAP_OK: len(boots),
            LAM: lam,
            N_SPLINES: n_splines,
        }
    )


def trends(
    adata: ad.AnnData,
    *,
    score_keys: Sequence[str],
    pseudotime_key: str = "pseudotime",
    patient_key: str = "patient",
    n_grid: int = 50,
    n_splines: int = 8,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Smoothed trend of every score along pseudotime (lineage cells only), bootstrap over patients.

    Without patient labels the bootstrap resamples cells (``unit`` column says so).

    Returns
    -------
    Long table: program, unit, pseudotime (grid), fit, lower, upper, n_cells, n_patients.
    Empty (with the reason logged) when there is no pseudotime.
    """
    from .stats import UNIT_PATIENTS, _labels, choose_unit

    pt = adata.obs[pseudotime_key].to_numpy(dtype=float)
    ok = np.isfinite(pt)
    columns = [
        PROGRAM,
        UNIT,
        PSEUDOTIME,
        FIT,
        LOWER,
        UPPER,
        N_CELLS,
        N_PATIENTS,
        N_BOOTSTRAP_OK,
        LAM,
        N_SPLINES,
    ]
    if ok.sum() < 10:
        logger.warning("trends skipped: %d cells with pseudotime", ok.sum())
        return pd.DataFrame(columns=columns)
    obs = adata.obs.loc[ok]
    unit = choose_unit(obs, patient_key=patient_key)
    if unit == UNIT_PATIENTS:
        groups = _labels(obs, patient_key).fillna("unlabelled").to_numpy()
    else:
        groups = np.arange(int(ok.sum()))  # every cell its own unit
    grid = np.linspace(np.nanmin(pt), np.nanmax(pt), n_grid)
    tables = []
    for key in score_keys:
        rng = np.random.default_rng(seed)  # same resamples for every program
        table = trend(
            pt[ok],
            obs[key].to_numpy(dtype=float),
            groups,
            grid=grid,
            n_splines=n_splines,
            n_bootstrap=n_bootstrap,
            rng=rng,
        )
        table.insert(0, PROGRAM, key.removeprefix(SCORE_PREFIX))
        table.insert(1, UNIT, unit)
        table[N_CELLS] = int(ok.sum())
        table[N_PATIENTS] = int(pd.unique(groups).size) if unit == UNIT_PATIENTS else 0
        tables.append(table)
    return pd.concat(tables, ignore_index=True)[columns]


# ----------------------------------------------------------------------------------------------
# outputs


def cells_table(adata: ad.AnnData) -> pd.DataFrame:
    """One row per cell: cell_id, sample, patient, response, cluster, state, state_confidence,
    pseudotime and every ``score_*`` column (missing contract columns are written as NA)."""
    table = pd.DataFrame({CELL_ID: adata.obs_names.astype(str)}, index=adata.obs_names)
    for column in CELL_COLUMNS:
        table[column] = adata.obs[column].values if column in adata.obs else pd.NA
    for column in adata.obs.columns:
        if column.startswith(SCORE_PREFIX):
            table[column] = adata.obs[column].astype(float).values
    return table.reset_index(drop=True)


def _clean(value):
    """JSON-safe value: NaN/inf -> None, numpy scalars and arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):  # a list in uns comes back from the h5ad as an array
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def build_summary(
    adata: ad.AnnData,
    *,
    associations: pd.DataFrame,
    state_comparison: pd.DataFrame,
    response_comparison: pd.DataFrame,
    response_skipped: str,
) -> dict:
    """Headline numbers of a dataset, JSON-ready."""
    from .stats import _labels

    uns = adata.uns.get("texflow", {})
    skipped = dict(uns.get("skipped", {}))
    if response_skipped:
        skipped["response_comparison"] = response_skipped
    obs = adata.obs
    summary = {
        DATASET: uns.get(DATASET, ""),
        "organism": uns.get("organism", ""),
        N_CELLS: int(adata.n_obs),
        N_PATIENTS: int(_labels(obs, "patient").nunique()),
        "n_lineage_cells": int(obs["in_lineage"].sum()) if "in_lineage" in obs else 0,
        "n_cells_with_pseudotime": int(np.isfinite(obs[PSEUDOTIME].astype(float)).sum())
        if PSEUDOTIME in obs
        else 0,
        "cells_per_state": {
            str(k): int(v) for k, v in _labels(obs, "state").value_counts().items()
        },
        "trajectory": _clean(dict(uns.get("trajectory", {}))),
        "skipped": skipped,
        "association_with_pseudotime": {},
        "tex_term_vs_tpex": {},
        "responders_vs_non_responders": {}
        if not response_skipped
        else {"skipped": response_skipped},
    }
    for row in associations.to_dict("records"):
        summary["association_with_pseudotime"][row[PROGRAM]] = _clean(
            {
                k: row.get(k)
                for k in (
                    EFFECT,
                    EFFECT_TYPE,
                    P_VALUE,
                    P_ADJ,
                    N_PATIENTS,
                    N_PATIENTS_POSITIVE,
                    N_CELLS,
                    UNIT,
                    NOTE,
                )
            }
        )
    for row in state_comparison.to_dict("records"):
        summary["tex_term_vs_tpex"][row[PROGRAM]] = _clean(
            {
                k: row.get(k)
                for k in (
                    EFFECT,
                    EFFECT_TYPE,
                    TEST,
                    P_VALUE,
                    P_ADJ,
                    N_PATIENTS,
                    N_CELLS,
                    UNIT,
                    NOTE,
                )
            }
        )
    if not response_skipped:
        for row in response_comparison.to_dict("records"):
            summary["responders_vs_non_responders"].setdefault(row[STATE], {})[row[PROGRAM]] = (
                _clean(
                    {
                        k: row.get(k)
                        for k in (
                            EFFECT,
                            CLIFFS_DELTA,
                            HEDGES_G,
                            P_VALUE,
                            P_ADJ,
                            N_RESPONDERS,
                            N_NON_RESPONDERS,
                            N_CELLS,
                            UNIT,
                            NOTE,
                        )
                    }
                )
            )
    return _clean(summary)


def draw_trends(
    adata: ad.AnnData,
    trend_table: pd.DataFrame,
    associations: pd.DataFrame,
    outdir,
    *,
    program_names: Sequence[str] | None = None,
) -> list[Path]:
    """``trend_<program>.png`` in `outdir` for every tested program (a note when skipped).

    `program_names` defaults to the programs of `associations` (or of `trend_table`); the
    state programs the states stage scored are not redrawn here.
    """
    from .plotting import trajectory as plots

    outdir = Path(outdir)
    if program_names is None:
        names = [
            p
            for p in pd.concat(
                [
                    associations.get(PROGRAM, pd.Series(dtype=str)),
                    trend_table.get(PROGRAM, pd.Series(dtype=str)),
                ]
            )
            .dropna()
            .astype(str)
            .unique()
            if p
        ]
        program_names = names or [p for p in trend_programs(DEFAULT_PROGRAMS)]
    keys = [f"{SCORE_PREFIX}{p}" for p in program_names if f"{SCORE_PREFIX}{p}" in adata.obs]
    pt = adata.obs[PSEUDOTIME].to_numpy(dtype=float)
    lineage = np.isfinite(pt)
    skipped = adata.uns.get("texflow", {}).get("skipped", {})
    paths = []
    for key in keys:
        program = key.removeprefix(SCORE_PREFIX)
        path = outdir / f"trend_{program}.png"
        rows = (
            trend_table[trend_table[PROGRAM].astype(str) == program]
            if PROGRAM in trend_table
            else trend_table.iloc[:0]
        )
        if rows.empty or not lineage.any():
            reason = skipped.get("trends") or skipped.get("trajectory") or "no trend was fitted"
            paths.append(plots.message_figure(path, title=f"{program}: no trend", message=reason))
            continue
        cells = pd.DataFrame(
            {
                PSEUDOTIME: pt[lineage],
                "score": adata.obs.loc[lineage, key].astype(float).to_numpy(),
                STATE: adata.obs.loc[lineage, STATE].astype(str).to_numpy()
                if STATE in adata.obs
                else "",
            }
        )
        assoc = associations[associations[PROGRAM].astype(str) == program]
        paths.append(
            plots.program_trend(
                cells,
                rows,
                path,
                program=program,
                association=assoc.iloc[0].to_dict() if len(assoc) else None,
            )
        )
    return paths


def write_json(data: dict, path: str | PathLike) -> None:
    """Write `data` as indented JSON atomically."""
    from .utils import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------------------------
# the whole stage


#: Config key of the ``programs`` / ``stats`` section -> field of `AnalyseOptions` (the schema,
#: workflow/schemas/config/{programs,stats}.schema.yaml, holds each key's default and reason).
ANALYSE_OPTIONS: dict[tuple[str, str], str] = {
    ("programs", "max_rank"): "max_rank",
    ("programs", "equalise_depth"): "equalise_depth",
    ("programs", "depth_quantile"): "depth_quantile",
    ("programs", "trend_grid"): "n_grid",
    ("programs", "trend_splines"): "n_splines",
    ("programs", "n_bootstrap"): "n_bootstrap",
    ("programs", "seed"): "seed",
    ("stats", N_PERMUTATIONS): N_PERMUTATIONS,
    ("stats", "min_cells_per_patient"): "min_cells_per_patient",
    ("stats", "min_cells_per_group"): "min_cells_per_group",
    ("stats", "min_paired_patients"): "min_paired_patients",
    ("stats", "min_cells_composition"): "min_cells_composition",
    ("stats", "adjust_for"): "adjust_for",
    ("stats", "seed"): "stats_seed",
}


@dataclass(frozen=True)
class AnalyseOptions:
    """Options of the programs stage (`analyse`), one per config key of `ANALYSE_OPTIONS`.

    Defaults and reasons: workflow/schemas/config/{programs,stats}.schema.yaml (a test holds
    these defaults to the schema's). Build from the config with `options_from_config`.

    Attributes
    ----------
    max_rank
        UCell rank cap (programs.max_rank).
    n_grid, n_splines, n_bootstrap
        Pseudotime grid points, GAM spline basis size and patient bootstrap resamples of the
        trends (programs.trend_grid, trend_splines, n_bootstrap).
    n_permutations
        Permutations of the association tests (stats.n_permutations).
    min_cells_per_patient, min_cells_per_group, min_paired_patients, min_cells_composition
        Minimum cells (or patients) for a patient to count in an association, a group in a
        comparison, a paired state comparison, a patient in the composition (stats.*).
    adjust_for
        ``"genes_detected"`` partials the log genes detected per cell out of the tests;
        ``"none"`` (stats.adjust_for).
    equalise_depth, depth_quantile
        Score count data on counts downsampled to the `depth_quantile` of library sizes
        (`equalised_counts`; programs.equalise_depth, depth_quantile).
    seed
        Seed of the downsampling and the bootstrap (programs.seed).
    stats_seed
        Seed of the permutation tests (stats.seed); None: `seed`.
    """

    max_rank: int = 1500
    n_grid: int = 50
    n_splines: int = 8
    n_bootstrap: int = 200
    n_permutations: int = 2000
    min_cells_per_patient: int = 10
    min_cells_per_group: int = 3
    min_paired_patients: int = 3
    min_cells_composition: int = 10
    adjust_for: str = "none"
    equalise_depth: bool = True
    depth_quantile: float = 0.1
    seed: int = 0
    stats_seed: int | None = None

    @property
    def test_seed(self) -> int:
        """The seed of the permutation tests: `stats_seed`, or `seed` when it is None."""
        return self.seed if self.stats_seed is None else self.stats_seed

    def recorded(self, programs: Sequence[str]) -> dict:
        """``uns["texflow"]["params"]["programs"]``: the programs scored and every option but
        `stats_seed` (None cannot be stored in h5ad; the stats section records its own)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stats_seed"}
        return {"programs": list(programs), **values}


def options_from_config(programs_section: Mapping, stats_section: Mapping) -> AnalyseOptions:
    """`AnalyseOptions` from the config's ``programs`` and ``stats`` sections."""
    sections = {"programs": programs_section, "stats": stats_section}
    return AnalyseOptions(
        **{field: sections[stage][key] for (stage, key), field in ANALYSE_OPTIONS.items()}
    )


def axis_shared_genes(programs: Mapping[str, GeneProgram]) -> dict[str, list[str]]:
    """Program -> its genes that also define the exhaustion axis
    (`contract.EXHAUSTION_AXIS_PROGRAMS`)."""
    axis = set()
    for name in EXHAUSTION_AXIS_PROGRAMS:
        if name in programs:
            axis |= set(programs[name].up) | set(programs[name].down)
    return {
        name: sorted((set(program.up) | set(program.down)) & axis)
        for name, program in programs.items()
        if name not in EXHAUSTION_AXIS_PROGRAMS and (set(program.up) | set(program.down)) & axis
    }


def analyse(
    adata: ad.AnnData,
    *,
    programs: dict,
    program_names: Sequence[str],
    options: AnalyseOptions | None = None,
    overwrite_counts: bool = False,
) -> StageResult:
    """Score, smooth and test every program on `adata` (the trajectory stage's output), in place.

    Parameters
    ----------
    adata
        CD8 T cells after the trajectory stage: obs ``patient``, ``response``, ``state``,
        ``cell_state``, ``pseudotime``, ``exhaustion_axis``; ``layers["counts"]`` for count data.
    programs
        The programs to score (`load_selected_programs`).
    program_names
        The configured programs (programs.programs), listed first in the tables.
    options
        Scoring, trend and test options (`options_from_config`); default `AnalyseOptions()`.
    overwrite_counts
        See `score_programs` (``layers["counts"]`` is left downsampled).

    Returns
    -------
    StageResult
        Tables program_coverage, trends, associations, axis_associations
        (`stats.axis_associations`: along the exhaustion axis of the lineage cells),
        state_comparison, response_comparison (composition rows first,
        `stats.compare_composition`), composition (`stats.patient_composition`), cells
        (`cells_table`); notes: the steps not run and why (`contract.SKIP_RESPONSE` holds why
        the response comparison was not run).

    Writes
    ------
    ``obs["score_*"]`` (`score_programs`), ``obs["pseudotime"]`` (NaN when missing),
    ``uns["texflow"]["params"]["programs"]``, ``uns["texflow"]["scoring"]``;
    ``uns["texflow"]["skipped"]`` entries for the steps not run.
    """
    options = options or AnalyseOptions()
    uns = texflow_uns(adata)
    uns["params"]["programs"] = options.recorded(programs)
    skipped = SkipNotes(adata)
    # before scoring, which may downsample the counts in place
    covariate = _covariate(adata, adjust_for=options.adjust_for)
    coverage = score_programs(
        adata, programs, max_rank=options.max_rank, equalise_depth=options.equalise_depth,
        depth_quantile=options.depth_quantile, seed=options.seed,
        overwrite_counts=overwrite_counts, skipped=skipped,
    )  # fmt: skip
    keys = score_columns(adata, [*program_names, *[p for p in programs if p not in program_names]])
    scores = adata.obs[keys].astype(float).rename(columns=lambda c: c.removeprefix(SCORE_PREFIX))
    trend_table, associations = _along_pseudotime(
        adata, keys=keys, scores=scores, covariate=covariate, options=options, skipped=skipped
    )
    axis = stats.axis_associations(
        adata.obs, scores, shared_genes=axis_shared_genes(programs),
        min_cells_per_patient=options.min_cells_per_patient,
        n_permutations=options.n_permutations, seed=options.test_seed, **covariate,
    )  # fmt: skip
    state_comparison = stats.compare_states(
        adata.obs, scores, min_cells=options.min_cells_per_group,
        min_paired=options.min_paired_patients,
    )  # fmt: skip
    response, composition = _response_and_composition(
        adata.obs, scores, options=options, skipped=skipped
    )
    tested = _with_coverage_caveats(
        coverage,
        {
            "associations": associations,
            "axis_associations": axis,
            "state_comparison": state_comparison,
            "response_comparison": response,
        },
    )
    tables = {
        "program_coverage": coverage,
        "trends": trend_table,
        "associations": tested["associations"],
        "axis_associations": tested["axis_associations"],
        "state_comparison": tested["state_comparison"],
        "response_comparison": tested["response_comparison"],
        "composition": composition,
        "cells": cells_table(adata),
    }
    return StageResult("programs", tables, dict(skipped.recorded))


def _covariate(adata: ad.AnnData, *, adjust_for: str) -> dict:
    """The tests' `covariate` and `covariate_name` keywords: the log genes detected per cell
    with ``adjust_for="genes_detected"``, none otherwise."""
    if adjust_for != "genes_detected":
        return {COVARIATE: None, "covariate_name": ""}
    return {
        COVARIATE: np.log1p(genes_detected(adata)),
        "covariate_name": "log genes detected per cell",
    }


def _pseudotime_usable(adata: ad.AnnData, *, skipped: MutableMapping[str, str]) -> bool:
    """Whether trends and associations can be run along obs ``pseudotime``: >= 10 cells have
    one and the trajectory stage found it orders Tpex before Tex_term (else the reason goes
    to `skipped`). Writes obs ``pseudotime`` (NaN) when missing."""
    if PSEUDOTIME not in adata.obs:
        adata.obs[PSEUDOTIME] = np.nan
    usable = bool(np.isfinite(adata.obs[PSEUDOTIME].astype(float)).sum() >= 10)
    info = texflow_uns(adata).get("trajectory", {})
    if usable and not info.get("orders_states", True):
        skipped[SKIP_TRAJECTORY] = (
            f"the pseudotime puts only {100 * float(info['state_order_auc']):.0f}% of "
            "(Tpex, Tex_term) cell pairs in that order, so it is not the Tpex -> Tex_term axis"
        )
        return False
    return usable


def _along_pseudotime(
    adata: ad.AnnData,
    *,
    keys: list[str],
    scores: pd.DataFrame,
    covariate: dict,
    options: AnalyseOptions,
    skipped: MutableMapping[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trends, associations) of every score along the pseudotime, or one row each saying why
    they were skipped (the reason also goes to `skipped`)."""
    if not _pseudotime_usable(adata, skipped=skipped):
        reason = skipped.get(SKIP_TRAJECTORY, "no cell has a pseudotime")
        for step in (SKIP_TRENDS, SKIP_ASSOCIATIONS):
            skipped[step] = f"no Tpex -> Tex_term pseudotime: {reason}"
        logger.warning("trends and associations skipped: %s", reason)
        trend_table = pd.DataFrame(
            [
                {
                    PROGRAM: "",
                    UNIT: "",
                    PSEUDOTIME: np.nan,
                    FIT: np.nan,
                    LOWER: np.nan,
                    UPPER: np.nan,
                    NOTE: f"{SKIPPED_PREFIX}{reason}",
                }
            ]
        )
        associations = pd.DataFrame(
            [
                {
                    PROGRAM: "",
                    UNIT: "",
                    TEST: SKIPPED,
                    EFFECT: np.nan,
                    P_VALUE: np.nan,
                    P_ADJ: np.nan,
                    N_PATIENTS: 0,
                    N_CELLS: 0,
                    NOTE: f"{SKIPPED_PREFIX}{reason}",
                }
            ]
        )
        return trend_table, associations
    trend_table = trends(
        adata, score_keys=keys, n_grid=options.n_grid, n_splines=options.n_splines,
        n_bootstrap=options.n_bootstrap, seed=options.seed,
    )  # fmt: skip
    associations = stats.pseudotime_associations(
        adata.obs, scores, min_cells_per_patient=options.min_cells_per_patient,
        n_permutations=options.n_permutations, seed=options.test_seed, **covariate,
    )  # fmt: skip
    info = texflow_uns(adata).get("trajectory", {})
    if not info.get("root_stable", True):
        caution = (
            f"pseudotime depends on the root (root-sensitivity median rho "
            f"{float(info.get('root_sensitivity_median_rho', np.nan)):.2f}): caution"
        )
        associations[NOTE] = [
            f"{n}; {caution}" if n else caution for n in associations[NOTE].fillna("").astype(str)
        ]
    return trend_table, associations


def _response_and_composition(
    obs: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    options: AnalyseOptions,
    skipped: MutableMapping[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(response_comparison, composition): responders vs non-responders per state and program,
    with the test of each state's share of a patient's cells first when patients are the
    units; what could not be tested goes to `skipped`."""
    response, response_skipped = stats.compare_response(
        obs, scores, min_cells=options.min_cells_per_group
    )
    composition = stats.patient_composition(obs, min_cells=options.min_cells_composition)
    if response_skipped:
        skipped[SKIP_RESPONSE] = response_skipped
    elif stats.choose_unit(obs) == stats.UNIT_PATIENTS:
        response = pd.concat(
            [
                stats.compare_composition(composition, min_cells=options.min_cells_composition),
                response,
            ],
            ignore_index=True,
        )
    else:
        skipped[SKIP_COMPOSITION] = (
            "no patient labels: one composition per group, nothing to test it against"
        )
    return response, composition


def _with_coverage_caveats(
    coverage: pd.DataFrame, tables: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """Each table with the coverage of every untrusted program its verdicts rest on
    (`stats.with_coverage`); the state calls rest on the states stage's programs, scored again
    here with the same genes."""

    caveats = stats.coverage_caveats(coverage, combined={SIGNED_LPO: LPO_PARTS})
    state_caveats = {state: caveats.get(name, "") for state, name in STATE_PROGRAMS.items()}
    return {
        name: stats.with_coverage(table, caveats, state_caveats=state_caveats)
        for name, table in tables.items()
    }
