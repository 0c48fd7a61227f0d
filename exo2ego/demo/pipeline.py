"""The demo's pipeline: :class:`Demo` runs each phase of a plan into its output folder, through the command or the
training script a user runs on real data, and times it; then it gathers the report's numbers."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from datasets_scripts.hub_export import BUILD_INFO_NAME
from eval.config import RESULTS_NAME
from exo2ego.cli import main as exo2ego_main
from exo2ego.demo.gates import GATES_FILE, measure_gates
from exo2ego.demo.plans import EVAL_POINTS, STAGES, TASKS, DemoPlan
from exo2ego.demo.report import loss_series, plot_accuracy, plot_losses, write_report_markdown
from exo2ego_base.provenance import package_versions


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
        self._timed(phase, lambda: exo2ego_main(list(argv)))

    def script(self, phase: str, *argv: str) -> None:
        """Run a training script (`argv[0]`, e.g. `train/stage2.py`, then its arguments) as `accelerate launch` would
        on one CPU process, in this process: its own entry point (`train.pipeline.main`) with its output in
        `logs/<phase>.log`, without a second interpreter start-up (about 8 s of imports per stage)."""
        # Deferred, heavy: train.pipeline loads transformers' models, peft and trl; exo2ego --help imports this module.
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
            "--fps",
            str(self.plan.fps),
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
            "--connector",
            self.plan.connector,
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
        """Check the world's gates (:func:`exo2ego.demo.gates.measure_gates`) into `gates.json`; returns that."""
        path = self.out / GATES_FILE
        untrained = self.models / "untrained"
        self._timed(
            "gates", lambda: measure_gates(untrained, self.clips, self.world, self.plan.gate_probe, self.seed, path)
        )
        return json.loads(path.read_text())

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
        """Where the pattern is after stages 2 and 3 (`exo2ego.experiments.mapping_probe.pattern_probe`): a linear
        probe fitted on the exo tower's features y, scored on y, F(x) and x of other clips of the world's train
        takes."""
        # Deferred, heavy: the probe and the Exo2Ego model code load transformers' models; exo2ego --help imports
        # this module.
        from exo2ego.experiments.mapping_probe import paired_pattern_clips, pattern_probe
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
        info = json.loads((self.world / "egoit" / BUILD_INFO_NAME).read_text())
        return int(info["counts"]["rows"])

    # -- outputs --------------------------------------------------------------------------------------------------
    def accuracy(self, point: str, task: str = TASKS[0]) -> dict:
        results = json.loads((self.evals / point / RESULTS_NAME).read_text())
        metric = results["tasks"][task]["metrics"]["accuracy"]
        return {"accuracy": metric["value"], "ci": [metric["ci_low"], metric["ci_high"]], "n": metric["n"]}

    def baselines(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per split, the accuracy (%) of answering from the question text alone and of a uniform guess (the world's
        EgoBench build_info)."""
        info = json.loads((self.world / "egobench" / BUILD_INFO_NAME).read_text())["text_only_baseline_by_task"]
        return tuple({task: 100 * info[task][key] for task in TASKS} for key in ("accuracy", "chance"))

    def write_report(self) -> dict:
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
        write_report_markdown(self.out / "report.md", summary, histories)
        return summary
