"""The workflow follows Snakemake's own best practices: `snakemake --lint` and `snakefmt`."""

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
