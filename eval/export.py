"""Prediction files in the formats that official evaluation servers take, one exporter per format.

A task opts in with ``TaskSpec.export_format`` (a key of :data:`EXPORTERS`); :func:`export_predictions`
runs the exporter of every evaluated task that has one.

- ``egoschema_submission`` (EgoSchema full set, labels hidden): ``exports/egoschema_submission.csv`` with the
  header ``q_uid,answer`` and the predicted option index 0-4 per question, the format of the public
  EgoSchema Kaggle competition; the same mapping as ``{q_uid: answer}`` JSON, the body the EgoSchema
  validation script posts. Questions without a valid prediction get -1 and are counted in the log.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from exo2ego_base.provenance import write_json_atomic, write_text_atomic

from .data import TaskData
from .records import task_records

logger = logging.getLogger(__name__)


def egoschema_uid(row: dict) -> str:
    """The EgoSchema ``q_uid`` of a canonical row (``meta.q_uid``, else the id after ``egoschema/``)."""
    return str(row["meta"].get("q_uid") or row["sample_id"].split("/", 1)[-1])


def export_egoschema_submission(out_dir: str | os.PathLike, data: TaskData) -> list[Path]:
    """``exports/egoschema_submission.{csv,json}`` from the task's records; returns the two paths."""
    records = task_records(out_dir, data.spec.name)
    answers = {}
    for row in data.rows:
        prediction = records[row["sample_id"]]["prediction"]
        answers[egoschema_uid(row)] = -1 if prediction is None else int(prediction)
    folder = Path(out_dir) / "exports"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["q_uid", "answer"])
    writer.writerows(answers.items())
    written = [
        write_text_atomic(folder / "egoschema_submission.csv", buffer.getvalue()),
        write_json_atomic(folder / "egoschema_submission.json", answers),
    ]
    missing = sum(value == -1 for value in answers.values())
    if missing:
        logger.warning(
            "%s: %d of %d questions had no valid prediction (written as -1)", data.spec.name, missing, len(answers)
        )
    return written


# Export format -> writer(out_dir, task data) returning the written paths.
EXPORTERS: dict[str, Callable[[str | os.PathLike, TaskData], list[Path]]] = {
    "egoschema_submission": export_egoschema_submission,
}


def export_predictions(out_dir: str | os.PathLike, task_data: Mapping[str, TaskData]) -> list[Path]:
    """Write the server formats of the tasks that declare one; returns the written paths."""
    written = []
    for data in task_data.values():
        if data.spec.export_format is not None:
            written += EXPORTERS[data.spec.export_format](out_dir, data)
    return written
