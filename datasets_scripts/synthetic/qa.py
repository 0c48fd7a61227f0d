"""Synthetic EgoIT (train takes), EgoBench (held-out val/test takes) and EgoClip-style caption rows.

Questions are about one action's segment [start, end] of the ego video. EgoBench config ``synthetic`` (and EgoIT)
asks what the ego-side text names:

- ``object``: "Which object did I pick up / put down / move?" -> "the red box" (distractors have the
  four other colours, so the answer is never a colour that is not visible in some other option);
- ``colour``: "What colour was the object I poured from / shook?" -> "red";
- ``action``: "What did I do with the red box?" -> "picked it up" (5 of the 6 verbs).

EgoBench config ``synthetic_pattern`` asks the world's exo-only knowledge about the same ego clips: "Which object did
I pick up?" -> "the striped red box", the other options naming the same object with the four other patterns. No
ego-side text names a pattern (EgoIT, the narrations, ``egoclip/``); only the web-exo captions do
(:mod:`.web_exo`), so the split measures what reaches the ego side from the exo side.

Scenes draw colours and shapes uniformly and every object can undergo every action, so the question
text does not reveal the answer; ``egobench/build_info.json`` reports a text-only baseline (the most
frequent EgoIT answer among the options) next to chance to show it. Option order is frozen by a
seeded hash of the sample id (:func:`datasets_scripts.schema.frozen_option_order`).
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .. import hub_export
from ..schema import (
    CAPTION_FEATURES,
    EGOBENCH_FEATURES,
    EGOIT_FEATURES,
    caption_row,
    egobench_row,
    egoit_row,
    frozen_option_order,
    seeded_choice,
)
from .narration import ANNOTATOR_TEMPLATES, FIRST_PERSON, describe
from .script import COLOURS, PATTERNS, SHAPES, VERB_ANSWERS

TASK = "synthetic"
PATTERN_TASK = "synthetic_pattern"
# EgoIT config of the ablation's positive control: config "synthetic" plus the pattern questions of the train takes.
PATTERN_EGOIT_CONFIG = "synthetic_with_pattern"
CAPTIONS_FOLDER = "egoclip"
CAPTIONS_CONFIG = "captions"
OBJECT_QUESTIONS = {
    "pick_up": "Which object did I pick up?",
    "put_down": "Which object did I put down?",
    "move_left": "Which object did I move?",
    "move_right": "Which object did I move?",
}
COLOUR_QUESTIONS = {
    "pour": "What colour was the object I poured from?",
    "shake": "What colour was the object I shook?",
}
ACTION_QUESTION = "What did I do with the {obj}?"
PATTERN_QUESTIONS = {**OBJECT_QUESTIONS, "pour": "Which object did I pour from?", "shake": "Which object did I shake?"}
NUM_OPTIONS = 5


@dataclass(frozen=True)
class Question:
    take_uid: str
    take_name: str
    take_split: str
    action_index: int
    kind: str  # object | colour | action
    verb: str
    question: str
    answer: str
    distractors: tuple[str, ...]
    start_sec: float
    end_sec: float
    video: str  # ego video, relative to the world root

    @property
    def key(self) -> str:
        return f"{self.take_name}/{self.action_index:02d}/{self.kind}"


def instruction_templates() -> dict[str, list[str]]:
    """The ten EgoIT instruction templates per kind ("qa", "captioning"), written for this project."""
    return json.loads(resources.files(__package__).joinpath("instructions.json").read_text(encoding="utf-8"))


def take_questions(plan, seed: int, variant: str = "448") -> list[Question]:
    """Every question about one take's actions (two per action: object or colour, and action)."""
    script = plan.script
    video = plan.video_path(plan.ego_cam, variant)
    questions = []
    for index, action in enumerate(script.actions):
        rng = random.Random(f"{seed}/qa/{plan.take_uid}/{index}")
        obj = script.objects[action.obj]
        other_colours = rng.sample([c for c in sorted(COLOURS) if c != obj.colour], NUM_OPTIONS - 1)
        common = dict(
            take_uid=plan.take_uid,
            take_name=plan.take_name,
            take_split=plan.split,
            action_index=index,
            verb=action.verb,
            start_sec=action.start,
            end_sec=action.end,
            video=video,
        )
        if action.verb in OBJECT_QUESTIONS:
            distractors = tuple(f"the {colour} {rng.choice(SHAPES)}" for colour in other_colours)
            questions.append(
                Question(
                    kind="object",
                    question=OBJECT_QUESTIONS[action.verb],
                    answer=f"the {obj.name}",
                    distractors=distractors,
                    **common,
                )
            )
        else:
            questions.append(
                Question(
                    kind="colour",
                    question=COLOUR_QUESTIONS[action.verb],
                    answer=obj.colour,
                    distractors=tuple(other_colours),
                    **common,
                )
            )
        other_verbs = rng.sample([v for v in VERB_ANSWERS if v != action.verb], NUM_OPTIONS - 1)
        questions.append(
            Question(
                kind="action",
                question=ACTION_QUESTION.format(obj=obj.name),
                answer=VERB_ANSWERS[action.verb],
                distractors=tuple(VERB_ANSWERS[v] for v in other_verbs),
                **common,
            )
        )
    return questions


def pattern_questions(plan, seed: int, variant: str = "448") -> list[Question]:
    """One question per action of a take, answered by the handled object's pattern (options: all five patterns)."""
    script = plan.script
    questions = []
    for index, action in enumerate(script.actions):
        obj = script.objects[action.obj]
        questions.append(
            Question(
                take_uid=plan.take_uid,
                take_name=plan.take_name,
                take_split=plan.split,
                action_index=index,
                kind="pattern",
                verb=action.verb,
                question=PATTERN_QUESTIONS[action.verb],
                answer=f"the {obj.full_name}",
                distractors=tuple(f"the {pattern} {obj.name}" for pattern in PATTERNS if pattern != obj.pattern),
                start_sec=action.start,
                end_sec=action.end,
                video=plan.video_path(plan.ego_cam, variant),
            )
        )
    return questions


def egobench_rows(plans, seed: int, variant: str = "448", task: str = TASK) -> list[dict[str, Any]]:
    """5-way multiple-choice rows about the held-out (val and test) takes, for ``task`` (:data:`TASK`: object, colour
    and action questions; :data:`PATTERN_TASK`: pattern questions)."""
    questions = pattern_questions if task == PATTERN_TASK else take_questions
    rows = []
    for plan in plans:
        if plan.split == "train" or not plan.render:
            continue
        exo_videos = [plan.video_path(cam, variant) for cam in plan.exo_cams]
        for q in questions(plan, seed, variant):
            rows.append(
                egobench_row(
                    sample_id=f"{task}/{q.key}",
                    task=task,
                    subset=q.kind,
                    video=q.video,
                    start_sec=q.start_sec,
                    end_sec=q.end_sec,
                    question=q.question,
                    options=[q.answer, *q.distractors],
                    answer_idx=0,
                    shuffle_seed=seed,
                    meta={
                        "video_id": q.take_uid,
                        "take_name": q.take_name,
                        "take_split": q.take_split,
                        "verb": q.verb,
                        "exo_videos": exo_videos,
                    },
                )
            )
    return rows


def egoit_rows(plans, seed: int, variant: str = "448", ask_pattern: bool = False) -> list[dict[str, Any]]:
    """Instruction rows about the train takes: multiple choice, open QA and first-person captions; with
    `ask_pattern` also the pattern questions (the positive control of `exo2ego ablate`: EgoIT that names the
    exo-only knowledge)."""
    templates = instruction_templates()
    rows = []
    for plan in plans:
        if plan.split != "train" or not plan.render:
            continue
        questions = take_questions(plan, seed, variant)
        if ask_pattern:
            questions += pattern_questions(plan, seed, variant)
        for q in questions:
            for task in ("mcq", "open_qa"):
                row_id = f"{TASK}/{q.key}/{task}"
                options = None
                if task == "mcq":
                    options, _ = frozen_option_order(row_id, [q.answer, *q.distractors], 0, seed)
                template = seeded_choice(seed, row_id, len(templates["qa"]))
                rows.append(
                    egoit_row(
                        id=row_id,
                        source=TASK,
                        task=task,
                        split="train",
                        video=q.video,
                        video_start_sec=q.start_sec,
                        video_end_sec=q.end_sec,
                        instruction_id=template,
                        instruction=templates["qa"][template],
                        question=q.question,
                        answer=q.answer,
                        options=options,
                    )
                )
        for index, action in enumerate(plan.script.actions):
            row_id = f"{TASK}/{plan.take_name}/{index:02d}/captioning"
            template = seeded_choice(seed, row_id, len(templates["captioning"]))
            rows.append(
                egoit_row(
                    id=row_id,
                    source=TASK,
                    task="captioning",
                    split="train",
                    video=plan.video_path(plan.ego_cam, variant),
                    video_start_sec=action.start,
                    video_end_sec=action.end,
                    instruction_id=template,
                    instruction=templates["captioning"][template],
                    question="",
                    answer=describe(plan.script, action, FIRST_PERSON),
                )
            )
    return rows


def caption_rows(plans, seed: int, variant: str = "448") -> list[dict[str, Any]]:
    """EgoClip-style captions of the train takes' ego clips, for the init stage's ego tower: one per action, the
    first annotator's narration over the action's segment (no pattern: ``TableObject.name``)."""
    rows = []
    for plan in plans:
        if plan.split != "train" or not plan.render:
            continue
        for index, action in enumerate(plan.script.actions):
            rows.append(
                caption_row(
                    id=f"{TASK}/{plan.take_name}/{index:02d}",
                    source="egoclip",
                    media_type="video",
                    media=plan.video_path(plan.ego_cam, variant),
                    start_sec=action.start,
                    end_sec=action.end,
                    prompt="",
                    caption=describe(plan.script, action, ANNOTATOR_TEMPLATES[0]),
                )
            )
    return rows


def text_only_baseline(egoit: list[dict[str, Any]], egobench: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy of answering EgoBench from the question text alone: per question, pick the option that
    was most often the answer to the same question in EgoIT (ties: first in the frozen order)."""
    frequency: dict[str, Counter] = defaultdict(Counter)
    for row in egoit:
        if row["task"] == "mcq":
            frequency[row["question"]][row["answer"]] += 1
    correct: Counter = Counter()
    total: Counter = Counter()
    for row in egobench:
        counts = frequency[row["question"]]
        guess = max(range(len(row["options"])), key=lambda i: (counts[row["options"][i]], -i))
        correct[row["subset"]] += int(guess == row["answer_idx"])
        total[row["subset"]] += 1
    overall = sum(correct.values()) / max(1, sum(total.values()))
    return {
        "accuracy": overall,
        "by_subset": {k: correct[k] / total[k] for k in sorted(total)},
        "chance": 1 / NUM_OPTIONS,
    }


def _card_sections(kind: str, counts: dict[str, int]) -> dict[str, str]:
    load = (
        f'from datasets import load_dataset\nds = load_dataset("path/to/world/{kind}", "{TASK}")\n'
        f"# video paths are relative to the world root, the parent folder of {kind}/"
    )
    return {
        "Contents": (
            "Rows generated from the scripted synthetic Ego-Exo world of the Exo2Ego project: "
            + ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
            + "."
        ),
        **(
            {
                "Configs": (
                    f"`{TASK}` (default) never names an object's pattern; `{PATTERN_EGOIT_CONFIG}` holds the same "
                    "rows plus questions about the handled object's pattern, the positive control of `exo2ego ablate`."
                )
            }
            if kind == "egoit"
            else {}
        ),
        "Loading": f"```python\n{load}\n```",
        "Videos": (
            "`video` is the ego (Aria) view in `downscaled/448`, relative to the world root; "
            "`start_sec`/`end_sec` bound the action the question is about."
        ),
        "Licence": "Generated data, Apache-2.0, like the project; no third-party content.",
    }


def write_qa_folders(root: Path, plans, config) -> dict[str, Any]:
    """Write ``root/egoit`` (config "synthetic", the default, and :data:`PATTERN_EGOIT_CONFIG`), ``root/egobench``
    (configs "synthetic" and "synthetic_pattern") and ``root/egoclip`` (config "captions"); returns their counts.

    Called inside the world's staging folder, so all appear atomically with the world.
    """
    variant = "448"
    egoit = egoit_rows(plans, config.seed, variant)
    egobench = {task: egobench_rows(plans, config.seed, variant, task) for task in (TASK, PATTERN_TASK)}
    baselines = {task: text_only_baseline(egoit, rows) for task, rows in egobench.items()}
    results = {}
    egoit_tables = {TASK: egoit, PATTERN_EGOIT_CONFIG: egoit_rows(plans, config.seed, variant, ask_pattern=True)}
    for kind, tables, features, split in (
        ("egoit", egoit_tables, EGOIT_FEATURES, "train"),
        ("egobench", egobench, EGOBENCH_FEATURES, "test"),
    ):
        folder = Path(root) / kind
        data_files = hub_export.write_parquet_configs(
            folder, {task: {split: rows} for task, rows in tables.items()}, dict.fromkeys(tables, features)
        )
        # EgoIT counts its default config: the positive control's config repeats those rows
        rows = tables[TASK] if kind == "egoit" else [row for table in tables.values() for row in table]
        by_kind = Counter(row["task"] if kind == "egoit" else row["subset"] for row in rows)
        card = hub_export.make_dataset_card(
            data_files,
            pretty_name=f"Synthetic {'EgoIT' if kind == 'egoit' else 'EgoBench'}",
            license="apache-2.0",
            sections=_card_sections(kind, dict(by_kind)),
            task_categories=["video-text-to-text"],
        )
        card.save(str(folder / hub_export.CARD_NAME))
        info = {
            "builder": "datasets_scripts.synthetic.qa",
            "seed": config.seed,
            "video_root": "..",
            "video_variant": variant,
            "counts": {"rows": len(rows), "by_kind": dict(by_kind)},
            "skips": {},
        }
        if kind == "egobench":
            info["text_only_baseline"] = baselines[TASK]
            info["text_only_baseline_by_task"] = baselines
        hub_export.write_build_info(folder, info)
        results[f"{kind}_rows"] = len(rows)
    captions = caption_rows(plans, config.seed, variant)
    folder = Path(root) / CAPTIONS_FOLDER
    data_files = hub_export.write_parquet_configs(
        folder, {CAPTIONS_CONFIG: {"train": captions}}, {CAPTIONS_CONFIG: CAPTION_FEATURES}
    )
    card = hub_export.make_dataset_card(
        data_files,
        pretty_name="Synthetic EgoClip-style captions",
        license="apache-2.0",
        sections={
            "Contents": f"{len(captions)} narrations of the synthetic world's train takes over their ego clips.",
            "Videos": "`media` is the ego view in `downscaled/448`, relative to the world root (the parent folder).",
            "Licence": "Generated data, Apache-2.0, like the project; no third-party content.",
        },
        task_categories=["video-text-to-text"],
    )
    card.save(str(folder / hub_export.CARD_NAME))
    hub_export.write_build_info(
        folder,
        {
            "builder": "datasets_scripts.synthetic.qa",
            "seed": config.seed,
            "video_root": "..",
            "video_variant": variant,
            "counts": {"rows": len(captions)},
            "skips": {},
        },
    )
    results["egoclip_rows"] = len(captions)
    results["egobench_text_only_accuracy"] = baselines[TASK]["accuracy"]
    results["egobench_pattern_text_only_accuracy"] = baselines[PATTERN_TASK]["accuracy"]
    return results
