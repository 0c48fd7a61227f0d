"""Rendering of the synthetic world: one scene, five cameras, H.264 files, a readable frame marker.

Cameras are orthographic projections of the same scene (:func:`script.scene_at`), so every view of
frame ``i`` shows the same instant ``i / fps`` (Ego-Exo4D's "frame aligned" videos). The ego camera
(Aria) looks down from C's head, close, following the active hand with a small head sway, and C's own
arm and chest occlude part of it; the four exo cameras are fixed at different angles, square and close enough
that each object covers about 8 of the tiny model's 32 pixels (2x2 of its 4-px patches).

The ego camera records through a systematic shift (``Camera.shift``, default :data:`EGO_SHIFT`): a negative image
turned by 90 degrees, a stand-in for a wearable camera's other sensor, lens and mounting. It keeps every detail
(inside each patch the tower's first linear layer can undo it; the patches' positions turn too), but a tower that
only ever saw exo frames misreads ego frames: brown stripes turn light blue, an orange dot blue, a pink band green,
horizontal stripes vertical.

Every frame carries its index as a 3x5 grid of black/white blocks in the top-left corner (block side
= frame height // 16), which :func:`read_frame_marker` reads back from decoded frames.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .script import BOWL_POSITION, COLOURS, OBJECT_SIZE, PATTERNS, REST, Scene, TakeScript

MARKER_ROWS, MARKER_COLS = 3, 5
MARKER_BITS = MARKER_ROWS * MARKER_COLS  # frame indices up to 32767 (18 min at 30 fps)

FLOOR = (55, 60, 70)
TABLE = (165, 155, 140)
BOWL = (215, 215, 222)
BOWL_INSIDE = (110, 110, 118)
SKIN = (225, 175, 140)
SHIRT = (70, 72, 88)
# Each pattern's marks have their own colour, outside the objects' palette and unlike anything else in a frame (the
# black and white frame marker, the white bowl, the dark floor and shirt), so that a tiny tower can tell the patterns
# apart within the demo's vision pretraining (the demo's gates measure it).
MARK_COLOURS = {"striped": (110, 55, 15), "checked": (170, 255, 60), "dotted": (255, 135, 0), "banded": (245, 95, 190)}
EGO_SHIFTS = ("negative", "rot90")  # composable with "+"; "" or "none" records the scene as it is
EGO_SHIFT = "negative+rot90"
SHAPE_POLYGONS = {  # unit-size outlines, (x right, y up), centred on the object's middle
    "box": [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)],
    "jar": [(0.5 * math.cos(a), 0.5 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)],
    "cup": [(-0.32, -0.5), (0.32, -0.5), (0.5, 0.5), (-0.5, 0.5)],
    "bottle": [
        (-0.32, -0.55),
        (0.32, -0.55),
        (0.32, 0.1),
        (0.14, 0.25),
        (0.14, 0.6),
        (-0.14, 0.6),
        (-0.14, 0.25),
        (-0.32, 0.1),
    ],
}


@dataclass(frozen=True)
class Camera:
    """An orthographic camera. ``azimuth_deg`` 0 looks from C's side towards the far edge (+y), 90 from
    the left side (+x); ``elevation_deg`` 90 looks straight down; ``zoom`` is pixels per table width
    divided by the frame height; ``follow`` (ego) re-centres the view on the active hand."""

    cam_id: str
    width: int
    height: int
    azimuth_deg: float
    elevation_deg: float
    zoom: float
    look_at: tuple[float, float] = (0.5, 0.45)
    follow: float = 0.0
    sway: float = 0.0
    shift: str = ""  # what the camera's recording does to the picture: names of EGO_SHIFTS joined by "+"


# Close and hand-following, so the handled object covers several patches even in a 32 px tiny-model frame.
EGO_CAMERA = Camera("ego", 128, 128, 0.0, 58.0, 2.4, look_at=(0.5, 0.3), follow=0.9, sway=0.04, shift=EGO_SHIFT)
EXO_CAMERAS = (  # (azimuth, elevation, zoom): front, left side, top-down, oblique; square, the table fills them
    Camera("exo1", 128, 128, 180.0, 30.0, 1.2, look_at=(0.5, 0.28)),
    Camera("exo2", 128, 128, 90.0, 30.0, 1.2, look_at=(0.5, 0.42)),
    Camera("exo3", 128, 128, 10.0, 78.0, 1.15, look_at=(0.5, 0.45)),
    Camera("exo4", 128, 128, -125.0, 45.0, 1.25, look_at=(0.5, 0.42)),
)


def scaled(camera: Camera, height: int) -> Camera:
    """The same camera rendering ``height``-pixel frames (width scaled, kept even for yuv420p)."""
    width = int(round(camera.width * height / camera.height / 2)) * 2
    return replace(camera, width=width, height=height)


def parse_shift(shift: str) -> tuple[str, ...]:
    """ "negative+rot90" -> ("negative", "rot90"); "" and "none" -> (); an unknown name raises ValueError."""
    names = tuple(name for name in shift.split("+") if name and name != "none")
    unknown = [name for name in names if name not in EGO_SHIFTS]
    if unknown:
        raise ValueError(f"unknown camera shift {'+'.join(unknown)!r}; known: {', '.join(EGO_SHIFTS)} (joined by +)")
    return names


def apply_shift(frame: np.ndarray, shift: str) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 as a camera with ``shift`` records it: "negative" inverts every channel, "rot90"
    turns the picture a quarter turn counter-clockwise (square frames keep their size)."""
    for name in parse_shift(shift):
        frame = 255 - frame if name == "negative" else np.rot90(frame)
    return np.array(frame)  # a writable copy: the frame marker is drawn into it


class _Projector:
    """World (x, y, z) -> pixel (u, v) and a depth for painter's ordering (larger = farther)."""

    def __init__(self, camera: Camera, gaze, t: float, sway_phase: float):
        self.camera = camera
        theta, phi = math.radians(camera.azimuth_deg), math.radians(camera.elevation_deg)
        self.forward = (math.sin(theta), math.cos(theta))
        self.right = (math.cos(theta), -math.sin(theta))
        self.sin_phi, self.cos_phi = math.sin(phi), math.cos(phi)
        self.scale = camera.zoom * camera.height
        self.origin = camera.look_at
        self.shift = (0.0, 0.0)
        if camera.follow:
            hand_u, hand_v = self._raw(gaze)
            sway = camera.sway * camera.height
            # The hand sits a little below the centre, so what it holds or lifts stays in the picture.
            self.shift = (
                -camera.follow * hand_u + sway * math.sin(1.9 * t + sway_phase),
                -camera.follow * hand_v + 0.15 * camera.height + 0.7 * sway * math.cos(1.3 * t + 2 * sway_phase),
            )

    def _raw(self, point) -> tuple[float, float]:
        dx, dy = point[0] - self.origin[0], point[1] - self.origin[1]
        across = self.right[0] * dx + self.right[1] * dy
        along = self.forward[0] * dx + self.forward[1] * dy
        return self.scale * across, -self.scale * (along * self.sin_phi + point[2] * self.cos_phi)

    def __call__(self, point) -> tuple[float, float]:
        u, v = self._raw(point)
        return self.camera.width / 2 + u + self.shift[0], self.camera.height / 2 + v + self.shift[1]

    def depth(self, point) -> float:
        dx, dy = point[0] - self.origin[0], point[1] - self.origin[1]
        along = self.forward[0] * dx + self.forward[1] * dy
        return along * self.cos_phi - point[2] * self.sin_phi


def _dark(colour, factor=0.55):
    return tuple(int(c * factor) for c in colour)


def _object_polygon(project: _Projector, centre, shape: str, tilt: float, size: float) -> list[tuple[float, float]]:
    return _transform(SHAPE_POLYGONS[shape], project(centre), size * project.scale, tilt)


def _clip(polygon: list[tuple[float, float]], window: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``polygon`` clipped to the convex, counter-clockwise ``window`` (Sutherland-Hodgman)."""
    for (ax, ay), (bx, by) in zip(window, window[1:] + window[:1]):

        def inside(point, ax=ax, ay=ay, bx=bx, by=by):
            return (bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax) >= 0

        def crossing(p, q, ax=ax, ay=ay, bx=bx, by=by):
            edge = (bx - ax, by - ay)
            denominator = edge[0] * (q[1] - p[1]) - edge[1] * (q[0] - p[0])
            u = (edge[1] * (p[0] - ax) - edge[0] * (p[1] - ay)) / denominator
            return (p[0] + u * (q[0] - p[0]), p[1] + u * (q[1] - p[1]))

        clipped = []
        for current, following in zip(polygon, polygon[1:] + polygon[:1]):
            if inside(current):
                clipped.append(current)
                if not inside(following):
                    clipped.append(crossing(current, following))
            elif inside(following):
                clipped.append(crossing(current, following))
        polygon = clipped
        if not polygon:
            break
    return polygon


def _rectangle(left, bottom, right, top):
    return [(left, bottom), (right, bottom), (right, top), (left, top)]


PATTERN_MARKS = {  # pattern -> mark polygons in unit object coordinates (y up), before clipping to the shape
    "plain": [],
    "striped": [_rectangle(-1, -0.25, 1, 0.0), _rectangle(-1, 0.25, 1, 0.5)],  # two brown stripes
    "checked": [_rectangle(-1, 0.0, 0.0, 1), _rectangle(0.0, -1, 1, 0.0)],  # lime top-left and bottom-right quarters
    "dotted": [[(0.28 * math.cos(a), 0.28 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 12, False)]],  # orange
    "banded": [_rectangle(-1, -0.16, 1, 0.16)],  # one pink band across the middle
}
# The convex part of each silhouette that carries the pattern (the bottle's body, below its neck).
PATTERN_WINDOWS = {
    "box": SHAPE_POLYGONS["box"],
    "jar": SHAPE_POLYGONS["jar"],
    "cup": SHAPE_POLYGONS["cup"],
    "bottle": _rectangle(-0.32, -0.55, 0.32, 0.1),
}
# (shape, pattern) -> clipped mark polygons, computed once.
SHAPE_PATTERN_MARKS = {
    (shape, pattern): [mark for mark in (_clip(polygon, window) for polygon in polygons) if len(mark) > 2]
    for shape, window in PATTERN_WINDOWS.items()
    for pattern, polygons in PATTERN_MARKS.items()
}
if set(PATTERN_MARKS) != set(PATTERNS):
    raise ImportError("render.PATTERN_MARKS and script.PATTERNS name different patterns")


def _transform(polygon, centre_uv, radius: float, tilt: float) -> list[tuple[float, float]]:
    """Unit object coordinates (y up) -> pixels: scale by ``radius``, turn by ``tilt``, move to ``centre_uv``."""
    u0, v0 = centre_uv
    cos_t, sin_t = math.cos(math.radians(-tilt)), math.sin(math.radians(-tilt))
    return [(u0 + radius * (x * cos_t - y * sin_t), v0 - radius * (x * sin_t + y * cos_t)) for x, y in polygon]


def gaze_point(script: TakeScript, t: float) -> tuple[float, float, float]:
    """Where C looks at time ``t``: the hand's mean position over the last 0.6 s, so the head follows
    the hand with a lag and the hand's own motion stays visible in the ego view."""
    points = [script.scene_at(max(0.0, t - lag)).hand for lag in (0.0, 0.2, 0.4, 0.6)]
    return tuple(sum(axis) / len(points) for axis in zip(*points))


def render_frame(
    script: TakeScript,
    scene: Scene,
    camera: Camera,
    t: float,
    sway_phase: float = 0.0,
    gaze: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Draw ``scene`` as seen by ``camera``; returns uint8 (height, width, 3) without the marker.

    ``gaze`` (ego camera only) is the point the view follows; default :func:`gaze_point`."""
    if camera.follow and gaze is None:
        gaze = gaze_point(script, t)
    project = _Projector(camera, gaze, t, sway_phase)
    image = Image.new("RGB", (camera.width, camera.height), FLOOR)
    draw = ImageDraw.Draw(image)
    draw.polygon([project(c) for c in ((0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0))], fill=TABLE)

    items = []  # (depth, draw callback)
    bowl_centre = (BOWL_POSITION[0], BOWL_POSITION[1], 0.06)

    def draw_bowl():
        draw.polygon(_object_polygon(project, bowl_centre, "cup", 0.0, 0.26), fill=BOWL, outline=_dark(BOWL))
        u, v = project((bowl_centre[0], bowl_centre[1], 0.13))
        rx, ry = 0.13 * project.scale, 0.045 * project.scale + 1
        inside = BOWL_INSIDE if scene.bowl_colour is None else COLOURS[scene.bowl_colour]
        grow = 1.0 if scene.bowl_colour is None else 0.5 + 0.5 * scene.bowl_level
        draw.ellipse([u - rx * grow, v - ry * grow, u + rx * grow, v + ry * grow], fill=inside)

    items.append((project.depth(bowl_centre), draw_bowl))
    for spec, state in zip(script.objects, scene.objects):
        centre = (state.x, state.y, state.z + OBJECT_SIZE / 2)
        colour = COLOURS[spec.colour]

        def draw_object(centre=centre, shape=spec.shape, tilt=state.tilt, colour=colour, pattern=spec.pattern):
            draw.polygon(
                _object_polygon(project, centre, shape, tilt, OBJECT_SIZE), fill=colour, outline=_dark(colour)
            )
            for mark in SHAPE_PATTERN_MARKS[shape, pattern]:
                draw.polygon(
                    _transform(mark, project(centre), OBJECT_SIZE * project.scale, tilt), fill=MARK_COLOURS[pattern]
                )

        items.append((project.depth(centre), draw_object))
    if scene.stream is not None:
        start, end = scene.stream

        def draw_stream(start=start, end=end):
            draw.line(
                [project(start), project(end)],
                fill=COLOURS[scene.bowl_colour],
                width=max(2, int(0.04 * project.scale)),
            )

        items.append((project.depth(start) + 0.05, draw_stream))

    idle_side = "left" if scene.hand_side == "right" else "right"
    hands = ((scene.hand_side, scene.hand), (idle_side, REST[idle_side]))
    arm_width = max(3, int(0.08 * project.scale))
    if camera.follow:  # ego: arms come up from the bottom edge of the picture

        def draw_ego_body():
            for side, hand in hands:
                hu, hv = project(hand)
                root = (camera.width * (0.15 if side == "left" else 0.85), camera.height * 1.1)
                draw.line([root, (hu, hv)], fill=SHIRT, width=arm_width)
                draw.ellipse(_disc(hu, hv, 0.045 * project.scale), fill=SKIN)
            draw.rectangle([0, camera.height * 0.9, camera.width, camera.height], fill=SHIRT)  # chest

        items.append((-1e9, draw_ego_body))
    else:
        body, head = (0.5, -0.3, 0.3), (0.5, -0.3, 0.72)

        def draw_person():
            for side, hand in hands:
                shoulder = (0.5 + (-0.14 if side == "left" else 0.14), -0.28, 0.55)
                draw.line([project(shoulder), project(hand)], fill=SHIRT, width=arm_width)
            bu, bv = project(body)
            half_w, half_h = 0.16 * project.scale, 0.3 * project.scale
            draw.rectangle([bu - half_w, bv - half_h, bu + half_w, bv + half_h], fill=SHIRT)
            hu, hv = project(head)
            draw.ellipse(_disc(hu, hv, 0.1 * project.scale), fill=SKIN)
            for _, hand in hands:
                hu, hv = project(hand)
                draw.ellipse(_disc(hu, hv, 0.055 * project.scale), fill=SKIN)

        items.append((project.depth(body), draw_person))
    for _, callback in sorted(items, key=lambda item: -item[0]):
        callback()
    return np.asarray(image)


def _disc(u, v, radius):
    radius = max(1.5, radius)
    return [u - radius, v - radius, u + radius, v + radius]


# --------------------------------------------------------------------------------------------- marker
def marker_block(height: int) -> int:
    return max(2, height // 16)


def draw_frame_marker(frame: np.ndarray, index: int) -> np.ndarray:
    """Write ``index`` into the top-left corner as black/white blocks (in place; returns ``frame``)."""
    if not 0 <= index < 2**MARKER_BITS:
        raise ValueError(f"frame index {index} does not fit the {MARKER_BITS}-bit marker")
    block = marker_block(frame.shape[0])
    for bit in range(MARKER_BITS):
        row, col = divmod(bit, MARKER_COLS)
        value = 255 if (index >> (MARKER_BITS - 1 - bit)) & 1 else 0
        frame[row * block : (row + 1) * block, col * block : (col + 1) * block] = value
    return frame


def read_frame_marker(frame: np.ndarray) -> int:
    """The frame index drawn by :func:`draw_frame_marker`, read from a decoded (H, W, 3) uint8 frame."""
    block = marker_block(frame.shape[0])
    margin = block // 4
    index = 0
    for bit in range(MARKER_BITS):
        row, col = divmod(bit, MARKER_COLS)
        patch = frame[
            row * block + margin : (row + 1) * block - margin, col * block + margin : (col + 1) * block - margin
        ]
        index = (index << 1) | int(patch.mean() > 127)
    return index


# --------------------------------------------------------------------------------------------- videos
def render_views(
    script: TakeScript, cameras: Iterable[Camera], fps: float, sway_phase: float = 0.0
) -> Iterator[list[np.ndarray]]:
    """Yield, for each frame index i (time i / fps), one marked frame per camera."""
    cameras = list(cameras)
    num_frames = int(math.floor(script.duration * fps)) + 1
    for index in range(num_frames):
        t = index / fps
        scene = script.scene_at(t)
        yield [
            draw_frame_marker(apply_shift(render_frame(script, scene, camera, t, sway_phase), camera.shift), index)
            for camera in cameras
        ]


class VideoWriter:
    """H.264 (yuv420p) MP4 writer with PyAV; writes to ``<path>.partial`` and renames on close.

    Deterministic bytes for the same frames (one encoder thread, no creation time). ``gop`` is the
    keyframe interval in frames.
    """

    def __init__(
        self, path: str | os.PathLike, width: int, height: int, fps: float, gop: int | None = None, crf: int = 18
    ):
        # Deferred, heavy: PyAV loads FFmpeg's libraries; exo2ego --help imports this module.
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.container = av.open(str(self.partial), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        # One thread and no macroblock-tree rate control: x264's mbtree reads uninitialised memory on
        # frames this small, which made identical input encode to different bytes.
        options = {
            "crf": str(crf),
            "preset": "veryfast",
            "threads": "1",
            "g": str(gop or max(1, round(fps))),
            "x264-params": "mbtree=0",
        }
        self.stream = self.container.add_stream("libx264", rate=rate, options=options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self._frame_class = av.VideoFrame

    def write(self, frame: np.ndarray) -> None:
        for packet in self.stream.encode(self._frame_class.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.container.close()
        self.partial.unlink(missing_ok=True)


def downscale(frame: np.ndarray, height: int) -> np.ndarray:
    """Box-filter resize to ``height`` rows (the marker blocks stay aligned when the factor is whole)."""
    width = int(round(frame.shape[1] * height / frame.shape[0] / 2)) * 2
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BOX))
