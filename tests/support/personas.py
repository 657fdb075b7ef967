"""A minimal valid persona for tests that need one but not its text."""

from __future__ import annotations

from typing import Any

from env_server.personas.schema import Persona

REACTIONS = {"high": "a", "medium": "b", "low": "c", "fit": "d", "miss": "e"}


def minimal_persona(**fields: Any) -> Persona:
    """A vent persona with placeholder text; ``fields`` override any field."""
    base = {
        "id": "p1",
        "name": "P",
        "profile": "x",
        "background": "y",
        "hidden_intention": "z",
        "intention_type": "vent",
        "reactions": REACTIONS,
    }
    return Persona(**{**base, **fields})
