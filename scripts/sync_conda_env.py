"""Write envs/texflow.yaml from requirements.lock, so `--sdm conda` gets the same versions.

Run by `make lock`; tests/unit/test_environment.py fails when the two disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
CONDA_ENV = ROOT / "envs" / "texflow.yaml"


def locked_pins(lock: Path = LOCK) -> dict[str, str]:
    """Package name -> pinned version, from a `uv pip compile` lock file."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def render(pins: dict[str, str]) -> str:
    lines = [
        "# Generated from requirements.lock by scripts/sync_conda_env.py (`make lock`): "
        "do not edit.",
        "# The same pins as the lock, installed by pip inside a conda Python 3.12.",
        "name: texflow",
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        "  - python=3.12",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    CONDA_ENV.parent.mkdir(exist_ok=True)
    CONDA_ENV.write_text(render(locked_pins()))
    print(f"wrote {CONDA_ENV} ({len(locked_pins())} pins)", file=sys.stderr)
