"""Slurm: rendering and quoting (everywhere), and real jobs on a throwaway two-node cluster on this machine.

The cluster tests (marker ``slurm``) start ``slurm/local_cluster.sh`` once per session: munge, slurmctld and
two slurmd (n1, n2) on 127.0.0.1. They need the Debian packages ``slurmctld slurmd slurm-client munge`` and
root (munge key, ``/etc/hosts`` entries for n1/n2); without them they are skipped, saying why. No mocks: the
jobs run ``python -m pipeline pretrain`` under ``srun`` on CPU processes, the production path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_pretrain import VOCAB, make_recipe, wiki_data  # noqa: F401 (wiki_data is a fixture)

from data_prep.errors import UserError
from pipeline.callbacks import read_metrics
from pipeline.submit import SubmitOptions, render

ROOT = Path(__file__).resolve().parent.parent
NASTY = "/tmp/run dir; touch /tmp/PWNED 'q' $(id) `x` $HOME & |<>*"


# ----------------------------------------------------------------------------------------- rendering (no cluster)


def _launch_line(script: str) -> str:
    (line,) = [x for x in script.splitlines() if x.startswith("srun ")]
    return line.removeprefix("srun --kill-on-bad-exit=1 ")


def _bash_argv(command: str) -> list[str]:
    """The argument list bash makes of a command line (printed, not run)."""
    out = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, text=True, check=True
    )
    return out.stdout.split("\0")[:-1]


def test_nasty_run_dir_neither_breaks_nor_injects(tmp_path: Path) -> None:
    opts = SubmitOptions(
        config="recipes/bert-tiny.yaml",
        nodes=2,
        gpus_per_node=4,
        args=[f"run_dir={NASTY}", 'logging.name=a"b$(id)'],
    )
    script = render(opts, NASTY, python="/opt/venv/bin/python", workdir=ROOT)
    path = tmp_path / "train.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    argv = _bash_argv(_launch_line(script))
    assert argv == [
        "/opt/venv/bin/python", "-m", "pipeline", "pretrain", "--config", str(ROOT / "recipes/bert-tiny.yaml"),
        "--resume", "auto", "--quiet", f"run_dir={NASTY}", 'logging.name=a"b$(id)',
    ]  # fmt: skip
    (run_line,) = [x for x in script.splitlines() if x.startswith("RUN_DIR=")]
    out = subprocess.run(["bash", "-c", f'{run_line}; printf %s "$RUN_DIR"'], capture_output=True, text=True)
    assert out.stdout == NASTY
    assert f'#SBATCH --output="{NASTY}/slurm-%j.out"' in script  # sbatch's own double-quote parsing
    assert re.search(r'#SBATCH --job-name="[\w.+-]+"', script)
    assert not Path("/tmp/PWNED").exists()


def test_values_sbatch_cannot_carry_are_refused() -> None:
    opts = SubmitOptions(config="recipes/bert-tiny.yaml")
    with pytest.raises(UserError, match="run_dir"):
        render(opts, '/tmp/a"b')
    with pytest.raises(UserError, match="--time"):
        render(SubmitOptions(config="x.yaml", time="1h; rm -rf /"), "/tmp/r")
    with pytest.raises(UserError, match="--partition"):
        render(SubmitOptions(config="x.yaml", partition='gpu"\n#SBATCH --x'), "/tmp/r")
    with pytest.raises(UserError, match="sbatch-arg"):
        render(SubmitOptions(config="x.yaml", sbatch_args=["--qos=a b"]), "/tmp/r")


def test_cpu_job_uses_gloo_and_finetune_gets_its_arguments() -> None:
    cpu = render(SubmitOptions(config="r.yaml", gpus_per_node=2, cpu=True), "/tmp/r", workdir=ROOT)
    assert (
        "--gpus-per-node" not in cpu
        and "export DS_ACCELERATOR=cpu" in cpu
        and "NCCL" not in cpu.split("\n\n")[1]
    )
    ft = render(
        SubmitOptions(config="f.yaml", command="finetune", args=["--checkpoint", "/ck pt", "task.epochs=1"]),
        "/tmp/r",
        python="py",
        workdir=ROOT,
    )
    assert _bash_argv(_launch_line(ft))[3:] == [
        "finetune", "--config", str(ROOT / "f.yaml"), "--resume", "auto", "--quiet",
        "--checkpoint", "/ck pt", "task.epochs=1",
    ]  # fmt: skip


def test_array_data_prep_scripts(tmp_path: Path) -> None:
    from pipeline.submit_data import render_step

    kw = dict(tasks=3, overrides=["shards.seed=7"], cpus_per_task=2, python="/v/bin/python", workdir=ROOT)
    part = render_step("part", "recipes/data/demo-bert.yaml", tmp_path / "out dir", **kw)
    assert (
        "#SBATCH --array=0-2" in part
        and f'#SBATCH --output="{tmp_path}/out dir/slurm/part-%A_%a.out"' in part
    )
    (line,) = [x for x in part.splitlines() if x.startswith("/v/bin/python ")]
    assert line.endswith('--task-index "$SLURM_ARRAY_TASK_ID" --num-tasks 3')
    argv = _bash_argv(line.replace('"$SLURM_ARRAY_TASK_ID"', "2"))
    assert argv[1:] == [
        "-m", "data_prep.parts", "part", str(ROOT / "recipes/data/demo-bert.yaml"), "shards.seed=7",
        "--task-index", "2", "--num-tasks", "3",
    ]  # fmt: skip
    for step in ("prep", "part", "merge"):
        path = tmp_path / f"{step}.sbatch"
        path.write_text(render_step(step, "recipes/data/demo-bert.yaml", tmp_path / "out dir", **kw))
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


# ------------------------------------------------------------------------------------------- the real cluster


def _cluster_missing() -> str | None:
    missing = [t for t in ("sbatch", "slurmctld", "slurmd", "munged", "scontrol") if shutil.which(t) is None]
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing): apt-get install slurmctld slurmd slurm-client munge"
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        return "the local Slurm cluster needs root or passwordless sudo (munge key, /etc/hosts entries for n1/n2)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-node Slurm cluster (n1, n2, 2 CPUs each) for the session; ``SLURM_CONF`` points at it."""
    reason = _cluster_missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    script = [*([] if os.geteuid() == 0 else ["sudo", "-n"]), str(ROOT / "slurm" / "local_cluster.sh")]
    out = subprocess.run(
        [*script, "start", "--nodes", "2", "--dir", str(folder)], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.fail(f"local cluster did not start: {out.stderr}{out.stdout}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run([*script, "stop", "--dir", str(folder)], capture_output=True, text=True)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def job_state(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(job: str, timeout: float, states: tuple[str, ...] = ("COMPLETED",)) -> dict[str, str]:
    """Poll until the job reaches a final state; fail on any final state not in ``states``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = job_state(job)
        if info["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            assert info["JobState"] in states, info
            return info
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} still {job_state(job)['JobState']} after {timeout} s")


def submit(recipe: dict, tmp: Path, *args: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "pipeline", "submit", "--config", str(path), "--cpu", "--cpus-per-task", "1"]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return re.search(r"submitted job (\d+)", out.stdout).group(1), out


def log_of(run: Path, job: str) -> str:
    path = run / f"slurm-{job}.out"
    return path.read_text() if path.is_file() else ""


def steps_logged(run: Path) -> list[int]:
    return sorted(int(r["step"]) for r in read_metrics(run / "metrics.csv") if "train/loss" in r)


@pytest.mark.slurm
def test_one_node_two_tasks_ddp(slurm_cluster: Path, wiki_data: dict, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    recipe = make_recipe(run, wiki_data["bert"], "bert", trainer={"global_batch_size": 16})
    job, out = submit(recipe, tmp_path, "--nodes", "1", "--gpus-per-node", "2")
    assert f"log:      {run}/slurm-{job}.out" in out.stdout and "W&B run:" in out.stdout
    info = wait_for(job, 300)
    assert info["NumTasks"] == "2", info
    log = log_of(run, job)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log
    assert (run / "checkpoints" / "step-0000020.ckpt").is_file()
    assert steps_logged(run) == list(range(20))
    wandb_id = hashlib.sha1(job.encode()).hexdigest()[:12]  # pipeline.train.wandb_run_id under Slurm
    assert f"W&B run {wandb_id}" in log and f"(id {wandb_id})" in out.stdout


@pytest.mark.slurm
def test_two_nodes_deepspeed_zero2(slurm_cluster: Path, wiki_data: dict, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    recipe = make_recipe(
        run,
        wiki_data["bert"],
        "bert",
        trainer={"strategy": "deepspeed", "zero_stage": 2, "micro_batch_size": 4},
    )
    job, _ = submit(recipe, tmp_path, "--nodes", "2", "--gpus-per-node", "1")
    info = wait_for(job, 300)
    assert info["NodeList"] == "n[1-2]", info
    log = log_of(run, job)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log
    ckpt = run / "checkpoints" / "step-0000020.ckpt"
    shards = sorted(p.name for p in (ckpt / "checkpoint").glob("*optim_states.pt"))
    assert len(shards) == 2, shards  # ZeRO-2: each rank (one per node) saved its own optimiser shard
    assert steps_logged(run) == list(range(20))
    losses = [r["train/loss"] for r in read_metrics(run / "metrics.csv") if "train/loss" in r]
    assert all(0 < x < 20 for x in losses)


@pytest.mark.slurm
@pytest.mark.parametrize("shape", ["deepspeed-2-nodes", "single-process"])
def test_preemption_checkpoints_requeues_and_finishes(
    shape: str,
    slurm_cluster: Path,
    wiki_data: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    steps = 150
    deepspeed = shape.startswith("deepspeed")
    trainer = {"strategy": "deepspeed", "zero_stage": 2, "micro_batch_size": 4} if deepspeed else {}
    recipe = make_recipe(
        run,
        wiki_data["bert"],
        "bert",
        trainer={"max_steps": steps, **trainer},
        checkpoint={"every_n_steps": 1000, "keep_last": 5},
    )
    nodes = "2" if deepspeed else "1"
    job, out = submit(recipe, tmp_path, "--nodes", nodes, "--gpus-per-node", "1", "--signal-seconds", "60")
    assert "#SBATCH --signal=USR1@60" in out.stdout and "#SBATCH --requeue" in out.stdout
    end = time.monotonic() + 240
    while not (run / "metrics.csv").is_file():  # written after the first logged steps: training is under way
        assert time.monotonic() < end, log_of(run, job)
        assert job_state(job)["JobState"] in ("PENDING", "RUNNING"), log_of(run, job)
        time.sleep(0.5)
    # What --signal=USR1@60 does a minute before the time limit, now.
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    end = time.monotonic() + 120
    while job_state(job).get("Restarts", "0") == "0":
        assert time.monotonic() < end, log_of(run, job)
        time.sleep(0.5)
    preempted = sorted((run / "checkpoints").glob("step-*.ckpt"))
    assert len(preempted) == 1 and preempted[0].is_dir() == deepspeed, (
        preempted
    )  # ZeRO: a folder; else a file
    first_step = int(preempted[0].name[5:12])
    assert 0 < first_step < steps
    info = wait_for(job, 300)
    assert info["Restarts"] == "1", info
    log = log_of(run, job)
    assert "restart 1" in log and "requeued" in log, log
    assert (run / "checkpoints" / f"step-{steps:07d}.ckpt").exists()
    assert steps_logged(run) == list(range(steps))  # every step once: the requeued job resumed, not restarted


@pytest.mark.slurm
def _rank_pid(job: str, rank: int) -> int | None:
    """The pid of the training process of ``rank`` in ``job`` (found by its Slurm environment, not by name)."""
    want = {f"SLURM_JOB_ID={job}".encode(), f"SLURM_PROCID={rank}".encode()}
    for proc in Path("/proc").iterdir():
        try:
            env = set((proc / "environ").read_bytes().split(b"\0"))
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if want <= env and b"pipeline" in cmd and b"pretrain" in cmd:
            return int(proc.name)
    return None


@pytest.mark.slurm
def test_a_dead_rank_fails_the_job_quickly(slurm_cluster: Path, wiki_data: dict, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    recipe = make_recipe(
        run, wiki_data["bert"], "bert", trainer={"max_steps": 100_000, "global_batch_size": 16}
    )
    recipe["trainer"]["process_group_timeout_s"] = 30
    job, _ = submit(recipe, tmp_path, "--nodes", "1", "--gpus-per-node", "2")
    end = time.monotonic() + 240
    while not (run / "metrics.csv").is_file():
        assert time.monotonic() < end and job_state(job)["JobState"] in ("PENDING", "RUNNING"), log_of(
            run, job
        )
        time.sleep(0.5)
    pid = _rank_pid(job, 1)
    assert pid is not None
    os.kill(pid, 9)  # rank 1 dies mid-training
    start = time.monotonic()
    wait_for(job, 120, states=("FAILED",))
    assert time.monotonic() - start < 60  # srun --kill-on-bad-exit ends rank 0 too; no hang


@pytest.mark.slurm
def test_array_data_prep_matches_single_process(slurm_cluster: Path, wiki_data: dict, tmp_path: Path) -> None:  # noqa: F811
    single = wiki_data["bert"].parent  # documents/, tokenizer/, shards/, bert/ of the single-process run
    out = tmp_path / "data"
    for stage in ("documents", "tokenizer"):  # same inputs; the prep job finds them up to date
        shutil.copytree(single / stage, out / stage)
    recipe = yaml.safe_load((ROOT / "recipes/data/demo-bert.yaml").read_text())
    recipe["out_dir"] = str(out)
    recipe["tokenizer"]["vocab_size"] = VOCAB
    recipe["bert"]["max_seq_len"] = 64
    recipe["shards"]["shard_tokens"] = (
        20_000  # several shards, so the merge must re-cut them as one run would
    )
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(recipe))
    # The single-process reference with the same settings.
    ref = tmp_path / "ref"
    cmd = [sys.executable, "-m", "data_prep", "shards", "--quiet", "--documents", str(single / "documents")]
    cmd += ["--tokenizer", str(single / "tokenizer"), "--out", str(ref), "--shard-tokens", "20000"]
    cmd += [
        "--valid-fraction",
        str(recipe["shards"]["valid_fraction"]),
        "--seed",
        str(recipe["shards"]["seed"]),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr

    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "submit-data", "--config", str(path), "--tasks", "3"]
        + ["--cpus-per-task", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    ids = re.search(r"submitted prep (\d+), array (\d+) \(3 tasks\), merge (\d+)", res.stdout).groups()
    wait_for(ids[2], 400)
    assert "--array=0-2" in (out / "slurm" / "part.sbatch").read_text()
    assert len(list((out / "slurm").glob("part-*.out"))) == 3

    import json

    a = json.loads((ref / "manifest.json").read_text())
    b = json.loads((out / "shards" / "manifest.json").read_text())
    assert a["counts"] == b["counts"] and a["splits"] == b["splits"] and a["skipped"] == b["skipped"]
    assert a["files"] == b["files"]  # names, sizes and sha256 of every shard: the same bytes
    assert len(a["splits"]["train"]["shards"]) > 1 and a["splits"]["valid"]["documents"] > 0
    for f in a["files"]:
        assert (ref / f["path"]).read_bytes() == (out / "shards" / f["path"]).read_bytes()
    assert (out / "bert" / "manifest.json").is_file()  # the merge job ran the rest of the recipe
    assert not (out / "shards.parts").exists()
