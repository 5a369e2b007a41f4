"""The cross-dataset path of issue 21 item 4 through the workflow: two small simulated cohorts
(IFN-I core planted higher in non-responders in both) run from their h5ad files to
results/resistance_genes.tsv, the forest plot and the summary page."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from texflow.resistance_meta import METHOD_META
from texflow.simulation import simulate
from texflow.stats import ALL_CD8

from tests.workflow_runner import ROOT, prepare_workdir, run_workflow

pytestmark = pytest.mark.slow


def assert_one_matrix_file_left(results):
    """After the run: raw.h5ad and final.h5ad are the only AnnData files (the stages' files are
    temporary), and final.h5ad is plain AnnData: X log-normalised, layers["counts"] the
    ingested counts of its cells, integer-valued, with no texflow reader."""
    left = sorted(p.relative_to(results).as_posix() for p in results.rglob("*.h5ad"))
    assert left == ["final.h5ad", "raw.h5ad"], left
    final = ad.read_h5ad(results / "final.h5ad")
    raw = ad.read_h5ad(results / "raw.h5ad")  # X: the counts as ingested
    counts = final.layers["counts"]
    assert counts.nnz and np.array_equal(counts.data, np.round(counts.data))
    assert (counts != raw[final.obs_names, final.var_names].X).nnz == 0
    assert (final.X != counts).nnz > 0  # X is not the counts
    assert {"cluster", "state", "pseudotime"} <= set(final.obs)
    assert "counts_layer" not in final.uns["texflow"]


def test_two_simulated_cohorts_are_pooled_and_shown_on_the_summary(tmp_path):
    base = yaml.safe_load((ROOT / "config/datasets/demo_simulated_cohort.yaml").read_text())
    files = []
    for i, seed in enumerate((11, 12)):
        adata = simulate(
            n_cells=900,
            n_genes=600,
            n_patients=8,
            seed=seed,
            doublet_rate=0.0,
            low_quality_rate=0.0,
            response_effects={"ifn_i_core": 1.0},
            counts_layer=False,
        )
        (tmp_path / "sim").mkdir(exist_ok=True)
        adata.write_h5ad(tmp_path / f"sim/cohort_{i}.h5ad")
        dataset = {
            **base,
            "id": f"sim_cohort_{i}",
            "title": f"SIMULATED cohort {i}",
            "simulated": False,
            "sources": [{"name": "matrix", "url": f"sim/cohort_{i}.h5ad"}],
        }
        if i == 0:  # the dataset's design covariate reaches the rule (one timepoint: drops out)
            dataset["design_covariate"] = "timepoint"
        files.append(str(prepare_workdir(tmp_path, dataset)))
    config_path = tmp_path / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["datasets"] = files
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # two jobs at a time (threads per job unchanged: 2): a job on cohorts this small spends most
    # of its time importing, on one core
    done = run_workflow(tmp_path, None, "results/summary.html", cores=4, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:]
    for i in (0, 1):
        assert_one_matrix_file_left(tmp_path / f"results/sim_cohort_{i}")

    designs = {
        i: set(
            pd.read_csv(tmp_path / f"results/sim_cohort_{i}/tables/resistance_de.tsv", sep="\t")[
                "design"
            ]
        )
        for i in (0, 1)
    }
    assert designs[1] == {"~ response"}
    assert all(d.startswith("~ response (timepoint is ") for d in designs[0]), designs[0]
    genes = pd.read_csv(tmp_path / "results/resistance_genes.tsv", sep="\t")
    pooled = genes.loc[(genes["state"] == ALL_CD8) & (genes["method"] == METHOD_META)]
    assert len(pooled) > 50 and (pooled["n_datasets"] == 2).all()
    assert set(pooled["datasets"]) == {"sim_cohort_0,sim_cohort_1"}
    assert pooled["rank"].tolist() == sorted(pooled["rank"])
    # the planted genes lead: most of the top 10 are IFN-I core genes, higher in non-responders
    from texflow import signatures

    ifn = {g.upper() for g in signatures.load_programs("human")["ifn_i_core"].up}
    top = pooled.head(10)
    assert top["gene"].str.upper().isin(ifn).sum() >= 5, top[["gene", "q_value"]]
    assert (top.loc[top["gene"].str.upper().isin(ifn), "pooled_log2_fold_change"] > 0).all()
    assert (tmp_path / "results/figures/resistance_forest.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "results/summary.html").read_text()
    assert "Genes behind resistance across datasets" in html
    assert "genes pooled over 2 datasets" in html and "data:image/png;base64," in html
