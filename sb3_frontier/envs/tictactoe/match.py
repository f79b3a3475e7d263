"""Matches between an agent and a tic-tac-toe opponent: win, draw and loss counts, per side."""

from __future__ import annotations

from typing import Any

from sb3_frontier.envs.tictactoe.opponents import PlayerFn
from sb3_frontier.envs.tictactoe.vs_opponent import AgentPlays, TicTacToeVsOpponent


def play_match(
    agent_fn: PlayerFn,
    opponent: str | PlayerFn,
    n_games: int,
    agent_plays: AgentPlays = "alternate",
    seed: int | None = 0,
) -> dict[str, Any]:
    """
    Play ``n_games`` games of an agent against an opponent and count the results.

    :param agent_fn: ``(canonical obs [2, 3, 3] for the agent, mask [9]) -> action``
    :param opponent: ``"random"``, ``"minimax"`` (seeded from ``seed``) or a callable of the same form as
        ``agent_fn`` (used as is)
    :param n_games: number of games, >= 1
    :param agent_plays: ``0``, ``1`` or ``"alternate"`` (first in game 0, second in game 1, ...)
    :param seed: seed of the first ``reset`` (and so of an opponent given by name)
    :return: ``wins``, ``draws``, ``losses``, ``n_games``, ``win_rate``, ``draw_rate``, ``loss_rate``,
        ``illegal_moves`` (agent moves off the mask; each counts as a loss), ``mean_reward``, and the same
        counts per side in ``"first"`` and ``"second"`` (dicts with ``wins``, ``draws``, ``losses``, ``games``)
    """
    if n_games < 1:
        raise ValueError(f"n_games must be >= 1, got {n_games}")
    env = TicTacToeVsOpponent(opponent=opponent, agent_plays=agent_plays)
    per_side = {side: {"wins": 0, "draws": 0, "losses": 0, "games": 0} for side in (0, 1)}
    illegal = 0
    total_reward = 0.0
    for game in range(n_games):
        obs, info = env.reset(seed=seed if game == 0 else None)
        terminated, reward = False, 0.0
        while not terminated:
            obs, r, terminated, _, info = env.step(agent_fn(obs, info["action_mask"]))
            reward = float(r)
        counts = per_side[info["agent_plays"]]
        counts["games"] += 1
        counts["wins" if reward > 0 else "losses" if reward < 0 else "draws"] += 1
        illegal += int(info["illegal_move"])
        total_reward += reward
    wins = per_side[0]["wins"] + per_side[1]["wins"]
    draws = per_side[0]["draws"] + per_side[1]["draws"]
    losses = per_side[0]["losses"] + per_side[1]["losses"]
    return {
        "wins": wins,
        "draws": draws,
        "losses": losses,
        "n_games": n_games,
        "win_rate": wins / n_games,
        "draw_rate": draws / n_games,
        "loss_rate": losses / n_games,
        "illegal_moves": illegal,
        "mean_reward": total_reward / n_games,
        "first": per_side[0],
        "second": per_side[1],
    }


__all__ = ["play_match"]
