"""Which video URLs a request may name: local files under the media root, remote URLs only when allowed."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse


class MediaError(Exception):
    """A video URL the server will not or cannot read; `status_code` is the HTTP status to answer with."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


class MediaPolicy:
    """Turns a request's video URL into a local file path.

    Args:
        media_root: only files under this folder (after resolving symlinks and `..`) are readable.
        allow_remote_media: also fetch `http(s)://` URLs into temporary files; without it they are refused and the
            server makes no network request.
        max_remote_bytes: a remote video larger than this is refused.
        timeout_s: network timeout for a remote video.
    """

    def __init__(
        self,
        media_root: str | os.PathLike,
        allow_remote_media: bool = False,
        max_remote_bytes: int = 512 * 2**20,
        timeout_s: float = 30.0,
    ):
        self.media_root = Path(media_root).resolve()
        if not self.media_root.is_dir():
            raise NotADirectoryError(f"--media-root {media_root} is not a folder")
        self.allow_remote_media = allow_remote_media
        self.max_remote_bytes = max_remote_bytes
        self.timeout_s = timeout_s

    def local_path(self, url: str) -> tuple[str, bool]:
        """The file `url` names, as (path, is_temporary); a temporary file (a fetched remote video) is the caller's
        to delete. Raises `MediaError` for URLs outside the policy, missing files and failed downloads."""
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https"):
            if not self.allow_remote_media:
                raise MediaError(
                    f"remote media URL {url!r} refused: this server reads only local files under "
                    f"--media-root {self.media_root} (start it with --allow-remote-media to fetch URLs)"
                )
            return self._download(url), True
        if parsed.scheme != "file":
            raise MediaError(
                f"unsupported video URL {url!r}: use file:///absolute/path under --media-root "
                f"{self.media_root}" + (" or http(s)://" if self.allow_remote_media else "")
            )
        if parsed.netloc not in ("", "localhost"):
            raise MediaError(f"file URL {url!r} names host {parsed.netloc!r}; write file:///absolute/path")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.media_root):
            raise MediaError(f"video {url!r} is outside --media-root {self.media_root}", status_code=403)
        if not path.is_file():
            raise MediaError(f"video file not found: {url!r}", status_code=404)
        return str(path), False

    def _download(self, url: str) -> str:
        """Fetch `url` into a temporary file, at most `max_remote_bytes`."""
        suffix = Path(urlparse(url).path).suffix or ".mp4"
        handle, path = tempfile.mkstemp(prefix="exo2ego-media-", suffix=suffix)
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                shutil.copyfileobj(_capped(response, self.max_remote_bytes, url), out)
        except MediaError:
            os.unlink(path)
            raise
        except (OSError, ValueError) as error:
            os.unlink(path)
            raise MediaError(f"cannot fetch video {url!r}: {error}") from error
        return path


class _capped:
    """A readable that raises `MediaError` once more than `limit` bytes were read from `stream`."""

    def __init__(self, stream, limit: int, url: str):
        self.stream, self.limit, self.url, self.total = stream, limit, url, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.total += len(chunk)
        if self.total > self.limit:
            raise MediaError(f"remote video {self.url!r} is larger than {self.limit} bytes", status_code=413)
        return chunk
