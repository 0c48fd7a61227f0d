"""`exo2ego ablate`: the command's arguments, and its run from the pre-registration to the report."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from eval.provenance import git_revision
from exo2ego.demo.plans import PLANS as DEMO_PLANS
from exo2ego.experiments.ablation.design import (
    ARMS_BY_NAME,
    DEFAULT_ARMS,
    FULL,
    HYPOTHESES,
    PLANS,
    hypothesis_verdict,
    preregistration_text,
    write_preregistration,
)
from exo2ego_base.command_line import add_command
from exo2ego_base.provenance import package_versions, write_json_atomic


@dataclass
class AblateArguments:
    """What `exo2ego ablate` takes: the output folder, the plan (full, or the quick one), and the seeds, arms and
    parallel jobs that override the plan's."""

    out: str = field(default="ablation_out", metadata={"help": "output folder (finished runs in it are reused)"})
    quick: bool = field(default=False, metadata={"help": "tiny sizes that only prove the wiring"})
    seeds: list[int] | None = field(
        default=None,
        metadata={"help": "seeds: world and training seed (None: the plan's, 0-7; --quick: 0 1)"},
    )
    arms: list[str] | None = field(
        default=None,
        metadata={
            "help": f"arms to run; 'all' runs every arm (None: {' '.join(DEFAULT_ARMS)})",
            "choices": ["all", *ARMS_BY_NAME],
        },
    )
    jobs: int | None = field(
        default=None,
        metadata={"help": "seeds trained side by side, each on cores/jobs threads (None: the plan's, 2; --quick: 1)"},
    )
    results: str | None = field(
        default=None, metadata={"help": "also copy results.json, report.md and ablation.png here (a file stem)"}
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "ablate",
        (AblateArguments,),
        run,
        help="the paper's ablations (Tables 7-8, 15), pre-registered, per seed",
    )


def run(args: AblateArguments) -> int:
    # Deferred, heavy: the runs load transformers' models, the statistics scipy; exo2ego --help imports this module.
    from exo2ego.experiments.ablation.report import machine_name, plot, summarise, write_report
    from exo2ego.experiments.ablation.runs import run_seed

    plan = PLANS["quick" if args.quick else "full"]
    plan = replace(plan, seeds=tuple(args.seeds or plan.seeds), jobs=plan.jobs if args.jobs is None else args.jobs)
    if len(plan.seeds) < 2 or len(set(plan.seeds)) != len(plan.seeds):
        raise SystemExit(f"--seeds needs two or more distinct seeds (the intervals are over seeds), got {args.seeds}")
    if plan.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {plan.jobs}")
    names = list(ARMS_BY_NAME) if args.arms and "all" in args.arms else list(args.arms or DEFAULT_ARMS)
    arm_names = (FULL, *(name for name in names if name != FULL))
    demo_plan = DEMO_PLANS[plan.demo]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preregistration = preregistration_text(arm_names, plan, demo_plan)
    write_preregistration(out, preregistration)

    start, revision = time.perf_counter(), git_revision()  # the code that runs, not what the tree holds at the end
    threads = max(1, (os.cpu_count() or 1) // plan.jobs)
    seeds = {}
    with ProcessPoolExecutor(plan.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_seed, str(out), demo_plan, seed, arm_names, threads): seed for seed in plan.seeds}
        for future in tqdm(as_completed(futures), total=len(futures), desc="ablation seeds", unit="seed"):
            seeds[futures[future]] = future.result()
    results = summarise({seed: seeds[seed]["evals"] for seed in plan.seeds}, arm_names)
    summary = {
        "command": "exo2ego " + " ".join(shlex.quote(word) for word in sys.argv[1:]),
        "plan": asdict(plan),
        "demo_plan": asdict(demo_plan),
        "seeds": list(plan.seeds),
        "jobs": plan.jobs,
        "machine": machine_name(),
        "git": revision,
        "versions": package_versions(("torch", "transformers", "peft", "trl", "accelerate", "datasets", "scipy")),
        "arms": {name: asdict(ARMS_BY_NAME[name]) for name in arm_names},
        "hypotheses": [asdict(hypothesis) for hypothesis in HYPOTHESES if set(hypothesis.arms) <= set(arm_names)],
        "verdicts": {
            hypothesis.name: hypothesis_verdict(hypothesis, results[hypothesis.split])
            for hypothesis in HYPOTHESES
            if set(hypothesis.arms) <= set(arm_names)
        },
        "results": results,
        "mechanism": {f"seed{seed}": seeds[seed]["mechanism"] for seed in plan.seeds},
        "seed_seconds": {f"seed{seed}": seeds[seed]["seconds"] for seed in plan.seeds},
        "seed_timings_sec": {f"seed{seed}": seeds[seed]["timings_sec"] for seed in plan.seeds},
        "total_sec": round(time.perf_counter() - start, 1),
    }
    plot(results, list(plan.seeds), out / "ablation.png")
    write_report(out / "report.md", summary, preregistration)
    write_json_atomic(out / "results.json", summary)
    if args.results:
        stem = Path(args.results)
        stem.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stem.with_suffix(".json"), summary)
        shutil.copy(out / "report.md", stem.with_suffix(".md"))
        shutil.copy(out / "ablation.png", stem.with_suffix(".png"))
    for name, verdict in summary["verdicts"].items():
        print(f"{verdict:>9}  {name}")
    for task, rows in results.items():
        print(f"\n{task}")
        for name, row in rows.items():
            low, high = row["two_level_ci"]
            print(f"  {name:<30} {row['accuracy']:5.1f}%  diff {row['diff']:+5.1f} [{low:+.1f}, {high:+.1f}]")
    print(f"\nreport: {out / 'report.md'}   total {summary['total_sec'] / 60:.1f} min")
    return 0
