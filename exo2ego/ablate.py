"""`exo2ego ablate`: the synthetic-world analogue of the paper's Tables 7-8 and 15.

Every variant of :data:`VARIANTS` runs the demo's pipeline (same world, same tiny base model, same step counts and
the same stage-3 budget) with one change, over several seeds and two EgoIT sizes (all instructions, and a limited
fraction of them, its rows drawn as the demo plan's `egoit_subset_seed` says). Runs share what they have in common:
per seed, one base model, one init and one stage 1; one stage 2 per distinct stage-2 setting; one stage 3 and one
EgoBench run per variant and EgoIT size. Finished folders are kept, so an interrupted ablation resumes where it
stopped.

Statistics (:func:`paired_summary`), all on the same EgoBench questions:

- a variant's accuracy is the mean over seeds and questions; its 95% interval is a percentile bootstrap over
  questions of the per-question accuracy averaged over seeds;
- its paired difference to the full pipeline is the mean over questions of (variant - full), each side averaged
  over seeds; its 95% interval bootstraps those per-question differences (a paired bootstrap).

Outputs in `--out`: `results.json`, `report.md` (tables, exact commands) and `ablation.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from exo2ego.demo import egoit_fraction

logger = logging.getLogger(__name__)

FULL = "full"
TASK = "synthetic"


@dataclass(frozen=True)
class Variant:
    """One row of the ablation table: what changes relative to the full pipeline.

    Attributes:
        name: id used in folder names and reports.
        description: what the row tests, and where the paper has it.
        stage2: extra arguments of `train/stage2.py` (the last word wins over config and plan).
        stage3: extra arguments of `train/stage3.py`.
        skip_stages_1_2: stage 3 starts from the init stage's output.
    """

    name: str
    description: str
    stage2: tuple[str, ...] = ()
    stage3: tuple[str, ...] = ()
    skip_stages_1_2: bool = False

    def stage2_key(self) -> str:
        """Variants with equal keys share one stage-2 run."""
        return json.dumps(self.stage2)


# The whole ablation in one table. The full pipeline's KL form is stage 2's default (`kl_mode: gaussian`, the paper's
# per-sample form on each ego-exo pair).
VARIANTS = (
    Variant(FULL, "init -> stage 1 -> stage 2 (VTG + KL + CCL) -> stage 3 (LoRA), as in the paper"),
    Variant(
        "no_stages_1_2",
        "Table 15: init -> stage 3, without the exo teacher and the mapping training",
        skip_stages_1_2=True,
    ),
    Variant("no_kl", "Table 7 #4: stage 2 without the KL alignment loss", stage2=("--ablations", "no_kl")),
    Variant(
        "no_g_ccl", "Table 7 #3: stage 2 without G and the cycle-consistency loss", stage2=("--ablations", "no_g_ccl")
    ),
    Variant("mlp_mapping", "Table 7: F and G as MLPs instead of ResNet blocks", stage2=("--mapping_type", "mlp")),
    Variant("no_lora", "Table 7 #2: stage 3 without LoRA on the LLM", stage3=("--ablations", "no_lora")),
    Variant(
        "kl_token_softmax",
        "KL form: per-token softmax over channels (assumes ego and exo patches correspond)",
        stage2=("--kl_mode", "token_softmax"),
    ),
    Variant("kl_pooled", "KL form: softmax over channels of frame-pooled features", stage2=("--kl_mode", "pooled")),
    Variant(
        "kl_gaussian_batch",
        "KL form: Gaussian KL of per-channel moments over the batch (ignores which exo clip goes with which ego clip)",
        stage2=("--kl_mode", "gaussian_batch"),
    ),
)
VARIANTS_BY_NAME = {variant.name: variant for variant in VARIANTS}


@dataclass(frozen=True)
class AblationPlan:
    """Sizes of an ablation: the demo plan it runs, its seeds, the limited EgoIT fraction, and the sizes of the
    vision probe (`exo2ego.tiny_vision.word_probe`: training clips, held-out clips, steps)."""

    demo: str
    seeds: tuple[int, ...]
    egoit_fractions: tuple[float, ...]
    probe: tuple[int, int, int] = (1024, 200, 300)


PLANS = {
    "full": AblationPlan(demo="full", seeds=(0, 1, 2), egoit_fractions=(1.0, 0.1)),
    "quick": AblationPlan(demo="quick", seeds=(0, 1), egoit_fractions=(1.0, 0.5), probe=(12, 6, 2)),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ablate", help="the paper's ablations (Tables 7-8, 15) on the synthetic world")
    parser.add_argument("--out", default="ablation_out", help="output folder (finished runs in it are reused)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes that only prove the wiring")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: the plan's)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS_BY_NAME), help="default: all")
    parser.add_argument("--egoit-fractions", type=egoit_fraction, nargs="+", help="EgoIT fractions (default: 1.0 0.1)")
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the synthetic world every run shares")
    parser.add_argument("--stage3-steps", type=int, help="stage-3 budget of every variant (default: the demo plan's)")
    parser.add_argument("--results", help="also copy results.json here (e.g. benchmarks/results/ablation.json)")
    parser.set_defaults(func=run)


# ---- statistics -----------------------------------------------------------------------------------------------


def correctness_matrix(eval_dirs: list[Path], question_ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(question ids, correct (seeds, questions) as 0/1) from EgoBench run folders, one per seed."""
    from eval.records import task_records

    rows = []
    for folder in eval_dirs:
        records = task_records(folder, TASK)
        if question_ids is None:
            question_ids = sorted(records)
        missing = [qid for qid in question_ids if qid not in records]
        if missing:
            raise ValueError(f"{folder} has no prediction for {len(missing)} question(s), e.g. {missing[:3]}")
        rows.append([float(bool(records[qid]["correct"])) for qid in question_ids])
    return question_ids, np.array(rows)


def paired_summary(variant: np.ndarray, full: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Accuracy of `variant` and its paired difference to `full`, in percent.

    Args:
        variant, full: correctness (seeds, questions), 0/1, the same questions in the same order; seeds may differ
            in number.
    Returns:
        `accuracy`, `ci` (bootstrap over questions of the seed-averaged correctness), `per_seed`, `diff`
        (variant - full) and `diff_ci` (paired bootstrap of the per-question differences).
    """
    from eval.metrics import bootstrap_mean_ci

    if variant.shape[1] != full.shape[1]:
        raise ValueError(f"{variant.shape[1]} questions against {full.shape[1]}: a paired difference needs the same")
    per_question = variant.mean(0)
    differences = per_question - full.mean(0)
    accuracy_ci = bootstrap_mean_ci(per_question, resamples=resamples, seed=seed)
    diff_ci = bootstrap_mean_ci(differences, resamples=resamples, seed=seed)
    return {
        "accuracy": 100 * float(per_question.mean()),
        "ci": [100 * accuracy_ci.low, 100 * accuracy_ci.high],
        "per_seed": [100 * float(row.mean()) for row in variant],
        "diff": 100 * float(differences.mean()),
        "diff_ci": [100 * diff_ci.low, 100 * diff_ci.high],
        "n_questions": int(variant.shape[1]),
        "n_seeds": int(variant.shape[0]),
    }


# ---- runs -----------------------------------------------------------------------------------------------------


def setting_name(fraction: float) -> str:
    return "egoit_all" if fraction >= 1.0 else f"egoit_{round(100 * fraction)}pct"


class Ablation:
    """Runs (or reuses) every training and evaluation one seed needs, inside a `Demo` of that seed."""

    def __init__(self, out: Path, plan: AblationPlan, world_seed: int, stage3_steps: int | None = None):
        from exo2ego.demo import PLANS as DEMO_PLANS

        self.out, self.plan, self.world_seed = out, plan, world_seed
        self.demo_plan = DEMO_PLANS[plan.demo]
        if stage3_steps:
            self.demo_plan = replace(self.demo_plan, steps={**self.demo_plan.steps, "stage3": stage3_steps})
        self.shared = out / "shared"

    def demo(self, seed: int):
        from exo2ego.demo import Demo

        demo = Demo(self.out / f"seed{seed}", self.demo_plan, seed)
        demo.world, demo.clips = self.shared / "world", self.shared / "ego-exoclip"
        demo.web_captions = self.shared / "web-captions"
        demo.out.mkdir(parents=True, exist_ok=True)
        return demo

    def build_world(self) -> None:
        built = ("world/egobench", "ego-exoclip/README.md", "web-captions/README.md")
        if all((self.shared / name).exists() for name in built):
            return
        if self.shared.exists():
            shutil.rmtree(self.shared)
        self.shared.mkdir(parents=True)
        builder = self.demo(self.world_seed)
        builder.out = self.shared
        builder.build_data()

    @staticmethod
    def finished(folder: Path, marker: str) -> bool:
        return (folder / marker).is_file()

    def train(
        self, demo, stage: str, start: Path, output: Path, extra: tuple[str, ...] = (), egoit_fraction: float = 1.0
    ) -> Path:
        if not self.finished(output, "exo2ego_stage.json"):
            if output.exists():
                shutil.rmtree(output)  # an interrupted run: start it again
            phase = str(output.relative_to(self.out))
            demo.train(stage, start, output=output, extra=extra, phase=phase, egoit_fraction=egoit_fraction)
        return output

    def evaluate(self, demo, model: Path, out: Path) -> Path:
        if not self.finished(out, "results.json"):
            demo.evaluate(str(out.relative_to(self.out)), model=model, out=out)
        return out

    def run_seed(self, seed: int, variants: tuple[Variant, ...], fractions: tuple[float, ...]) -> dict:
        """EgoBench folders of every (setting, variant) for one seed."""
        demo = self.demo(seed)
        models = demo.models
        base = models / "untrained"
        if not (base / "tokenizer.json").is_file():  # written last by `exo2ego tiny-model`
            if base.exists():
                shutil.rmtree(base)
            demo.build_model()
        init = self.train(demo, "init", base, models / "init")
        stage1 = None
        stage2 = {}
        evals = {}
        for variant in variants:
            if variant.skip_stages_1_2:
                start, stage3_extra = init, ("--allow_stage_mismatch", "true")
            else:
                stage1 = stage1 or self.train(demo, "stage1", init, models / "stage1")
                key = variant.stage2_key()
                if key not in stage2:
                    stage2[key] = self.stage2(demo, stage1, variant)
                start, stage3_extra = stage2[key], ()
            for fraction in fractions:
                setting = setting_name(fraction)
                output = models / f"stage3_{setting}_{variant.name}"
                stage3 = self.train(demo, "stage3", start, output, stage3_extra + variant.stage3, fraction)
                evals[(setting, variant.name)] = self.evaluate(demo, stage3, demo.evals / f"{setting}_{variant.name}")
        return evals

    def stage2(self, demo, stage1: Path, variant: Variant) -> Path:
        name = "stage2_full" if not variant.stage2 else f"stage2_{variant.name}"
        output = demo.models / name
        if self.finished(output, "exo2ego_stage.json"):
            return output
        return self.train(demo, "stage2", stage1, output, variant.stage2)

    def mapping_distances(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per seed and stage-2 run: where the connector puts F(x) relative to y (`exo2ego.mapping_probe`)."""
        from exo2ego.mapping_probe import probe_folder

        distances = {}
        for seed in self.plan.seeds:
            models = self.out / f"seed{seed}" / "models"
            distances[f"seed{seed}"] = {
                folder.name: probe_folder(
                    folder,
                    str(self.shared / "ego-exoclip"),
                    str(self.shared / "world"),
                    self.demo_plan.frames,
                    seed=seed,
                )
                for folder in sorted(models.glob("stage2_*"))
                if (folder / "exo2ego_stage.json").is_file()
            }
        return distances

    def vision_probe(self) -> dict[str, dict[str, float]]:
        """What a tiny tower learns to see from exo and from ego frames of the shared world (`word_probe`)."""
        from datasets_scripts.synthetic.script import COLOURS, SHAPES
        from exo2ego.tiny_vision import word_probe

        train, heldout, steps = self.plan.probe
        return word_probe(
            str(self.shared / "ego-exoclip"),
            str(self.shared / "world"),
            {"colour": tuple(COLOURS), "shape": SHAPES},
            train_samples=train,
            heldout_samples=heldout,
            steps=steps,
            num_frames=self.demo_plan.frames,
            seed=self.world_seed,
        )


def summarise(eval_dirs: dict[int, dict[tuple[str, str], Path]], variants, fractions) -> dict:
    """Per setting and variant: accuracy, CI and paired difference to the full pipeline (see `paired_summary`)."""
    seeds = sorted(eval_dirs)
    results = {}
    for fraction in fractions:
        setting = setting_name(fraction)
        question_ids, full = correctness_matrix([eval_dirs[seed][(setting, FULL)] for seed in seeds])
        rows = {}
        for variant in variants:
            _, correct = correctness_matrix([eval_dirs[seed][(setting, variant.name)] for seed in seeds], question_ids)
            rows[variant.name] = paired_summary(correct, full)
        results[setting] = {"egoit_fraction": fraction, "variants": rows}
    return results


def plot(results: dict, path: Path) -> None:
    """One panel per EgoIT setting: each variant's paired difference to the full pipeline with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(results)
    figure, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.8), squeeze=False, sharey=True)
    for axis, setting in zip(axes[0], settings):
        rows = results[setting]["variants"]
        names = [name for name in rows if name != FULL]
        diffs = [rows[name]["diff"] for name in names]
        errors = [
            [diff - rows[name]["diff_ci"][0] for name, diff in zip(names, diffs)],
            [rows[name]["diff_ci"][1] - diff for name, diff in zip(names, diffs)],
        ]
        axis.barh(names, diffs, xerr=errors, capsize=3, color=["tab:red" if d < 0 else "tab:blue" for d in diffs])
        axis.axvline(0, color="black", linewidth=1)
        full = rows[FULL]
        axis.set_title(f"{setting}: full pipeline {full['accuracy']:.1f}%")
        axis.set_xlabel("accuracy - full pipeline (points; paired 95% CI)")
    axes[0][0].invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(path: Path, summary: dict, command: str) -> None:
    lines = [
        "# Exo2Ego ablations on the synthetic Ego-Exo world (paper Tables 7-8, 15)",
        "",
        f"Command: `{command}`",
        "",
        (
            f"Seeds {summary['seeds']}, world seed {summary['world_seed']}, demo plan `{summary['plan']['demo']}` "
            f"(`{json.dumps(summary['demo_plan'])}`); every variant has the same stage-3 budget. Machine: "
            f"{summary['machine']}. Code: git {summary['git']['commit']} (dirty: {summary['git']['dirty']}); "
            f"versions: {json.dumps(summary['versions'])}."
        ),
        "",
        (
            "Accuracy: mean over seeds and EgoBench questions; CI: percentile bootstrap over questions of the "
            "seed-averaged correctness. Difference: variant - full pipeline on the same questions, with a paired "
            "bootstrap 95% CI (questions are resampled, seeds are not: read the per-seed column too)."
        ),
        "",
    ]
    for setting, block in summary["results"].items():
        lines += [
            f"## {setting} (EgoIT fraction {block['egoit_fraction']})",
            "",
            "| variant | accuracy (%) | 95% CI | per seed | diff to full (points) | paired 95% CI |",
            "|---|---:|---|---|---:|---|",
        ]
        for name, row in block["variants"].items():
            per_seed = ", ".join(f"{value:.1f}" for value in row["per_seed"])
            lines.append(
                f"| {name} | {row['accuracy']:.1f} | [{row['ci'][0]:.1f}, {row['ci'][1]:.1f}] | {per_seed} | "
                f"{row['diff']:+.1f} | [{row['diff_ci'][0]:+.1f}, {row['diff_ci'][1]:+.1f}] |"
            )
        lines.append("")
    lines += [
        "![paired differences](ablation.png)",
        "",
        "## Where the connector puts F(x) (`exo2ego.mapping_probe`)",
        "",
        (
            "Relative distances on 64 Ego-ExoClip pairs: c(F(x)) to c(y) of the same clip, c(x) to c(y), "
            "c(F(x)) to another clip's c(y), and how far F moves x."
        ),
        "",
        "| seed | stage 2 | c(F(x))-c(y) | c(x)-c(y) | c(F(x))-other c(y) | ||F(x)-x|| / ||x|| |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for seed, runs in summary["mapping_distances"].items():
        for name, d in runs.items():
            lines.append(
                f"| {seed} | {name} | {d['fx_to_y']:.3f} | {d['x_to_y']:.3f} | {d['fx_to_other_y']:.3f} | "
                f"{d['f_moves_x']:.3f} |"
            )
    train, heldout, steps = summary["plan"]["probe"]
    lines += [
        "",
        "## What a tiny vision tower can see (`exo2ego.tiny_vision.word_probe`)",
        "",
        (
            f"A fresh tiny tower per view, pretrained {steps} steps to predict the narration's words from "
            f"{train} clips of that view only; top-1 accuracy among the group's words on {heldout} held-out clips "
            "whose narration names one (chance: 1 / group size)."
        ),
        "",
        "| view | " + " | ".join(next(iter(summary["vision_probe"].values()))) + " |",
        "|---|" + "---:|" * len(next(iter(summary["vision_probe"].values()))),
    ]
    for view, groups in summary["vision_probe"].items():
        lines.append(f"| {view} | " + " | ".join(f"{100 * value:.1f}%" for value in groups.values()) + " |")
    lines += ["", "## Variants", ""]
    lines += [f"- `{variant['name']}`: {variant['description']}" for variant in summary["variants"]]
    path.write_text("\n".join(lines) + "\n")


def machine_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record_sizes(out: Path, sizes: dict) -> None:
    """Write `sizes` to `out/ablation_sizes.json`, refusing a folder whose finished runs (which are reused) came from
    other sizes. Two fields of the demo plan do not count: its EgoIT fraction (each stage-3 run is given its setting's
    fraction, which its folder names) and the EgoBench batch size (batched scores equal one-at-a-time ones)."""
    from exo2ego_base.provenance import write_json_atomic

    def key(recorded: dict) -> dict:
        ignored = ("egoit_fraction", "eval_batch_size")
        plan = {name: value for name, value in recorded["demo_plan"].items() if name not in ignored}
        return json.loads(json.dumps({**recorded, "demo_plan": plan}))

    path = out / "ablation_sizes.json"
    if path.is_file() and key(json.loads(path.read_text())) != key(sizes):
        raise SystemExit(f"{out} holds runs of other sizes ({path}); use another --out")
    write_json_atomic(path, sizes)


def run(args: argparse.Namespace) -> int:
    from eval.provenance import git_revision
    from exo2ego_base.provenance import package_versions, write_json_atomic

    plan = PLANS["quick" if args.quick else "full"]
    if args.seeds:
        plan = replace(plan, seeds=tuple(args.seeds))
    if args.egoit_fractions:
        plan = replace(plan, egoit_fractions=tuple(args.egoit_fractions))
    variants = tuple(VARIANTS_BY_NAME[name] for name in args.variants) if args.variants else VARIANTS
    if variants[0].name != FULL:
        variants = (VARIANTS_BY_NAME[FULL],) + tuple(v for v in variants if v.name != FULL)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ablation = Ablation(out, plan, args.world_seed, args.stage3_steps)
    record_sizes(out, {"demo_plan": asdict(ablation.demo_plan), "world_seed": args.world_seed})
    start = time.perf_counter()
    ablation.build_world()
    eval_dirs = {seed: ablation.run_seed(seed, variants, plan.egoit_fractions) for seed in plan.seeds}
    summary = {
        "command": "exo2ego " + " ".join(shlex.quote(word) for word in sys.argv[1:]),
        "plan": asdict(plan),
        "demo_plan": asdict(ablation.demo_plan),
        "seeds": list(plan.seeds),
        "world_seed": args.world_seed,
        "machine": machine_name(),
        "git": git_revision(),
        "versions": package_versions(("torch", "transformers", "peft", "trl", "accelerate", "datasets")),
        "variants": [asdict(variant) for variant in variants],
        "results": summarise(eval_dirs, variants, plan.egoit_fractions),
        "mapping_distances": ablation.mapping_distances(),
        "vision_probe": ablation.vision_probe(),
        "total_sec": round(time.perf_counter() - start, 1),
    }
    plot(summary["results"], out / "ablation.png")
    write_report(out / "report.md", summary, summary["command"])
    write_json_atomic(out / "results.json", summary)
    if args.results:
        write_json_atomic(Path(args.results), summary)
    for setting, block in summary["results"].items():
        print(f"\n{setting}")
        for name, row in block["variants"].items():
            print(
                f"  {name:<14} {row['accuracy']:5.1f}%  diff {row['diff']:+5.1f} "
                f"[{row['diff_ci'][0]:+.1f}, {row['diff_ci'][1]:+.1f}]"
            )
    print(f"\nreport: {out / 'report.md'}")
    return 0
