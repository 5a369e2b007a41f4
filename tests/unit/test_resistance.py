"""texflow.resistance: pseudobulk per patient and state, non-responders vs responders with
patients as units (pydeseq2 on counts, Welch t on log data), programs on the gene statistics."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats
from texflow import resistance, signatures
from texflow.simulation import simulate
from texflow.stats import ALL_CD8, NON_RESPONDER, RESPONDER


@pytest.fixture(scope="module")
def cohort():
    """8 patients (4 non-responders), IFN-I core planted 1 log2 higher in non-responders;
    CD8 cells only, the per-cell state calls taken from the truth."""
    adata = simulate(
        n_cells=1200,
        n_genes=500,
        n_patients=8,
        seed=1,
        doublet_rate=0.0,
        low_quality_rate=0.0,
        response_effects={"ifn_i_core": 1.0},
    )
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
    counts = pd.DataFrame(
        sparse.csr_matrix(cohort.layers["counts"]).toarray(),
        index=cohort.obs_names,
        columns=cohort.var_names,
    )
    bulk = counts.groupby(cohort.obs["patient"].astype(str).to_numpy()).sum()
    # pydeseq2's iterative fits end ~1% of a standard error apart on the same counts stored
    # differently (a groupby's frame vs a fresh C-ordered array, measured): both sides hand it
    # a fresh C-ordered frame
    bulk = pd.DataFrame(
        np.ascontiguousarray(bulk.to_numpy()), index=bulk.index, columns=bulk.columns
    )
    response = cohort.obs.groupby("patient", observed=True)["response"].first().astype(str)
    metadata = pd.DataFrame({"response": response.loc[bulk.index].to_numpy()}, index=bulk.index)
    keep = ((bulk >= 10).sum() >= 4) & (bulk.sum() >= 15)
    inference = DefaultInference(n_cpus=1)
    dds = DeseqDataSet(
        counts=bulk.loc[:, keep].round().astype(int),
        metadata=metadata,
        design="~response",
        inference=inference,
        quiet=True,
    )
    dds.deseq2()
    result = DeseqStats(
        dds,
        contrast=["response", NON_RESPONDER, RESPONDER],
        inference=inference,
        independent_filter=False,
        quiet=True,
    )
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
    # genes, not patients, are the units of this test, and every tested row says so
    assert (scores["unit"] == "genes").all()
    assert scores.loc[scores["testable"], "note"].str.startswith("genes are the units").all()


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
    default = resistance.differential_expression(only(matrices), value_type="log_tpm")
    assert (default["method"] == resistance.METHOD_LIMMA_TREND).all()
    de = resistance.differential_expression(
        only(matrices), value_type="log_tpm", log_method="welch"
    )
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
    assert gene["p_value"] == pytest.approx(test.pvalue, rel=1e-5)  # float32 X
    assert gene["log2_fold_change"] == pytest.approx(x.mean() - y.mean())
    ifn = signatures.load_programs("human", names=["ifn_i_core"])
    scores = resistance.score_programs(de, ifn).set_index("program")
    assert scores.loc["ifn_i_core", "t"] > 0
    ranks = resistance.differential_expression(
        only(matrices), value_type="log_tpm", log_method="mann_whitney"
    )
    assert (ranks["method"] == resistance.METHOD_MANN_WHITNEY).all()


def test_a_state_with_too_few_patients_is_not_testable_and_says_why(cohort):
    one_responder = cohort[
        (cohort.obs["response"] == NON_RESPONDER).to_numpy()
        | (
            cohort.obs["patient"]
            == cohort.obs.loc[cohort.obs["response"] == RESPONDER, "patient"].iloc[0]
        ).to_numpy()
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


def with_batch(adata, batch_of):
    """A copy with obs["batch"] from patient -> batch."""
    out = adata.copy()
    out.obs["batch"] = out.obs["patient"].astype(str).map(batch_of).astype(object)
    return out


@pytest.fixture(scope="module")
def balanced_batches(cohort):
    """Two batches, each with two non-responders and two responders."""
    response = cohort.obs.groupby("patient", observed=True)["response"].first().astype(str)
    batch_of = {}
    for group in (NON_RESPONDER, RESPONDER):
        for i, patient in enumerate(sorted(response.index[response == group])):
            batch_of[patient] = "b1" if i < 2 else "b2"
    return batch_of


def test_counts_with_a_covariate_match_pydeseq2_run_by_hand(cohort, balanced_batches):
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    adata = with_batch(cohort, balanced_batches)
    samples, matrices = resistance.pseudobulk(adata, value_type="counts", covariate_key="batch")
    assert (samples.loc[samples["kept"], "covariate"].isin(["b1", "b2"])).all()
    de = resistance.differential_expression(only(matrices), value_type="counts", covariate="batch")
    assert (de["design"] == "~ batch + response").all() and de["testable"].all()

    counts = pd.DataFrame(
        sparse.csr_matrix(adata.layers["counts"]).toarray(),
        index=adata.obs_names,
        columns=adata.var_names,
    )
    bulk = counts.groupby(adata.obs["patient"].astype(str).to_numpy()).sum()
    bulk = pd.DataFrame(
        np.ascontiguousarray(bulk.to_numpy()), index=bulk.index, columns=bulk.columns
    )
    response = adata.obs.groupby("patient", observed=True)["response"].first().astype(str)
    metadata = pd.DataFrame(
        {
            "batch": [balanced_batches[p] for p in bulk.index],
            "response": response.loc[bulk.index].to_numpy(),
        },
        index=bulk.index,
    )
    keep = ((bulk >= 10).sum() >= 4) & (bulk.sum() >= 15)
    inference = DefaultInference(n_cpus=1)
    dds = DeseqDataSet(
        counts=bulk.loc[:, keep].round().astype(int),
        metadata=metadata,
        design="~batch + response",
        inference=inference,
        quiet=True,
    )
    dds.deseq2()
    result = DeseqStats(
        dds,
        contrast=["response", NON_RESPONDER, RESPONDER],
        inference=inference,
        independent_filter=False,
        quiet=True,
    )
    result.summary()
    hand = result.results_df
    ours = de.set_index("gene").loc[hand.index]
    np.testing.assert_allclose(ours["log2_fold_change"], hand["log2FoldChange"], rtol=1e-6)
    np.testing.assert_allclose(ours["lfc_se"], hand["lfcSE"], rtol=1e-6)
    np.testing.assert_allclose(ours["p_value"], hand["pvalue"], rtol=1e-6)
    # the covariate is in the model: the fit differs from ~ response
    plain = resistance.differential_expression(only(matrices), value_type="counts")
    assert (plain["design"] == "~ response").all()
    merged = plain.set_index("gene").loc[hand.index]
    assert not np.allclose(merged["lfc_se"], ours["lfc_se"], rtol=1e-3)


def test_a_covariate_absorbs_a_batch_shift_the_plain_design_calls(cohort):
    # three of the four non-responders in batch b2, where 40 unplanted genes have 4x the
    # counts: ~ response calls the batch a response effect, ~ batch + response does not
    response = cohort.obs.groupby("patient", observed=True)["response"].first().astype(str)
    nr = sorted(response.index[response == NON_RESPONDER])
    batch_of = {p: "b2" if p in nr[:3] else "b1" for p in response.index}
    adata = with_batch(cohort, batch_of)
    counts = sparse.csr_matrix(adata.layers["counts"]).toarray()
    rng = np.random.default_rng(0)
    unplanted = (adata.var["true_response_log2fc"] == 0).to_numpy() & (counts.sum(0) > 500)
    shifted = rng.choice(np.flatnonzero(unplanted), 40, replace=False)
    in_b2 = (adata.obs["batch"] == "b2").to_numpy()
    counts[np.ix_(in_b2, shifted)] = rng.poisson(counts[np.ix_(in_b2, shifted)] * 4.0)
    adata.layers["counts"] = sparse.csr_matrix(counts)
    _, matrices = resistance.pseudobulk(adata, value_type="counts", covariate_key="batch")
    genes = set(adata.var_names[shifted])
    plain = resistance.differential_expression(only(matrices), value_type="counts")
    adjusted = resistance.differential_expression(
        only(matrices), value_type="counts", covariate="batch"
    )
    called = {
        name: set(t.loc[(t["q_value"] < 0.05) & t["gene"].isin(genes), "gene"])
        for name, t in (("plain", plain), ("adjusted", adjusted))
    }
    assert len(called["plain"]) >= 20 and len(called["adjusted"]) <= 2, called


def test_log_data_with_a_covariate_use_least_squares_as_statsmodels(cohort, balanced_batches):
    import statsmodels.formula.api as smf

    log = with_batch(cohort, balanced_batches)
    counts = sparse.csr_matrix(log.layers["counts"]).toarray()
    log.X = sparse.csr_matrix(np.log2(counts / counts.sum(1, keepdims=True) * 1e6 + 1))
    del log.layers["counts"]
    _, matrices = resistance.pseudobulk(log, value_type="log_tpm", covariate_key="batch")
    de = resistance.differential_expression(
        only(matrices), value_type="log_tpm", covariate="batch", log_method="welch"
    )
    assert (de["method"] == resistance.METHOD_OLS).all()
    assert (de["design"] == "~ batch + response").all()
    matrix = matrices[ALL_CD8]
    frame = pd.DataFrame(
        {
            "batch": matrix.attrs["covariate"],
            "nr": [r == NON_RESPONDER for r in matrix.attrs["response"]],
        }
    )
    for gene in de["gene"].iloc[[0, 5, 50]]:
        frame["y"] = matrix[gene].to_numpy()
        fit = smf.ols("y ~ C(batch) + nr", data=frame).fit()
        row = de.set_index("gene").loc[gene]
        assert row["log2_fold_change"] == pytest.approx(fit.params["nr[T.True]"], rel=1e-9)
        assert row["lfc_se"] == pytest.approx(fit.bse["nr[T.True]"], rel=1e-9)
        assert row["p_value"] == pytest.approx(fit.pvalues["nr[T.True]"], rel=1e-9)
    with pytest.raises(ValueError, match="rank test.*cannot carry"):
        resistance.differential_expression(
            only(matrices),
            value_type="log_tpm",
            covariate="batch",
            log_method="mann_whitney",
            dataset="GSE_X",
        )


def test_a_covariate_confounded_with_response_leaves_the_state_untested(cohort):
    response = cohort.obs.groupby("patient", observed=True)["response"].first().astype(str)
    adata = with_batch(
        cohort, {p: "pre" if r == NON_RESPONDER else "post" for p, r in response.items()}
    )
    _, matrices = resistance.pseudobulk(adata, value_type="counts", covariate_key="batch")
    de = resistance.differential_expression(
        only(matrices), value_type="counts", covariate="batch", dataset="GSE_X"
    )
    assert len(de) == 1 and not de["testable"].iloc[0]
    reason = de["reason"].iloc[0]
    assert "confounded with response" in reason and "GSE_X" in reason
    assert "config/datasets/GSE_X.yaml" in reason and "remove design_covariate" in reason
    assert de["design"].iloc[0] == "~ batch + response"


def test_a_constant_covariate_drops_out_and_says_so(cohort):
    adata = with_batch(cohort, {p: "b1" for p in cohort.obs["patient"].astype(str).unique()})
    _, matrices = resistance.pseudobulk(adata, value_type="counts", covariate_key="batch")
    de = resistance.differential_expression(only(matrices), value_type="counts", covariate="batch")
    assert de["design"].str.startswith("~ response (batch is b1").all()
    plain = resistance.differential_expression(only(matrices), value_type="counts")
    np.testing.assert_allclose(de["p_value"], plain["p_value"])


def test_a_covariate_that_varies_inside_a_pooled_sample_is_refused(cohort):
    adata = cohort.copy()
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2 == 0, "b1", "b2")
    problem = resistance.covariate_problem(adata.obs, covariate="batch")
    assert "takes 2 values" in problem and "constant per patient and timepoint" in problem
    with pytest.raises(ValueError, match="takes 2 values"):
        resistance.pseudobulk(adata, value_type="counts", covariate_key="batch")
    assert "not a column" in resistance.covariate_problem(adata.obs, covariate="nope")
    assert resistance.covariate_problem(adata.obs, covariate="timepoint") == ""


def test_squeeze_variances_matches_smyths_moment_estimates_by_hand():
    from scipy import optimize, special

    rng = np.random.default_rng(3)
    df, d0_true, s0_true = 4.0, 6.0, 0.2
    # s² ~ s0² d0/chi²(d0) (prior) then s0²-scaled chi²(df)/df: limma's hierarchical model
    sigma2 = s0_true * d0_true / rng.chisquare(d0_true, 4000)
    s2 = sigma2 * rng.chisquare(df, 4000) / df
    post, d0, s0 = resistance.squeeze_variances(s2, df=df)
    e = np.log(s2) - special.digamma(df / 2) + np.log(df / 2)
    evar = e.var(ddof=1) - special.polygamma(1, df / 2)
    d0_hand = 2 * optimize.brentq(lambda y: special.polygamma(1, y) - evar, 1e-3, 1e6)
    s0_hand = np.exp(e.mean() + special.digamma(d0_hand / 2) - np.log(d0_hand / 2))
    assert d0 == pytest.approx(d0_hand, rel=1e-6)
    assert np.allclose(s0, s0_hand)
    assert np.allclose(post, (d0_hand * s0_hand + df * s2) / (d0_hand + df))
    assert d0 == pytest.approx(d0_true, rel=0.25) and s0[0] == pytest.approx(s0_true, rel=0.1)


def test_squeeze_variances_follows_a_trend_on_mean_expression():
    rng = np.random.default_rng(4)
    amean = rng.uniform(0, 8, 3000)
    trend = 0.5 * np.exp(-amean / 2) + 0.05  # log-data variance falls with expression
    s2 = trend * rng.chisquare(6, 3000) / 6  # no extra spread: d0 infinite, prior = trend
    post, d0, s0 = resistance.squeeze_variances(s2, df=6.0, covariate=amean)
    assert np.isinf(d0) or d0 > 50
    ratio = s0 / trend
    assert np.median(np.abs(np.log(ratio))) < 0.1
    flat, _, _ = resistance.squeeze_variances(s2, df=6.0)
    # without the trend every gene is pulled to one value; with it, low genes keep high variance
    assert np.corrcoef(post, trend)[0, 1] > 0.9 > np.corrcoef(flat, trend)[0, 1]


def test_limma_trend_test_is_the_group_difference_over_the_moderated_se():
    rng = np.random.default_rng(5)
    response = [NON_RESPONDER] * 5 + [RESPONDER] * 6
    matrix = pd.DataFrame(rng.normal(2, 0.5, (11, 300)), columns=[f"g{i}" for i in range(300)])
    nr = np.array([r == NON_RESPONDER for r in response], dtype=float)
    table = resistance._limma_trend_test(matrix, np.column_stack([np.ones(11), nr]))
    x, y = matrix.to_numpy()[nr == 1], matrix.to_numpy()[nr == 0]
    assert np.allclose(table["log2_fold_change"], x.mean(0) - y.mean(0))
    pooled = ((x - x.mean(0)) ** 2).sum(0) + ((y - y.mean(0)) ** 2).sum(0)
    post, d0, _ = resistance.squeeze_variances(
        pooled / 9, df=9.0, covariate=matrix.to_numpy().mean(0)
    )
    assert np.allclose(table["lfc_se"], np.sqrt(post * (1 / 5 + 1 / 6)))
    df_total = min(9 + d0, 9 * 300)
    t = table["log2_fold_change"] / table["lfc_se"]
    assert np.allclose(table["p_value"], 2 * stats.t.sf(np.abs(t), df_total))


def test_log_data_filter_keeps_genes_detected_in_a_fifth_of_cells_of_enough_patients():
    response = [NON_RESPONDER] * 3 + [RESPONDER] * 2
    matrix = pd.DataFrame(np.ones((5, 3)), columns=["rare", "two_patients", "broad"])
    matrix.attrs["detected_fraction"] = np.array(
        [[0.05, 0.5, 0.3], [0.1, 0.5, 0.3], [0.0, 0.0, 0.3], [0.1, 0.0, 0.2], [0.0, 0.0, 0.25]]
    )
    keep = resistance.expressed_genes(matrix, response, counts=False)
    assert keep.tolist() == [False, True, True]  # n_min = 2 samples (the smaller group)
    matrix.attrs.pop("detected_fraction")
    with pytest.raises(ValueError, match="detected_fraction"):
        resistance.expressed_genes(matrix, response, counts=False)


def test_group_sums_are_scipys_row_sums_to_the_bit():
    """`features.group_row_sums` in blocks of rows: each group's float64 sums are scipy's sums
    of its rows (added in row order both ways), for values whose sums round (log values)."""
    from texflow import features

    rng = np.random.default_rng(3)
    values = sparse.random(300, 40, density=0.3, format="csr", random_state=4, dtype=np.float32)
    values.data = np.log1p(rng.gamma(1.0, 3.0, values.nnz)).astype(np.float32)
    groups = [np.flatnonzero(rng.random(300) < share) for share in (0.1, 0.5, 0.9, 0.0)]
    sums, detected = features.group_row_sums(values, groups, chunk_rows=17)
    as_float64 = sparse.csr_matrix(values, dtype=np.float64)
    for group, rows in enumerate(groups):
        expected = np.asarray(as_float64[rows].sum(axis=0)).ravel()
        assert np.array_equal(sums[group], expected)  # bitwise, not approximately
        np.testing.assert_array_equal(detected[group], (values[rows] > 0).sum(axis=0).A1)


@pytest.mark.parametrize("value_type", ["counts", "log_tpm"])
def test_pseudobulk_from_the_file_is_the_pseudobulk_in_memory(cohort, tmp_path, value_type):
    """The stage reads the values to pool from its file in blocks of rows (`backed_csr`):
    the same samples table and matrices, to the bit, as with the values in memory."""
    from texflow.utils import backed_csr, write_h5ad

    cells = cohort.copy()
    cells.layers["counts"] = sparse.csr_matrix(cells.layers["counts"], dtype=np.float32)
    cells.X = sparse.csr_matrix(np.log2(cells.layers["counts"].toarray() + 1), dtype=np.float32)
    write_h5ad(cells, tmp_path / "final.h5ad")
    in_memory = resistance.pseudobulk(cells, value_type=value_type, min_cells=10)
    layer = "counts" if value_type == "counts" else None
    with backed_csr(tmp_path / "final.h5ad", layer=layer) as matrix:
        assert matrix is not None
        light = cells.copy()
        light.X, light.layers = None, {}
        from_file = resistance.pseudobulk(light, value_type=value_type, min_cells=10, matrix=matrix)
    pd.testing.assert_frame_equal(from_file[0], in_memory[0])
    assert from_file[1].keys() == in_memory[1].keys()
    for state, frame in in_memory[1].items():
        assert np.array_equal(from_file[1][state].to_numpy(), frame.to_numpy())
        assert from_file[1][state].index.equals(frame.index)
        np.testing.assert_array_equal(
            from_file[1][state].attrs["detected_fraction"], frame.attrs["detected_fraction"]
        )
