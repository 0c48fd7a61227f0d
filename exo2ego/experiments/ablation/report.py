"""The ablation's statistics and report: per split and arm, the difference to the full pipeline over seeds
(`eval.seed_statistics`), the plot, the mechanism table and `report.md`."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from eval.records import task_records
from eval.seed_statistics import SeedRun, compare
from exo2ego.demo.plans import TASKS
from exo2ego.experiments.ablation.design import FULL


def seed_correctness(eval_dir: Path, task: str) -> dict[str, tuple[float, str]]:
    """question id -> (correct 0/1, take) of one EgoBench run; the synthetic ids read `<task>/<take>/<action>/...`."""
    records = task_records(eval_dir, task)
    if not records:
        raise ValueError(f"{eval_dir} has no {task} predictions")
    return {qid: (float(bool(record["correct"])), qid.split("/")[1]) for qid, record in records.items()}


def summarise(evals: dict[int, dict[str, str]], arm_names: tuple[str, ...]) -> dict:
    """Per split and arm: accuracy per seed and `eval.seed_statistics.compare` of arm - full (points)."""
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


def plot(results: dict, seeds: list[int], path: Path) -> None:
    """Per split, each arm's difference to the full pipeline: the two-level 95% interval (thick), the paired
    t-interval over seeds (thin) and each seed's difference (dots)."""
    figure = Figure(figsize=(6 * len(results), 4))  # no pyplot: no backend to pick, nothing to close
    axes = figure.subplots(1, len(results), squeeze=False, sharey=True)
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
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor() or platform.machine()
