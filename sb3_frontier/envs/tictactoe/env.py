"""Self-play tic-tac-toe env: both players' moves go through ``step`` (MuZero's board-game setting)."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_frontier.envs.tictactoe.game import (
    N_CELLS,
    board_image,
    canonical_observation,
    line_winner,
    observation_space,
    render_board,
)


class TicTacToeEnv(gym.Env[np.ndarray, np.int64]):
    """
    Self-play tic-tac-toe: both players' moves go through :meth:`step` (MuZero's board-game setting).

    - Observation: float32 ``[2, 3, 3]`` from the side of the player to move (plane 0 its stones, plane 1 the
      other player's), so it flips at every ply.
    - Action: ``Discrete(9)``, row-major cells.
    - Reward: to the player who made the move: ``+1`` when the move completes a line, else ``0`` (a draw
      is ``0``). In MuZero's terms the value target of a position is the final outcome for its player to
      move, and the search's discount is ``-1`` per ply.
    - ``terminated=True`` at a win or a full board; never truncated (a game lasts at most 9 plies).
    - Illegal move (an occupied cell): the game ends there, ``terminated=True``, reward ``-1`` for the mover,
      ``info["illegal_move"] = True``, the board is left unchanged and the other player is the winner. An
      agent that respects the mask never triggers it.
    - Info, after ``reset`` and every ``step``: ``"action_mask"`` (bool [9], True = legal, all ``False`` once
      the game is over; also :meth:`action_masks`), ``"to_play"`` (the player to move after the step; it
      alternates at every ply, terminal step included, so the last observation is seen from the side of the
      player who did not make the last move), ``"illegal_move"`` (bool). At the end, ``"winner"``: ``0`` or
      ``1``, or ``-1`` for a draw.
    - Deterministic: ``reset`` always gives the empty board with player 0 to move; the seed is accepted for
      the gymnasium API only.

    State, for opponents and tests: :attr:`board` (int8 [9]: 0 empty, 1 player 0, 2 player 1),
    :attr:`to_play`, :attr:`winner` (``None`` while the game runs).

    :param render_mode: ``"ansi"`` (``render()`` returns the board as text), ``"rgb_array"`` (an image) or ``None``
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 1}

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"Unsupported render_mode {render_mode!r}; supported: {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = spaces.Discrete(N_CELLS)
        self.board = np.zeros(N_CELLS, dtype=np.int8)
        self.to_play = 0
        self.winner: int | None = None
        self.game_over = False

    def observation(self) -> np.ndarray:
        """
        Canonical observation of the current position.

        :return: float32 [2, 3, 3] seen from :attr:`to_play`
        """
        return canonical_observation(self.board, self.to_play)

    def action_masks(self) -> np.ndarray:
        """
        Legal moves (sb3-contrib's ``MaskablePPO`` convention).

        :return: bool [9], True = legal; all ``False`` once the game is over
        """
        if self.game_over:
            return np.zeros(N_CELLS, dtype=bool)
        return self.board == 0

    def _info(self, illegal_move: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = {"action_mask": self.action_masks(), "to_play": self.to_play, "illegal_move": illegal_move}
        if self.game_over:
            info["winner"] = -1 if self.winner is None else self.winner
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Start a new game: empty board, player 0 to move.

        :param seed: accepted for the gymnasium API; the game itself has no randomness
        :param options: unused
        :return: observation and info
        """
        super().reset(seed=seed)
        self.board = np.zeros(N_CELLS, dtype=np.int8)
        self.to_play = 0
        self.winner = None
        self.game_over = False
        return self.observation(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """
        Play ``action`` for the player to move.

        :param action: cell ``0..8``
        :return: observation (for the next player to move), reward for the mover, terminated, truncated, info
        """
        if self.game_over:
            raise RuntimeError("The game is over: call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"Action must be an integer in [0, 8], got {action!r}")
        action = int(action)
        mover = self.to_play
        self.to_play = 1 - mover
        if self.board[action] != 0:
            self.game_over = True
            self.winner = 1 - mover
            return self.observation(), -1.0, True, False, self._info(illegal_move=True)
        self.board[action] = mover + 1
        reward = 0.0
        if line_winner(self.board) == mover:
            self.game_over = True
            self.winner = mover
            reward = 1.0
        elif not (self.board == 0).any():
            self.game_over = True
        return self.observation(), reward, self.game_over, False, self._info()

    def render(self) -> str | np.ndarray | None:  # type: ignore[override]
        """
        The board as text (``X`` player 0, ``O`` player 1, ``.`` empty) and whose move it is, or as an image.

        :return: the text for ``render_mode="ansi"``, an RGB array for ``"rgb_array"``, else ``None``
        """
        if self.render_mode == "rgb_array":
            return board_image(self.board)
        if self.render_mode != "ansi":
            return None
        return render_board(self.board, self.to_play, self.winner, self.game_over)


__all__ = ["TicTacToeEnv"]
