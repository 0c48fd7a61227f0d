"""The shared result-recording helpers: atomic file writes, package versions, the folder lock and the Hub push."""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exo2ego_base.provenance import (
    LOCK_NAME,
    FolderLockedError,
    HubPushError,
    atomic_path,
    atomic_write,
    folder_lock,
    package_versions,
    push_files_to_hub,
    staged_folder,
    write_json_atomic,
    write_text_atomic,
)


def test_write_json_atomic_writes_sorted_json_and_keeps_the_old_file_when_serializing_fails(tmp_path):
    path = write_json_atomic(tmp_path / "new" / "results.json", {"b": 1, "a": [1.5, None]})
    assert path.read_text().startswith('{\n  "a"') and json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": Path("x")})
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}  # the reader never sees half a file
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # nor a stray temp file
    write_json_atomic(path, {"a": Path("x")}, default=str)
    assert json.loads(path.read_text()) == {"a": "x"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_atomic_write_leaves_neither_a_partial_file_nor_a_temp_file_when_the_write_fails(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "report.md", "old\n")
    assert path.read_text() == "old\n"
    with pytest.raises(RuntimeError, match="killed"), atomic_write(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n" and sorted(p.name for p in path.parent.iterdir()) == ["report.md"]
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "never.bin", "wb") as handle:
        handle.write(b"x")
        raise RuntimeError
    assert not (tmp_path / "never.bin").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_atomic_path_keeps_the_suffix_for_writers_that_need_it_and_renames_only_on_success(tmp_path):
    target = tmp_path / "clip.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".clip.tmp-")
        tmp.write_bytes(b"video")
        assert not target.exists()  # nothing at the final name before the block ends
    assert target.read_bytes() == b"video" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_staged_folder_replaces_the_output_only_when_the_block_finishes_and_wrote_its_marker(tmp_path):
    out = tmp_path / "ckpt"
    with staged_folder(out, marker="done.json") as staging:
        (staging / "weights").write_text("v1")
        assert not out.exists()
        write_json_atomic(staging / "done.json", {})
    assert (out / "weights").read_text() == "v1"
    with pytest.raises(FileExistsError, match="complete: it has done.json"):
        with staged_folder(out, marker="done.json"):
            pass
    with pytest.raises(RuntimeError, match="killed"):
        with staged_folder(out, marker="done.json", overwrite=True) as staging:
            (staging / "weights").write_text("half")
            raise RuntimeError("killed")
    with pytest.raises(FileExistsError, match="did not write done.json"):
        with staged_folder(out, marker="done.json", overwrite=True) as staging:
            (staging / "weights").write_text("v2 without its marker")
    assert (out / "weights").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with staged_folder(out, marker="done.json", overwrite=True) as staging:
        write_json_atomic(staging / "done.json", {"version": 2})
    assert sorted(p.name for p in out.iterdir()) == ["done.json"]  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        with staged_folder(tmp_path / "file", marker="done.json", overwrite=True):
            pass


def test_package_versions_names_python_and_marks_missing_packages():
    versions = package_versions(["torch", "no-such-package-exo2ego"])
    assert versions["python"].count(".") == 2 and versions["torch"].startswith("2.")
    assert versions["no-such-package-exo2ego"] == "not installed"


HOLD_THE_LOCK = """
import sys, time
from exo2ego_base.provenance import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(folder: Path) -> subprocess.Popen:
    """Another process that holds `folder`'s lock (it says "held" once it does)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_folder_lock_names_its_holder_to_another_process_and_is_gone_when_it_ends(tmp_path):
    folder = tmp_path / "run"
    holder = _hold(folder)
    try:
        record = json.loads((folder / LOCK_NAME).read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname() and record["started"]
        with pytest.raises(FolderLockedError, match=rf"run is in use by another run \(pid {holder.pid} on "):
            with folder_lock(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder leaves its file, not its lock
        holder.wait()
    assert (folder / LOCK_NAME).is_file()
    with folder_lock(folder) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with folder_lock(folder):  # the same process may nest it
            pass
        assert path.is_file()
    assert os.listdir(folder) == []


def test_folder_lock_removes_the_folder_it_created_when_nothing_was_written(tmp_path):
    with folder_lock(tmp_path / "empty"):
        assert (tmp_path / "empty" / LOCK_NAME).is_file()
    assert not (tmp_path / "empty").exists()
    with folder_lock(tmp_path / "used"):
        (tmp_path / "used" / "results.json").write_text("{}")
    assert os.listdir(tmp_path / "used") == ["results.json"]


@pytest.fixture
def refusing_hub():
    """A loopback endpoint that answers every request 401, as the Hub does without a valid token."""

    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def _refuse(self):
            body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _refuse

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# (row id, endpoint of the HfApi (None: offline mode), error the message names)
PUSH_FAILURES = [
    ("offline", None, "OfflineModeIsEnabled"),
    ("unreachable", lambda hub: f"http://127.0.0.1:{_closed_port()}", "ConnectError"),
    ("no token", lambda hub: hub, "401"),
]


@pytest.mark.parametrize("endpoint, named", [row[1:] for row in PUSH_FAILURES], ids=[row[0] for row in PUSH_FAILURES])
def test_a_push_the_hub_does_not_take_is_one_line_saying_the_folder_is_kept(
    tmp_path, refusing_hub, monkeypatch, endpoint, named
):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", endpoint is None)
    (tmp_path / "data.json").write_text("{}")
    api = HfApi(endpoint=endpoint(refusing_hub) if endpoint else None, token=False)
    with pytest.raises(HubPushError, match=rf"org/x \(.*{named}.*\); the built folder {tmp_path} is kept") as raised:
        push_files_to_hub(tmp_path, "org/x", ["data.json"], commit_message="m", api=api)
    assert "\n" not in str(raised.value) and isinstance(raised.value, ValueError)
    assert os.listdir(tmp_path) == ["data.json"]
