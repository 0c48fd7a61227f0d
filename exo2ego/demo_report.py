"""Report of a demo run: loss curves of every stage, EgoBench accuracy per stage, and `report.md`."""

from __future__ import annotations

import json
from pathlib import Path

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


def plot_accuracy(accuracies: dict[str, dict], path: Path) -> None:
    """Bars of EgoBench accuracy per checkpoint with 95% intervals (the paper's Table 15 / Figure 5 view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(accuracies)
    values = [accuracies[name]["accuracy"] for name in names]
    errors = [
        [value - accuracies[name]["ci"][0] for name, value in zip(names, values)],
        [accuracies[name]["ci"][1] - value for name, value in zip(names, values)],
    ]
    figure, axis = plt.subplots(figsize=(6, 3.6))
    colours = plt.cm.Blues([0.35 + 0.6 * index / max(1, len(names) - 1) for index in range(len(names))])
    axis.bar(names, values, yerr=errors, capsize=4, color=colours)
    axis.axhline(20, linestyle="--", color="black", linewidth=1, label="chance (5 options)")
    axis.set_ylabel("EgoBench synthetic accuracy (%)")
    axis.set_ylim(0, 100)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(path: Path, summary: dict, histories: dict[str, list[dict]]) -> None:
    rows = "\n".join(
        f"| {point} | {row['accuracy']:.1f} | [{row['ci'][0]:.1f}, {row['ci'][1]:.1f}] | {row['n']} |"
        for point, row in summary["accuracy"].items()
    )
    losses = []
    for stage, history in histories.items():
        for key, (_, values) in loss_series(history).items():
            losses.append(f"| {stage} | {LOSS_TERMS[key]} | {values[0]:.3f} | {values[-1]:.3f} |")
    timings = "\n".join(f"| {phase} | {seconds:.1f} |" for phase, seconds in summary["timings_sec"].items())
    path.write_text(
        f"""# Exo2Ego demo on the synthetic Ego-Exo world

Seed {summary["seed"]}; plan `{json.dumps(summary["plan"])}`.

## EgoBench (synthetic, 5-way, `option_loglik`)

| checkpoint | accuracy (%) | 95% CI | n |
|---|---:|---|---:|
{rows}

![accuracy per stage](plots/accuracy_per_stage.png)

## Training losses (first and last logged value)

| stage | term | first | last |
|---|---|---:|---:|
{losses and chr(10).join(losses)}

![loss curves](plots/losses.png)

## Time per phase (seconds)

| phase | seconds |
|---|---:|
{timings}
"""
    )
