"""The simulated genes and their expected UMIs per population: marker levels, housekeeping,
mitochondrial and ribosomal genes, the shipped gene programs and a background of genes with
lineage-tree differential expression (`texflow.simulation.simulate`, layers 1-3 of its model)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .populations import EXHAUSTED_POPULATIONS, POPULATIONS

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
    from texflow.signatures import SIGNATURES_DIR

    for path in sorted(SIGNATURES_DIR.glob("*ortholog*.tsv")):
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
