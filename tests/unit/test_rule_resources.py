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


JOB_RULES = [
    (file, name, block) for file, name, block, local in _rules() if any(a in block for a in ACTIONS)
]
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


@pytest.mark.parametrize(
    ("file", "name", "block"), REMOTE_RULES, ids=[n for _, n, _ in REMOTE_RULES]
)
def test_cluster_rule_scales_memory_with_the_attempt(file, name, block):
    memory = re.search(r"^\s+mem_mb\s*=\s*(.+?),?\s*$", block, re.MULTILINE)
    assert memory, f"rule {name} ({file}) has no mem_mb"
    value = memory.group(1)
    # a bare number would ask for the same memory again after an OOM kill
    assert not re.fullmatch(r"[\d_.]+", value), (
        f"rule {name} ({file}): mem_mb={value} is fixed; use scaled_mem_mb(base, per_input) so a "
        "retry after an out-of-memory kill asks for more"
    )


#: rules that run on the machine that started Snakemake, never as cluster jobs: fetch (compute
#: nodes often have no internet), report and summary (10-20 s jobs that would wait in the queue)
LOCAL_RULES = {"fetch", "report", "summary"}


def test_short_and_network_rules_are_local_and_keep_their_settings():
    rules = {name: (block, local) for _, name, block, local in _rules()}
    assert LOCAL_RULES <= set(rules)
    not_local = sorted(name for name in LOCAL_RULES if not rules[name][1])
    assert not not_local, f"{not_local} would be submitted to the cluster; add them to localrules:"
    for name in LOCAL_RULES:  # still declared, for a local run's --resources and the benchmark
        block = rules[name][0]
        for directive in ("threads:", "mem_mb=", "runtime=", "log:", "benchmark:", "conda:"):
            assert directive in block, f"rule {name} lost {directive}"


def test_slurm_readme_command_shares_the_numba_cache():
    # without it every job compiles numba kernels from scratch (LCMV gate: 66 s instead of 6 s)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run on a SLURM cluster", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    assert commands and all("NUMBA_CACHE_DIR=" in command for command in commands), commands
    assert "OUT_OF_MEMORY" in section and "sacct" in section
    assert re.search(r"--set-resources '?\w+:mem_mb=[^ ]*\*attempt", section), section
