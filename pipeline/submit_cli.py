"""The ``submit`` and ``submit-data`` subcommands of ``python -m pipeline`` (Slurm)."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.errors import UserError


def _cmd_submit(args: argparse.Namespace) -> None:
    from pipeline.submit import SubmitOptions, load_run_recipe, render, submit, wandb_id_for_job

    cpu = args.cpu
    opts = SubmitOptions(
        config=args.config,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        command=args.command_name,
        args=list(args.overrides),
        partition=args.partition,
        account=args.account,
        time=args.time,
        signal_seconds=args.signal_seconds,
        cpus_per_task=args.cpus_per_task,
        cpu=cpu,
        sbatch_args=list(args.sbatch_arg or []),
    )
    recipe, run_dir = load_run_recipe(opts)
    if not cpu and getattr(getattr(recipe, "trainer", None), "accelerator", None) == "cpu":
        opts.cpu = cpu = True  # the recipe trains on CPU processes
    script = render(opts, run_dir)
    print(script)
    if opts.command == "pretrain" and not cpu:
        from pipeline.preflight import estimate_recipe, format_estimate

        est, seq = estimate_recipe(
            recipe,
            device=args.device,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            mfu=args.mfu,
            seq_len=args.seq_len,
        )
        print(format_estimate(est, seq, recipe))
    elif opts.command == "pretrain":
        print("pre-flight estimate: none for a CPU job (the device table is for GPUs)")
    if args.dry_run:
        print("dry run: nothing submitted")
        return
    run = run_dir.resolve()
    job = submit(script, run)
    print(f"submitted job {job}")
    print(f"  log:      {run}/slurm-{job}.out")
    print(f"  script:   {run}/train.sbatch")
    print(f"  W&B run:  {run}/wandb (id {wandb_id_for_job(run, job)})")


def _cmd_submit_data(args: argparse.Namespace) -> None:
    from data_prep.config import DataRecipe
    from data_prep.recipe import load
    from pipeline.submit_data import render_step, submit_all

    if args.tasks < 1:
        raise UserError(f"--tasks {args.tasks}: must be at least 1")
    recipe = load(DataRecipe, args.config, args.overrides)
    out_dir = Path(recipe.out_dir)
    scripts = {
        step: render_step(
            step,
            args.config,
            out_dir,
            tasks=args.tasks,
            overrides=list(args.overrides),
            cpus_per_task=args.cpus_per_task,
            partition=args.partition,
            account=args.account,
            time=args.time,
        )
        for step in ("prep", "part", "merge")
    }
    for step, script in scripts.items():
        print(f"# ---- {step}.sbatch ----\n{script}")
    if args.dry_run:
        print("dry run: nothing submitted")
        return
    ids = submit_all(scripts, out_dir.resolve())
    print(f"submitted prep {ids['prep']}, array {ids['part']} ({args.tasks} tasks), merge {ids['merge']}")
    print(f"  logs:   {out_dir.resolve()}/slurm/")
    print(f"  shards: {out_dir.resolve()}/shards (when job {ids['merge']} has finished)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partition", metavar="P", help="Slurm partition (default: the cluster's)")
    p.add_argument("--account", metavar="A", help="Slurm account")
    p.add_argument("--time", metavar="HH:MM:SS", help="time limit per job")
    p.add_argument("--dry-run", action="store_true", help="print the script(s) only; submit nothing")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``submit`` and ``submit-data`` on ``python -m pipeline``'s subcommands."""
    p = sub.add_parser(
        "submit", help="submit a training run to Slurm (one task per GPU; requeue on preemption)"
    )
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipes/<name>.yaml")
    p.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=1,
        metavar="G",
        help="GPUs (= tasks) per node; CPU processes with --cpu",
    )
    p.add_argument(
        "--command",
        dest="command_name",
        default="pretrain",
        metavar="CMD",
        help="pretrain (default) or finetune; arguments after -- go to it (e.g. -- --checkpoint DIR)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides (passed on to the command)"
    )
    _common(p)
    p.add_argument(
        "--signal-seconds", type=int, default=300, metavar="S", help="USR1 S seconds before the limit"
    )
    p.add_argument("--cpus-per-task", type=int, default=8, metavar="C", help="cores per task (default 8)")
    p.add_argument("--cpu", action="store_true", help="CPU-only job: no GPUs, G CPU processes per node")
    p.add_argument("--sbatch-arg", action="append", metavar="--OPT=VALUE", help="extra #SBATCH option")
    p.add_argument("--device", default="H100", help="GPU type for the pre-flight estimate (default H100)")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed MFU for the time estimate (default 0.4)")
    p.add_argument("--seq-len", type=int, help="sequence length for the estimate (default: the data's)")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("submit-data", help="run a data recipe's shards stage as a Slurm array job")
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipes/data/<name>.yaml")
    p.add_argument("--tasks", type=int, required=True, metavar="N", help="array tasks tokenizing in parallel")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data recipe overrides")
    p.add_argument("--cpus-per-task", type=int, default=4, metavar="C", help="cores per task (default 4)")
    _common(p)
    p.set_defaults(func=_cmd_submit_data)
