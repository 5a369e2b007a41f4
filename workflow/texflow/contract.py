"""Names every stage shares: state labels, the obs columns that carry them, and the column
names of every table texflow writes.

One definition of each: the stage that writes a label or a column imports it from here, and
so does every stage, the report, the summary and the benchmarks that read it. Never spell a
label or a column name again (`tests/unit/test_contract.py` fails when a module does).
`TABLE_COLUMNS` lists the fixed columns of each table; columns named after a program, a state
or a QC criterion are built from the ``*_PREFIX`` / ``*_SUFFIX`` constants.
"""

from __future__ import annotations

import pandas as pd

TPEX, TEX_INT, TEX_TERM = "Tpex", "Tex_int", "Tex_term"
NAIVE_LIKE, EFFECTOR_MEMORY = "naive_like", "effector_memory"
OTHER_STATE, AMBIGUOUS_STATE = "other_cd8", "ambiguous"
#: States that form the exhausted lineage, in their expected order along pseudotime.
EXHAUSTED_STATES: tuple[str, ...] = (TPEX, TEX_INT, TEX_TERM)
#: Every label a CD8 cell or cluster can get, in display order.
STATE_CATEGORIES: tuple[str, ...] = (
    TPEX,
    TEX_INT,
    TEX_TERM,
    NAIVE_LIKE,
    EFFECTOR_MEMORY,
    OTHER_STATE,
    AMBIGUOUS_STATE,
)

#: A row's state (tables), and the cluster label of the states stage (obs); the per-cell call.
STATE = "state"
CLUSTER_STATE_KEY, CELL_STATE_KEY = STATE, "cell_state"
#: The confidence of each (obs, cells.tsv.gz).
CELL_STATE_CONFIDENCE, STATE_CONFIDENCE = "cell_state_confidence", "state_confidence"
CONFIDENCE_KEYS = {CELL_STATE_KEY: CELL_STATE_CONFIDENCE, CLUSTER_STATE_KEY: STATE_CONFIDENCE}
#: Which scores decided a cell's call: its kNN-smoothed scores, or its own (a rare state whose
#: neighbours are other states; states.cell_states).
CELL_STATE_BASIS_KEY = "cell_state_basis"
SMOOTHED_BASIS, OWN_SCORES_BASIS = "kNN-smoothed", "own scores"
#: State label -> the gene program (signatures/) whose score defines it.
STATE_PROGRAMS: dict[str, str] = {
    TPEX: "tpex",
    TEX_INT: "tex_int",
    TEX_TERM: "tex_term",
    NAIVE_LIKE: "naive_like",
    EFFECTOR_MEMORY: "effector_memory",
}
#: The programs the exhaustion axis is made of: never tested along it (a score against itself).
EXHAUSTION_AXIS_PROGRAMS: tuple[str, ...] = (STATE_PROGRAMS[TPEX], STATE_PROGRAMS[TEX_TERM])
REASON_AXIS_PROGRAM = (
    "the exhaustion axis is made of this program (smoothed Tex-term minus Tpex score): "
    "tested along it, a score would be correlated with itself"
)
#: Smoothed Tex-term minus Tpex score per cell (the states stage's second ordering).
EXHAUSTION_AXIS_KEY = "exhaustion_axis"


#: How a metadata table spells "no value" (GEO and CSV exports, pandas' ``str(nan)``, R's
#: ``NA``, Python's ``None``), compared case-insensitively after stripping. Ingest turns these
#: into NA, and every later reader counts them as missing. A word such as "unknown" is a label
#: the dataset file maps to null (``metadata.values``), never guessed here.
MISSING_LABELS = frozenset({"", "nan", "na", "none"})


def missing_labels(values: pd.Series) -> pd.Series:
    """True where a metadata value is missing: NA, or a string in `MISSING_LABELS`."""
    text = values.astype("string")
    return (text.isna() | text.str.strip().str.lower().isin(MISSING_LABELS)).astype(bool)


def lineage_state_key(obs: pd.DataFrame) -> str:
    """The obs column that defines states downstream: the per-cell call where the states stage
    wrote one (human tumour Tpex seldom form a cluster of their own), else the cluster label
    (data labelled before per-cell states existed)."""
    return CELL_STATE_KEY if CELL_STATE_KEY in obs else CLUSTER_STATE_KEY


# ----------------------------------------------------------------------------------------------
# tests that did not run, and why

#: ``test`` of a statistics row that could not be computed (the ``note`` says why, in numbers),
#: and of the one row a stage writes when it skipped a whole table.
NOT_TESTABLE, SKIPPED = "not_testable", "skipped"
#: The note of a stage's one 'skipped' row starts with this, then the reason.
SKIPPED_PREFIX = "skipped: "
#: Keys of ``uns["texflow"]["skipped"]`` (the step that did not run) that the report reads.
SKIP_TRAJECTORY, SKIP_TRENDS, SKIP_ASSOCIATIONS = "trajectory", "trends", "associations"
SKIP_RESPONSE, SKIP_COMPOSITION = "response_comparison", "composition"
#: Doublet detection not run at all, and not run in some samples (the QC stage writes them).
SKIP_DOUBLETS, SKIP_DOUBLET_SAMPLES = "qc.doublets", "qc.doublets.samples"

#: Why a comparison was not tested, filled with the numbers that block it (``str.format``).
#: One of the two states has no cell at all.
REASON_STATE_ABSENT = (
    "no {absent} cell in this dataset ({key}: {n_first} {first}, {n_second} {second})"
)
#: A row of one state (the response comparison within a state) whose state has no cell.
REASON_NO_CELLS = "no {state} cell in this dataset ({key}: 0 {state})"
#: Cells are the units (no patients) and a state has fewer cells than a test needs.
REASON_TOO_FEW_CELLS = (
    "too few cells to test ({second}: {n_second}, {first}: {n_first}; "
    ">= {min_cells} of each needed)"
)
#: Patients are the units and too few of them have enough cells of each state.
REASON_TOO_FEW_PATIENTS_STATES = (
    "too few patients to test: {n_second} with >= {min_cells} {second} cells, {n_first} with "
    ">= {min_cells} {first} cells, >= 2 of each needed"
)
#: Patients are the units and a response group has too few patients with cells of the state.
REASON_TOO_FEW_PATIENTS_RESPONSE = (
    "too few patients to test: {n_non_responders} non-responder and {n_responders} responder "
    "patient(s) with >= {min_cells} {state} cells, >= 2 of each needed"
)
#: One value covers nearly every cell compared (`texflow.stats.MAX_TIED_FRACTION`).
REASON_CONSTANT_SCORE = (
    "score (near) constant: {value} in {percent}% of the {n_cells} cells compared "
    "(>= {threshold}%): not testable"
)
#: A caveat on a test that ran: cells were the units.
NOTE_CELLS_AS_UNITS = "no patient labels: cells are the units (pseudoreplication risk)"


# ----------------------------------------------------------------------------------------------
# columns of the statistics tables (texflow.stats writes them, the findings and report read them)

#: Score columns of ``obs``: ``score_<program>`` (programs stage, states stage).
SCORE_PREFIX = "score_"
#: The programs the state calls and the exhaustion axis rest on (program names, not states).
TPEX_PROGRAM, TEX_TERM_PROGRAM = EXHAUSTION_AXIS_PROGRAMS

#: Row identity: the program (or composition measure), the comparison (and `STATE`, the state a
#: row is about).
PROGRAM, COMPARISON = "program", "comparison"
#: Which obs column defined the states of a row (`lineage_state_key`): ``cell_state`` or
#: ``state``.
STATE_KEY = "state_key"
#: The test run (or `NOT_TESTABLE` / `SKIPPED`), the unit of the test, and the row's note.
TEST, UNIT, NOTE = "test", "unit", "note"
#: The effect and what it is (``effect_type``), the p-value and its Benjamini-Hochberg q.
EFFECT, EFFECT_TYPE, P_VALUE, P_ADJ = "effect", "effect_type", "p_value", "p_adj"
#: Patients behind a row, those with a positive per-patient effect, and cells.
N_PATIENTS, N_PATIENTS_POSITIVE, N_CELLS = "n_patients", "n_patients_positive", "n_cells"
#: The response comparison: patients and mean score per response group.
N_RESPONDERS, N_NON_RESPONDERS = "n_responders", "n_non_responders"
MEAN_RESPONDERS, MEAN_NON_RESPONDERS = "mean_responders", "mean_non_responders"
#: The coverage of each untrusted program a row's verdict rests on (`texflow.stats.with_coverage`).
COVERAGE = "coverage"

#: program_gene_means.tsv (`texflow.expression.program_gene_means`): one row per program gene
#: and state; the gene, whether it is an up or a down gene of the program, and its mean
#: expression (log-normalised X) over the state's cells (`N_CELLS` of them).
GENE, DIRECTION, MEAN_EXPRESSION = "gene", "direction", "mean_expression"
PROGRAM_GENE_MEANS_COLUMNS: tuple[str, ...] = (
    PROGRAM,
    DIRECTION,
    GENE,
    STATE,
    MEAN_EXPRESSION,
    N_CELLS,
)

#: ``unit`` of a test: patients (their per-patient summaries) or cells (no patient labels);
#: genes for the gene-set test of resistance_programs.tsv (a competitive test across genes).
UNIT_PATIENTS, UNIT_CELLS, UNIT_GENES = "patients", "cells", "genes"
#: Response labels (``obs["response"]``, per patient).
RESPONDER, NON_RESPONDER = "responder", "non_responder"
#: ``state`` of the response rows over every CD8 T cell of a patient, whatever its state, and
#: over its exhausted-lineage cells.
ALL_CD8, EXHAUSTED_LINEAGE = "all_cd8", "exhausted_lineage"
#: ``program`` of the composition rows of the response table, and the state of the balance row.
COMPOSITION_MEASURE, BALANCE_MEASURE = "fraction_of_cd8_cells", "log_ratio"
BALANCE_ROW = f"{TPEX}:{TEX_TERM}"
#: composition.tsv: a state's share of a patient's CD8 cells, and the Tpex : Tex_term balance.
FRACTION_PREFIX, BALANCE_COLUMN = "fraction_", "log_ratio_tpex_to_tex_term"


# ----------------------------------------------------------------------------------------------
# findings: the verdicts of the programs stage (tables/findings.tsv), rendered by the report

#: The comparisons a finding answers (``comparison`` of findings.tsv), in the order shown.
COMPARE_TRAJECTORY, COMPARE_AXIS, COMPARE_STATES = "trajectory", "axis", "state"
COMPARE_RESPONSE, COMPARE_RESPONSE_ALL, COMPARE_COMPOSITION = (
    "response",
    "response_all",
    "composition",
)
#: The verdict of a finding.
VERDICT_UP, VERDICT_DOWN = "up", "down"
VERDICT_NONE, VERDICT_UNTESTED = "no clear difference", "not tested"
#: ``program`` of the one composition finding written when no composition row exists.
ALL_STATES = "all_states"
FINDINGS_TABLE = "findings.tsv"
#: Columns of findings.tsv: one row per dataset x program x comparison.
DATASET, VERDICT, EFFECT_NAME = "dataset", "verdict", "effect_name"
#: Why the unit or the power of a finding limits it, and why a finding was not tested.
UNIT_NOTE, POWER_NOTE, REASON = "unit_note", "power_note", "reason"
FINDINGS_COLUMNS: tuple[str, ...] = (
    DATASET, PROGRAM, COMPARISON, VERDICT, EFFECT, EFFECT_NAME, P_VALUE, P_ADJ,
    N_PATIENTS, N_PATIENTS_POSITIVE, N_NON_RESPONDERS, N_RESPONDERS, UNIT_NOTE, POWER_NOTE,
    REASON, COVERAGE,
)  # fmt: skip
#: Columns of results/summary.tsv: the findings of every dataset, one row per dataset x program
#: x comparison (the cross-dataset summary; ``groups`` = patients per response group in words).
#: summary.tsv's short names of a finding's p-value, q-value and concordant patients.
SUMMARY_P, SUMMARY_Q, N_CONCORDANT = "p", "q", "n_concordant"
#: Patients per response group in words, and whether the dataset is simulated (its dataset
#: file's ``simulated``).
GROUPS, SIMULATED = "groups", "simulated"
SUMMARY_COLUMNS: tuple[str, ...] = (
    DATASET, PROGRAM, COMPARISON, VERDICT, EFFECT_NAME, EFFECT, SUMMARY_P, SUMMARY_Q,
    N_PATIENTS, N_CONCORDANT, GROUPS, NOTE, COVERAGE, SIMULATED,
)  # fmt: skip

# ----------------------------------------------------------------------------------------------
# resistance genes: tables/resistance_de.tsv, read by the cross-dataset meta-analysis

#: The cell sets of the pseudobulk DE: all CD8 cells, then each exhausted state.
RESISTANCE_STATES: tuple[str, ...] = (ALL_CD8, TPEX, TEX_INT, TEX_TERM)
#: resistance_de.tsv: log2 fold change (non-responders over responders) and its standard error,
#: the test statistic and its Benjamini-Hochberg q over genes, the method, whether the gene
#: could be tested, and the design formula.
LOG2_FOLD_CHANGE, LFC_SE, STATISTIC, Q_VALUE = "log2_fold_change", "lfc_se", "statistic", "q_value"
METHOD, TESTABLE, DESIGN = "method", "testable", "design"
#: Columns of ``resistance_de.tsv`` (`texflow.resistance`), in order.
DE_COLUMNS = [
    GENE,
    STATE,
    LOG2_FOLD_CHANGE,
    LFC_SE,
    STATISTIC,
    P_VALUE,
    Q_VALUE,
    N_NON_RESPONDERS,
    N_RESPONDERS,
    MEAN_EXPRESSION,
    METHOD,
    TESTABLE,
    REASON,
    DESIGN,
]

#: resistance_programs.tsv (`texflow.resistance`): genes of the program, those tested, the
#: slope of the program's genes' DE statistics, its t statistic, and the DE's method.
N_GENES_TESTED, SLOPE, T_STATISTIC, DE_METHOD = "n_genes_tested", "slope", "t", "de_method"
#: pseudobulk_samples.tsv, per pseudobulk sample (a patient's cells of one state; its summed
#: counts in `TOTAL_COUNTS`): whether it was kept, why not, and the covariate it carries.
KEPT, WHY_NOT, COVARIATE = "kept", "why_not", "covariate"

#: results/resistance_genes.tsv (`texflow.resistance_meta`): the random-effects meta-analysis
#: of resistance_de.tsv over datasets, one row per gene and state.
RANK, N_DATASETS, DATASETS = "rank", "n_datasets", "datasets"
POOLED_LOG2_FOLD_CHANGE, POOLED_SE = "pooled_log2_fold_change", "pooled_se"
CI_LOW, CI_HIGH, Z = "ci_low", "ci_high", "z"
TAU2, I2, COCHRAN_Q, HETEROGENEITY_P = "tau2", "i2", "cochran_q", "heterogeneity_p"
#: Datasets agreeing with the pooled sign; leave-one-dataset-out: the largest change of the
#: pooled effect, whether its sign and its significance hold, the datasets it rests on.
N_SAME_SIGN, LOO_MAX_CHANGE = "n_same_sign", "loo_max_change"
LOO_SIGN_STABLE, LOO_SIGNIFICANCE_STABLE = "loo_sign_stable", "loo_significance_stable"
LOO_CRITICAL_DATASETS = "loo_critical_datasets"
HETEROGENEOUS, RESTS_ON_ONE_DATASET, CONSISTENT = (
    "heterogeneous",
    "rests_on_one_dataset",
    "consistent",
)


# ----------------------------------------------------------------------------------------------
# per-cell columns: obs, and tables/cells.tsv.gz and qc_cells.tsv.gz (one row per cell)

#: The cell barcode column of the per-cell tables (the obs index).
CELL_ID = "cell_id"
#: The metadata every dataset is harmonised to (`texflow.io.harmonise_metadata`).
SAMPLE, PATIENT, RESPONSE, TIMEPOINT, TISSUE = (
    "sample",
    "patient",
    "response",
    "timepoint",
    "tissue",
)
#: The cluster stage's Leiden cluster; the trajectory stage's pseudotime.
CLUSTER, PSEUDOTIME = "cluster", "pseudotime"
#: obs only (no table): the gate stage's CD8 T-cell call.
IS_CD8 = "is_cd8"
#: QC metrics (`texflow.qc.compute_metrics`, scanpy's ``calculate_qc_metrics`` names).
N_GENES_BY_COUNTS, LOG1P_N_GENES_BY_COUNTS = "n_genes_by_counts", "log1p_n_genes_by_counts"
TOTAL_COUNTS, LOG1P_TOTAL_COUNTS = "total_counts", "log1p_total_counts"
PCT_COUNTS_IN_TOP_20_GENES = "pct_counts_in_top_20_genes"
TOTAL_COUNTS_MT, LOG1P_TOTAL_COUNTS_MT = "total_counts_mt", "log1p_total_counts_mt"
PCT_COUNTS_MT = "pct_counts_mt"
#: Scrublet's score and call, and whether a cell passed every QC criterion.
DOUBLET_SCORE, PREDICTED_DOUBLET, QC_PASS = "doublet_score", "predicted_doublet", "qc_pass"
#: ``qc_fail_<criterion>`` per cell (obs, qc_cells.tsv.gz), ``fail_<criterion>`` (cells failing
#: it, qc_summary.tsv), ``<criterion>_lower`` / ``_upper`` (its bounds, qc_summary.tsv).
QC_FAIL_PREFIX, FAIL_PREFIX = "qc_fail_", "fail_"
LOWER_SUFFIX, UPPER_SUFFIX = "_lower", "_upper"


# ----------------------------------------------------------------------------------------------
# the tables of the qc, gate, cluster, states and trajectory stages

#: qc_summary.tsv (`texflow.qc`), per sample: cells before and after QC, those removed,
#: doublets scored, predicted and removed, and the notes on criteria not run.
CELLS_IN, CELLS_OUT, CELLS_REMOVED = "cells_in", "cells_out", "cells_removed"
DOUBLETS_SCORED, PREDICTED_DOUBLETS = "doublets_scored", "predicted_doublets"
REMOVED_DOUBLETS, NOTES = "removed_doublets", "notes"

#: gating.tsv (`texflow.gating`), per first-pass cluster: ``mean_score_<program>``, the
#: fractions of cells with CD8A/CD8B, CD8B, CD3E/CD3D and CD4 detected, the decision (CD8 or
#: not), its reason, and the cells vetoed as another type.
MEAN_SCORE_PREFIX = "mean_score_"
FRAC_CD8, FRAC_CD8B, FRAC_CD3, FRAC_CD4 = "frac_cd8", "frac_cd8b", "frac_cd3", "frac_cd4"
DECISION, N_VETOED = "decision", "n_vetoed"

#: resolution_sweep.tsv (`texflow.cluster`): one row per Leiden resolution.
RESOLUTION, N_CLUSTERS, SMALLEST_CLUSTER = "resolution", "n_clusters", "smallest_cluster"
MODULARITY, SILHOUETTE, CHOSEN = "modularity", "silhouette", "chosen"

#: cluster_states.tsv (`texflow.states`), per cluster: the call (`STATE`), its confidence, the
#: runner-up and best-scoring state, the flags (exhausted gate passed, ISG-high, cycling),
#: ``z_<program>``, marker genes, the untrusted programs, and the agreement with its cells.
CONFIDENCE, SECOND_BEST, BEST_STATE = "confidence", "second_best", "best_state"
#: The flags; ``exhausted_gate`` and ``cycling`` are also the names of the programs they rest on.
EXHAUSTED_GATE, ISG_HIGH, CYCLING = "exhausted_gate", "isg_high", "cycling"
Z_PREFIX = "z_"
MARKERS_UP, MARKERS_DOWN, UNTRUSTED_PROGRAMS = "markers_up", "markers_down", "untrusted_programs"
CELL_MAJORITY_STATE, CELL_MAJORITY_FRACTION = "cell_majority_state", "cell_majority_fraction"
AGREES_WITH_CELLS, CELL_STATE_NOTE = "agrees_with_cells", "cell_state_note"

#: cluster_program_scores.tsv (`texflow.states`), per cluster and program: mean, median, the
#: fraction of cells scoring high, and the z of the mean across clusters (`Z`).
MEAN, MEDIAN, FRAC_HIGH = "mean", "median", "frac_high"

#: signature_coverage.tsv and program_coverage.tsv (`texflow.signatures`), per program: genes,
#: genes present, their fraction (up genes: ``_up``), the missing genes, those without a mouse
#: ortholog, whether the program is trusted, and its source.
N_GENES, N_PRESENT, FRACTION = "n_genes", "n_present", "fraction"
N_UP, N_UP_PRESENT, FRACTION_UP = "n_up", "n_up_present", "fraction_up"
MISSING, NO_ORTHOLOG, TRUSTED, SOURCE = "missing", "no_ortholog", "trusted", "source"

#: root_sensitivity.tsv (`texflow.trajectory`): one row per root cell tried, whether it is the
#: main root, and the Spearman rho of its pseudotime with the main root's.
ROOT_CELL, IS_MAIN_ROOT, SPEARMAN_RHO = "root_cell", "is_main_root", "spearman_rho"


# ----------------------------------------------------------------------------------------------
# the programs stage's tables besides the statistics columns above

#: trends.tsv (`texflow.programs`): the GAM fit and its band at each pseudotime of a grid, the
#: bootstrap fits that converged, the smoothing penalty and the number of splines.
FIT, LOWER, UPPER = "fit", "lower", "upper"
N_BOOTSTRAP_OK, LAM, N_SPLINES = "n_bootstrap_ok", "lam", "n_splines"
#: associations.tsv / axis_associations.tsv: permutations, covariates adjusted for, the
#: random-effects p-value, and the ordering tested (pseudotime or the exhaustion axis).
N_PERMUTATIONS, ADJUSTED_FOR = "n_permutations", "adjusted_for"
P_VALUE_RANDOM_EFFECTS, ORDERING = "p_value_random_effects", "ordering"
#: state_comparison.tsv / response_comparison.tsv: standardised effects.
EFFECT_STANDARDISED, CLIFFS_DELTA, HEDGES_G = "effect_standardised", "cliffs_delta", "hedges_g"
#: composition.tsv (`texflow.stats`), per patient: CD8 cells, ``n_<state>`` and
#: ``fraction_<state>`` (`FRACTION_PREFIX`), whether the patient is included, and by what the
#: rows are grouped (patient or sample).
N_CD8_CELLS, COUNT_PREFIX = "n_cd8_cells", "n_"
INCLUDED, GROUPED_BY = "included", "grouped_by"

#: truth_recovery.tsv (`texflow.truth`): one row per check of a simulated dataset's planted
#: truth: recovered or not, the measured value, its n, what the run found and the truth.
CHECK, RECOVERED, VALUE, TRUTH_N = "check", "recovered", "value", "n"
FOUND, TRUTH = "found", "truth"


# ----------------------------------------------------------------------------------------------
# every table: its fixed columns, in the order written (prefixed columns not listed)

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "cells.tsv.gz": (
        CELL_ID, SAMPLE, PATIENT, RESPONSE, CLUSTER, CLUSTER_STATE_KEY, STATE_CONFIDENCE,
        CELL_STATE_KEY, CELL_STATE_CONFIDENCE, CELL_STATE_BASIS_KEY, EXHAUSTION_AXIS_KEY,
        PSEUDOTIME,
    ),
    "qc_cells.tsv.gz": (
        CELL_ID, SAMPLE, N_GENES_BY_COUNTS, LOG1P_N_GENES_BY_COUNTS, TOTAL_COUNTS,
        LOG1P_TOTAL_COUNTS, PCT_COUNTS_IN_TOP_20_GENES, TOTAL_COUNTS_MT, LOG1P_TOTAL_COUNTS_MT,
        PCT_COUNTS_MT, DOUBLET_SCORE, PREDICTED_DOUBLET, QC_PASS,
    ),
    "qc_summary.tsv": (
        SAMPLE, CELLS_IN, DOUBLETS_SCORED, PREDICTED_DOUBLETS, REMOVED_DOUBLETS, CELLS_OUT,
        CELLS_REMOVED, NOTES,
    ),
    "gating.tsv": (
        CLUSTER, N_CELLS, FRAC_CD8, FRAC_CD8B, FRAC_CD3, FRAC_CD4, DECISION, REASON, N_VETOED,
    ),
    "resolution_sweep.tsv": (
        RESOLUTION, N_CLUSTERS, SMALLEST_CLUSTER, MODULARITY, SILHOUETTE, CHOSEN,
    ),
    "cluster_states.tsv": (
        CLUSTER, N_CELLS, STATE, CONFIDENCE, SECOND_BEST, BEST_STATE, EXHAUSTED_GATE, ISG_HIGH,
        CYCLING, MARKERS_UP, MARKERS_DOWN, UNTRUSTED_PROGRAMS, CELL_MAJORITY_STATE,
        CELL_MAJORITY_FRACTION, AGREES_WITH_CELLS, CELL_STATE_NOTE,
    ),
    "cluster_program_scores.tsv": (CLUSTER, PROGRAM, N_CELLS, MEAN, MEDIAN, FRAC_HIGH, Z),
    "signature_coverage.tsv": (
        PROGRAM, N_GENES, N_PRESENT, FRACTION, N_UP, N_UP_PRESENT, FRACTION_UP, MISSING,
        NO_ORTHOLOG, TRUSTED, SOURCE,
    ),
    "root_sensitivity.tsv": (ROOT_CELL, IS_MAIN_ROOT, SPEARMAN_RHO, N_CELLS, NOTE),
    "trends.tsv": (
        PROGRAM, UNIT, PSEUDOTIME, FIT, LOWER, UPPER, N_CELLS, N_PATIENTS, N_BOOTSTRAP_OK, LAM,
        N_SPLINES,
    ),
    "associations.tsv": (
        PROGRAM, UNIT, N_PERMUTATIONS, EFFECT, EFFECT_TYPE, ADJUSTED_FOR, P_VALUE, P_ADJ,
        P_VALUE_RANDOM_EFFECTS, N_PATIENTS, N_PATIENTS_POSITIVE, N_CELLS, NOTE, COVERAGE,
    ),
    "axis_associations.tsv": (
        PROGRAM, ORDERING, UNIT, N_PERMUTATIONS, EFFECT, EFFECT_TYPE, ADJUSTED_FOR, P_VALUE,
        P_ADJ, P_VALUE_RANDOM_EFFECTS, N_PATIENTS, N_PATIENTS_POSITIVE, N_CELLS, NOTE, TEST,
        STATE_KEY, COVERAGE,
    ),
    "state_comparison.tsv": (
        PROGRAM, COMPARISON, UNIT, TEST, EFFECT, EFFECT_TYPE, EFFECT_STANDARDISED, N_PATIENTS,
        N_CELLS, P_VALUE, NOTE, P_ADJ, STATE_KEY, COVERAGE,
    ),
    "response_comparison.tsv": (
        STATE, PROGRAM, COMPARISON, UNIT, TEST, EFFECT, EFFECT_TYPE, CLIFFS_DELTA, HEDGES_G,
        MEAN_RESPONDERS, MEAN_NON_RESPONDERS, N_PATIENTS, N_RESPONDERS, N_NON_RESPONDERS,
        N_CELLS, P_VALUE, P_ADJ, STATE_KEY, NOTE, COVERAGE,
    ),
    "composition.tsv": (
        PATIENT, RESPONSE, N_CD8_CELLS, BALANCE_COLUMN, INCLUDED, GROUPED_BY, STATE_KEY,
    ),
    FINDINGS_TABLE: FINDINGS_COLUMNS,
    "program_gene_means.tsv": PROGRAM_GENE_MEANS_COLUMNS,
    "pseudobulk_samples.tsv": (
        PATIENT, TIMEPOINT, STATE, RESPONSE, N_CELLS, TOTAL_COUNTS, KEPT, WHY_NOT, COVARIATE,
    ),
    "resistance_de.tsv": tuple(DE_COLUMNS),
    "resistance_programs.tsv": (
        STATE, PROGRAM, UNIT, N_GENES, N_GENES_TESTED, SLOPE, T_STATISTIC, P_VALUE, Q_VALUE,
        METHOD, DE_METHOD, TESTABLE, REASON, NOTE,
    ),
    "truth_recovery.tsv": (CHECK, RECOVERED, VALUE, TRUTH_N, FOUND, TRUTH, NOTE),
    "summary.tsv": SUMMARY_COLUMNS,
    "resistance_genes.tsv": (
        STATE, RANK, GENE, N_DATASETS, DATASETS, POOLED_LOG2_FOLD_CHANGE, POOLED_SE, CI_LOW,
        CI_HIGH, Z, P_VALUE, Q_VALUE, TAU2, I2, COCHRAN_Q, HETEROGENEITY_P, N_SAME_SIGN,
        LOO_MAX_CHANGE, LOO_SIGN_STABLE, LOO_SIGNIFICANCE_STABLE, LOO_CRITICAL_DATASETS,
        HETEROGENEOUS, RESTS_ON_ONE_DATASET, CONSISTENT, METHOD, NOTE,
    ),
}  # fmt: skip
#: program_coverage.tsv (the programs stage) has signature_coverage.tsv's columns.
TABLE_COLUMNS["program_coverage.tsv"] = TABLE_COLUMNS["signature_coverage.tsv"]
