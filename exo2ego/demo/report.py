"""Report of a demo run: loss curves of every stage, EgoBench accuracy per stage, `report.md`, the learning targets
and the summary the command prints."""

from __future__ import annotations

import json
from pathlib import Path

from exo2ego.demo.gates import GATES
from exo2ego.demo.plans import EVAL_POINTS, TASKS

LOSS_TERMS = {
    "vtg_loss": "VTG (next-token CE)",
    "vtg_ego_loss": "VTG, ego branch",
    "vtg_exo_loss": "VTG, exo branch",
    "kl_loss": "KL(y || F(x))",
    "ccl_loss": "cycle consistency",
}


def loss_series(history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Per logged loss term of a Trainer log history: (steps, values)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for entry in history:
        for key in LOSS_TERMS:
            if key in entry:
                steps, values = series.setdefault(key, ([], []))
                steps.append(entry["step"])
                values.append(float(entry[key]))
    return series


def plot_losses(histories: dict[str, list[dict]], path: Path) -> None:
    # Deferred, heavy: matplotlib; exo2ego --help imports this module.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(histories), figsize=(4.5 * len(histories), 3.4), squeeze=False)
    for axis, (stage, history) in zip(axes[0], histories.items()):
        for key, (steps, values) in loss_series(history).items():
            axis.plot(steps, values, label=LOSS_TERMS[key])
        axis.set_title(stage)
        axis.set_xlabel("step")
        axis.set_yscale("log")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("loss")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_accuracy(accuracies: dict[str, dict[str, dict]], baselines: dict[str, float], path: Path) -> None:
    """Bars of EgoBench accuracy per checkpoint with 95% intervals, one panel per split (the paper's Table 15 /
    Figure 5 view), with chance and the split's text-only baseline as lines."""
    # Deferred, heavy: matplotlib; exo2ego --help imports this module.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(accuracies), figsize=(5.5 * len(accuracies), 3.6), squeeze=False)
    for axis, (task, by_point) in zip(axes[0], accuracies.items()):
        names = list(by_point)
        values = [by_point[name]["accuracy"] for name in names]
        errors = [
            [value - by_point[name]["ci"][0] for name, value in zip(names, values)],
            [by_point[name]["ci"][1] - value for name, value in zip(names, values)],
        ]
        colours = plt.cm.Blues([0.35 + 0.6 * index / max(1, len(names) - 1) for index in range(len(names))])
        axis.bar(names, values, yerr=errors, capsize=4, color=colours)
        axis.axhline(20, linestyle="--", color="black", linewidth=1, label="chance (5 options)")
        axis.axhline(baselines[task], linestyle=":", color="tab:red", linewidth=1.5, label="text-only baseline")
        axis.set_title(f"EgoBench {task}")
        axis.set_ylim(0, 100)
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("accuracy (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _gate_rows(gates: dict[str, dict]) -> str:
    rows = []
    for gate in gates.values():
        bound = f">= {gate['at_least']:.0%}" if gate["at_least"] is not None else f"<= {gate['at_most']:.0%}"
        verdict = {True: "holds", False: "**fails**", None: "not measured"}[gate["holds"]]
        value = "n/a" if gate["value"] is None else f"{gate['value']:.1%}"
        rows.append(f"| {gate['description']} | {value} | {bound} | {verdict} |")
    return "\n".join(rows)


def _probe_rows(probes: dict[str, dict[str, float]]) -> str:
    return "\n".join(
        f"| {stage} | {row['y']:.1%} | {row['F(x)']:.1%} | {row['x']:.1%} | {row['x (own probe)']:.1%} |"
        for stage, row in probes.items()
    )


def write_report_markdown(path: Path, summary: dict, histories: dict[str, list[dict]]) -> None:
    """`report.md` of a demo run from its summary and each stage's Trainer log history."""
    tasks = list(summary["accuracy"])
    points = list(summary["accuracy"][tasks[0]])
    header = " | ".join(f"{task} (%) [95% CI]" for task in tasks)
    rows = []
    for point in points:
        cells = []
        for task in tasks:
            row = summary["accuracy"][task][point]
            cells.append(f"{row['accuracy']:.1f} [{row['ci'][0]:.1f}, {row['ci'][1]:.1f}]")
        rows.append(f"| {point} | {' | '.join(cells)} |")
    rows.append("| text only | " + " | ".join(f"{summary['text_only_baseline'][task]:.1f}" for task in tasks) + " |")
    counts = ", ".join(f"{task} n = {summary['accuracy'][task][points[0]]['n']}" for task in tasks)
    losses = []
    for stage, history in histories.items():
        for key, (_, values) in loss_series(history).items():
            losses.append(f"| {stage} | {LOSS_TERMS[key]} | {values[0]:.3f} | {values[-1]:.3f} |")
    timings = "\n".join(f"| {phase} | {seconds:.1f} |" for phase, seconds in summary["timings_sec"].items())
    path.write_text(
        f"""# Exo2Ego demo on the synthetic Ego-Exo world

Seed {summary["seed"]}; plan `{json.dumps(summary["plan"])}`.

## Gates (measured before training)

| property of the world | measured | required | verdict |
|---|---:|---|---|
{_gate_rows(summary["gates"])}

## EgoBench (5-way, `option_loglik`)

`synthetic` asks what ego-side text names (object, colour, action); `synthetic_pattern` asks the objects' pattern,
named only by the web-exo captions the exo tower learned from. {counts}.

| checkpoint | {header} |
|---|{"---|" * len(tasks)}
{chr(10).join(rows)}

![accuracy per stage](plots/accuracy_per_stage.png)

## Where the pattern is (linear probe fitted on the exo features y; chance 20%)

| checkpoint | y (held-out clips) | F(x) | x | x, probe fitted on x |
|---|---:|---:|---:|---:|
{_probe_rows(summary["pattern_probe"])}

## Training losses (first and last logged value)

| stage | term | first | last |
|---|---|---:|---:|
{losses and chr(10).join(losses)}

![loss curves](plots/losses.png)

## Time per phase (seconds)

| phase | seconds |
|---|---:|
{timings}
""",
        encoding="utf-8",
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
