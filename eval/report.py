"""``report.md`` with the paper-style table, and PNG plots: per-task bars and a radar chart.

An optional comparison column comes from another ``results.json`` (a baseline run) or from the paper's
numbers (``compare="paper"``, :file:`eval/reference/paper_exo2ego.json`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_base.provenance import atomic_path, write_text_atomic

PAPER_RESULTS = Path(__file__).with_name("reference") / "paper_exo2ego.json"
# The fields of one metric entry a report and a model card read, and what each must hold.
METRIC_FIELDS = {
    "value": "number",
    "ci_low": "number",
    "ci_high": "number",
    "n": "integer",
    "unit": "string",
    "label": "string",
}
KINDS = {
    "object": lambda value: isinstance(value, dict),
    "list": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
}


class ResultsFileError(ValueError):
    """A results.json that lacks a key a report or a card reads, or holds the wrong kind of value there."""


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a ``results.json`` of ``exo2ego eval``, checked with :func:`check_results`."""
    results = json.loads(Path(path).read_text(encoding="utf-8"))
    check_results(results, str(path))
    return results


def check_results(results: Any, source: str, comparison: bool = False) -> None:
    """Raise :class:`ResultsFileError` naming ``source`` and the key when ``results`` lacks what a report or a model
    card reads: tasks, their metrics with numeric values (and intervals, counts and units unless ``comparison``,
    which needs only values), headline keys that are metrics, the prompt; optional sections must be objects."""
    _expect(results, "object", source, "the top level")
    if not comparison:
        prompt = _required(results, "prompt", "object", source)
        for key in ("name", "sha256"):
            _required(prompt, key, "string", source, "prompt.")
    for key in ("model", "config", "data", "git", "timing", "versions"):
        if results.get(key) is not None:
            _expect(results[key], "object", source, key)
    for task, entry in _required(results, "tasks", "object", source).items():
        _expect(entry, "object", source, f"tasks.{task}")
        metrics = _required(entry, "metrics", "object", source, f"tasks.{task}.")
        for key, metric in metrics.items():
            _expect(metric, "object", source, f"tasks.{task}.metrics.{key}")
            for field, kind in METRIC_FIELDS.items() if not comparison else (("value", "number"),):
                _required(metric, field, kind, source, f"tasks.{task}.metrics.{key}.")
        if entry.get("counts") is not None:
            _expect(entry["counts"], "object", source, f"tasks.{task}.counts")
        for key in entry.get("headline") or ():
            if key not in metrics:
                raise ResultsFileError(f"{source}: tasks.{task}.headline names {key!r}, which is not in its metrics")


def _required(mapping: dict, key: str, kind: str, source: str, where: str = "") -> Any:
    if key not in mapping:
        raise ResultsFileError(f"{source}: key {where}{key} is missing")
    return _expect(mapping[key], kind, source, f"{where}{key}")


def _expect(value: Any, kind: str, source: str, where: str) -> Any:
    if not KINDS[kind](value):
        raise ResultsFileError(
            f"{source}: {where} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, got {value!r:.60}"
        )
    return value


def load_comparison(source: str | os.PathLike | None) -> dict[str, Any] | None:
    """A results-like dict from a ``results.json`` path, or the paper's numbers for ``"paper"``."""
    if source is None:
        return None
    path = PAPER_RESULTS if str(source) == "paper" else Path(source)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"comparison results {path} not found (pass a results.json or 'paper')") from None
    check_results(payload, str(path), comparison=True)
    payload.setdefault("name", _run_name(payload) if "model" in payload else path.stem)
    return payload


def _model_name(results: dict[str, Any]) -> str:
    return (results.get("model") or {}).get("name_or_path") or "in-memory model"


def _run_name(results: dict[str, Any]) -> str:
    return f"{Path(_model_name(results)).name} ({results.get('scorer', '?')})"


def table_rows(results: dict[str, Any], compare: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per headline metric (every metric of a task without headline), in task order."""
    rows = []
    for task, entry in results["tasks"].items():
        keys = entry.get("headline") or list(entry["metrics"])
        for key in keys:
            metric = entry["metrics"][key]
            other = (((compare or {}).get("tasks", {}).get(task) or {}).get("metrics", {}).get(key) or {}).get("value")
            rows.append(
                {"task": task, "display_name": entry.get("display_name", task), "key": key, **metric, "compare": other}
            )
    return rows


def _fmt(value: float | None, unit: str = "percent") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}" if unit == "score" else f"{value:.1f}"


def plot_task_bars(rows: list[dict[str, Any]], path: Path, title: str, compare_name: str | None) -> Path:
    """Horizontal bars of every percentage metric with its 95% interval, comparison bars alongside."""
    # Deferred, heavy: matplotlib; exo2ego --help imports this module.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if row["unit"] == "percent"]
    labels = [f"{row['display_name']} · {row['label']}" for row in rows]
    values = np.array([row["value"] for row in rows])
    errors = np.array([[row["value"] - row["ci_low"], row["ci_high"] - row["value"]] for row in rows]).T
    positions = np.arange(len(rows))
    has_compare = compare_name is not None and any(row["compare"] is not None for row in rows)
    height = 0.38 if has_compare else 0.6
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(1, len(rows))))
    ax.barh(positions, values, height, xerr=np.nan_to_num(errors), capsize=3, color="#3b7dd8", label="this run")
    if has_compare:
        others = np.array([np.nan if row["compare"] is None else row["compare"] for row in rows])
        ax.barh(positions + height, others, height, color="#bbbbbb", label=compare_name)
        ax.legend(loc="lower right", fontsize=8)
    for position, row in zip(positions, rows):
        right = row["ci_high"] if row["ci_high"] == row["ci_high"] else row["value"]  # NaN interval: the bar's end
        ax.text(right + 1.5, position, _fmt(row["value"]), va="center", fontsize=8)
    ax.set_yticks(positions + (height / 2 if has_compare else 0), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("%  (bars: 95% bootstrap interval)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def plot_radar(rows: list[dict[str, Any]], path: Path, title: str, compare_name: str | None) -> Path | None:
    """Radar chart of the percentage metrics (like the paper's Figure 1); None with fewer than 3 axes."""
    # Deferred, heavy: matplotlib; exo2ego --help imports this module.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if row["unit"] == "percent"]
    if len(rows) < 3:
        return None
    angles = np.linspace(0, 2 * np.pi, len(rows), endpoint=False)
    closed = np.concatenate([angles, angles[:1]])
    fig, ax = plt.subplots(figsize=(6.5, 6.5), subplot_kw={"polar": True})
    values = np.array([row["value"] for row in rows])
    ax.plot(closed, np.concatenate([values, values[:1]]), color="#3b7dd8", linewidth=2, label="this run")
    ax.fill(closed, np.concatenate([values, values[:1]]), color="#3b7dd8", alpha=0.2)
    if compare_name is not None and any(row["compare"] is not None for row in rows):
        others = np.array([np.nan if row["compare"] is None else row["compare"] for row in rows])
        ax.plot(
            closed,
            np.concatenate([others, others[:1]]),
            color="#888888",
            linewidth=1.5,
            linestyle="--",
            label=compare_name,
        )
    ax.set_xticks(angles, [f"{row['display_name']}\n{row['label']}" for row in rows], fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10, pad=20)
    ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1), fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], out_dir: str | os.PathLike, compare: dict[str, Any] | None = None) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``out_dir``; returns the report path."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    compare_name = None if compare is None else compare.get("name", "comparison")
    rows = table_rows(results, compare)
    title = f"EgoBench · {_run_name(results)}"
    bars = (
        plot_task_bars(rows, out / "plots" / "per_task.png", title, compare_name)
        if any(row["unit"] == "percent" for row in rows)
        else None
    )
    radar_rows = (
        rows
        if sum(row["unit"] == "percent" for row in rows) >= 3
        else [
            {"display_name": entry.get("display_name", task), **metric, "compare": None}
            for task, entry in results["tasks"].items()
            for metric in entry["metrics"].values()
        ]
    )
    radar = plot_radar(radar_rows, out / "plots" / "radar.png", title, compare_name)

    config = results.get("config", {})
    lines = [
        "# EgoBench results",
        "",
        f"- Model: `{_model_name(results)}`",
        f"- Scorer: `{results.get('scorer')}`; prompt `{results['prompt']['name']}` "
        f"(sha256 `{results['prompt']['sha256'][:12]}`);"
        f" frames: {config.get('num_frames') or 'processor default'}; limit: {config.get('limit') or 'none'}",
        f"- Data: `{(results.get('data') or {}).get('path')}`; git `{(results.get('git') or {}).get('commit')}`;"
        f" finished {results.get('timing', {}).get('finished_at')}",
        "",
        "| Task | Metric | Value | 95% CI | n |" + (f" {compare_name} |" if compare_name else ""),
        "|---|---|---:|---|---:|" + ("---:|" if compare_name else ""),
    ]
    for row in rows:
        unit = row["unit"]
        line = (
            f"| {row['display_name']} | {row['label']} | {_fmt(row['value'], unit)} | "
            f"[{_fmt(row['ci_low'], unit)}, {_fmt(row['ci_high'], unit)}] | {row['n']} |"
        )
        if compare_name:
            line += f" {_fmt(row['compare'], unit)} |"
        lines.append(line)
    lines += [
        "",
        "Percentages except judge scores (0-5). Intervals: percentile bootstrap over items "
        f"({config.get('bootstrap_resamples')} resamples, seed {config.get('seed')}).",
    ]
    if compare is not None and compare.get("source"):
        lines += [f"Comparison column: {compare['source']}."]
    lines.append("")
    if bars is not None:
        lines += ["![per-task results](plots/per_task.png)", ""]
    if radar is not None:
        lines += ["![radar](plots/radar.png)", ""]
    lines += ["## All metrics and counts", ""]
    for task, entry in results["tasks"].items():
        counts = ", ".join(f"{key}={value}" for key, value in entry.get("counts", {}).items())
        lines.append(
            f"- **{entry.get('display_name', task)}** ({counts}): "
            + "; ".join(
                f"{metric['label']} {_fmt(metric['value'], metric['unit'])}" for metric in entry["metrics"].values()
            )
        )
    path = out / "report.md"
    return write_text_atomic(path, "\n".join(lines) + "\n")
