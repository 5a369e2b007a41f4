"""Clustering of QC-passing CD8 cells against the simulated states; tiny and too-small data."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from texflow import cluster, embedding, features, qc
from texflow.errors import InputDataError

from tests.qc_fixtures import simulated


def _cd8(organism, seed):
    adata = simulated(organism, seed)
    qc.run_qc(adata, params=qc.QCParams(doublets=False))
    adata = qc.passing_cells(adata)
    keep = (adata.obs["true_is_cd8"] & ~adata.obs["true_doublet"]).to_numpy()
    return adata[keep].copy()


@pytest.mark.parametrize("organism,seed", [("human", 0), ("human", 1), ("mouse", 2)])
def test_clusters_match_true_states(organism, seed):
    adata = _cd8(organism, seed)
    result = cluster.run_clustering(adata)
    sweep = result.tables["resolution_sweep"]
    step = "cluster.batch_correction"
    assert result.notes == {step: adata.uns["texflow"]["skipped"][step]}
    # measured ARI 0.83-0.85 (15 PCs, resolution 1.0); Tex_int is the hard, transitional state
    assert adjusted_rand_score(adata.obs["true_state"], adata.obs["cluster"]) >= 0.8
    assert sweep["chosen"].sum() == 1 and len(sweep) == 6
    assert adata.uns["texflow"]["x"] == "lognorm"
    assert adata.X.dtype == np.float32 and "counts" in adata.layers
    assert "X_umap" in adata.obsm
    assert adata.obs["cluster"].dtype.name == "category"


def test_clustering_keeps_the_counts_and_writes_their_lognorm(tmp_path):
    """X (log-normalised) and layers["counts"] share one sparsity pattern in memory
    (`features.lognormalise_counts`): the counts stay the input's, X is their lognorm, in
    memory and after a round trip through the stage's file."""
    from texflow.utils import read_h5ad, write_h5ad

    adata = _cd8("human", 0)
    counts = adata.X.copy()
    cluster.run_clustering(adata)
    write_h5ad(adata, tmp_path / "clustered.h5ad")
    for data in (adata, read_h5ad(tmp_path / "clustered.h5ad")):
        assert (data.layers["counts"] != counts).nnz == 0
        np.testing.assert_array_equal(data.layers["counts"].indices, counts.indices)
        np.testing.assert_array_equal(
            data.X.toarray(), features.lognormalise_counts(counts.copy()).toarray()
        )


def test_tiny_dataset_gets_capped_parameters():
    adata = _cd8("mouse", 0)[:40].copy()
    cluster.run_clustering(adata)
    used = adata.uns["texflow"]["cluster"]
    assert used["n_neighbors"] <= 8 and used["n_pcs"] <= 15


def test_too_few_cells_is_a_clear_error():
    with pytest.raises(InputDataError, match="fewer than the 20"):
        cluster.run_clustering(_cd8("human", 0)[:10].copy())


def test_pearson_residual_hvgs_are_scanpys():
    """texflow's O(genes)-memory residual variances and HVG pick equal scanpy's flavour."""
    import anndata as ad
    import scanpy as sc
    from scipy import sparse

    rng = np.random.default_rng(3)
    depth = rng.lognormal(7, 0.5, 800)[:, None]
    profile = rng.lognormal(-7, 1.5, 400)[None, :]
    counts = rng.negative_binomial(5, 5 / (5 + depth * profile / profile.sum() * 400)).astype(
        np.float32
    )
    counts[:, :3] = 0  # genes detected in no cell
    counts[rng.random(counts.shape) < 0.05] = 0
    matrix = sparse.csr_matrix(counts)
    matrix.data[:50] = 0  # stored zeros
    expected = ad.AnnData(matrix.copy())
    sc.experimental.pp.highly_variable_genes(expected, flavor="pearson_residuals", n_top_genes=100)
    ours = features.pearson_residual_variances(matrix)
    assert np.isnan(ours[:3]).all()
    # scanpy takes the totals of float32 counts in float32 (its mu is float32-rounded)
    np.testing.assert_allclose(
        ours[3:], expected.var["residual_variances"].to_numpy()[3:], rtol=1e-6
    )

    adata = ad.AnnData(matrix.copy())
    adata.layers["counts"] = adata.X
    embedding.select_hvgs(adata, value_type="counts", n_top_genes=100)
    assert adata.var["highly_variable"].equals(expected.var["highly_variable"])


def test_lognormalised_counts_are_scanpys():
    import anndata as ad
    import scanpy as sc
    from scipy import sparse

    rng = np.random.default_rng(4)
    counts = sparse.csr_matrix(rng.poisson(0.8, (300, 120)).astype(np.float32))
    counts[5] = 0  # a cell without counts
    expected = ad.AnnData(counts.copy())
    sc.pp.normalize_total(expected)
    sc.pp.log1p(expected)
    before = counts.copy()
    ours = features.lognormalise_counts(counts)
    assert ours.dtype == np.float32
    # the counts are left as they were; the result has their sparsity pattern
    assert (counts != before).nnz == 0 and counts.dtype == np.float32
    np.testing.assert_array_equal(ours.indices, before.indices)
    np.testing.assert_array_equal(ours.indptr, before.indptr)
    np.testing.assert_allclose(ours.toarray(), expected.X.toarray(), rtol=1e-6, atol=1e-7)
    columns = np.array([3, 7, 50])
    for given in (counts, counts.astype(np.int64)):  # float32 or integer counts
        subset = features.lognormalise_counts(given, columns=columns)
        assert subset.dtype == np.float32
        np.testing.assert_allclose(
            subset.toarray(), expected.X[:, columns].toarray(), rtol=1e-6, atol=1e-7
        )
    assert (counts != before).nnz == 0


@pytest.mark.parametrize("n_top_genes", [None, 60])
def test_seurat_hvgs_are_scanpys(n_top_genes):
    """texflow's O(genes)-memory Seurat dispersions and HVG pick equal scanpy's flavour."""
    import anndata as ad
    import scanpy as sc
    from scipy import sparse

    rng = np.random.default_rng(5)
    depth = rng.lognormal(7, 0.5, 700)[:, None]
    profile = rng.lognormal(-7, 1.5, 500)[None, :]
    counts = rng.negative_binomial(3, 3 / (3 + depth * profile / profile.sum() * 300)).astype(
        np.float32
    )
    counts[:, :4] = 0  # genes never detected
    counts[:2, 4] = 1  # a gene with a single, sparse profile
    logged = features.lognormalise_counts(sparse.csr_matrix(counts))
    expected = sc.pp.highly_variable_genes(
        ad.AnnData(logged.copy()), flavor="seurat", n_top_genes=n_top_genes, inplace=False
    )
    ours = features.seurat_dispersions(logged)
    for column in ("means", "dispersions", "dispersions_norm"):
        np.testing.assert_allclose(
            ours[column].to_numpy(),
            expected[column].to_numpy(),
            rtol=1e-5,
            atol=1e-6,
            equal_nan=True,
            err_msg=column,
        )
    picked = features.seurat_highly_variable(logged, n_top_genes=n_top_genes)
    np.testing.assert_array_equal(picked, expected["highly_variable"].to_numpy())
    # dense input gives the same
    np.testing.assert_array_equal(
        features.seurat_highly_variable(logged.toarray(), n_top_genes=n_top_genes), picked
    )
    # a gene mask bins and picks as if the other genes had been sliced away
    genes = np.ones(logged.shape[1], bool)
    genes[::3] = False
    sliced = sc.pp.highly_variable_genes(
        ad.AnnData(logged[:, genes].copy()), flavor="seurat", n_top_genes=n_top_genes, inplace=False
    )
    masked = features.seurat_highly_variable(logged, n_top_genes=n_top_genes, genes=genes)
    assert not masked[~genes].any()
    np.testing.assert_array_equal(masked[genes], sliced["highly_variable"].to_numpy())


@pytest.mark.parametrize("dense", [False, True])
def test_pca_is_scanpys_arpack(dense, monkeypatch):
    """The block-covariance PCA gives scanpy's default (ARPACK) components, signs included."""
    import anndata as ad
    import scanpy as sc
    from sklearn.utils.extmath import svd_flip

    adata = _cd8("human", 0)
    embedding.normalise(adata, value_type="counts")
    embedding.select_hvgs(adata, value_type="counts", n_top_genes=300, flavor="pearson_residuals")
    if dense:
        adata.X = adata.X.toarray()
    expected = ad.AnnData(adata.X.copy(), var=adata.var[["highly_variable"]].copy())
    sc.pp.pca(expected, n_comps=15, mask_var="highly_variable", svd_solver="arpack")
    monkeypatch.setattr(embedding, "PCA_BLOCK_ROWS", 97)  # many blocks, the last one short
    embedding.pca(adata, n_comps=15)
    assert adata.obsm["X_pca"].dtype == np.float32 and adata.obsm["X_pca"].shape == (
        adata.n_obs,
        15,
    )
    scale = np.abs(expected.obsm["X_pca"]).max()
    np.testing.assert_allclose(adata.obsm["X_pca"], expected.obsm["X_pca"], atol=1e-4 * scale)
    # ARPACK iterates in the data's float32 (loadings off by up to 3e-5 on close eigenvalues);
    # the float64 eigenvectors of the exact covariance are matched ten times closer
    np.testing.assert_allclose(adata.varm["PCs"], expected.varm["PCs"], atol=1e-4)
    hvg = adata.var["highly_variable"].to_numpy()
    assert not adata.varm["PCs"][~hvg].any()
    centred = np.asarray(
        adata.X[:, hvg].todense() if not dense else adata.X[:, hvg], dtype=np.float64
    )
    centred -= centred.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    _, exact = svd_flip(None, vectors[:, ::-1][:, :15].T.copy(), u_based_decision=False)
    np.testing.assert_allclose(adata.varm["PCs"][hvg], exact.T, atol=1e-5)
    for key in ("variance", "variance_ratio"):
        np.testing.assert_allclose(
            adata.uns["pca"][key], expected.uns["pca"][key], rtol=1e-4, err_msg=key
        )
    assert adata.uns["pca"]["params"] == expected.uns["pca"]["params"]


def test_pca_rejects_more_components_than_the_data_holds():
    adata = _cd8("human", 0)[:12].copy()
    adata.var["highly_variable"] = True
    with pytest.raises(ValueError, match="n_comps=12 must be in"):
        embedding.pca(adata, n_comps=12)


def test_leiden_is_scanpys_with_or_without_a_shared_graph():
    import scanpy as sc

    adata = _cd8("human", 0)
    embedding.normalise(adata, value_type="counts")
    embedding.select_hvgs(adata, value_type="counts", n_top_genes=500, flavor="pearson_residuals")
    embedding.embed(adata, n_pcs=15, n_neighbors=15)
    graph = embedding.knn_igraph(adata)
    # scanpy's edges (its graph from a list of pairs), in its order (nonzero()), and weights
    import igraph

    adjacency = adata.obsp["connectivities"]
    sources, targets = adjacency.nonzero()
    expected = igraph.Graph(
        n=adata.n_obs,
        edges=list(zip(sources.tolist(), targets.tolist(), strict=True)),
        directed=False,
    )
    assert graph.get_edgelist() == expected.get_edgelist()
    assert graph.es["weight"] == np.asarray(adjacency[sources, targets]).ravel().tolist()
    for resolution in (0.4, 1.0, 2.0):
        sc.tl.leiden(
            adata,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=3,
            key_added="scanpy",
        )
        embedding.leiden(adata, resolution=resolution, seed=3, key_added="own")
        embedding.leiden(adata, resolution=resolution, seed=3, key_added="shared", graph=graph)
        for key in ("own", "shared"):
            assert adata.obs[key].equals(adata.obs["scanpy"]), (key, resolution)
            assert adata.uns[key]["modularity"] == adata.uns["scanpy"]["modularity"]


def test_umap_beside_is_the_umap_of_this_process():
    """threads=2 lays the UMAP out in a worker process (beside the cluster stage's sweep): the
    same layout, bit for bit, and the same uns record as ``sc.tl.umap`` here (threads=1)."""
    adata = _cd8("human", 0)
    embedding.normalise(adata, value_type="counts")
    embedding.select_hvgs(adata, value_type="counts", n_top_genes=500, flavor="pearson_residuals")
    embedding.embed(adata, n_pcs=15, n_neighbors=15, seed=0)
    runs = {}
    for threads in (1, 2):
        work = adata.copy()
        umap = embedding.UmapBeside(threads=threads)
        assert (umap._process is None) == (threads == 1)
        umap.start(work, seed=0)
        umap.finish(work)
        runs[threads] = work
    np.testing.assert_array_equal(runs[1].obsm["X_umap"], runs[2].obsm["X_umap"])
    assert runs[1].obsm["X_umap"].dtype == runs[2].obsm["X_umap"].dtype
    assert runs[1].uns["umap"] == runs[2].uns["umap"]


def test_clustering_on_two_threads_is_the_clustering_on_one():
    runs = {}
    for threads in (1, 2):
        adata = _cd8("mouse", 0)[:300].copy()
        sweep = cluster.run_clustering(adata, threads=threads).tables["resolution_sweep"]
        runs[threads] = adata, sweep
    (one, sweep_one), (two, sweep_two) = runs[1], runs[2]
    np.testing.assert_array_equal(one.obsm["X_umap"], two.obsm["X_umap"])
    assert list(one.uns) == list(two.uns) and one.uns["umap"] == two.uns["umap"]
    assert one.obs["cluster"].equals(two.obs["cluster"]) and sweep_one.equals(sweep_two)


def _counts_on_disk(tmp_path):
    """Float32 CSR counts with the awkward cases (a gene never detected, stored zeros, a row
    with unsorted indices), in memory and written to an h5ad. (No cell without counts: its
    residuals are 0/0, and QC has removed such cells before any stage computes them.)"""
    import anndata as ad
    from scipy import sparse
    from texflow.utils import write_h5ad

    rng = np.random.default_rng(7)
    dense = rng.negative_binomial(2, 0.6, (403, 150)).astype(np.float32)
    dense[:, 11] = 0  # a gene never detected
    counts = sparse.csr_matrix(dense)
    counts.data[[3, 40, 400]] = 0  # stored zeros: stored, not detected
    start, stop = counts.indptr[30], counts.indptr[31]
    counts.indices[start:stop] = counts.indices[start:stop][::-1].copy()  # unsorted row
    counts.data[start:stop] = counts.data[start:stop][::-1].copy()
    counts.has_sorted_indices = False
    write_h5ad(ad.AnnData(counts), tmp_path / "counts.h5ad")
    return counts


def test_count_passes_read_in_chunks_from_disk_are_one_pass_to_the_bit(tmp_path):
    """Totals, Pearson residual variances, the log-normalised HVG block and `lognorm_hvgs`,
    read 37 rows at a time from disk (`utils.backed_csr`), equal one pass over the matrix in
    memory to the last bit (the sums accumulate in row order in the same float64 arrays), and
    the block is scipy's column subset of the full log-normalised matrix."""
    import anndata as ad
    import pandas as pd
    from texflow.utils import backed_csr

    counts = _counts_on_disk(tmp_path)
    one_pass = {"chunk_rows": counts.shape[0]}
    cells, genes = features.csr_sums(counts.data, counts.indices, counts.indptr, counts.shape[1])
    variances = features.pearson_residual_variances(counts, **one_pass)
    columns = np.array([0, 5, 11, 40, 41, 149])
    block = features.lognormalise_counts(counts, columns=columns, **one_pass)
    full = features.lognormalise_counts(counts)[:, columns]
    np.testing.assert_array_equal(block.data, full.data)
    np.testing.assert_array_equal(block.indices, full.indices)
    np.testing.assert_array_equal(block.indptr, full.indptr)
    reference = ad.AnnData(counts.copy())
    reference.layers["counts"] = reference.X
    embedding.select_hvgs(reference, value_type="counts", n_top_genes=30)
    with backed_csr(tmp_path / "counts.h5ad") as backed:
        assert backed is not None
        totals = features.count_totals(backed, chunk_rows=37)
        np.testing.assert_array_equal(totals.cells, cells)
        np.testing.assert_array_equal(totals.genes, genes)
        np.testing.assert_array_equal(totals.detected, features.cells_detected_per_gene(counts))
        np.testing.assert_array_equal(totals.stored, np.bincount(counts.indices, minlength=150))
        assert totals.stored.sum() > totals.detected.sum()  # the stored zeros
        streamed = features.pearson_residual_variances(backed, chunk_rows=37)
        np.testing.assert_array_equal(streamed, variances)  # NaN for the gene never detected
        assert np.isnan(streamed[11]) and np.isfinite(np.delete(streamed, 11)).all()
        subset = features.lognormalise_counts(backed, columns=columns, chunk_rows=37)
        for name in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(subset, name), getattr(block, name))
        light = ad.AnnData(
            obs=pd.DataFrame(index=reference.obs_names),
            var=pd.DataFrame(index=reference.var_names),
        )
        hvgs = embedding.lognorm_hvgs(light, counts=backed, n_top_genes=30, chunk_rows=37)
    pd.testing.assert_frame_equal(light.var, reference.var[light.var.columns])
    wanted = np.flatnonzero(reference.var["highly_variable"])
    assert list(hvgs.var_names) == list(reference.var_names[wanted])
    expected = features.lognormalise_counts(counts)[:, wanted]
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(hvgs.X, name), getattr(expected, name))


def test_clustering_counts_on_disk_is_the_clustering_in_memory(tmp_path, monkeypatch):
    """The cluster stage with its counts read from disk in blocks of rows (`streams_counts`:
    the HVG block alone in memory, `write_clustered` writing X and the counts block by block)
    writes the file the in-memory stage writes: same values to the bit, same annotations."""
    import h5py
    from texflow import utils
    from texflow.utils import backed_csr, read_h5ad, write_h5ad

    monkeypatch.setattr(utils, "COUNTS_CHUNK_ROWS", 37)  # several blocks of rows
    path = tmp_path / "cd8.h5ad"
    cells = _cd8("mouse", 0)[:400].copy()
    cells.X = cells.X.astype(np.float32)  # as ingest writes counts
    write_h5ad(utils.share_counts(cells), path)
    in_memory = read_h5ad(path)
    sweep_memory = cluster.run_clustering(in_memory).tables["resolution_sweep"]
    write_h5ad(in_memory, tmp_path / "memory.h5ad")
    on_disk = read_h5ad(path, layers=False, x=False)
    params = cluster.ClusterParams()
    assert cluster.streams_counts(value_type="counts", params=params)
    with backed_csr(path, without_layers=True) as counts:
        totals = features.count_totals(counts)
        result = cluster.run_clustering(on_disk, params=params, counts=counts, totals=totals)
        cluster.write_clustered(on_disk, tmp_path / "disk.h5ad", counts=counts, totals=totals)
    assert result.tables["resolution_sweep"].equals(sweep_memory)
    memory, disk = (read_h5ad(tmp_path / f"{name}.h5ad") for name in ("memory", "disk"))
    for name in ("data", "indices", "indptr"):
        for matrix in (lambda a: a.X, lambda a: a.layers["counts"]):
            np.testing.assert_array_equal(
                getattr(matrix(disk), name), getattr(matrix(memory), name)
            )
    assert disk.X.dtype == memory.X.dtype == np.float32
    assert disk.obs.equals(memory.obs) and disk.var.equals(memory.var)
    for key in ("X_pca", "X_umap"):
        np.testing.assert_array_equal(disk.obsm[key], memory.obsm[key])
    np.testing.assert_array_equal(disk.varm["PCs"], memory.varm["PCs"])
    for key in ("distances", "connectivities"):
        assert (disk.obsp[key] != memory.obsp[key]).nnz == 0
    np.testing.assert_equal(disk.uns["texflow"], memory.uns["texflow"])  # nested arrays
    np.testing.assert_array_equal(disk.uns["pca"]["variance"], memory.uns["pca"]["variance"])
    assert set(disk.uns) == set(memory.uns)
    with h5py.File(tmp_path / "disk.h5ad") as file:  # the counts are a layer, not X's shorthand
        assert "counts" in file["layers"]


def test_clustering_reads_other_values_whole():
    assert not cluster.streams_counts(value_type="log_tpm", params=cluster.ClusterParams())
    seurat = cluster.ClusterParams.from_config({"hvg_flavor": "seurat"})
    assert not cluster.streams_counts(value_type="counts", params=seurat)
    adata = _cd8("mouse", 0)[:100].copy()
    with pytest.raises(ValueError, match="Pearson-residual HVGs"):
        cluster.run_clustering(adata, params=seurat, counts=adata.X)
