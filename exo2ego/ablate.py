"""`exo2ego ablate`: the paper's ablations (Tables 7-8, 15) as a pre-registered experiment on the synthetic world.

Design. Every seed s has its own world (world seed s) and training seed s, and every arm of seed s sees that world
and that data order: arms are paired with the full pipeline seed by seed. An arm is the full pipeline (the demo's
`ablation` plan: init -> stage 1 -> stage 2 -> stage 3 on 10% of EgoIT) with one change (:data:`ARMS`). Runs share
their common prefixes (per seed one world, one base model and, per exo corpus, one init and one stage 1; one stage 2
per stage-2 setting; arms that differ only at test time reuse the trained model), finished folders are reused, so an
interrupted ablation resumes, and `--jobs` runs seeds side by side.

Statistics (`eval.seed_statistics`), per EgoBench split and arm, on the difference arm - full: the two-level
bootstrap (seeds, then held-out takes within each seed) as the primary 95% interval, the paired t-interval over
per-seed differences, the exact sign-flip p-value over seeds and the smallest effect the design detects at 80% power.
A question-level interval appears only labelled as within-seed.

Pre-registration. The hypotheses (:data:`HYPOTHESES`) and their decision rules are written to
`preregistration.md` before the first run; the report quotes that file and gives each hypothesis a verdict (held,
failed, undecided). A folder whose pre-registration differs from the current one is refused, never rewritten.

Mechanism. After stage 2 and stage 3 of every trained arm: a linear probe of the pattern fitted on y and scored on
F(x) and x (`exo2ego.mapping_probe.pattern_probe`), and the connector distances with another take's exo clip as the
other-scene baseline (`exo2ego.mapping_probe.probe_folder`).

Outputs in `--out`: `preregistration.md`, `results.json`, `report.md` and `ablation.png`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from datasets_scripts.synthetic.qa import PATTERN_EGOIT_CONFIG
from exo2ego.demo.plans import TASKS
from exo2ego_base.command_line import add_command

logger = logging.getLogger(__name__)

FULL = "full"
PLAIN, PATTERN = TASKS  # what ego-side text names; the exo-only pattern
NO_PATTERN_CORPUS = "web_without_pattern_words"


@dataclass(frozen=True)
class Arm:
    """One arm: what changes relative to the full pipeline.

    Attributes:
        name: id used in folder names and reports.
        description: what the arm tests, and where the paper has it.
        role: "ablation", "negative control" (must lose the full pipeline's exo-only gain) or "positive control".
        default: part of the default design (the others run with `--arms all`).
        stage2: extra arguments of `train/stage2.py` (the last word wins over config and plan).
        stage3: extra arguments of `train/stage3.py`.
        skip_stages_1_2: stage 3 starts from the init stage's output.
        exo_corpus: "web" (the world's web-exo captions) or `NO_PATTERN_CORPUS` (the same with no pattern named),
            what init trains the exo tower and connector on.
        unmapped_at_test: at test time the LLM reads c(x) in place of c(F(x)) (F set to the identity).
    """

    name: str
    description: str
    role: str = "ablation"
    default: bool = False
    stage2: tuple[str, ...] = ()
    stage3: tuple[str, ...] = ()
    skip_stages_1_2: bool = False
    exo_corpus: str = "web"
    unmapped_at_test: bool = False

    def stage2_key(self) -> tuple:
        """Arms with equal keys share one stage-2 run."""
        return (self.exo_corpus, self.stage2)

    def stage3_key(self) -> tuple:
        """Arms with equal keys share one stage-3 run (they differ at test time only)."""
        return (self.exo_corpus, self.skip_stages_1_2 or self.stage2, self.stage3)


ARMS = (
    Arm(FULL, "init -> stage 1 -> stage 2 (VTG + KL + CCL) -> stage 3 (LoRA), as in the paper", default=True),
    Arm(
        "no_stages_1_2",
        "Table 15: init -> stage 3, without the exo teacher and the mapping training",
        default=True,
        skip_stages_1_2=True,
    ),
    Arm("no_kl", "Table 7 #4: stage 2 without the KL alignment loss", default=True, stage2=("--ablations", "no_kl")),
    Arm(
        "shuffled_pairs",
        "stage 2 on shuffled ego-exo pairs (each ego clip with another take's exo clip; stage 1 reads exo clips only)",
        role="negative control",
        default=True,
        stage2=("--shuffle_pairs", "true"),
    ),
    Arm(
        "unmapped_at_test",
        "the full pipeline's model, reading c(x) in place of c(F(x)) at test time",
        role="negative control",
        default=True,
        unmapped_at_test=True,
    ),
    Arm(
        "no_pattern_words",
        "init's exo corpus with the pattern words removed (no text names the exo-only knowledge)",
        role="negative control",
        default=True,
        exo_corpus=NO_PATTERN_CORPUS,
    ),
    Arm(
        "no_g_ccl", "Table 7 #3: stage 2 without G and the cycle-consistency loss", stage2=("--ablations", "no_g_ccl")
    ),
    Arm("mlp_mapping", "Table 7: F and G as MLPs instead of ResNet blocks", stage2=("--mapping_type", "mlp")),
    Arm("no_lora", "Table 7 #2: stage 3 without LoRA on the LLM", stage3=("--ablations", "no_lora")),
    Arm(
        "exo_tower_trainable",
        "Table 8 #2: the exo tower also trains in stage 2",
        stage2=("--ablations", "exo_tower_trainable"),
    ),
    Arm(
        "kl_gaussian_batch",
        "KL form: Gaussian KL of per-channel moments over the batch (ignores the pairing)",
        stage2=("--kl_mode", "gaussian_batch"),
    ),
    Arm(
        "kl_token_softmax",
        "KL form: per-token softmax over channels (assumes ego and exo patches correspond)",
        stage2=("--kl_mode", "token_softmax"),
    ),
    Arm("kl_pooled", "KL form: softmax over channels of frame-pooled features", stage2=("--kl_mode", "pooled")),
    Arm(
        "shuffled_pairs_gaussian_batch",
        "shuffled pairs under the batch-moment KL: a KL that ignores the pairing should not care (compare with "
        "kl_gaussian_batch)",
        role="negative control",
        stage2=("--kl_mode", "gaussian_batch", "--shuffle_pairs", "true"),
    ),
    Arm(
        "egoit_asks_pattern",
        "stage 3 on EgoIT that also asks the pattern of the train takes' objects (an upper bound)",
        role="positive control",
        stage3=("--dataset_config", PATTERN_EGOIT_CONFIG),
    ),
)
ARMS_BY_NAME = {arm.name: arm for arm in ARMS}
DEFAULT_ARMS = tuple(arm.name for arm in ARMS if arm.default)


@dataclass(frozen=True)
class Hypothesis:
    """A pre-registered claim about `effect` = full - arm (`gain`) or arm - full (`change`) on `split`, in points.

    `gain`: held when, for every arm, the two-level 95% interval's lower bound is above 0 and the estimate is at least
    `threshold`; failed when, for some arm, the interval's upper bound is below `threshold`; undecided otherwise.
    `change`: held when, for every arm, the interval's lower bound is above `threshold` (a negative number: "no arm
    is more than |threshold| points worse"); failed when, for some arm, its upper bound is below `threshold`.
    """

    name: str
    statement: str
    split: str
    arms: tuple[str, ...]
    effect: str  # gain | change
    threshold: float


HYPOTHESES = (
    Hypothesis(
        "exo_stages_teach_the_pattern",
        "On the exo-only split, the full pipeline beats init -> stage 3 (no_stages_1_2) by at least 10 points.",
        PATTERN,
        ("no_stages_1_2",),
        "gain",
        10.0,
    ),
    Hypothesis(
        "kl_teaches_the_pattern",
        "On the exo-only split, the full pipeline beats stage 2 without the KL (no_kl) by at least 10 points.",
        PATTERN,
        ("no_kl",),
        "gain",
        10.0,
    ),
    Hypothesis(
        "no_arm_costs_the_plain_split",
        "On the plain split, neither no_stages_1_2 nor no_kl is more than 5 points worse than the full pipeline.",
        PLAIN,
        ("no_stages_1_2", "no_kl"),
        "change",
        -5.0,
    ),
)


def hypothesis_verdict(hypothesis: Hypothesis, rows: dict[str, dict]) -> str:
    """held / failed / undecided (see :class:`Hypothesis`) from each arm's `compare` row (arm - full, points)."""
    if hypothesis.effect == "gain":  # full - arm: the interval and estimate negated
        gains = [(-rows[a]["two_level_ci"][1], -rows[a]["two_level_ci"][0], -rows[a]["diff"]) for a in hypothesis.arms]
        if all(low > 0 and estimate >= hypothesis.threshold for low, _, estimate in gains):
            return "held"
        return "failed" if any(high < hypothesis.threshold for _, high, _ in gains) else "undecided"
    intervals = [rows[a]["two_level_ci"] for a in hypothesis.arms]
    if all(low > hypothesis.threshold for low, _ in intervals):
        return "held"
    return "failed" if any(high < hypothesis.threshold for _, high in intervals) else "undecided"


@dataclass(frozen=True)
class AblationPlan:
    """Sizes of an ablation: the demo plan each arm runs, the seeds, and the parallel seed jobs."""

    demo: str
    seeds: tuple[int, ...]
    jobs: int = 2


PLANS = {
    "full": AblationPlan(demo="ablation", seeds=tuple(range(8))),
    "quick": AblationPlan(demo="quick", seeds=(0, 1), jobs=1),
}


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


# ---- runs -----------------------------------------------------------------------------------------------------


def finished(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file()


def save_unmapped(model_dir: Path, out: Path) -> Path:
    """Copy the checkpoint in `model_dir` to `out` with F set to the identity, so the LLM reads c(x) where it read
    c(F(x)). F is residual (x + head(...)), so zeroing its last layer makes it the identity exactly."""
    import torch

    from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor

    model = Exo2EgoForConditionalGeneration.from_pretrained(model_dir)
    if not model.config.mapping_residual:
        raise ValueError(f"{model_dir}: F is not residual (mapping_residual=False); zeroing a layer is not identity")
    mapping = model.model.ego_to_exo
    last = mapping.head[-1] if hasattr(mapping, "head") else mapping.fc2
    with torch.no_grad():
        for parameter in last.parameters():
            parameter.zero_()
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    Exo2EgoProcessor.from_pretrained(model_dir).save_pretrained(staging)
    shutil.copy(model_dir / "exo2ego_stage.json", staging / "exo2ego_stage.json")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


class SeedRuns:
    """Trains (or reuses) and evaluates every arm of one seed in `out/seed<S>`, inside a `Demo` of that seed."""

    def __init__(self, demo):
        self.demo, self.models, self.evals = demo, demo.models, demo.evals
        self.corpora = {"web": demo.web_captions, NO_PATTERN_CORPUS: demo.out / "web-captions-no-pattern"}

    def build(self) -> None:
        """The seed's world, Ego-ExoClip, both exo corpora and the base model (each skipped when finished)."""
        demo = self.demo
        built = (demo.world / "egobench", demo.clips / "README.md", demo.web_captions / "README.md")
        if not all(path.exists() for path in built):
            for folder in (demo.world, demo.clips, demo.web_captions):
                shutil.rmtree(folder, ignore_errors=True)
            demo.build_data()
        stripped = self.corpora[NO_PATTERN_CORPUS]
        if not finished(stripped, "README.md"):
            self.write_stripped_corpus(stripped)
        if not finished(self.models / "untrained", "tokenizer.json"):  # written last by `exo2ego tiny-model`
            shutil.rmtree(self.models / "untrained", ignore_errors=True)
            demo.build_model()

    def write_stripped_corpus(self, out: Path) -> None:
        """`exo2ego data pretrain` on the web-exo annotations with the pattern words removed (same videos)."""
        from datasets_scripts.synthetic import web_exo
        from exo2ego_base.provenance import write_json_atomic

        web_root = self.demo.world / web_exo.FOLDER
        annotations = self.demo.out / "web_exo_no_pattern.json"
        records = json.loads((web_root / web_exo.ANNOTATIONS).read_text())
        write_json_atomic(annotations, web_exo.without_pattern_words(records))
        shutil.rmtree(out, ignore_errors=True)
        self.demo.cli(
            "web captions without pattern words",
            "data",
            "pretrain",
            "--root",
            f"videollama2={web_root}",
            "--annotations",
            f"videollama2={annotations}",
            "--out",
            str(out),
        )

    def train(self, stage: str, start: Path, output: Path, extra: tuple[str, ...] = (), corpus: str = "web") -> Path:
        if not finished(output, "exo2ego_stage.json"):
            shutil.rmtree(output, ignore_errors=True)  # an interrupted run: start it again
            self.demo.web_captions = self.corpora[corpus]  # what init reads for the exo tower
            self.demo.train(stage, start, output=output, extra=extra, phase=f"{output.name}")
        return output

    def evaluate(self, model: Path, name: str) -> Path:
        out = self.evals / name
        if not finished(out, "results.json"):
            shutil.rmtree(out, ignore_errors=True)
            self.demo.evaluate(name, model=model, out=out)
        return out

    def run(self, arms: tuple[Arm, ...]) -> dict:
        """Every arm of this seed: `{"evals": {arm: EgoBench folder}, "stage2": {arm: folder}, "stage3": {arm:
        folder}}`, the last two for the arms that trained their own stage 3 after a stage 2."""
        self.build()
        base, prefixes, stage2_runs, stage3_runs = self.models / "untrained", {}, {}, {}
        result = {"evals": {}, "stage2": {}, "stage3": {}}
        for arm in arms:
            suffix = "" if arm.exo_corpus == "web" else "_no_pattern"
            if arm.exo_corpus not in prefixes:
                init = self.train("init", base, self.models / f"init{suffix}", corpus=arm.exo_corpus)
                prefixes[arm.exo_corpus] = init
            init = prefixes[arm.exo_corpus]
            if arm.skip_stages_1_2:
                start, stage3_extra = init, ("--allow_stage_mismatch", "true")
            else:
                if arm.stage2_key() not in stage2_runs:
                    stage1 = self.train("stage1", init, self.models / f"stage1{suffix}")
                    stage2_runs[arm.stage2_key()] = self.train(
                        "stage2", stage1, self.models / f"stage2_{arm.name}", arm.stage2
                    )
                start, stage3_extra = stage2_runs[arm.stage2_key()], ()
            if arm.stage3_key() not in stage3_runs:
                output = self.models / f"stage3_{arm.name}"
                stage3_runs[arm.stage3_key()] = self.train("stage3", start, output, stage3_extra + arm.stage3)
                if not arm.skip_stages_1_2:  # the mechanism probes read each trained stage 2 and stage 3 once
                    result["stage2"][arm.name], result["stage3"][arm.name] = start, stage3_runs[arm.stage3_key()]
            model = stage3_runs[arm.stage3_key()]
            if arm.unmapped_at_test:
                unmapped = self.models / f"{model.name}_unmapped"
                model = unmapped if finished(unmapped, "exo2ego_stage.json") else save_unmapped(model, unmapped)
            result["evals"][arm.name] = self.evaluate(model, arm.name)
        return result

    def mechanism(self, result: dict) -> dict:
        """Per trained arm, after stage 2 and stage 3: the pattern probe and the connector distances."""
        from exo2ego.mapping_probe import paired_pattern_clips, pattern_probe, probe_folder
        from exo2ego_base.provenance import write_json_atomic
        from modeling_exo2ego import Exo2EgoProcessor

        out = self.demo.out / "mechanism.json"
        if out.is_file():
            return json.loads(out.read_text())
        plan, demo = self.demo.plan, self.demo
        train, heldout = plan.pattern_probe_clips
        processor = Exo2EgoProcessor.from_pretrained(self.models / "untrained")
        clips = paired_pattern_clips(processor, str(demo.world), plan.frames, train + heldout, demo.seed)
        probes = {}
        for arm, stage2 in result["stage2"].items():
            probes[arm] = {
                stage: {
                    "pattern_probe": pattern_probe(folder, clips, train),
                    "distances": probe_folder(folder, str(demo.clips), str(demo.world), plan.frames, seed=demo.seed),
                }
                for stage, folder in (("stage2", stage2), ("stage3", result["stage3"][arm]))
            }
        write_json_atomic(out, probes)
        return probes


def run_seed(out: str, demo_plan, seed: int, arm_names: tuple[str, ...], threads: int) -> dict:
    """One seed's whole work (a `--jobs` worker process): its log goes to `seed<S>/ablate.log`."""
    import torch

    from exo2ego.demo.pipeline import Demo

    torch.set_num_threads(threads)
    runs = SeedRuns(Demo(Path(out) / f"seed{seed}", demo_plan, seed))
    runs.demo.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (
        open(runs.demo.out / "ablate.log", "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        result = runs.run(tuple(ARMS_BY_NAME[name] for name in arm_names))
        mechanism = runs.mechanism(result)
    return {
        "evals": {arm: str(path) for arm, path in result["evals"].items()},
        "mechanism": mechanism,
        "timings_sec": {phase: round(seconds, 1) for phase, seconds in runs.demo.timings.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }


# ---- statistics -----------------------------------------------------------------------------------------------


def seed_correctness(eval_dir: Path, task: str) -> dict[str, tuple[float, str]]:
    """question id -> (correct 0/1, take) of one EgoBench run; the synthetic ids read `<task>/<take>/<action>/...`."""
    from eval.records import task_records

    records = task_records(eval_dir, task)
    if not records:
        raise ValueError(f"{eval_dir} has no {task} predictions")
    return {qid: (float(bool(record["correct"])), qid.split("/")[1]) for qid, record in records.items()}


def summarise(evals: dict[int, dict[str, str]], arm_names: tuple[str, ...]) -> dict:
    """Per split and arm: accuracy per seed and `eval.seed_statistics.compare` of arm - full (points)."""
    from eval.seed_statistics import SeedRun, compare

    results = {}
    for task in TASKS:
        per_seed = {
            seed: {arm: seed_correctness(Path(dirs[arm]), task) for arm in arm_names} for seed, dirs in evals.items()
        }
        rows = {}
        for arm in arm_names:
            runs = []
            for seed, by_arm in sorted(per_seed.items()):
                full, other = by_arm[FULL], by_arm[arm]
                if set(full) != set(other):
                    raise ValueError(f"seed {seed}: {arm} and {FULL} answered different {task} questions")
                ids = sorted(full)
                runs.append(
                    SeedRun(
                        arm=np.array([other[qid][0] for qid in ids]),
                        full=np.array([full[qid][0] for qid in ids]),
                        clusters=np.array([full[qid][1] for qid in ids]),
                    )
                )
            accuracy = [100 * float(run.arm.mean()) for run in runs]
            rows[arm] = {"accuracy": float(np.mean(accuracy)), "accuracy_per_seed": accuracy, **compare(runs)}
        results[task] = rows
    return results


# ---- report ---------------------------------------------------------------------------------------------------


def preregistration_text(arm_names: tuple[str, ...], plan: AblationPlan, demo_plan) -> str:
    lines = [
        "# Pre-registration",
        "",
        "Written before any run of this folder; the report quotes it and never rewrites it.",
        "",
        f"Arms: {', '.join(arm_names)}. Seeds: {list(plan.seeds)} (world seed = training seed = s). Demo plan "
        f"`{plan.demo}`: `{json.dumps(asdict(demo_plan))}`.",
        "",
        "Primary statistic: per split, arm - full pipeline in points, with the two-level bootstrap 95% interval "
        "(seeds, then held-out takes within each seed; `eval.seed_statistics`).",
        "",
        "## Hypotheses",
        "",
    ]
    for hypothesis in HYPOTHESES:
        if hypothesis.effect == "gain":
            rule = (
                f"held if, for {', '.join(hypothesis.arms)}, full - arm has a lower bound above 0 and an estimate of "
                f"at least {hypothesis.threshold:+.0f} points; failed if its upper bound is below "
                f"{hypothesis.threshold:+.0f}; undecided otherwise"
            )
        else:
            rule = (
                f"held if, for each of {', '.join(hypothesis.arms)}, arm - full has a lower bound above "
                f"{hypothesis.threshold:+.0f} points; failed if one has an upper bound below "
                f"{hypothesis.threshold:+.0f}; undecided otherwise"
            )
        lines.append(f"- **{hypothesis.name}** (`{hypothesis.split}`): {hypothesis.statement} Rule: {rule}.")
    lines += [
        "",
        "## Controls",
        "",
        "- `shuffled_pairs`, `unmapped_at_test`, `no_pattern_words` must lose any exo-only gain of the full pipeline "
        "(their full - arm on the exo-only split should match full - no_stages_1_2).",
        "- `shuffled_pairs_gaussian_batch` (with `--arms all`): a KL that ignores the pairing should score like "
        "`kl_gaussian_batch`.",
    ]
    return "\n".join(lines) + "\n"


def write_preregistration(out: Path, text: str) -> None:
    from exo2ego_base.provenance import write_text_atomic

    path = out / "preregistration.md"
    if path.is_file():
        if path.read_text() != text:
            raise SystemExit(f"{path} pre-registers another design; use another --out (it is never rewritten)")
        return
    write_text_atomic(path, text)


def plot(results: dict, seeds: list[int], path: Path) -> None:
    """Per split, each arm's difference to the full pipeline: the two-level 95% interval (thick), the paired
    t-interval over seeds (thin) and each seed's difference (dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False, sharey=True)
    for axis, (task, rows) in zip(axes[0], results.items()):
        names = [name for name in rows if name != FULL]
        for y, name in enumerate(names):
            row = rows[name]
            axis.plot(row["t_ci"], [y, y], color="grey", linewidth=1)
            axis.plot(row["two_level_ci"], [y, y], color="tab:blue", linewidth=5, alpha=0.6)
            axis.scatter(row["per_seed"], [y] * len(row["per_seed"]), color="black", s=10, zorder=3)
            axis.scatter([row["diff"]], [y], color="tab:red", marker="|", s=200, zorder=4)
        axis.set_yticks(range(len(names)), names)
        axis.axvline(0, color="black", linewidth=1)
        axis.set_title(f"{task}: full {rows[FULL]['accuracy']:.1f}% ({len(seeds)} seeds)")
        axis.set_xlabel("arm - full (points): two-level 95% CI (blue), t-interval (grey), seeds (dots)")
    axes[0][0].invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def mechanism_table(mechanism: dict[str, dict]) -> list[str]:
    """Mean over seeds of the pattern probe and the connector distances, per arm and stage."""
    lines = [
        "| arm | after | probe on y | probe on F(x) | probe on x | own probe on x | c(F(x))-c(y) | c(x)-c(y) | "
        "c(F(x))-c(y) of another take |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    seeds = list(mechanism.values())
    for arm in seeds[0]:
        for stage in ("stage2", "stage3"):
            probes = [seed[arm][stage] for seed in seeds]

            def mean(group, key):
                return float(np.mean([probe[group][key] for probe in probes]))

            probe = [100 * mean("pattern_probe", key) for key in ("y", "F(x)", "x", "x (own probe)")]
            distance = [mean("distances", key) for key in ("fx_to_y", "x_to_y", "fx_to_other_y")]
            lines.append(
                f"| {arm} | {stage} | "
                + " | ".join(f"{value:.1f}%" for value in probe)
                + " | "
                + " | ".join(f"{value:.3f}" for value in distance)
                + " |"
            )
    return lines


def write_report(path: Path, summary: dict, preregistration: str) -> None:
    lines = [
        "# Exo2Ego ablations on the synthetic Ego-Exo world (paper Tables 7-8, 15)",
        "",
        f"Command: `{summary['command']}`. Machine: {summary['machine']}. Code: git {summary['git']['commit']} "
        f"(dirty: {summary['git']['dirty']}); versions: {json.dumps(summary['versions'])}. Total "
        f"{summary['total_sec'] / 60:.1f} min with {summary['jobs']} seed job(s).",
        "",
        preregistration.replace("# Pre-registration", "## Pre-registration (quoted)", 1),
        "## Verdicts",
        "",
    ]
    for name, verdict in summary["verdicts"].items():
        lines.append(f"- **{name}**: {verdict}")
    for task, rows in summary["results"].items():
        lines += [
            "",
            f"## `{task}` (arm - full, points)",
            "",
            "| arm | role | accuracy | diff | two-level 95% CI | t 95% CI | sign-flip p | 80%-power MDE | per seed | "
            "within-seed question CI |",
            "|---|---|---:|---:|---|---|---:|---:|---|---|",
        ]
        for name, row in rows.items():
            role = summary["arms"][name]["role"]
            within = row["within_seed_question_ci"]
            within = f"[{within[0]:+.1f}, {within[1]:+.1f}]" if within else "n/a"
            lines.append(
                f"| {name} | {role} | {row['accuracy']:.1f} | {row['diff']:+.1f} | "
                f"[{row['two_level_ci'][0]:+.1f}, {row['two_level_ci'][1]:+.1f}] | "
                f"[{row['t_ci'][0]:+.1f}, {row['t_ci'][1]:+.1f}] | {row['sign_flip_p']:.3f} | {row['mde_80']:.1f} | "
                + ", ".join(f"{value:+.1f}" for value in row["per_seed"])
                + f" | {within} |"
            )
    lines += [
        "",
        "![differences](ablation.png)",
        "",
        "## Where the pattern is (mean over seeds)",
        "",
        "Linear probe of the pattern fitted on the exo tower's clip moments y, scored on y, F(x) and x of other clips "
        "(chance 20%); connector distances relative to ||c(y)||, the last against the exo clip of another take.",
        "",
        *mechanism_table(summary["mechanism"]),
        "",
        "## Arms",
        "",
        *(f"- `{name}` ({arm['role']}): {arm['description']}" for name, arm in summary["arms"].items()),
    ]
    path.write_text("\n".join(lines) + "\n")


def machine_name() -> str:
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor() or platform.machine()


def run(args: AblateArguments) -> int:
    from tqdm.auto import tqdm

    from eval.provenance import git_revision
    from exo2ego.demo.plans import PLANS as DEMO_PLANS
    from exo2ego_base.provenance import package_versions, write_json_atomic

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
