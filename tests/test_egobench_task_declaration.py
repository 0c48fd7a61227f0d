"""An EgoBench task is one declaration (datasets_scripts/egobench/tasks.py). A task declared here, in a test, is
built from its source by ``exo2ego data egobench``, checked for leakage and scored by ``exo2ego eval`` with the
tiny model, with no other registry to touch; declarations that eval or the leakage report cannot read are refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_scripts.build_command import BuildContext
from datasets_scripts.egobench import tasks as egobench_tasks
from datasets_scripts.egobench.options import EgoBenchOptions, TaskTables, checked_row
from datasets_scripts.egobench.tasks import EGOBENCH_TASKS, EgoBenchTask, Scoring, builder_tasks, config_task
from datasets_scripts.leakage import bench_ids
from datasets_scripts.schema import EGOBENCH_FEATURES
from datasets_scripts.source_io import RowError, field, find_file, iter_json_array
from eval.config import EvalConfig
from eval.runner import evaluate
from eval.tasks import TASKS, get_task, subset_accuracy, task_spec
from eval.toy import write_video
from exo2ego.cli import main

NAME = "kitchen_qa"
SOURCE_RECORDS = [  # the source format of the toy task: questions.json, one object per question
    {
        "qid": "q0",
        "clip": "P01-R01",
        "room": "kitchen",
        "question": "What did I open?",
        "choices": ["a drawer", "a door", "a tap", "a jar"],
        "answer": "a tap",
    },
    {
        "qid": "q1",
        "clip": "P02-R03",
        "room": "kitchen",
        "question": "What did I cut?",
        "choices": ["bread", "cheese", "an onion", "a tomato"],
        "answer": "bread",
    },
    {
        "qid": "q2",
        "clip": "P03-R02",
        "room": "hall",
        "question": "Where did I put the keys?",
        "choices": ["on the shelf", "in a bag", "on the table", "in a drawer"],
        "answer": "in a bag",
    },
]


def read_kitchen_qa(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """The toy source as released: ``questions.json`` ``[{qid, clip, room, question, choices, answer}]``, videos
    ``clips/<clip>.mp4`` (EGTEA-style clip names: the leakage namespace ``egtea``)."""
    path = find_file(root, ["questions.json"], NAME)
    rows = []
    for index, record in iter_json_array(path):
        with context.bad_rows.guard(NAME):
            choices = record.get("choices") if isinstance(record, dict) else None
            if not isinstance(choices, list) or not all(isinstance(choice, str) and choice for choice in choices):
                raise RowError(path, index, "choices", f"expected a list of strings, got {choices!r}")
            answer = field(record, "answer", path, index)
            if answer not in choices:
                raise RowError(path, index, "answer", f"{answer!r} is not one of the choices {choices}")
            clip = field(record, "clip", path, index)
            rows.append(
                checked_row(
                    path,
                    index,
                    sample_id=f"{NAME}/{field(record, 'qid', path, index)}",
                    task=NAME,
                    subset=field(record, "room", path, index),
                    video=f"clips/{clip}.mp4",
                    question=field(record, "question", path, index),
                    options=choices,
                    answer_idx=choices.index(answer),
                    start_sec=0.0,
                    end_sec=2.0,
                    meta={"video_id": clip, "source_file": path.name, "source_row": index},
                    shuffle_seed=options.shuffle_seed,
                )
            )
    return {NAME: (EGOBENCH_FEATURES, rows)}


DECLARATION = EgoBenchTask(
    name=NAME,
    row_configs=((NAME,),),
    reader=read_kitchen_qa,
    licence="Kitchen QA (a test's own questions on EGTEA-style clips).",
    leakage_namespace="egtea",
    config_notes={NAME: "4-way questions; subset = the room"},
    scoring=Scoring(
        display_name="Kitchen QA",
        paper_table="(test)",
        option_counts=(4,),
        subset_metrics=True,
        headline=("accuracy", "accuracy:Kitchen"),
    ),
)


@pytest.fixture
def declared(monkeypatch):
    """The toy task, declared for the length of one test."""
    monkeypatch.setitem(EGOBENCH_TASKS, NAME, DECLARATION)
    return DECLARATION


def write_source(root: Path) -> Path:
    (root / NAME).mkdir(parents=True)
    (root / NAME / "questions.json").write_text(json.dumps(SOURCE_RECORDS))
    for seed, record in enumerate(SOURCE_RECORDS):
        write_video(root / NAME / "clips" / f"{record['clip']}.mp4", seed=seed)
    return root / NAME


def write_training_folder(folder: Path, videos: list[str]) -> Path:
    """An export folder whose ``egtea`` config has rows of these videos (the id columns the leakage check reads)."""
    (folder / "data" / "egtea").mkdir(parents=True)
    table = pa.table({"source": ["egtea"] * len(videos), "video": videos})
    pq.write_table(table, folder / "data" / "egtea" / "train-00000-of-00001.parquet")
    return folder


def test_a_declared_task_is_built_checked_for_leakage_and_scored(tmp_path, declared, tiny):
    # Every registry is derived from the declaration: the builder's tasks, configs, eval's tasks.
    assert NAME in builder_tasks() and config_task(NAME) == NAME
    assert TASKS[NAME] is get_task(NAME) and TASKS[NAME].configs is declared
    assert TASKS[NAME].headline == (TASKS[NAME].headline[0], subset_accuracy("Kitchen"))

    source = write_source(tmp_path / "sources")
    train = write_training_folder(tmp_path / "train", ["clips/P02-R03.mp4", "clips/P09-R09.mp4"])
    out = tmp_path / "egobench"
    argv = ["data", "egobench", "--root", f"{NAME}={source}", "--out", str(out), "--leakage-against", str(train)]
    assert main(argv) == 0

    # The build: the reader's rows (options in their frozen order), the card's config and licence notes.
    info = json.loads((out / "build_info.json").read_text())
    assert info["counts"] == {NAME: 3}
    rows = pq.read_table(next((out / "data" / NAME).glob("*.parquet"))).to_pylist()
    assert [row["sample_id"] for row in rows] == [f"{NAME}/q0", f"{NAME}/q1", f"{NAME}/q2"]
    for row, record in zip(rows, SOURCE_RECORDS):
        assert sorted(row["options"]) == sorted(record["choices"]) and row["answer_text"] == record["answer"]
        assert row["options"][row["answer_idx"]] == record["answer"]
    card = (out / "README.md").read_text()
    assert f"- **{NAME}**: {declared.licence}" in card and "4-way questions; subset = the room" in card

    # The leakage check: the shared clip is found in the declared namespace.
    report = json.loads((out / "leakage_report.json").read_text())
    assert [(p["train"], p["bench"], p["namespace"], p["ids"]) for p in report["pairs"]] == [
        ("train/egtea", NAME, "egtea", ["P02-R03"])
    ]
    assert "## Leakage" in card

    # exo2ego eval finds the task in the folder and scores it with the declared metrics.
    run = tmp_path / "run"
    config = EvalConfig(
        tasks="all",
        video_roots=[f"{NAME}={source}"],
        bootstrap_resamples=50,
        max_new_tokens=8,
        open_max_new_tokens=8,
    )
    results = evaluate(*tiny, str(out), str(run), config, show_progress=False)
    entry = results["tasks"][NAME]
    assert entry["counts"]["mcq"] == 3
    assert {"accuracy", "accuracy_kitchen", "accuracy_hall"} <= set(entry["metrics"])
    assert entry["metrics"]["accuracy_kitchen"]["n"] == 2 and entry["metrics"]["accuracy_kitchen"]["label"] == (
        "Acc. (Kitchen)"
    )
    assert "| Kitchen QA | Acc. (Kitchen) |" in (run / "report.md").read_text()


def test_rows_of_an_undeclared_task_have_no_leakage_namespace(monkeypatch):
    row = {"task": NAME, "meta": json.dumps({"video_id": "P01-R01"})}
    with pytest.raises(ValueError, match=f"EgoBench task '{NAME}' is not declared"):
        bench_ids([row])
    monkeypatch.setitem(EGOBENCH_TASKS, NAME, DECLARATION)
    assert bench_ids([row]) == {"egtea": {"P01-R01"}}
    # A namespace rule of a declaration sees the row's meta (EgoPlan's videos come from two datasets).
    assert bench_ids([{"task": "egoplan", "meta": json.dumps({"video_id": "v", "video_source": "Ego4D"})}]) == {
        "ego4d_video": {"v"}
    }


def test_declarations_eval_or_the_builder_cannot_read_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="needs its licence note"):
        dataclasses.replace(DECLARATION, licence="")
    with pytest.raises(ValueError, match="leakage_namespace"):
        dataclasses.replace(DECLARATION, leakage_namespace="")
    with pytest.raises(ValueError, match="config_notes name configs it does not write"):
        dataclasses.replace(DECLARATION, config_notes={"other": "note"})
    with pytest.raises(ValueError, match="'vlnqa' is declared by EgoBench tasks 'vlnqa' and 'kitchen_qa'"):
        clash = dataclasses.replace(DECLARATION, row_configs=(("vlnqa",),), config_notes={})
        egobench_tasks._registry(EGOBENCH_TASKS["vlnqa"], clash)

    def scoring(**changes) -> EgoBenchTask:
        return dataclasses.replace(DECLARATION, scoring=dataclasses.replace(DECLARATION.scoring, **changes))

    with pytest.raises(ValueError, match="unknown headline metric 'acc'"):
        task_spec(scoring(headline=("acc",)))
    with pytest.raises(ValueError, match="unknown subset rule 'room'"):
        task_spec(scoring(subset_of="room"))
    with pytest.raises(ValueError, match="a retrieval task needs side configs"):
        task_spec(scoring(retrieval=True))
    # eval reads the declarations when it is asked, so a declaration it cannot read fails there, naming the task.
    monkeypatch.setitem(EGOBENCH_TASKS, NAME, scoring(headline=("acc",)))
    with pytest.raises(ValueError, match=f"EgoBench task '{NAME}': unknown headline metric"):
        TASKS[NAME]
