"""Real processes for deployment and crash tests: redis-server and ``attune serve`` on free loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from env_server.launcher import REPO, ServerProcess, free_port, spawned_server, wait_until

__all__ = ["REPO", "ServerProcess", "attune_server", "free_port", "redis_server", "wait_until"]


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


attune_server = spawned_server
