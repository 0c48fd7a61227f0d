"""Ego-ExoClip statistics of the paper's Supp. A (clip durations, narration lengths, scenarios, tasks)
as numbers for ``build_info.json`` and the dataset card, and as PNG plots."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PLOTS = {
    "clip_durations": "stats/clip_durations.png",
    "narration_words": "stats/narration_words.png",
    "scenarios": "stats/scenarios.png",
    "tasks": "stats/tasks.png",
}


def _moments(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"mean": 0.0, "std": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "median": float(np.median(array)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def compute_statistics(
    clips: Sequence[dict[str, Any]], takes: Sequence[dict[str, Any]], narration_words: Sequence[int]
) -> dict[str, Any]:
    """Clip duration mean/std/% under 1 s, narration words mean/std, scenario and task counts."""
    durations = [row["end_sec"] - row["start_sec"] for row in clips]
    return {
        "clip_duration_sec": {
            **_moments(durations),
            "percent_under_1s": 100.0 * sum(d < 1.0 for d in durations) / max(1, len(durations)),
        },
        "narration_words": _moments(narration_words),
        "scenarios": {
            "takes": dict(Counter(t["parent_task_name"] for t in takes).most_common()),
            "clips": dict(Counter(c["parent_task_name"] for c in clips).most_common()),
        },
        "tasks": {
            "takes": dict(Counter(t["task_name"] for t in takes).most_common()),
            "clips": dict(Counter(c["task_name"] for c in clips).most_common()),
        },
    }


def plot_statistics(
    folder: Path, clips: Sequence[dict[str, Any]], statistics: dict[str, Any], narration_words: Sequence[int]
) -> dict[str, str]:
    """Write the four PNG plots under ``folder/stats/``; returns {name: relative path}."""
    # Deferred, heavy: matplotlib; exo2ego --help imports this module.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "stats").mkdir(parents=True, exist_ok=True)
    durations = [row["end_sec"] - row["start_sec"] for row in clips]

    def histogram(name, values, xlabel, title, bins):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(values, bins=bins, color="#4C72B0", edgecolor="white")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("clips")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(folder / PLOTS[name], dpi=100, metadata={"Software": None})
        plt.close(fig)

    duration_stats = statistics["clip_duration_sec"]
    histogram(
        "clip_durations",
        durations,
        "clip duration (s)",
        f"Clip durations: mean {duration_stats['mean']:.2f} s, std {duration_stats['std']:.2f} s, "
        f"{duration_stats['percent_under_1s']:.1f}% < 1 s",
        bins=40,
    )
    word_stats = statistics["narration_words"]
    histogram(
        "narration_words",
        narration_words,
        "words per narration",
        f"Narration length: mean {word_stats['mean']:.1f}, std {word_stats['std']:.1f} words",
        bins=range(0, max(narration_words, default=1) + 2),
    )

    for name, title in (("scenarios", "Scenarios (parent tasks)"), ("tasks", "Tasks")):
        counts = statistics[name]["clips"]
        labels = list(counts)[:30]
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(labels) + 1.2))
        ax.barh(labels[::-1], [counts[label] for label in labels[::-1]], color="#55A868")
        ax.set_xlabel("clips")
        ax.set_title(title + (" (top 30)" if len(counts) > 30 else ""))
        fig.tight_layout()
        fig.savefig(folder / PLOTS[name], dpi=100, metadata={"Software": None})
        plt.close(fig)
    return dict(PLOTS)
