"""Start a rule process: `workflow/` on sys.path, numba's cache for texflow, a file-only backend.

Imported first by every script, before texflow's stages import scanpy:

- `workflow/` goes on sys.path so the scripts import the texflow package under any executor;
- texflow's numba cache is switched on (:func:`texflow.enable_numba_cache`: sparse-matrix
  kernels compiled once, then loaded by every later rule process; it must come before scanpy
  is imported);
- matplotlib draws with Agg: a rule writes figures to files and never opens a window, under
  any executor (the Makefile's ``MPLBACKEND=Agg`` is not set by a cluster job or a bare
  ``snakemake`` call).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import texflow

texflow.enable_numba_cache()
os.environ["MPLBACKEND"] = "Agg"
if "matplotlib" in sys.modules:  # imported before this module: its backend may be chosen already
    import matplotlib

    matplotlib.use("Agg")
