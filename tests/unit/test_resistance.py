"""texflow.resistance: pseudobulk per patient and state, non-responders vs responders with
patients as units (pydeseq2 on counts, Welch t on log data), programs on the gene statistics."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats
from texflow import resistance, signatures
from texflow.simulate import simulate
from texflow.stats import ALL_CD8, NON_RESPONDER, RESPONDER


@pytest.fixture(scope="module")
def cohort():
    """8 patients (4 non-responders), IFN-I core planted 1 log2 higher in non-responders;
    CD8 cells only, the per-cell state calls taken from the truth."""
    adata = simulate(n_cells=1200, n_genes=500, n_patients=8, seed=1, doublet_rate=0.0,
                     low_quality_rate=0.0, response_effects={"ifn_i_core": 1.0})
    adata = adata[adata.obs["true_is_cd8"].astype(bool)].copy()
    adata.obs["cell_state"] = adata.obs["true_state"].astype(str)
    return adata


def only(matrices, state=ALL_CD8):
    return {state: matrices[state]}


def test_pseudobulk_sums_counts_and_says_what_was_kept(cohort):
    samples, matrices = resistance.pseudobulk(cohort, value_type="counts", min_cells=10)
    assert set(samples["state"]) == set(resistance.STATES)
    assert list(samples.columns) == resistance.SAMPLE_COLUMNS
    all_cd8 = samples[samples["state"] == ALL_CD8].set_index("patient")
    counts = cohort.layers["counts"]
    for patient, row in all_cd8.iterrows():
        mask = (cohort.obs["patient"] == patient).to_numpy()
        assert row["n_cells"] == mask.sum()
        assert row["total_counts"] == pytest.approx(float(counts[mask].sum()))
    assert len(matrices[ALL_CD8]) == all_cd8["kept"].sum() == 8
    small = samples[samples["n_cells"] < 10]
    assert not small["kept"].any() and small["why_not"].str.contains("cells < 10").all()


def test_counts_de_matches_pydeseq2_run_by_hand(cohort):
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    _, matrices = resistance.pseudobulk(cohort, value_type="counts")
    de = resistance.differential_expression(only(matrices), value_type="counts")
    assert (de["method"] == resistance.METHOD_DESEQ2).all() and de["testable"].all()
    assert (de["n_non_responders"] == 4).all() and (de["n_responders"] == 4).all()

    # by hand: sum the raw counts per patient, the same expression filter, pydeseq2
    counts = pd.DataFrame(sparse.csr_matrix(cohort.layers["counts"]).toarray(),
                          index=cohort.obs_names, columns=cohort.var_names)
    bulk = counts.groupby(cohort.obs["patient"].astype(str).to_numpy()).sum()
    # pydeseq2's iterative fits end ~1% of a standard error apart on the same counts stored
    # differently (a groupby's frame vs a fresh C-ordered array, measured): both sides hand it
    # a fresh C-ordered frame
    bulk = pd.DataFrame(np.ascontiguousarray(bulk.to_numpy()), index=bulk.index,
                        columns=bulk.columns)
    response = cohort.obs.groupby("patient", observed=True)["response"].first().astype(str)
    metadata = pd.DataFrame({"response": response.loc[bulk.index].to_numpy()}, index=bulk.index)
    keep = ((bulk >= 10).sum() >= 4) & (bulk.sum() >= 15)
    inference = DefaultInference(n_cpus=1)
    dds = DeseqDataSet(counts=bulk.loc[:, keep].round().astype(int), metadata=metadata,
                       design="~response", inference=inference, quiet=True)
    dds.deseq2()
    result = DeseqStats(dds, contrast=["response", NON_RESPONDER, RESPONDER],
                        inference=inference, independent_filter=False, quiet=True)
    result.summary()
    hand = result.results_df
    ours = de.set_index("gene").loc[hand.index]
    assert len(ours) == keep.sum()
    np.testing.assert_allclose(ours["mean_expression"], hand["baseMean"], rtol=1e-9)
    np.testing.assert_allclose(ours["log2_fold_change"], hand["log2FoldChange"], rtol=1e-6)
    np.testing.assert_allclose(ours["lfc_se"], hand["lfcSE"], rtol=1e-6)
    np.testing.assert_allclose(ours["p_value"], hand["pvalue"], rtol=1e-6)
    assert ours["q_value"].le(0.05).sum() == (hand["padj"] <= 0.05).sum()


def test_planted_program_effect_is_found_with_the_right_sign(cohort):
    _, matrices = resistance.pseudobulk(cohort, value_type="counts")
    de = resistance.differential_expression(only(matrices), value_type="counts")
    ifn = signatures.load_programs("human", names=["ifn_i_core"])["ifn_i_core"]
    planted = de[de["gene"].isin(ifn.genes)]
    assert (planted["log2_fold_change"] > 0).mean() > 0.8
    programs = signatures.load_programs("human", names=["ifn_i_core", "tpex", "tex_term"])
    scores = resistance.score_programs(de, programs).set_index("program")
    assert list(scores.columns) == [c for c in resistance.PROGRAM_COLUMNS if c != "program"]
    assert scores.loc["ifn_i_core", "t"] > 0 and scores.loc["ifn_i_core", "q_value"] < 0.05
    # the planted program stands out from the unplanted ones
    assert scores["t"].abs().idxmax() == "ifn_i_core"


def test_ulm_is_the_slope_t_of_the_statistic_on_membership():
    rng = np.random.default_rng(0)
    statistic = pd.Series(rng.normal(size=200), index=[f"g{i}" for i in range(200)])
    statistic.iloc[:20] += 2.0
    weights = pd.Series(1.0, index=statistic.index[:20])
    slope, t, p = resistance.ulm(statistic, weights)
    fit = stats.linregress(np.r_[np.ones(20), np.zeros(180)], statistic.to_numpy())
    assert slope == pytest.approx(fit.slope) and p == pytest.approx(fit.pvalue)
    assert t == pytest.approx(fit.slope / fit.stderr) and t > 0


def test_log_data_use_welch_on_patient_means_and_say_so(cohort):
    log = cohort.copy()
    counts = sparse.csr_matrix(log.layers["counts"]).toarray()
    log.X = sparse.csr_matrix(np.log2(counts / counts.sum(1, keepdims=True) * 1e6 + 1))
    del log.layers["counts"]
    samples, matrices = resistance.pseudobulk(log, value_type="log_tpm")
    assert samples["total_counts"].isna().all()
    de = resistance.differential_expression(only(matrices), value_type="log_tpm")
    assert (de["method"] == resistance.METHOD_WELCH).all()
    assert de["q_value"].notna().all()
    # by hand for one planted gene: per-patient mean log2, Welch t
    gene = de[de["gene"] == "RSAD2"].iloc[0] if (de["gene"] == "RSAD2").any() else de.iloc[0]
    values = pd.Series(log[:, gene["gene"]].X.toarray().ravel(), index=log.obs_names)
    means = values.groupby(log.obs["patient"].astype(str).to_numpy()).mean()
    response = log.obs.groupby("patient", observed=True)["response"].first().astype(str)
    x = means[response.loc[means.index] == NON_RESPONDER]
    y = means[response.loc[means.index] == RESPONDER]
    test = stats.ttest_ind(x, y, equal_var=False)
    assert gene["statistic"] == pytest.approx(test.statistic)
    assert gene["p_value"] == pytest.approx(test.pvalue)
    assert gene["log2_fold_change"] == pytest.approx(x.mean() - y.mean())
    ifn = signatures.load_programs("human", names=["ifn_i_core"])
    scores = resistance.score_programs(de, ifn).set_index("program")
    assert scores.loc["ifn_i_core", "t"] > 0
    ranks = resistance.differential_expression(only(matrices), value_type="log_tpm",
                                               log_method="mann_whitney")
    assert (ranks["method"] == resistance.METHOD_MANN_WHITNEY).all()


def test_a_state_with_too_few_patients_is_not_testable_and_says_why(cohort):
    one_responder = cohort[
        (cohort.obs["response"] == NON_RESPONDER).to_numpy()
        | (cohort.obs["patient"] == cohort.obs.loc[cohort.obs["response"] == RESPONDER,
                                                   "patient"].iloc[0]).to_numpy()
    ].copy()
    _samples, matrices = resistance.pseudobulk(one_responder, value_type="counts")
    de = resistance.differential_expression(matrices, value_type="counts")
    assert len(de) == len(resistance.STATES) and not de["testable"].any()
    row = de.set_index("state").loc[ALL_CD8]
    assert "not testable" in row["reason"] and "1 responder" in row["reason"]
    programs = signatures.load_programs("human", names=["ifn_i_core"])
    scores = resistance.score_programs(de, programs)
    assert not scores["testable"].any() and scores["reason"].str.contains("not testable").all()


def test_without_response_labels_every_state_says_so(cohort):
    unlabelled = cohort.copy()
    unlabelled.obs["response"] = np.nan
    programs = signatures.load_programs("human", names=["ifn_i_core"])
    tables = resistance.analyse(unlabelled, value_type="counts", programs=programs)
    de = tables["resistance_de"]
    assert not de["testable"].any()
    assert de["reason"].str.contains("no response labels").all()
    assert not tables["resistance_programs"]["testable"].any()
