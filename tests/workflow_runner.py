"""Run the real workflow (Snakefile of this checkout) on one dataset, in a temporary directory.

How it works: the Snakefile reads ``configfile: "config/config.yaml"`` relative to the *working
directory*, and ``--directory`` sets that directory. So the run directory gets its own
``config/config.yaml`` (the repository's, with ``datasets`` pointing at the dataset file given
here and any overrides merged in), the dataset file under ``config/datasets/``, and symbolic
links to the repository's shipped ``resources/*`` (demo data, signatures; never
``resources/downloads``), so relative source paths such as ``resources/demo/x.h5ad`` resolve as
they do in the repository. Outputs, logs and ``.snakemake/`` stay inside the run directory.

Usage::

    from tests.workflow_runner import run_workflow

    def test_rule(tmp_path):
        done = run_workflow(tmp_path, dataset_dict, "resources/downloads/mini/manifest.tsv")
        assert done.returncode == 0, done.stdout
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"

__all__ = ["ROOT", "SNAKEFILE", "not_shared", "prepare_workdir", "run_workflow"]


def not_shared(*roots: str | os.PathLike) -> list[str]:
    """Files under `roots` that group and others cannot read (run under umask 022, every result
    should be rw-r--r--), as "path mode" strings; symbolic links are not followed."""
    private = []
    for root in map(Path, roots):
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o044) != 0o044:
                private.append(f"{path.relative_to(root)} {oct(path.stat().st_mode & 0o777)}")
    return private


def _merge(base: dict, override: Mapping) -> dict:
    """Deep-merge `override` into a copy of `base` (mappings merged, everything else replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def prepare_workdir(
    workdir: str | os.PathLike,
    dataset: Mapping | str | os.PathLike,
    *,
    config: Mapping | None = None,
    link_resources: bool = True,
) -> Path:
    """Lay out `workdir` for a run of the repository's Snakefile on one dataset.

    Parameters
    ----------
    workdir
        The run directory (created if needed; usually pytest's ``tmp_path``).
    dataset
        A dataset config as a dict, or the path of a dataset YAML file (copied).
    config
        Overrides merged into the repository's ``config/config.yaml`` (e.g.
        ``{"fetch": {"retries": 1}}``).
    link_resources
        Link the repository's ``resources/*`` (except ``downloads``) into the run directory.

    Returns
    -------
    The path of the dataset file written, relative to `workdir`.
    """
    workdir = Path(workdir)
    if not isinstance(dataset, Mapping):
        dataset = yaml.safe_load(Path(dataset).read_text())
    dataset_file = Path("config/datasets") / f"{dataset['id']}.yaml"
    (workdir / dataset_file).parent.mkdir(parents=True, exist_ok=True)
    (workdir / dataset_file).write_text(yaml.safe_dump(dict(dataset), sort_keys=False))

    run_config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    run_config = _merge(run_config, config or {})
    run_config["datasets"] = [str(dataset_file)]
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(run_config, sort_keys=False))

    if link_resources:
        for shipped in (ROOT / "resources").iterdir():
            link = workdir / "resources" / shipped.name
            if shipped.name != "downloads" and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(shipped, target_is_directory=shipped.is_dir())
    return dataset_file


def run_workflow(
    workdir: str | os.PathLike,
    dataset: Mapping | str | os.PathLike | None,
    *targets: str,
    config: Mapping | None = None,
    args: Sequence[str] = (),
    cores: int = 1,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run snakemake on `dataset` in `workdir` and return the finished process.

    Parameters
    ----------
    workdir, dataset, config
        As for :func:`prepare_workdir`; ``dataset=None`` reuses a run directory prepared before
        (e.g. to rerun and check that nothing is redone).
    targets
        Files or rules to build (none: the default target, ``rule all``).
    args
        Extra snakemake arguments (e.g. ``"--dry-run"``, ``"--forceall"``).

    Returns
    -------
    The CompletedProcess; ``.stdout`` holds snakemake's stdout and stderr together, as text.
    """
    workdir = Path(workdir)
    if dataset is not None:
        prepare_workdir(workdir, dataset, config=config)
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        *args,
        *targets,
    ]
    return subprocess.run(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
