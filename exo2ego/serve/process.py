"""Run `exo2ego serve` or `exo2ego app` in a child process on a free loopback port (tests, benchmarks, scripts)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_loopback_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(["--model", DIR, "--media-root", ROOT]) as server:` starts `exo2ego serve` (or the
    `command` given, e.g. "app") on 127.0.0.1 at a free port, waits until `ready_path` answers and stops the
    server on exit.

    `server.url` is `http://127.0.0.1:PORT`, `server.base_url` the OpenAI base URL `http://127.0.0.1:PORT/v1`;
    the server's output goes to `server.log_path`, deleted on a clean exit.
    """

    def __init__(
        self,
        args: list[str],
        command: str = "serve",
        ready_path: str = "/health",
        startup_timeout_s: float = 300.0,
        env: dict | None = None,
    ):
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.args = list(args)
        self.command = command
        self.ready_path = ready_path
        self.startup_timeout_s = startup_timeout_s
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log_path = ""

    def __enter__(self) -> ServerProcess:
        log = tempfile.NamedTemporaryFile("w", prefix="exo2ego-serve-", suffix=".log", delete=False)
        self.log_path = log.name
        command = [
            sys.executable,
            "-m",
            "exo2ego",
            self.command,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.stop()
        if exc_type is None:  # keep the log only when something went wrong
            os.unlink(self.log_path)

    def health(self) -> dict:
        """`exo2ego serve`'s /health: queue depth and batch counts."""
        with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
            return json.loads(response.read())

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"exo2ego {self.command} exited with code {self.process.returncode}:\n{self.log()[-4000:]}"
                )
            try:
                urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=5).close()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise TimeoutError(
            f"exo2ego {self.command} did not answer within {self.startup_timeout_s}s:\n{self.log()[-4000:]}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
