"""QC: injected low-quality cells and doublets are caught; bad input gives clear outcomes."""

import logging
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from texflow import doublets, qc
from texflow.errors import InputDataError

from tests.qc_fixtures import simulated

CASES = [("human", 0), ("human", 1), ("human", 2), ("mouse", 0), ("mouse", 1), ("mouse", 2)]


@pytest.mark.parametrize("organism,seed", CASES[:2] + CASES[3:4])
def test_low_quality_and_doublets_caught(organism, seed):
    adata = simulated(organism, seed)
    table = qc.run_qc(adata).tables["qc_summary"]
    obs = adata.obs
    low, doublet = obs["true_low_quality"], obs["true_doublet"]
    clean = ~low & ~doublet
    # measured 1.00 on 6 runs: the simulated damaged cells carry 19-61% mitochondrial counts
    assert (~obs["qc_pass"] & low).sum() / low.sum() >= 0.95
    # the 5-MAD / 3-MAD rules cost 3-5% of clean cells (measured); allow up to 8%
    assert (~obs["qc_pass"] & clean).sum() / clean.sum() <= 0.08
    # scrublet at ~500 cells per sample: AUC 0.84-0.89, recall at its own threshold 0.14-0.25
    assert roc_auc_score(doublet, obs["doublet_score"]) >= 0.78
    assert (obs["predicted_doublet"] & doublet).sum() / doublet.sum() >= 0.08
    # flagged, not removed, by default
    assert not obs["qc_fail_doublet"].any()
    assert table["sample"].iloc[-1] == "(all)"
    assert table["cells_in"].iloc[-1] == adata.n_obs


def test_log_data_only_genes_detected():
    adata = simulated("human", 0)
    adata.uns["texflow"]["value_type"] = "log_tpm"
    result = qc.run_qc(adata)
    table = result.tables["qc_summary"]
    skipped = adata.uns["texflow"]["skipped"]
    for step in ("qc.total_counts", "qc.top20", "qc.mito", "qc.doublets"):
        assert "not counts" in skipped[step]
    # the result's notes are the stage's entries of uns["texflow"]["skipped"], in their order
    assert result.stage == "qc"
    assert result.notes == {step: why for step, why in skipped.items() if step.startswith("qc.")}
    assert list(result.notes) == ["qc.total_counts", "qc.top20", "qc.mito", "qc.doublets"]
    cells = result.tables["qc_cells"]
    assert list(cells["cell_id"]) == list(adata.obs_names)
    assert {"sample", "qc_pass", "qc_fail_n_genes", "doublet_score"} <= set(cells)
    assert table["fail_mito"].isna().all() and table["predicted_doublets"].isna().all()
    assert table["fail_n_genes"].notna().all()
    assert adata.obs["doublet_score"].isna().all()


def test_no_mito_genes_recorded():
    adata = simulated("human", 0)
    adata = adata[:, ~adata.var_names.str.startswith("MT-")].copy()
    table = qc.run_qc(adata, params=qc.QCParams(doublets=False)).tables["qc_summary"]
    assert "no mitochondrial genes" in adata.uns["texflow"]["skipped"]["qc.mito"]
    assert table["fail_mito"].isna().all()


def test_sample_emptied_and_too_few_cells():
    adata = simulated("human", 0)
    first = adata.obs["sample"].astype(str) == adata.obs["sample"].astype(str).iloc[0]
    # make one sample entirely mitochondrial-heavy: every cell fails the cap
    mito = np.flatnonzero(adata.var_names.str.startswith("MT-"))
    x = adata.X.tolil()
    for i in np.flatnonzero(first.to_numpy()):
        x[i, mito[0]] = 1e5
    adata.X = x.tocsr()
    table = qc.run_qc(adata, params=qc.QCParams(doublets=False)).tables["qc_summary"]
    sample = adata.obs["sample"].astype(str)[first].iloc[0]
    assert table.set_index("sample").loc[sample, "cells_out"] == 0
    assert "sample dropped" in adata.uns["texflow"]["skipped"][f"qc.sample.{sample}"]
    with pytest.raises(InputDataError, match="pass QC"):
        qc.passing_cells(adata, min_cells=10**6)


def test_tiny_samples_use_pooled_thresholds():
    adata = simulated("mouse", 0)[:60].copy()
    table = qc.run_qc(adata).tables["qc_summary"]
    assert table["notes"].str.contains("pooled").any()
    assert "qc.doublets" in adata.uns["texflow"]["skipped"]


def test_threshold_minimum_bimodal():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.03, 2000), rng.normal(0.6, 0.05, 500)])
    assert 0.2 < qc.threshold_minimum(values) < 0.5


def test_metrics_match_scanpy():
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    from scipy import sparse

    rng = np.random.default_rng(3)
    dense = rng.negative_binomial(1, 0.6, size=(60, 45)).astype(np.float32)
    dense[:5, :] = 0  # empty cells
    dense[5, :3] = [1, 0, 2]  # a cell with fewer genes than the top 20
    dense[5, 3:] = 0
    names = [f"MT-{i}" if i < 4 else f"G{i}" for i in range(45)]
    ours = ad.AnnData(sparse.csr_matrix(dense), var=pd.DataFrame(index=names))
    ours.X.data[:3] = 0  # stored zeros
    theirs = ours.copy()
    qc.compute_metrics(ours, organism="human")
    theirs.var["mt"] = theirs.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(theirs, qc_vars=["mt"], percent_top=[20], log1p=True, inplace=True)
    for column in (
        "total_counts",
        "log1p_total_counts",
        "n_genes_by_counts",
        "log1p_n_genes_by_counts",
        "pct_counts_in_top_20_genes",
        "total_counts_mt",
        "log1p_total_counts_mt",
        "pct_counts_mt",
    ):
        np.testing.assert_allclose(
            ours.obs[column].to_numpy(float),
            np.nan_to_num(theirs.obs[column].to_numpy(float)),
            rtol=1e-5,
            err_msg=column,
        )


def test_figures_draw_only_what_ran(tmp_path):
    """Log data: one QC panel (genes detected), the criteria not run named under it, not drawn
    as empty panels; no doublet histogram, one line of text (issue 19, 5); counts: four panels
    in two rows."""
    from PIL import Image
    from texflow.plotting import qc as qc_plots

    adata = simulated("human", 0)
    adata.uns["texflow"]["value_type"] = "log_tpm"
    table = qc.run_qc(adata).tables["qc_summary"]
    qc_plots.qc_metrics(adata, table, tmp_path / "log.png")
    qc_plots.doublet_scores(adata, tmp_path / "doublets.png", note="value_type is log_tpm")
    full = simulated("human", 0)
    full_table = qc.run_qc(full).tables["qc_summary"]
    qc_plots.qc_metrics(full, full_table, tmp_path / "counts.png")
    with Image.open(tmp_path / "log.png") as one, Image.open(tmp_path / "counts.png") as four:
        # one row of one panel (3.5 in at 110 dpi), not four rows of which three empty; the
        # counts' four panels two by two (few samples)
        assert one.height < 450 < 600 < four.height
        assert one.width >= 1200 and four.width >= 1200  # the report shows it page-wide
    with Image.open(tmp_path / "doublets.png") as doublets:
        assert doublets.height < 150


def test_samples_scored_at_once_match_one_at_a_time(monkeypatch, caplog):
    """Scrublet on 1, 2 and 4 threads: the same doublet scores to the last bit, thresholds,
    calls, tables, notes and QC's log lines, in sample order (Scrublet's progress line per sample
    comes as each ends: the same lines, in any order); a sample too small to be scored sits
    between five that are."""
    adata = simulated("human", 1)
    samples = adata.obs["sample"].astype(str)
    small = samples.unique()[2]
    keep = (samples != small).to_numpy() | (np.cumsum(samples == small) <= 60).to_numpy()
    adata = adata[keep].copy()
    manifold = doublets._manifold
    workers = []

    def recording(*args, **kwargs):
        workers.append(threading.current_thread().name)
        return manifold(*args, **kwargs)

    monkeypatch.setattr(doublets, "_manifold", recording)
    runs = {}
    for threads in (1, 2, 4):
        caplog.clear()
        workers.clear()
        run = adata.copy()
        with (
            caplog.at_level(logging.DEBUG, logger="texflow.qc"),
            caplog.at_level(logging.DEBUG, logger="texflow.doublets"),
        ):
            result = qc.run_qc(run, threads=threads)
        # QC's own lines come from the main thread, in sample order; Scrublet's progress line
        # per sample comes from its worker as that sample ends, so in the order they end
        messages = [r.getMessage() for r in caplog.records if r.name == "texflow.qc"]
        progress = sorted(
            r.getMessage().split(" cells")[0]
            for r in caplog.records
            if r.name == "texflow.doublets"
        )
        runs[threads] = (run.obs, result, messages, progress, list(workers))
    obs, result, messages, progress, names = runs[1]
    scored = [m for m in messages if m.startswith("scrublet, sample")]
    order = [s for s in pd.unique(samples[keep]) if s != small]
    assert [m.split()[2].rstrip(":") for m in scored] == order  # five samples, in their order
    assert names == ["MainThread"] * 5
    assert (
        "scrublet not run: 60 cells"
        in result.tables["qc_summary"].set_index("sample").loc[small, "notes"]
    )
    assert progress == sorted(
        f"Scrublet: a sample of {n}" for n in samples[keep].value_counts()[order]
    )
    for threads in (2, 4):
        other_obs, other, other_messages, other_progress, other_names = runs[threads]
        # the samples ran in worker threads (at most `threads` at once)
        assert len(other_names) == 5 and all(n.startswith("scrublet") for n in other_names)
        np.testing.assert_array_equal(
            other_obs["doublet_score"].to_numpy(), obs["doublet_score"].to_numpy()
        )
        assert other_obs["predicted_doublet"].equals(obs["predicted_doublet"])
        for name, table in result.tables.items():
            pd.testing.assert_frame_equal(other.tables[name], table)
        assert other.notes == result.notes
        assert other_messages == messages
        assert other_progress == progress


def test_counts_read_from_disk_match_counts_in_memory(tmp_path, monkeypatch):
    """QC on the counts left on disk (`utils.backed_csr`: metrics a chunk of rows at a time,
    each sample's rows read for Scrublet, the passing cells streamed to qc.h5ad) gives the
    obs, tables and qc.h5ad of QC on X in memory, to the last bit."""
    import anndata as ad
    from scipy import sparse
    from texflow.utils import backed_csr, read_h5ad, share_counts, write_h5ad

    adata = simulated("human", 1)
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    adata.X[3, :5] = 0  # stored zeros: not detected genes
    for key in [key for key in adata.layers if key is not None]:  # anndata lists X as None
        del adata.layers[key]
    share_counts(adata)
    write_h5ad(adata, tmp_path / "raw.h5ad")
    monkeypatch.setattr(qc, "METRICS_CHUNK_ROWS", 700)  # metrics over several chunks

    in_memory = read_h5ad(tmp_path / "raw.h5ad")
    expected = qc.run_qc(in_memory, threads=2)
    qc.write_passing_cells(in_memory, tmp_path / "expected.h5ad")
    with backed_csr(tmp_path / "raw.h5ad", without_layers=True) as counts:
        assert counts is not None
        on_disk = read_h5ad(tmp_path / "raw.h5ad", layers=False, x=False)
        assert on_disk.X is None
        result = qc.run_qc(on_disk, threads=2, counts=counts)
        qc.write_passing_cells(on_disk, tmp_path / "qc.h5ad", counts=counts)
    pd.testing.assert_frame_equal(on_disk.obs, in_memory.obs)
    for name, table in expected.tables.items():
        pd.testing.assert_frame_equal(result.tables[name], table)
    assert result.notes == expected.notes
    written, wanted = read_h5ad(tmp_path / "qc.h5ad"), read_h5ad(tmp_path / "expected.h5ad")
    assert written.layers["counts"] is written.X  # the counts held once, as before
    assert (written.X != wanted.X).nnz == 0 and written.X.dtype == np.float32
    pd.testing.assert_frame_equal(written.obs, wanted.obs)
    assert repr(written.uns["texflow"]) == repr(wanted.uns["texflow"])  # arrays inside
    assert ad.read_h5ad(tmp_path / "qc.h5ad").n_obs == int(in_memory.obs["qc_pass"].sum())


def test_samples_searched_approximately_say_so(monkeypatch):
    """A sample whose Scrublet neighbours were searched approximately (above
    `EXACT_KNN_MAX_POINTS` cells and simulated doublets) says so in its qc_summary notes; a
    sample searched exactly says nothing of it."""
    adata = simulated("human", 1)

    def notes():
        result = qc.run_qc(adata.copy(), threads=1)
        return result.tables["qc_summary"].set_index("sample")["notes"].astype(str)

    assert not notes().str.contains("scrublet neighbours").any()
    monkeypatch.setattr(doublets, "EXACT_KNN_MAX_POINTS", 100)
    approximate = notes().drop(index="(all)")  # the dataset's row: notes of its own
    assert approximate.str.contains(
        f"scrublet neighbours {doublets.APPROXIMATE_SEARCH}: ", regex=False
    ).all()
    assert approximate.str.contains("more than the 100 searched exactly", regex=False).all()
