"""`exo2ego demo`: the whole Exo2Ego pipeline on the embedded synthetic world, ending in a Hub-ready release.

Phases, each through the command or script a user runs on real data (only the sizes and the source differ):

1. `exo2ego data synth` renders the synthetic Ego-Exo world in the Ego-Exo4D layout, with EgoIT, EgoBench,
   EgoClip-style ego captions and a web-exo corpus (separate scenes whose captions name the objects' patterns, the
   world's exo-only knowledge);
2. `exo2ego data ego-exoclip` builds Ego-ExoClip from it (paper eq. 1), `exo2ego data pretrain` the init stage's web
   captions from the web-exo corpus;
3. `exo2ego tiny-model` builds a tiny Exo2Ego with an offline tokenizer, its LLM pretrained on the world's text and
   both vision towers on the web-exo clips (one tower, copied, as both start from one CLIP in the paper), and
   measures what that tower reads in each view;
4. the gates: the pretrained tower reads the pattern on the world's exo views and not on its ego views (the domain
   gap is real), and a tower trained on ego frames reads their colours (`gates.json`);
5. `train/init.py`, `stage1.py`, `stage2.py`, `stage3.py` (what `accelerate launch` runs) train the initialization
   (web captions for the exo tower, EgoClip-style captions for the ego tower) and the three stages, each from the
   previous stage's folder, on `train/configs/tiny_*.yaml` with the plan's step counts and rates;
6. `exo2ego eval` scores both EgoBench splits, `synthetic` (what ego-side text names) and `synthetic_pattern` (the
   exo-only pattern, asked about ego video), for the untrained model and after every stage;
7. `report.md` with the gates, loss curves (VTG, KL, CCL) and accuracy per stage and split beside each split's
   text-only baseline, then `<out>/release/` (ego-only model, processor, model card, results), reloaded in a fresh
   process with `trust_remote_code=True` to answer a question about a held-out ego clip.

EgoBench is scored with `option_loglik` (mean log-probability of each option's text after the question, one cached
prefill per question): it needs the model to describe what the video shows, not to point at option letters, which
a tiny model trained for minutes does not learn (`letter_logprob` stays at chance). The prompt variant is `none` (no
system prompt): the tiny LLM knows only the world's text (EgoIT, Ego-ExoClip, the web-exo captions), and the default
system prompt is made of words it never saw in training.

Before the pipeline, `exo2ego tiny-model --language-*` pretrains the tiny LLM on the text of EgoIT, Ego-ExoClip and the
web-exo captions (`exo2ego.tiny.language`), so that, as Mistral in the paper, it knows the world's language (the
pattern words included, as Mistral has read the web) and stays frozen in init and stages 1-2. README "The demo" has
the measured seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
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
# The world's two EgoBench splits: what ego-side text names (object, colour, action), and the exo-only pattern.
TASKS = ("synthetic", "synthetic_pattern")
GATES_FILE = "gates.json"


@dataclass(frozen=True)
class Gate:
    """A property of the world checked before any training claim: `probe`'s accuracy on `group` (a fraction) lies at
    or above `at_least` / at or below `at_most`."""

    name: str
    description: str
    probe: str  # world_exo | world_ego (the pretrained tower, `vision_pretraining.json`) | ego_trained (gate probe)
    group: str
    at_least: float | None = None
    at_most: float | None = None

    def holds(self, value: float) -> bool:
        return (self.at_least is None or value >= self.at_least) and (self.at_most is None or value <= self.at_most)


GATES = (
    Gate(
        "exo_reads_pattern",
        "tower pretrained on web-exo clips reads the pattern on the world's exo views",
        "world_exo",
        "pattern",
        at_least=0.85,
    ),
    Gate(
        "ego_gap",
        "the same tower reads the pattern on the world's ego views (the domain gap)",
        "world_ego",
        "pattern",
        at_most=0.40,
    ),
    Gate(
        "ego_colour",
        "tower trained on ego frames reads the colour on held-out ego clips",
        "ego_trained",
        "colour",
        at_least=0.85,
    ),
)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run. `full` is the learning run (its time and results: README "The demo"); `quick` only
    proves the wiring."""

    takes: int
    steps: dict[str, int]
    # One object per take: the exo views then show what the ego view shows, so the pattern their features carry is
    # the handled object's (with two, a clip's exo features mix both objects' patterns).
    objects_per_take: int = 1
    batch_size: int = 8
    frames: int = 4
    learning_rate: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 1e-3))
    eval_limit: int | None = None
    eval_batch_size: int = 32  # EgoBench questions prefilled together (`exo2ego eval --batch-size`)
    # Per-module rates (`--vision_tower_lr`, `--mapping_lr`, ...) of a stage, over its `learning_rate`.
    module_learning_rate: dict[str, dict[str, float]] = field(default_factory=dict)
    web_exo_per_take: int = 10  # web-exo clips rendered per take (`exo2ego data synth --web-exo-per-take`)
    language_steps: int = 0  # text-only pretraining of the tiny LLM on EgoIT, Ego-ExoClip and web-exo text
    vision_steps: int = 0  # bag-of-words pretraining of the tiny vision towers on web-exo clips (exo2ego.tiny.vision)
    vision_samples: int = 1536  # web-exo clips decoded for it
    vision_learning_rate: float = 1e-2
    gate_probe: tuple[int, int, int] = (512, 200, 150)  # ego colour gate: training clips, held-out clips, steps
    pattern_probe_clips: tuple[int, int] = (400, 200)  # linear pattern probe on y, F(x), x: fitting, scored clips
    egoit_fraction: float = 1.0  # share of EgoIT stage 3 trains on
    # Which rows a fraction below 1 keeps: drawn at random with this seed (the same rows for every training seed), so
    # they spread over the takes; None keeps the first rows, the first takes only.
    egoit_subset_seed: int | None = 0


PLANS = {
    "full": DemoPlan(
        takes=200,
        steps={"init": 200, "stage1": 100, "stage2": 300, "stage3": 1000},
        # The LLM learns the world's language first (text only) and stays frozen until stage 3, as in the paper.
        # Stage 1 at a tenth of the init rate (Table 14). Stage 2 gives the ego tower and F more learning rate x steps
        # than stage 3 does (0.3 against 0.2), as Table 14 gives stage 2 the larger share of the exo stages: stage 2 is
        # where they learn from the exo tower, stage 3 only adapts them, while its LoRA, lm_head and connector keep
        # the rate they need to learn the instructions (the per-module rate groups).
        learning_rate={"init": 1e-3, "stage1": 1e-4, "stage2": 1e-3, "stage3": 1e-3},
        module_learning_rate={"stage3": {"vision_tower_lr": 2e-4, "mapping_lr": 2e-4}},
        language_steps=300,
        vision_steps=400,
        # Limited egocentric instructions (the paper's premise for the exo stages): a random 10% of EgoIT's rows,
        # about 23 epochs in stage 3.
        egoit_fraction=0.1,
    ),
    "quick": DemoPlan(
        takes=6,
        steps={"init": 4, "stage1": 4, "stage2": 4, "stage3": 6},
        batch_size=4,
        eval_limit=12,
        web_exo_per_take=4,
        language_steps=4,
        vision_steps=2,
        vision_samples=8,
        gate_probe=(8, 4, 2),
        pattern_probe_clips=(12, 8),
        egoit_fraction=0.5,
    ),
}


# `exo2ego ablate`: the full plan with shorter stages 2 and 3, so that eight seeds of the default arms run in about 90
# minutes on 2 cores. Stage 2 keeps the larger learning rate x steps share for the ego tower and F (0.2 against 0.1).
PLANS["ablation"] = replace(PLANS["full"], steps={"init": 200, "stage1": 100, "stage2": 200, "stage3": 500})


def egoit_fraction(text: str) -> float:
    """argparse type of `exo2ego demo --egoit-fraction`: a number in (0, 1]."""
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
        help="pretrain the tiny vision towers on the web-exo clips for this many steps (exo2ego.tiny.vision; "
        "default: the plan's; 0 leaves them random)",
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
        self.world, self.clips, self.web_captions = out / "world", out / "ego-exoclip", out / "web-captions"
        self.models, self.evals = out / "models", out / "eval"
        self.timings: dict[str, float] = {}
        self.train_dir = Path(__import__("train").__file__).parent

    # -- phases ---------------------------------------------------------------------------------------------------
    def cli(self, phase: str, *argv: str) -> None:
        """Run `exo2ego <argv>` in this process (the console script's own entry point)."""
        from exo2ego.cli import main

        self._timed(phase, lambda: main(list(argv)))

    def script(self, phase: str, *argv: str) -> None:
        """Run a training script (`argv[0]`, e.g. `train/stage2.py`, then its arguments) as `accelerate launch` would
        on one CPU process, in this process: its own entry point (`train.pipeline.main`) with its output in
        `logs/<phase>.log`, without a second interpreter start-up (about 8 s of imports per stage)."""
        from train.pipeline import main

        log = self.out / "logs" / f"{phase.replace('/', '_')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)

        def launch():
            handlers = list(logging.root.handlers)
            with log.open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                try:
                    status = main(Path(argv[0]).stem, list(argv[1:]))
                finally:  # a handler the stage added writes to this log file, which closes now
                    for handler in set(logging.root.handlers) - set(handlers):
                        logging.root.removeHandler(handler)
                        handler.close()
            if status:
                raise RuntimeError(f"{phase} failed (exit {status}); see {log}")

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
            "--web-exo-per-take",
            str(self.plan.web_exo_per_take),
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
        self.cli(
            "web captions",
            "data",
            "pretrain",
            "--root",
            f"videollama2={self.world / 'web_exo'}",
            "--out",
            str(self.web_captions),
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
            "--language-captions",
            str(self.web_captions),
            "--language-steps",
            str(self.plan.language_steps),
            "--vision-captions",
            str(self.web_captions),
            "--vision-video-root",
            str(self.world / "web_exo"),
            "--vision-samples",
            str(self.plan.vision_samples),
            "--vision-steps",
            str(self.plan.vision_steps),
            "--vision-learning-rate",
            str(self.plan.vision_learning_rate),
            "--vision-probe-world",
            str(self.world),
        )

    def measure_gates(self) -> dict:
        """Check the world's :data:`GATES` and write `gates.json`: the pretrained tower's probes (from the untrained
        model's `vision_pretraining.json`) and a tower trained on ego frames (`exo2ego.tiny.vision.word_probe`)."""
        from exo2ego.tiny import VISION_REPORT
        from exo2ego.tiny.vision import probe_groups, word_probe
        from exo2ego_base.provenance import write_json_atomic

        def measure():
            report = self.models / "untrained" / VISION_REPORT
            probes = json.loads(report.read_text())["probes"] if report.is_file() else {}
            train, heldout, steps = self.plan.gate_probe
            colours = {"colour": probe_groups()["colour"]}
            ego = word_probe(
                str(self.clips), str(self.world), colours, ("ego",), train, heldout, steps, seed=self.seed
            )
            probes["ego_trained"] = ego["ego"]
            gates = {}
            for gate in GATES:
                value = probes.get(gate.probe, {}).get(gate.group)
                gates[gate.name] = {
                    **asdict(gate),
                    "value": value,
                    "holds": None if value is None else gate.holds(value),
                }
            write_json_atomic(self.out / GATES_FILE, {"gates": gates, "probes": probes})

        self._timed("gates", measure)
        return json.loads((self.out / GATES_FILE).read_text())

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
            ",".join(TASKS),
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
        if stage == "init":  # the paper's two sources: web captions (exo tower), EgoClip-style captions (ego tower)
            data = [
                "--dataset_path",  # in place of the yaml's Ego-ExoClip for both towers
                "",
                "--exo_dataset_path",
                str(self.web_captions),
                "--exo_video_root",
                str(self.world / "web_exo"),
                "--ego_dataset_path",
                str(self.world / "egoclip"),
                "--ego_video_root",
                str(self.world),
            ]
        elif stage != "stage3":
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
            *(f"--{name}={rate}" for name, rate in self.plan.module_learning_rate.get(stage, {}).items()),
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

    def probe_patterns(self) -> dict[str, dict[str, float]]:
        """Where the pattern is after stages 2 and 3 (`exo2ego.mapping_probe.pattern_probe`): a linear probe fitted
        on the exo tower's features y, scored on y, F(x) and x of other clips of the world's train takes."""
        from exo2ego.mapping_probe import paired_pattern_clips, pattern_probe
        from modeling_exo2ego import Exo2EgoProcessor

        result = {}

        def measure():
            train, heldout = self.plan.pattern_probe_clips
            processor = Exo2EgoProcessor.from_pretrained(self.models / "stage2")
            clips = paired_pattern_clips(processor, str(self.world), self.plan.frames, train + heldout, self.seed)
            for stage in ("stage2", "stage3"):
                result[stage] = pattern_probe(self.models / stage, clips, train)

        self._timed("pattern probe", measure)
        return result

    def egoit_rows(self) -> int:
        info = json.loads((self.world / "egoit" / "build_info.json").read_text())
        return int(info["counts"]["rows"])

    # -- outputs --------------------------------------------------------------------------------------------------
    def accuracy(self, point: str, task: str = TASKS[0]) -> dict:
        results = json.loads((self.evals / point / "results.json").read_text())
        metric = results["tasks"][task]["metrics"]["accuracy"]
        return {"accuracy": metric["value"], "ci": [metric["ci_low"], metric["ci_high"]], "n": metric["n"]}

    def baselines(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per split, the accuracy (%) of answering from the question text alone and of a uniform guess (the world's
        EgoBench build_info)."""
        info = json.loads((self.world / "egobench" / "build_info.json").read_text())["text_only_baseline_by_task"]
        return tuple({task: 100 * info[task][key] for task in TASKS} for key in ("accuracy", "chance"))

    def write_report(self) -> dict:
        from exo2ego.demo_report import loss_series, plot_accuracy, plot_losses, write_report
        from exo2ego_base.provenance import package_versions

        plots = self.out / "plots"
        plots.mkdir(exist_ok=True)
        accuracies = {task: {point: self.accuracy(point, task) for point in EVAL_POINTS} for task in TASKS}
        histories = {
            stage: json.loads((self.models / stage / "trainer_state.json").read_text())["log_history"]
            for stage in STAGES
        }
        plot_losses(histories, plots / "losses.png")
        text_only, chance = self.baselines()
        plot_accuracy(accuracies, text_only, plots / "accuracy_per_stage.png")
        summary = {
            "plan": asdict(self.plan),
            "seed": self.seed,
            "versions": package_versions(("torch", "transformers", "peft", "trl", "accelerate")),
            "accuracy": accuracies,
            "text_only_baseline": text_only,
            "chance": chance,
            "gates": json.loads((self.out / GATES_FILE).read_text())["gates"],
            "pattern_probe": self.probe_patterns(),
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


def targets(summary: dict) -> dict[str, bool]:
    """The demo's learning targets: on `synthetic`, stage 3 at least 40% and twice the untrained model; on
    `synthetic_pattern`, stage 3's 95% interval above both chance and the split's text-only baseline (exo knowledge
    reached the ego side; a baseline below chance alone is no bar)."""
    plain, pattern = (summary["accuracy"][task] for task in TASKS)
    untrained, trained = plain["untrained"]["accuracy"], plain["stage3"]["accuracy"]
    bar = max(summary["text_only_baseline"][TASKS[1]], summary["chance"][TASKS[1]])
    return {
        "synthetic: stage 3 >= 40% and >= 2x untrained": trained >= 40.0 and trained >= 2 * untrained,
        "synthetic_pattern: stage 3 CI above chance and the text-only baseline": pattern["stage3"]["ci"][0] > bar,
    }


def print_summary(summary: dict) -> None:
    """The gates, each split's accuracy per checkpoint beside its text-only baseline, and the targets."""
    print("\ngates (measured before training; gates.json):")
    for gate in (summary["gates"][gate.name] for gate in GATES):
        bound = f">= {gate['at_least']:.0%}" if gate["at_least"] is not None else f"<= {gate['at_most']:.0%}"
        verdict = {True: "ok  ", False: "FAIL", None: "n/a "}[gate["holds"]]
        value = "not measured" if gate["value"] is None else f"{gate['value']:.1%}"
        print(f"  {verdict} {gate['description']}: {value} ({bound})")
    header = "".join(f"{task + ' acc. [95% CI]':>34}" for task in TASKS)
    print(f"\n{'checkpoint':<12}{header}")
    for point in EVAL_POINTS:
        cells = []
        for task in TASKS:
            row = summary["accuracy"][task][point]
            ci = row["ci"] or [float("nan"), float("nan")]
            cells.append(f"{row['accuracy']:>18.1f} [{ci[0]:5.1f}, {ci[1]:5.1f}]")
        print(f"{point:<12}{''.join(cells)}")
    baselines = "".join(f"{summary['text_only_baseline'][task]:>18.1f}{'':16}" for task in TASKS)
    print(f"{'text only':<12}{baselines}")
    for target, met in targets(summary).items():
        print(f"{'met    ' if met else 'MISSED '} {target}")


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
    release = demo.release()
    answer = demo.reload_and_answer(release)
    total = time.perf_counter() - start
    summary["total_sec"] = round(total, 1)
    write_json_atomic(out / "summary.json", summary)  # written last: its presence means the run finished

    print("\n" + answer)
    print_summary(summary)
    print(f"release: {release}   report: {out / 'report.md'}   total {total / 60:.1f} min")
    return 0
