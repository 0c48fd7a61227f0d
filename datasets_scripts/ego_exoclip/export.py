"""Write Ego-ExoClip as a Hub-ready folder, and restore the text of an annotations-only export locally.

Folder layout (``load_dataset(OUT, "clips", split="train")`` reads it back)::

    README.md                                   dataset card: YAML configs, licence, download commands, stats
    data/clips/train-*.parquet  data/takes/train-*.parquet
    ego_exoclip_take_uids.txt                   feeds `egoexo --uids`
    stats/*.png                                 clip durations, narration lengths, scenarios, tasks
    build_info.json                             alpha (used and recomputed both ways), counts, drops, versions
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from .. import hub_export
from ..source_io import BadRows, JsonStreamDiffers, RowError, SourceFileError, stream_json
from . import source
from .builder import FEATURES, EgoExoClip
from .plan import EgoExoClipOptions, bad_video_message, check_videos, options_dict, plan_ego_exoclip, text_sha1
from .stats import compute_statistics, plot_statistics

BUILDER_VERSION = "1.0.0"
UID_LIST = "ego_exoclip_take_uids.txt"
MAX_ROWS_PER_SHARD = 100_000
LICENSE_LINK = "https://docs.ego-exo4d-data.org/getting-started/"


def _file_sha1(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(root: Path) -> dict[str, Any]:
    """Which release the build read: SHA-1 of takes.json / splits.json / the train annotations and their ``ds``."""
    train = root / "annotations" / "atomic_descriptions_train.json"
    info = {
        name: _file_sha1(root / name)
        for name in ("takes.json", "annotations/splits.json", "annotations/atomic_descriptions_train.json")
    }
    info["atomic_descriptions_ds"] = _top_level_value(train, "ds")
    return info


def _top_level_value(path: Path, key: str) -> Any:
    """``json.load(path).get(key)``, or None for a file that is missing, not JSON or not an object; the file is read
    as a stream (:func:`~datasets_scripts.source_io.stream_json`: the annotations file is hundreds of MB), whole
    where the stream cannot stand for that."""
    try:
        values = list(stream_json(path, key))
        return values[-1] if values else None  # json.load keeps the last of a key written twice
    except JsonStreamDiffers:
        pass
    except (OSError, ValueError):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _card_sections(info: dict[str, Any], plots: dict[str, str]) -> dict[str, str]:
    counts, alpha, stats = info["counts"], info["alpha"], info["statistics"]
    recomputed = ", ".join(
        f"`{mode}`: {value:.3f} s" if value is not None else f"`{mode}`: n/a"
        for mode, value in alpha["recomputed"].items()
    )
    text_note = (
        "`text` is **null**; `text_sha1` is the SHA-1 of the released description, so a local build "
        "can fill and verify it"
        if info["annotations_only"]
        else "`text` holds the descriptions"
    )
    drops = "\n".join(
        f"- {level}: " + (", ".join(f"{reason} {n}" for reason, n in reasons.items()) or "none")
        for level, reasons in info["drops"].items()
    )
    return {
        "Summary": (
            f"Ego-ExoClip is the pre-training data of Exo2Ego (stages 1-2): one row per Ego-Exo4D atomic "
            f"description of a train take, cut into a clip by the paper's eq. 1 and paired with the "
            f"synchronized ego (Aria) and exo (GoPro) videos of the take. This build: "
            f"{counts['takes_kept']} takes, {counts['videos_kept']} videos, {counts['narrations_kept']} "
            f"narrations, {counts['ego_exo_pairs']} ego-exo clip pairs. {text_note}."
        ),
        "Configs": (
            "- `clips` (default): `clip_id, take_uid, take_name, annotation_uid, desc_index, timestamp_sec, "
            "start_sec, end_sec, beta_sec, alpha_sec, widened, subject, ego_visible, unsure, best_exo_cam, "
            "ego_cam, exo_cams, ego_video, exo_videos, parent_task_name, task_name, split, duration_sec, "
            "text, text_sha1`\n- `takes`: one row per kept take (cameras, video paths, counts, beta).\n\n"
            "Video paths are relative to the root of your `egoexo` download "
            f"(variant `{info['options']['variant']}`)."
        ),
        "Clip rule (eq. 1)": (
            f"Per narration sequence (mode `{alpha['sequence_mode']}`) sorted by time: "
            "`start_i = max(t_i - beta/(2 alpha), t_(i-1))`, `end_i = min(t_i + beta/(2 alpha), "
            "t_(i+1))`, beta = mean gap of the sequence, t_(-1) = 0 and t_n = take duration. "
            f"alpha used: {alpha['used']:.3f} s (paper: {alpha['paper']} s); recomputed from this "
            f"data: {recomputed}."
        ),
        "Loading": (
            "```python\nfrom datasets import load_dataset\n"
            'clips = load_dataset("org/ego-exoclip", "clips", split="train")\n'
            'takes = load_dataset("org/ego-exoclip", "takes", split="train")\n```'
        ),
        "Getting the videos and the text": (
            "Ego-Exo4D needs a signed licence (https://ego4d-data.org/). Then:\n\n```bash\n"
            'pip install "ego4d>=1.7.3" awscli && aws configure\n'
            "egoexo -o $EGOEXO_ROOT --release v2 --parts metadata annotations -y\n"
            f"egoexo -o $EGOEXO_ROOT --release v2 --parts downscaled_takes/448 --splits train \\\n"
            f"       --uids $(cat {UID_LIST}) -y\n"
            "exo2ego data ego-exoclip --egoexo-root $EGOEXO_ROOT --restore-text org/ego-exoclip \\\n"
            "       --variant 448 --out ego_exoclip_local   # fills `text`, checks every text_sha1 and video\n```"
        ),
        "Licence": (
            "The videos and the atomic descriptions belong to Ego-Exo4D and are covered by its licence "
            "agreement, which restricts redistribution: this repository holds no video, frame or feature, "
            "and the description text only when its redistribution has been cleared. Clip boundaries, "
            "ids, camera lists and statistics are derived by the Exo2Ego builder. "
            f"Licence terms: {LICENSE_LINK}"
        ),
        "Statistics": (
            f"| quantity | value |\n|---|---|\n"
            f"| clip duration mean / std | {stats['clip_duration_sec']['mean']:.2f} s / "
            f"{stats['clip_duration_sec']['std']:.2f} s |\n"
            f"| clips shorter than 1 s | {stats['clip_duration_sec']['percent_under_1s']:.1f}% |\n"
            f"| narration words mean / std | {stats['narration_words']['mean']:.2f} / "
            f"{stats['narration_words']['std']:.2f} |\n"
            f"| scenarios / tasks | {len(stats['scenarios']['takes'])} / {len(stats['tasks']['takes'])} |\n\n"
            + "\n".join(f"![{name}]({path})" for name, path in plots.items())
        ),
        "Dropped while building": drops + "\n\nAll counts are in `build_info.json`.",
    }


def _write_folder(staging: Path, clips, takes, info: dict[str, Any], narration_words) -> None:
    """Parquet tables (``clips``/``takes``: datasets.Dataset or lists), uid list, plots, card, build_info."""
    data_files = hub_export.write_parquet_configs(
        staging,
        {"clips": {"train": clips}, "takes": {"train": takes}},
        FEATURES,
        max_rows_per_shard=MAX_ROWS_PER_SHARD,
    )
    take_uids = sorted(takes["take_uid"] if hasattr(takes, "column_names") else [t["take_uid"] for t in takes])
    (staging / UID_LIST).write_text("".join(f"{uid}\n" for uid in take_uids), encoding="utf-8")
    clip_rows = (
        clips.select_columns(["start_sec", "end_sec", "parent_task_name", "task_name"]).to_list()
        if hasattr(clips, "column_names")
        else clips
    )
    take_rows = takes.to_list() if hasattr(takes, "column_names") else takes
    info["statistics"] = compute_statistics(clip_rows, take_rows, narration_words)
    plots = plot_statistics(staging, clip_rows, info["statistics"], narration_words)
    info["plots"] = plots
    info["files"] = {"take_uids": UID_LIST, "data": data_files}
    card = hub_export.make_dataset_card(
        data_files,
        pretty_name="Ego-ExoClip",
        license="other",
        default_config="clips",
        sections=_card_sections(info, plots),
        license_name="ego-exo4d-license",
        license_link=LICENSE_LINK,
        task_categories=["video-text-to-text"],
        tags=["egocentric", "exocentric", "ego-exo4d", "video"],
        size_categories=_size_category(len(clip_rows)),
    )
    card.save(str(staging / hub_export.CARD_NAME))
    hub_export.write_build_info(staging, info)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def build_ego_exoclip(
    options: EgoExoClipOptions, out: str | Path, overwrite: bool = False, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build both configs with :class:`EgoExoClip` and write the Hub-ready folder ``out`` atomically.

    Returns the build_info dict. Raises ``SourceFileError``/``RowError``/``ValueError`` on bad input
    (unless ``options.skip_bad`` turns them into counted skips).
    """
    root = Path(options.egoexo_root)
    plan = plan_ego_exoclip(options)
    with hub_export.staged_folder(out, overwrite=overwrite, inputs=[root]) as staging:
        cache = staging / ".builder_cache"
        tables = {}
        for name in ("clips", "takes"):
            builder = EgoExoClip(
                config_name=name,
                cache_dir=str(cache),
                plan=plan,
                num_proc=options.num_proc,
                egoexo_root=str(root),
                alpha=options.alpha,
                sequence=options.sequence,
                variant=options.variant,
                annotations_only=options.annotations_only,
                check_videos=options.check_videos,
                skip_bad=options.skip_bad,
                min_clip_sec=options.min_clip_sec,
            )
            builder.download_and_prepare(num_proc=options.num_proc if options.num_proc > 1 else None)
            tables[name] = builder.as_dataset("train")
        info = {
            "builder": "datasets_scripts.ego_exoclip",
            "builder_version": BUILDER_VERSION,
            "source": source_fingerprint(root),
            "options": options_dict(options),
            "args": args or {},
            "annotations_only": options.annotations_only,
            "text_included": not options.annotations_only,
            "alpha": plan.alpha,
            "counts": plan.counts,
            "drops": plan.drops.as_dict(),
            "skips": {
                f"{level}/{reason}": n
                for level, reasons in plan.drops.as_dict().items()
                for reason, n in reasons.items()
            },
            "bad_rows": plan.bad_rows,
        }
        _write_folder(staging, tables["clips"], tables["takes"], info, plan.narration_words)
        del tables
        shutil.rmtree(cache, ignore_errors=True)
    return info


# --------------------------------------------------------------------------------------------- restore
def to_variant(path: str, variant: str) -> str:
    """A video path in either variant, mapped to ``variant`` ("full" or "448")."""
    full = path.replace("/frame_aligned_videos/downscaled/448/", "/frame_aligned_videos/")
    return source.variant_path(full, variant)


def restore_text(
    published: str,
    options: EgoExoClipOptions,
    out: str | Path,
    overwrite: bool = False,
    args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fill ``text`` of an annotations-only export (a local folder or a Hub repo id) from the user's
    ``atomic_descriptions_train.json``, checking every ``text_sha1``; write a local folder ``out``.

    Clip boundaries are kept exactly as published. A description that is missing or whose hash differs
    (another release) raises :class:`RowError` naming the clip, or with ``options.skip_bad`` is
    dropped and counted (``text_not_found`` / ``text_hash_mismatch``). Videos are mapped to
    ``options.variant`` and checked unless ``options.check_videos`` is off.
    """
    root = Path(options.egoexo_root)
    if not root.is_dir():
        raise SourceFileError(f"Ego-Exo4D root not found: {root}")
    if Path(published).is_dir():  # a local export: read its current files (see hub_export.load_folder)
        clips = hub_export.load_folder(published, "clips", split="train")
        takes = hub_export.load_folder(published, "takes", split="train")
    else:
        clips = datasets.load_dataset(published, "clips", split="train")
        takes = datasets.load_dataset(published, "takes", split="train")
    bad_rows = BadRows(skip=options.skip_bad)
    annotations, skipped = source.load_annotations(root, "train", bad_rows)
    texts = {
        (d.take_uid, d.annotation_uid, d.desc_index): d.text
        for entries in annotations.values()
        for a in entries
        for d in a.descriptions
    }
    annotations_file = root / "annotations" / "atomic_descriptions_train.json"

    drops: Counter = Counter()  # narrations
    take_drops: Counter = Counter()
    keep, filled, words = [], [], []
    for position, row in enumerate(clips):
        key = (row["take_uid"], row["annotation_uid"], row["desc_index"])
        text = texts.get(key)
        problem = None
        if text is None:
            problem = ("text_not_found", "no description at this take_uid / annotation_uid / desc_index")
        elif text_sha1(text) != row["text_sha1"]:
            problem = (
                "text_hash_mismatch",
                f"SHA-1 {text_sha1(text)} differs from the published {row['text_sha1']} "
                "(a different Ego-Exo4D release?)",
            )
        if problem:
            if not options.skip_bad:
                raise RowError(
                    annotations_file, f"clip {row['clip_id']} ({key[0]} / {key[1]} / {key[2]})", "text", problem[1]
                )
            drops[problem[0]] += 1
            continue
        keep.append(position)
        filled.append(text)
        words.append(len(text.split()))
    clips = clips.select(keep)
    clips = clips.map(
        lambda row, index: {
            "text": filled[index],
            "ego_video": to_variant(row["ego_video"], options.variant),
            "exo_videos": [to_variant(path, options.variant) for path in row["exo_videos"]],
        },
        with_indices=True,
        desc="filling text",
    )
    takes = takes.map(
        lambda row: {
            "ego_video": to_variant(row["ego_video"], options.variant),
            "exo_videos": [to_variant(path, options.variant) for path in row["exo_videos"]],
        }
    )

    if options.check_videos:
        probes = check_videos(
            [[str(root / p) for p in (t["ego_video"], *t["exo_videos"])] for t in takes], options.num_proc
        )
        bad_takes, video_ends = set(), {}
        for take, probe in zip(takes, probes):
            if probe.problem is None:
                video_ends[take["take_uid"]] = probe.end_sec
                continue
            if not options.skip_bad:
                raise SourceFileError(
                    bad_video_message(take["take_name"], take["take_uid"], *probe.problem, options.variant)
                )
            take_drops[probe.problem[0]] += 1
            bad_takes.add(take["take_uid"])
        keep_clips, cut_short = [], set()
        for i, (uid, end_sec) in enumerate(zip(clips["take_uid"], clips["end_sec"])):
            video_end = video_ends.get(uid)
            if uid in bad_takes:
                drops["video_of_take_unusable"] += 1
            elif video_end is not None and end_sec > video_end:
                drops["window_outside_video"] += 1
                cut_short.add(uid)
            else:
                keep_clips.append(i)
        if len(keep_clips) < len(clips):
            words = [words[i] for i in keep_clips]
            clips = clips.select(keep_clips)
            emptied = cut_short - set(clips["take_uid"])
            take_drops["no_clip_inside_video"] += len(emptied)
            takes = takes.filter(lambda row: row["take_uid"] not in bad_takes | emptied)

    published_info = {}
    info_path = Path(published) / hub_export.BUILD_INFO_NAME
    if info_path.is_file():
        published_info = json.loads(info_path.read_text(encoding="utf-8"))
    info = {
        "builder": "datasets_scripts.ego_exoclip (restore)",
        "builder_version": BUILDER_VERSION,
        "restored_from": published,
        "source": source_fingerprint(root),
        "options": options_dict(options),
        "args": args or {},
        "annotations_only": False,
        "text_included": True,
        "alpha": published_info.get("alpha", {"used": clips[0]["alpha_sec"] if len(clips) else None}),
        "counts": {
            "published_clips": len(keep) + drops["text_not_found"] + drops["text_hash_mismatch"],
            "narrations_kept": len(clips),
            "takes_kept": len(takes),
            "videos_kept": sum(1 + len(t["exo_cams"]) for t in takes),
            "ego_exo_pairs": sum(len(cams) for cams in clips["exo_cams"]),
            "texts_verified": len(clips),
        },
        "drops": {
            "takes": {k: n for k, n in sorted(take_drops.items()) if n},
            "annotations": {"malformed": skipped["annotations"]} if skipped["annotations"] else {},
            "narrations": {k: n for k, n in sorted(drops.items()) if n},
        },
        "bad_rows": bad_rows.summary(),
    }
    info["skips"] = {
        f"{level}/{reason}": n for level, reasons in info["drops"].items() for reason, n in reasons.items()
    }
    with hub_export.staged_folder(out, overwrite=overwrite, inputs=[root, published]) as staging:
        _write_folder(staging, clips, takes, info, words)
    return info
