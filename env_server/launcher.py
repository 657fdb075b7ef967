"""``attune serve`` as a child process on a free loopback port: for benchmarks, evaluation and tests.

A separate process keeps a load generator or an evaluation loop from sharing one GIL with the server,
and lets tests kill a server with SIGKILL. Its output goes to a temporary file, not a pipe: a pipe that
nobody reads fills up and stalls the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["REPO", "ServerProcess", "ServerStartError", "free_port", "spawned_server", "wait_until"]

REPO = Path(__file__).resolve().parents[1]

# Keys would lock a caller out of its own private server; host and port are the launcher's to choose.
_DROPPED_VARIABLES = ("ATTUNE_API_KEYS", "ATTUNE_ADMIN_KEYS", "ATTUNE_HOST", "ATTUNE_PORT")


class ServerStartError(RuntimeError):
    """The child server exited or did not become ready; the message ends with the tail of its output."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    """Call ``check`` until it returns true; connection errors count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


class ServerProcess:
    """``attune serve`` as a child process configured by ``ATTUNE_*`` variables; ``kill()`` is SIGKILL.

    ``env`` is laid over this process's environment, less API keys (pass them in ``env`` to test auth).
    """

    def __init__(self, env: Mapping[str, str], port: int | None = None, command: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        child_env = {key: value for key, value in os.environ.items() if key not in _DROPPED_VARIABLES}
        child_env.update({**env, "ATTUNE_HOST": "127.0.0.1", "ATTUNE_PORT": str(self.port)})
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "env_server.cli", "serve"],
            env=child_env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 300, headers: dict[str, str] | None = None) -> ServerProcess:
        """Block until ``/readyz`` answers 200; ServerStartError with the output if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerStartError(f"server exited with status {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2, headers=headers).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(f"server not ready after {timeout:.0f}s:\n{self.output()}")
            time.sleep(0.2)

    def output(self, limit: int = 4000) -> str:
        """The tail of what the server printed so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-limit:]

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; closes the log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextmanager
def spawned_server(env: Mapping[str, str], ready_timeout: float = 300) -> Iterator[ServerProcess]:
    """A ready server process, stopped on exit."""
    server = ServerProcess(env)
    try:
        yield server.wait_ready(ready_timeout)
    finally:
        server.stop()
