"""A real OpenAI-compatible server for tests: llama-cpp-python's server on loopback, serving the bundled SmolLM2.

llama-cpp-python ships no binary wheel, so the first :func:`ensure_llama_server_installed` compiles llama.cpp
(CPU only, about 10 minutes on two cores); pip's wheel cache keeps the wheel, so later installs take seconds.
That cache is keyed by the sdist, not by ``CMAKE_ARGS``: a wheel built with other flags is reused until it is
removed from ``pip cache dir``."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = ["LLAMA_CPP_PYTHON", "ensure_llama_server_installed", "free_port", "llama_server"]

LLAMA_CPP_PYTHON = "llama-cpp-python[server]==0.3.36"

# CPU only, AVX2 rather than -march=native: this machine's CPU reports AMX, which a native build then uses,
# but the VM does not enable AMX tile state and the first matrix multiply dies (SIGSEGV in ``ldtilecfg``).
# No multimodal library either: llama_cpp loads it only for image chat handlers, and skipping it saves minutes.
_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"


def _server_importable() -> bool:
    try:
        return importlib.util.find_spec("llama_cpp.server") is not None
    except ImportError:
        return False


def ensure_llama_server_installed(timeout: float = 3600.0) -> None:
    """Install llama-cpp-python's server into the running interpreter's environment unless it is there."""
    if _server_importable():
        return
    env = dict(os.environ)
    env.setdefault("CMAKE_ARGS", _CMAKE_ARGS)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", LLAMA_CPP_PYTHON],
        check=True,
        env=env,
        timeout=timeout,
    )
    importlib.invalidate_caches()
    if not _server_importable():
        raise RuntimeError(f"{LLAMA_CPP_PYTHON} installed but llama_cpp.server cannot be imported")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llama_server(
    model_path: str | Path, *, port: int | None = None, n_ctx: int = 2048, threads: int = 1, wait: float = 120
) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` on loopback until the block ends; yields its base URL.

    The chat format is left to the GGUF's own chat template (SmolLM2's is ChatML with its default system
    prompt), as the transformers backend uses it. One thread by default: SmolLM2-135M needs no more, and
    llama.cpp's OpenMP workers spin, so two threads on a two-core machine busy with other work made a first
    request take 26 s instead of under one. The server's output goes to a temporary log, quoted when the server
    does not come up or cannot generate.
    """
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--verbose", "False"]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + wait
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"llama server exited with {process.returncode}: {_tail(log)}")
                try:
                    if httpx.get(f"{base_url}/v1/models", timeout=2).is_success:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"llama server not ready after {wait}s: {_tail(log)}")
                time.sleep(0.25)
            _warm_up(base_url, process, log, wait)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _warm_up(base_url: str, process: subprocess.Popen, log, wait: float) -> None:
    """One token through the model, so a server that loads but cannot compute (a build using instructions the
    machine refuses) fails here with its exit code rather than mid-test with a dropped connection."""
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    try:
        httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=wait).raise_for_status()
    except httpx.HTTPError as exc:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=2)
        raise RuntimeError(f"llama server cannot generate ({exc}; exit code {process.poll()}): {_tail(log)}") from exc


def _tail(log, size: int = 2000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-size:]
