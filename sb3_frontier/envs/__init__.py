"""Environments we register with gymnasium: our small board games (on import), MinAtar's games and a multi-task set of
them (on request)."""

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

#: Entry point of multi-task ids: :class:`sb3_frontier.envs.multitask.MultiTaskEnv` (one game, ``task=k``, in the set's
#: common spaces), as a string so that registering imports nothing.
MULTITASK_ENTRY_POINT = "sb3_frontier.envs.multitask:MultiTaskEnv"

#: Multi-task sets of MinAtar games, id -> games (one per task); registered with MinAtar's games, with the entry point
#: :data:`MULTITASK_ENTRY_POINT`. ``sb3-frontier train`` trains on all the games of such an id at once
#: (:mod:`sb3_frontier.zoo.multitask`).
MINATAR_MULTITASK_ENVS: dict[str, tuple[str, ...]] = {
    "sb3_frontier/MinAtarMultiTask-v0": ("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Asterix-v1"),
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
    - with them, the multi-task sets of :data:`MINATAR_MULTITASK_ENVS` (``sb3_frontier/MinAtarMultiTask-v0``:
      Breakout, Space Invaders and Asterix; ``gym.make(id, task=k)`` plays game ``k``);
    - our own environments, see :func:`register_own_envs`.

    :return: ids that are registered after the call (those this function is responsible for)
    """
    ids: list[str] = []
    if importlib.util.find_spec("minatar") is not None:
        if "MinAtar/Breakout-v1" not in gym.registry:
            import minatar.gym

            minatar.gym.register_envs()
        ids += [env_id for env_id in gym.registry if env_id.startswith("MinAtar/")]
        for env_id, games in MINATAR_MULTITASK_ENVS.items():
            if env_id not in gym.registry:
                gym.register(id=env_id, entry_point=MULTITASK_ENTRY_POINT, kwargs={"env_ids": games})
        ids += list(MINATAR_MULTITASK_ENVS)
    return ids + register_own_envs()


__all__ = ["MINATAR_MULTITASK_ENVS", "MULTITASK_ENTRY_POINT", "OWN_ENVS", "register_envs", "register_own_envs"]
