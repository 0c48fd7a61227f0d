"""`exo2ego demo`: its flags, and the run of a plan's phases into a fresh output folder, ending in the release."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from eval.config import RESULTS_NAME
from exo2ego.demo.pipeline import Demo
from exo2ego.demo.plans import PLANS, STAGES
from exo2ego.demo.release import reload_and_answer, write_release
from exo2ego.demo.report import print_summary
from exo2ego_base.command_line import add_command
from exo2ego_base.run_folder import RunFolder

# The demo's output folder as a run folder (`exo2ego_base.run_folder`): what other commands call it, and the file the
# demo writes last, whose presence means the run finished.
DEMO_FOLDER_KIND = "an exo2ego demo folder"
SUMMARY_NAME = "summary.json"


@dataclass
class DemoArguments:
    """What `exo2ego demo` takes: the output folder, the plan (full, or the quick one), the seed and overrides of
    the plan's vision pretraining and stage-3 data."""

    out: str = field(default="demo_out", metadata={"help": "output folder (replaced if it holds an earlier demo)"})
    quick: bool = field(default=False, metadata={"help": "the short variant CI runs (wiring only, no learning)"})
    seed: int = field(default=0, metadata={"help": "seed of the synthetic world, the tiny model and training"})
    vision_steps: int | None = field(
        default=None,
        metadata={
            "help": "pretrain the tiny vision towers on the web-exo clips for this many steps (exo2ego.tiny.vision; "
            "0 leaves them random; None: the plan's)"
        },
    )
    egoit_fraction: float | None = field(
        default=None,
        metadata={
            "help": "stage 3 trains on this fraction of EgoIT, in (0, 1], rows drawn with a fixed seed "
            "(None: the plan's)"
        },
    )

    def __post_init__(self):
        if self.egoit_fraction is not None and not 0 < self.egoit_fraction <= 1:
            raise ValueError(f"argument --egoit-fraction: must lie in (0, 1], got {self.egoit_fraction:g}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "demo",
        (DemoArguments,),
        run,
        help="run the whole pipeline on the synthetic world, ending in a release",
    )


def demo_run_folder(out: str | os.PathLike) -> RunFolder:
    """`out` as the demo's run folder: its marker `summary.json`; refusals exit with the message."""
    return RunFolder(out, DEMO_FOLDER_KIND, SUMMARY_NAME, label=f"--out {Path(out)}", error=SystemExit)


def prepare_out(out: str | os.PathLike) -> RunFolder:
    """Make `out` an empty demo folder, recorded as the demo's from the start: an earlier demo there, finished or
    interrupted, is replaced whole; a folder another command wrote is refused naming what wrote it, and any other
    non-empty folder is refused, both before anything is deleted."""
    folder = demo_run_folder(out)
    if folder.path.exists() and not folder.path.is_dir():
        raise SystemExit(f"{folder.label} is a file, not a folder; choose another --out")
    if folder.path.is_dir():
        folder.refuse_foreign(advice="the demo replaces only an earlier demo's folder: choose another --out")
        if folder.is_mine():
            shutil.rmtree(folder.path)
        elif entries := sorted(path.name for path in folder.path.iterdir()):
            raise SystemExit(
                f"{folder.label} is not empty ({', '.join(entries[:5])}) and is not an earlier demo output; choose "
                "another --out"
            )
    folder.claim()  # the folder is the demo's before the first phase: the next run replaces it if this one stops
    return folder


def run(args: DemoArguments) -> int:
    plan = PLANS["quick" if args.quick else "full"]
    if args.vision_steps is not None:
        plan = replace(plan, vision_steps=args.vision_steps)
    if args.egoit_fraction is not None:
        plan = replace(plan, egoit_fraction=args.egoit_fraction)
    folder = prepare_out(args.out)
    out = folder.path
    demo = Demo(out, plan, args.seed)
    start = time.perf_counter()
    steps = [demo.build_data, demo.build_model, demo.measure_gates, lambda: demo.evaluate("untrained")]
    previous = "untrained"
    for stage in STAGES:
        steps += [
            lambda stage=stage, previous=previous: demo.train(stage, previous),
            lambda stage=stage: demo.evaluate(stage),
        ]
        previous = stage
    for step in tqdm(steps, desc="demo phases", unit="phase"):
        step()
    summary = demo.write_report()
    release = write_release(demo.models / "stage3", demo.evals / "stage3" / RESULTS_NAME, out / "release")
    answer = reload_and_answer(release, demo.world)
    total = time.perf_counter() - start
    summary["total_sec"] = round(total, 1)
    folder.finish(summary)  # written last: its presence means the run finished

    print("\n" + answer)
    print_summary(summary)
    print(f"release: {release}   report: {out / 'report.md'}   total {total / 60:.1f} min")
    return 0
