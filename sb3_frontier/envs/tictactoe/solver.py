"""
Perfect play in tic-tac-toe: exact negamax values and the moves a perfect player chooses among.

The search runs on bitboards (see :mod:`~sb3_frontier.envs.tictactoe.game`): ``own`` is the player to move,
``opp`` the other player. Its two recursions, the negamax score and the expected result against a uniformly
random player, are pure functions of the position, memoised with ``functools.cache``: at most 3^9 positions
(5478 are reachable from the empty board), so the caches stay small, and ``cache_clear()`` empties them.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_frontier.envs.tictactoe.env import TicTacToeEnv
from sb3_frontier.envs.tictactoe.game import FULL_BOARD, N_CELLS, empty_cells, has_line, parse_observation


def parse_state(state: Any) -> tuple[int, int]:
    """
    Bitboards (own, opponent) of a canonical position, validated.

    :param state: a :class:`TicTacToeEnv` (or a wrapper of one; seen from its player to move) or a canonical
        observation ``[2, 3, 3]`` / ``[18]`` whose plane 0 belongs to the player to move
    :return: ``(own, opp)``, 9-bit integers with bit ``i`` set where that player has a stone on cell ``i``
    """
    if isinstance(state, gym.Env):
        game = state.unwrapped
        if not isinstance(game, TicTacToeEnv):
            raise TypeError(f"Expected a TicTacToeEnv (or a wrapper of one), got {type(game).__name__}")
        state = game.observation()
    return parse_observation(state)


@functools.cache
def _score(own: int, opp: int) -> int:
    """
    Negamax score of a position for the player to move, with a preference for quick wins and slow losses.

    Terminal positions: the player who just moved (``opp``) has a line -> ``-(1 + number of empty cells)``;
    full board -> ``0``. Otherwise ``max over moves m of -score(child after m)``. The sign is the game value
    (+1 win, 0 draw, -1 loss under perfect play); the magnitude is larger for wins that come sooner.

    :param own: bitboard of the player to move
    :param opp: bitboard of the other player
    :return: integer score in [-5, 5]
    """
    if has_line(opp):
        return -(1 + N_CELLS - (own | opp).bit_count())
    if own | opp == FULL_BOARD:
        return 0
    return max(-_score(opp, own | (1 << i)) for i in empty_cells(own, opp))


@functools.cache
def _vs_random(own: int, opp: int) -> Fraction:
    """
    Expected result for the perfect player to move (``own``) against a uniformly random player (``opp``).

    The perfect player picks, among the moves that keep the game value, one that maximises this expectation
    (the first two keys of :func:`_move_keys`); the random player picks uniformly among the empty cells.

    :param own: bitboard of the perfect player, to move
    :param opp: bitboard of the random player
    :return: exact expectation in [-1, 1] of the result (+1 win, 0 draw, -1 loss)
    """
    if has_line(opp):
        return Fraction(-1)
    if own | opp == FULL_BOARD:
        return Fraction(0)
    keys = _move_keys(own, opp)
    value = max(k[0] for k in keys.values())
    return max(k[1] for k in keys.values() if k[0] == value)


def _random_to_move(perfect: int, rand: int) -> Fraction:
    """
    Expected result for the perfect player, who has just moved, with the random player to move.

    :param perfect: bitboard of the perfect player
    :param rand: bitboard of the random player, to move
    :return: exact expectation in [-1, 1] of the result for the perfect player
    """
    if has_line(perfect):
        return Fraction(1)
    if perfect | rand == FULL_BOARD:
        return Fraction(0)
    replies = empty_cells(perfect, rand)
    return sum((_vs_random(perfect, rand | (1 << i)) for i in replies), Fraction(0)) / len(replies)


def _move_keys(own: int, opp: int) -> dict[int, tuple[int, Fraction, int]]:
    """
    Ranking key of each legal move for the player to move (empty dict if the game is over).

    Key ``(game value, expected result against a uniformly random player, negamax score)``: a perfect player
    keeps the game value, then gives a random opponent the most chances to err, then wins as fast (or loses
    as slowly) as it can. Lexicographic order; the best keys are the optimal moves.

    :param own: bitboard of the player to move
    :param opp: bitboard of the other player
    :return: move -> key, for every empty cell
    """
    if has_line(opp):
        return {}
    keys = {}
    for i in empty_cells(own, opp):
        score = -_score(opp, own | (1 << i))
        keys[i] = (int(np.sign(score)), _random_to_move(own | (1 << i), opp), score)
    return keys


def minimax_value(state: Any) -> int:
    """
    Game-theoretic value of a position for the player to move (negamax, exact).

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :return: ``+1`` (the player to move wins with perfect play), ``0`` (draw) or ``-1`` (loses); a finished
        game gives its result: ``-1`` if the other player has just completed a line, ``0`` on a full board
    """
    own, opp = parse_state(state)
    return int(np.sign(_score(own, opp)))


def minimax_action_values(state: Any) -> np.ndarray:
    """
    Game-theoretic value of each move for the player to move.

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :return: float64 [9]: ``+1``/``0``/``-1`` for the mover after each legal move under perfect play from
        there, ``nan`` for occupied cells (and everywhere once the game is over)
    """
    own, opp = parse_state(state)
    values = np.full(N_CELLS, np.nan)
    for action, key in _move_keys(own, opp).items():
        values[action] = key[0]
    return values


def minimax_optimal_actions(state: Any) -> np.ndarray:
    """
    The moves a perfect player chooses among.

    Ranked lexicographically by: (1) the game value after the move (negamax, exact); (2) the expected result
    against a uniformly random player, the perfect player going on the same way (so that among moves of equal
    value it picks those that give a weak opponent the most chances to err: against a random player it wins
    about 99.5% of the games as first player and 91.6% as second, instead of 80.6% as second when it
    picks the first drawing move); (3) the quickest win or the slowest loss. All returned moves tie on all
    three keys.

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :return: int64 [n], sorted ascending, ``n >= 1`` (empty once the game is over)
    """
    own, opp = parse_state(state)
    keys = _move_keys(own, opp)
    if not keys:
        return np.zeros(0, dtype=np.int64)
    best = max(keys.values())
    return np.array(sorted(a for a, k in keys.items() if k == best), dtype=np.int64)


__all__ = ["minimax_action_values", "minimax_optimal_actions", "minimax_value", "parse_state"]
