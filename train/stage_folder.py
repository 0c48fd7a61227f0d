"""A stage's output folder as a run folder (`exo2ego_base.run_folder.RunFolder`), and what a finished one holds, as
the stage scripts, the Hub push and the tiny-model guard read it."""

from __future__ import annotations

import os

from exo2ego_base.run_folder import RunFolder

# Written last by every stage: its presence marks the folder finished.
STAGE_METADATA_NAME = "exo2ego_stage.json"
# The arguments of the run training in a folder, written before its first step: resuming checks them.
RUN_RECORD_NAME = "exo2ego_run.json"
# What the folder is, as other commands name it when they refuse to write into it.
STAGE_FOLDER_KIND = "a training stage folder"
# Stage 3 saved as an adapter: the LoRA adapter lives in this sub-folder, next to the base weights.
ADAPTER_DIR_NAME = "adapter"


def stage_run_folder(
    folder: str | os.PathLike, label: str | None = None, error: type[Exception] = ValueError
) -> RunFolder:
    """The stage output `folder` as a run folder (its marker `exo2ego_stage.json`, its record `exo2ego_run.json`);
    `label` and `error` as in `RunFolder`."""
    return RunFolder(folder, STAGE_FOLDER_KIND, STAGE_METADATA_NAME, record=RUN_RECORD_NAME, label=label, error=error)


def read_stage_metadata(folder: str | os.PathLike) -> dict | None:
    """The folder's `exo2ego_stage.json`, or None when the folder holds no finished stage."""
    return stage_run_folder(folder).read_marker()
