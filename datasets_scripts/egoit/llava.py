"""Export canonical EgoIT rows to the VideoLLaMA2/LLaVA ``conversations`` JSON.

Format (VideoLLaMA2 README, "Data Format")::

    [{"id": "egotimeqa/0000123", "video": "egotimeqa/v1/clips/<clip>.mp4",
      "conversations": [{"from": "human", "value": "<video>\\n<instruction>\\n<question>"},
                        {"from": "gpt", "value": "<answer>"}]}]

``video`` is ``<source>/<path relative to that source's root>``, to be joined onto VideoLLaMA2's
``--data_folder`` (a folder holding one link per source root). Rows cut from a longer video also carry
``video_start_sec``/``video_end_sec``; VideoLLaMA2's ``LazySupervisedDataset`` ignores them, so such
sources need pre-cut clips or a loader that passes them to ``process_video(s=..., e=...)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from datasets_scripts.schema import format_options
from exo2ego_base.provenance import atomic_write

VIDEO_TOKEN = "<video>"


def human_prompt(row: Mapping[str, Any]) -> str:
    """The user turn of one row: video token, instruction, question, options block (if any)."""
    parts = [VIDEO_TOKEN, row["instruction"]]
    if row.get("question"):
        parts.append(row["question"])
    if row.get("options"):
        parts.append(format_options(row["options"]))
    return "\n".join(parts)


def to_conversation(row: Mapping[str, Any]) -> dict[str, Any]:
    """One LLaVA record for one canonical EgoIT row."""
    record: dict[str, Any] = {
        "id": row["id"],
        "video": f"{row['source']}/{row['video']}",
        "conversations": [{"from": "human", "value": human_prompt(row)}, {"from": "gpt", "value": row["answer"]}],
    }
    if row.get("video_start_sec") is not None or row.get("video_end_sec") is not None:
        record["video_start_sec"] = row.get("video_start_sec")
        record["video_end_sec"] = row.get("video_end_sec")
    return record


def export_llava_json(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> int:
    """Write the conversations JSON atomically (temp file, then rename); return the record count.

    Records are written as they come (the text ``json.dumps(records, ensure_ascii=False, indent=1)`` would give,
    without holding the list).
    """
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(",\n " if count else "[\n ")
            # One level of indent inside the list: every line of the record one space further in (JSON strings
            # hold no raw newline, so only the layout's newlines are replaced).
            handle.write(json.dumps(to_conversation(row), ensure_ascii=False, indent=1).replace("\n", "\n "))
            count += 1
        handle.write("\n]\n" if count else "[]\n")
    return count
