"""Adapters that plug Attune episodes into RL trainers, over :mod:`attune_client.rollout`.

Each lives in its own module and is imported on its own, because each needs its optional extra:

* :mod:`attune_client.integrations.trl`: ``make_rollout_func`` for TRL's ``GRPOTrainer(rollout_func=...)``
  (``pip install "attune-client[trl]"``).
* :mod:`attune_client.integrations.verl`: ``AttuneAgentLoop``, a verl agent loop registered through
  ``actor_rollout_ref.rollout.agent.agent_loop_config_path`` (``attune-client[verl]``).
* :mod:`attune_client.integrations.skyrl`: ``AttuneTextEnv``, a SkyRL-Gym ``BaseTextEnv`` (``attune-client[skyrl]``).

``docs/trainers.md`` shows the configuration lines for each.
"""

from __future__ import annotations

__all__: list[str] = []
