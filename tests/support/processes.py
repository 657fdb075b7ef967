"""Real processes for deployment and crash tests: redis-server and ``attune serve`` on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


@contextmanager
def redis_server(args: list[str] | None = None, port: int | None = None) -> Iterator[int]:
    """A throwaway redis-server (nothing on disk) on a free port; yields the port."""
    port = port or free_port()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    command = [binary, *(args or ["--save", "", "--appendonly", "no"]), "--port", str(port), "--bind", "127.0.0.1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() is None, 10, "redis")
        yield port
    finally:
        process.kill()
        process.wait()


class ServerProcess:
    """``attune serve`` as a child process; ``kill()`` is SIGKILL (kill -9)."""

    def __init__(self, env: Mapping[str, str], port: int, command: list[str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full_env = {**os.environ, **env, "ATTUNE_HOST": "127.0.0.1", "ATTUNE_PORT": str(port)}
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "env_server.cli", "serve"],
            env=full_env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 300, headers: dict[str, str] | None = None) -> ServerProcess:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            return httpx.get(f"{self.url}/readyz", timeout=2, headers=headers).status_code == 200

        wait_until(ready, timeout, f"server on {self.port}")
        return self

    def output(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stdout.read() if self.process.stdout else ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def attune_server(env: Mapping[str, str], ready_timeout: float = 300) -> Iterator[ServerProcess]:
    server = ServerProcess(env, free_port()).wait_ready(ready_timeout)
    try:
        yield server
    finally:
        server.stop()
