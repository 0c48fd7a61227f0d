"""EgoBench as lmms-eval tasks: the functions the task YAMLs of this folder name (``!function utils.NAME``).

lmms-eval loads this file by its path (``importlib`` with the module name ``utils``), once per ``!function``
tag, in lmms-eval's own environment. Everything EgoBench-specific comes from the project so that these tasks
and ``exo2ego eval`` cannot drift apart: the rows are read and checked by ``eval.data.load_task`` (the same
errors, naming config, file, row and field), prompts are ``eval.prompts`` (``--prompt`` variants, default
``egocentric``), answers are parsed by ``eval.parsing.parse_choice`` (the ``generate_parse`` scorer's parser,
never a guess) and scored by ``eval.metrics`` (an unparsable answer is wrong; the denominator is every
labelled row). The project is imported from the environment (``pip install -e REPO --no-deps``, as
``scripts/lmms_eval_venv.sh`` does) or, failing that, from the repository this file sits in.

Settings (environment variables; the YAMLs' ``lmms_eval_specific_kwargs`` give the per-model defaults):

- ``EGOBENCH_DIR`` (required): an EgoBench folder (``exo2ego data egobench --out DIR``, or ``WORLD/egobench`` of
  the synthetic world) or a Hub dataset id. lmms-eval's YAML has no variable expansion and resolves relative
  ``data_files`` only against the YAML's folder, so each task loads ``egobench_source.jsonl`` (one pointer row)
  and its ``process_docs`` replaces that row by the config's rows read from ``EGOBENCH_DIR``.
- ``EGOBENCH_VIDEO_ROOT``: where relative video paths point, as ``exo2ego eval --video-roots`` (``DIR`` or
  ``TASK=DIR``, several separated by ``:``); default the folder's ``build_info.json`` ``video_root``, else the folder.
- ``EGOBENCH_WINDOW``: how a question's time window (``start_sec``/``end_sec``) reaches the model. ``fragment``:
  the video is a ``file://`` URL ending in a W3C media fragment ``#t=start,end``, which lmms-eval's
  ``openai_compatible`` model with ``pass_video_url=True`` forwards untouched and ``exo2ego serve`` reads as
  the window (lmms-eval's video part has no other field that reaches a server). ``fields``: the plain path,
  with the window in the chat video part's ``start_time``/``end_time`` (lmms-eval turns them into
  ``video_start``/``video_end`` for the Hugging Face chat models and for its own client-side frame decoding).
  Default: ``fragment`` for the OpenAI-compatible models, ``fields`` for the others.
- ``EGOBENCH_PROMPT``: a prompt variant of ``eval.prompts`` (default ``egocentric``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

try:
    import eval.data  # noqa: F401  (the project, installed in lmms-eval's environment)
except ImportError as error:
    raise ImportError(
        f"{__file__} reads EgoBench with the exo2ego project, which is not installed in this environment: make "
        "lmms-eval's environment with scripts/lmms_eval_venv.sh, or pip install --no-deps -e "
        f"{Path(__file__).parents[2]}"
    ) from error

import datasets

from datasets_scripts.egobench.tasks import EGOBENCH_TASKS, config_task
from datasets_scripts.schema import EGOBENCH_FEATURES, OPTION_LETTERS, dumps_meta, loads_meta
from eval import metrics
from eval.data import EvalDataError, available_configs, load_task, video_root_map
from eval.parsing import parse_choice
from eval.prompts import DEFAULT_PROMPT, get_prompt, user_text
from eval.tasks import EXACT_MATCH_OPEN, INVALID_RATE, ROUGE_L_OPEN, SENTENCE_SIMILARITY_OPEN, TASKS
from eval.tasks import subset_accuracy as _subset_metric

WINDOW_MODES = ("fragment", "fields")
# Per-subset accuracies reported by the configs whose rows mix subsets (keys as exo2ego eval's results.json).
CONFIG_SUBSETS: dict[str, tuple[str, ...]] = {
    "synthetic": ("action", "colour", "object"),
    "egomcq": ("inter", "intra"),
}
# The row configs of the declared EgoBench tasks (datasets_scripts/egobench/tasks.py), each an lmms-eval task
# egobench_<config>.yaml, except those of retrieval tasks: EK-100 MIR ranks every sentence for every video by option
# log-likelihood (mAP, nDCG), which a generate_until task cannot express.
ROW_CONFIGS = tuple(config for task in EGOBENCH_TASKS.values() for group in task.row_configs for config in group)
CONFIGS_WITHOUT_TASK = tuple(
    config
    for task in EGOBENCH_TASKS.values()
    if task.scoring.retrieval
    for group in task.row_configs
    for config in group
)


# --------------------------------------------------------------------------------------------- rows
class EgoBenchSetupError(RuntimeError):
    """The environment does not say where EgoBench is (or says something unusable)."""


def _video_roots() -> dict[str, str] | None:
    value = os.environ.get("EGOBENCH_VIDEO_ROOT", "").strip()
    return video_root_map([entry for entry in value.split(":") if entry]) if value else None


def load_config_rows(config: str, egobench_dir: str | None = None) -> list[dict[str, Any]]:
    """The checked rows of one EgoBench row config, each with ``video_path`` (absolute) and ``meta`` as the
    builders' JSON string. ``egobench_dir`` defaults to ``$EGOBENCH_DIR``."""
    folder = egobench_dir or os.environ.get("EGOBENCH_DIR", "").strip()
    if not folder:
        raise EgoBenchSetupError(
            "set EGOBENCH_DIR to an EgoBench folder (exo2ego data egobench --out DIR, or WORLD/egobench of the "
            "synthetic world) or a Hub dataset id; see eval/lmms_eval_tasks/utils.py"
        )
    task = config_task(config)
    if task is None or config in CONFIGS_WITHOUT_TASK:
        raise EgoBenchSetupError(f"{config!r} is not an EgoBench row config with an lmms-eval task")
    available = available_configs(folder)
    if config not in available:
        raise EvalDataError(
            f"{folder} has no config {config!r} (its configs: {available}); build it, or leave "
            f"egobench_{config} out of --tasks"
        )
    data = load_task(TASKS[task], folder, configs=[config], video_roots=_video_roots())
    return [{**row, "meta": dumps_meta(row["meta"])} for row in data.rows]


def _docs_loader(config: str):
    def process_docs(dataset=None):
        """lmms-eval's ``process_docs``: the pointer row(s) loaded from ``egobench_source.jsonl`` are replaced by
        the rows of EgoBench config ``{config}`` read from ``$EGOBENCH_DIR``."""
        features = datasets.Features({**EGOBENCH_FEATURES, "video_path": datasets.Value("string")})
        rows = load_config_rows(config)
        return datasets.Dataset.from_list([{name: row[name] for name in features} for row in rows], features=features)

    process_docs.__name__ = process_docs.__qualname__ = f"docs_{config}"
    process_docs.__doc__ = process_docs.__doc__.format(config=config)
    return process_docs


# docs_<config>: the process_docs that egobench_<config>.yaml names, one per row config with a task.
for _config in ROW_CONFIGS:
    if _config not in CONFIGS_WITHOUT_TASK:
        globals()[f"docs_{_config}"] = _docs_loader(_config)


# --------------------------------------------------------------------------------------------- requests
def _setting(kwargs: Mapping[str, Any] | None, name: str, default: str) -> str:
    value = os.environ.get(f"EGOBENCH_{name.upper()}", "").strip()
    return value or str((kwargs or {}).get(name) or default)


def window_mode(lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> str:
    mode = _setting(lmms_eval_specific_kwargs, "window", "fields")
    if mode not in WINDOW_MODES:
        raise EgoBenchSetupError(f"EGOBENCH_WINDOW / window is {mode!r}; use one of {WINDOW_MODES}")
    return mode


def _seconds(value: float) -> str:
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


def media_fragment(start_sec: float | None, end_sec: float | None) -> str:
    """``#t=start,end`` (``#t=start`` from start to the end, ``#t=,end`` from the beginning), or ``""``."""
    if start_sec is None and end_sec is None:
        return ""
    start = "" if start_sec is None else _seconds(start_sec)
    return f"#t={start}" + ("" if end_sec is None else f",{_seconds(end_sec)}")


def video_reference(doc: Mapping[str, Any], mode: str) -> str:
    """The video as the model is given it: a ``file://`` URL (path percent-encoded) with the window as a media
    fragment (``fragment``), or the plain absolute path (``fields``)."""
    path = os.path.abspath(doc["video_path"])
    if mode == "fragment":
        return "file://" + quote(path) + media_fragment(doc["start_sec"], doc["end_sec"])
    return path


def _is_open(doc: Mapping[str, Any]) -> bool:
    return not doc["options"]


def doc_to_visual(doc, lmms_eval_specific_kwargs=None) -> list[str]:
    """``[video]`` (see :func:`video_reference`); what lmms-eval's simple models and its automatic chat messages
    read."""
    return [video_reference(doc, window_mode(lmms_eval_specific_kwargs))]


def doc_to_text(doc, lmms_eval_specific_kwargs=None) -> str:
    """The user turn's text, as ``exo2ego eval`` words it: the question, lettered options and the letter
    instruction of the prompt variant (open questions: the open instruction)."""
    template = get_prompt(_setting(lmms_eval_specific_kwargs, "prompt", DEFAULT_PROMPT))
    if _is_open(doc):
        return user_text(template, doc["question"], None, "open")
    return user_text(template, doc["question"], doc["options"], "letters")


def doc_to_messages(doc, lmms_eval_specific_kwargs=None) -> list[dict[str, Any]]:
    """lmms-eval chat messages: the prompt variant's system turn, then the video and the text."""
    template = get_prompt(_setting(lmms_eval_specific_kwargs, "prompt", DEFAULT_PROMPT))
    video: dict[str, Any] = {"type": "video", "url": video_reference(doc, window_mode(lmms_eval_specific_kwargs))}
    if doc["start_sec"] is not None:
        video["start_time"] = float(doc["start_sec"])
    if doc["end_sec"] is not None:
        video["end_time"] = float(doc["end_sec"])
    messages = []
    if template.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": template.system}]})
    text = {"type": "text", "text": doc_to_text(doc, lmms_eval_specific_kwargs)}
    messages.append({"role": "user", "content": [video, text]})
    return messages


def doc_to_target(doc) -> str:
    """The answer's letter (multiple choice), the reference answer (open), ``""`` where the label is hidden."""
    if _is_open(doc):
        return doc["answer_text"] or ""
    return "" if doc["answer_idx"] is None else OPTION_LETTERS[doc["answer_idx"]]


# --------------------------------------------------------------------------------------------- scoring
def config_metrics(config: str) -> list[tuple[str, str, bool]]:
    """``(metric key, aggregation function name in this module, higher is better)`` of a config's task, in
    the order of its YAML's ``metric_list`` (tests check the YAMLs against this)."""
    task = config_task(config)
    if task is None:
        raise KeyError(config)
    if config == "qaego4d_open":
        return [
            (EXACT_MATCH_OPEN.key, "aggregate_exact_match", True),
            (ROUGE_L_OPEN.key, "aggregate_rouge_l", True),
            (SENTENCE_SIMILARITY_OPEN.key, "aggregate_sentence_similarity", True),
        ]
    keys = [TASKS[task].mcq_metric_key] + [_subset_metric(subset).key for subset in CONFIG_SUBSETS.get(config, ())]
    return [(key, "aggregate_accuracy", True) for key in keys] + [(INVALID_RATE.key, "aggregate_invalid_rate", False)]


def process_results(doc, results) -> dict[str, dict[str, Any]]:
    """One row's metric items: the parsed prediction (``None`` when the parser finds no single option) with
    the answer for the accuracies (labelled rows only; per subset where the config reports subsets) and
    ``invalid_rate``; open rows carry the generated and the reference text. ``score`` (percent) is what
    lmms-eval's standard errors read."""
    response = results[0] if results else ""
    response = response if isinstance(response, str) else str(response)
    base = {"sample_id": doc["sample_id"], "subset": doc["subset"], "response": response}
    if _is_open(doc):
        item = {**base, "prediction_text": response, "answer_text": doc["answer_text"] or ""}
        return {key: item for key, _, _ in config_metrics("qaego4d_open")}
    parsed = parse_choice(response, doc["options"])
    item = {**base, "prediction": parsed.index, "rule": parsed.rule, "answer_idx": doc["answer_idx"]}
    out = {INVALID_RATE.key: {**item, "score": 100.0 * (parsed.index is None)}}
    if doc["answer_idx"] is not None:
        scored = {**item, "score": 100.0 * bool(metrics.correctness([parsed.index], [doc["answer_idx"]])[0])}
        spec = TASKS[doc["task"]]
        out[spec.mcq_metric_key] = scored
        subsets = CONFIG_SUBSETS.get(doc["task"], ())  # the configs with subsets are named after their task
        subset = spec.subset_of({**doc, "meta": loads_meta(doc["meta"])})
        if subset in subsets:
            out[_subset_metric(subset).key] = scored
    return out


def _percent(value: float) -> float:
    return 100.0 * float(value)


def aggregate_accuracy(items: Sequence[Mapping[str, Any]]) -> float:
    """Accuracy in percent over the labelled rows (``eval.metrics.accuracy``: an invalid answer is wrong)."""
    labelled = [item for item in items if item.get("answer_idx") is not None]
    if not labelled:
        return float("nan")
    return _percent(
        metrics.accuracy([item["prediction"] for item in labelled], [item["answer_idx"] for item in labelled])
    )


def aggregate_invalid_rate(items: Sequence[Mapping[str, Any]]) -> float:
    """Share (percent) of multiple-choice answers the parser could not map to one option, over every row."""
    return _percent(sum(item["prediction"] is None for item in items) / len(items)) if items else float("nan")


def _texts(items: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    return [item["prediction_text"] for item in items], [item["answer_text"] for item in items]


def aggregate_exact_match(items: Sequence[Mapping[str, Any]]) -> float:
    """Exact match (percent) after ``eval.metrics.normalize_answer``."""
    return _percent(metrics.exact_match(*_texts(items)).mean()) if items else float("nan")


def aggregate_rouge_l(items: Sequence[Mapping[str, Any]]) -> float:
    """Mean ROUGE-L F-measure (percent; Google's ``rouge_score``, no stemming)."""
    return _percent(metrics.rouge_l(*_texts(items)).mean()) if items else float("nan")


def aggregate_sentence_similarity(items: Sequence[Mapping[str, Any]]) -> float:
    """Mean cosine similarity (percent) of MiniLM sentence embeddings (``eval.metrics.sentence_similarity``)."""
    return _percent(metrics.sentence_similarity(*_texts(items)).mean()) if items else float("nan")
