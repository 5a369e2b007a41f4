"""Every rule that runs as a job declares threads, mem_mb and runtime.

On a cluster (profiles/slurm) these become ``--cpus-per-task``, ``--mem`` and ``--time``: a rule
without them gets the cluster's defaults, which kill large datasets or waste the queue. mem_mb and
runtime must grow with the attempt, so that a job killed for memory or time is retried with more
(profiles/slurm sets ``retries``); common.smk's ``scaled_mem_mb``/``scaled_runtime`` do that,
and so does any callable taking ``attempt``.

This reads the rule files as text (the directives are plain Snakemake syntax), so it needs
neither a workflow run nor a cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "workflow/rules").glob("*.smk")) + [ROOT / "Snakefile"]
# what makes a rule a job (rules with only input, like `all`, are targets and never run)
ACTIONS = ("script:", "shell:", "run:", "notebook:", "wrapper:", "cwl:")


def _top_level_blocks(text: str) -> list[str]:
    """The file cut at every non-indented line: one block per top-level statement."""
    blocks, current = [], []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and current:
            blocks.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _rules() -> list[tuple[str, str, str, bool]]:
    """(file, rule name, rule text, is local) for every rule of the workflow."""
    found, local_names = [], set()
    for path in RULE_FILES:
        for block in _top_level_blocks(path.read_text()):
            if block.startswith("localrules:"):
                local_names.update(re.findall(r"\b(\w+)\b", block.split(":", 1)[1]))
            match = re.match(r"rule (\w+):", block)
            if match:
                local = bool(re.search(r"^\s+localrule:\s*True", block, re.MULTILINE))
                found.append((path.name, match.group(1), block, local))
    return [(file, name, block, local or name in local_names) for file, name, block, local in found]


JOB_RULES = [(file, name, block) for file, name, block, local in _rules() if any(a in block for a in ACTIONS)]
REMOTE_RULES = [
    (file, name, block)
    for file, name, block, local in _rules()
    if not local and any(a in block for a in ACTIONS)
]


def test_rules_were_found():
    assert JOB_RULES, "no rule with script/shell/run found: has the layout changed?"


@pytest.mark.parametrize(("file", "name", "block"), JOB_RULES, ids=[n for _, n, _ in JOB_RULES])
def test_rule_declares_threads_memory_and_runtime(file, name, block):
    missing = [
        what
        for what, pattern in (
            ("threads:", r"^\s+threads:"),
            ("resources: mem_mb=", r"^\s+mem_mb\s*="),
            ("resources: runtime=", r"^\s+runtime\s*="),
        )
        if not re.search(pattern, block, re.MULTILINE)
    ]
    assert not missing, f"rule {name} ({file}) lacks {', '.join(missing)}"


@pytest.mark.parametrize(("file", "name", "block"), REMOTE_RULES, ids=[n for _, n, _ in REMOTE_RULES])
def test_cluster_rule_scales_memory_with_the_attempt(file, name, block):
    memory = re.search(r"^\s+mem_mb\s*=\s*(.+?),?\s*$", block, re.MULTILINE)
    assert memory, f"rule {name} ({file}) has no mem_mb"
    value = memory.group(1)
    # a bare number would ask for the same memory again after an OOM kill
    assert not re.fullmatch(r"[\d_.]+", value), (
        f"rule {name} ({file}): mem_mb={value} is fixed; use scaled_mem_mb(base, per_input) so a "
        "retry after an out-of-memory kill asks for more"
    )
