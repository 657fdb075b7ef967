"""Run the real server on loopback inside this process, on a thread: for the demo, benchmarks and tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

__all__ = ["serve_in_thread", "wait_ready"]


def wait_ready(url: str, timeout: float = 300.0, headers: dict[str, str] | None = None) -> None:
    """Poll ``/readyz`` until the server is ready; raise with the server's reason after ``timeout`` seconds."""
    deadline, reason = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5, headers=headers)
            if response.status_code == 200:
                return
            reason = response.text
            if "failed to load" in reason:
                break
        except httpx.TransportError as exc:
            reason = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready: {reason}")


@contextmanager
def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", ready_timeout: float = 300.0, ready_headers: dict[str, str] | None = None
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port; yields the base URL once ``/readyz`` answers 200."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="attune-server")
    thread.start()
    try:
        wait_ready(url, ready_timeout, ready_headers)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
