"""Prediction files in the formats that official evaluation servers take.

- EgoSchema (full set, labels hidden): ``exports/egoschema_submission.csv`` with the header
  ``q_uid,answer`` and the predicted option index 0-4 per question, the format of the public
  EgoSchema Kaggle competition; the same mapping as ``{q_uid: answer}`` JSON, the body the EgoSchema
  validation script posts. Questions without a valid prediction get -1 and are counted in the log.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path

from exo2ego.provenance import write_json_atomic, write_text_atomic

from .data import TaskData
from .records import task_records


def egoschema_uid(row: dict) -> str:
    """The EgoSchema ``q_uid`` of a canonical row (``meta.q_uid``, else the id after ``egoschema/``)."""
    return str(row["meta"].get("q_uid") or row["sample_id"].split("/", 1)[-1])


def export_predictions(out_dir: str | os.PathLike, task_data: Mapping[str, TaskData]) -> list[Path]:
    """Write the server formats for the tasks that have one; returns the written paths."""
    written = []
    if "egoschema" in task_data:
        records = task_records(out_dir, "egoschema")
        answers = {}
        for row in task_data["egoschema"].rows:
            prediction = records[row["sample_id"]]["prediction"]
            answers[egoschema_uid(row)] = -1 if prediction is None else int(prediction)
        folder = Path(out_dir) / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["q_uid", "answer"])
        writer.writerows(answers.items())
        csv_path = write_text_atomic(folder / "egoschema_submission.csv", buffer.getvalue())
        written += [csv_path, write_json_atomic(folder / "egoschema_submission.json", answers)]
        missing = sum(value == -1 for value in answers.values())
        if missing:
            print(f"egoschema: {missing} of {len(answers)} questions had no valid prediction (written as -1)")
    return written
