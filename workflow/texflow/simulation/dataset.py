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

1. Hand-written marker levels (`genes._MARKERS`, expected UMIs per cell at a 4,000-UMI library) that
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
of cells, as negative binomial; the many lowly expressed background genes are drawn as a Poisson
process per cell, at an upper-bound rate of the cell's (population, patient) group thinned to
the cell's exact rate (`counts._sample_counts`; the overdispersion of a gene with < 1 expected
UMI per cell is negligible next to its Poisson noise, cf. Svensson 2020, Nat Biotechnol 38:147).
The counts are drawn chunk of cells after chunk, in order, so the chunks can be written to disk as
they are drawn (`simulate(out=...)`) with the same result as stacking them in memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..contract import NON_RESPONDER, PATIENT, RESPONDER, RESPONSE, SAMPLE, TIMEPOINT
from .counts import _sample_counts, _stack_cells
from .genes import _build_gene_table, _GeneTable
from .populations import (
    _LIBRARY_FACTOR,
    _LIBRARY_LOG_SD,
    CD8_POPULATIONS,
    DEFAULT_POPULATION_FRACTIONS,
    DEFAULT_RISING_PROGRAMS,
    NON_CD8_STATE,
    POPULATIONS,
    PSEUDOTIME_SEGMENTS,
    PSEUDOTIME_TERRITORIES,
    RARE_TPEX,
    STATE_OF_POPULATION,
)

logger = logging.getLogger(__name__)


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
    out: str | os.PathLike | None = None,
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
    out
        Write the dataset to this h5ad file (atomically) with X written chunk by chunk of cells
        as they are drawn, so the matrix is never in memory (1M cells x 20k genes: ~2.5e9
        non-zeros, ~30 GB as scipy CSR); needs ``counts_layer=False``. The file holds the
        same X, obs, var and uns as `simulate` without `out` returns (same arguments, same
        bits; tests/unit/test_simulation_stream.py), written with `texflow.utils.write_h5ad`.
        X's indptr is int64 once it holds 2^31 - 1 non-zeros (`utils.append_csr_rows`), int32
        below, as in a file written from memory.

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

    With `out`, the same without X (None): the counts are in the file.

    A doublet's ``true_population``/``true_state`` are those of its larger parent; its
    ``true_is_cd8`` is True only if both parents are CD8 T cells.
    """
    started = time.perf_counter()
    if out is not None and counts_layer:
        raise ValueError("simulate(out=...) writes X only: pass counts_layer=False")
    _check_arguments(
        organism=organism,
        samples_per_patient=samples_per_patient,
        n_cells=n_cells,
        n_patients=n_patients,
        doublet_rate=doublet_rate,
        low_quality_rate=low_quality_rate,
    )
    fractions = _normalised_fractions(population_fractions)

    rng = np.random.default_rng(seed)
    genes = _build_gene_table(organism=organism, n_genes=n_genes, rng=rng, separation=separation)
    program_names = set(genes.program_genes)
    rising = _validate_mapping("rising_programs", rising_programs, program_names)
    response = _validate_mapping("response_effects", response_effects, program_names)
    composition = _validate_populations("response_composition", response_composition)
    patient_sd = _validate_mapping("patient_programs", patient_programs, program_names)
    if not all(np.isfinite(v) and v >= 0 for v in patient_sd.values()):
        raise ValueError("patient_programs: SDs must be finite and >= 0")
    rising_log = _program_log_effects(genes, rising)  # natural log, pseudotime 0 -> 1
    response_log = _program_log_effects(genes, response)

    patients = [f"P{i + 1:02d}" for i in range(n_patients)]
    base_fractions = np.array([fractions[p] for p in POPULATIONS])
    cohort = _draw_patients(
        rng,
        genes=genes,
        n_patients=n_patients,
        seed=seed,
        batch_strength=batch_strength,
        batch_gene_fraction=batch_gene_fraction,
        patient_sd=patient_sd,
        base_fractions=base_fractions,
        composition_concentration=composition_concentration,
        composition=composition,
    )
    cells = _draw_cells(
        rng,
        n_cells=n_cells,
        doublet_rate=doublet_rate,
        samples_per_patient=samples_per_patient,
        patient_fractions=cohort.fractions,
        base_fractions=base_fractions,
    )
    pseudotime = _draw_pseudotime(rng, cells.row_pop, transitional_fraction=transitional_fraction)
    low_quality, library, mito_target = _draw_libraries(
        rng,
        cells=cells,
        n_cells=n_cells,
        low_quality_rate=low_quality_rate,
        median_library_size=median_library_size,
    )

    row_patient = cells.row_patient
    blocks = _sample_counts(
        genes=genes,
        row_pop=cells.row_pop,
        row_patient=row_patient,
        pseudotime=pseudotime,
        library=library,
        mito_target=mito_target,
        non_responder=cohort.non_responder[row_patient],
        rising_log=rising_log,
        response_log=response_log,
        batch_log=cohort.batch_log,
        rng=rng,
        n_singlets=cells.n_singlets,
    )
    obs = _truth_table(
        n_singlets=cells.n_singlets,
        n_doublets=cells.n_doublets,
        row_pop=cells.row_pop,
        library=library,
        pseudotime=pseudotime,
        low_quality=low_quality,
        patient=np.concatenate([cells.patient, cells.parent_patient[::2]]),
        sample=np.concatenate([cells.sample, cells.parent_sample[::2]]),
        patients=patients,
        non_responder=cohort.non_responder,
        samples_per_patient=samples_per_patient,
        tissue=tissue,
    )
    log2 = np.log(2.0)
    var = pd.DataFrame(index=pd.Index(genes.names, name=None))
    var["true_gene_class"] = pd.Categorical(genes.gene_class)
    var["true_rising_log2fc"] = rising_log / log2
    var["true_response_log2fc"] = response_log / log2
    var["mt"] = genes.gene_class == "mito"
    var["ribo"] = genes.gene_class == "ribo"

    if out is None:
        X = _stack_cells(blocks)
        adata = ad.AnnData(X=X, obs=obs, var=var)
        if counts_layer:
            adata.layers["counts"] = X.copy()
    else:
        adata = ad.AnnData(obs=obs, var=var)
    parameters = {
        "n_cells": int(n_cells),
        "n_genes": len(genes.names),
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
        "non_responder_patients": [
            p for p, nr in zip(patients, cohort.non_responder, strict=True) if nr
        ],
    }
    if patient_sd:  # only when asked for: the default data's uns stays as it was
        parameters["patient_programs"] = patient_sd
        parameters["patient_program_log2_offsets"] = {
            name: dict(zip(patients, map(float, offsets), strict=True))
            for name, offsets in cohort.program_offsets.items()
        }
    adata.uns["simulation"] = parameters
    adata.uns["texflow"] = _provenance(organism=organism, parameters=parameters)
    if out is not None:
        _write_streamed(adata, blocks, out)
    logger.info(
        "simulated %d cells x %d genes (%d doublets, %d low-quality) in %.1f s",
        adata.n_obs,
        adata.n_vars,
        cells.n_doublets,
        int(low_quality.sum()),
        time.perf_counter() - started,
    )
    return adata


def _write_streamed(adata: ad.AnnData, blocks: Iterator[sp.csr_matrix], out) -> None:
    """`adata` (no X) and the counts `blocks` as its X, one block after the other, atomically
    (`utils.write_h5ad_by_rows`)."""
    from ..utils import write_h5ad_by_rows

    write_h5ad_by_rows(adata, out, chunks=({"X": block} for block in blocks))


def _check_arguments(
    *,
    organism: str,
    samples_per_patient: int,
    n_cells: int,
    n_patients: int,
    doublet_rate: float,
    low_quality_rate: float,
) -> None:
    if organism not in ("human", "mouse"):
        raise ValueError(f"organism must be 'human' or 'mouse', not {organism!r}")
    if samples_per_patient not in (1, 2):
        raise ValueError("samples_per_patient must be 1 or 2")
    if n_cells < 1 or n_patients < 1:
        raise ValueError("n_cells and n_patients must be positive")
    for name, rate in (
        ("doublet_rate", doublet_rate),
        ("low_quality_rate", low_quality_rate),
    ):
        if not 0.0 <= rate < 0.5:
            raise ValueError(f"{name} must be in [0, 0.5), not {rate}")


def _normalised_fractions(given: Mapping[str, float] | None) -> dict[str, float]:
    """Population -> fraction of cells, every population, summing to 1 (`simulate`'s
    ``population_fractions``; None: `DEFAULT_POPULATION_FRACTIONS`)."""
    fractions = dict.fromkeys(POPULATIONS, 0.0)
    given = DEFAULT_POPULATION_FRACTIONS if given is None else given
    unknown = sorted(set(given) - set(POPULATIONS))
    if unknown:
        raise ValueError(
            f"population_fractions: unknown population(s) {unknown}; known: {POPULATIONS}"
        )
    fractions.update({k: float(v) for k, v in given.items()})
    total = sum(fractions.values())
    if total <= 0 or min(fractions.values()) < 0:
        raise ValueError("population_fractions must be non-negative and not all zero")
    return {k: v / total for k, v in fractions.items()}


def _program_log_effects(genes: _GeneTable, effects: Mapping[str, float]) -> np.ndarray:
    """Per gene: the natural-log change of each program's log2 fold change, summed."""
    out = np.zeros(len(genes.names))
    for name, effect in effects.items():
        out[genes.program_genes[name]] += np.log(2.0) * effect
    return out


@dataclasses.dataclass(frozen=True)
class _Cohort:
    """The simulated patients: who is a non-responder, each one's log offsets per gene (batch
    and program offsets), its program offsets (log2), and its population fractions."""

    non_responder: np.ndarray  # (patients,) bool
    batch_log: np.ndarray  # (patients, genes)
    program_offsets: dict[str, np.ndarray]  # program -> (patients,) log2 offsets
    fractions: np.ndarray  # (patients, populations)


def _draw_patients(
    rng: np.random.Generator,
    *,
    genes: _GeneTable,
    n_patients: int,
    seed: int,
    batch_strength: float,
    batch_gene_fraction: float,
    patient_sd: Mapping[str, float],
    base_fractions: np.ndarray,
    composition_concentration: float,
    composition: Mapping[str, float],
) -> _Cohort:
    """Response labels (half the patients, rounded down, are non-responders), batch and
    program offsets, and population fractions (Dirichlet around `base_fractions`, with the
    planted composition difference in non-responders)."""
    log2 = np.log(2.0)
    n_genes = len(genes.names)
    non_responder = np.zeros(n_patients, dtype=bool)
    non_responder[rng.permutation(n_patients)[: n_patients // 2]] = True
    batch_log = np.zeros((n_patients, n_genes))
    if batch_strength > 0:
        for p in range(n_patients):
            hit = rng.random(n_genes) < batch_gene_fraction
            batch_log[p, hit] = log2 * rng.normal(0.0, batch_strength, hit.sum())
    program_offsets = {}
    if patient_sd:  # own stream: the main generator's draws stay those of the default data
        offset_rng = np.random.default_rng([int(seed), 16])
        for name, sd in patient_sd.items():
            program_offsets[name] = offset_rng.normal(0.0, sd, n_patients)
            batch_log[:, genes.program_genes[name]] += log2 * program_offsets[name][:, None]
    fractions = np.vstack(
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
        shifted = fractions[non_responder] * shift
        fractions[non_responder] = shifted / shifted.sum(axis=1, keepdims=True)
    return _Cohort(non_responder, batch_log, program_offsets, fractions)


@dataclasses.dataclass(frozen=True)
class _Cells:
    """The simulated rows: singlets first, then the two parents of each doublet."""

    n_singlets: int
    n_doublets: int
    patient: np.ndarray  # (singlets,) patient index
    population: np.ndarray  # (singlets,) population index
    sample: np.ndarray  # (singlets,) sample index within the patient
    parent_patient: np.ndarray  # (2 * doublets,)
    parent_population: np.ndarray  # (2 * doublets,)
    parent_sample: np.ndarray  # (2 * doublets,)

    @property
    def row_pop(self) -> np.ndarray:
        return np.concatenate([self.population, self.parent_population])

    @property
    def row_patient(self) -> np.ndarray:
        return np.concatenate([self.patient, self.parent_patient])


def _draw_cells(
    rng: np.random.Generator,
    *,
    n_cells: int,
    doublet_rate: float,
    samples_per_patient: int,
    patient_fractions: np.ndarray,
    base_fractions: np.ndarray,
) -> _Cells:
    """Each singlet's patient, population (its patient's fractions) and sample; each
    doublet's two parents, from two different populations (the global fractions)."""
    n_patients = patient_fractions.shape[0]
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
    return _Cells(
        n_singlets, n_doublets, cell_patient, cell_pop, cell_sample,
        parent_patient, parent_pop, parent_sample,
    )  # fmt: skip


def _draw_pseudotime(
    rng: np.random.Generator, row_pop: np.ndarray, *, transitional_fraction: float
) -> np.ndarray:
    """True pseudotime of each exhausted-lineage row (NaN elsewhere): uniform in its state's
    core segment, or, for a `transitional_fraction`, in the gaps of its territory."""
    pseudotime = np.full(row_pop.size, np.nan)
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
    return pseudotime


def _draw_libraries(
    rng: np.random.Generator,
    *,
    cells: _Cells,
    n_cells: int,
    low_quality_rate: float,
    median_library_size: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which singlets are low quality, every row's library size (log-normal around its
    population's, scaled to `median_library_size` over healthy singlets; a quarter for
    low-quality cells), and the mitochondrial share of low-quality cells (NaN elsewhere)."""
    row_pop = cells.row_pop
    n_rows, n_singlets = row_pop.size, cells.n_singlets
    low_quality = np.zeros(n_rows, dtype=bool)
    n_low = round(low_quality_rate * n_cells)
    low_quality[rng.choice(n_singlets, size=min(n_low, n_singlets), replace=False)] = True
    library_factor = np.array([_LIBRARY_FACTOR[p] for p in POPULATIONS])
    library = library_factor[row_pop] * rng.lognormal(0.0, _LIBRARY_LOG_SD, n_rows)
    healthy_singlet = ~low_quality[:n_singlets]
    library *= median_library_size / np.median(library[:n_singlets][healthy_singlet])
    library[low_quality] *= rng.lognormal(np.log(0.25), 0.3, low_quality.sum())
    mito_target = np.where(low_quality, rng.uniform(0.2, 0.6, n_rows), np.nan)
    return low_quality, library, mito_target


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
    obs[SAMPLE] = pd.Categorical(
        [f"{p}_{timepoints[s]}" for p, s in zip(patient_names, sample, strict=True)]
    )
    obs[PATIENT] = pd.Categorical(patient_names, categories=patients)
    obs[RESPONSE] = pd.Categorical(
        np.where(non_responder[patient], NON_RESPONDER, RESPONDER),
        categories=[RESPONDER, NON_RESPONDER],
    )
    obs[TIMEPOINT] = pd.Categorical(np.array(timepoints)[sample], categories=timepoints)
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
