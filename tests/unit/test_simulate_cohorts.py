"""texflow.simulation.cohorts: several cohorts with planted consistent and one-cohort resistance
genes (issue 21's simulator); the truth it reports is what the counts carry."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from texflow.simulation import simulate
from texflow.simulation.cohorts import (
    CONSISTENT,
    NULL,
    ONE_COHORT,
    plant_response_genes,
    simulate_cohorts,
)


@pytest.fixture(scope="module")
def cohorts():
    return simulate_cohorts(
        n_cohorts=3,
        seed=4,
        n_genes=500,
        patients=(6, 8),
        cells_per_patient=60,
        n_consistent=6,
        n_one_cohort=3,
        magnitudes=(0.8, 1.2),
    )


def test_each_cohort_has_its_own_patients_depth_and_the_same_genes(cohorts):
    adatas, _ = cohorts
    assert list(adatas) == ["cohort1", "cohort2", "cohort3"]
    genes = [tuple(a.var_names) for a in adatas.values()]
    assert len(set(genes)) == 1
    depths = [a.uns["cohort"]["median_library_size"] for a in adatas.values()]
    assert len(set(depths)) == 3 and all(2000 <= d <= 6000 for d in depths)
    for adata in adatas.values():
        n = adata.uns["cohort"]["n_patients"]
        assert 6 <= n <= 8 and adata.obs["patient"].nunique() == n
        assert (
            adata.obs.groupby("patient", observed=True)["response"].first() == "non_responder"
        ).sum() == n // 2
        assert adata.obs["true_is_cd8"].all()
        assert (adata.layers["counts"] != adata.X).nnz == 0


def test_the_truth_table_and_var_agree_on_what_was_planted(cohorts):
    adatas, truth = cohorts
    assert truth["kind"].value_counts().to_dict() == {NULL: 491, CONSISTENT: 6, ONE_COHORT: 3}
    effects = truth.set_index("gene")[[f"log2fc_{c}" for c in adatas]]
    for name, adata in adatas.items():
        np.testing.assert_allclose(
            adata.var["true_response_log2fc"], effects[f"log2fc_{name}"].loc[adata.var_names]
        )
    kind = truth.set_index("gene")["kind"]
    assert (effects[kind == NULL] == 0).all().all()
    consistent = effects[kind == CONSISTENT]
    assert (np.sign(consistent).nunique(axis=1) == 1).all() and (consistent != 0).all().all()
    one = truth.loc[truth["kind"] == ONE_COHORT].set_index("gene")
    assert sorted(one["planted_in"]) == ["cohort1", "cohort2", "cohort3"]
    for gene, row in one.iterrows():
        nonzero = effects.loc[gene][effects.loc[gene] != 0]
        assert list(nonzero.index) == [f"log2fc_{row['planted_in']}"]
    # planted among genes expressed in every cohort, never mitochondrial or ribosomal
    planted = truth.loc[truth["kind"] != NULL, "gene"]
    for adata in adatas.values():
        assert (np.asarray(adata[:, planted].X.mean(axis=0)).ravel() >= 0.1 * 0.4).all()
        assert not adata.var.loc[planted, ["mt", "ribo"]].any().any()


def test_the_counts_carry_the_planted_fold_changes(cohorts):
    adatas, truth = cohorts
    planted = truth.loc[truth["kind"] != NULL].set_index("gene")
    realised, expected = [], []
    for name, adata in adatas.items():
        nr = (adata.obs["response"] == "non_responder").to_numpy()
        X = sparse.csr_matrix(adata.X)
        for gene in planted.index:
            column = X[:, adata.var_names.get_loc(gene)].toarray().ravel()
            realised.append(np.log2(column[nr].mean() / column[~nr].mean()))
            expected.append(planted.loc[gene, f"log2fc_{name}"])
    realised, expected = np.array(realised), np.array(expected)
    # patients differ (N(0, 0.4) log2 per gene) and 3-4 patients per group: loose per gene,
    # close on average
    assert np.corrcoef(realised, expected)[0, 1] > 0.8
    assert np.mean(np.abs(realised - expected)) < 0.45


def test_thinning_touches_only_the_planted_genes_and_only_one_group():
    adata = simulate(
        n_cells=3000, n_genes=450, n_patients=6, seed=2, doublet_rate=0.0, low_quality_rate=0.0
    )
    counts = sparse.csr_matrix(adata.X).toarray()
    high = adata.var_names[np.argsort(-counts.sum(0))[[40, 41]]]
    out = plant_response_genes(adata, log2fc=pd.Series({high[0]: 1.0, high[1]: -1.0}), seed=0)
    after = sparse.csr_matrix(out.X).toarray()
    nr = (adata.obs["response"] == "non_responder").to_numpy()
    up, down = adata.var_names.get_loc(high[0]), adata.var_names.get_loc(high[1])
    others = np.setdiff1d(np.arange(adata.n_vars), [up, down])
    np.testing.assert_array_equal(after[:, others], counts[:, others])
    # up in non-responders: the responders' UMIs thinned to half, the non-responders' kept
    np.testing.assert_array_equal(after[nr, up], counts[nr, up])
    assert after[~nr, up].sum() == pytest.approx(counts[~nr, up].sum() / 2, rel=0.05)
    np.testing.assert_array_equal(after[~nr, down], counts[~nr, down])
    assert after[nr, down].sum() == pytest.approx(counts[nr, down].sum() / 2, rel=0.05)
    assert (after <= counts).all()
    assert out.var.loc[high[0], "true_response_log2fc"] == 1.0
    with pytest.raises(ValueError, match="not in the cohort"):
        plant_response_genes(adata, log2fc=pd.Series({"NOT_A_GENE": 1.0}), seed=0)
