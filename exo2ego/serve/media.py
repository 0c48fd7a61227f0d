"""Which media a request may name and how it is read: local files under the media root, remote URLs only when
allowed, base64 `data:` URLs up to `--max-data-url-mb`; a video URL's `#t=start,end` media fragment selects its window.

Error messages name a URL by its first 80 characters, a `data:` URL by its header alone: never its payload.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

# Longest URL an error message repeats.
URL_IN_MESSAGE = 80
# File suffixes of the data: URL video types a temporary file is written for (PyAV probes the content anyway).
VIDEO_SUFFIXES = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv"}


class MediaError(Exception):
    """A media URL the server will not or cannot read; `status_code` is the HTTP status to answer with."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


def shown_url(url: str, limit: int = URL_IN_MESSAGE) -> str:
    """`url` quoted for an error message: a `data:` URL as its header and length, another URL cut to `limit`."""
    if url[:5].lower() == "data:":
        comma = url.find(",", 0, limit)
        return f"'{url[:comma] if comma > 0 else 'data:'},...' ({len(url)} characters)"
    return repr(url if len(url) <= limit else url[: limit - 3] + "...")


def is_url(text: str) -> bool:
    """Whether `text` names its scheme (`file:`, `http:`, `data:`, ...) rather than being a plain file path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", text) is not None


def media_fragment_window(url: str) -> tuple[float | None, float | None]:
    """The (start, end) seconds a W3C media fragment `#t=start,end` selects (`#t=start` to the end, `#t=,end` from
    the start; `npt:` times in seconds, `mm:ss` or `hh:mm:ss`), or (None, None) without one. Other fragment
    dimensions (`xywh`, `track`, `id`) are not read. Raises `MediaError` for a `t` that is not such a window."""
    fragment = url.partition("#")[2]
    for item in fragment.split("&") if fragment else ():
        name, _, value = item.partition("=")
        if unquote(name) == "t":
            return _time_window(unquote(value))
    return None, None


def _time_window(value: str) -> tuple[float | None, float | None]:
    shown = f"media fragment 't={value[:40]}'"
    times = value[4:] if value.startswith("npt:") else value
    if re.match(r"[a-z]+:", times):
        raise MediaError(f"{shown}: only npt times (seconds, mm:ss or hh:mm:ss) are read, not {times.split(':')[0]}")
    start_text, _, end_text = times.partition(",")
    if not start_text and not end_text:
        raise MediaError(f"{shown} gives no time; write #t=start,end in seconds (#t=10,20, #t=10 or #t=,20)")
    start = _npt_seconds(start_text, shown) if start_text else None
    end = _npt_seconds(end_text, shown) if end_text else None
    if start is not None and end is not None and not end > start:
        raise MediaError(f"{shown} " + ("is empty" if end == start else "ends before it starts"))
    return start, end


def _npt_seconds(text: str, shown: str) -> float:
    """Seconds of an npt time: `12.5`, `1:02.5` or `1:01:02.5`."""
    match = re.fullmatch(r"(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?)", text)
    if match is None:
        raise MediaError(f"{shown}: {text[:20]!r} is not a time (seconds, mm:ss or hh:mm:ss)")
    hours, minutes, seconds = match.groups()
    if minutes is not None and (float(seconds) >= 60 or (hours is not None and int(minutes) >= 60)):
        raise MediaError(f"{shown}: {text[:20]!r} is not a time (minutes and seconds below 60)")
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


class MediaPolicy:
    """Turns a request's media URL or path into a local file (or, for an image `data:` URL, its bytes).

    Args:
        media_root: only files under this folder (after resolving symlinks and `..`) are readable.
        allow_remote_media: also fetch `http(s)://` URLs into temporary files; without it they are refused and the
            server makes no network request.
        max_remote_bytes: a remote file larger than this is refused.
        timeout_s: network timeout for a remote file.
        max_data_url_bytes: a base64 `data:` URL whose content is larger than this is refused (413).
    """

    def __init__(
        self,
        media_root: str | os.PathLike,
        allow_remote_media: bool = False,
        max_remote_bytes: int = 512 * 2**20,
        timeout_s: float = 30.0,
        max_data_url_bytes: int = 64 * 2**20,
    ):
        self.media_root = Path(media_root).resolve()
        if not self.media_root.is_dir():
            raise NotADirectoryError(f"--media-root {media_root} is not a folder")
        self.allow_remote_media = allow_remote_media
        self.max_remote_bytes = max_remote_bytes
        self.timeout_s = timeout_s
        self.max_data_url_bytes = max_data_url_bytes

    def local_path(self, url: str, kind: str = "video") -> tuple[str, bool]:
        """The file `url` names, as (path, is_temporary); a temporary file (a fetched remote file, a `data:` URL's
        content) is the caller's to delete. `kind` ("video" or "image") is the media type a `data:` URL must
        declare. Raises `MediaError` for URLs outside the policy, missing files and failed downloads."""
        if url[:5].lower() == "data:":
            media_type, content = self.data_url_content(url, kind)
            handle, path = tempfile.mkstemp(prefix="exo2ego-media-", suffix=VIDEO_SUFFIXES.get(media_type, ""))
            with os.fdopen(handle, "wb") as out:
                out.write(content)
            return path, True
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https"):
            if not self.allow_remote_media:
                raise MediaError(
                    f"remote media URL {shown_url(url)} refused: this server reads only local files under "
                    f"--media-root {self.media_root} (start it with --allow-remote-media to fetch URLs)"
                )
            return self._download(url), True
        if parsed.scheme != "file":
            raise MediaError(
                f"unsupported {kind} URL {shown_url(url)}: use file:///absolute/path under --media-root "
                f"{self.media_root}, a base64 data: URL" + (" or http(s)://" if self.allow_remote_media else "")
            )
        if parsed.netloc not in ("", "localhost"):
            raise MediaError(
                f"file URL {shown_url(url)} names host {parsed.netloc[:40]!r}; write file:///absolute/path"
            )
        return self.file_path(unquote(parsed.path), shown_url(url), kind), False

    def file_path(self, path: str, shown: str | None = None, kind: str = "video") -> str:
        """`path` (absolute) resolved, if it is a file under the media root."""
        shown = shown or shown_url(path)
        if not os.path.isabs(path):
            raise MediaError(
                f"relative path {shown}: write an absolute path or a file:// URL under --media-root {self.media_root}"
            )
        try:
            resolved = Path(path).resolve()
            if not resolved.is_relative_to(self.media_root):
                raise MediaError(f"{kind} {shown} is outside --media-root {self.media_root}", status_code=403)
            if not resolved.is_file():
                raise MediaError(f"{kind} file not found: {shown}", status_code=404)
        except OSError as error:  # a name too long, a loop of links
            raise MediaError(f"cannot read {kind} {shown}: {error.strerror}") from None
        return str(resolved)

    def data_url_content(self, url: str, kind: str) -> tuple[str, bytes]:
        """(media type, decoded bytes) of a base64 `data:` URL (any `#` fragment left out), which must declare a
        `kind/...` media type (or application/octet-stream) and hold at most `max_data_url_bytes`."""
        header, comma, payload = url[5:].partition(",")
        if not comma:
            raise MediaError(f"data: URL {shown_url(url)} has no ',' before its data")
        media_type, *parameters = header.split(";")
        media_type = media_type.strip().lower()
        if not media_type.startswith(f"{kind}/") and media_type != "application/octet-stream":
            other = "image" if kind == "video" else "video"
            article = "an" if kind == "image" else "a"
            raise MediaError(
                f"a data:{media_type[:40] or 'text/plain'} URL in {article} {kind} part; send {other}s as "
                f"{other}_url parts and {kind}s as data:{kind}/...;base64, URLs"
            )
        if "base64" not in (parameter.strip().lower() for parameter in parameters):
            raise MediaError(
                f"data: URL {shown_url(url)}: only base64 data: URLs are read (data:<type>;base64,<data>)"
            )
        payload = payload.partition("#")[0]
        size = len(payload) * 3 // 4
        if size > self.max_data_url_bytes:
            raise MediaError(
                f"a data: URL of about {size / 2**20:.1f} MiB is larger than this server's --max-data-url-mb of "
                f"{self.max_data_url_bytes / 2**20:.4g} MiB",
                status_code=413,
            )
        if "%" in payload:
            payload = unquote(payload)
        try:
            return media_type, base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as error:
            raise MediaError(f"data: URL {shown_url(url)} is not valid base64 ({error})") from None

    def _download(self, url: str) -> str:
        """Fetch `url` into a temporary file, at most `max_remote_bytes`."""
        suffix = Path(urlparse(url).path).suffix[:16] or ".mp4"
        handle, path = tempfile.mkstemp(prefix="exo2ego-media-", suffix=suffix)
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                shutil.copyfileobj(_capped(response, self.max_remote_bytes, url), out)
        except MediaError:
            os.unlink(path)
            raise
        except (OSError, ValueError) as error:
            os.unlink(path)
            raise MediaError(f"cannot fetch {shown_url(url)}: {error}") from error
        return path


class _capped:
    """A readable that raises `MediaError` once more than `limit` bytes were read from `stream`."""

    def __init__(self, stream, limit: int, url: str):
        self.stream, self.limit, self.url, self.total = stream, limit, url, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.total += len(chunk)
        if self.total > self.limit:
            raise MediaError(f"remote file {shown_url(self.url)} is larger than {self.limit} bytes", status_code=413)
        return chunk
