"""Make numba's on-disk cache work across rule processes for functions of sparse matrices.

Every texflow rule is a new Python process, and scanpy's numba kernels that take a scipy sparse
matrix (``mean_var``, ``_normalize_csr``, the Pearson-residual HVG kernel, ...) were compiled
anew in each of them: fast_array_utils creates their numba types with ``type()``, so the
classes' ``__module__`` is ``abc``, numba pickles them *by value* into the cache index key, and
no new process ever finds its entry (``NUMBA_DEBUG_CACHE=1``: "index loaded", then a new entry
saved, every process; 2.6 s for the first ``mean_var`` call alone, measured, see
benchmarks/README.md).

:func:`enable` gives those classes their real module, so they pickle by reference and the
cache hits. An index written that way cannot be read by a process without the fix
(``AttributeError: Can't get attribute 'csr_matrixType'``), so texflow keeps its compiled code
in a cache directory of its own (``<NUMBA_CACHE_DIR or ~/.cache>/texflow-numba``) that plain
scanpy processes never use. Both only happen when :func:`enable` is called before numba has
compiled anything through fast_array_utils; otherwise nothing changes.

Nothing here runs when texflow is imported: :func:`enable` (``texflow.enable_numba_cache``)
sets ``NUMBA_CACHE_DIR`` and changes fast_array_utils' classes, which a library import must not
do to its host process, so it is called where a process that runs texflow's stages starts
(``workflow/scripts/_texflow_path.py``, the benchmarks). A pytest session never gets the fix:
fast_array_utils' pytest plugin imports its numba types before any conftest runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

#: Sub-directory of the numba cache that only processes with the type fix use.
CACHE_SUBDIR = "texflow-numba"

#: umap modules whose numba kernels are compiled without a cache (scanpy's kNN connectivities
#: and UMAP layout): ~5 s in each of the gate, cluster and trajectory processes (measured).
UNCACHED_MODULES = ("umap.umap_", "umap.layouts")

#: Packages that compile numba kernels with explicit signatures, without a cache, as they are
#: imported (umap imports pynndescent): `import pynndescent` took 10.7 s in every process that
#: builds a kNN graph, 3.8 s with the kernels cached (measured).
EAGER_PACKAGES = ("pynndescent", "umap")

#: The versions whose internals this module reaches into, as pinned in requirements.lock:
#: fast_array_utils' ``_plugins.numba_sparse.TYPES``; numba's ``core.config.CACHE_DIR``,
#: ``core.decorators._jit``, ``core.caching.NullCache`` and a dispatcher's ``_cache``; the
#: module-level dispatchers of umap and pynndescent. texflow's one adapter to other libraries'
#: internals (tests/unit/test_public_apis.py); with any other version installed, :func:`enable`
#: does nothing (numba then compiles as it would without texflow: slower, same results), and
#: tests/unit/test_numba_cache.py fails until these internals are checked and the pins moved.
TESTED_VERSIONS = {
    "numba": "0.68.1",
    "fast-array-utils": "1.5.1",
    "umap-learn": "0.5.12",
    "pynndescent": "0.6.0",
}

_enabled = False

#: Modules whose import creates cached numba dispatchers bound to the cache directory.
_BINDING_MODULES = ("fast_array_utils._plugins.numba_sparse", "scanpy")


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """texflow's own numba cache directory under ``NUMBA_CACHE_DIR`` (or the user cache)."""
    environ = os.environ if environ is None else environ
    base = environ.get("NUMBA_CACHE_DIR") or Path(
        environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    )
    base = Path(base)
    return base if base.name == CACHE_SUBDIR else base / CACHE_SUBDIR


def untested_versions() -> list[str]:
    """The packages of `TESTED_VERSIONS` installed in another version than the tested one."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return [name for name, tested in TESTED_VERSIONS.items() if installed(name) != tested]


def enable() -> bool:
    """Point numba at texflow's cache directory and make the sparse types picklable by name.

    Returns whether it did; it does nothing (and says so at debug level) when a module that
    binds cached numba functions to a directory was imported before, and nothing (with a
    warning) when a package whose internals it touches is not the version in `TESTED_VERSIONS`.
    """
    early = [name for name in _BINDING_MODULES if name in sys.modules]
    if early:
        logger.debug("numba cache fix not applied: %s imported before texflow", ", ".join(early))
        return False
    untested = untested_versions()
    if untested:
        logger.warning(
            "numba cache fix not applied: it reaches into internals of %s, tested only with the "
            "versions in requirements.lock (%s); kernels are compiled in every process instead",
            ", ".join(untested),
            ", ".join(f"{name}=={TESTED_VERSIONS[name]}" for name in untested),
        )
        return False
    global _enabled
    directory = cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = str(directory)
    if "numba" in sys.modules:  # numba read its configuration already
        from numba.core import config

        config.CACHE_DIR = str(directory)
    _enabled = True
    try:
        from fast_array_utils._plugins import numba_sparse
    except ImportError:  # fast_array_utils without its numba plugin: nothing to fix
        return True
    for numba_type in numba_sparse.TYPES:
        numba_type.__module__ = numba_sparse.__name__
        numba_type.__qualname__ = numba_type.__name__
        setattr(numba_sparse, numba_type.__name__, numba_type)
    return True


def cache_umap_kernels() -> None:
    """Give umap's uncached numba kernels an on-disk cache in texflow's cache directory.

    Call before scanpy's neighbours or UMAP; a no-op unless `enable` took effect (the cache
    then lives where only texflow processes look) or once done.
    """
    import importlib

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    if not _enabled:
        return
    with _eager_kernels_cached(EAGER_PACKAGES):
        modules = [importlib.import_module(name) for name in UNCACHED_MODULES]
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, CPUDispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()


@contextlib.contextmanager
def _eager_kernels_cached(packages: tuple[str, ...]):
    """While importing `packages`, give their numba kernels ``cache=True``.

    A kernel declared with explicit signatures is compiled as its module is imported, and
    without ``cache=True`` numba never looks on disk for it. Patching numba's decorator factory
    for the duration of the import makes those compilations load from (and fill) texflow's
    cache directory. Kernels that cannot be cached (pynndescent's ``nn_descent`` uses dynamic
    globals) are compiled as before; numba's warning that says so is silenced. A no-op for a
    package imported already.
    """
    from numba.core import decorators
    from numba.core.errors import NumbaWarning

    if all(name in sys.modules for name in packages):
        yield
        return
    original = decorators._jit

    def with_cache(sigs, locals, target, cache, targetoptions, **dispatcher_args):
        def decorate(func):
            own = (getattr(func, "__module__", "") or "").split(".")[0] in packages
            return original(sigs, locals, target, cache or own, targetoptions, **dispatcher_args)(
                func
            )

        return decorate

    warnings.filterwarnings(
        "ignore", message="Cannot cache compiled function", category=NumbaWarning
    )
    decorators._jit = with_cache
    try:
        yield
    finally:
        decorators._jit = original
