"""What the EgoBench task adapters share: their options, return type, row builder and narration cleaning."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from datasets_scripts.distractors import DEFAULT_NEAR_DUPLICATE, TextEncoder, load_text_encoder
from datasets_scripts.schema import egobench_row
from datasets_scripts.source_io import PathOutsideRootError, RowError

# {config name: (datasets.Features, rows)}: what one task adapter produces.
TaskTables = dict[str, tuple[Any, list[dict[str, Any]]]]


@dataclass
class EgoBenchOptions:
    """Choices of ``exo2ego data egobench`` (see its --help)."""

    option_seed: int = 0
    keep_source_order: bool = False  # True: no option shuffling (numbers comparable to source-ordered runs)
    encoder_model: str | None = None  # sentence-transformers folder; None = bundled all-MiniLM-L6-v2
    near_duplicate: float = DEFAULT_NEAR_DUPLICATE
    qaego4d_split: str = "test"
    egotaskqa_split: str = "test"
    charades_csv: str = "CharadesEgo_v1_test_only1st.csv"
    egomcq_pool: str | None = (
        None  # an egoclip.csv to mine EgoMCQ's extra candidates from (default: EgoMCQ's own texts)
    )
    egomcq_candidates: int = 10
    make_egotaskqa_clips: bool = False  # encode LEMMA frame intervals into the clips the rows use
    frames_fps: float = 30.0  # frame rate of clips encoded from frame folders
    encoder: TextEncoder | None = field(default=None, repr=False)  # injected (tests) or loaded on first use

    @property
    def shuffle_seed(self) -> int | None:
        return None if self.keep_source_order else self.option_seed

    def text_encoder(self) -> TextEncoder:
        if self.encoder is None:
            self.encoder = load_text_encoder(self.encoder_model)
        return self.encoder

    def recorded(self) -> dict[str, Any]:
        """JSON-able view for build_info.json."""
        values = {key: value for key, value in vars(self).items() if key != "encoder"}
        values["encoder_id"] = self.encoder.encoder_id if self.encoder is not None else None
        return values


def clean_narration(value: str) -> str:
    """Ego4D narration text without its ``#C``/``#O``/``#unsure`` tags.

    ``"#C C opens the tap"`` -> ``"C opens the tap"``."""
    return re.sub(r"\s+", " ", re.sub(r"#\w+", " ", value)).strip()


def checked_row(file, row, **values: Any) -> dict[str, Any]:
    """:func:`~datasets_scripts.schema.egobench_row`; bad options (duplicates, answer out of range) or a video
    path outside the root raise :class:`~datasets_scripts.source_io.RowError` naming the file and row."""
    try:
        return egobench_row(**values)
    except PathOutsideRootError as error:
        raise RowError(file, row, error.field, str(error)) from error
    except ValueError as error:
        raise RowError(file, row, "options", str(error)) from error
