"""docker-compose.yml, run without a Docker engine: each declared service as a local process, with the
declared command, environment, volumes and health checks translated to this machine, then an episode."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import gymnasium
import httpx
import pytest
import yaml

import attune_client  # noqa: F401  (registers Attune-v0)
from tests.support.processes import REPO, ServerProcess, free_port, redis_server, wait_until

pytestmark = pytest.mark.redis

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
IMAGE_ROOT = "/opt/attune"


def substitute(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} and ${VAR} interpolation."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


def local_path(path: str) -> str:
    """A path inside the image, as it is in this checkout (the image copies the repo to /opt/attune)."""
    volumes = {
        target.split(":")[0]: source
        for source, target in (v.split(":", 1) for v in COMPOSE["services"]["attune"]["volumes"])
    }
    for target, source in volumes.items():
        if path.startswith(target):
            return str((REPO / source).resolve()) + path[len(target) :]
    return path.replace(IMAGE_ROOT, str(REPO)) if path.startswith(IMAGE_ROOT) else path


def test_compose_declares_what_deployment_needs() -> None:
    services = COMPOSE["services"]
    assert {"redis", "attune"} <= set(services)
    attune = services["attune"]
    assert attune["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in attune and "healthcheck" in services["redis"]
    assert attune["environment"]["ATTUNE_STORE"].startswith("redis://redis:")
    assert any(v.endswith(":ro") and "personas" in v for v in attune["volumes"])
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())["services"]["attune"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "scripts/install.sh" in dockerfile  # the same install step as the Makefile


def test_compose_services_run_as_local_processes(tmp_path: Path) -> None:
    services = COMPOSE["services"]
    redis_args = services["redis"]["command"][1:]
    port_at = redis_args.index("--port")
    redis_args = redis_args[:port_at] + redis_args[port_at + 2 :]
    with redis_server(["--dir", str(tmp_path), *redis_args]) as redis_port:
        redis_check = [c.replace("6379", str(redis_port)) for c in services["redis"]["healthcheck"]["test"][1:]]
        assert subprocess.run(redis_check, capture_output=True, text=True).stdout.strip() == "PONG"

        attune = services["attune"]
        shell_env = {
            **os.environ,
            "ATTUNE_BACKEND": "heuristic",
        }  # what `ATTUNE_BACKEND=heuristic docker compose up` does
        env = {key: substitute(str(value), shell_env) for key, value in attune["environment"].items()}
        env["ATTUNE_STORE"] = env["ATTUNE_STORE"].replace("redis:6379", f"127.0.0.1:{redis_port}")
        env["ATTUNE_PACKS"] = local_path(env["ATTUNE_PACKS"])
        port = free_port()
        command = [local_path(part) for part in attune["command"]]
        server = ServerProcess(env, port, command=command)
        try:
            health = [local_path(part) for part in attune["healthcheck"]["test"][1:]]
            health_env = {**os.environ, "ATTUNE_PORT": str(port)}
            wait_until(lambda: subprocess.run(health, env=health_env).returncode == 0, 120, "attune healthcheck")
            server.wait_ready(120)
            assert httpx.get(f"{server.url}/readyz").json()["personas"] >= 24

            env_ = gymnasium.make("Attune-v0", base_url=server.url)
            observation, info = env_.reset(seed=1)
            observation, reward, terminated, truncated, info = env_.step("That sounds hard. What happened?")
            assert observation and info["turn"] == 1
            episode = env_.unwrapped.episode_id
            # The episode is in the compose Redis, not in the server's memory.
            keys = subprocess.run(
                ["redis-cli", "-p", str(redis_port), "--scan", "--pattern", f"*{episode}*"],
                capture_output=True,
                text=True,
            ).stdout
            assert episode in keys
            env_.close()
        finally:
            server.stop()
