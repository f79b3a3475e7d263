"""Environments we register with gymnasium: our small board games (on import) and MinAtar's games (on request)."""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym

#: Our own environments, id -> (entry point, kwargs). The entry points are strings, so registering imports nothing.
OWN_ENVS: dict[str, tuple[str, dict[str, Any]]] = {
    "sb3_frontier/TicTacToe-v0": ("sb3_frontier.envs.tictactoe:TicTacToeEnv", {}),
    "sb3_frontier/TicTacToeVsRandom-v0": ("sb3_frontier.envs.tictactoe:TicTacToeVsOpponent", {"opponent": "random"}),
    "sb3_frontier/TicTacToeVsMinimax-v0": ("sb3_frontier.envs.tictactoe:TicTacToeVsOpponent", {"opponent": "minimax"}),
    "sb3_frontier/CueMemory-v0": ("sb3_frontier.envs.memory:CueMemory", {"delay": 30}),
}


def register_own_envs() -> list[str]:
    """
    Register our own environments with gymnasium; ``import sb3_frontier`` calls it, as gymnasium's conventions ask.

    - ``sb3_frontier/TicTacToe-v0``: self-play of both sides, for MuZero's two-player mode;
    - ``sb3_frontier/TicTacToeVsRandom-v0`` and ``sb3_frontier/TicTacToeVsMinimax-v0``: the single-agent views;
    - ``sb3_frontier/CueMemory-v0``: recall a cue after 30 blank steps (a memory test for recurrent agents).

    Cheap (the entry points are only imported by ``gym.make``) and safe to call more than once: ids already
    registered are left as they are.

    :return: the ids of our own environments
    """
    for env_id, (entry_point, kwargs) in OWN_ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)
    return list(OWN_ENVS)


def register_envs() -> list[str]:
    """
    Register the environments the zoo configs refer to. Safe to call more than once.

    - ``MinAtar/<Game>-v0|v1`` from the ``minatar`` package (if installed; it ships a registration
      function but does not call it on import, and importing it is not free, hence not done on our import);
    - our own environments, see :func:`register_own_envs`.

    :return: ids that are registered after the call (those this function is responsible for)
    """
    ids: list[str] = []
    if importlib.util.find_spec("minatar") is not None:
        if "MinAtar/Breakout-v1" not in gym.registry:
            import minatar.gym

            minatar.gym.register_envs()
        ids += [env_id for env_id in gym.registry if env_id.startswith("MinAtar/")]
    return ids + register_own_envs()


__all__ = ["OWN_ENVS", "register_envs", "register_own_envs"]
