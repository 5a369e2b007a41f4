"""The simulated cell populations: their names, the CD8 state each stands for, their default
shares and presets, their library sizes, and where the exhausted states sit on the true
pseudotime (`texflow.simulation.simulate`)."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from ..contract import EFFECTOR_MEMORY, NAIVE_LIKE, TEX_INT, TEX_TERM, TPEX

POPULATIONS: tuple[str, ...] = (
    "cd8_naive",
    "cd8_effector_memory",
    "cd8_tpex",
    "cd8_tex_int",
    "cd8_tex_term",
    "cd4",
    "treg",
    "nk",
    "myeloid",
    "b_cell",
)
CD8_POPULATIONS = frozenset(POPULATIONS[:5])
EXHAUSTED_POPULATIONS = ("cd8_tpex", "cd8_tex_int", "cd8_tex_term")
STATE_OF_POPULATION = {
    "cd8_naive": NAIVE_LIKE,
    "cd8_effector_memory": EFFECTOR_MEMORY,
    "cd8_tpex": TPEX,
    "cd8_tex_int": TEX_INT,
    "cd8_tex_term": TEX_TERM,
}
NON_CD8_STATE = "non_cd8"

# A CD8-rich tumour infiltrate: about two thirds CD8 T cells, half of them exhausted, as in
# sorted/enriched TIL data sets (Sade-Feldman 2018; Zheng 2021); B cells are rare in T-cell data.
DEFAULT_POPULATION_FRACTIONS = MappingProxyType(
    {
        "cd8_naive": 0.10,
        "cd8_effector_memory": 0.14,
        "cd8_tpex": 0.14,
        "cd8_tex_int": 0.10,
        "cd8_tex_term": 0.18,
        "cd4": 0.12,
        "treg": 0.06,
        "nk": 0.07,
        "myeloid": 0.06,
        "b_cell": 0.03,
    }
)
DEFAULT_RISING_PROGRAMS = MappingProxyType({"ifn_i_core": 1.0, "lpo_drivers": 1.0})

# Rare-Tpex mode (issue 16): human tumour Tpex are a few percent of CD8 TILs (ProjecTILs'
# case study of Bassez 2021 breast cancer data finds "very few Tpex"; in Sade-Feldman 2018 the
# TCF7+ progenitor-like cells sit inside the larger memory-like CD8_G group rather than in a
# cluster of their own) and seldom form a Leiden cluster of their own. Here Tpex are 3 % of
# the CD8 cells (2 % of all cells); the other CD8 states keep their default proportions, the
# CD8 share (0.66) and the non-CD8 populations are unchanged.
_RARE_TPEX_SHARE_OF_CD8 = 0.03
# Patients alike enough that a data set's Tpex share stays in 2-5 % of CD8 cells: with the
# default concentration (100) a population of 2 % varies by 70 % (coefficient of variation)
# between patients, and six-patient data sets of 3,000 cells held 1.5-6.0 % Tpex among CD8
# cells (10 runs); with 1,000 they held 2.7-3.5 %.
_RARE_TPEX_CONCENTRATION = 1000.0


def _rare_tpex_fractions(share: float) -> dict[str, float]:
    cd8 = [p for p in DEFAULT_POPULATION_FRACTIONS if p.startswith("cd8_")]
    total_cd8 = sum(DEFAULT_POPULATION_FRACTIONS[p] for p in cd8)
    others = total_cd8 - DEFAULT_POPULATION_FRACTIONS["cd8_tpex"]
    out = dict(DEFAULT_POPULATION_FRACTIONS)
    for pop in cd8:
        out[pop] = round(out[pop] * (1.0 - share) * total_cd8 / others, 4)
    out["cd8_tpex"] = round(share * total_cd8, 4)
    return out


RARE_TPEX_FRACTIONS = MappingProxyType(_rare_tpex_fractions(_RARE_TPEX_SHARE_OF_CD8))
#: Keywords of `simulate` for the rare-Tpex mode: ``simulate(..., **RARE_TPEX)``. Whether the
#: Tpex then form a Leiden cluster of the cluster stage: benchmarks/validate_states.py.
RARE_TPEX = MappingProxyType(
    {
        "population_fractions": RARE_TPEX_FRACTIONS,
        "composition_concentration": _RARE_TPEX_CONCENTRATION,
    }
)

# Pseudotime segments of the exhausted states and the anchor (segment centre) of each profile.
PSEUDOTIME_SEGMENTS = MappingProxyType(
    {"cd8_tpex": (0.0, 0.3), "cd8_tex_int": (0.4, 0.6), "cd8_tex_term": (0.7, 1.0)}
)
# Territory of each state: the pseudotimes where its profile dominates (cut at the middle of
# the gaps). Most cells sit in their state's core segment; a `transitional_fraction` of them
# anywhere in its territory, so that states are connected on the trajectory as in real data.
PSEUDOTIME_TERRITORIES = MappingProxyType(
    {"cd8_tpex": (0.0, 0.35), "cd8_tex_int": (0.35, 0.65), "cd8_tex_term": (0.65, 1.0)}
)
_ANCHOR_TIMES = np.array([0.15, 0.5, 0.85])
# Half-width added on each side of the gap between two states' segments over which one profile
# blends into the next (Tpex -> Tex_int over [0.25, 0.45], Tex_int -> Tex_term over [0.55, 0.75]).
_TRANSITION_MARGIN = 0.05

# Library size of each population relative to the median: myeloid cells carry more RNA,
# naive T cells less (typical of 10x TIL data, e.g. Wu 2020 / Zheng 2021 QC distributions).
_LIBRARY_FACTOR = {
    "cd8_naive": 0.8,
    "cd8_effector_memory": 1.0,
    "cd8_tpex": 1.0,
    "cd8_tex_int": 1.1,
    "cd8_tex_term": 1.15,
    "cd4": 0.9,
    "treg": 1.0,
    "nk": 1.0,
    "myeloid": 1.6,
    "b_cell": 0.9,
}
# sd of log library size within a population: 10x TIL data show roughly 0.3-0.5.
_LIBRARY_LOG_SD = 0.35


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _trajectory_anchors(pseudotime: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchor populations (a, b) and weight w of b for each pseudotime (smooth in log space).

    A state's profile holds inside its segment and blends into the next one (smoothstep) over
    the gap between the segments widened by `_TRANSITION_MARGIN` on each side: cells at the
    edge of a state are part-way to the next, as on a real trajectory, while the bulk of each
    state stays distinct enough to be clustered.
    """
    ex = np.array([POPULATIONS.index(p) for p in EXHAUSTED_POPULATIONS])
    segments = [PSEUDOTIME_SEGMENTS[p] for p in EXHAUSTED_POPULATIONS]
    second_half = pseudotime >= _ANCHOR_TIMES[1]
    a = np.where(second_half, ex[1], ex[0])
    b = np.where(second_half, ex[2], ex[1])
    start = np.where(second_half, segments[1][1], segments[0][1]) - _TRANSITION_MARGIN
    end = np.where(second_half, segments[2][0], segments[1][0]) + _TRANSITION_MARGIN
    w = _smoothstep((pseudotime - start) / (end - start))
    return a, b, w
