"""Turn a folder of frame images into an MP4 clip with PyAV (OpenEQA episodes, EgoTaskQA/LEMMA intervals)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from exo2ego_base.provenance import atomic_path


def frames_to_video(
    frames: Sequence[Path], out_path: str | os.PathLike, fps: float = 30.0, codec: str = "libx264", crf: int = 20
) -> Path:
    """Encode ``frames`` (image files, in order) into ``out_path``; atomic (temp file, then rename).

    Frames are padded with black to even width/height (H.264 needs it). Returns ``out_path``.
    """
    if not frames:
        raise ValueError(f"no frames to write to {out_path}")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)} if codec == "libx264" else {}
        for index, frame_path in enumerate(frames):
            with Image.open(frame_path) as image:
                pixels = np.asarray(image.convert("RGB"))
            if index == 0:
                height, width = pixels.shape[0] + pixels.shape[0] % 2, pixels.shape[1] + pixels.shape[1] % 2
                stream.width, stream.height = width, height
            padded = np.zeros((height, width, 3), dtype=np.uint8)
            padded[: min(height, pixels.shape[0]), : min(width, pixels.shape[1])] = pixels[:height, :width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out_path
