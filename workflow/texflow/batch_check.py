"""Do the clusters follow the samples? How much of the cluster assignment the sample explains.

A cluster made of one sample's cells is, until shown otherwise, a batch: the LCMV demo's two
clusters were its two replicates (silhouette 0.30, batch correction off). The report reads the
cluster stage's output (`obs["cluster"]`, `obs["sample"]` of final.h5ad) and, where the sample
explains most of the clustering, says so in the clustering section with the numbers and the fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency
from sklearn.metrics import adjusted_mutual_info_score

from .contract import N_CELLS, N_CLUSTERS

#: Adjusted mutual information between cluster and sample at or above which the page warns.
#: AMI is 0 when the clusters hold the samples as chance would and 1 when the clusters are the
#: samples; unlike Cramér's V it is corrected for chance, which matters on small demos with many
#: samples (Wu: 84 cells in 21 samples give V = 0.75 although no cluster is more than 80% one
#: sample; its AMI is 0.33). At 0.5 the sample explains at least half of the cluster assignment
#: beyond chance: that is a batch, not patients differing in state composition (every patient
#: contributes to several states). Measured on the default run: LCMV (two replicates, every
#: cluster 100% one) 0.66; Wu 0.33, Sade-Feldman 0.29 (patient = sample, some patient-specific
#: clusters); the simulated cohort 0.02.
AMI_WARN = 0.5
#: A cluster whose cells are at least this share one sample's is called "one sample's".
DOMINANT_SHARE = 0.9


def cluster_sample_association(
    obs: pd.DataFrame, *, cluster_key: str = "cluster", sample_key: str = "sample"
) -> dict[str, Any] | None:
    """Cramér's V and adjusted mutual information between cluster and sample, and per cluster
    the largest share of one sample among its cells.

    Cramér's V is bias-corrected (Bergsma 2013), so that a small table is not inflated. Returns
    None where the question does not arise: a column is missing, or fewer than two clusters or
    two samples have cells. `warn` is True when the AMI >= `AMI_WARN`.
    """
    if cluster_key not in obs or sample_key not in obs:
        return None
    frame = obs[[cluster_key, sample_key]].astype("string").dropna()
    frame = frame[(frame[sample_key].str.strip() != "") & (frame[cluster_key].str.strip() != "")]
    table = pd.crosstab(frame[cluster_key], frame[sample_key])
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None
    n = int(table.to_numpy().sum())
    chi2 = chi2_contingency(table.to_numpy(), correction=False)[0]
    rows, cols = table.shape
    phi2 = max(0.0, chi2 / n - (rows - 1) * (cols - 1) / max(n - 1, 1))
    rows_c = rows - (rows - 1) ** 2 / max(n - 1, 1)
    cols_c = cols - (cols - 1) ** 2 / max(n - 1, 1)
    denominator = min(rows_c - 1, cols_c - 1)
    cramers_v = math.sqrt(phi2 / denominator) if denominator > 0 else math.nan
    ami = float(adjusted_mutual_info_score(frame[sample_key], frame[cluster_key]))
    shares = table.div(table.sum(axis=1), axis=0)
    dominant = shares.max(axis=1)
    top = dominant.idxmax()
    return {
        N_CELLS: n,
        N_CLUSTERS: int(table.shape[0]),
        "n_samples": int(table.shape[1]),
        "cramers_v": float(np.clip(cramers_v, 0.0, 1.0)) if np.isfinite(cramers_v) else math.nan,
        "ami": ami,
        "max_share": float(dominant.max()),
        "max_share_cluster": str(top),
        "max_share_sample": str(shares.loc[top].idxmax()),
        "n_dominated": int((dominant >= DOMINANT_SHARE).sum()),
        "largest_sample_share": float(table.sum(axis=0).max() / n),  # the share if mixed
        "warn": bool(ami >= AMI_WARN),
    }


def cluster_sample_sentence(
    result: dict[str, Any] | None,
    *,
    batch_correction: bool | None = None,
    batch_key: str = "patient",
    has_patients: bool = True,
    silhouette: float = math.nan,
) -> str:
    """The page's sentence on the association ("" when there is nothing to say): the numbers,
    and where the clusters follow the samples, a warning with the fix (`cluster.batch_correction`
    with a `cluster.batch_key` the data have)."""
    if result is None:
        return ""
    numbers = (
        f"adjusted mutual information between cluster and sample {result['ami']:.2f}, "
        f"Cramér's V {result['cramers_v']:.2f}; {result['n_dominated']} of "
        f"{result[N_CLUSTERS]} clusters have at least {DOMINANT_SHARE:.0%} of their cells from "
        f"one sample (largest share: cluster {result['max_share_cluster']}, "
        f"{result['max_share']:.0%} from {result['max_share_sample']}, against "
        f"{result['largest_sample_share']:.0%} for the largest of the {result['n_samples']} "
        f"samples if they were mixed)"
    )
    if not result["warn"]:
        return (
            f"The sample explains less than half of the cluster assignment beyond chance "
            f"({numbers}; the page warns from an AMI of {AMI_WARN})."
        )
    context = []
    if np.isfinite(silhouette):
        context.append(f"silhouette {silhouette:.2f}")
    if batch_correction is not None:
        context.append(f"batch correction {'on' if batch_correction else 'off'}")
    key = batch_key if has_patients or batch_key != "patient" else "sample"
    if batch_correction:
        fix = (
            f"the correction by {batch_key} did not remove it: check cluster.batch_key, or "
            "whether the samples truly differ in cell states"
        )
    else:
        fix = (
            f"cluster.batch_correction: true (Harmony on the PCA by cluster.batch_key, here "
            f"{key}"
            + ("" if key == batch_key else f"; the default key, {batch_key}, is absent")
            + "), then compare the clusters and states with and without it"
        )
    return (
        f"Warning: the clusters follow the samples ({numbers}"
        + (f"; {', '.join(context)}" if context else "")
        + "). The clusters, and the states called on them, may be samples rather than cell "
        f"states: from an AMI of {AMI_WARN} the sample explains at least half of the cluster "
        f"assignment beyond chance, as a batch would. Fix: {fix}."
    )
