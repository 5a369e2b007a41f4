"""Time `texflow.simulation` at 20k and 100k cells (optionally 1M) and report peak memory.

Each size runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.
The numba kernel is compiled (or loaded from the cache) by a small warm-up run first.

Usage::

    .venv/bin/python benchmarks/simulate_speed.py                 # 20k and 100k cells, 20k genes
    .venv/bin/python benchmarks/simulate_speed.py --sizes 20000 100000 1000000 --genes 20000
    .venv/bin/python benchmarks/simulate_speed.py --write /tmp/sim.h5ad   # also time writing
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {workflow!r})
import numpy as np
from texflow.simulation import simulate
simulate(n_cells=200, n_genes={genes})  # warm-up: numba kernel compiled or loaded from cache
wall, cpu = time.perf_counter(), time.process_time()
adata = simulate(n_cells={cells}, n_genes={genes}, seed=0)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
detected = np.diff(adata.X.indptr)
result = dict(
    cells={cells}, genes={genes}, seconds=round(wall, 1), cpu_seconds=round(cpu, 1),
    peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    nnz=int(adata.X.nnz), median_genes_detected=float(np.median(detected)),
    median_umis=float(np.median(np.asarray(adata.X.sum(axis=1)).ravel())),
    zero_fraction=round(1 - adata.X.nnz / (adata.n_obs * adata.n_vars), 4),
)
if {write!r}:
    from texflow.utils import write_h5ad
    start = time.perf_counter()
    write_h5ad(adata, {write!r})
    result["write_seconds"] = round(time.perf_counter() - start, 1)
print(json.dumps(result))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--write", default="", help="also write each result to this .h5ad path")
    args = parser.parse_args(argv)
    print("cells\tgenes\tseconds\tcpu_s\tpeak_GB\tgenes/cell\tUMIs/cell\tzeros")
    for cells in args.sizes:
        code = _CHILD.format(
            workflow=str(WORKFLOW), cells=cells, genes=args.genes, write=args.write
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(f"{cells}\tfailed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        line = (
            f"{r['cells']}\t{r['genes']}\t{r['seconds']}\t{r['cpu_seconds']}\t{r['peak_rss_gb']}\t"
            f"{r['median_genes_detected']:.0f}\t{r['median_umis']:.0f}\t{r['zero_fraction']}"
        )
        if "write_seconds" in r:
            line += f"\twrite {r['write_seconds']} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
