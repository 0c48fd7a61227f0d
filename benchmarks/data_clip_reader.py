"""Synchronized clip reading vs decoding whole videos, on multi-minute 448p-like synthetic takes.

Renders one long take on the fly (an ego view 448x448 and exo views 796x448, 30 fps by default, x264's
default keyframe interval of 250 frames), then reads random ~1 s Ego-ExoClip-like windows, 16 frames
per view, three ways in the same run:

- ``synced``: :func:`datasets_scripts.clip_reader.read_synced_clip` (seeks to the keyframe before
  each window, identical timestamps in every view);
- ``naive``: decode every frame of every view from the start and keep the requested ones;
- ``pack``: read the same clips pre-cut by :func:`datasets_scripts.clip_reader.pack_clips`.

Prints a table and writes JSON (CPU, versions, arguments, samples/s, ratios)::

    python -m benchmarks.data_clip_reader --minutes 3 --samples 40 --naive-samples 3
"""

from __future__ import annotations

import platform
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_name
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic


def render_long_take(folder: Path, minutes: float, fps: float, height: int, exo_views: int, gop: int, seed: int):
    """Write ego.mp4 + exo1..N.mp4 of one long scripted take; returns (paths, duration_sec)."""
    from tqdm.auto import tqdm

    from datasets_scripts.synthetic.render import EGO_CAMERA, EXO_CAMERAS, VideoWriter, render_views, scaled
    from datasets_scripts.synthetic.script import make_script

    actions = max(1, int(minutes * 60 / 2.3))  # an action plus its pause lasts about 2.3 s
    script = make_script(random.Random(seed), num_actions=actions)
    cameras = [scaled(EGO_CAMERA, height)] + [scaled(camera, height) for camera in EXO_CAMERAS[:exo_views]]
    names = ["ego"] + [f"exo{i + 1}" for i in range(exo_views)]
    writers = [
        VideoWriter(folder / f"{name}.mp4", cam.width, cam.height, fps, gop=gop, crf=23)
        for name, cam in zip(names, cameras)
    ]
    total = int(script.duration * fps) + 1
    for frames in tqdm(render_views(script, cameras, fps), total=total, desc="rendering the long take", unit="frame"):
        for writer, frame in zip(writers, frames):
            writer.write(frame)
    for writer in writers:
        writer.close()
    return [folder / f"{name}.mp4" for name in names], script.duration


def naive_read(paths, timestamps: np.ndarray) -> list[np.ndarray]:
    """Decode each view from its first frame to its last and keep the frame shown at each timestamp."""
    import av

    views = []
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            chosen = [None] * len(timestamps)
            for frame in container.decode(stream):
                time_sec = float(frame.pts * stream.time_base)
                for i, t in enumerate(timestamps):
                    if time_sec <= t + 1e-6:
                        chosen[i] = frame
            views.append(np.stack([frame.to_ndarray(format="rgb24") for frame in chosen]))
    return views


@dataclass
class ClipReaderArguments:
    """The flags of `python -m benchmarks.data_clip_reader`."""

    minutes: float = field(default=3.0, metadata={"help": "length of the rendered take in minutes"})
    fps: float = field(default=30.0, metadata={"help": "frame rate of the rendered videos"})
    height: int = field(default=448, metadata={"help": "frame height of the rendered videos in pixels"})
    exo_views: int = field(default=1, metadata={"help": "exo views per paired sample"})
    gop: int = field(default=250, metadata={"help": "keyframe interval in frames (x264 default 250)"})
    frames: int = field(default=16, metadata={"help": "frames per view"})
    samples: int = field(default=40, metadata={"help": "random clips for the synced and pack readers"})
    naive_samples: int = field(default=3, metadata={"help": "clips for the (slow) naive baseline"})
    seed: int = field(default=0, metadata={"help": "seed of the rendering and of the clip windows"})
    json: str = field(default="benchmarks/results/data_clip_reader.json", metadata={"help": "JSON output path"})


def main(argv=None) -> int:
    args = parse_script_arguments(ClipReaderArguments, argv, __doc__.splitlines()[0])

    from datasets_scripts.clip_reader import PackConfig, iter_packed_clips, pack_clips, read_synced_clip
    from datasets_scripts.synthetic import read_frame_marker

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        paths, duration = render_long_take(
            folder, args.minutes, args.fps, args.height, args.exo_views, args.gop, args.seed
        )
        render_sec = time.perf_counter() - started
        windows = []
        for _ in range(args.samples):
            start = float(rng.uniform(0, duration - 1.5))
            windows.append((start, start + float(rng.uniform(0.6, 1.4))))

        def synced(window):
            clip = read_synced_clip(paths[0], paths[1:], window[0], window[1], args.frames)
            return [clip.ego, *clip.exo], clip.timestamps

        # Warm-up (file cache, codec init), then time.
        synced(windows[0])
        started = time.perf_counter()
        results = [synced(window) for window in windows]
        synced_sec = time.perf_counter() - started
        for views, timestamps in results[:5]:  # sanity: every view shows the requested instants
            expected = [int(np.floor(t * args.fps + 1e-6)) for t in timestamps]
            assert all([read_frame_marker(f) for f in view] == expected for view in views)

        from modeling_exo2ego import sample_timestamps

        started = time.perf_counter()
        for window in windows[: args.naive_samples]:
            naive_read(paths, sample_timestamps(window[0], window[1], args.frames))
        naive_sec = time.perf_counter() - started

        rows = [
            {
                "clip_id": f"clip{i:04d}",
                "take_uid": "bench",
                "start_sec": s,
                "end_sec": e,
                "ego_cam": "ego",
                "exo_cams": [p.stem for p in paths[1:]],
                "ego_video": paths[0].name,
                "exo_videos": [p.name for p in paths[1:]],
            }
            for i, (s, e) in enumerate(windows)
        ]
        started = time.perf_counter()
        pack_clips(rows, folder, folder / "pack", PackConfig(num_frames=args.frames, clips_per_shard=20))
        pack_write_sec = time.perf_counter() - started
        started = time.perf_counter()
        packed = sum(1 for _ in iter_packed_clips(folder / "pack"))
        pack_read_sec = time.perf_counter() - started

    synced_rate = args.samples / synced_sec
    naive_rate = args.naive_samples / naive_sec
    pack_rate = packed / pack_read_sec
    report = {
        "benchmark": "data_clip_reader",
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "args": asdict(args),
        "take_duration_sec": duration,
        "render_sec": render_sec,
        "paired_samples_per_sec": {"synced": synced_rate, "naive_whole_video": naive_rate, "pack": pack_rate},
        "speedup_synced_vs_naive": synced_rate / naive_rate,
        "speedup_pack_vs_synced": pack_rate / synced_rate,
        "pack_write_sec": pack_write_sec,
    }
    print(
        f"CPU: {report['cpu']}; take {duration:.0f} s at {args.fps:g} fps, {args.height}p, 1 ego + "
        f"{args.exo_views} exo, GOP {args.gop}, {args.frames} frames per view"
    )
    print(f"{'reader':<22}{'samples':>9}{'seconds':>10}{'samples/s':>12}")
    for name, count, seconds in (
        ("synced (seeking)", args.samples, synced_sec),
        ("naive (whole video)", args.naive_samples, naive_sec),
        ("local pack (JPEG)", packed, pack_read_sec),
    ):
        print(f"{name:<22}{count:>9}{seconds:>10.2f}{count / seconds:>12.2f}")
    print(
        f"synced / naive: {report['speedup_synced_vs_naive']:.1f}x   "
        f"pack / synced: {report['speedup_pack_vs_synced']:.1f}x"
    )
    write_json_atomic(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
