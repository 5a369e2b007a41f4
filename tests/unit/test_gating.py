"""CD8 gating against the simulated truth; cd8_sorted; no CD8 cells."""

import re
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from texflow import gating, qc, utils
from texflow.errors import InputDataError

from tests.qc_fixtures import simulated


@pytest.mark.parametrize(
    "organism,seed",
    [("human", 0), ("human", 1), ("human", 2), ("mouse", 0), ("mouse", 1), ("mouse", 2)],
)
def test_gate_precision_recall(organism, seed):
    adata = simulated(organism, seed)
    qc.run_qc(adata)
    adata = qc.passing_cells(adata)
    table = gating.gate_cd8(adata).tables["gating"]
    obs = adata.obs
    true_positive = (obs["is_cd8"] & obs["true_is_cd8"]).sum()
    # measured precision 0.967-0.979 (misses: doublets with a dominant CD8 parent), recall >= 0.99
    assert true_positive / obs["is_cd8"].sum() >= 0.95
    assert true_positive / obs["true_is_cd8"].sum() >= 0.95
    assert {"n_cells", "mean_score_cd8_t", "frac_cd8", "frac_cd3", "decision", "reason"} <= set(
        table
    )


def test_cd8_sorted_skips():
    adata = _qc_passed("human", 0)
    result = gating.gate_cd8(adata, cd8_sorted=True)
    table = result.tables["gating"]
    assert result.stage == "gate"
    assert result.notes == {"gate": adata.uns["texflow"]["skipped"]["gate"]}
    assert adata.obs["is_cd8"].all()
    assert "cd8_sorted" in adata.uns["texflow"]["skipped"]["gate"]
    assert "cd8_sorted" in table["reason"].iloc[0]


def test_no_cd8_cells_is_a_clear_error():
    adata = _qc_passed("human", 0)
    adata = adata[~adata.obs["true_is_cd8"].to_numpy()].copy()
    gating.gate_cd8(adata)
    # QC ran without doublet removal here, so small clusters of doublets with a CD8 parent may
    # pass the gate (measured, seed 0: 2 clusters, 28 of 1002 cells, 27 with a CD8 parent);
    # no non-CD8 singlet may.
    called = adata.obs.loc[adata.obs["is_cd8"]]
    assert not (~called["true_doublet"].astype(bool)).any()
    assert len(called) <= 0.05 * adata.n_obs
    assert called["true_doublet_of"].astype(str).str.contains("cd8_").mean() >= 0.9
    adata.obs["is_cd8"] = False
    with pytest.raises(InputDataError, match="no CD8 T cells after gating"):
        gating.cd8_cells(adata)


# --- the gate's evidence and advice (issue 17, item 2) -------------------------------------------


def _qc_passed(organism="human", seed=0):
    adata = simulated(organism, seed)
    qc.run_qc(adata, params=qc.QCParams(doublets=False))
    return qc.passing_cells(adata)


def _without_cd8(adata):
    """Only non-CD8 singlets: CD4, Treg, NK, B and myeloid cells."""
    keep = ~adata.obs["true_is_cd8"].to_numpy(dtype=bool) & ~adata.obs["true_doublet"].to_numpy(
        dtype=bool
    )
    return utils.subset_cells(adata, keep)


def test_no_cd8_cells_stop_with_advice_that_fits_the_evidence():
    adata = _without_cd8(_qc_passed())
    with pytest.raises(InputDataError) as raised:
        gating.gate_cd8(adata, dataset="sim")
    message = str(raised.value)
    assert message.startswith("[dataset sim] no CD8 T cells after gating")
    assert re.search(r"\d+\.\d% of the cells have CD8A or CD8B detected", message)
    assert "Almost no cell expresses CD8A/CD8B" in message and "would be refused" in message
    assert "set cd8_sorted: true" not in message
    assert "The gating table is in the log." in message


def test_cd8_cells_failing_on_cd3_are_advised_cd8_sorted():
    adata = _qc_passed()
    adata = utils.subset_cells(adata, adata.obs["true_is_cd8"].to_numpy(dtype=bool))
    keep = np.ones(adata.n_vars)
    keep[adata.var_names.get_indexer(["CD3E", "CD3D"])] = 0  # a platform that misses CD3
    adata.X = sp.csr_matrix(adata.X @ sp.diags(keep.astype(np.float32)))
    utils.share_counts(adata)
    with pytest.raises(InputDataError) as raised:
        gating.gate_cd8(adata, dataset="sim")
    message = str(raised.value)
    assert "too few CD3E/CD3D+ cells" in message and "set cd8_sorted: true" in message


def test_cd8_sorted_without_cd8_expression_is_refused_with_numbers():
    adata = _without_cd8(_qc_passed())
    with pytest.raises(InputDataError) as raised:
        gating.gate_cd8(adata, cd8_sorted=True, dataset="sim")
    message = str(raised.value)
    positive = re.search(
        r"only ([\d,]+) of ([\d,]+) QC-passing cells \((\d+\.\d)%\) have CD8A or CD8B", message
    )
    assert positive, message
    assert int(positive[2].replace(",", "")) == adata.n_obs and float(positive[3]) < 20
    assert message.startswith("[dataset sim] the dataset file says cd8_sorted: true")
    assert "cd8_sorted: false" in message


def test_a_gate_that_passes_removes_old_evidence(tmp_path):
    evidence = gating.evidence_path(tmp_path / "gate.log")
    evidence.write_text("stale\n")
    table = gating.gate_cd8(_qc_passed(), cd8_sorted=True, evidence=evidence).tables["gating"]
    assert not evidence.exists()
    assert 0.5 < table.loc[0, "frac_cd8"] < 0.8  # mixed immune cells: flag believed, numbers kept


@pytest.mark.parametrize(
    "cd8_sorted, problem, decision",
    [
        (False, "no CD8 T cells after gating", "not CD8"),
        (True, "cd8_sorted: true, but only", "refused"),
    ],
)
def test_gate_script_keeps_the_evidence_beside_the_log_and_writes_no_output(
    tmp_path, monkeypatch, cd8_sorted, problem, decision
):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(root / "workflow/scripts"))
    source = tmp_path / "results/sim/qc.h5ad"
    utils.write_h5ad(_without_cd8(_qc_passed()), source)
    out = {
        "h5ad": tmp_path / "results/sim/cd8.h5ad",
        "table": tmp_path / "results/sim/tables/gating.tsv",
    }
    log = tmp_path / "logs/sim/gate.log"
    snakemake = SimpleNamespace(
        input=SimpleNamespace(h5ad=str(source)),
        output=SimpleNamespace(**{k: str(v) for k, v in out.items()}),
        params=SimpleNamespace(gate={}, cd8_sorted=cd8_sorted),
        wildcards=SimpleNamespace(dataset="sim"),
        log=[str(log)],
        threads=1,
    )
    with pytest.raises(SystemExit, match=problem):
        runpy.run_path(
            str(root / "workflow/scripts/gate.py"), init_globals={"snakemake": snakemake}
        )
    assert not any(path.exists() for path in out.values())  # nothing that looks finished
    evidence = tmp_path / "logs/sim/gate.gating.tsv"  # not a rule output: survives the failed job
    table = pd.read_csv(evidence, sep="\t")
    assert (table["decision"] == decision).all() and table["n_cells"].sum() > 500
    assert {"cluster", "n_cells", "frac_cd8", "frac_cd3", "reason"} <= set(table)
    logged = log.read_text()
    assert f"[dataset sim, file {source}] " in logged and problem in logged
    assert f"kept in {evidence}" in logged and "gating table:" in logged


@pytest.mark.parametrize(
    "cd8_sorted, value_type", [(False, "counts"), (True, "counts"), (False, "tpm")]
)
def test_gate_reading_counts_from_disk_matches_counts_in_memory(
    tmp_path, monkeypatch, cd8_sorted, value_type
):
    """The gate on the counts left on disk (`utils.backed_csr`: scores, markers, the first
    pass's HVG block and the CD8 cells read a chunk of rows at a time; TPM read whole for the
    first pass's normalisation) gives the obs, gating table and cd8.h5ad of the gate on X in
    memory, to the last bit."""
    import anndata as ad
    import h5py

    adata = simulated("human", 0)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)  # qc.h5ad's form: float32 CSR counts
    for key in [key for key in adata.layers if key is not None]:  # anndata lists X as None
        del adata.layers[key]
    utils.share_counts(adata)
    qc.run_qc(adata)
    if value_type == "tpm":  # TPM-like values, no counts
        adata = qc.passing_cells(adata)
        totals = np.asarray(adata.X.sum(axis=1)).ravel()
        del adata.layers["counts"]
        adata.X = sp.csr_matrix(sp.diags(1e6 / totals) @ adata.X, dtype=np.float32)
        adata.uns["texflow"]["value_type"] = "tpm"
        utils.write_h5ad(adata, tmp_path / "qc.h5ad")
    else:
        qc.write_passing_cells(adata, tmp_path / "qc.h5ad")
    # several chunks (not a multiple of the rows); UCell reads 2,000 rows at a time: two
    monkeypatch.setattr(utils, "COUNTS_CHUNK_ROWS", 333)
    monkeypatch.setattr(utils, "SUBSET_CHUNK_ROWS", 500)

    in_memory = utils.read_h5ad(tmp_path / "qc.h5ad")
    expected = gating.gate_cd8(in_memory, cd8_sorted=cd8_sorted)
    gating.write_cd8_cells(in_memory, tmp_path / "expected.h5ad")
    with utils.backed_csr(tmp_path / "qc.h5ad", without_layers=True) as counts:
        assert counts is not None
        on_disk = utils.read_h5ad(tmp_path / "qc.h5ad", layers=False, x=False)
        assert on_disk.X is None
        result = gating.gate_cd8(on_disk, cd8_sorted=cd8_sorted, counts=counts)
        gating.write_cd8_cells(on_disk, tmp_path / "cd8.h5ad", counts=counts)
    if not cd8_sorted:
        assert {"score_cd8_t", "gate_cluster"} <= set(on_disk.obs)
        assert on_disk.obs["gate_cluster"].nunique() > 5
    pd.testing.assert_frame_equal(on_disk.obs, in_memory.obs)
    pd.testing.assert_frame_equal(result.tables["gating"], expected.tables["gating"])
    assert result.notes == expected.notes
    assert repr(on_disk.uns) == repr(in_memory.uns)  # arrays inside
    with (
        h5py.File(tmp_path / "cd8.h5ad") as written,
        h5py.File(tmp_path / "expected.h5ad") as wanted,
    ):
        for name in ("data", "indices", "indptr"):
            got, want = written["X"][name][:], wanted["X"][name][:]
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    written, wanted = ad.read_h5ad(tmp_path / "cd8.h5ad"), ad.read_h5ad(tmp_path / "expected.h5ad")
    assert written.n_obs == int(in_memory.obs["is_cd8"].sum()) > 500
    pd.testing.assert_frame_equal(written.obs, wanted.obs)
    pd.testing.assert_frame_equal(written.var, wanted.var)
    assert repr(written.uns) == repr(wanted.uns)
