"""The synthetic world's web-exo corpus: separate third-person scenes whose captions name the objects' patterns.

The paper initialises the exo tower on web video-text pairs (VideoLLaMA2's pretraining data), which name far more
than Ego-Exo4D's narrations do. This corpus plays that part: short clips of one action on a table, each seen by a
static camera at a random angle and distance (object 7-14 px in the tiny model's 32-px frame), captioned in the
third person with the handled object's full name, pattern included ("A person picks up a striped red box."). The
pattern is the world's exo-only knowledge: no ego-side text (Ego-ExoClip narrations, the EgoClip-style captions,
EgoIT) names it, so whatever the ego side learns of it comes through the exo tower.

Written as VideoLLaMA2 ships its pretraining data, so ``exo2ego data pretrain --root videollama2=ROOT/web_exo``
builds the init stage's exo captions from it::

    ROOT/web_exo/web_exo.json            [{"id": "web_00000", "video": "videos/web_00000.mp4",
                                           "conversations": [{"from": "human", "value": "<video>\\nDescribe ..."},
                                                             {"from": "gpt", "value": "A person ..."}]}, ...]
    ROOT/web_exo/videos/web_NNNNN.mp4    square clips, ``downscaled_height`` pixels, one camera each, no ego shift
"""

from __future__ import annotations

import copy
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .render import Camera, VideoWriter, downscale, render_frame, scaled
from .script import PATTERNS, TakeScript, make_script

FOLDER = "web_exo"
ANNOTATIONS = "web_exo.json"
PROMPT = "Describe the video."
FRAMES_PER_CLIP = 6
RENDER_HEIGHT = 128  # rendered like the world's views, then box-downscaled to the stored height
CAPTIONS = (
    "A person {verb_s} a {full_name}.",
    "Someone {verb_s} the {full_name} on a table.",
    "On the table, a hand {verb_s} a {full_name}.",
)
VERBS_S = {  # third person, as web captions phrase it
    "pick_up": "picks up",
    "put_down": "puts down",
    "move_left": "slides",
    "move_right": "slides",
    "pour": "pours from",
    "shake": "shakes",
}


@dataclass(frozen=True)
class WebScene:
    """One web-exo clip: ``action`` of a short take, seen by one static camera over the action's window."""

    index: int
    script: TakeScript
    action: int
    camera: Camera
    caption: str

    @property
    def name(self) -> str:
        return f"web_{self.index:05d}"

    @property
    def video(self) -> str:
        """Path relative to the corpus folder."""
        return f"videos/{self.name}.mp4"


def plan_scenes(num_scenes: int, seed: int, objects_per_scene: int = 2) -> list[WebScene]:
    """``num_scenes`` seeded scenes: objects, the action, the camera and the caption of each."""
    scenes = []
    for index in range(num_scenes):
        rng = random.Random(f"{seed}/web_exo/{index}")
        script = make_script(rng, num_actions=2, num_objects=objects_per_scene)
        action = rng.choice(script.actions)  # the second action may also be a put-down, pour or shake
        handled = script.objects[action.obj]
        state = script.scene_at(action.start).objects[action.obj]
        x, y = state.x, state.y
        camera = Camera(
            "web",
            RENDER_HEIGHT,
            RENDER_HEIGHT,
            azimuth_deg=rng.uniform(-180.0, 180.0),
            elevation_deg=rng.uniform(25.0, 80.0),
            zoom=rng.uniform(1.0, 2.0),
            look_at=(x + rng.uniform(-0.08, 0.08), y + rng.uniform(-0.05, 0.12)),
        )
        template = rng.choice(CAPTIONS)
        caption = template.format(verb_s=VERBS_S[action.verb], full_name=handled.full_name)
        scenes.append(WebScene(index, script, script.actions.index(action), camera, caption))
    return scenes


def render_scene(folder: str, scene: WebScene, height: int) -> None:
    """Write one clip: ``FRAMES_PER_CLIP`` frames evenly over the action, at ``height`` pixels."""
    action = scene.script.actions[scene.action]
    span = action.end - action.start
    fps = FRAMES_PER_CLIP / span
    small = scaled(scene.camera, height)
    writer = VideoWriter(Path(folder) / scene.video, small.width, small.height, fps)
    try:
        for index in range(FRAMES_PER_CLIP):
            t = action.start + (index + 0.5) * span / FRAMES_PER_CLIP
            frame = render_frame(scene.script, scene.script.scene_at(t), scene.camera, t)
            writer.write(downscale(frame, height))
    except BaseException:
        writer.abort()
        raise
    writer.close()


def render_chunk(folder: str, scenes: list[WebScene], height: int) -> int:
    """Render several scenes (one worker task); returns how many."""
    for scene in scenes:
        render_scene(folder, scene, height)
    return len(scenes)


def annotations(scenes: list[WebScene]) -> list[dict]:
    """VideoLLaMA2 pretraining records of ``scenes``."""
    return [
        {
            "id": scene.name,
            "video": scene.video,
            "conversations": [
                {"from": "human", "value": f"<video>\n{PROMPT}"},
                {"from": "gpt", "value": scene.caption},
            ],
        }
        for scene in scenes
    ]


_PATTERN_WORD = re.compile(rf"\b(?:{'|'.join(PATTERNS)}) ")


def without_pattern_words(records: list[dict]) -> list[dict]:
    """A copy of VideoLLaMA2 records (:func:`annotations`) whose answers name no pattern ("A person picks up a red
    box."): the exo corpus of the control in which no text names the exo-only knowledge (`exo2ego ablate`)."""
    stripped = copy.deepcopy(records)
    for record in stripped:
        for turn in record["conversations"]:
            if turn["from"] == "gpt":
                turn["value"] = _PATTERN_WORD.sub("", turn["value"])
    return stripped


def chunks(scenes: list[WebScene], size: int) -> list[list[WebScene]]:
    return [scenes[start : start + size] for start in range(0, len(scenes), size)]


def chunk_size(num_scenes: int, num_proc: int) -> int:
    """Scenes per worker task: a few tasks per process, so the progress bar moves and the load stays even."""
    return max(1, math.ceil(num_scenes / max(1, 4 * num_proc)))
