"""The workflow on a real SLURM cluster, through ``profiles/slurm``.

Needs a running cluster with accounting (``sacct``): ``scripts/slurm-up`` starts a single-node
one on this machine. Without one the tests are skipped, unless ``TEXFLOW_REQUIRE_SLURM=1`` (CI
sets it after ``scripts/slurm-up``), which turns the skip into a failure.

- ``test_demo_jobs_ran_as_slurm_jobs`` / ``test_slurm_results_equal_local_results``: the demo
  datasets of ``config/config.yaml`` (default target, ``rule all``) run once with
  ``profiles/local`` and once with ``profiles/slurm`` in two temporary working directories; every
  non-local job must have been a SLURM job that sacct reports COMPLETED in the partition and
  account given on the command line, and every h5ad the runs produce must be equal (obs
  columns -- ``cluster``, ``state``, ``score_*``, ... -- and X).
- ``test_out_of_memory_job_is_retried_with_more_memory``: ``tests/data/slurm_oom`` allocates more
  than its first attempt's ``mem_mb``; SLURM kills it (sacct: OUT_OF_MEMORY) and the retry, with
  mem_mb scaled by the attempt, completes.

Partition and account: ``TEXFLOW_SLURM_PARTITION`` / ``TEXFLOW_SLURM_ACCOUNT``, else the
cluster's default partition and the user's first account in the accounting database.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.workflow_runner import not_shared

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
OOM_WORKFLOW = ROOT / "tests/data/slurm_oom"
REQUIRE_SLURM = os.environ.get("TEXFLOW_REQUIRE_SLURM") == "1"
# Generous: every SLURM job starts snakemake twice (batch script and job step), and the status
# of jobs is polled, not pushed; on a loaded 2-core machine that is about a minute per job.
RUN_TIMEOUT_SECONDS = 45 * 60


# ---------------------------------------------------------------------------------------------
# the cluster


@dataclass(frozen=True)
class SlurmCluster:
    partition: str
    account: str | None
    cpus: int

    def profile_args(self) -> list[str]:
        """Arguments that send a run through profiles/slurm to this cluster (as a user would)."""
        resources = [f"slurm_partition={self.partition}"]
        if self.account:
            resources.append(f"slurm_account={self.account}")
        return [
            "--profile", str(ROOT / "profiles/slurm"),
            "--default-resources", *resources,
            # no rule may ask for more CPUs than the node has (sbatch would refuse the job)
            "--max-threads", str(self.cpus),
            # a small cluster answers at once; poll early (profile: 20 s). A job sacct does not
            # know yet counts as queued; later checks come 10 s further apart each time
            # nothing finished (the plugin), so the first one sets the pace
            "--slurm-init-seconds-before-status-checks", "1",
        ]  # fmt: skip


def _run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _find_cluster() -> tuple[SlurmCluster | None, str]:
    """The cluster to test on, or None and the reason it cannot be used."""
    for tool in ("sinfo", "sbatch", "sacct", "scancel"):
        if shutil.which(tool) is None:
            return (
                None,
                f"SLURM is not installed ({tool} not on PATH); start one with scripts/slurm-up",
            )
    try:
        nodes = _run(["sinfo", "-h", "-N", "-o", "%P|%T|%c"])
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer within 60 s: is slurmctld running? (scripts/slurm-up)"
    if nodes.returncode != 0:
        return None, f"sinfo failed: {nodes.stderr.strip()} (scripts/slurm-up starts a cluster)"
    rows = [line.split("|") for line in nodes.stdout.split()]
    partition = os.environ.get("TEXFLOW_SLURM_PARTITION") or next(
        (name.rstrip("*") for name, _, _ in rows if name.endswith("*")), None
    )
    if partition is None:
        return None, "no default partition in sinfo; set TEXFLOW_SLURM_PARTITION"
    usable = [
        int(cpus)
        for name, state, cpus in rows
        if name.rstrip("*") == partition and state.rstrip("*") in ("idle", "mixed", "allocated")
    ]
    if not usable:
        return (
            None,
            f"no usable node in partition {partition!r}: sinfo says {nodes.stdout.strip()!r}",
        )
    accounting = _run(["sacct", "-n", "-X", "-S", "now-1hours", "-o", "JobID"])
    if accounting.returncode != 0:
        return None, (
            f"sacct does not work (the slurm executor plugin needs accounting): "
            f"{accounting.stderr.strip()}"
        )
    account = os.environ.get("TEXFLOW_SLURM_ACCOUNT")
    if not account:
        associations = _run(
            ["sacctmgr", "-n", "-P", "list", "assoc", f"user={getpass.getuser()}", "format=account"]
        )
        account = (
            next(iter(associations.stdout.split()), None) if associations.returncode == 0 else None
        )
    return SlurmCluster(partition=partition, account=account, cpus=min(usable)), ""


@pytest.fixture(scope="module")
def slurm() -> SlurmCluster:
    cluster, problem = _find_cluster()
    if cluster is None:
        if REQUIRE_SLURM:
            pytest.fail(f"TEXFLOW_REQUIRE_SLURM=1 but SLURM is not usable: {problem}")
        pytest.skip(problem)
    return cluster


# ---------------------------------------------------------------------------------------------
# running snakemake


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    # the SLURM jobs inherit this environment (sbatch --export=ALL): same interpreter and venv
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class SnakemakeRun:
    """A snakemake started by :func:`start_snakemake`; its stdout and stderr go to `log` (a
    file, not a pipe: nobody reads a pipe while another run is awaited, and a full one would
    stall snakemake)."""

    process: subprocess.Popen
    log: Path
    args: list[str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_snakemake(workdir: Path, args: list[str], *, snakefile: Path = SNAKEFILE) -> SnakemakeRun:
    """Start snakemake in `workdir`, its output to ``<workdir>.snakemake.log`` beside it;
    :func:`finish_snakemake` waits for it."""
    command = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        *args,
    ]  # fmt: skip
    log = workdir.parent / f"{workdir.name}.snakemake.log"
    with log.open("w") as sink:  # the child holds its own copy of the file descriptor
        process = subprocess.Popen(
            command, cwd=workdir, env=_environment(), stdout=sink, stderr=subprocess.STDOUT
        )
    return SnakemakeRun(process=process, log=log, args=args)


def stop_snakemake(run: SnakemakeRun) -> None:
    """Stop a snakemake that is still running (it cancels its SLURM jobs on SIGTERM), and also
    cancel the SLURM jobs of its run ID in case it could not."""
    if run.process.poll() is None:
        run.process.terminate()
        try:
            run.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
    run_id = re.search(r"SLURM run ID: (\S+)", run.output())
    if run_id:
        subprocess.run(["scancel", "--name", run_id.group(1)], check=False)


def finish_snakemake(run: SnakemakeRun, timeout: float = RUN_TIMEOUT_SECONDS) -> str:
    """Wait for a snakemake started by :func:`start_snakemake`; return its output (stdout +
    stderr), failing the test on error.

    On a timeout, the run is stopped and its SLURM jobs (named by its run ID) are cancelled.
    """
    try:
        run.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_snakemake(run)
        pytest.fail(f"snakemake did not finish in {timeout} s:\n{run.output()[-5000:]}")
    output = run.output()
    assert run.process.returncode == 0, f"snakemake {' '.join(run.args)} failed:\n{output[-8000:]}"
    return output


def run_snakemake(workdir: Path, args: list[str], *, snakefile: Path = SNAKEFILE) -> str:
    """Run snakemake in `workdir`; return its output (stdout + stderr), failing the test on error.

    On a timeout, the SLURM jobs of the run (named by its run ID) are cancelled.
    """
    return finish_snakemake(start_snakemake(workdir, args, snakefile=snakefile))


def prepare_demo_workdir(workdir: Path) -> Path:
    """A working directory with the repository's config (demo datasets) and shipped resources."""
    workdir.mkdir(parents=True)
    shutil.copytree(ROOT / "config", workdir / "config")
    for shipped in (ROOT / "resources").iterdir():
        if shipped.name != "downloads":
            (workdir / "resources").mkdir(exist_ok=True)
            (workdir / "resources" / shipped.name).symlink_to(
                shipped, target_is_directory=shipped.is_dir()
            )
    return workdir


SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+)")
# snakemake announces a job as "rule X:" (submitted) or "localrule X:" (run in the main process)
REMOTE_RULE = re.compile(r"^rule (\w+):$", re.MULTILINE)


def sacct_jobs(job_ids: list[str], *, steps: bool = False) -> pd.DataFrame:
    """sacct's record of `job_ids` (allocations; with `steps`, their steps too)."""
    fields = ["JobID", "JobIDRaw", "State", "ExitCode", "Partition", "Account", "ReqMem", "Comment"]
    command = ["sacct", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)]
    if not steps:
        command.insert(1, "-X")
    done = _run(command)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|", len(fields) - 1) for line in done.stdout.splitlines() if line]
    table = pd.DataFrame(rows, columns=fields)
    # "CANCELLED by 0" -> "CANCELLED"
    table["State"] = table["State"].str.split().str[0]
    return table


def req_mem_mb(value: str) -> float:
    """sacct's ReqMem ('600M', '1.17G', '600Mn' in older versions) in MB."""
    match = re.fullmatch(r"([\d.]+)([KMGT])[nc]?", value)
    assert match, f"unexpected ReqMem {value!r}"
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[match.group(2)]
    return float(match.group(1)) * factor


# ---------------------------------------------------------------------------------------------
# comparing results


_MISSING = "<missing>"


def _as_comparable(column: pd.Series) -> np.ndarray:
    """Labels (categoricals, strings, booleans) as strings, missing values as one marker.

    (pandas' ``!=`` counts two missing values as different, hence the marker.)
    """
    values = column.astype(object).to_numpy()
    return np.array([_MISSING if pd.isna(v) else str(v) for v in values], dtype=object)


def assert_same_anndata(expected_path: Path, actual_path: Path) -> list[str]:
    """Fail unless two h5ad files hold the same cells, genes, obs columns and X.

    Categorical and string obs columns (``cluster``, ``state``, ...) must match exactly; numeric
    ones (``score_*``, ``pseudotime``, ...) and X to float32 precision: both runs use the same
    code, data and threads, so anything larger is a real difference.

    Returns the obs columns compared.
    """
    import anndata as ad

    expected, actual = ad.read_h5ad(expected_path), ad.read_h5ad(actual_path)
    name = expected_path.name
    assert list(actual.obs_names) == list(expected.obs_names), f"{name}: cells differ"
    assert list(actual.var_names) == list(expected.var_names), f"{name}: genes differ"
    assert sorted(actual.obs.columns) == sorted(expected.obs.columns), f"{name}: obs columns differ"
    for key in expected.obs.columns:
        want, got = expected.obs[key], actual.obs[key]
        if pd.api.types.is_numeric_dtype(want) and not pd.api.types.is_bool_dtype(want):
            np.testing.assert_allclose(
                got.to_numpy(dtype=float), want.to_numpy(dtype=float),
                rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=f"{name}: obs[{key!r}] differs",
            )  # fmt: skip
        else:
            mismatched = (_as_comparable(got) != _as_comparable(want)).sum()
            assert mismatched == 0, f"{name}: obs[{key!r}] differs in {mismatched} cells"
    assert actual.X.shape == expected.X.shape, f"{name}: X shape differs"
    difference = sp.csr_matrix(actual.X, dtype=np.float64) - sp.csr_matrix(
        expected.X, dtype=np.float64
    )
    scale = max(1.0, float(abs(sp.csr_matrix(expected.X)).max()) if expected.X.size else 1.0)
    largest = float(abs(difference).max()) if difference.nnz else 0.0
    assert largest <= 1e-5 * scale, f"{name}: X differs by up to {largest}"
    return list(expected.obs.columns)


# ---------------------------------------------------------------------------------------------
# the demo run, locally and through SLURM


@pytest.fixture(scope="module")
def demo_runs(slurm, tmp_path_factory):
    """The demo datasets (config/config.yaml, default target), run locally and through SLURM.

    The two runs go at the same time, each in its own working directory (they share only the
    numba cache, which numba writes safely from concurrent processes): most jobs of either run
    use one of their two threads most of the time (imports, snakemake starting twice per SLURM
    job), and the other run fills the idle core.
    """
    base = tmp_path_factory.mktemp("slurm_demo")
    local = prepare_demo_workdir(base / "local")
    on_slurm = prepare_demo_workdir(base / "slurm")
    umask = os.umask(0o022)  # `make run` on a shared filesystem: results must be group-readable
    try:
        local_profile = ["--profile", str(ROOT / "profiles/local"), "--cores", str(slurm.cpus)]
        local_run = start_snakemake(local, local_profile)
    finally:
        os.umask(umask)  # the child keeps 022; the SLURM run starts with the caller's umask
    slurm_run = start_snakemake(on_slurm, slurm.profile_args())
    try:
        finish_snakemake(local_run)
        output = finish_snakemake(slurm_run)
    except BaseException:  # a failed local run must not leave the SLURM run and its jobs behind
        stop_snakemake(local_run)
        stop_snakemake(slurm_run)
        raise
    return local, on_slurm, output


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_jobs_ran_as_slurm_jobs(slurm, demo_runs):
    _, _, output = demo_runs
    job_ids = SUBMITTED.findall(output)
    remote_rules = REMOTE_RULE.findall(output)
    assert remote_rules, f"no job was submitted to SLURM:\n{output[-3000:]}"
    # every job snakemake did not keep local was submitted, once (no failed attempts)
    assert len(job_ids) == len(remote_rules), (
        f"{len(remote_rules)} jobs but {len(job_ids)} SLURM submissions:\n{output[-3000:]}"
    )
    jobs = sacct_jobs(job_ids)
    assert sorted(jobs["JobIDRaw"]) == sorted(job_ids), "sacct does not know every submitted job"
    assert (jobs["State"] == "COMPLETED").all(), jobs.to_string()
    assert (jobs["Partition"] == slurm.partition).all(), jobs.to_string()
    if slurm.account:
        assert (jobs["Account"] == slurm.account).all(), jobs.to_string()
    # the plugin names the rule in each job's comment (kept by AccountingStoreFlags=job_comment;
    # an empty comment means the cluster does not store them)
    rules_in_comments = {
        re.sub(r"^rule_(\w+?)(_wildcards_.*)?$", r"\1", comment)
        for comment in jobs["Comment"]
        if comment
    }
    if rules_in_comments:
        assert rules_in_comments == set(remote_rules), jobs.to_string()


@pytest.mark.slurm
@pytest.mark.slow
def test_local_demo_run_leaves_every_file_readable_under_umask_022(demo_runs):
    local, _, _ = demo_runs
    written = [local / "results", local / "resources/downloads", local / "logs"]
    assert not_shared(*written) == [], "files others cannot read under umask 022"


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_results_equal_local_results(demo_runs):
    local, on_slurm, _ = demo_runs
    produced = sorted(p.relative_to(local) for p in (local / "results").rglob("*") if p.is_file())
    produced_on_slurm = sorted(
        p.relative_to(on_slurm) for p in (on_slurm / "results").rglob("*") if p.is_file()
    )
    assert produced_on_slurm == produced, "the two runs produced different files"
    h5ads = [path for path in produced if path.suffix == ".h5ad"]
    assert h5ads, "the run produced no h5ad to compare"
    compared = {}
    for path in h5ads:
        compared[str(path)] = assert_same_anndata(local / path, on_slurm / path)
    # the final labels and scores are among what was compared once the stages exist
    # (the stages' intermediate h5ad files are temporary: final.h5ad is the one left)
    for path, columns in compared.items():
        if path.endswith("final.h5ad"):
            assert "cluster" in columns, f"{path} has no obs['cluster']"
            assert any(c.startswith("score_") for c in columns), f"{path} has no score_* column"


# ---------------------------------------------------------------------------------------------
# out of memory -> retry with more memory


@pytest.mark.slurm
@pytest.mark.slow
def test_out_of_memory_job_is_retried_with_more_memory(slurm, tmp_path):
    workdir = tmp_path / "oom"
    workdir.mkdir()
    shutil.copy(OOM_WORKFLOW / "Snakefile", workdir / "Snakefile")
    output = run_snakemake(workdir, slurm.profile_args(), snakefile=workdir / "Snakefile")

    job_ids = SUBMITTED.findall(output)
    assert len(job_ids) == 2, f"expected a failed and a retried submission:\n{output[-3000:]}"
    first, second = job_ids
    jobs = sacct_jobs(job_ids, steps=True).set_index("JobID")

    # attempt 1: 600 MB; the job step running the rule was killed for memory. (The allocation
    # itself ends FAILED: its batch step, snakemake, survives and exits 1. SLURM reports
    # OUT_OF_MEMORY for the allocation only when the batch step itself is killed.)
    first_steps = jobs[jobs.index.str.split(".").str[0] == first]
    assert req_mem_mb(jobs.loc[first, "ReqMem"]) == pytest.approx(600), jobs.to_string()
    assert "OUT_OF_MEMORY" in set(first_steps["State"]), (
        "attempt 1 was not recorded as OUT_OF_MEMORY (SLURM does so with TaskPlugin=task/cgroup "
        "and ConstrainRAMSpace=yes; jobacct_gather OverMemoryKill records FAILED):\n"
        + jobs.to_string()
    )
    assert jobs.loc[first, "State"] in ("OUT_OF_MEMORY", "FAILED"), jobs.to_string()

    # attempt 2: twice the memory (mem_mb = 600 * attempt), completed
    assert req_mem_mb(jobs.loc[second, "ReqMem"]) == pytest.approx(1200), jobs.to_string()
    assert jobs.loc[second, "State"] == "COMPLETED", jobs.to_string()
    assert (workdir / "allocated.txt").read_text().strip() == "700 MB held with mem_mb=1200"


# ---------------------------------------------------------------------------------------------
# the comparison itself (no cluster needed)


def test_comparison_detects_differences(tmp_path):
    import anndata as ad

    rng = np.random.default_rng(0)
    X = sp.random(30, 20, density=0.3, format="csr", dtype=np.float32, random_state=rng)
    obs = pd.DataFrame(
        {
            "cluster": pd.Categorical(rng.choice(["0", "1", "2"], 30)),
            "response": pd.Categorical([None] * 10 + ["responder"] * 20),
            "score_ifn": rng.normal(size=30),
        },
        index=[f"c{i}" for i in range(30)],
    )
    reference = ad.AnnData(X=X, obs=obs)
    reference.write_h5ad(tmp_path / "a.h5ad")
    reference.write_h5ad(tmp_path / "same.h5ad")
    assert assert_same_anndata(tmp_path / "a.h5ad", tmp_path / "same.h5ad") == [
        "cluster", "response", "score_ifn",
    ]  # fmt: skip

    relabelled = reference.copy()
    relabelled.obs["cluster"] = relabelled.obs["cluster"].map({"0": "1", "1": "0", "2": "2"})
    relabelled.write_h5ad(tmp_path / "relabelled.h5ad")
    with pytest.raises(AssertionError, match="cluster"):
        assert_same_anndata(tmp_path / "a.h5ad", tmp_path / "relabelled.h5ad")

    rescored = reference.copy()
    rescored.obs.loc["c3", "score_ifn"] += 0.01
    rescored.write_h5ad(tmp_path / "rescored.h5ad")
    with pytest.raises(AssertionError, match="score_ifn"):
        assert_same_anndata(tmp_path / "a.h5ad", tmp_path / "rescored.h5ad")

    changed = reference.copy()
    changed.X = (
        changed.X + sp.csr_matrix(([1.0], ([0], [0])), shape=X.shape, dtype=np.float32)
    ).tocsr()
    changed.write_h5ad(tmp_path / "changed.h5ad")
    with pytest.raises(AssertionError, match="X differs"):
        assert_same_anndata(tmp_path / "a.h5ad", tmp_path / "changed.h5ad")
