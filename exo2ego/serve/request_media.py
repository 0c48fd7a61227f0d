"""Reading a request's video into the processor's video input: a video file and its window, or the frames of a
message's image parts, each opened under the media policy (`media.MediaPolicy`).

A part that cannot be read raises `MediaError` whose message starts with the part it is about
(`messages.0.content.2 (image_url): ...`) and whose `status_code` is the HTTP status to answer with; the server
answers it as a refused request naming `messages`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from .media import MediaError, MediaPolicy, media_fragment_window
from .protocol import MediaRef, MediaSource

# Image formats an image part may hold (the first frame of an animated one).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def read_media(source: MediaSource, processor, policy: MediaPolicy, num_frames: int, temporary: list[str]):
    """The processor's video input for `source`: `{"path", "start_sec", "end_sec"}` for a video, a list of frames
    for images. Temporary files made on the way are added to `temporary` (the caller deletes them)."""
    if source.video is None:
        return _read_frames(source, processor, policy, num_frames, temporary)
    video = source.video
    window = _window(video)
    return {"path": _local_file(video, policy, temporary), **window}


def _window(video: MediaRef) -> dict:
    """A video's window from its `start_sec` / `end_sec` and its URL's `#t=` media fragment; refused (400) where
    they disagree."""
    try:
        fragment = media_fragment_window(video.url) if video.url else (None, None)
    except MediaError as error:
        raise MediaError(f"{video.where}: {error}", error.status_code) from error
    window = {}
    for name, bound, given, from_url in zip(
        ("start_sec", "end_sec"), ("start", "end"), (video.start_sec, video.end_sec), fragment
    ):
        if given is not None and from_url is not None and given != from_url:
            raise MediaError(
                f"{video.where}: {name} {given} and the URL's #t= {bound} {from_url} disagree; give the window once"
            )
        value = given if given is not None else from_url
        if value is not None:
            window[name] = value
    return window


def _local_file(item: MediaRef, policy: MediaPolicy, temporary: list[str]) -> str:
    """The local file `item` names (a temporary one for a remote or `data:` URL), under the media policy."""
    try:
        if item.url is None:
            return policy.file_path(item.path, kind=item.kind)
        path, is_temporary = policy.local_path(item.url, item.kind)
    except MediaError as error:
        raise MediaError(f"{item.where}: {error}", error.status_code) from error
    if is_temporary:
        temporary.append(path)
    return path


def _read_frames(source: MediaSource, processor, policy: MediaPolicy, num_frames: int, temporary: list[str]) -> list:
    """The frames of `source`'s images, in order. Every image is opened (its header: a broken part is refused even
    if it is not sampled) and must have the first one's size; of more than `num_frames` images only those the
    processor would sample are decoded: the midpoints of `num_frames` equal segments, as it samples decoded frames
    (`Exo2EgoProcessor.load_video`). Fewer images go to the processor as they are, which repeats frames, unless it
    refuses short videos (`short_video="error"`)."""
    frames = source.frames
    images = []
    try:
        for item in frames:
            images.append(_open_image(item, policy, temporary))
            width, height = images[-1].size
            if images[-1].size != images[0].size:
                raise MediaError(
                    f"{item.where}: a frame of {width}x{height} pixels, but {frames[0].location} is "
                    f"{images[0].size[0]}x{images[0].size[1]}; all frames of a video must have one size"
                )
        if len(images) < num_frames and getattr(processor, "short_video", "repeat") == "error":
            count = f"{len(images)} frame" + ("s" if len(images) > 1 else "")
            raise MediaError(
                f"{source.where}: {count}, but the model takes {num_frames} (num_frames) and its processor refuses "
                f"shorter videos (short_video='error'); send at least {num_frames} frames or a lower num_frames"
            )
        if len(images) > num_frames:
            picked = np.floor((np.arange(num_frames) + 0.5) * len(images) / num_frames).astype(int).tolist()
        else:
            picked = list(range(len(images)))
        decoded = {}
        for index in picked:
            if index not in decoded:
                try:
                    decoded[index] = images[index].convert("RGB")
                except (OSError, ValueError, SyntaxError, EOFError) as error:  # PIL's broken-file errors
                    raise MediaError(f"{frames[index].where}: cannot read the image: {error}") from None
        return [decoded[index] for index in picked]
    finally:
        for image in images:
            image.close()


def _open_image(item: MediaRef, policy: MediaPolicy, temporary: list[str]) -> Image.Image:
    """`item`'s image, opened (header read, pixels not yet decoded)."""
    try:
        if item.url is not None and item.url[:5].lower() == "data:":
            try:
                source = io.BytesIO(policy.data_url_content(item.url, "image")[1])
            except MediaError as error:
                raise MediaError(f"{item.where}: {error}", error.status_code) from error
        else:
            source = _local_file(item, policy, temporary)  # its MediaError already names the part
        image = Image.open(source, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        formats = ", ".join(IMAGE_FORMATS[:-1]) + f" or {IMAGE_FORMATS[-1]}"
        raise MediaError(f"{item.where}: cannot read the image: not a {formats} image") from None
    except (Image.DecompressionBombError, OSError) as error:
        raise MediaError(f"{item.where}: cannot read the image: {error}") from None
    if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
        image.close()
        raise MediaError(
            f"{item.where}: an image of {image.width}x{image.height} pixels is larger than this server reads "
            f"({Image.MAX_IMAGE_PIXELS} pixels)"
        )
    return image
