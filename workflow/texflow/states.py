"""Label CD8 T-cell clusters as Tpex, Tex_int, Tex_term, naive_like, effector_memory or other.

How a cluster gets its label (all thresholds are `StatesParams`, config key ``states``):

1. Every cell is scored with UCell (`texflow.scoring.ucell`) for the identity programs
   (exhausted_gate, tpex, tex_int, tex_term, naive_like, effector_memory, cytotoxic, trm, mait)
   and the two axes isg and cycling. UCell scores depend only on a cell's own gene ranks, so they
   are the same on counts, TPM or log values and do not depend on the rest of the dataset.
2. Per cluster, each program's mean cell score is put on one scale: the number of cell-level
   standard deviations it lies above the mean of all cells,
   ``z = (mean score in cluster - mean score of all cells) / SD of all cells``.
   (Cell-level rather than cluster-level standardisation: it does not depend on how many
   clusters Leiden made, and a single cluster still gets a value.)
3. Candidate states are Tpex, Tex_int, Tex_term (only if the cluster passes the exhausted gate:
   its exhausted_gate z >= `gate_min_z`), naive_like and effector_memory. The best candidate
   wins if its z >= `min_state_z`; otherwise the cluster is `other_cd8` (e.g. MAIT, TRM or
   anything the programs do not describe).
4. Confidence = z(best) - z(second best candidate), in the same cell-SD units. Below
   `min_margin` the cluster is `ambiguous` (its best and second-best states are still reported),
   never forced.
5. isg_high / cycling flags: z of the isg / cycling program >= `flag_min_z`. They never replace
   the identity label (ProjecTILs likewise keeps IFN and cycling as separate axes).

Per cell, beside the cluster's label (human tumour Tpex are a few percent of CD8 T cells and
seldom form a Leiden cluster of their own):

6. Every program's UCell score is smoothed over the CD8 kNN graph (scGate's kNN smoothing,
   Andreatta et al. 2022; UCell's ``SmoothKNN``: the cell with weight 1 and its `smooth_k`
   nearest neighbours with weight ``(1 - smooth_decay) ** rank``), put on the same scale as the
   cluster means (z against the mean and SD of all cells' unsmoothed scores, so a cell inside a
   pure cluster gets about its cluster's z), and decided by the same rules 3-4 with the same
   thresholds: ``obs["cell_state"]`` and ``obs["cell_state_confidence"]``.
   Smoothing assumes a cell's neighbours share its state, which a rare state's do not: a true
   Tpex cell has on average 26 % Tpex among its 10 neighbours on the simulator's rare-Tpex mode
   (benchmarks/README.md), and smoothing erased it. So a cell whose *own* (unsmoothed) scores
   call it one of `keep_own_call` (default Tpex) keeps that call when its smoothed exhausted
   gate passes; ``obs["cell_state_basis"]`` says which cells were called on their own scores.
7. Each cluster's row says which state most of its cells are called and whether that agrees
   with the cluster's own label.

Per cell: ``obs["score_<program>"]``, ``obs["state"]``, ``obs["state_confidence"]`` (the
cluster's), ``obs["cell_state"]``, ``obs["cell_state_confidence"]``, and the smoothed
``obs["exhaustion_axis"]`` = smoothed score_tex_term - smoothed score_tpex.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .contract import (
    AGREES_WITH_CELLS,
    AMBIGUOUS_STATE,
    BEST_STATE,
    CELL_MAJORITY_FRACTION,
    CELL_MAJORITY_STATE,
    CELL_STATE_BASIS_KEY,
    CELL_STATE_KEY,
    CELL_STATE_NOTE,
    CLUSTER,
    CLUSTER_STATE_KEY,
    CONFIDENCE,
    CONFIDENCE_KEYS,
    CYCLING,
    EXHAUSTED_GATE,
    EXHAUSTED_STATES,
    EXHAUSTION_AXIS_KEY,
    EXHAUSTION_AXIS_PROGRAMS,
    FRAC_HIGH,
    ISG_HIGH,
    MARKERS_DOWN,
    MARKERS_UP,
    MEAN,
    MEDIAN,
    N_CELLS,
    N_UP_PRESENT,
    OTHER_STATE,
    OWN_SCORES_BASIS,
    PROGRAM,
    SCORE_PREFIX,
    SECOND_BEST,
    SMOOTHED_BASIS,
    STATE,
    STATE_CATEGORIES,
    STATE_CONFIDENCE,
    STATE_PROGRAMS,
    TPEX,
    TRUSTED,
    UNTRUSTED_PROGRAMS,
    Z_PREFIX,
    Z,
)
from .errors import InputDataError
from .scoring import DEFAULT_MAX_RANK, ucell
from .signatures import GeneProgram, coverage_table, load_programs, resolve_aliases
from .stage import SkipNotes, StageResult, organism_of

logger = logging.getLogger(__name__)

GATE_PROGRAM = "exhausted_gate"
FLAG_PROGRAMS = ("isg", "cycling")  # the isg_high / cycling flags, never a state
# Scored for the summary table and the figure, but no state of their own (they end in other_cd8
# when nothing else fits): TRM markers overlap Tex-term in tumours, cytotoxic genes overlap
# Tex_int and effector cells.
CONTEXT_PROGRAMS = ("cytotoxic", "trm", "mait")
SCORED_PROGRAMS = (
    GATE_PROGRAM,
    *STATE_PROGRAMS.values(),
    *CONTEXT_PROGRAMS,
    *FLAG_PROGRAMS,
)


@dataclass
class StatesParams:
    """Parameters of the states stage (defaults and reasons: schemas/config/states.schema.yaml)."""

    cluster_key: str = "cluster"
    max_rank: int = DEFAULT_MAX_RANK
    min_margin: float = 0.2
    gate_min_z: float = -0.5
    min_state_z: float = 0.0
    flag_min_z: float = 1.0
    n_marker_genes: int = 5
    missing_genes: str = "impute"
    smooth_k: int = 10
    smooth_decay: float = 0.1
    keep_own_call: tuple[str, ...] = (TPEX,)

    @classmethod
    def from_config(cls, config: Mapping | None) -> StatesParams:
        config = dict(config or {})
        known = set(cls.__dataclass_fields__)
        values = {key: value for key, value in config.items() if key in known}
        if "keep_own_call" in values:
            values["keep_own_call"] = tuple(values["keep_own_call"])
        return cls(**values)

    def as_dict(self) -> dict:
        values = asdict(self)
        values["keep_own_call"] = list(self.keep_own_call)
        return values


def state_programs(organism: str, var_names, *, extra: str | None = None) -> dict[str, GeneProgram]:
    """The programs the states stage scores, with symbols resolved against `var_names`."""
    programs = load_programs(organism, extra=extra or None)
    missing = [name for name in SCORED_PROGRAMS if name not in programs]
    if missing:
        raise InputDataError(
            f"gene program(s) {missing} are needed to label states but not defined"
        )
    chosen = {name: programs[name] for name in SCORED_PROGRAMS}
    return resolve_aliases(chosen, var_names, organism=organism)


def cluster_z_scores(adata: ad.AnnData, *, cluster_key: str, programs) -> pd.DataFrame:
    """Cluster x program: (cluster mean - all-cell mean) / all-cell SD of the UCell scores."""
    scores = adata.obs[[f"{SCORE_PREFIX}{name}" for name in programs]].astype(float)
    scores.columns = list(programs)
    sd = scores.std(ddof=0).replace(0.0, np.nan)  # a program constant in every cell says nothing
    means = scores.groupby(adata.obs[cluster_key], observed=True).mean()
    return (means - scores.mean()) / sd


def cluster_summary(adata: ad.AnnData, *, cluster_key: str, programs) -> pd.DataFrame:
    """Long table: cluster, program, n_cells, mean, median, frac_high, z.

    ``frac_high`` is the fraction of the cluster's cells above the 75th percentile of all cells'
    scores of that program (0.25 expected by chance).
    """
    z = cluster_z_scores(adata, cluster_key=cluster_key, programs=programs)
    groups = adata.obs[cluster_key]
    rows = []
    for name in programs:
        score = adata.obs[f"{SCORE_PREFIX}{name}"].astype(float)
        high = score > score.quantile(0.75)
        grouped = score.groupby(groups, observed=True)
        frame = pd.DataFrame(
            {
                CLUSTER: grouped.mean().index.astype(str),
                PROGRAM: name,
                N_CELLS: grouped.size().to_numpy(),
                MEAN: grouped.mean().to_numpy(),
                MEDIAN: grouped.median().to_numpy(),
                FRAC_HIGH: high.groupby(groups, observed=True).mean().to_numpy(),
                Z: z[name].to_numpy(),
            }
        )
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def knn_neighbours(adata: ad.AnnData, *, k: int) -> np.ndarray:
    """Cells x `k` positions of each cell's nearest neighbours, nearest first.

    From the cluster stage's kNN graph (``obsp["distances"]``); rows with fewer than `k`
    neighbours are padded with the cell itself. Without a graph, one is built on
    ``obsm["X_pca"]`` (or a 20-component PCA of X) with scikit-learn's exact search, and the
    log says so.
    """
    if "distances" in adata.obsp:
        graph = sparse.csr_matrix(adata.obsp["distances"])
    else:
        from sklearn.neighbors import NearestNeighbors

        if "X_pca" in adata.obsm:
            basis = np.asarray(adata.obsm["X_pca"])
        else:
            import scanpy as sc

            n_comps = int(max(1, min(20, adata.n_obs - 1, adata.n_vars - 1)))
            basis = sc.pp.pca(adata.X, n_comps=n_comps, random_state=0)
        logger.info(
            "no obsp['distances'] graph: %d nearest neighbours searched on %d dimensions",
            k,
            basis.shape[1],
        )
        search = NearestNeighbors(n_neighbors=int(min(k, adata.n_obs - 1))).fit(basis)
        graph = search.kneighbors_graph(None, mode="distance")  # None: a cell is not its own
    rows = np.repeat(np.arange(adata.n_obs), np.diff(graph.indptr))
    keep = graph.indices != rows
    rows, columns, values = rows[keep], graph.indices[keep], graph.data[keep]
    order = np.lexsort((values, rows))  # by cell, then nearest first
    rows, columns = rows[order], columns[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)
    out = np.repeat(np.arange(adata.n_obs)[:, None], k, axis=1)
    near = rank < k
    out[rows[near], rank[near]] = columns[near]
    return out


def smooth_scores(scores: pd.DataFrame, neighbours: np.ndarray, *, decay: float) -> pd.DataFrame:
    """UCell's SmoothKNN: weighted mean of a cell's score and its neighbours' scores.

    Weights: 1 for the cell, ``(1 - decay) ** r`` for its r-th nearest neighbour (r = 1..k).
    """
    values = scores.to_numpy(dtype=float)
    weights = (1.0 - decay) ** np.arange(1, neighbours.shape[1] + 1)
    smoothed = values + np.einsum("k,nkp->np", weights, values[neighbours])
    return pd.DataFrame(
        smoothed / (1.0 + weights.sum()), index=scores.index, columns=scores.columns
    )


def decide_cells(z: pd.DataFrame, params: StatesParams, usable: set[str]) -> pd.DataFrame:
    """State and confidence of each row of program z-scores (a cluster or a cell): rules 3-4.

    Returns a frame (index of `z`) with ``state``, ``confidence``, ``best_state``,
    ``second_best`` and ``gate`` (the exhausted gate passed).
    """
    n = z.shape[0]
    gate_z = z[GATE_PROGRAM].to_numpy(float) if GATE_PROGRAM in z else np.full(n, np.nan)
    gate = np.isfinite(gate_z) & (gate_z >= params.gate_min_z)
    states = [s for s, program in STATE_PROGRAMS.items() if program in usable and program in z]
    if not states:
        return pd.DataFrame(
            {
                STATE: OTHER_STATE,
                CONFIDENCE: 0.0,
                BEST_STATE: "",
                SECOND_BEST: "",
                "gate": gate,
            },
            index=z.index,
        )
    values = np.column_stack([z[STATE_PROGRAMS[s]].to_numpy(float) for s in states])
    exhausted = np.array([s in EXHAUSTED_STATES for s in states])
    values = np.where(exhausted[None, :] & ~gate[:, None], np.nan, values)
    values = np.where(np.isfinite(values), values, -np.inf)  # not a candidate
    order = np.argsort(-values, axis=1, kind="stable")  # ties: STATE_PROGRAMS order
    ranked = np.take_along_axis(values, order, axis=1)
    names = np.array(states, dtype=object)
    best_z = ranked[:, 0]
    second_z = ranked[:, 1] if len(states) > 1 else np.full(n, -np.inf)
    best = np.where(np.isfinite(best_z), names[order[:, 0]], "")
    second = np.where(np.isfinite(second_z), names[order[:, 1]] if len(states) > 1 else "", "")
    # a lone candidate is measured against the minimum a state needs
    confidence = best_z - np.where(np.isfinite(second_z), second_z, params.min_state_z)
    state = np.where(confidence < params.min_margin, AMBIGUOUS_STATE, best).astype(object)
    below = best_z < params.min_state_z  # no candidate at all: best_z is -inf
    state[below] = OTHER_STATE
    confidence = np.where(
        below, np.where(np.isfinite(best_z), params.min_state_z - best_z, 0.0), confidence
    )
    return pd.DataFrame(
        {
            STATE: state,
            CONFIDENCE: confidence,
            BEST_STATE: best,
            SECOND_BEST: second,
            "gate": gate,
        },
        index=z.index,
    )


def cell_states(
    adata: ad.AnnData, *, programs, params: StatesParams, usable: set[str]
) -> pd.DataFrame:
    """Per-cell states from kNN-smoothed UCell scores (module docstring, steps 6-7).

    Each cell is decided on its smoothed scores; a cell whose unsmoothed scores call it one of
    ``params.keep_own_call`` keeps that call where its smoothed exhausted gate passes (a rare
    state's neighbours are mostly other states, so smoothing erases it).

    Writes
    ------
    ``obs["cell_state"]`` (categorical), ``obs["cell_state_confidence"]``,
    ``obs["cell_state_basis"]`` (``kNN-smoothed`` or ``own scores``),
    ``obs["exhaustion_axis"]`` (smoothed score_tex_term - smoothed score_tpex).

    Returns
    -------
    The per-cell decision frame of `decide_cells`, with the kept own calls.
    """
    raw = adata.obs[[f"{SCORE_PREFIX}{name}" for name in programs]].astype(float)
    raw.columns = list(programs)
    k = int(min(params.smooth_k, max(adata.n_obs - 1, 0)))
    smoothed = (
        smooth_scores(raw, knn_neighbours(adata, k=k), decay=params.smooth_decay) if k else raw
    )
    sd = raw.std(ddof=0).replace(0.0, np.nan)
    decision = decide_cells((smoothed - raw.mean()) / sd, params, usable)
    own = decide_cells((raw - raw.mean()) / sd, params, usable)
    keep = own[STATE].isin(params.keep_own_call).to_numpy() & decision["gate"].to_numpy()
    keep &= (own[STATE] != decision[STATE]).to_numpy()
    decision.loc[keep, [STATE, CONFIDENCE, BEST_STATE, SECOND_BEST]] = own.loc[
        keep, [STATE, CONFIDENCE, BEST_STATE, SECOND_BEST]
    ]
    adata.obs[CELL_STATE_KEY] = pd.Categorical(
        decision[STATE].to_numpy(), categories=list(STATE_CATEGORIES)
    )
    adata.obs[CONFIDENCE_KEYS[CELL_STATE_KEY]] = decision[CONFIDENCE].to_numpy(dtype=float)
    adata.obs[CELL_STATE_BASIS_KEY] = pd.Categorical(
        np.where(keep, OWN_SCORES_BASIS, SMOOTHED_BASIS),
        categories=[SMOOTHED_BASIS, OWN_SCORES_BASIS],
    )
    low, high = EXHAUSTION_AXIS_PROGRAMS  # the progenitor end, the terminal end
    adata.obs[EXHAUSTION_AXIS_KEY] = (smoothed[high] - smoothed[low]).to_numpy()
    counts = adata.obs[CELL_STATE_KEY].value_counts()
    logger.info(
        "per-cell states (kNN-smoothed, k=%d; %d cells kept their own call %s): %s",
        k,
        int(keep.sum()),
        "/".join(params.keep_own_call) or "-",
        ", ".join(f"{name} {int(n)}" for name, n in counts.items() if n),
    )
    return decision


def cluster_agreement(
    cluster_of_cell: pd.Series, cell_state: pd.Series, cluster_state: pd.Series
) -> pd.DataFrame:
    """Per cluster: the state most of its cells are called, its share, and a note when the
    cluster's own label differs."""
    frame = pd.DataFrame(
        {
            CLUSTER: cluster_of_cell.astype(str).to_numpy(),
            CELL_STATE_KEY: cell_state.astype(str).to_numpy(),
        }
    )
    shares = frame.groupby(CLUSTER)[CELL_STATE_KEY].value_counts(normalize=True)
    rows = []
    for cluster, label in cluster_state.items():
        top = shares.loc[str(cluster)]
        majority, share = str(top.index[0]), float(top.iloc[0])
        composition = ", ".join(f"{name} {100 * v:.0f}%" for name, v in top.items() if v >= 0.05)
        agrees = majority == label
        note = (
            "" if agrees else (f"cluster labelled {label}, but its cells are called {composition}")
        )
        rows.append(
            {
                CLUSTER: str(cluster),
                CELL_MAJORITY_STATE: majority,
                CELL_MAJORITY_FRACTION: round(share, 4),
                AGREES_WITH_CELLS: agrees,
                CELL_STATE_NOTE: note,
            }
        )
    return pd.DataFrame(rows)


def _marker_evidence(
    adata: ad.AnnData, *, cluster_key: str, cluster: str, genes, n_top: int, higher: bool
) -> str:
    """'GENE mean_in vs mean_out; ...' for the genes most above (or below) the other clusters."""
    present = [g for g in genes if g in adata.var_names]
    if not present:
        return ""
    columns = adata.var_names.get_indexer(present)
    inside = (adata.obs[cluster_key].astype(str) == cluster).to_numpy()
    matrix = adata.X[:, columns]
    matrix = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
    mean_in = matrix[inside].mean(axis=0)
    mean_out = matrix[~inside].mean(axis=0) if (~inside).any() else np.zeros(len(present))
    difference = mean_in - mean_out if higher else mean_out - mean_in
    order = np.argsort(-difference)
    parts = [
        f"{present[i]} {mean_in[i]:.2f} vs {mean_out[i]:.2f}"
        for i in order[:n_top]
        if difference[i] > 0
    ]
    return "; ".join(parts)


def label_states(
    adata: ad.AnnData,
    *,
    organism: str | None = None,
    params: StatesParams | None = None,
    extra_programs: str | None = None,
    dataset: str | None = None,
) -> StageResult:
    """Score programs per cell and label each cluster and each cell with a state, in place.

    Parameters
    ----------
    adata
        Clustered CD8 T cells: ``obs[params.cluster_key]``; X non-negative (log-normalised in
        `clustered.h5ad`; counts or TPM give the same scores). Marker means in the table are
        computed on X.
    organism
        ``"human"`` or ``"mouse"``; default ``uns["texflow"]["organism"]``.
    params
        Thresholds (`StatesParams`).
    extra_programs
        Optional user program file (see `texflow.signatures.load_programs`), e.g. to replace
        the shipped Tpex list.
    dataset
        Dataset id for messages.

    Returns
    -------
    StageResult
        Tables ``cluster_states`` (one row per cluster: cluster, n_cells, state, confidence,
        second_best, best_state, exhausted_gate, isg_high, cycling, z_<program> for every scored
        program, markers_up / markers_down (winning program's genes with cluster vs
        other-cluster means), untrusted_programs, cell_majority_state, cell_majority_fraction,
        agrees_with_cells, cell_state_note (`cluster_agreement`)), ``cluster_program_scores``
        (long per-cluster, per-program table, `cluster_summary`) and ``signature_coverage``
        (`texflow.signatures.coverage_table` of the scored programs); notes: the programs that
        could not be used.

    Writes
    ------
    ``obs["score_<program>"]``, ``obs["state"]`` (categorical), ``obs["state_confidence"]``,
    ``obs["cell_state"]``, ``obs["cell_state_confidence"]``, ``obs["cell_state_basis"]``,
    ``obs["exhaustion_axis"]`` (`cell_states`); ``uns["texflow"]["params"]["states"]``,
    ``uns["texflow"]["skipped"]["states.<program>"]`` for programs that could not be used;
    ``uns["ucell"]``.
    """
    params = params or StatesParams()
    key = params.cluster_key
    if key not in adata.obs:
        raise InputDataError(f"obs[{key!r}] (the clusters to label) is missing", dataset=dataset)
    if adata.n_obs == 0:
        raise InputDataError("no cells to label", dataset=dataset)
    organism = organism or organism_of(adata, dataset=dataset)
    meta = adata.uns.setdefault("texflow", {})
    skipped = SkipNotes(adata)

    programs = state_programs(organism, adata.var_names, extra=extra_programs)
    coverage = coverage_table(programs, adata.var_names)
    _warn_untrusted(coverage)
    ucell(adata, programs, max_rank=params.max_rank, missing_genes=params.missing_genes)
    usable = _usable_programs(coverage, skipped=skipped)

    z = cluster_z_scores(adata, cluster_key=key, programs=programs)
    table = _cluster_table(adata, z, programs=programs, params=params, usable=usable)
    table[UNTRUSTED_PROGRAMS] = ",".join(coverage.loc[~coverage[TRUSTED], PROGRAM])
    _label_cells_by_cluster(adata, table, cluster_key=key)
    cell_states(adata, programs=programs, params=params, usable=usable)
    table = table.merge(_agreement(adata, table, cluster_key=key), on=CLUSTER, how="left")
    meta.setdefault("params", {})["states"] = params.as_dict()
    _log_clusters(table)
    tables = {
        "cluster_states": table,
        "cluster_program_scores": cluster_summary(adata, cluster_key=key, programs=programs),
        "signature_coverage": coverage,
    }
    return StageResult("states", tables, dict(skipped.recorded))


def _warn_untrusted(coverage: pd.DataFrame) -> None:
    """Log and warn for each program too few of whose positive genes are measured."""
    for row in coverage.itertuples():
        if not row.trusted:
            message = (
                f"program {row.program}: only {row.n_up_present} of {row.n_up} positive genes "
                f"measured (missing: {row.missing or '-'}); its score is not trusted"
            )
            logger.warning(message)
            warnings.warn(message, stacklevel=3)


def _usable_programs(coverage: pd.DataFrame, *, skipped: MutableMapping[str, str]) -> set[str]:
    """The programs with at least one measured positive gene; the others cannot name a state
    (a ``states.<program>`` note each)."""
    usable = set(coverage.loc[coverage[N_UP_PRESENT] > 0, PROGRAM])
    for name in sorted(set(SCORED_PROGRAMS) - usable):
        skipped[f"states.{name}"] = f"no gene of program {name} is in the data: not used"
        logger.warning("program %s: no gene measured, not used to label states", name)
    return usable


def _cluster_table(
    adata: ad.AnnData,
    z: pd.DataFrame,
    *,
    programs: Mapping[str, GeneProgram],
    params: StatesParams,
    usable: set[str],
) -> pd.DataFrame:
    """One row per cluster of `z` (`cluster_z_scores`): its decision (`decide_cells`), the
    isg_high / cycling flags, its z per program and the marker evidence of its best state."""
    key = params.cluster_key
    sizes = adata.obs[key].value_counts()
    decisions = decide_cells(z, params, usable)
    rows = []
    for cluster, z_row in z.iterrows():
        decision = decisions.loc[cluster]
        row = {
            CLUSTER: str(cluster),
            N_CELLS: int(sizes.get(cluster, 0)),
            STATE: decision[STATE],
            CONFIDENCE: round(float(decision[CONFIDENCE]), 4),
            SECOND_BEST: decision[SECOND_BEST],
            BEST_STATE: decision[BEST_STATE],
            EXHAUSTED_GATE: bool(decision["gate"]),
            ISG_HIGH: bool(z_row.get("isg", -np.inf) >= params.flag_min_z),
            CYCLING: bool(z_row.get("cycling", -np.inf) >= params.flag_min_z),
        }
        row.update({f"{Z_PREFIX}{name}": round(float(z_row[name]), 4) for name in programs})
        program = programs.get(STATE_PROGRAMS.get(decision[BEST_STATE], ""), None)
        row[MARKERS_UP] = row[MARKERS_DOWN] = ""
        if program is not None:
            for column, genes, higher in (
                (MARKERS_UP, program.up, True),
                (MARKERS_DOWN, program.down, False),
            ):
                row[column] = _marker_evidence(
                    adata,
                    cluster_key=key,
                    cluster=str(cluster),
                    genes=genes,
                    n_top=params.n_marker_genes,
                    higher=higher,
                )
        rows.append(row)
    return pd.DataFrame(rows)


def _label_cells_by_cluster(adata: ad.AnnData, table: pd.DataFrame, *, cluster_key: str) -> None:
    """Writes obs ``state`` (categorical) and ``state_confidence``: each cell's cluster's."""
    by_cluster = table.set_index(CLUSTER)
    cluster_of_cell = adata.obs[cluster_key].astype(str)
    adata.obs[CLUSTER_STATE_KEY] = pd.Categorical(
        cluster_of_cell.map(by_cluster[STATE]).to_numpy(), categories=list(STATE_CATEGORIES)
    )
    adata.obs[STATE_CONFIDENCE] = (
        cluster_of_cell.map(by_cluster[CONFIDENCE]).astype(float).to_numpy()
    )


def _agreement(adata: ad.AnnData, table: pd.DataFrame, *, cluster_key: str) -> pd.DataFrame:
    """`cluster_agreement` of the cluster labels in `table` with the per-cell calls; each
    disagreement logged."""
    agreement = cluster_agreement(
        adata.obs[cluster_key].astype(str),
        adata.obs[CELL_STATE_KEY],
        table.set_index(CLUSTER)[STATE],
    )
    for row in agreement.itertuples():
        if not row.agrees_with_cells:
            logger.info("cluster %s: %s", row.cluster, row.cell_state_note)
    return agreement


def _log_clusters(table: pd.DataFrame) -> None:
    for row in table.itertuples():
        logger.info(
            "cluster %s (%d cells): %s (confidence %.2f, second %s)%s%s",
            row.cluster,
            row.n_cells,
            row.state,
            row.confidence,
            row.second_best or "-",
            ", ISG-high" if row.isg_high else "",
            ", cycling" if row.cycling else "",
        )
