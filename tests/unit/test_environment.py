"""The conda environment for `--sdm conda` pins exactly what requirements.lock pins."""

import importlib.metadata
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from sync_conda_env import locked_pins  # noqa: E402


def conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "envs" / "texflow.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for requirement in pip_section:
        name, version = re.match(r"^([^=<>!\s]+)==(\S+)$", requirement).groups()
        pins[name.lower()] = version
    return pins


def test_conda_env_matches_lock():
    lock, conda = locked_pins(), conda_pins()
    assert set(lock) == set(conda), (
        f"only in lock: {set(lock) - set(conda)}; only in envs: {set(conda) - set(lock)}"
    )
    differing = {name: (lock[name], conda[name]) for name in lock if lock[name] != conda[name]}
    assert not differing, (
        f"versions differ between requirements.lock and envs/texflow.yaml: {differing}"
    )


def test_conda_env_python_is_312():
    env = yaml.safe_load((ROOT / "envs" / "texflow.yaml").read_text())
    assert "python=3.12" in env["dependencies"]


def test_installed_versions_match_lock():
    """The environment the tests run in is the locked one (pynndescent 0.7.0 breaks neighbors)."""
    lock = locked_pins()
    for name in ("scanpy", "anndata", "snakemake", "pynndescent", "numpy", "leidenalg"):
        assert importlib.metadata.version(name) == lock[name], name
    assert lock["pynndescent"] != "0.7.0"
