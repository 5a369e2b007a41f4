"""The workflow follows Snakemake's own best practices (`snakemake --lint`, `snakefmt`), and the
Python sources pass `ruff format --check` and `ruff check` (pyproject.toml's rule set)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_snakemake_lint_is_clean():
    done = subprocess.run(
        [str(BIN / "snakemake"), "--lint", "--snakefile", str(ROOT / "Snakefile")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "Congratulations, your workflow is in a good condition!" in output, output[-4000:]
    assert done.returncode == 0, output[-4000:]


def test_snakefmt_check_passes():
    done = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _makefile_variable(name: str) -> list[str]:
    """The words of a `NAME := ...` line of the Makefile: `make lint` and these tests read the
    same list of sources."""
    makefile = ROOT / "Makefile"
    found = re.search(rf"^{name}\s*:?=(.*)$", makefile.read_text(), flags=re.MULTILINE)
    assert found, f"{makefile} has no '{name} := ...' line: these tests take their paths from it"
    return found.group(1).split()


def test_ruff_format_check_passes():
    done = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", "--no-cache", *_makefile_variable("PY_SOURCES")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, "run `make format`:\n" + done.stdout + done.stderr


def test_ruff_check_is_clean():
    done = subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", "--output-format", "concise",
         *_makefile_variable("PY_SOURCES")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, "rules and reasons: pyproject.toml [tool.ruff.lint]\n" + (
        done.stdout + done.stderr
    )
