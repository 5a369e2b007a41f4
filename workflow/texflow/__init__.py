"""texflow: exhausted CD8+ T-cell states, IFN-I and lipid-peroxidation programs in public scRNA-seq.

All logic of the workflow lives in this package, one module per family of functions;
`workflow/scripts/` only adapts Snakemake's inputs and outputs to it.

Importing texflow changes nothing outside it (numba, fast_array_utils, matplotlib and the
environment are left as they were). A process that runs texflow's stages (a rule script, a
benchmark) calls :func:`enable_numba_cache` first, before scanpy is imported.
"""

from importlib.metadata import PackageNotFoundError, version

from ._numba_cache import enable as enable_numba_cache

__all__ = ["enable_numba_cache"]

try:
    __version__ = version("texflow")
except PackageNotFoundError:  # used from a checkout without installation
    __version__ = "0.1.0"
