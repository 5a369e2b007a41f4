"""texflow's numba cache: sparse-matrix kernels compiled once, then loaded by the next process,
in a directory that plain scanpy processes never share."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOW = Path(__file__).resolve().parents[2] / "workflow"

# one kernel that takes a scipy sparse matrix through fast_array_utils' numba types
NORMALISE = """
import numpy as np
from scipy import sparse
{imports}
import scanpy as sc
x = sparse.random(200, 50, density=0.3, format="csr", dtype=np.float32, random_state=0)
sc.pp.normalize_total(sc.AnnData(x))
"""


# what a rule script does first (workflow/scripts/_texflow_path.py); importing texflow alone
# does not
ENABLE = "import texflow\ntexflow.enable_numba_cache()"


def run_python(code: str, cache: Path) -> str:
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(cache),
        "NUMBA_DEBUG_CACHE": "1",
        "PYTHONPATH": str(WORKFLOW),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def kernel_lines(output: str, name: str = "_normalize_csr") -> list[str]:
    return [line for line in output.splitlines() if name in line and "[cache]" in line]


@pytest.fixture(scope="module")
def normalise_runs(tmp_path_factory) -> dict:
    """In one fresh cache: the kernel run by two texflow processes one after the other, then by
    a plain scanpy process (the .nbi files are listed before it). Shared by the two tests below:
    each process costs 3-6 s of imports and compiling."""
    cache = tmp_path_factory.mktemp("normalise_cache")
    code = NORMALISE.format(imports=ENABLE)
    runs = {"cache": cache, "first": run_python(code, cache), "second": run_python(code, cache)}
    runs["nbi_after_texflow"] = sorted(cache.rglob("*.nbi"))
    runs["plain"] = run_python(NORMALISE.format(imports=""), cache)  # crashes on a patched index
    return runs


def test_sparse_kernel_is_loaded_from_cache_by_the_next_process(normalise_runs):
    first = kernel_lines(normalise_runs["first"])
    second = kernel_lines(normalise_runs["second"])
    assert any("data saved" in line for line in first), first
    assert any("data loaded" in line for line in second), second
    assert not any("data saved" in line for line in second), second
    # written under texflow's own sub-directory, not the shared one
    written = normalise_runs["nbi_after_texflow"]
    assert [p for p in written if "texflow-numba" in p.parts]
    assert not [p for p in written if "texflow-numba" not in p.parts]


def test_plain_scanpy_process_still_works_beside_texflow(normalise_runs):
    assert kernel_lines(normalise_runs["plain"])
    assert [p for p in normalise_runs["cache"].rglob("*.nbi") if "texflow-numba" not in p.parts]


def test_no_fix_when_scanpy_came_first(tmp_path):
    code = NORMALISE.format(
        imports="import scanpy\n" + ENABLE + "\nimport os\n"
        "print('CACHE', os.environ['NUMBA_CACHE_DIR'])"
    )
    output = run_python(code, tmp_path)
    assert f"CACHE {tmp_path}\n" in output
    assert not (tmp_path / "texflow-numba").exists()


NEIGHBOURS = """
import numpy as np
import texflow
texflow.enable_numba_cache()
from texflow._numba_cache import cache_umap_kernels
import scanpy as sc
adata = sc.AnnData(np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32))
cache_umap_kernels()
sc.pp.neighbors(adata, use_rep="X", transformer="sklearn")
"""


@pytest.fixture(scope="module")
def neighbours_runs(tmp_path_factory) -> tuple[str, str]:
    """The neighbours code run twice in one fresh cache, printing numba's decorator factory
    after the imports. Shared by the two tests below: the first run compiles umap's and
    pynndescent's kernels (10-25 s)."""
    cache = tmp_path_factory.mktemp("neighbours_cache")
    code = (
        NEIGHBOURS
        + "from numba.core import decorators\nprint('JIT', decorators._jit.__qualname__)\n"
    )
    return run_python(code, cache), run_python(code, cache)


def test_umap_kernels_are_loaded_from_cache_by_the_next_process(neighbours_runs):
    first, second = (kernel_lines(run, "smooth_knn_dist") for run in neighbours_runs)
    assert any("data saved" in line for line in first), first
    assert any("data loaded" in line for line in second), second


def test_pynndescent_kernels_compiled_at_import_are_loaded_from_cache(neighbours_runs):
    # pynndescent declares these with explicit signatures: compiled as it is imported
    first, second = neighbours_runs
    assert any("data saved" in line for line in kernel_lines(first, "rp_trees")), first[-2000:]
    assert any("data loaded" in line for line in kernel_lines(second, "rp_trees")), second[-2000:]
    assert not any("data saved" in line for line in kernel_lines(second, "rp_trees"))
    # after the import, numba's decorator factory is numba's own again
    assert "JIT _jit\n" in second


def test_importing_texflow_does_not_switch_the_cache_on(tmp_path):
    output = run_python(NORMALISE.format(imports="import texflow"), tmp_path)
    assert kernel_lines(output)
    assert not (tmp_path / "texflow-numba").exists()


def test_no_fix_with_another_version_than_the_tested_one(tmp_path):
    code = (
        "import os\nfrom texflow import _numba_cache\n"
        "_numba_cache.TESTED_VERSIONS['numba'] = '0.0.1'\n"
        "print('ENABLED', _numba_cache.enable(), os.environ['NUMBA_CACHE_DIR'])\n"
        "import sys\nprint('PATCHED', 'fast_array_utils._plugins.numba_sparse' in sys.modules)"
    )
    output = run_python(code, tmp_path)
    assert f"ENABLED False {tmp_path}\n" in output
    assert "PATCHED False" in output
    assert "numba==0.0.1" in output  # the warning names the package and the tested version


def _locked_versions() -> dict[str, str]:
    lock = (WORKFLOW.parent / "requirements.lock").read_text().splitlines()
    return dict(line.split("==", 1) for line in lock if "==" in line and not line.startswith("#"))


def test_adapter_is_pinned_to_the_locked_versions():
    """texflow._numba_cache reaches into these packages' internals: a new version in the lock must
    fail here until someone has checked those internals (listed at TESTED_VERSIONS) against it."""
    from importlib.metadata import version

    from texflow import _numba_cache

    locked = _locked_versions()
    for name, tested in _numba_cache.TESTED_VERSIONS.items():
        assert locked.get(name) == tested, (
            f"requirements.lock pins {name}=={locked.get(name)}, but texflow/_numba_cache.py was "
            f"written against {name}=={tested}: check the internals it uses (TESTED_VERSIONS' "
            "comment) in the new version, run this file, then update TESTED_VERSIONS"
        )
        assert version(name) == tested, f"{name} {version(name)} installed, {tested} locked"
    assert not _numba_cache.untested_versions()
