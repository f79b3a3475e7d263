"""Single-agent tic-tac-toe: the agent plays one side, a fixed opponent the other."""

from __future__ import annotations

from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_frontier.envs.tictactoe.env import TicTacToeEnv
from sb3_frontier.envs.tictactoe.game import (
    N_CELLS,
    SYMBOLS,
    board_image,
    canonical_observation,
    observation_space,
    render_board,
)
from sb3_frontier.envs.tictactoe.opponents import PlayerFn, make_opponent

#: The agent's side: ``0`` (first), ``1`` (second) or ``"alternate"``.
AgentPlays = int | Literal["alternate"]


class TicTacToeVsOpponent(gym.Env[np.ndarray, np.int64]):
    """
    Single-agent tic-tac-toe: the agent plays one side, a fixed opponent plays the other inside ``step``/``reset``.

    - Observation: float32 ``[2, 3, 3]`` from the agent's side (plane 0 the agent's stones), as in
      :class:`TicTacToeEnv`; ``info["action_mask"]`` / :meth:`action_masks` are the agent's legal moves.
    - Reward from the agent's side, at the end of the game: ``+1`` win, ``-1`` loss, ``0`` draw. An illegal
      agent move ends the game with ``-1`` and ``info["illegal_move"] = True``. An illegal opponent move
      raises ``RuntimeError`` (a broken opponent, not a game event).
    - When the agent plays second, the opponent's first move is made in ``reset``.
    - Info: ``"action_mask"``, ``"to_play"`` (the agent's side while the game runs), ``"agent_plays"``,
      ``"illegal_move"``, ``"opponent_action"`` (only when the opponent has just moved), and ``"winner"``
      (``0``/``1``/``-1`` draw) at the end.

    :param opponent: ``"random"``, ``"minimax"`` (perfect, random tie-breaks) or a callable
        ``(canonical obs for the opponent, mask) -> action`` (used as is: seed it yourself)
    :param agent_plays: ``0`` (agent moves first), ``1`` (second) or ``"alternate"``: first in the first game
        after a seeded ``reset`` (or after construction), then switching at each ``reset``;
        ``reset(options={"agent_plays": 0 | 1})`` sets the side of one game without changing the schedule
    :param render_mode: ``"ansi"``, ``"rgb_array"`` or ``None``
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 1}

    def __init__(
        self, opponent: str | PlayerFn = "random", agent_plays: AgentPlays = "alternate", render_mode: str | None = None
    ) -> None:
        if agent_plays not in (0, 1, "alternate") or isinstance(agent_plays, bool):
            raise ValueError(f"agent_plays must be 0, 1 or 'alternate', got {agent_plays!r}")
        if not callable(opponent) and opponent not in ("random", "minimax"):
            raise ValueError(f"Unknown opponent {opponent!r}: use 'random', 'minimax' or a callable (obs, mask) -> action")
        self.game = TicTacToeEnv(render_mode=render_mode)
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = spaces.Discrete(N_CELLS)
        self.opponent_spec = opponent
        self.agent_plays_spec = agent_plays
        self.opponent: PlayerFn | None = opponent if callable(opponent) else None
        self.agent_side = 0
        self._n_resets = 0  # games started since the last seeded reset (drives "alternate")

    def action_masks(self) -> np.ndarray:
        """
        The agent's legal moves (sb3-contrib's ``MaskablePPO`` convention).

        :return: bool [9], True = legal; all ``False`` once the game is over
        """
        return self.game.action_masks()

    def _observation(self) -> np.ndarray:
        return canonical_observation(self.game.board, self.agent_side)

    def _info(self, illegal_move: bool = False, opponent_action: int | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "action_mask": self.game.action_masks(),
            "to_play": self.game.to_play,
            "agent_plays": self.agent_side,
            "illegal_move": illegal_move,
        }
        if opponent_action is not None:
            info["opponent_action"] = opponent_action
        if self.game.game_over:
            info["winner"] = -1 if self.game.winner is None else self.game.winner
        return info

    def _opponent_move(self) -> tuple[int, float, bool]:
        """Let the opponent move; return (its action, its reward, terminated)."""
        assert self.opponent is not None
        obs = self.game.observation()
        action = int(self.opponent(obs, self.game.action_masks()))
        if not (0 <= action < N_CELLS) or self.game.board[action] != 0:
            raise RuntimeError(
                f"The opponent played an illegal move {action} on\n{render_board(self.game.board, self.game.to_play)}"
            )
        _, reward, terminated, _, _ = self.game.step(action)
        return action, float(reward), terminated

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Start a new game; if the agent plays second, the opponent makes its first move here.

        :param seed: seeds the env's generator, from which an opponent given by name is seeded; a seeded reset
            also restarts the ``"alternate"`` schedule (agent first)
        :param options: ``{"agent_plays": 0 | 1}`` to set the agent's side for this game only
        :return: observation (agent's side) and info
        """
        super().reset(seed=seed)
        if seed is not None:
            self._n_resets = 0
        if self.opponent is None or (seed is not None and not callable(self.opponent_spec)):
            self.opponent = make_opponent(self.opponent_spec, int(self.np_random.integers(2**31)))
        if options is not None and "agent_plays" in options:
            side = options["agent_plays"]
            if side not in (0, 1) or isinstance(side, bool):
                raise ValueError(f"options['agent_plays'] must be 0 or 1, got {side!r}")
            self.agent_side = int(side)
        elif self.agent_plays_spec == "alternate":
            self.agent_side = self._n_resets % 2
        else:
            self.agent_side = int(self.agent_plays_spec)
        self._n_resets += 1
        self.game.reset(seed=seed)
        opponent_action = None
        if self.agent_side == 1:
            opponent_action, _, _ = self._opponent_move()
        return self._observation(), self._info(opponent_action=opponent_action)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """
        Play the agent's move, then the opponent's reply unless the game is over.

        :param action: cell ``0..8``
        :return: observation (agent's side), reward for the agent, terminated, truncated, info
        """
        if self.game.game_over:
            raise RuntimeError("The game is over: call reset() before step()")
        _, reward, terminated, _, info = self.game.step(action)
        if terminated:
            return self._observation(), float(reward), True, False, self._info(illegal_move=bool(info["illegal_move"]))
        opponent_action, opponent_reward, terminated = self._opponent_move()
        return self._observation(), -opponent_reward, terminated, False, self._info(opponent_action=opponent_action)

    def render(self) -> str | np.ndarray | None:  # type: ignore[override]
        """
        The board as text, with the agent's side, or as an image.

        :return: the text for ``render_mode="ansi"``, an RGB array for ``"rgb_array"``, else ``None``
        """
        if self.render_mode == "rgb_array":
            return board_image(self.game.board)
        if self.render_mode != "ansi":
            return None
        text = render_board(self.game.board, self.game.to_play, self.game.winner, self.game.game_over)
        return text + f"agent plays {SYMBOLS[self.agent_side + 1]}\n"


__all__ = ["AgentPlays", "TicTacToeVsOpponent"]
