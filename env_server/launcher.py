"""``attune serve`` as a child process on a free loopback port: for benchmarks, evaluation and tests.

A separate process keeps a load generator or an evaluation loop from sharing one GIL with the server,
and lets tests kill a server with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["REPO", "ServerProcess", "free_port", "spawned_server", "wait_until"]

REPO = Path(__file__).resolve().parents[1]


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
    """``attune serve`` as a child process configured by ``ATTUNE_*`` variables; ``kill()`` is SIGKILL."""

    def __init__(self, env: Mapping[str, str], port: int | None = None, command: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **env, "ATTUNE_HOST": "127.0.0.1", "ATTUNE_PORT": str(self.port)}
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "env_server.cli", "serve"],
            env=full_env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 300, headers: dict[str, str] | None = None) -> ServerProcess:
        """Block until ``/readyz`` answers 200; raise with the server's output if it exits first."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            return httpx.get(f"{self.url}/readyz", timeout=2, headers=headers).status_code == 200

        wait_until(ready, timeout, f"server on {self.port}")
        return self

    def output(self) -> str:
        """What the server printed, once it has exited."""
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stdout.read() if self.process.stdout else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def spawned_server(env: Mapping[str, str], ready_timeout: float = 300) -> Iterator[ServerProcess]:
    """A ready server process, stopped on exit."""
    server = ServerProcess(env).wait_ready(ready_timeout)
    try:
        yield server
    finally:
        server.stop()
