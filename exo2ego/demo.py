"""`exo2ego demo`: the whole Exo2Ego pipeline on the embedded synthetic world, ending in a Hub-ready release.

Phases, each through the command or script a user runs on real data (only the sizes and the source differ):

1. `exo2ego data synth` renders the synthetic Ego-Exo world in the Ego-Exo4D layout, with EgoIT and EgoBench;
2. `exo2ego data ego-exoclip` builds Ego-ExoClip from it (paper eq. 1);
3. `exo2ego tiny-model` builds a tiny Exo2Ego with an offline tokenizer, its LLM pretrained on the world's text;
4. `train/init.py`, `stage1.py`, `stage2.py`, `stage3.py` (what `accelerate launch` runs) train the initialization
   and the three stages, each from the previous stage's folder, on `train/configs/tiny_*.yaml` with the plan's step
   counts;
5. `exo2ego eval` scores EgoBench (task `synthetic`) for the untrained model and after every stage;
6. `report.md` with loss curves (VTG, KL, CCL) and accuracy per stage, then `<out>/release/` (ego-only model,
   processor, model card, results), reloaded in a fresh process with `trust_remote_code=True` to answer a question
   about a held-out ego clip.

EgoBench is scored with `option_loglik` (mean log-probability of each option's text after the question, one cached
prefill per question): it needs the model to describe what the video shows, not to point at option letters, which
a tiny model trained for minutes does not learn (`letter_logprob` stays at chance). The prompt variant is `none` (no
system prompt): the tiny LLM knows only the synthetic EgoIT and Ego-ExoClip text, and the default system prompt is
made of words it never saw in training.

Before the pipeline, `exo2ego tiny-model --language-*` pretrains the tiny LLM on the text of EgoIT and Ego-ExoClip
(`exo2ego.tiny_language`), so that, as Mistral in the paper, it knows the world's language and stays frozen in init
and stages 1-2; stage 3 (LoRA + lm_head) spends most of the plan's steps. README "The demo" has the measured seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

STAGES = ("init", "stage1", "stage2", "stage3")
DEMO_MARKER = ".exo2ego_demo"
EVAL_POINTS = ("untrained",) + STAGES


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run. `full` is the learning run (4-6 minutes on 2 idle cores, README "The demo"); `quick`
    only proves the wiring."""

    takes: int
    steps: dict[str, int]
    objects_per_take: int = 2
    batch_size: int = 8
    frames: int = 4
    learning_rate: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 1e-3))
    eval_limit: int | None = None
    eval_batch_size: int = 32  # EgoBench questions prefilled together (`exo2ego eval --batch-size`)
    language_steps: int = 0  # text-only pretraining of the tiny LLM on EgoIT and Ego-ExoClip text (tiny_language)
    vision_steps: int = 0  # bag-of-words pretraining of the tiny vision towers on Ego-ExoClip frames (tiny_vision)
    vision_samples: int = 1024  # (clip, exo camera) pairs decoded for it, ego and exo view each
    egoit_fraction: float = 1.0  # share of EgoIT stage 3 trains on
    # Which rows a fraction below 1 keeps: drawn at random with this seed (the same rows for every training seed), so
    # they spread over the takes (131 of 140 in the demo's worlds); None keeps the first rows, the first takes only.
    egoit_subset_seed: int | None = 0


PLANS = {
    "full": DemoPlan(
        takes=200,
        steps={"init": 200, "stage1": 100, "stage2": 100, "stage3": 1000},
        # The LLM learns the world's language first (text only) and stays frozen until stage 3, as in the paper;
        # stages 1-2 at a tenth of the init rate, as in the paper's Table 14.
        learning_rate={"init": 1e-3, "stage1": 1e-4, "stage2": 1e-4, "stage3": 1e-3},
        language_steps=300,
        # Limited egocentric instructions (the paper's premise for the exo stages): a random 10% of EgoIT's rows,
        # about 23 epochs in stage 3. At stage-3 rate 2e-3 the result moved by tens of points with the float rounding
        # (thread count) and failed the target on some seeds; at 1e-3 it held on all tried (README "Three seeds").
        egoit_fraction=0.1,
    ),
    "quick": DemoPlan(
        takes=6,
        steps={"init": 4, "stage1": 4, "stage2": 4, "stage3": 6},
        batch_size=4,
        eval_limit=12,
        language_steps=4,
        vision_steps=2,  # the full plan leaves the towers random (README "The demo"); quick keeps the path tested
        vision_samples=8,
        egoit_fraction=0.5,
    ),
}


def egoit_fraction(text: str) -> float:
    """argparse type of the EgoIT fractions (`exo2ego demo`, `exo2ego ablate`): a number in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline on the synthetic world, ending in a release")
    parser.add_argument("--out", default="demo_out", help="output folder (replaced if it holds an earlier demo)")
    parser.add_argument("--quick", action="store_true", help="the short variant CI runs (wiring only, no learning)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vision-steps",
        type=int,
        help="pretrain the tiny vision towers on ego and exo frames for this many steps (exo2ego.tiny_vision; "
        "default: the plan's, 0 for the full demo)",
    )
    parser.add_argument(
        "--egoit-fraction",
        type=egoit_fraction,
        help="stage 3 trains on this fraction of EgoIT, rows drawn with a fixed seed (default: the plan's)",
    )
    parser.set_defaults(func=run)


class Demo:
    """Runs the phases of one plan into `out`, timing each."""

    def __init__(self, out: Path, plan: DemoPlan, seed: int):
        self.out, self.plan, self.seed = out, plan, seed
        self.world, self.clips = out / "world", out / "ego-exoclip"
        self.models, self.evals = out / "models", out / "eval"
        self.timings: dict[str, float] = {}
        self.train_dir = Path(__import__("train").__file__).parent

    # -- phases ---------------------------------------------------------------------------------------------------
    def cli(self, phase: str, *argv: str) -> None:
        """Run `exo2ego <argv>` in this process (the console script's own entry point)."""
        from exo2ego.cli import main

        self._timed(phase, lambda: main(list(argv)))

    def script(self, phase: str, *argv: str) -> None:
        """Run a training script in a child process, as `accelerate launch` would on one CPU process."""
        log = self.out / "logs" / f"{phase.replace('/', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)

        def launch():
            with log.open("w") as handle:
                completed = subprocess.run([sys.executable, *argv], stdout=handle, stderr=subprocess.STDOUT)
            if completed.returncode:
                raise RuntimeError(f"{phase} failed (exit {completed.returncode}); see {log}")

        self._timed(phase, launch)

    def _timed(self, phase: str, action) -> None:
        start = time.perf_counter()
        print(f"\n=== {phase} ===", flush=True)
        status = action()
        if status:
            raise RuntimeError(f"{phase} failed with exit status {status}")
        self.timings[phase] = time.perf_counter() - start

    def build_data(self) -> None:
        self.cli(
            "synthetic world",
            "data",
            "synth",
            "--out",
            str(self.world),
            "--takes",
            str(self.plan.takes),
            "--seed",
            str(self.seed),
            "--objects-per-take",
            str(self.plan.objects_per_take),
            "--num-proc",
            "2",
            "--downscaled-only",  # the pipeline reads the 448 variant only
        )
        self.cli(
            "Ego-ExoClip",
            "data",
            "ego-exoclip",
            "--egoexo-root",
            str(self.world),
            "--out",
            str(self.clips),
            "--variant",
            "448",
        )

    def build_model(self) -> None:
        self.cli(
            "tiny model",
            "tiny-model",
            "--out",
            str(self.models / "untrained"),
            "--seed",
            str(self.seed),
            "--frames",
            str(self.plan.frames),
            "--language-egoit",
            str(self.world / "egoit"),
            "--language-clips",
            str(self.clips),
            "--language-steps",
            str(self.plan.language_steps),
            "--vision-clips",
            str(self.clips),
            "--vision-video-root",
            str(self.world),
            "--vision-views",
            "ego",
            "exo",
            "--vision-samples",
            str(self.plan.vision_samples),
            "--vision-steps",
            str(self.plan.vision_steps),
        )

    def evaluate(self, point: str, model: Path | None = None, out: Path | None = None) -> None:
        """EgoBench on `model` (default: `models/<point>`) into `out` (default: `eval/<point>`)."""
        model, out = model or self.models / point, out or self.evals / point
        argv = [
            "eval",
            "--model",
            str(model),
            "--data",
            str(self.world / "egobench"),
            "--tasks",
            "synthetic",
            "--scorer",
            "option_loglik",
            "--option-score",
            "mean",
            "--out",
            str(out),
            "--num-frames",
            str(self.plan.frames),
            "--seed",
            str(self.seed),
            "--no-progress",
            "--prompt",
            "none",
            "--batch-size",
            str(self.plan.eval_batch_size),
        ]
        if self.plan.eval_limit:
            argv += ["--limit", str(self.plan.eval_limit)]
        self.cli(f"EgoBench ({point})", *argv)

    def train(
        self,
        stage: str,
        previous: str | Path,
        output: Path | None = None,
        extra: tuple[str, ...] = (),
        phase: str | None = None,
        egoit_fraction: float | None = None,
    ) -> None:
        """Train `stage` from `models/<previous>` (or the folder `previous`) into `output` (default: `models/<stage>`);
        stage 3 on `egoit_fraction` of EgoIT (default: the plan's). `extra` arguments come last, so they override the
        config and the plan."""
        start = previous if isinstance(previous, Path) else self.models / previous
        if stage != "stage3":
            data = ["--dataset_path", str(self.clips), "--dataset_config", "clips"]
        else:
            data = ["--dataset_path", str(self.world / "egoit")]
            fraction = self.plan.egoit_fraction if egoit_fraction is None else egoit_fraction
            if fraction < 1.0:
                data += ["--max_train_samples", str(max(1, round(fraction * self.egoit_rows())))]
                if self.plan.egoit_subset_seed is not None:
                    data += ["--subset_seed", str(self.plan.egoit_subset_seed)]
        argv = [
            str(self.train_dir / f"{stage}.py"),
            "--config",
            str(self.train_dir / "configs" / f"tiny_{stage}.yaml"),
            "--model_name_or_path",
            str(start),
            "--output_dir",
            str(output or self.models / stage),
            "--video_root",
            str(self.world),
            *data,
            "--max_steps",
            str(self.plan.steps[stage]),
            "--per_device_train_batch_size",
            str(self.plan.batch_size),
            "--learning_rate",
            str(self.plan.learning_rate[stage]),
            "--num_frames",
            str(self.plan.frames),
            "--seed",
            str(self.seed),
            "--save_strategy",
            "no",
            "--logging_steps",
            str(max(1, self.plan.steps[stage] // 25)),
            *extra,
        ]
        self.script(phase or f"train {stage}", *argv)

    def egoit_rows(self) -> int:
        info = json.loads((self.world / "egoit" / "build_info.json").read_text())
        return int(info["counts"]["rows"])

    # -- outputs --------------------------------------------------------------------------------------------------
    def accuracy(self, point: str) -> dict:
        results = json.loads((self.evals / point / "results.json").read_text())
        metric = results["tasks"]["synthetic"]["metrics"]["accuracy"]
        return {"accuracy": metric["value"], "ci": [metric["ci_low"], metric["ci_high"]], "n": metric["n"]}

    def write_report(self) -> dict:
        from exo2ego.demo_report import loss_series, plot_accuracy, plot_losses, write_report
        from exo2ego_base.provenance import package_versions

        plots = self.out / "plots"
        plots.mkdir(exist_ok=True)
        accuracies = {point: self.accuracy(point) for point in EVAL_POINTS}
        histories = {
            stage: json.loads((self.models / stage / "trainer_state.json").read_text())["log_history"]
            for stage in STAGES
        }
        plot_losses(histories, plots / "losses.png")
        plot_accuracy(accuracies, plots / "accuracy_per_stage.png")
        summary = {
            "plan": asdict(self.plan),
            "seed": self.seed,
            "versions": package_versions(("torch", "transformers", "peft", "trl", "accelerate")),
            "accuracy": accuracies,
            "losses": {  # first and last logged value of every loss term, per stage
                stage: {term: [values[0], values[-1]] for term, (_, values) in loss_series(history).items()}
                for stage, history in histories.items()
            },
            "timings_sec": {phase: round(seconds, 1) for phase, seconds in self.timings.items()},
        }
        write_report(self.out / "report.md", summary, histories)
        return summary

    def release(self) -> Path:
        """`<out>/release/`: the stage-3 model without the exo tower and G, its processor, model card and results."""
        from transformers import AutoProcessor

        from model_card import CardInfo, build_model_card
        from modeling_exo2ego import Exo2EgoForConditionalGeneration

        release = self.out / "release"
        model = Exo2EgoForConditionalGeneration.from_pretrained(self.models / "stage3", include_exo_branch=False)
        model.save_pretrained(release)
        AutoProcessor.from_pretrained(self.models / "stage3").save_pretrained(release)
        shutil.copy(self.evals / "stage3" / "results.json", release / "results.json")
        results = json.loads((release / "results.json").read_text())
        card = build_model_card(
            results, CardInfo(model_id="org/exo2ego-tiny-synthetic", base_models=(), sources=("Ego-Exo4D",))
        )
        card.save(release / "README.md")
        return release

    def reload_and_answer(self, release: Path) -> str:
        """Load the release in a fresh process the way Hub users do and answer one held-out question."""
        import pandas as pd

        bench = pd.read_parquet(next((self.world / "egobench" / "data" / "synthetic").glob("*.parquet")))
        row = bench.iloc[0]
        question = {
            "video": str(self.world / row["video"]),
            "start_sec": float(row["start_sec"]),
            "end_sec": float(row["end_sec"]),
            "question": row["question"],
            "truth": row["answer_text"],
        }
        completed = subprocess.run(
            [sys.executable, "-c", RELOAD_SCRIPT, str(release), json.dumps(question)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if completed.returncode:
            raise RuntimeError(f"reloading the release failed:\n{completed.stderr[-3000:]}")
        return completed.stdout.strip()


RELOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModel, AutoProcessor
    release, question = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModel.from_pretrained(release, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(release, trust_remote_code=True)
    video = {"type": "video", "path": question["video"], "start_sec": question["start_sec"]}
    video["end_sec"] = question["end_sec"]
    messages = [{"role": "user", "content": [video, {"type": "text", "text": question["question"]}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    print(f"Q: {question['question']}\\nmodel ({type(model).__name__}, reloaded with trust_remote_code): {answer}\\n"
          f"ground truth: {question['truth']}")
    """
)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from exo2ego_base.provenance import write_json_atomic

    plan = PLANS["quick" if args.quick else "full"]
    if args.vision_steps is not None:
        plan = replace(plan, vision_steps=args.vision_steps)
    if args.egoit_fraction is not None:
        plan = replace(plan, egoit_fraction=args.egoit_fraction)
    out = Path(args.out)
    if out.exists():
        if not any((out / name).exists() for name in (DEMO_MARKER, "summary.json")) and any(out.iterdir()):
            raise SystemExit(f"{out} exists and is not an earlier demo output; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).touch()  # an interrupted demo's folder is replaced by the next run, like a finished one
    demo = Demo(out, plan, args.seed)
    start = time.perf_counter()
    steps = [demo.build_data, demo.build_model, lambda: demo.evaluate("untrained")]
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
    release = demo.release()
    answer = demo.reload_and_answer(release)
    total = time.perf_counter() - start
    summary["total_sec"] = round(total, 1)
    write_json_atomic(out / "summary.json", summary)  # written last: its presence means the run finished

    print("\n" + answer)
    print(f"\n{'checkpoint':<12} {'EgoBench synthetic acc.':>24} {'95% CI':>16} {'n':>5}")
    for point, row in summary["accuracy"].items():
        ci = row["ci"] or [float("nan"), float("nan")]
        print(f"{point:<12} {row['accuracy']:>24.1f} {f'[{ci[0]:.1f}, {ci[1]:.1f}]':>16} {row['n']:>5}")
    untrained, trained = (summary["accuracy"][point]["accuracy"] for point in ("untrained", "stage3"))
    print(f"\nstage 3 vs untrained: {trained:.1f}% vs {untrained:.1f}% ({trained / max(untrained, 1e-9):.1f}x)")
    print(f"release: {release}   report: {out / 'report.md'}   total {total / 60:.1f} min")
    return 0
