"""EgoBench tasks are declared in eval/tasks.py; the generic metric and export code reads the declarations."""

import inspect

import numpy as np
import pytest

from eval import export, metrics, task_metrics
from eval.data import TaskData
from eval.tasks import TASKS, egomcq_question_type, get_task, subset_accuracy


def test_every_declared_export_format_has_an_exporter_and_generic_code_names_no_task():
    assert {spec.name: spec.export_format for spec in TASKS.values() if spec.export_format} == {
        "egoschema": "egoschema_submission"
    }
    assert all(spec.export_format in export.EXPORTERS for spec in TASKS.values() if spec.export_format)
    generic = inspect.getsource(task_metrics) + inspect.getsource(export.export_predictions)
    assert not [name for name in TASKS if f'"{name}"' in generic]


def test_headline_labels_come_from_one_declaration():
    assert subset_accuracy("Inter") == get_task("egomcq").headline[0]
    assert (subset_accuracy("Open-ended QA").key, subset_accuracy("Open-ended QA").label) == (
        "accuracy_open_ended_qa",
        "Acc. (Open-ended QA)",
    )
    keys = [metric.key for spec in TASKS.values() for metric in spec.headline]
    assert "accuracy_closed" in keys and "judge_score_open" in keys


def _row(index: int, types, answer: int = 0) -> dict:
    return {
        "sample_id": f"egomcq/{index}",
        "subset": "test",
        "options": ["a", "b", "c", "d", "e"],
        "answer_idx": answer,
        "meta": {"types": types},
    }


def test_egomcq_subset_metrics_equal_the_official_egomcq_accuracy():
    types = [1, 2, 2, "1", 2, 1]
    predictions = [0, 0, 3, None, 0, 4]
    rows = [_row(index, value) for index, value in enumerate(types)]
    records = {
        row["sample_id"]: {"prediction": prediction, "scorer": "letter_logprob"}
        for row, prediction in zip(rows, predictions)
    }
    computed = task_metrics.compute_task_metrics(TaskData(get_task("egomcq"), rows, "test"), records, resamples=10)
    official = metrics.egomcq_accuracy(predictions, [0] * len(rows), types)
    assert {key: entry["value"] for key, entry in computed["metrics"].items()} == pytest.approx(
        {
            "accuracy": 100 * np.mean([p == 0 for p in predictions]),
            **{f"accuracy_{name}": 100 * value for name, value in official.items()},
        }
    )
    assert computed["metrics"]["accuracy_inter"]["label"] == "Acc. (Inter)"
    with pytest.raises(ValueError, match="unknown EgoMCQ type 3"):
        egomcq_question_type(_row(0, 3))
