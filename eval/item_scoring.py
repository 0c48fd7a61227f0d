"""How one evaluation scores its work items (a question, a Charades-Ego video for class scores, an EK-100 MIR query
video) with one model: the items of a task, their shards, and :class:`ItemScorer`, which turns items into records
(the option-likelihood items of a group scored in one batched prefill)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import scorers
from .config import EvalConfig
from .data import TaskData
from .judge import JudgeConfig, judge_answer
from .prompts import PromptTemplate, build_messages, user_text
from .task_metrics import class_item_id


@dataclass(frozen=True)
class WorkItem:
    """One scoring unit: a question, a Charades-Ego video (class scores) or an EK-100 MIR query video."""

    id: str
    part: str  # "mcq" | "open" | "classes" | "retrieval"
    row: dict[str, Any]


def work_items(data: TaskData) -> list[WorkItem]:
    """The task's items in dataset order."""
    items = []
    for row in data.rows:
        part = "retrieval" if data.spec.retrieval else ("mcq" if row["options"] else "open")
        items.append(WorkItem(row["sample_id"], part, row))
    if data.has_class_scores:
        items += [
            WorkItem(class_item_id(data.spec.name, video["video_id"]), "classes", video) for video in data.class_videos
        ]
    return items


def shard_of(item_id: str, num_shards: int) -> int:
    """Deterministic shard of an item id (SHA-1, independent of Python's hash seed)."""
    return int.from_bytes(hashlib.sha1(item_id.encode("utf-8")).digest()[:8], "big") % num_shards


class ItemScorer:
    """Scores work items with one model; holds the prompt template and the settings."""

    def __init__(
        self,
        adapter: scorers.ModelAdapter,
        template: PromptTemplate,
        config: EvalConfig,
        data: TaskData,
        judge: JudgeConfig | None,
    ):
        self.adapter, self.template, self.config, self.data, self.judge = adapter, template, config, data, judge
        self.choice = scorers.MCQ_SCORERS[config.scorer]

    def __call__(self, items: list[WorkItem]) -> list[dict[str, Any]]:
        """One record per item, in order. The items scored by option log-likelihoods (multiple choice with
        `option_loglik`, class scores, retrieval) share one batched prefill; the others are scored one by one."""
        questions = {
            index: self._option_question(item) for index, item in enumerate(items) if self._by_likelihood(item)
        }
        batch_scores = (
            scorers.option_loglik_batch(self.adapter, list(questions.values()), self.config.option_chunk_size)
            if questions
            else []
        )
        scores = dict(zip(questions, batch_scores))
        return [self._record(item, scores.get(index)) for index, item in enumerate(items)]

    def batches(self, items: list[WorkItem]) -> Iterator[list[WorkItem]]:
        """`items` in order, in groups of up to `batch_size` option-likelihood items; every other item alone (a
        killed run loses at most one group)."""
        group: list[WorkItem] = []
        for item in items:
            if not self._by_likelihood(item):
                yield from [group, [item]] if group else [[item]]
                group = []
                continue
            group.append(item)
            if len(group) == self.config.batch_size:
                yield group
                group = []
        if group:
            yield group

    def _record(self, item: WorkItem, scores: scorers.ContinuationScores | None) -> dict[str, Any]:
        row = item.row
        record = {
            "id": item.id,
            "task": self.data.spec.name,
            "part": item.part,
            "prompt": self.template.name,
            "prompt_sha256": self.template.sha256,
        }
        handler = getattr(self, f"_{item.part}")
        record.update(handler(row, _video(row), scores))
        return record

    def _messages(self, question: str, options, mode: str) -> list[dict]:
        return build_messages(self.template, user_text(self.template, question, options, mode))

    def _by_likelihood(self, item: WorkItem) -> bool:
        """Whether an item's options are scored as continuations (`option_loglik_batch`)."""
        return item.part in ("classes", "retrieval") or (item.part == "mcq" and self.choice.choose is not None)

    def _option_question(self, item: WorkItem) -> scorers.OptionQuestion:
        """The question a `_by_likelihood` item's options are scored against as continuations."""
        row = item.row
        if item.part == "mcq":
            question, answers = row["question"], row["options"]
        elif item.part == "classes":
            question, answers = self.template.class_question, self.data.class_names
        else:
            question, answers = self.template.retrieval_question, self.data.sentences
        return scorers.OptionQuestion(self._messages(question, None, "continuation"), _video(row), answers)

    def _mcq(self, row, video, scores) -> dict[str, Any]:
        options, scorer = row["options"], self.config.scorer
        if scores is not None:
            result = self.choice.choose(scores, self.config)
        else:
            shown = options if self.choice.prompt_mode == "letters" else None
            messages = self._messages(row["question"], shown, self.choice.prompt_mode)
            result = self.choice.score(self.adapter, messages, video, options, self.config)
        answer = row["answer_idx"]
        return {
            "sample_id": row["sample_id"],
            "subset": row["subset"],
            "scorer": scorer,
            "options": options,
            "answer_idx": answer,
            "option_scores": result.option_scores,
            "prediction": result.prediction,
            "predicted_letter": None if result.prediction is None else scorers.OPTION_LETTERS[result.prediction],
            "raw_output": result.raw_output,
            "parse_rule": result.parse_rule,
            "invalid": result.prediction is None,
            "correct": None if answer is None else result.prediction == answer,
            **result.extra,
        }

    def _open(self, row, video, scores) -> dict[str, Any]:
        text = scorers.generate_text(
            self.adapter, self._messages(row["question"], None, "open"), video, self.config.open_max_new_tokens
        )
        record = {
            "sample_id": row["sample_id"],
            "subset": row["subset"],
            "scorer": "generate",
            "prediction_text": text,
            "answer_text": row["answer_text"],
        }
        if self.judge is not None:
            verdict = judge_answer(self.judge, row["question"], row["answer_text"], text)
            record.update(
                judge_correct=verdict.correct,
                judge_score=verdict.score,
                judge_raw=verdict.raw,
                judge_parsed=verdict.parsed,
            )
        return record

    def _classes(self, row, video, scores) -> dict[str, Any]:
        return {"video_id": row["video_id"], "scorer": "option_loglik", **dataclasses.asdict(scores)}

    def _retrieval(self, row, video, scores) -> dict[str, Any]:
        return {
            "sample_id": row["sample_id"],
            "video_index": row["meta"]["video_index"],
            "scorer": "option_loglik",
            **dataclasses.asdict(scores),
        }


def _video(row: dict[str, Any]) -> dict[str, Any]:
    """The processor's video input of a row: its file and, for a clip, its time span."""
    return {"path": row["video_path"], "start_sec": row.get("start_sec"), "end_sec": row.get("end_sec")}


def check_scorable(
    adapter: scorers.ModelAdapter, template: PromptTemplate, config: EvalConfig, task_data: dict[str, TaskData]
) -> None:
    """Fail before scoring when the tokenizer cannot spell the option letters or the template cannot
    take a cached answer (cheap text-only checks on the first row of each task)."""
    for data in task_data.values():
        mcq = [row for row in data.rows if row["options"]]
        if mcq and config.scorer == "letter_logprob":
            most = max(len(row["options"]) for row in mcq)
            messages = build_messages(template, user_text(template, mcq[0]["question"], mcq[0]["options"], "letters"))
            scorers.plan_letters(adapter, adapter.render_prompt(messages), most)
        if (mcq and config.scorer == "option_loglik") or data.has_class_scores or data.spec.retrieval:
            messages = build_messages(template, user_text(template, data.rows[0]["question"], None, "continuation"))
            adapter.answer_affixes(messages, adapter.render_prompt(messages))
