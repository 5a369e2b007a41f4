"""texflow uses other libraries through their public APIs, and importing it changes nothing.

Private names of other packages (``from X._y``, ``import X._y``, ``X._y``, ``obj._y(...)``) are
allowed in one adapter module only, `texflow._numba_cache`, whose versions are pinned
(tests/unit/test_numba_cache.py). Importing texflow and every one of its modules leaves numba's
configuration, fast_array_utils' types, os.environ and matplotlib's backend as a process that
imports the same libraries without texflow has them.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOW = Path(__file__).resolve().parents[2] / "workflow"
PACKAGE = WORKFLOW / "texflow"
#: The one module allowed to touch other libraries' internals (pinned to the lock's versions).
ADAPTERS = {PACKAGE / "_numba_cache.py"}


#: Public names that start with an underscore: the documented namedtuple methods and attributes
#: (https://docs.python.org/3/library/collections.html#collections.somenamedtuple._asdict).
PUBLIC_UNDERSCORED = {"_asdict", "_replace", "_make", "_fields", "_field_defaults"}


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in PUBLIC_UNDERSCORED


def _own_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Every name texflow defines: functions, classes, assigned names and attributes, modules."""
    names = {path.stem for path in PACKAGE.rglob("*.py")}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return names


def private_uses(path: Path, tree: ast.Module, own: set[str]) -> list[str]:
    """``file:line: what`` for each private name of another package that `tree` uses.

    Imports: a non-relative ``from X._y import z``, ``from X import _z``, ``import X._y``.
    Attributes: ``something._y`` where ``_y`` is no name texflow defines itself (so ``self._x``
    and texflow's own private helpers pass; pygam's ``gam._P()`` does not).
    """
    found = []
    where = f"{path.relative_to(WORKFLOW)}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "texflow":
                continue
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            found += [
                f"{where}:{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if _private(alias.name)
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{where}:{node.lineno}: import {alias.name}"
                for alias in node.names
                if any(_private(part) for part in alias.name.split("."))
            ]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.append(f"{where}:{node.lineno}: .{node.attr}")
    return found


def _trees() -> dict[Path, ast.Module]:
    return {
        path: ast.parse(path.read_text(), filename=str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_no_private_name_of_another_package_outside_the_adapter():
    trees = _trees()
    own = _own_names(trees)
    found = [
        use
        for path, tree in trees.items()
        if path not in ADAPTERS
        for use in private_uses(path, tree, own)
    ]
    assert not found, (
        "private names of other packages (use their public API, or move the code "
        "into the one adapter module, texflow/_numba_cache.py):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "source,expected",
    [
        ("from scanpy._utils import get_igraph_from_adjacency", 1),
        ("from scanpy._utils.random import set_igraph_random_state", 1),
        ("import fast_array_utils._plugins.numba_sparse", 1),
        ("from numba.core.decorators import _jit", 1),
        ("def f(gam):\n    return gam._P(), gam._modelmat(0)", 2),
        ("import numpy as np\nx = np.random._pickle", 1),
        ("from . import _numba_cache\nfrom ._numba_cache import cache_umap_kernels", 0),
        (
            (
                "class A:\n    def __init__(self):\n        self._rng = 0\n    def f(self):\n"
                "        return self._rng, self.__class__"
            ),
            0,
        ),
        ("from scanpy import tl\nimport igraph\nigraph.Graph()", 0),
    ],
)
def test_the_check_finds_private_names(source, expected):
    """The check above can fail: it finds the private uses texflow had (issue 18)."""
    own = {"_numba_cache", "cache_umap_kernels", "_rng", "__init__"}
    tree = ast.parse(source)
    assert len(private_uses(PACKAGE / "example.py", tree, own)) == expected


# the state a library import could change, printed as JSON
STATE = """
import json, os, sys, warnings
import matplotlib, numba
from numba.core import config, decorators
from fast_array_utils._plugins import numba_sparse
print(json.dumps({
    "environ": dict(os.environ),
    "numba_cache_dir": config.CACHE_DIR,
    "numba_jit": decorators._jit.__qualname__ + " " + decorators._jit.__module__,
    "fast_array_utils_types": sorted(f"{t.__module__}:{t.__qualname__}"
                                     for t in numba_sparse.TYPES),
    "matplotlib_backend": matplotlib.get_backend(auto_select=False),
    "warnings_filters": sorted({repr((f[0], f[1] and f[1].pattern, f[2].__qualname__, f[3]))
                                for f in warnings.filters}),
    "modules": [m for m in sys.modules if m.split(".")[0] not in ("texflow", "__main__")],
}))
"""

# every module of texflow, imported in the order of its files
IMPORT_TEXFLOW = """
import importlib, pkgutil
import texflow
for module in pkgutil.walk_packages(texflow.__path__, "texflow."):
    importlib.import_module(module.name)
"""


PLAIN = """
import importlib
for name in %r:
    try:
        importlib.import_module(name)
    except ImportError:  # an alias a package put into sys.modules, not an importable module
        pass
"""


def _state(code: str, tmp_path: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    env |= {"PYTHONPATH": str(WORKFLOW), "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code + STATE],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_texflow_changes_nothing_outside_it(tmp_path):
    imported = _state(IMPORT_TEXFLOW, tmp_path)
    # a process that imports the same modules in the same order, texflow's excepted
    plain = _state(PLAIN % imported["modules"], tmp_path)
    assert imported["environ"] == plain["environ"]
    for key in (
        "numba_cache_dir",
        "numba_jit",
        "fast_array_utils_types",
        "matplotlib_backend",
        "warnings_filters",
    ):
        assert imported[key] == plain[key], key
    # and what texflow's import would have changed, had it switched the cache on or forced Agg
    assert imported["numba_cache_dir"] == str(tmp_path)
    assert "texflow-numba" not in imported["environ"]["NUMBA_CACHE_DIR"]
    assert imported["matplotlib_backend"] is None  # not chosen: no matplotlib.use at import
