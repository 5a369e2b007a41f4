"""texflow: exhausted CD8+ T-cell states, IFN-I and lipid-peroxidation programs in public scRNA-seq.

All logic of the workflow lives in this package, one module per family of functions;
`workflow/scripts/` only adapts Snakemake's inputs and outputs to it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("texflow")
except PackageNotFoundError:  # used from a checkout without installation
    __version__ = "0.1.0"
