"""Training samples from Ego-ExoClip, EgoIT and initialization caption tables.

A table is any `datasets.Dataset` with the published columns (a Hub-ready folder or repo read with
`load_dataset`); video paths are relative to `video_root`, the user's local copy of the source videos. Samples
decode their frames in `__getitem__`, so decoding runs in the DataLoader workers.

Exo camera choice (Ego-ExoClip rows offer 4-5 exo cameras):
- `all_pairs` (the paper's, and the default here and of the stage scripts' `exo_sampling` argument): every
  (row, camera) pair is its own sample, at a fixed index, so the sampler's seeded shuffle visits each pair once per
  epoch, identically on every rank and after a resume;
- `random`: one camera per row per epoch, drawn from a generator seeded by (seed, epoch,
  row), so the draw is the same on every rank and worker and after a resume, and epochs cover different pairs;
- `best_exo`: the row's `best_exo_cam` (Ego-Exo4D's best exocentric view; rows where it is null fall back to the
  seeded draw).

`shuffle_pairs` is a negative control of the stage-2 losses: each ego clip is paired with the exo clip of a row of
another take (:func:`cross_take_partners`), so the KL and the cycle loss see pairs that are not synchronized.

Initialization from two sources (paper §4.1): `CaptionSamples` reads caption rows (`CAPTION_FEATURES`: web
image/video-text pairs for the exo tower, EgoClip for the ego tower) and `MixedSourceSamples` combines them: each of
its items holds `exo_per_item` exo samples and `ego_per_item` ego samples (the `init_mix` ratio), so every
micro-batch trains both towers in that ratio. An epoch visits every row of both sources at least once: it has
max(ceil(N_exo / exo_per_item), ceil(N_ego / ego_per_item)) items and the smaller source is cycled, each cycle in a
new order from a seeded affine permutation of (seed, epoch, source, cycle) (no index array, so 100M-row sources
cost no memory).

Decoded clips can be kept in memory (`DecodedClipCache`, the stage scripts' `decoded_cache_mb`): EgoIT asks several
questions about one segment and small data sets repeat over epochs, so on a CPU most of a step's time would otherwise
go to decoding the same frames again. Each DataLoader worker holds its own cache.

Unreadable videos are logged, counted and replaced by a readable sample from a seeded random position;
`FailureTracker` stops the run with a clear error once more than `max_failed_fraction` of the data failed.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
from datasets import load_dataset
from PIL import Image
from torch.utils.data import Dataset

from datasets_scripts.hub_export import CARD_NAME, load_folder
from datasets_scripts.schema import EGOIT_FEATURES, OPTION_LETTERS, format_options
from modeling_exo2ego import DecodedClipCache, read_video_frames, sample_timestamps
from train.stages import BRANCH_VIEWS

logger = logging.getLogger(__name__)

CLIP_COLUMNS = ("clip_id", "take_uid", "start_sec", "end_sec", "text", "ego_video", "exo_videos", "exo_cams")
EGOIT_COLUMNS = tuple(EGOIT_FEATURES)  # the builder's schema, column for column
CAPTION_COLUMNS = ("id", "media_type", "media", "start_sec", "end_sec", "prompt", "caption")
EXO_SAMPLING_MODES = ("random", "best_exo", "all_pairs")
BEST_EXO_COLUMN = "best_exo_cam"
# Samples tried (the requested one, then seeded random replacements) before the loader gives up.
MAX_REPLACEMENT_TRIES = 16
# The user turn of Ego-ExoClip and EgoClip caption samples (their target is the narration).
CLIP_PROMPT = "Describe what the person in the video is doing."


def check_columns(table, required, where: str) -> None:
    """Raise `ValueError` naming the table and the missing columns."""
    missing = [column for column in required if column not in table.column_names]
    if missing:
        raise ValueError(
            f"{where} is missing required column(s) {missing}; it has {table.column_names}, expected at least "
            f"{list(required)}"
        )


def load_table(path: str, config_name: str | None, split: str):
    """One split of a Hub-ready dataset folder or Hub repo, with an error that names the dataset.

    A local export folder (with its dataset card) is read through `datasets_scripts.hub_export.load_folder`: plain
    `load_dataset(folder)` caches local folders by folder name and config only, so a rebuilt folder, or another
    folder of the same name, could come back with old rows.
    """
    try:
        if os.path.isfile(os.path.join(path, CARD_NAME)):
            return load_folder(path, config_name, split=split)
        return load_dataset(path, config_name, split=split)
    except Exception as error:
        raise ValueError(f"cannot load dataset {path!r} (config {config_name!r}, split {split!r}): {error}") from error


class VideoDecodeError(RuntimeError):
    """A sample whose video could not be read."""


@dataclass
class FailureTracker:
    """Counts samples whose video could not be read and stops the run past `max_fraction` of the data.

    The limit is `max_fraction * dataset_size` failures (per process under data parallelism, where each rank sees
    1/world_size of the data); `max_fraction=0` stops at the first failure.
    """

    max_fraction: float
    dataset_size: int
    world_size: int = 1
    failed: int = 0

    def add(self, count: int) -> None:
        self.failed += int(count)
        limit = self.max_fraction * self.dataset_size / self.world_size
        if self.failed > limit:
            raise VideoDecodeError(
                f"{self.failed} samples had unreadable videos, more than max_failed_fraction={self.max_fraction} of "
                f"the {self.dataset_size} samples (see the warnings above for the files); check --video_root and "
                "the dataset, or raise max_failed_fraction"
            )


class VideoSamples(Dataset):
    """Base class: rows of a table -> decoded samples, replacing unreadable ones by readable ones.

    Subclasses implement `_decode(index)`, returning a sample dict, and may raise any exception for an unreadable
    video. Each returned sample carries `failed_videos`: how many samples were skipped to produce it. A
    `DecodedClipCache` passed as `cache` serves clips decoded before (callers must not modify returned frames).
    """

    def __init__(self, table, video_root: str, num_frames: int, cache: DecodedClipCache | None = None):
        self.table = table
        self.video_root = video_root
        self.num_frames = num_frames
        self.cache = cache
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def video_path(self, relative: str) -> str:
        return os.path.join(self.video_root, relative)

    def read_frames(self, relative: str, timestamps: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) frames of `video_root/relative` at `timestamps` (seconds)."""
        key = (relative, None if timestamps is None else tuple(np.asarray(timestamps).tolist()))
        frames = self.cache.get(key) if self.cache is not None else None
        if frames is None:
            frames = read_video_frames(self.video_path(relative), self.num_frames, timestamps=timestamps).frames
            if self.cache is not None:
                self.cache.put(key, frames)
        return frames

    def timestamps(self, start_sec, end_sec) -> np.ndarray | None:
        """Segment midpoints of [start, end]; None lets the reader use the whole file."""
        if start_sec is None or end_sec is None:
            return None
        return sample_timestamps(float(start_sec), float(end_sec), self.num_frames)

    def __getitem__(self, index: int) -> dict:
        failed = 0
        for attempt in range(min(MAX_REPLACEMENT_TRIES, len(self))):
            # Replacements are drawn at seeded random positions: unreadable rows come in blocks (a whole take).
            candidate = index if attempt == 0 else int(np.random.default_rng([index, attempt]).integers(len(self)))
            try:
                sample = self._decode(candidate)
            except Exception as error:  # noqa: BLE001 - any decode failure of user data is counted, not fatal
                failed += 1
                logger.warning("skipping sample %d (%s): %s", candidate, self.sample_id(candidate), error)
                continue
            sample["failed_videos"] = failed
            return sample
        raise VideoDecodeError(
            f"sample {index} and {failed - 1} replacements have unreadable videos under {self.video_root!r}"
        )

    def check_video_root(self, where: str, flag: str) -> None:
        """Raise `ValueError` naming the root when the first row's video is not under `video_root`: a wrong root would
        otherwise surface in the loader workers as a run of unreadable videos."""
        if not len(self.table):
            return
        relative = self.first_video()
        path = self.video_path(relative)
        if not os.path.exists(path):
            raise ValueError(
                f"{where}: the first row's video {relative!r} is not under the video root {self.video_root!r} "
                f"({path} does not exist); check {flag}"
            )

    def first_video(self) -> str:
        """The path, relative to `video_root`, of the first video the first row reads."""
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        raise NotImplementedError

    def _decode(self, index: int) -> dict:
        raise NotImplementedError


class EgoExoClipSamples(VideoSamples):
    """Ego-ExoClip clip-text samples for the views of `branches` (e.g. ("exo",) in stage 1, ("pair",) in stage 2).

    Sample: `{"sample_id", "prompt", "target", "ego_frames"?, "exo_frames"?, "exo_cam"?}`; ego and exo frames are
    read at identical timestamps (frame-aligned takes share one clock).
    """

    def __init__(
        self,
        table,
        video_root: str,
        num_frames: int,
        branches: tuple[str, ...],
        prompt: str,
        exo_sampling: str = "all_pairs",
        seed: int = 0,
        where: str = "Ego-ExoClip",
        cache: DecodedClipCache | None = None,
        shuffle_pairs: bool = False,
    ):
        super().__init__(table, video_root, num_frames, cache)
        check_columns(table, CLIP_COLUMNS, where)
        if exo_sampling not in EXO_SAMPLING_MODES:
            raise ValueError(f"exo_sampling must be one of {EXO_SAMPLING_MODES}, got {exo_sampling!r}")
        if exo_sampling == "best_exo":
            check_columns(table, (BEST_EXO_COLUMN,), f"{where} (exo_sampling=best_exo)")
        self.views = {view for branch in branches for view in BRANCH_VIEWS[branch]}
        self.prompt = prompt
        self.exo_sampling = exo_sampling
        self.seed = seed
        # Through the Arrow-formatted view: `table.data` ignores the indices of a `select`ed or shuffled table.
        columns = table.with_format("arrow")
        self._num_cams = pc.list_value_length(columns["exo_cams"]).to_numpy(zero_copy_only=False)
        # all_pairs: sample k is (row, camera) with row = bisect over the cumulative camera counts.
        self._pair_offsets = (
            np.cumsum(self._num_cams).tolist() if exo_sampling == "all_pairs" and "exo" in self.views else None
        )
        self._exo_rows = None
        if shuffle_pairs:
            if self.views != {"ego", "exo"}:
                raise ValueError(f"{where}: shuffle_pairs pairs ego with exo clips; it needs the 'pair' branch")
            takes = columns["take_uid"].to_pylist()
            self._exo_rows = cross_take_partners(takes, seed, where)

    def __len__(self) -> int:
        return self._pair_offsets[-1] if self._pair_offsets else len(self.table)

    def first_video(self) -> str:
        row = self.table[0]
        return row["ego_video"] if "ego" in self.views or not row["exo_videos"] else row["exo_videos"][0]

    def _row_and_camera(self, index: int) -> tuple[int, int | None]:
        if "exo" not in self.views:
            return index, None
        if self._pair_offsets:
            row = bisect.bisect_right(self._pair_offsets, index)
            return row, index - (self._pair_offsets[row - 1] if row else 0)
        if not self._num_cams[index]:
            raise ValueError(f"row {index} has no exo camera")
        if self.exo_sampling == "best_exo":
            row = self.table[index]
            best = row[BEST_EXO_COLUMN]
            if best is not None:
                if best not in row["exo_cams"]:
                    raise ValueError(
                        f"clip {row['clip_id']}: {BEST_EXO_COLUMN} {best!r} is not among its exo_cams "
                        f"{row['exo_cams']}"
                    )
                return index, row["exo_cams"].index(best)
        generator = np.random.default_rng([self.seed, self.epoch, index])
        return index, int(generator.integers(self._num_cams[index]))

    def sample_id(self, index: int) -> str:
        row_index, camera = self._row_and_camera(index)
        row = self.table[row_index]
        return row["clip_id"] if camera is None else f"{row['clip_id']}@{row['exo_cams'][camera]}"

    def _decode(self, index: int) -> dict:
        row_index, camera = self._row_and_camera(index)
        row = self.table[row_index]
        times = self.timestamps(row["start_sec"], row["end_sec"])
        if times is None:
            raise ValueError(f"clip {row['clip_id']} has no start_sec/end_sec")
        sample = {"sample_id": row["clip_id"], "prompt": self.prompt, "target": row["text"]}
        if "ego" in self.views:
            sample["ego_frames"] = self.read_frames(row["ego_video"], times)
        if camera is not None and self._exo_rows is not None:  # the exo clip of another take's row, at its own times
            exo_row = int(self._exo_rows[row_index])
            row, camera = self.table[exo_row], camera % int(self._num_cams[exo_row])
            times = self.timestamps(row["start_sec"], row["end_sec"])
        if camera is not None:
            if len(row["exo_videos"]) != len(row["exo_cams"]):
                raise ValueError(
                    f"clip {row['clip_id']}: {len(row['exo_videos'])} exo_videos for {len(row['exo_cams'])} exo_cams"
                )
            sample["exo_frames"] = self.read_frames(row["exo_videos"][camera], times)
            sample["exo_cam"] = row["exo_cams"][camera]
        return sample


def cross_take_partners(takes: list[str], seed: int, where: str = "Ego-ExoClip") -> np.ndarray:
    """Row i -> a row of another take, for the shuffled-pairs control (a permutation of the rows).

    The takes are put in a seeded random order, the rows sorted by it, and each row paired with the row `m` places
    further on (cyclically), `m` the largest take's row count: no row then lands in its own take, provided no take
    holds more than half of the rows.
    """
    names, sizes = np.unique(np.asarray(takes, dtype=object), return_counts=True)
    largest = int(sizes.max()) if len(sizes) else 0
    if 2 * largest > len(takes):
        raise ValueError(
            f"{where}: shuffle_pairs needs every take to hold at most half of the rows; one holds {largest} of "
            f"{len(takes)}"
        )
    rank = dict(zip(names, np.random.default_rng(seed).permutation(len(names))))
    order = np.array(sorted(range(len(takes)), key=lambda row: (rank[takes[row]], row)))
    partners = np.empty(len(takes), dtype=np.int64)
    partners[order] = np.roll(order, -largest)
    return partners


def egoit_prompt(row: dict) -> str:
    """The user turn of an EgoIT row: instruction, question, then the lettered options (multiple choice)."""
    parts = [row["instruction"], row["question"]]
    if row["options"]:
        parts.append(format_options(row["options"]))
    return "\n".join(part.strip() for part in parts if part and part.strip())


def egoit_target(row: dict) -> str:
    """The answer of an EgoIT row; a multiple-choice answer is "<letter>. <option text>" (e.g. "B. the blue cup"),
    so the letter comes first, as the lettered prompts at evaluation expect, followed by its meaning."""
    options = list(row["options"] or [])
    if row["answer"] in options:
        return f"{OPTION_LETTERS[options.index(row['answer'])]}. {row['answer']}"
    return row["answer"]


class EgoITSamples(VideoSamples):
    """EgoIT instruction samples: `{"sample_id", "prompt", "target", "ego_frames"}`."""

    def __init__(
        self, table, video_root: str, num_frames: int, where: str = "EgoIT", cache: DecodedClipCache | None = None
    ):
        super().__init__(table, video_root, num_frames, cache)
        check_columns(table, EGOIT_COLUMNS, where)

    def __len__(self) -> int:
        return len(self.table)

    def first_video(self) -> str:
        return self.table[0]["video"]

    def sample_id(self, index: int) -> str:
        return self.table[index]["id"]

    def _decode(self, index: int) -> dict:
        row = self.table[index]
        if row["video_start_sec"] is None or row["video_end_sec"] is None:
            frames = read_video_frames(self.video_path(row["video"]), self.num_frames).frames
        else:
            frames = self.read_frames(row["video"], self.timestamps(row["video_start_sec"], row["video_end_sec"]))
        return {"sample_id": row["id"], "prompt": egoit_prompt(row), "target": egoit_target(row), "ego_frames": frames}


def read_image_frames(path: str, num_frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3): one RGB image repeated to every frame (VideoLLaMA2 expands images to its frame count)."""
    with Image.open(path) as image:
        frame = np.asarray(image.convert("RGB"))
    return np.repeat(frame[None], num_frames, axis=0)


class CaptionSamples(VideoSamples):
    """Initialization caption samples for one tower: `{"sample_id", "prompt", "target", "<view>_frames"}`.

    Args:
        view: "exo" (web pairs, fed to the exo tower) or "ego" (EgoClip, fed to the ego tower).
        default_prompt: the user turn of rows whose `prompt` is empty (EgoClip has none).
    """

    def __init__(
        self,
        table,
        video_root: str,
        num_frames: int,
        view: str,
        default_prompt: str,
        where: str = "captions",
        cache: DecodedClipCache | None = None,
    ):
        super().__init__(table, video_root, num_frames, cache)
        check_columns(table, CAPTION_COLUMNS, where)
        if view not in ("exo", "ego"):
            raise ValueError(f"view must be 'exo' or 'ego', got {view!r}")
        self.view = view
        self.default_prompt = default_prompt

    def __len__(self) -> int:
        return len(self.table)

    def first_video(self) -> str:
        return self.table[0]["media"]

    def sample_id(self, index: int) -> str:
        return self.table[index]["id"]

    def _decode(self, index: int) -> dict:
        row = self.table[index]
        if row["media_type"] == "image":
            frames = read_image_frames(self.video_path(row["media"]), self.num_frames)
        elif row["start_sec"] is None or row["end_sec"] is None:
            frames = read_video_frames(self.video_path(row["media"]), self.num_frames).frames
        else:
            frames = self.read_frames(row["media"], self.timestamps(row["start_sec"], row["end_sec"]))
        prompt = row["prompt"] or self.default_prompt
        return {"sample_id": row["id"], "prompt": prompt, "target": row["caption"], f"{self.view}_frames": frames}


def parse_mix(mix: str) -> tuple[int, int]:
    """ "EXO:EGO" (e.g. "1:1", "3:1") -> (exo samples, ego samples) per item; both at least 1."""
    parts = str(mix).split(":")
    try:
        counts = tuple(int(part) for part in parts)
    except ValueError:
        counts = ()
    if len(counts) != 2 or min(counts) < 1:
        raise ValueError(f"init_mix must be 'EXO:EGO' with two integers >= 1 (e.g. '1:1'), got {mix!r}")
    return counts


def _affine_permutation(size: int, seed: tuple[int, ...]) -> tuple[int, int]:
    """(step, shift) of a seeded bijection k -> (k * step + shift) mod size of range(size)."""
    if size == 1:
        return 1, 0
    generator = np.random.default_rng(list(seed))
    while True:
        step = int(generator.integers(1, size))
        if math.gcd(step, size) == 1:
            return step, int(generator.integers(size))


class MixedSourceSamples(Dataset):
    """Items of `exo_per_item` samples of `exo` and `ego_per_item` samples of `ego` (see the module docstring).

    Item: `{"exo": [sample, ...], "ego": [sample, ...], "failed_videos": n}`; the collator batches each list into
    its branch, so the exo tower sees only `exo` rows and the ego tower only `ego` rows.
    """

    def __init__(
        self, exo: CaptionSamples, ego: CaptionSamples, exo_per_item: int = 1, ego_per_item: int = 1, seed: int = 0
    ):
        if not len(exo) or not len(ego):
            raise ValueError(f"both initialization sources need rows (exo: {len(exo)}, ego: {len(ego)})")
        self.sources = {"exo": (exo, exo_per_item), "ego": (ego, ego_per_item)}
        self.seed = seed
        self.epoch = 0
        self._length = max(-(-len(exo) // exo_per_item), -(-len(ego) // ego_per_item))

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for source, _ in self.sources.values():
            source.set_epoch(epoch)

    def rows(self, index: int, branch: str) -> list[int]:
        """Row indices of `branch`'s source in item `index` of the current epoch."""
        source, per_item = self.sources[branch]
        size = len(source)
        rows = []
        for position in range(index * per_item, (index + 1) * per_item):
            cycle, offset = divmod(position, size)
            step, shift = _affine_permutation(size, (self.seed, self.epoch, 0 if branch == "exo" else 1, cycle))
            rows.append((offset * step + shift) % size)
        return rows

    def __getitem__(self, index: int) -> dict:
        item, failed = {}, 0
        for branch, (source, _) in self.sources.items():
            samples = [source[row] for row in self.rows(index, branch)]
            failed += sum(sample.pop("failed_videos", 0) for sample in samples)
            item[branch] = samples
        item["failed_videos"] = failed
        return item
