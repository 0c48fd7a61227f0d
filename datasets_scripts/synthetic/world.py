"""Generate the synthetic Ego-Exo world in the real Ego-Exo4D download layout.

::

    ROOT/
      takes.json                                   real field names, frame_aligned_videos, capture.cameras
      annotations/splits.json                      take_uid_to_split, split_to_take_uids
      annotations/atomic_descriptions_{train,val}.json
      takes/<take_name>/frame_aligned_videos/{aria01_214-1,cam01..cam04}.mp4        (gp01.. / aria02 in some takes)
      takes/<take_name>/frame_aligned_videos/downscaled/448/<same basenames>.mp4    (short side = downscaled_height)
      synthetic_world.json                         ground truth: objects, actions, splits, planted quirks
      egoit/  egobench/                            Hub-ready EgoIT and EgoBench folders (configs "synthetic",
                                                   EgoBench also "synthetic_pattern")
      egoclip/                                     EgoClip-style ego captions of the train takes (config "captions")
      web_exo/                                     web-exo corpus in VideoLLaMA2's pretraining format (web_exo.py)
      build_info.json                              seed, config, versions, counts (written last)

Planted quirks of real downloads (listed in ``synthetic_world.json`` and ``build_info.json``): string
booleans ("0"/"1", "True"/"False"), an annotated take missing from takes.json, a rejected annotation,
a test-split take inside the train annotation file (with split spelled "Test"), a take whose ego
stream is missing, ``gpNN`` exo ids with an ``aria02`` ego, three descriptions at one timestamp and an
exact (text, timestamp) duplicate across annotators, descriptions out of time order, a null best_exo.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .. import hub_export
from . import narration, web_exo
from .qa import write_qa_folders
from .render import EGO_CAMERA, EGO_SHIFT, EXO_CAMERAS, VideoWriter, downscale, parse_shift, render_views, scaled
from .script import SCENARIOS, TakeScript, make_script

ARIA_RGB_STREAM = "214-1"
DOWNSCALED_DIR = "downscaled/448"
STYLES = {  # university -> (ego camera id, exo camera ids, is_ego written as strings)
    "synthlab": ("aria01", ("cam01", "cam02", "cam03", "cam04"), False),
    "gopro_u": ("aria02", ("gp01", "gp02", "gp03", "gp04"), True),
}
PARENT_TASK_IDS = {name: index + 1 for index, name in enumerate(sorted(SCENARIOS))}


@dataclass
class WorldConfig:
    """How much world to generate and how it looks. Sizes are tiny on purpose (CPU tests, tiny models)."""

    num_takes: int = 24
    seed: int = 0
    fps: float = 8.0
    actions_per_take: int = 5
    objects_per_take: int = 4
    height: int = 128  # full-resolution frames: ego 128x128, exo 224x128
    downscaled_height: int = 64  # the downscaled/448 variant
    # Write only the downscaled/448 videos, as Ego-Exo4D's downloader does with `--parts downscaled_takes/448`;
    # they are the same bytes either way (rendered at `height`, then downscaled).
    downscaled_only: bool = False
    heldout_fraction: float = 0.3  # val + test takes (EgoBench); the rest is train
    num_proc: int = 1
    write_qa: bool = True  # also write ROOT/egoit, ROOT/egobench and ROOT/egoclip
    # What the ego camera's recording does to the picture (render.apply_shift): the ego-exo domain gap.
    ego_shift: str = EGO_SHIFT
    # Scenes of the web-exo corpus (web_exo.py) per rendered take: 10 gives 2000 captioned clips for 200 takes, where
    # Ego-ExoClip has about 1400 narrated clips of 700 actions.
    web_exo_per_take: int = 10

    def __post_init__(self):
        checks = {
            "num_takes": self.num_takes >= 3,
            "fps": self.fps > 0,
            "actions_per_take": self.actions_per_take >= 1,
            "objects_per_take": self.objects_per_take >= 1,
            "height": self.height >= 16,
            "downscaled_height": 16 <= self.downscaled_height <= self.height,
            "heldout_fraction": 0 < self.heldout_fraction <= 1,
            "num_proc": self.num_proc >= 1,
            "web_exo_per_take": self.web_exo_per_take >= 0,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in wrong)
            raise ValueError(
                f"invalid world settings: {values} (takes >= 3, fps > 0, actions and objects >= 1, "
                "16 <= downscaled height <= height, 0 < heldout fraction <= 1, processes >= 1, web-exo scenes >= 0)"
            )
        parse_shift(self.ego_shift)


@dataclass
class TakePlan:
    """Everything about one take, decided before anything is rendered (picklable for worker processes)."""

    index: int
    take_uid: str
    take_name: str
    split: str
    university: str
    script: TakeScript
    sway_phase: float
    quirks: list[str] = field(default_factory=list)
    render: bool = True

    @property
    def ego_cam(self) -> str:
        return STYLES[self.university][0]

    @property
    def exo_cams(self) -> tuple[str, ...]:
        return STYLES[self.university][1]

    def video_basenames(self) -> dict[str, str]:
        """cam_id -> file name in frame_aligned_videos/ (ego first)."""
        names = {self.ego_cam: f"{self.ego_cam}_{ARIA_RGB_STREAM}.mp4"}
        names.update({cam: f"{cam}.mp4" for cam in self.exo_cams})
        return names

    def video_path(self, cam_id: str, variant: str = "full") -> str:
        """Path of a view relative to the world root (``variant``: "full" or "448")."""
        folder = "frame_aligned_videos" + ("" if variant == "full" else f"/{DOWNSCALED_DIR}")
        return f"takes/{self.take_name}/{folder}/{self.video_basenames()[cam_id]}"


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def plan_world(config: WorldConfig) -> tuple[list[TakePlan], dict[str, Any]]:
    """Decide every take (script, split, camera naming, quirks) from the seed; returns (plans, extras).

    Roles: takes 0 and 1 are train takes carrying most quirks; the last ``heldout_fraction`` of the takes
    alternate test/val from the end. ``extras`` holds the unrendered quirk entries (an annotated uid
    missing from takes.json, a train take without its ego stream).
    """
    rng = random.Random(f"exo2ego-synthetic/{config.seed}")
    num_heldout = min(config.num_takes - 2, max(1, round(config.num_takes * config.heldout_fraction)))
    plans = []
    for index in range(config.num_takes):
        from_end = config.num_takes - 1 - index
        split = "train" if from_end >= num_heldout else ("test" if from_end % 2 == 0 else "val")
        university = "gopro_u" if index % 2 else "synthlab"
        script = make_script(
            random.Random(f"{config.seed}/take/{index}"), config.actions_per_take, config.objects_per_take
        )
        name = f"{university}_{script.parent_task_name.lower()}_{index:03d}_1"
        plans.append(TakePlan(index, _uid(rng), name, split, university, script, rng.uniform(0, 2 * math.pi)))
    plans[0].quirks += ["duplicate_timestamps", "exact_duplicate_description"]
    plans[1].quirks += [
        "gp_camera_ids",
        "aria02_ego",
        "string_booleans",
        "rejected_annotation",
        "unsorted_descriptions",
        "best_exo_null",
    ]
    first_test = next(plan for plan in plans if plan.split == "test")
    first_test.quirks += ["test_take_in_train_annotations"]
    no_ego_script = make_script(
        random.Random(f"{config.seed}/take/no_ego"), config.actions_per_take, config.objects_per_take
    )
    no_ego = TakePlan(
        config.num_takes,
        _uid(rng),
        f"synthlab_{no_ego_script.parent_task_name.lower()}_noego_1",
        "train",
        "synthlab",
        no_ego_script,
        0.0,
        ["no_ego_stream"],
        render=False,
    )
    missing_script = make_script(
        random.Random(f"{config.seed}/take/missing"), config.actions_per_take, config.objects_per_take
    )
    missing = TakePlan(
        config.num_takes + 1,
        _uid(rng),
        "redacted",
        "train",
        "synthlab",
        missing_script,
        0.0,
        ["missing_from_takes_json"],
        render=False,
    )
    return plans, {"no_ego": no_ego, "missing": missing}


# --------------------------------------------------------------------------------------------- videos
def render_take(root: str, plan: TakePlan, config: WorldConfig) -> int:
    """Write the 5 full-resolution (unless `config.downscaled_only`) and 5 downscaled views of one take; returns
    the frame count."""
    take_dir = Path(root) / "takes" / plan.take_name / "frame_aligned_videos"
    ego_camera = replace(EGO_CAMERA, shift=config.ego_shift)
    cameras = [scaled(ego_camera, config.height)] + [scaled(camera, config.height) for camera in EXO_CAMERAS]
    cam_ids = [plan.ego_cam, *plan.exo_cams]
    basenames = plan.video_basenames()
    writers = []
    for camera, cam_id in zip(cameras, cam_ids):
        small = scaled(camera, config.downscaled_height)
        full = None
        if not config.downscaled_only:
            full = VideoWriter(take_dir / basenames[cam_id], camera.width, camera.height, config.fps)
        path = take_dir / DOWNSCALED_DIR / basenames[cam_id]
        writers.append((full, VideoWriter(path, small.width, small.height, config.fps)))
    count = 0
    try:
        for frames in render_views(plan.script, cameras, config.fps, plan.sway_phase):
            for frame, (full, small) in zip(frames, writers):
                if full is not None:
                    full.write(frame)
                small.write(downscale(frame, config.downscaled_height))
            count += 1
    except BaseException:
        for pair in writers:
            for writer in filter(None, pair):
                writer.abort()
        raise
    for pair in writers:
        for writer in filter(None, pair):
            writer.close()
    return count


# --------------------------------------------------------------------------------------------- metadata
def _flag(value: bool, as_string: bool):
    return ("1" if value else "0") if as_string else value


def _take_entry(plan: TakePlan, config: WorldConfig) -> dict[str, Any]:
    script = plan.script
    strings = "string_booleans" in plan.quirks or STYLES[plan.university][2]
    parent_id = PARENT_TASK_IDS[script.parent_task_name]
    task_id = parent_id * 1000 + SCENARIOS[script.parent_task_name].index(script.task_name) + 1
    videos: dict[str, Any] = {}
    if "no_ego_stream" not in plan.quirks:
        videos[plan.ego_cam] = {
            "rgb": {
                "cam_id": plan.ego_cam,
                "stream_id": ARIA_RGB_STREAM,
                "readable_stream_id": "rgb",
                "clip_uid": None,
                "relative_path": f"frame_aligned_videos/{plan.ego_cam}_{ARIA_RGB_STREAM}.mp4",
            }
        }
    for cam in plan.exo_cams:
        videos[cam] = {
            "0": {
                "cam_id": cam,
                "stream_id": "0",
                "readable_stream_id": "0",
                "clip_uid": None,
                "relative_path": f"frame_aligned_videos/{cam}.mp4",
            }
        }
    videos["collage"] = {
        "0": {
            "cam_id": "collage",
            "stream_id": "0",
            "readable_stream_id": "0",
            "clip_uid": None,
            "relative_path": f"frame_aligned_videos/{DOWNSCALED_DIR}/ego_preview.mp4",
        }
    }
    videos["best_exo"] = {
        "0": {
            "cam_id": "best_exo",
            "stream_id": "0",
            "readable_stream_id": "0",
            "clip_uid": None,
            "relative_path": None,
        }
    }
    ego_flag = "True" if strings else True
    exo_flag = "False" if strings else False
    cameras = [{"cam_id": plan.ego_cam, "is_ego": ego_flag, "device_type": "aria"}]
    cameras += [{"cam_id": cam, "is_ego": exo_flag, "device_type": "gopro"} for cam in plan.exo_cams]
    num_frames = int(math.floor(script.duration * config.fps)) + 1
    return {
        "take_uid": plan.take_uid,
        "take_name": plan.take_name,
        "root_dir": f"takes/{plan.take_name}",
        "duration_sec": round(num_frames / config.fps, 6),
        "task_start_sec": 0.0,
        "task_end_sec": round(script.duration, 3),
        "task_name": script.task_name,
        "task_id": task_id,
        "parent_task_name": script.parent_task_name,
        "parent_task_id": parent_id,
        "scenario_name": script.parent_task_name,
        "best_exo": None if "best_exo_null" in plan.quirks else plan.exo_cams[3],
        "is_narrated": _flag(True, strings),
        "is_dropped": _flag(False, strings),
        "validated": _flag(True, strings),
        "university_name": plan.university,
        "participant_uid": 1000 + plan.index,
        "physical_setting_uid": f"{plan.university}_table",
        "timesync_start_idx": 0,
        "timesync_end_idx": num_frames,
        "capture": {
            "capture_uid": _uid(random.Random(plan.take_uid)),
            "capture_name": f"{plan.take_name.rsplit('_', 1)[0]}",
            "cameras": cameras,
        },
        "frame_aligned_videos": videos,
    }


def _annotations(plan: TakePlan, seed: int) -> list[dict[str, Any]]:
    """The two annotators' atomic descriptions of one take, with the take's planted quirks."""
    rng = random.Random(f"{seed}/narration/{plan.take_uid}")
    strings = "string_booleans" in plan.quirks
    best_exo = plan.exo_cams[3]
    annotations = []
    for annotator in (0, 1):
        narrations = [(t, text) for t, text, _ in narration.narrate(plan.script, annotator, rng)]
        if annotator == 0 and "duplicate_timestamps" in plan.quirks:
            first = plan.script.actions[0]
            narrations[1:1] = [(narrations[0][0], text) for text in narration.grasp_details(plan.script, first)]
        if annotator == 1 and "exact_duplicate_description" in plan.quirks:
            first = annotations[0]["descriptions"][0]
            narrations.append((first["timestamp"], first["text"]))
            narrations.sort()
        if annotator == 0 and "unsorted_descriptions" in plan.quirks:
            narrations[0], narrations[1] = narrations[1], narrations[0]
        descriptions = [
            {
                "text": text,
                "timestamp": timestamp,
                "narration_subject": "C",
                "ego_visible": _flag(True, strings),
                "best_exo": {"raw_cam_id": best_exo[-1], "cam_id": best_exo},
                "unsure": _flag(False, strings),
            }
            for timestamp, text in narrations
        ]
        rejected = annotator == 1 and "rejected_annotation" in plan.quirks
        annotations.append(
            {
                "annotation_uid": _uid(rng),
                "annotator_id": str(10**15 + rng.randrange(10**15)),
                "rejected": _flag(rejected, strings),
                "reject_reason": "narrations do not match the video" if rejected else None,
                "descriptions": descriptions,
            }
        )
    return annotations


def write_metadata(root: Path, plans: list[TakePlan], extras: dict[str, TakePlan], config: WorldConfig) -> None:
    """takes.json, annotations/splits.json and annotations/atomic_descriptions_{train,val}.json."""
    listed = plans + [extras["no_ego"]]
    takes = [_take_entry(plan, config) for plan in listed]
    split_names = {plan.take_uid: plan.split for plan in listed}
    spelled = {
        plan.take_uid: ("Test" if "test_take_in_train_annotations" in plan.quirks else plan.split) for plan in listed
    }
    splits = {
        "take_uid_to_split": spelled,
        "split_to_take_uids": {
            split: [uid for uid, s in split_names.items() if s == split] for split in ("train", "val", "test")
        },
    }
    files: dict[str, dict[str, Any]] = {"train": {}, "val": {}}
    for plan in listed + [extras["missing"]]:
        if plan.split == "train" or "test_take_in_train_annotations" in plan.quirks:
            files["train"][plan.take_uid] = _annotations(plan, config.seed)
        elif plan.split == "val":
            files["val"][plan.take_uid] = _annotations(plan, config.seed)
        # Other test takes: annotations withheld, as in the real release.
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    _write_json(root / "takes.json", takes)
    _write_json(root / "annotations" / "splits.json", splits)
    for split, by_take in files.items():
        _write_json(
            root / "annotations" / f"atomic_descriptions_{split}.json",
            {"ds": f"synthetic-{config.seed}", "take_cam_id_map": {}, "annotations": by_take},
        )


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def ground_truth(plans: list[TakePlan], extras: dict[str, TakePlan], config: WorldConfig) -> dict[str, Any]:
    """What really happens in every take (the answer key for tests and the QA rows)."""

    def take(plan: TakePlan) -> dict[str, Any]:
        script = plan.script
        return {
            "take_uid": plan.take_uid,
            "take_name": plan.take_name,
            "split": plan.split,
            "quirks": plan.quirks,
            "rendered": plan.render,
            "ego_cam": plan.ego_cam,
            "exo_cams": list(plan.exo_cams),
            "videos_448": {cam: plan.video_path(cam, "448") for cam in (plan.ego_cam, *plan.exo_cams)},
            "duration_sec": script.duration,
            "objects": [asdict(obj) | {"name": obj.name} for obj in script.objects],
            "actions": [asdict(action) | {"object": script.objects[action.obj].name} for action in script.actions],
        }

    return {"config": asdict(config), "takes": [take(plan) for plan in plans + list(extras.values())]}


# --------------------------------------------------------------------------------------------- entry point
def _count_rendered(frame_counts: dict[str, int], take_name: str | None, result: int, bar) -> None:
    """Book one finished job: a take (its frame count) or a chunk of web-exo scenes (``result`` clips)."""
    if take_name is None:
        bar.update(result)
    else:
        frame_counts[take_name] = result
        bar.update()


def generate_world(out: str | Path, config: WorldConfig | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the whole synthetic world to ``out`` atomically; returns the contents of its build_info.json."""
    config = config or WorldConfig()
    plans, extras = plan_world(config)
    with hub_export.staged_folder(out, overwrite=overwrite) as staging:
        rendered = [plan for plan in plans if plan.render]
        scenes = web_exo.plan_scenes(config.web_exo_per_take * len(rendered), config.seed, config.objects_per_take)
        web_folder = staging / web_exo.FOLDER
        chunks = web_exo.chunks(scenes, web_exo.chunk_size(len(scenes), config.num_proc))
        jobs = [(plan.take_name, render_take, (str(staging), plan, config)) for plan in rendered]
        jobs += [(None, web_exo.render_chunk, (str(web_folder), chunk, config.downscaled_height)) for chunk in chunks]
        frame_counts = {}
        with tqdm(total=len(rendered) + len(scenes), desc="rendering takes and web-exo clips", unit="clip") as bar:
            if config.num_proc > 1:
                with ProcessPoolExecutor(config.num_proc) as pool:
                    futures = [(name, pool.submit(function, *arguments)) for name, function, arguments in jobs]
                    for name, future in futures:
                        _count_rendered(frame_counts, name, future.result(), bar)
            else:
                for name, function, arguments in jobs:
                    _count_rendered(frame_counts, name, function(*arguments), bar)
        if scenes:
            _write_json(web_folder / web_exo.ANNOTATIONS, web_exo.annotations(scenes))
        write_metadata(staging, plans, extras, config)
        truth = ground_truth(plans, extras, config)
        _write_json(staging / "synthetic_world.json", truth)
        qa_counts = {}
        if config.write_qa:
            qa_counts = write_qa_folders(staging, plans, config)
        info = {
            "builder": "datasets_scripts.synthetic",
            "config": asdict(config),
            "counts": {
                "takes": len(plans),
                "by_split": {split: sum(plan.split == split for plan in plans) for split in ("train", "val", "test")},
                "frames_per_view": frame_counts,
                "videos": (1 if config.downscaled_only else 2) * 5 * len(rendered),
                "web_exo_clips": len(scenes),
                **qa_counts,
            },
            "planted_quirks": {plan.take_uid: plan.quirks for plan in plans + list(extras.values()) if plan.quirks},
        }
        hub_export.write_build_info(staging, info)
    return info
