"""texflow: exhausted CD8+ T-cell states, IFN-I and lipid-peroxidation programs in public scRNA-seq.

All logic of the workflow lives in this package, one module per family of functions;
`workflow/scripts/` only adapts Snakemake's inputs and outputs to it.
"""

from importlib.metadata import PackageNotFoundError, version

from . import _numba_cache

# before scanpy is imported: its cached numba kernels bind to a cache directory at import time
_numba_cache.enable()

try:
    __version__ = version("texflow")
except PackageNotFoundError:  # used from a checkout without installation
    __version__ = "0.1.0"
