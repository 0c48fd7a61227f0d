"""Read VideoLLaMA2 / LLaVA-style pretraining JSON and write initialization caption rows (Hub-ready Parquet).

The paper initialises the exo tower "following VideoLLaMA2" on its web-crawled image-text and video-text pairs
(Table 1: Panda-70M, WebVid-10M, VIDAL-10M, InternVid-10M, CC-3M, DCI). Those are distributed as annotation JSON
plus media folders; each record is::

    {"id": 17, "video": "panda/000017.mp4",            # or "image": "cc3m/000017.jpg"
     "conversations": [{"from": "human", "value": "<video>\\nDescribe the video."},
                       {"from": "gpt", "value": "A dog runs across a lawn."}]}

A file is a JSON list (rows are 0-based list positions in errors) or JSON Lines (rows are 1-based line numbers).
Every record becomes a :data:`~datasets_scripts.schema.CAPTION_FEATURES` row: ``id`` = ``<source>/<record id>``,
``media`` the path relative to the source root (the ``--data_folder`` of VideoLLaMA2), ``media_type`` from the key
(``video`` with an image file suffix counts as an image, as VideoLLaMA2's README example does), ``prompt`` the human
turn without its ``<video>``/``<image>`` tag and ``caption`` the gpt turn.

A record is a bad row (an error naming file, row and field; or, with ``skip_bad_rows``, a counted skip) when it has
no media or both keys, a media path that is absolute or leaves its root, a video file (by its suffix) under the
``image`` key, a missing media file (when ``check_media``), conversations that are not exactly one human turn with
one media tag followed by one non-empty gpt turn, or an id seen before in this build.

Memory does not grow with the rows: files are parsed as a stream (JSON Lines line by line, a JSON list through
ijson), rows go to Parquet a 10,000-row group at a time, and ids are remembered as 8-byte digests.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import posixpath
import stat
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datasets_scripts import hub_export
from datasets_scripts.pretrain import SOURCES
from datasets_scripts.schema import CAPTION_FEATURES, caption_row
from datasets_scripts.source_io import (
    BadRows,
    DigestSet,
    RowError,
    SourceFileError,
    field,
    id_digests,
    iter_json_array,
    text,
)

CONFIG = "captions"
MEDIA_TAGS = ("<video>", "<image>")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
BATCH_ROWS = 1_000  # records converted (and their ids checked) at a time
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


def annotation_files(root: Path, given: Sequence[str | Path] = ()) -> list[Path]:
    """The annotation files of one source: `given` (absolute, or relative to the working directory or to `root`),
    else every ``*.json`` / ``*.jsonl`` directly under `root`, sorted."""
    if given:
        files = []
        for item in given:
            path = Path(item)
            path = path if path.is_file() or path.is_absolute() else root / path
            if not path.is_file():
                raise SourceFileError(f"annotation file not found: {item} (also tried {root / item})")
            files.append(path)
        return files
    files = sorted(path for path in root.iterdir() if path.suffix in (".json", ".jsonl") and path.is_file())
    if not files:
        raise SourceFileError(
            f"no *.json / *.jsonl annotation file directly under {root}; pass --annotations NAME=FILE"
        )
    return files


def iter_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (row, record): list positions of a JSON list, 1-based line numbers of a JSON Lines file. Both are read
    as a stream (a JSON list through :func:`~datasets_scripts.source_io.iter_json_array`): memory holds a few
    records, not the file."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield line_number, json.loads(line)
                except json.JSONDecodeError as error:
                    yield line_number, RowError(path, line_number, "(json)", f"not valid JSON: {error.msg}")
        return
    yield from iter_json_array(
        path,
        not_a_list=lambda payload: RowError(
            path, "(file)", "(json)", f"expected a JSON list of records, got {type(payload).__name__}"
        ),
    )


def media_path(value: Any) -> str:
    """A relative POSIX path that stays inside its root (normalised)."""
    value = text(value)
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        raise ValueError("absolute path: media paths are relative to the source root")
    normalised = posixpath.normpath(value.replace("\\", "/"))
    if normalised == ".." or normalised.startswith("../"):
        raise ValueError("the path leaves the media root")
    return normalised


def _is_file(path: str) -> bool:
    """``Path(path).is_file()`` without pathlib, which interns every component of every path it parses (memory
    that would grow with the rows)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            raise
        return False
    except ValueError:  # a path the file system cannot encode
        return False


def caption_from_record(
    record: Any, source: str, path: Path, row: int, root: Path, check_media: bool
) -> dict[str, Any]:
    """One caption row from one JSON record, or :class:`RowError` naming file, row and field."""
    if isinstance(record, RowError):
        raise record
    if type(record) is not dict and not isinstance(record, Mapping):  # (the ABC check alone is slow)
        raise RowError(path, row, "(record)", f"expected an object, got {type(record).__name__}")
    record_id = field(record, "id", path, row, lambda value: text(str(value)))
    present = [key for key in ("video", "image") if record.get(key) not in (None, "")]
    if not present:
        raise RowError(path, row, "video|image", "no media: the record has neither a 'video' nor an 'image' path")
    if len(present) == 2:
        raise RowError(path, row, "video|image", "both 'video' and 'image': one media file per record")
    key = present[0]
    media = field(record, key, path, row, media_path)
    if key == "image" and media.lower().endswith(VIDEO_SUFFIXES):
        raise RowError(path, row, "image", f"{media!r} has a video file suffix; put videos under the 'video' key")
    media_type = "image" if key == "image" or media.lower().endswith(IMAGE_SUFFIXES) else "video"
    if check_media and not _is_file(os.path.join(root, media)):
        raise RowError(path, row, key, f"media file not found: {root / media}")

    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) != 2:
        count = len(turns) if isinstance(turns, list) else type(turns).__name__
        raise RowError(path, row, "conversations", f"expected [human turn, gpt turn], got {count}")
    for index, expected in enumerate(("human", "gpt")):
        turn = turns[index]
        if (type(turn) is not dict and not isinstance(turn, Mapping)) or turn.get("from") != expected:
            raise RowError(
                path, row, f"conversations.{index}.from", f"expected a {expected!r} turn, got {turns[index]!r}"
            )
    human = field(turns[0], "value", path, row, text, parent="conversations.0")
    tags = sum(human.count(tag) for tag in MEDIA_TAGS)
    if tags != 1:
        raise RowError(
            path, row, "conversations.0.value", f"expected exactly one <video> or <image> tag, found {tags}"
        )
    prompt = " ".join(human.replace("<video>", " ").replace("<image>", " ").split())
    caption = field(turns[1], "value", path, row, text, parent="conversations.1")
    return caption_row(
        id=f"{source}/{record_id}", source=source, media_type=media_type, media=media, prompt=prompt, caption=caption
    )


def iter_captions(
    roots: Mapping[str, Path],
    annotations: Mapping[str, Sequence[Path]],
    bad_rows: BadRows,
    check_media: bool = False,
    max_rows: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Caption rows of every source, in source and file order; duplicate ids are bad rows too.

    Records are converted :data:`BATCH_ROWS` at a time, so that their ids are checked against the ids seen before
    in one vectorised lookup (:class:`~datasets_scripts.source_io.DigestSet`: 8 bytes an id); each record's
    outcome (its row, its error, or "duplicate") is then replayed in file order, so skips, examples and errors are
    those of a row-by-row build.
    """
    seen = DigestSet()
    produced = 0
    for source, root in roots.items():
        for path in annotations[source]:
            records = iter(tqdm(iter_records(path), desc=path.name, unit=" rows", mininterval=5))
            for batch in iter(lambda: list(itertools.islice(records, BATCH_ROWS)), []):
                outcomes: list[tuple[int, Any]] = []
                for row, record in batch:
                    try:
                        outcomes.append((row, caption_from_record(record, source, path, row, root, check_media)))
                    except Exception as error:  # replayed below, in order, inside the bad-row guard
                        outcomes.append((row, error))
                first = iter(
                    seen.first_seen(id_digests([c["id"] for _, c in outcomes if not isinstance(c, Exception)]))
                )
                for row, caption in outcomes:
                    if max_rows is not None and produced >= max_rows:
                        return
                    with bad_rows.guard(source):
                        if isinstance(caption, Exception):
                            raise caption
                        if not next(first):
                            raise RowError(path, row, "id", f"duplicate id {caption['id']!r} (an earlier row has it)")
                        produced += 1
                        yield caption


def build_pretrain(
    roots: Mapping[str, Path],
    out: str | Path,
    *,
    annotations: Mapping[str, Sequence[str]] | None = None,
    skip_bad_rows: bool = False,
    check_media: bool = False,
    max_rows: int | None = None,
    shard_rows: int = 500_000,
    overwrite: bool = False,
    args: Mapping[str, Any] | None = None,
) -> dict:
    """Write the ``captions`` config (split ``train``) of the sources in `roots` to the Hub-ready folder `out`.

    Args:
        roots: ``{source: media root}`` (sources of :data:`SOURCES`); media paths are relative to it.
        annotations: ``{source: [annotation files]}``; a source without files reads every JSON/JSONL under its root.
    Returns build_info (counts by source and media type, skips by source/field).
    """
    if not roots:
        raise ValueError(f"pretrain: pass at least one --root NAME=DIR ({', '.join(SOURCES)})")
    files = {
        source: annotation_files(Path(root), (annotations or {}).get(source, ())) for source, root in roots.items()
    }
    bad_rows = BadRows(skip=skip_bad_rows)
    by_kind: Counter = Counter()
    inputs = [*roots.values(), *(path for paths in files.values() for path in paths)]
    with hub_export.staged_folder(out, overwrite=overwrite, inputs=inputs) as staging:
        writer = hub_export.ShardedParquetWriter(staging, CONFIG, "train", CAPTION_FEATURES, shard_rows)
        for caption in iter_captions({s: Path(r) for s, r in roots.items()}, files, bad_rows, check_media, max_rows):
            writer.add(caption)
            by_kind[f"{caption['source']}/{caption['media_type']}"] += 1
        if not writer.count:
            raise ValueError("pretrain: no usable rows (every record was a bad row); see the skips above")
        data_files = {CONFIG: {"train": writer.finish()}}
        build_info = {
            "builder": "pretrain",
            "counts": {CONFIG: writer.count, **dict(sorted(by_kind.items()))},
            "skips": bad_rows.summary(),
            "check_media": check_media,
            "max_rows": max_rows,
            "annotation_files": {source: [path.name for path in paths] for source, paths in files.items()},
            "args": dict(args or {}),
        }
        card = hub_export.make_dataset_card(
            data_files,
            pretty_name="Exo2Ego initialization: web image/video-text pairs",
            license="other",
            summary="Captions of VideoLLaMA2/LLaVA-style pretraining data as Exo2Ego initialization rows for the exo "
            "vision tower. No media is included; `media` is relative to the user's copy of each source.",
            sections={
                "Source and licence": "Each source (Panda-70M, WebVid-10M, VIDAL-10M, InternVid-10M, CC-3M, DCI, ...) "
                "keeps its own licence and terms; re-host only what they allow.",
                "Loading": "```python\nfrom datasets import load_dataset\n"
                'captions = load_dataset(PATH, "captions", split="train")\n```\n'
                "Training: `python train/init.py --config train/configs/init.yaml "
                "--exo_dataset_path PATH --exo_video_root MEDIA_ROOT`.",
            },
            tags=["video", "image", "captioning"],
            task_categories=["video-text-to-text"],
        )
        card.save(staging / hub_export.CARD_NAME)
        hub_export.write_build_info(staging, build_info)
    return build_info
