"""Simulated T-cell scRNA-seq counts with known truth, for tests, validation and benchmarks.

`simulate` draws a tumour-infiltrating immune cell dataset: CD8+ naive-like, effector-memory,
Tpex, transitory (Tex_int) and terminal (Tex_term) exhausted cells on a continuous
Tpex -> Tex_term trajectory, contaminating CD4, Treg, NK, myeloid and B cells, several patients
with batch offsets and responder labels, injected doublets and low-quality cells. Everything the
pipeline is meant to find is written next to the counts (`obs["true_*"]`, `var["true_*"]`,
`uns["simulation"]`), so a test can compare the pipeline's answer with the truth.

The model
---------
Each population has an expected expression profile (a rate per gene). The rates come from four
layers, in order of precedence:

1. Hand-written marker levels (`_MARKERS`, expected UMIs per cell at a 4,000-UMI library) that
   encode the biology the pipeline's gates and state labels rely on (CD8A/CD8B/CD3E in CD8 cells
   only, FOXP3/IL2RA in Treg, NKG7/GNLY/KLRD1 without CD3E in NK, LYZ/CD14/CD68 in myeloid,
   TCF7/SLAMF6/CXCR5/XCL1 in Tpex, HAVCR2/ENTPD1/LAYN/GZMB in Tex_term, TOX/PDCD1/LAG3/TIGIT
   in both exhausted states, ...), plus housekeeping, ribosomal and mitochondrial genes.
2. The shipped gene programs (`texflow.signatures.load_programs`): identity programs are
   partly up (and their `down` genes down) in their population, the way a real signature is
   only partly concordant with a real cluster; the other programs (IFN-I, LPO, cycling, ...)
   sit at a baseline unless asked to rise.
3. Background genes with log-normal abundances and Splatter-like differential expression down a
   lineage tree (immune -> lymphoid -> T -> CD8 -> exhausted -> Tpex/Tex_int/Tex_term), so that
   populations differ in many genes, more between lineages than within the exhausted lineage.
4. Effects under test: programs that rise along the trajectory (log2 fold change from
   pseudotime 0 to 1), programs that differ between non-responders and responders (log2 fold
   change, all cells of non-responder patients), populations whose share differs between
   non-responders and responders (`response_composition`, log2 fold change of the per-patient
   fractions), and per-patient batch offsets on a random subset of genes.

Presets: `RARE_TPEX` (``simulate(**RARE_TPEX)``) makes Tpex 3 % of CD8 cells, as in human
tumours, where they seldom form a Leiden cluster of their own.

Exhausted-lineage cells get a true pseudotime in [0, 1]: most Tpex in [0, 0.3], Tex_int in
[0.4, 0.6], Tex_term in [0.7, 1] (core segments); a `transitional_fraction` in the gaps of
their state's territory ([0, 0.35], [0.35, 0.65], [0.65, 1]), bridging the states. The profile holds
within a core segment and blends smoothly (smoothstep, in log space) into the next state's
across the gap between segments, so marker and program genes change smoothly along pseudotime
while the three states remain clusterable.

Counts are gamma-Poisson (negative binomial) around `library size x profile`, with log-normal
library sizes. To stay fast without ever building a dense cells x genes matrix, the genes are
split in two: genes whose rate varies between cells of one population (trajectory genes,
markers, programs, mitochondrial genes) or that are highly expressed are drawn densely, per chunk
of cells, as negative binomial; the many lowly expressed background genes, whose rate is constant
within a (population, patient) group, are drawn as Poisson by first drawing each gene's total in
the group and then scattering those counts over the group's cells in proportion to their size
factors (exactly Poisson per cell; the overdispersion of a gene with < 0.3 expected UMIs per cell
is negligible next to its Poisson noise, cf. Svensson 2020, Nat Biotechnol 38:147).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .contract import EFFECTOR_MEMORY, NAIVE_LIKE, TEX_INT, TEX_TERM, TPEX

logger = logging.getLogger(__name__)

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
_REFERENCE_LIBRARY = 4000.0  # the library at which marker levels below are written
_MITO_FRACTION = 0.04  # healthy T cells on 10x: 2-5 % mitochondrial UMIs
_RIBO_FRACTION = 0.18  # T cells on 10x: ribosomal protein genes take 15-30 % of UMIs
_OFF = 0.01  # expected UMIs of a marker in a population that does not express it

_T = ("cd8_naive", "cd8_effector_memory", "cd8_tpex", "cd8_tex_int", "cd8_tex_term", "cd4", "treg")
_CD8 = _T[:5]


def _levels(default: float = _OFF, **levels: float) -> dict[str, float]:
    """Marker levels per population (expected UMIs at a 4,000-UMI library); short keys."""
    short = {
        "naive": "cd8_naive",
        "em": "cd8_effector_memory",
        "tpex": "cd8_tpex",
        "int": "cd8_tex_int",
        "term": "cd8_tex_term",
        "cd4": "cd4",
        "treg": "treg",
        "nk": "nk",
        "myeloid": "myeloid",
        "b": "b_cell",
    }
    out = {pop: default for pop in POPULATIONS}
    for key, value in levels.items():
        out[short[key]] = value
    return out


def _group(pops: Sequence[str], value: float, **others: float) -> dict[str, float]:
    out = _levels(**others)
    for pop in pops:
        out[pop] = value
    return out


# human symbol -> (mouse symbol or "" when there is no mouse ortholog, levels per population).
# Levels follow the marker definitions in shared/reference/gene_programs.md (scGate, ProjecTILs,
# Zheng 2021, Miller 2019) and typical 10x UMI levels of these genes in TIL data.
_MARKERS: dict[str, tuple[str, dict[str, float]]] = {
    # lineage
    "PTPRC": ("Ptprc", _levels(3.0)),
    "CD3E": ("Cd3e", _group(_T, 3.0)),
    "CD3D": ("Cd3d", _group(_T, 4.0)),
    "CD3G": ("Cd3g", _group(_T, 1.5)),
    "CD2": ("Cd2", _group(_T, 2.0, nk=1.0)),
    "CD8A": ("Cd8a", _group(_CD8, 3.0)),
    "CD8B": ("Cd8b1", _group(_CD8, 2.5)),
    "CD4": ("Cd4", _levels(cd4=1.5, treg=1.5, myeloid=0.4)),
    "CD40LG": ("Cd40lg", _levels(cd4=0.8, treg=0.1)),
    "FOXP3": ("Foxp3", _levels(treg=1.5)),
    "IL2RA": ("Il2ra", _levels(treg=2.0, term=0.1, cd4=0.1)),
    "IKZF2": ("Ikzf2", _levels(treg=1.0, tpex=0.1, term=0.1)),
    "NKG7": ("Nkg7", _levels(nk=8.0, em=3.0, int=4.0, term=3.0, tpex=0.5, naive=0.1, cd4=0.2)),
    "GNLY": ("", _levels(nk=10.0, em=0.5, int=1.0, term=0.5)),
    "KLRD1": ("Klrd1", _levels(nk=4.0, em=0.5, int=1.0, term=0.3)),
    "NCR1": ("Ncr1", _levels(nk=1.0)),
    "KLRF1": ("Klrb1c", _levels(nk=1.5)),  # mouse NK1.1 stands in for human KLRF1 (NKp80)
    "TYROBP": ("Tyrobp", _levels(nk=3.0, myeloid=6.0)),
    "FCER1G": ("Fcer1g", _levels(nk=2.0, myeloid=5.0)),
    "LYZ": ("Lyz2", _levels(myeloid=30.0)),
    "CD14": ("Cd14", _levels(myeloid=4.0)),
    "CD68": ("Cd68", _levels(myeloid=3.0)),
    "CSF1R": ("Csf1r", _levels(myeloid=2.0)),
    "AIF1": ("Aif1", _levels(myeloid=5.0)),
    "S100A8": ("S100a8", _levels(myeloid=8.0)),
    "S100A9": ("S100a9", _levels(myeloid=10.0)),
    "CST3": ("Cst3", _levels(myeloid=10.0)),
    "HLA-DRA": ("H2-Aa", _levels(myeloid=15.0, b=10.0, term=0.3)),
    "MS4A1": ("Ms4a1", _levels(b=4.0)),
    "CD79A": ("Cd79a", _levels(b=6.0)),
    "CD79B": ("Cd79b", _levels(b=4.0)),
    "CD19": ("Cd19", _levels(b=1.0)),
    # naive / memory / progenitor
    "CCR7": ("Ccr7", _levels(naive=3.0, tpex=0.6, cd4=1.5, em=0.1, int=0.05, term=0.03, b=1.0)),
    "SELL": ("Sell", _levels(naive=3.0, tpex=0.5, cd4=1.0, em=0.15, b=1.0)),
    "LEF1": ("Lef1", _levels(naive=2.0, tpex=0.8, cd4=1.0, em=0.2, b=0.3)),
    "TCF7": ("Tcf7", _levels(naive=2.5, tpex=2.0, cd4=1.5, em=0.6, int=0.15, term=0.04, treg=0.5)),
    "IL7R": ("Il7r", _levels(naive=2.0, em=1.0, tpex=1.0, cd4=2.0, treg=0.3, int=0.3, term=0.15)),
    "SLAMF6": ("Slamf6", _levels(tpex=1.5, naive=0.4, em=0.3, int=0.3, term=0.06, cd4=0.2)),
    "CXCR5": ("Cxcr5", _levels(tpex=0.8, b=2.0, cd4=0.1)),
    "XCL1": ("Xcl1", _levels(tpex=2.0, int=0.3, term=0.1, nk=1.0)),
    "XCL2": ("", _levels(tpex=1.2, int=0.2, term=0.05, nk=0.6)),
    "ID3": ("Id3", _levels(tpex=1.0, naive=0.8, term=0.08, em=0.2)),
    "GNG4": ("Gng4", _levels(tpex=0.6)),
    "CD200": ("Cd200", _levels(tpex=0.8, b=0.3)),
    "CRTAM": ("Crtam", _levels(tpex=0.4, int=0.3, term=0.1)),
    "TNFRSF4": ("Tnfrsf4", _levels(tpex=0.3, treg=0.8, cd4=0.2)),
    # effector memory / cytotoxic
    "GZMK": ("Gzmk", _levels(em=4.0, tpex=0.6, int=0.4, term=0.2, naive=0.05, nk=0.3, cd4=0.2)),
    "CXCR3": ("Cxcr3", _levels(em=1.5, tpex=0.6, int=0.6, term=0.4, cd4=0.2)),
    "CCL5": ("Ccl5", _levels(em=6.0, int=4.0, term=3.0, tpex=1.0, nk=4.0, cd4=0.3)),
    "GZMA": ("Gzma", _levels(em=2.0, int=2.0, term=1.5, nk=3.0, tpex=0.2)),
    "EOMES": ("Eomes", _levels(em=1.0, int=0.5, term=0.4, nk=1.0, tpex=0.2)),
    "PRF1": ("Prf1", _levels(term=1.0, int=1.5, nk=3.0, em=0.6, tpex=0.05)),
    "GZMB": ("Gzmb", _levels(term=3.0, int=3.0, tpex=0.1, nk=6.0, em=0.5)),
    "CX3CR1": ("Cx3cr1", _levels(int=2.5, em=0.4, nk=1.0, term=0.1, myeloid=0.5)),
    "KLRG1": ("Klrg1", _levels(int=2.0, em=0.5, nk=0.8, term=0.1)),
    # exhaustion: shared gate and terminal
    "TOX": ("Tox", _levels(tpex=1.5, int=1.2, term=1.8, em=0.1, naive=0.03, nk=0.3, cd4=0.1)),
    "PDCD1": ("Pdcd1", _levels(tpex=1.5, int=1.5, term=2.0, em=0.08, naive=0.005, cd4=0.1)),
    "LAG3": ("Lag3", _levels(tpex=0.6, int=1.0, term=1.8, em=0.08, nk=0.1)),
    "TIGIT": ("Tigit", _levels(tpex=1.2, int=1.0, term=1.5, treg=1.5, em=0.12, cd4=0.2)),
    "CTLA4": ("Ctla4", _levels(treg=2.0, term=1.5, int=0.6, tpex=0.5, cd4=0.2)),
    "HAVCR2": ("Havcr2", _levels(term=2.0, int=0.8, tpex=0.05, myeloid=1.0, nk=0.3)),
    "ENTPD1": ("Entpd1", _levels(term=1.5, int=0.4, tpex=0.05, treg=0.8, myeloid=0.5)),
    "LAYN": ("Layn", _levels(term=0.8, int=0.15)),
    "CD38": ("Cd38", _levels(term=1.0, int=0.5, b=1.0, nk=0.3)),
    "CXCL13": ("Cxcl13", _levels(term=1.5, int=0.3, tpex=0.5)),
    "TNFRSF9": ("Tnfrsf9", _levels(term=1.0, int=0.4, treg=0.8, tpex=0.1)),
    "CD101": ("Cd101", _levels(term=0.5, int=0.1, treg=0.2)),
    "BATF": ("Batf", _levels(term=1.0, int=0.6, tpex=0.5, treg=0.6, em=0.2)),
    "PTPN6": ("Ptpn6", _levels(1.0, term=2.0, int=1.5)),
}

# Housekeeping genes expressed everywhere (expected UMIs at 4,000; myeloid ferritin is high).
_HOUSEKEEPING: dict[str, tuple[str, dict[str, float]]] = {
    "MALAT1": ("Malat1", _levels(30.0)),
    "B2M": ("B2m", _levels(40.0, myeloid=30.0)),
    "TMSB4X": ("Tmsb4x", _levels(35.0)),
    "ACTB": ("Actb", _levels(30.0)),
    "EEF1A1": ("Eef1a1", _levels(35.0)),
    "TPT1": ("Tpt1", _levels(25.0)),
    "GAPDH": ("Gapdh", _levels(6.0, myeloid=15.0, term=9.0)),
    "PFN1": ("Pfn1", _levels(8.0)),
    "CFL1": ("Cfl1", _levels(6.0)),
    "MYL6": ("Myl6", _levels(8.0)),
    "UBB": ("Ubb", _levels(6.0)),
    "FTL": ("Ftl1", _levels(8.0, myeloid=80.0)),
    "FTH1": ("Fth1", _levels(10.0, myeloid=60.0)),
}

_MITO_HUMAN = (  # noqa: SIM905 (a gene list reads best as one string)
    "MT-ND1 MT-ND2 MT-CO1 MT-CO2 MT-ATP8 MT-ATP6 MT-CO3 MT-ND3 MT-ND4L MT-ND4 MT-ND5 MT-ND6 MT-CYB"
).split()
# Relative share of each mitochondrial transcript in 10x data (MT-CO1/2/3 and MT-ATP6 dominate).
_MITO_WEIGHTS = np.array([4, 3, 12, 8, 2, 8, 10, 3, 1, 6, 2, 0.5, 5], dtype=float)
_RIBO_HUMAN = (  # noqa: SIM905
    "RPL3 RPL4 RPL5 RPL6 RPL7 RPL7A RPL8 RPL9 RPL10 RPL10A RPL11 RPL12 RPL13 RPL13A RPL14 "
    "RPL15 RPL17 RPL18 RPL18A RPL19 RPL21 RPL22 RPL23 RPL23A RPL24 RPL26 RPL27 RPL27A RPL28 "
    "RPL29 RPL30 RPL31 RPL32 RPL34 RPL35 RPL35A RPL36 RPL37 RPL37A RPL38 RPL39 RPL41 RPLP0 "
    "RPLP1 RPLP2 RPS2 RPS3 RPS3A RPS4X RPS5 RPS6 RPS7 RPS8 RPS9 RPS10 RPS11 RPS12 RPS13 RPS14 "
    "RPS15 RPS15A RPS16 RPS17 RPS18 RPS19 RPS20 RPS21 RPS23 RPS24 RPS25 RPS26 RPS27 RPS27A "
    "RPS28 RPS29"
).split()

# Gene programs by role. Identity programs are partly concordant with their populations.
_IDENTITY_PROGRAMS: dict[str, tuple[str, ...]] = {
    "naive_like": ("cd8_naive",),
    "effector_memory": ("cd8_effector_memory",),
    "tpex": ("cd8_tpex",),
    "tex_int": ("cd8_tex_int",),
    "tex_term": ("cd8_tex_term",),
    "exhausted_gate": EXHAUSTED_POPULATIONS,
    "cytotoxic": ("cd8_effector_memory", "cd8_tex_int", "cd8_tex_term", "nk"),
    "cd8_t": _CD8,
    "cd4_t": ("cd4", "treg"),
    "treg": ("treg",),
    "nk": ("nk",),
    "myeloid": ("myeloid",),
    "b_cell": ("b_cell",),
}
# Baseline expected UMIs (at 4,000) of genes of the non-identity programs: ISGs are moderately
# expressed in T cells, LPO genes and cycling genes lowly (most cells are not cycling).
_PROGRAM_BASELINE = {
    "isg": 0.4,
    "ifn_i_core": 0.4,
    "ifn_alpha_hallmark": 0.4,
    "lpo_drivers": 0.2,
    "lpo_suppressors": 0.3,
    "cycling": 0.05,
}
_IDENTITY_CONCORDANCE = 0.7  # share of an identity program's genes that follow it
_IDENTITY_LOG2FC = (1.0, 3.0)  # uniform range of log2FC of concordant up genes
_IDENTITY_DOWN_LOG2FC = (1.0, 2.0)

# Lineage tree of background differential expression: node -> (parent, populations below it,
# fraction of background genes differentially expressed at this node, sd of their log2FC).
# Distant lineages differ in more genes (myeloid vs lymphoid) than exhausted states do.
_DE_TREE: dict[str, tuple[tuple[str, ...], float, float]] = {
    "myeloid": (("myeloid",), 0.08, 1.2),
    "b_cell": (("b_cell",), 0.05, 1.0),
    "nk": (("nk",), 0.03, 0.8),
    "t_cell": (_T, 0.02, 0.8),
    "cd4_lineage": (("cd4", "treg"), 0.02, 0.7),
    "cd4": (("cd4",), 0.01, 0.6),
    "treg": (("treg",), 0.015, 0.7),
    "cd8_lineage": (_CD8, 0.015, 0.7),
    "cd8_naive": (("cd8_naive",), 0.015, 0.7),
    "cd8_effector_memory": (("cd8_effector_memory",), 0.015, 0.7),
    "exhausted": (EXHAUSTED_POPULATIONS, 0.015, 0.7),
    "cd8_tpex": (("cd8_tpex",), 0.012, 0.7),
    "cd8_tex_int": (("cd8_tex_int",), 0.03, 0.9),
    "cd8_tex_term": (("cd8_tex_term",), 0.015, 0.7),
}
# Background abundance: log-normal expected UMIs per gene, rescaled to fill each library.
# Its log-sd is chosen by measurement for realistic detection at both ends of the gene range:
# about 2,500 genes detected per cell at 20,000 genes and 4,000 UMIs (10x v3), and about 60 %
# zeros at 2,000 genes (a small simulation stands for the expressed part of a transcriptome);
# in between, the sd is interpolated in log(number of background genes).
_BACKGROUND_LOG_MEAN = np.log(0.04)
_BACKGROUND_LOG_SD_AT = ((1600, 1.9), (19600, 1.1))


def _background_log_sd(n_background: int) -> float:
    (n_small, sd_small), (n_large, sd_large) = _BACKGROUND_LOG_SD_AT
    position = (np.log(max(n_background, 1)) - np.log(n_small)) / (
        np.log(n_large) - np.log(n_small)
    )
    return float(sd_small + np.clip(position, 0.0, 1.0) * (sd_large - sd_small))


# Genes with at least this many expected UMIs in some population are drawn densely (cheaper
# than events once most cells have a count); measured on 20k genes, see benchmarks/.
_DENSE_MIN_UMIS = 1.0
_CHUNK_CELLS = 8192


@dataclasses.dataclass(frozen=True)
class _GeneTable:
    """The simulated genes and their expected UMIs per population (before per-cell effects)."""

    names: list[str]
    gene_class: np.ndarray  # mito, ribo, housekeeping, marker, program, ortholog_table, background
    log_rates: np.ndarray  # (populations, genes), natural log of expected UMIs at the reference
    dispersion: np.ndarray  # NB dispersion per gene (var = mu + dispersion * mu^2)
    program_genes: dict[str, np.ndarray]  # program -> gene indices (up genes)


def _mouse_case(symbol: str) -> str:
    return symbol[:1] + symbol[1:].lower()


def _load_programs(organism: str) -> dict:
    from texflow.signatures import load_programs

    return load_programs(organism)


def _ortholog_table_genes(organism: str) -> list[str]:
    """Real symbols from a human-mouse ortholog table shipped in resources/signatures, if any."""
    from pathlib import Path

    signatures = Path(__file__).resolve().parents[2] / "resources" / "signatures"
    for path in sorted(signatures.glob("*ortholog*.tsv")):
        table = pd.read_csv(path, sep="\t", dtype=str).fillna("")
        column = (
            "human"
            if organism == "human"
            else ("mouse_final" if "mouse_final" in table else "mouse")
        )
        if column not in table:
            continue
        genes: list[str] = []
        for value in table[column]:
            genes.extend(g for g in value.split(";") if g)
        return genes
    return []


def _build_gene_table(
    *, organism: str, n_genes: int, rng: np.random.Generator, separation: float
) -> _GeneTable:
    pop_index = {pop: i for i, pop in enumerate(POPULATIONS)}
    n_pops = len(POPULATIONS)
    names: list[str] = []
    classes: list[str] = []
    rows: list[np.ndarray] = []  # expected UMIs at the reference library, per population
    seen: set[str] = set()

    def add(symbol: str, gene_class: str, levels: np.ndarray) -> None:
        if not symbol or symbol in seen:
            return
        seen.add(symbol)
        names.append(symbol)
        classes.append(gene_class)
        rows.append(np.asarray(levels, dtype=float))

    def symbol_of(human: str, mouse: str) -> str:
        return human if organism == "human" else mouse

    # Mitochondrial genes: fixed share of each cell's library.
    mito = _MITO_HUMAN if organism == "human" else ["mt-" + _mouse_case(g[3:]) for g in _MITO_HUMAN]
    if organism == "mouse":
        mito = [g.replace("mt-Cyb", "mt-Cytb") for g in mito]
    mito_share = _MITO_WEIGHTS / _MITO_WEIGHTS.sum() * _MITO_FRACTION * _REFERENCE_LIBRARY
    for gene, level in zip(mito, mito_share, strict=True):
        add(gene, "mito", np.full(n_pops, level))
    # Ribosomal genes: a Zipf-like spread of a fixed share, lower in myeloid cells.
    ribo = _RIBO_HUMAN if organism == "human" else [_mouse_case(g) for g in _RIBO_HUMAN]
    ribo_weights = rng.lognormal(0.0, 0.5, size=len(ribo))
    ribo_weights /= ribo_weights.sum()
    ribo_pop = np.full(n_pops, _RIBO_FRACTION * _REFERENCE_LIBRARY)
    ribo_pop[pop_index["myeloid"]] *= 0.5
    ribo_pop[pop_index["cd8_naive"]] *= 1.3
    for gene, weight in zip(ribo, ribo_weights, strict=True):
        add(gene, "ribo", weight * ribo_pop)
    for table, gene_class in ((_HOUSEKEEPING, "housekeeping"), (_MARKERS, "marker")):
        for human, (mouse, levels) in table.items():
            add(symbol_of(human, mouse), gene_class, np.array([levels[p] for p in POPULATIONS]))

    # Gene programs: identity programs partly concordant; others at a baseline.
    programs = _load_programs(organism)
    program_up: dict[str, list[str]] = {}
    for name, program in programs.items():
        program_up[name] = list(program.up)
        baseline = _PROGRAM_BASELINE.get(name, 0.15)
        for gene in list(program.up) + list(program.down):
            if gene not in seen:
                add(gene, "program", np.full(n_pops, baseline * rng.lognormal(0.0, 0.7)))
    gene_index = {g: i for i, g in enumerate(names)}
    identity_log2fc = np.zeros((n_pops, len(names)))
    for name, pops in _IDENTITY_PROGRAMS.items():
        if name not in programs:
            continue
        for direction, genes in ((1, programs[name].up), (-1, programs[name].down)):
            for gene in genes:
                i = gene_index.get(gene)
                if i is None or classes[i] != "program" or rng.random() > _IDENTITY_CONCORDANCE:
                    continue  # hand-written markers keep their levels
                low, high = _IDENTITY_LOG2FC if direction > 0 else _IDENTITY_DOWN_LOG2FC
                for pop in pops:
                    identity_log2fc[pop_index[pop], i] += direction * rng.uniform(low, high)

    # Real symbols of the ortholog table not yet used, then synthetic background genes.
    n_fixed = len(names)
    if n_genes < n_fixed:
        raise ValueError(
            f"n_genes={n_genes} is smaller than the {n_fixed} marker, program, ribosomal and "
            f"mitochondrial genes the simulation needs; ask for at least {n_fixed}"
        )
    background: list[str] = [g for g in _ortholog_table_genes(organism) if g not in seen]
    background = background[: n_genes - n_fixed]
    prefix = "SIMG" if organism == "human" else "Simg"  # cannot collide with HGNC/MGI symbols
    width = max(5, len(str(n_genes)))
    background += [
        f"{prefix}{i:0{width}d}" for i in range(1, n_genes - n_fixed - len(background) + 1)
    ]
    n_background = len(background)
    background_levels = np.exp(
        rng.normal(_BACKGROUND_LOG_MEAN, _background_log_sd(n_background), n_background)
    )
    for gene, level in zip(background, background_levels, strict=True):
        add(
            gene,
            "background" if gene.startswith(prefix) else "ortholog_table",
            np.full(n_pops, level),
        )

    levels = np.vstack(rows).T  # (pops, genes)
    log_rates = np.log(levels)
    log_rates += (
        np.log(2.0)
        * separation
        * np.pad(identity_log2fc, ((0, 0), (0, levels.shape[1] - identity_log2fc.shape[1])))
    )
    # Splatter-like background differential expression down the lineage tree.
    bg = np.arange(n_fixed, levels.shape[1])
    for pops, fraction, sd in _DE_TREE.values():
        chosen = bg[rng.random(n_background) < fraction]
        log2fc = rng.normal(0.0, sd, chosen.size)
        log2fc += np.sign(log2fc) * 0.5 * sd  # keep DE genes away from zero effect
        for pop in pops:
            log_rates[pop_index[pop], chosen] += np.log(2.0) * separation * log2fc
    # Background genes fill each population's library up to the reference, so the named genes
    # keep their written levels (and mitochondrial share) whatever the number of genes.
    fixed_total = np.exp(log_rates[:, :n_fixed]).sum(axis=1)
    background_total = np.exp(log_rates[:, n_fixed:]).sum(axis=1)
    room = np.maximum(_REFERENCE_LIBRARY - fixed_total, 0.1 * _REFERENCE_LIBRARY)
    if n_background:
        log_rates[:, n_fixed:] += np.log(room / background_total)[:, None]

    gene_class = np.array(classes)
    # Overdispersion (NB dispersion): 0.1-0.5 for biological variation within a population in
    # UMI data (Svensson 2020; Hafemeister & Satija 2019); technical-like genes less.
    dispersion = np.exp(rng.normal(np.log(0.25), 0.5, len(names)))
    dispersion[np.isin(gene_class, ["mito", "ribo", "housekeeping"])] = 0.05
    program_genes = {
        name: np.array(sorted({gene_index[g] for g in up if g in gene_index}), dtype=np.int64)
        for name, up in program_up.items()
    }
    return _GeneTable(names, gene_class, log_rates, dispersion, program_genes)


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


def _validate_mapping(
    name: str, mapping: Mapping[str, float], programs: set[str]
) -> dict[str, float]:
    unknown = sorted(set(mapping) - programs)
    if unknown:
        raise ValueError(f"{name}: unknown program(s) {unknown}; known: {sorted(programs)}")
    return {str(k): float(v) for k, v in mapping.items()}


def _validate_populations(name: str, mapping: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(mapping) - set(POPULATIONS))
    if unknown:
        raise ValueError(f"{name}: unknown population(s) {unknown}; known: {list(POPULATIONS)}")
    values = {str(k): float(v) for k, v in mapping.items()}
    bad = sorted(k for k, v in values.items() if not np.isfinite(v))
    if bad:
        raise ValueError(f"{name}: log2 fold changes must be finite, not for {bad}")
    return values


def simulate(
    *,
    n_cells: int = 5000,
    n_genes: int = 2000,
    organism: str = "human",
    n_patients: int = 6,
    samples_per_patient: int = 1,
    seed: int = 0,
    population_fractions: Mapping[str, float] | None = None,
    rising_programs: Mapping[str, float] = DEFAULT_RISING_PROGRAMS,
    response_effects: Mapping[str, float] = MappingProxyType({}),
    response_composition: Mapping[str, float] = MappingProxyType({}),
    patient_programs: Mapping[str, float] = MappingProxyType({}),
    batch_strength: float = 0.0,
    batch_gene_fraction: float = 0.1,
    doublet_rate: float = 0.05,
    low_quality_rate: float = 0.05,
    median_library_size: float = 4000.0,
    separation: float = 1.0,
    transitional_fraction: float = 0.1,
    composition_concentration: float = 100.0,
    tissue: str = "tumor",
    counts_layer: bool = True,
) -> ad.AnnData:
    """Simulate T-cell scRNA-seq counts with known truth.

    Parameters
    ----------
    n_cells
        Number of cells (observations), doublets and low-quality cells included.
    n_genes
        Number of genes: markers, programs, ribosomal and mitochondrial genes (about 400,
        the minimum) plus background genes to make up the number.
    organism
        ``"human"`` or ``"mouse"``: the gene symbols (``MT-``/``mt-`` mitochondrial genes).
    n_patients
        Number of patients; half (rounded down) are non-responders.
    samples_per_patient
        1 or 2 samples per patient (the second is labelled timepoint ``post``).
    seed
        Seed of the random generator: the same arguments give the same data.
    population_fractions
        Fraction of cells per population (keys of `POPULATIONS`; missing keys are 0; normalised
        to sum 1). Default `DEFAULT_POPULATION_FRACTIONS`.
    rising_programs
        Program name -> log2 fold change of its genes from pseudotime 0 to 1 along the
        Tpex -> Tex_term trajectory (exhausted-lineage cells). Programs not named stay flat.
    response_effects
        Program name -> log2 fold change of its genes in non-responders over responders
        (all cells of non-responder patients). Empty: no difference.
    response_composition
        Population name (keys of `POPULATIONS`) -> log2 fold change of that population's
        fraction in non-responder patients over responders. Each non-responder patient's
        population fractions (after the Dirichlet draw of `composition_concentration`) are
        multiplied by ``2 ** log2fc`` and renormalised to sum 1, so the other populations'
        shares shrink or grow in proportion (a compositional effect, as in real cohorts).
        Doublet parents keep the global fractions. Empty: no planted difference.
    patient_programs
        Program name -> SD of a per-patient log2 offset shared by all of that program's genes
        (patients differ in how much of a program they express, e.g. how much type I
        interferon their tumour sees). One normal draw per patient and program, from a random
        stream of its own, so the cells, their populations, patients and libraries are those
        of the same seed without it. Empty: none (the default data, unchanged).
    batch_strength
        SD of per-patient log2 offsets on a random `batch_gene_fraction` of genes (0: none).
    batch_gene_fraction
        Fraction of genes with a patient offset (a new random subset per patient).
    doublet_rate
        Fraction of cells that are doublets: the sum of two simulated cells from two different
        populations (their libraries add up).
    low_quality_rate
        Fraction of (singlet) cells that are low quality: about a quarter of the library and
        20-60 % mitochondrial UMIs.
    median_library_size
        Median total UMIs of healthy singlets (log-normal library sizes; 10x: 3,000-5,000).
    separation
        Multiplier of all population differential expression apart from the hand-written
        markers (1: the default realism; lower makes populations harder to separate).
    transitional_fraction
        Fraction of exhausted-lineage cells placed in the gaps of their state's pseudotime
        territory (`PSEUDOTIME_TERRITORIES`) outside its core segment (`PSEUDOTIME_SEGMENTS`):
        the transitional cells that connect Tpex, Tex_int and Tex_term.
    composition_concentration
        Dirichlet concentration of per-patient population fractions around the global ones
        (higher: patients more alike).
    tissue
        Value of ``obs["tissue"]``.
    counts_layer
        Also return the counts as ``layers["counts"]`` (a copy). False for large benchmark
        files, whose readers take X as the counts: at 500k cells each copy is ~10 GB.

    Returns
    -------
    AnnData with
        - ``X`` and ``layers["counts"]``: counts (float32 CSR, separate copies; no layer
          with ``counts_layer=False``).
        - ``obs``: ``sample``, ``patient``, ``response``, ``timepoint``, ``tissue``, and the truth
          ``true_population``, ``true_is_cd8``, ``true_state``, ``true_pseudotime`` (NaN outside
          the exhausted lineage and for doublets), ``true_doublet``, ``true_doublet_of``,
          ``true_low_quality``, ``true_library_size`` (expected UMIs).
        - ``var``: index = gene symbols; ``true_gene_class``, ``true_rising_log2fc``,
          ``true_response_log2fc``, ``mt``, ``ribo``.
        - ``uns["simulation"]``: every parameter (effects, seed) and the pseudotime segments.
        - ``uns["texflow"]``: ``dataset`` "simulated", ``organism``, ``value_type`` "counts",
          ``sources``, ``versions``, ``params``, ``skipped``, as ingest writes them.

    A doublet's ``true_population``/``true_state`` are those of its larger parent; its
    ``true_is_cd8`` is True only if both parents are CD8 T cells.
    """
    started = time.perf_counter()
    if organism not in ("human", "mouse"):
        raise ValueError(f"organism must be 'human' or 'mouse', not {organism!r}")
    if samples_per_patient not in (1, 2):
        raise ValueError("samples_per_patient must be 1 or 2")
    if n_cells < 1 or n_patients < 1:
        raise ValueError("n_cells and n_patients must be positive")
    for name, rate in (("doublet_rate", doublet_rate), ("low_quality_rate", low_quality_rate)):
        if not 0.0 <= rate < 0.5:
            raise ValueError(f"{name} must be in [0, 0.5), not {rate}")
    fractions = dict.fromkeys(POPULATIONS, 0.0)
    given = DEFAULT_POPULATION_FRACTIONS if population_fractions is None else population_fractions
    unknown = sorted(set(given) - set(POPULATIONS))
    if unknown:
        raise ValueError(
            f"population_fractions: unknown population(s) {unknown}; known: {POPULATIONS}"
        )
    fractions.update({k: float(v) for k, v in given.items()})
    total = sum(fractions.values())
    if total <= 0 or min(fractions.values()) < 0:
        raise ValueError("population_fractions must be non-negative and not all zero")
    fractions = {k: v / total for k, v in fractions.items()}

    rng = np.random.default_rng(seed)
    genes = _build_gene_table(organism=organism, n_genes=n_genes, rng=rng, separation=separation)
    program_names = set(genes.program_genes)
    rising = _validate_mapping("rising_programs", rising_programs, program_names)
    response = _validate_mapping("response_effects", response_effects, program_names)
    composition = _validate_populations("response_composition", response_composition)
    patient_sd = _validate_mapping("patient_programs", patient_programs, program_names)
    if not all(np.isfinite(v) and v >= 0 for v in patient_sd.values()):
        raise ValueError("patient_programs: SDs must be finite and >= 0")
    n_genes = len(genes.names)
    log2 = np.log(2.0)

    rising_log = np.zeros(n_genes)  # natural-log change from pseudotime 0 to 1
    for name, effect in rising.items():
        rising_log[genes.program_genes[name]] += log2 * effect
    response_log = np.zeros(n_genes)
    for name, effect in response.items():
        response_log[genes.program_genes[name]] += log2 * effect

    # Patients, samples, response labels.
    patients = [f"P{i + 1:02d}" for i in range(n_patients)]
    non_responder = np.zeros(n_patients, dtype=bool)
    non_responder[rng.permutation(n_patients)[: n_patients // 2]] = True
    batch_log = np.zeros((n_patients, n_genes))
    if batch_strength > 0:
        for p in range(n_patients):
            hit = rng.random(n_genes) < batch_gene_fraction
            batch_log[p, hit] = log2 * rng.normal(0.0, batch_strength, hit.sum())
    patient_offsets = {}
    if patient_sd:  # own stream: the main generator's draws stay those of the default data
        offset_rng = np.random.default_rng([int(seed), 16])
        for name, sd in patient_sd.items():
            patient_offsets[name] = offset_rng.normal(0.0, sd, n_patients)
            batch_log[:, genes.program_genes[name]] += log2 * patient_offsets[name][:, None]
    base_fractions = np.array([fractions[p] for p in POPULATIONS])
    patient_fractions = np.vstack(
        [
            (
                rng.dirichlet(composition_concentration * base_fractions + 1e-9)
                if composition_concentration > 0
                else base_fractions
            )
            for _ in range(n_patients)
        ]
    )
    if composition:  # planted composition difference: non-responders' fractions, renormalised
        shift = np.array([2.0 ** composition.get(p, 0.0) for p in POPULATIONS])
        shifted = patient_fractions[non_responder] * shift
        patient_fractions[non_responder] = shifted / shifted.sum(axis=1, keepdims=True)

    # Cells: singlets first, then doublets; each doublet needs two simulated parents.
    n_doublets = round(doublet_rate * n_cells)
    n_singlets = n_cells - n_doublets
    cell_patient = rng.integers(0, n_patients, n_singlets)
    cell_pop = np.empty(n_singlets, dtype=np.int64)
    for p in range(n_patients):
        idx = np.flatnonzero(cell_patient == p)
        cell_pop[idx] = rng.choice(len(POPULATIONS), size=idx.size, p=patient_fractions[p])
    cell_sample = rng.integers(0, samples_per_patient, n_singlets)
    parent_patient = np.repeat(rng.integers(0, n_patients, n_doublets), 2)
    parent_pop = rng.choice(len(POPULATIONS), size=2 * n_doublets, p=base_fractions)
    for k in range(n_doublets):  # the two parents come from different populations
        while parent_pop[2 * k + 1] == parent_pop[2 * k] and np.count_nonzero(base_fractions) > 1:
            parent_pop[2 * k + 1] = rng.choice(len(POPULATIONS), p=base_fractions)
    parent_sample = np.repeat(rng.integers(0, samples_per_patient, n_doublets), 2)

    row_pop = np.concatenate([cell_pop, parent_pop])
    row_patient = np.concatenate([cell_patient, parent_patient])
    n_rows = row_pop.size
    pseudotime = np.full(n_rows, np.nan)
    for pop, (lo, hi) in PSEUDOTIME_SEGMENTS.items():
        hit = np.flatnonzero(row_pop == POPULATIONS.index(pop))
        pseudotime[hit] = rng.uniform(lo, hi, hit.size)
        # Transitional cells sit in the gaps of the state's territory (outside its core
        # segment), bridging the states as intermediate cells do on a real trajectory.
        bridge = hit[rng.random(hit.size) < transitional_fraction]
        t_lo, t_hi = PSEUDOTIME_TERRITORIES[pop]
        gaps = [(t_lo, lo), (hi, t_hi)]
        widths = np.array([g[1] - g[0] for g in gaps])
        position = rng.uniform(0.0, widths.sum(), bridge.size)
        pseudotime[bridge] = np.where(
            position < widths[0], t_lo + position, hi + position - widths[0]
        )
    low_quality = np.zeros(n_rows, dtype=bool)
    n_low = round(low_quality_rate * n_cells)
    low_quality[rng.choice(n_singlets, size=min(n_low, n_singlets), replace=False)] = True

    library_factor = np.array([_LIBRARY_FACTOR[p] for p in POPULATIONS])
    library = library_factor[row_pop] * rng.lognormal(0.0, _LIBRARY_LOG_SD, n_rows)
    healthy_singlet = ~low_quality[:n_singlets]
    library *= median_library_size / np.median(library[:n_singlets][healthy_singlet])
    library[low_quality] *= rng.lognormal(np.log(0.25), 0.3, low_quality.sum())
    mito_target = np.where(low_quality, rng.uniform(0.2, 0.6, n_rows), np.nan)

    counts = _sample_counts(
        genes=genes,
        row_pop=row_pop,
        row_patient=row_patient,
        pseudotime=pseudotime,
        library=library,
        mito_target=mito_target,
        non_responder=non_responder[row_patient],
        rising_log=rising_log,
        response_log=response_log,
        batch_log=batch_log,
        rng=rng,
        n_singlets=n_singlets,
    )
    # Doublets: the sum of their two parents' counts (parents are the rows after the singlets).
    singlet_blocks, parents = counts
    blocks = list(singlet_blocks)
    if n_doublets:
        blocks.append(parents[0::2] + parents[1::2])  # canonical sum keeps indices sorted
    X = sp.vstack(blocks, format="csr", dtype=np.float32) if len(blocks) > 1 else blocks[0]
    del blocks, singlet_blocks, parents, counts
    X.sort_indices()  # a linear check: every block is already sorted

    obs = _truth_table(
        n_singlets=n_singlets,
        n_doublets=n_doublets,
        row_pop=row_pop,
        library=library,
        pseudotime=pseudotime,
        low_quality=low_quality,
        patient=np.concatenate([cell_patient, parent_patient[::2]]),
        sample=np.concatenate([cell_sample, parent_sample[::2]]),
        patients=patients,
        non_responder=non_responder,
        samples_per_patient=samples_per_patient,
        tissue=tissue,
    )
    var = pd.DataFrame(index=pd.Index(genes.names, name=None))
    var["true_gene_class"] = pd.Categorical(genes.gene_class)
    var["true_rising_log2fc"] = rising_log / log2
    var["true_response_log2fc"] = response_log / log2
    var["mt"] = genes.gene_class == "mito"
    var["ribo"] = genes.gene_class == "ribo"

    adata = ad.AnnData(X=X, obs=obs, var=var)
    if counts_layer:
        adata.layers["counts"] = X.copy()
    parameters = {
        "n_cells": int(n_cells),
        "n_genes": int(n_genes),
        "organism": organism,
        "n_patients": int(n_patients),
        "samples_per_patient": int(samples_per_patient),
        "seed": int(seed),
        "population_fractions": {k: float(v) for k, v in fractions.items()},
        "rising_programs": rising,
        "response_effects": response,
        "response_composition": composition,
        "batch_strength": float(batch_strength),
        "batch_gene_fraction": float(batch_gene_fraction),
        "doublet_rate": float(doublet_rate),
        "low_quality_rate": float(low_quality_rate),
        "median_library_size": float(median_library_size),
        "separation": float(separation),
        "composition_concentration": float(composition_concentration),
        "tissue": tissue,
        "pseudotime_segments": {
            k: [float(v[0]), float(v[1])] for k, v in PSEUDOTIME_SEGMENTS.items()
        },
        "pseudotime_territories": {
            k: [float(v[0]), float(v[1])] for k, v in PSEUDOTIME_TERRITORIES.items()
        },
        "transitional_fraction": float(transitional_fraction),
        "non_responder_patients": [p for p, nr in zip(patients, non_responder, strict=True) if nr],
    }
    if patient_sd:  # only when asked for: the default data's uns stays as it was
        parameters["patient_programs"] = patient_sd
        parameters["patient_program_log2_offsets"] = {
            name: dict(zip(patients, map(float, offsets), strict=True))
            for name, offsets in patient_offsets.items()
        }
    adata.uns["simulation"] = parameters
    adata.uns["texflow"] = _provenance(organism=organism, parameters=parameters)
    logger.info(
        "simulated %d cells x %d genes (%d doublets, %d low-quality) in %.1f s",
        adata.n_obs,
        adata.n_vars,
        n_doublets,
        int(low_quality.sum()),
        time.perf_counter() - started,
    )
    return adata


class _CellRates:
    """Exact log expected UMIs (at the reference library) of any cell and gene.

    A cell is described by its population, pseudotime (exhausted lineage; 0 elsewhere), patient
    and response; its rate of gene g is the population's (or the interpolated trajectory's) rate
    times the rising, response and batch effects.
    """

    def __init__(self, *, genes: _GeneTable, rising_log, response_log, batch_log) -> None:
        self.log_rates = genes.log_rates
        self.rising_log = rising_log
        self.response_log = response_log
        self.batch_log = batch_log
        self.any_batch = bool(np.any(batch_log))
        self.lineage = np.array([POPULATIONS.index(p) for p in EXHAUSTED_POPULATIONS])

    def anchors(self, pop: np.ndarray, time_: np.ndarray):
        """Anchor populations (a, b) and weight w for each cell (a = b = pop off the lineage)."""
        a, b, w = pop.copy(), pop.copy(), np.zeros(pop.size)
        on = np.isin(pop, self.lineage)
        if on.any():
            a[on], b[on], w[on] = _trajectory_anchors(time_[on])
        return a, b, w

    def dense(self, pop, time_, patient, nr, gene_idx) -> np.ndarray:
        """Log rates, cells x `gene_idx` (a dense block: use for few genes or few cells)."""
        a, b, w = self.anchors(pop, time_)
        sub = self.log_rates[:, gene_idx]
        log_mu = sub[a]
        log_mu += w[:, None] * (sub[b] - log_mu)
        log_mu += time_[:, None] * self.rising_log[gene_idx]
        log_mu += nr[:, None] * self.response_log[gene_idx]
        if self.any_batch:
            log_mu += self.batch_log[:, gene_idx][patient]
        return log_mu

    def pairs(self, a, b, w, time_, patient, nr, gene) -> np.ndarray:
        """Log rates of (cell, gene) pairs given per-pair anchors (for scattered events)."""
        lo = self.log_rates[a, gene]
        log_mu = lo + w * (self.log_rates[b, gene] - lo)
        log_mu += time_ * self.rising_log[gene]
        log_mu += nr * self.response_log[gene]
        if self.any_batch:
            log_mu += self.batch_log[patient, gene]
        return log_mu


@numba.njit(cache=True)
def _counts_kernel(
    seed,
    dense_mu,
    dense_shape,
    dense_genes,
    proposals,
    group,
    cum_bound,
    bound,
    event_genes,
    thin,
    anchor_a,
    anchor_b,
    weight,
    time_,
    patient,
    non_responder,
    event_log_rates,
    event_rising,
    event_response,
    event_batch,
):  # pragma: no cover - compiled
    """Counts of a chunk of cells as CSR arrays (sorted gene indices).

    Dense genes: gamma-Poisson around dense_mu. Event genes: cell c receives proposals[c]
    points of a Poisson process on [0, total bound of its group), generated in increasing order
    (normalised exponential spacings), so the genes they fall on (galloping search in the
    cumulative bound) come out sorted; on the exhausted lineage (thin[c]) a point is kept with
    probability exact rate / bound (thinning). The two sorted streams are merged per cell.
    """
    np.random.seed(seed)
    n_cells, n_dense = dense_mu.shape
    n_event = event_genes.size
    capacity = int(proposals.sum()) + n_cells * n_dense
    out_indptr = np.zeros(n_cells + 1, dtype=np.int64)
    out_indices = np.empty(capacity, dtype=np.int32)
    out_data = np.empty(capacity, dtype=np.float32)
    spacing = np.empty(proposals.max() + 1 if n_cells else 1, dtype=np.float64)
    k = 0
    for c in range(n_cells):
        g = group[c]
        n = proposals[c]
        total = 0.0
        for i in range(n + 1):
            total += np.random.exponential()
            spacing[i] = total
        span = cum_bound[g, n_event - 1] / spacing[n]
        d = 0
        j = 0
        last_gene = -1
        for i in range(n + 1):
            if i < n:
                target = spacing[i] * span
                # galloping search for the first j with cum_bound[g, j] > target
                step = 1
                while j + step < n_event and cum_bound[g, j + step - 1] <= target:
                    j += step
                    step *= 2
                lo, hi = j, min(j + step, n_event - 1)
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if cum_bound[g, mid] > target:
                        hi = mid
                    else:
                        lo = mid + 1
                j = lo
                if thin[c]:
                    la = event_log_rates[anchor_a[c], j]
                    log_mu = la + weight[c] * (event_log_rates[anchor_b[c], j] - la)
                    log_mu += time_[c] * event_rising[j] + non_responder[c] * event_response[j]
                    log_mu += event_batch[patient[c], j]
                    if np.random.random() * bound[g, j] >= np.exp(log_mu):
                        continue
                gene = event_genes[j]
            else:
                gene = 2**31 - 1  # flush the remaining dense genes
            while d < n_dense and dense_genes[d] < gene:
                mu = dense_mu[c, d]
                if mu >= 0.05:
                    count = np.random.poisson(
                        mu * np.random.gamma(dense_shape[d], 1.0 / dense_shape[d])
                    )
                else:  # overdispersion adds < 0.05 * mu * dispersion to the variance: skip it
                    count = np.random.poisson(mu)
                if count > 0:
                    out_indices[k] = dense_genes[d]
                    out_data[k] = count
                    k += 1
                d += 1
            if i == n:
                break
            if gene == last_gene:
                out_data[k - 1] += 1.0
            else:
                out_indices[k] = gene
                out_data[k] = 1.0
                k += 1
                last_gene = gene
        out_indptr[c + 1] = k
    return out_indptr, out_indices[:k].copy(), out_data[:k].copy()


def _sample_counts(
    *,
    genes: _GeneTable,
    row_pop: np.ndarray,
    row_patient: np.ndarray,
    pseudotime: np.ndarray,
    library: np.ndarray,
    mito_target: np.ndarray,
    non_responder: np.ndarray,
    rising_log: np.ndarray,
    response_log: np.ndarray,
    batch_log: np.ndarray,
    rng: np.random.Generator,
    n_singlets: int,
) -> tuple[list[sp.csr_matrix], sp.csr_matrix]:
    """Draw the counts of all rows, chunk by chunk (never a dense rows x genes matrix).

    Returns the CSR blocks of the singlet rows and the CSR of the doublet parents' rows.

    Genes with at least `_DENSE_MIN_UMIS` expected UMIs in some population (and mitochondrial
    genes, which low-quality cells change) are drawn densely as gamma-Poisson (negative
    binomial). All other genes are drawn as a Poisson process per cell whose cost is
    proportional to the counts, not to cells x genes: points are proposed at an upper-bound rate
    per (population, patient) group and, on the exhausted lineage whose rates move with
    pseudotime, thinned to each cell's exact rate (Lewis & Shedler 1979). A gene below one
    expected UMI is Poisson for practical purposes: NB variance mu + phi mu^2 exceeds the
    Poisson variance by < 25 % at mu = 1 with the dispersion used here (cf. Svensson 2020).
    """
    n_rows, n_genes = row_pop.size, len(genes.names)
    n_patients = batch_log.shape[0]
    rates = _CellRates(
        genes=genes, rising_log=rising_log, response_log=response_log, batch_log=batch_log
    )
    max_level = np.exp(genes.log_rates).max(axis=0)
    dense_mask = (max_level >= _DENSE_MIN_UMIS) | (genes.gene_class == "mito")
    dense_idx = np.flatnonzero(dense_mask)
    event_idx = np.flatnonzero(~dense_mask)
    mito_in_dense = genes.gene_class[dense_idx] == "mito"
    shape = 1.0 / genes.dispersion[dense_idx]
    logger.debug("%d genes drawn densely, %d as events", dense_idx.size, event_idx.size)

    time_ = np.where(np.isnan(pseudotime), 0.0, pseudotime)
    nr = non_responder.astype(np.int64)
    a, b, w = rates.anchors(row_pop, time_)
    on_lineage = np.isin(row_pop, rates.lineage)
    all_genes = np.arange(n_genes)
    total_rate = np.empty(n_rows)
    # Upper-bound rates of the event genes per (population, patient) group: the maximum over
    # the pseudotimes where the piecewise-monotone log rate can peak (segment ends, anchors).
    group_of = np.full((len(POPULATIONS), n_patients), -1)
    bounds: list[np.ndarray] = []
    # 201 grid points: linear interpolation of this smooth total is then exact to < 0.1 %.
    grid = np.linspace(0.0, 1.0, 201)
    for patient in range(n_patients):
        here = row_patient == patient
        if not here.any():
            continue
        patient_nr = int(nr[here][0])
        for pop in np.unique(row_pop[here]):
            if pop in rates.lineage:
                lo, hi = PSEUDOTIME_TERRITORIES[POPULATIONS[pop]]
                points = np.array([lo, hi, *[t for t in _ANCHOR_TIMES if lo < t < hi]])
            else:
                points = np.zeros(1)
            log_mu = rates.dense(
                np.full(points.size, pop),
                points,
                np.full(points.size, patient),
                np.full(points.size, patient_nr),
                all_genes,
            )
            if pop not in rates.lineage:
                total_rate[here & (row_pop == pop)] = np.exp(log_mu).sum()
            # Bound the identity part (monotone between anchors) and the linear rising part
            # separately: their sum can peak inside the segment.
            rising_part = points[:, None] * rising_log[event_idx]
            log_bound = (log_mu[:, event_idx] - rising_part).max(axis=0) + rising_part.max(axis=0)
            group_of[pop, patient] = len(bounds)
            bounds.append(np.exp(log_bound) * (1.0 + 1e-9))
        lineage_here = here & on_lineage
        if lineage_here.any():
            log_mu = rates.dense(
                np.full(grid.size, rates.lineage[0]),
                grid,
                np.full(grid.size, patient),
                np.full(grid.size, patient_nr),
                all_genes,
            )
            total_rate[lineage_here] = np.interp(
                time_[lineage_here], grid, np.exp(log_mu).sum(axis=1)
            )
    bound = np.vstack(bounds) if bounds else np.zeros((1, event_idx.size))
    cum_bound = np.cumsum(bound, axis=1)
    row_group = group_of[row_pop, row_patient]
    event_log_rates = np.ascontiguousarray(genes.log_rates[:, event_idx])
    event_batch = np.ascontiguousarray(batch_log[:, event_idx])
    event_rising = rising_log[event_idx].copy()
    event_response = response_log[event_idx].copy()
    event_genes = event_idx.astype(np.int32)

    blocks = []
    # Chunks never straddle the first doublet parent, so singlets and parents come out apart.
    chunk_starts = [*range(0, n_singlets, _CHUNK_CELLS), *range(n_singlets, n_rows, _CHUNK_CELLS)]
    chunk_ends = [*chunk_starts[1:], n_rows]
    for start, end in zip(chunk_starts, chunk_ends, strict=True):
        rows = np.arange(
            start, min(end, start + _CHUNK_CELLS, n_singlets if start < n_singlets else n_rows)
        )
        # Dense genes: exact per-cell rates (gamma-Poisson draws in the kernel).
        mu = np.exp(rates.dense(row_pop[rows], time_[rows], row_patient[rows], nr[rows], dense_idx))
        total = total_rate[rows].copy()
        lq = np.flatnonzero(~np.isnan(mito_target[rows]))
        if lq.size:  # low-quality cells: scale mitochondrial genes to the target share
            mito_now = mu[lq][:, mito_in_dense].sum(axis=1)
            rest = total[lq] - mito_now
            target = mito_target[rows[lq]]
            factor = target * rest / ((1.0 - target) * mito_now)
            mu[np.ix_(lq, np.flatnonzero(mito_in_dense))] *= factor[:, None]
            total[lq] = rest + factor * mito_now
        scale = library[rows] / total
        mu *= scale[:, None]
        # Event genes: Poisson numbers of proposals per cell, scattered and merged in the kernel.
        groups = row_group[rows]
        proposals = rng.poisson(scale * cum_bound[groups, -1])
        indptr, indices, data = _counts_kernel(
            int(rng.integers(2**31 - 1)),
            mu,
            shape,
            dense_idx.astype(np.int32),
            proposals.astype(np.int64),
            groups,
            cum_bound,
            bound,
            event_genes,
            on_lineage[rows],
            a[rows],
            b[rows],
            w[rows],
            time_[rows],
            row_patient[rows],
            nr[rows].astype(np.float64),
            event_log_rates,
            event_rising,
            event_response,
            event_batch,
        )
        blocks.append(sp.csr_matrix((data, indices, indptr), shape=(rows.size, n_genes)))
    n_singlet_blocks = sum(start < n_singlets for start in chunk_starts)
    parents = (
        sp.vstack(blocks[n_singlet_blocks:], format="csr")
        if len(blocks) > n_singlet_blocks
        else sp.csr_matrix((0, n_genes), dtype=np.float32)
    )
    return blocks[:n_singlet_blocks], parents


def _truth_table(
    *,
    n_singlets: int,
    n_doublets: int,
    row_pop: np.ndarray,
    library: np.ndarray,
    pseudotime: np.ndarray,
    low_quality: np.ndarray,
    patient: np.ndarray,
    sample: np.ndarray,
    patients: list[str],
    non_responder: np.ndarray,
    samples_per_patient: int,
    tissue: str,
) -> pd.DataFrame:
    n_cells = n_singlets + n_doublets
    pop = row_pop[:n_singlets].tolist()
    lib = library[:n_singlets].tolist()
    pt = pseudotime[:n_singlets].tolist()
    doublet_of = [""] * n_singlets
    is_cd8 = [POPULATIONS[p] in CD8_POPULATIONS for p in pop]
    for k in range(n_doublets):
        i, j = n_singlets + 2 * k, n_singlets + 2 * k + 1
        major, minor = (i, j) if library[i] >= library[j] else (j, i)
        pop.append(row_pop[major])
        lib.append(library[i] + library[j])
        pt.append(np.nan)
        doublet_of.append(f"{POPULATIONS[row_pop[major]]}+{POPULATIONS[row_pop[minor]]}")
        is_cd8.append(
            POPULATIONS[row_pop[i]] in CD8_POPULATIONS
            and POPULATIONS[row_pop[j]] in CD8_POPULATIONS
        )
    populations = [POPULATIONS[p] for p in pop]
    timepoints = ["pre", "post"][:samples_per_patient]
    obs = pd.DataFrame(index=pd.Index([f"cell{i:07d}" for i in range(n_cells)]))
    patient_names = np.array(patients)[patient]
    obs["sample"] = pd.Categorical(
        [f"{p}_{timepoints[s]}" for p, s in zip(patient_names, sample, strict=True)]
    )
    obs["patient"] = pd.Categorical(patient_names, categories=patients)
    obs["response"] = pd.Categorical(
        np.where(non_responder[patient], "non_responder", "responder"),
        categories=["responder", "non_responder"],
    )
    obs["timepoint"] = pd.Categorical(np.array(timepoints)[sample], categories=timepoints)
    obs["tissue"] = pd.Categorical([tissue] * n_cells)
    obs["true_population"] = pd.Categorical(populations, categories=list(POPULATIONS))
    obs["true_is_cd8"] = np.array(is_cd8, dtype=bool)
    states = [STATE_OF_POPULATION.get(p, NON_CD8_STATE) for p in populations]
    obs["true_state"] = pd.Categorical(
        states, categories=[*STATE_OF_POPULATION.values(), NON_CD8_STATE]
    )
    obs["true_pseudotime"] = np.array(pt, dtype=float)
    obs["true_doublet"] = np.arange(n_cells) >= n_singlets
    obs["true_doublet_of"] = pd.Categorical(doublet_of)
    obs["true_low_quality"] = np.concatenate([low_quality[:n_singlets], np.zeros(n_doublets, bool)])
    obs["true_library_size"] = np.array(lib, dtype=float)
    return obs


def _provenance(*, organism: str, parameters: dict) -> dict:
    from importlib.metadata import version

    import scipy

    import texflow

    return {
        "dataset": "simulated",
        "organism": organism,
        "value_type": "counts",
        "sources": {},
        "versions": {
            "texflow": texflow.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "anndata": version("anndata"),
            "pandas": pd.__version__,
        },
        "params": {"simulate": parameters},
        "skipped": {},
    }


def _parse_effects(
    values: Sequence[str] | None, option: str, key: str = "PROGRAM"
) -> dict[str, float]:
    effects = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{option} expects {key}=LOG2FC, got {item!r}")
        effects[name] = float(value)
    return effects


def main(argv: Sequence[str] | None = None) -> None:
    """Command line:
    ``texflow-simulate --n-cells 5000 --organism mouse --seed 1 --out sim.h5ad``."""
    from texflow.utils import atomic_path, setup_logging, write_h5ad

    parser = argparse.ArgumentParser(prog="texflow-simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output .h5ad (written atomically)")
    parser.add_argument("--n-cells", type=int, default=5000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--organism", choices=("human", "mouse"), default="human")
    parser.add_argument("--n-patients", type=int, default=6)
    parser.add_argument("--samples-per-patient", type=int, choices=(1, 2), default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rising",
        nargs="*",
        metavar="PROGRAM=LOG2FC",
        help="programs rising along pseudotime "
        "(default: ifn_i_core=1 lpo_drivers=1; give none for flat)",
    )
    parser.add_argument("--response", nargs="*", metavar="PROGRAM=LOG2FC", default=[])
    parser.add_argument(
        "--response-composition",
        nargs="*",
        metavar="POPULATION=LOG2FC",
        default=[],
        help="log2 fold change of a population's fraction in non-responders over responders",
    )
    parser.add_argument(
        "--rare-tpex",
        action="store_true",
        help="rare-Tpex mode (RARE_TPEX): Tpex 3%% of CD8 cells in every data set",
    )
    parser.add_argument("--batch-strength", type=float, default=0.0)
    parser.add_argument("--doublet-rate", type=float, default=0.05)
    parser.add_argument("--low-quality-rate", type=float, default=0.05)
    parser.add_argument("--median-library-size", type=float, default=4000.0)
    parser.add_argument("--separation", type=float, default=1.0)
    parser.add_argument(
        "--compact",
        action="store_true",
        help="X only (no counts layer copy), gzip-compressed: small enough to ship as a demo",
    )
    args = parser.parse_args(argv)
    setup_logging()
    rising = (
        DEFAULT_RISING_PROGRAMS if args.rising is None else _parse_effects(args.rising, "--rising")
    )
    adata = simulate(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        organism=args.organism,
        n_patients=args.n_patients,
        samples_per_patient=args.samples_per_patient,
        seed=args.seed,
        rising_programs=rising,
        response_effects=_parse_effects(args.response, "--response"),
        response_composition=_parse_effects(
            args.response_composition, "--response-composition", "POPULATION"
        ),
        **(dict(RARE_TPEX) if args.rare_tpex else {}),
        batch_strength=args.batch_strength,
        doublet_rate=args.doublet_rate,
        low_quality_rate=args.low_quality_rate,
        median_library_size=args.median_library_size,
        separation=args.separation,
        counts_layer=not args.compact,
    )
    if args.compact:
        with atomic_path(args.out) as tmp:
            adata.write_h5ad(tmp, compression="gzip")
    else:
        write_h5ad(adata, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
