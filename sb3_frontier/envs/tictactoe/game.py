"""
Tic-tac-toe rules: boards and bitboards, lines, canonical observations and their validation, rendering.

Two representations of a position. A *board* is an int8 array ``[9]`` (``0`` empty, ``1`` a stone of player
0, ``2`` a stone of player 1), row-major; the envs keep their state in one. A *bitboard* is a 9-bit integer,
bit ``i`` set where a player has a stone on cell ``i``; the solver works on pairs ``(own, opp)`` of
bitboards, own being the player to move. Conventions shared by the package are listed in
:mod:`sb3_frontier.envs.tictactoe`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

N_CELLS = 9
#: The 8 winning lines (3 rows, 3 columns, 2 diagonals) as row-major cell indices.
WIN_LINES: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2),
    (3, 4, 5),
    (6, 7, 8),
    (0, 3, 6),
    (1, 4, 7),
    (2, 5, 8),
    (0, 4, 8),
    (2, 4, 6),
)
#: The winning lines as bitboards.
LINE_BITS: tuple[int, ...] = tuple(sum(1 << c for c in line) for line in WIN_LINES)
#: The bitboard of a full board.
FULL_BOARD = (1 << N_CELLS) - 1
#: Board cell value -> text: empty, player 0, player 1.
SYMBOLS = (".", "X", "O")


def line_winner(board: np.ndarray) -> int | None:
    """
    Player who owns a full line on a board, if any.

    :param board: int8 [9], 0 empty, 1 player 0, 2 player 1
    :return: ``0`` or ``1`` for the player with a full line, ``None`` if there is none
    """
    for a, b, c in WIN_LINES:
        if board[a] != 0 and board[a] == board[b] == board[c]:
            return int(board[a]) - 1
    return None


def canonical_observation(board: np.ndarray, player: int) -> np.ndarray:
    """
    Observation of a board from the side of ``player``.

    :param board: int8 [9], 0 empty, 1 player 0, 2 player 1
    :param player: ``0`` or ``1``, whose view it is
    :return: float32 [2, 3, 3]; plane 0 = stones of ``player``, plane 1 = stones of the other player
    """
    obs = np.zeros((2, N_CELLS), dtype=np.float32)
    obs[0] = board == player + 1
    obs[1] = board == 2 - player
    return obs.reshape(2, 3, 3)


def parse_observation(observation: Any) -> tuple[int, int]:
    """
    Bitboards (own, opponent) of a canonical observation, validated.

    :param observation: a canonical observation ``[2, 3, 3]`` / ``[18]`` whose plane 0 belongs to the player to move
    :return: ``(own, opp)``, 9-bit integers with bit ``i`` set where that player has a stone on cell ``i``
    """
    obs = np.asarray(observation)
    if obs.size != 2 * N_CELLS:
        raise ValueError(f"A canonical tic-tac-toe observation has 18 entries ([2, 3, 3]), got shape {obs.shape}")
    planes = obs.reshape(2, N_CELLS)
    if not np.all((planes == 0) | (planes == 1)):
        raise ValueError("Canonical observation entries must be 0 or 1")
    if np.any((planes[0] == 1) & (planes[1] == 1)):
        raise ValueError("A cell holds stones of both players")
    own = sum(1 << i for i in range(N_CELLS) if planes[0, i] == 1)
    opp = sum(1 << i for i in range(N_CELLS) if planes[1, i] == 1)
    n_own, n_opp = own.bit_count(), opp.bit_count()
    if n_opp not in (n_own, n_own + 1):
        raise ValueError(
            f"Not a position with the player to move in plane 0: the player to move has {n_own} stones and the "
            f"other player {n_opp} (expected equal counts, or one more for the other player)"
        )
    if has_line(own):
        raise ValueError("The player to move already has a full line: the game ended before this position")
    return own, opp


def has_line(bits: int) -> bool:
    """
    Whether a bitboard holds a full line.

    :param bits: 9-bit bitboard of one player
    :return: True if one of the 8 lines is full
    """
    return any(bits & line == line for line in LINE_BITS)


def bits_to_mask(bits: int) -> np.ndarray:
    """
    A bitboard as a bool mask.

    :param bits: 9-bit bitboard
    :return: bool [9], True where the bit is set
    """
    return np.array([(bits >> i) & 1 == 1 for i in range(N_CELLS)], dtype=bool)


def empty_cells(own: int, opp: int) -> list[int]:
    """
    The empty cells of a position.

    :param own: bitboard of one player
    :param opp: bitboard of the other player
    :return: the cells set in neither, ascending
    """
    occupied = own | opp
    return [i for i in range(N_CELLS) if not (occupied >> i) & 1]


def observation_space() -> spaces.Box:
    """
    Space of the canonical observations.

    :return: float32 Box ``[2, 3, 3]`` in [0, 1]
    """
    return spaces.Box(low=0.0, high=1.0, shape=(2, 3, 3), dtype=np.float32)


def board_image(board: np.ndarray, cell: int = 16) -> np.ndarray:
    """
    The board as an RGB image (red X = player 0, blue O = player 1, grey = empty, black grid lines).

    :param board: int8 [9], 0 empty, 1 player 0, 2 player 1
    :param cell: pixels per cell side
    :return: uint8 [3 * cell, 3 * cell, 3]
    """
    colours = np.array([[200, 200, 200], [220, 40, 40], [40, 80, 220]], dtype=np.uint8)
    cells = colours[np.asarray(board, dtype=np.int64).reshape(3, 3)]  # [3, 3, 3]
    image = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
    image[::cell, :] = 0
    image[:, ::cell] = 0
    return image


def render_board(board: np.ndarray, to_play: int, winner: int | None = None, game_over: bool = False) -> str:
    """
    Text picture of a board.

    :param board: int8 [9], 0 empty, 1 player 0 (``X``), 2 player 1 (``O``)
    :param to_play: player to move
    :param winner: winner, if the game is over and won
    :param game_over: whether the game is over
    :return: three rows of cells and a status line
    """
    rows = [" ".join(SYMBOLS[int(v)] for v in board[3 * r : 3 * r + 3]) for r in range(3)]
    if not game_over:
        status = f"{SYMBOLS[to_play + 1]} to play"
    elif winner is None:
        status = "draw"
    else:
        status = f"{SYMBOLS[winner + 1]} wins"
    return "\n".join([*rows, status]) + "\n"


__all__ = [
    "FULL_BOARD",
    "LINE_BITS",
    "N_CELLS",
    "SYMBOLS",
    "WIN_LINES",
    "bits_to_mask",
    "board_image",
    "canonical_observation",
    "empty_cells",
    "has_line",
    "line_winner",
    "observation_space",
    "parse_observation",
    "render_board",
]
