"""What a finished stage output folder holds, as the stage scripts, the Hub push and the tiny-model guard read it."""

from __future__ import annotations

import json
import os

# Written last by every stage: its presence marks the folder finished.
STAGE_METADATA_NAME = "exo2ego_stage.json"
# Stage 3 saved as an adapter: the LoRA adapter lives in this sub-folder, next to the base weights.
ADAPTER_DIR_NAME = "adapter"


def read_stage_metadata(folder: str) -> dict | None:
    """The folder's `exo2ego_stage.json`, or None when the folder holds no finished stage."""
    path = os.path.join(folder, STAGE_METADATA_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)
