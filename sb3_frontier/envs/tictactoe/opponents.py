"""Tic-tac-toe opponents: a uniformly random player and a perfect (minimax) player, as functions and callables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_frontier.envs.tictactoe.env import TicTacToeEnv
from sb3_frontier.envs.tictactoe.game import N_CELLS, bits_to_mask, has_line
from sb3_frontier.envs.tictactoe.solver import minimax_optimal_actions, parse_state

#: What an opponent (or an agent in :func:`~sb3_frontier.envs.tictactoe.match.play_match`) is:
#: ``(canonical obs [2, 3, 3], mask [9]) -> action``.
PlayerFn = Callable[[np.ndarray, np.ndarray], int]


def check_mask(mask: np.ndarray | None, legal: np.ndarray) -> np.ndarray:
    """
    Validate a given action mask against the legal moves of the position.

    :param mask: bool [9] given by the caller, or ``None``
    :param legal: bool [9], the legal moves of the position
    :return: the legal moves
    """
    if mask is None:
        return legal
    mask = np.asarray(mask)
    if mask.shape != (N_CELLS,):
        raise ValueError(f"Action mask must have shape (9,), got {mask.shape}")
    if not np.array_equal(mask.astype(bool), legal):
        raise ValueError(
            f"Action mask {mask.astype(int).tolist()} does not match the empty cells {legal.astype(int).tolist()}"
        )
    return legal


def _legal_mask(state: Any) -> np.ndarray:
    """
    Legal moves of a position.

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :return: bool [9], True = legal; all ``False`` once the game is over
    """
    if isinstance(state, gym.Env) and isinstance(state.unwrapped, TicTacToeEnv):
        return state.unwrapped.action_masks()
    own, opp = parse_state(state)
    if has_line(opp):
        return np.zeros(N_CELLS, dtype=bool)
    return ~bits_to_mask(own | opp)


def random_opponent(state: Any, mask: np.ndarray | None, rng: np.random.Generator) -> int:
    """
    A uniformly random legal move.

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :param mask: bool [9], True = legal; must agree with the board (``None``: read it from the board)
    :param rng: random generator to draw the move with
    :return: the chosen cell, ``0..8``
    """
    legal = check_mask(mask, _legal_mask(state))
    if not legal.any():
        raise ValueError("No legal move: the game is over")
    return int(rng.choice(np.flatnonzero(legal)))


def minimax_opponent(state: Any, mask: np.ndarray | None = None, rng: np.random.Generator | None = None) -> int:
    """
    A perfect move (see :func:`minimax_optimal_actions` for how moves of equal value are ranked): never loses.

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :param mask: bool [9], True = legal; must agree with the board (``None``: read it from the board)
    :param rng: ``None``: the lowest-numbered optimal move (deterministic); a generator: uniform among the
        optimal moves
    :return: the chosen cell, ``0..8``
    """
    check_mask(mask, _legal_mask(state))
    optimal = minimax_optimal_actions(state)
    if optimal.size == 0:
        raise ValueError("No legal move: the game is over")
    if rng is None:
        return int(optimal[0])
    return int(rng.choice(optimal))


class RandomOpponent:
    """
    Player that picks a uniformly random legal move.

    :param seed: seed (or generator) of its random moves
    """

    def __init__(self, seed: int | np.random.Generator | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, env_or_state: Any, mask: np.ndarray | None = None) -> int:
        """
        Choose a move.

        :param env_or_state: a :class:`TicTacToeEnv` or a canonical observation (plane 0 = player to move)
        :param mask: bool [9], True = legal (``None``: read it from the board)
        :return: the chosen cell, ``0..8``
        """
        return random_opponent(env_or_state, mask, self.rng)


class MinimaxOpponent:
    """
    Perfect player: negamax over all positions (memoised); ties ranked as in :func:`minimax_optimal_actions`.

    Moves that tie on all ranking keys are chosen between deterministically (the lowest-numbered cell) when
    ``seed`` is ``None``, and uniformly at random with a generator seeded by ``seed`` otherwise.

    :param seed: ``None`` for deterministic tie-breaking, else the seed (or generator) of the random tie-breaks
    """

    def __init__(self, seed: int | np.random.Generator | None = None) -> None:
        self.rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self, env_or_state: Any, mask: np.ndarray | None = None) -> int:
        """
        Choose a move.

        :param env_or_state: a :class:`TicTacToeEnv` or a canonical observation (plane 0 = player to move)
        :param mask: bool [9], True = legal (``None``: read it from the board)
        :return: the chosen cell, ``0..8``
        """
        return minimax_opponent(env_or_state, mask, self.rng)


def make_opponent(opponent: str | PlayerFn, seed: int | None = None) -> PlayerFn:
    """
    An opponent from its name, or the callable itself.

    :param opponent: ``"random"`` (:class:`RandomOpponent`), ``"minimax"`` (:class:`MinimaxOpponent` with
        random tie-breaks) or a callable ``(canonical obs, mask) -> action``, returned as is
    :param seed: seed of the opponents built from a name
    :return: the opponent
    """
    if callable(opponent):
        return opponent
    if opponent == "random":
        return RandomOpponent(seed)
    if opponent == "minimax":
        return MinimaxOpponent(np.random.default_rng(seed))
    raise ValueError(f"Unknown opponent {opponent!r}: use 'random', 'minimax' or a callable (obs, mask) -> action")


__all__ = ["MinimaxOpponent", "PlayerFn", "RandomOpponent", "make_opponent", "minimax_opponent", "random_opponent"]
