"""Replace one module's ``sleep`` without touching the ``time``/``asyncio`` modules every thread shares.

Patching ``asyncio.sleep`` itself also reaches the session's server thread: uvicorn's main loop then
spins on a sleep that never yields, and memory grows until the test run is killed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest


class _SleepOverride:
    """Stands in for a module: ``sleep`` is the replacement, every other name is the real module's."""

    def __init__(self, real: ModuleType, sleep: Any) -> None:
        self._real = real
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def patch_sleep(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, sleep: Any) -> None:
    """Make ``module.<name>.sleep`` (``name`` is ``"time"`` or ``"asyncio"``) call ``sleep``, for ``module`` only."""
    monkeypatch.setattr(module, name, _SleepOverride(getattr(module, name), sleep))
