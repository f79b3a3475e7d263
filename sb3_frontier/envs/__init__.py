"""Environments we register with gymnasium: MinAtar's games (when installed) and our small board games."""

from __future__ import annotations

import importlib.util

import gymnasium as gym


def register_envs() -> list[str]:
    """
    Register the environments the zoo configs refer to. Safe to call more than once.

    - ``MinAtar/<Game>-v0|v1`` from the ``minatar`` package (if installed; it ships a registration
      function but does not call it on import);
    - ``sb3_frontier/TicTacToe-v0`` (self-play of both sides, for MuZero's two-player mode) and the single-agent
      views ``sb3_frontier/TicTacToeVsRandom-v0`` and ``sb3_frontier/TicTacToeVsMinimax-v0``.

    :return: ids that are registered after the call (those this function is responsible for)
    """
    ids: list[str] = []
    if importlib.util.find_spec("minatar") is not None:
        if "MinAtar/Breakout-v1" not in gym.registry:
            import minatar.gym

            minatar.gym.register_envs()
        ids += [env_id for env_id in gym.registry if env_id.startswith("MinAtar/")]
    tictactoe = {
        "sb3_frontier/TicTacToe-v0": ("sb3_frontier.envs.tictactoe:TicTacToeEnv", {}),
        "sb3_frontier/TicTacToeVsRandom-v0": ("sb3_frontier.envs.tictactoe:TicTacToeVsOpponent", {"opponent": "random"}),
        "sb3_frontier/TicTacToeVsMinimax-v0": ("sb3_frontier.envs.tictactoe:TicTacToeVsOpponent", {"opponent": "minimax"}),
    }
    for env_id, (entry_point, kwargs) in tictactoe.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)
    ids += list(tictactoe)
    return ids


__all__ = ["register_envs"]
