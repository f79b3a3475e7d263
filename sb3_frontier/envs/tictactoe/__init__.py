"""
Tic-tac-toe for MuZero's board-game mode: a self-play env, perfect and random opponents, a single-agent view.

MuZero (Schrittwieser et al. 2020) plays board games by self-play: one agent plays both sides, intermediate
rewards are zero, the value target is the final outcome from the perspective of the player to move, and the
search flips perspective at every ply (discount -1 per ply). :class:`TicTacToeEnv` is that setting: both
players' moves go through ``step``, every observation is seen from the side of the player to move, and the
reward of a step goes to the player who made it. For evaluation, :class:`MinimaxOpponent` plays perfectly
(negamax over all positions, memoised), :class:`RandomOpponent` plays uniformly among legal moves,
:class:`TicTacToeVsOpponent` turns the game into a single-agent env against either, and :func:`play_match`
counts the results of an agent against an opponent.

Conventions shared by everything in this package:

- Cells and actions are numbered row-major, ``action = 3 * row + col`` (``Discrete(9)``).
- Player ``0`` moves first (``X``), player ``1`` second (``O``).
- The observation is *canonical*, a float32 array ``[2, 3, 3]`` in ``{0, 1}``: plane 0 holds the stones of the
  player the observation is for (the player to move in the self-play env, the agent in the single-agent
  view), plane 1 the stones of the other player. Channel-first, so a CNN can take it as a 2-channel 3x3
  "image"; float32 in [0, 1] so that SB3 does not mistake it for a uint8 image to divide by 255. MLP
  policies flatten it (18 inputs).
- Masks are bool ``[9]`` with ``True`` = legal (sb3-contrib's ``MaskablePPO`` convention, read by our MuZero
  from ``info["action_mask"]``); mctx's ``invalid_actions`` is the negation. Once the game is over no move is
  legal and the mask is all ``False``.

One module per idea:

- :mod:`~sb3_frontier.envs.tictactoe.game`: rules, boards and bitboards, canonical observations, rendering;
- :mod:`~sb3_frontier.envs.tictactoe.env`: :class:`TicTacToeEnv`, the self-play env;
- :mod:`~sb3_frontier.envs.tictactoe.solver`: perfect play (:func:`minimax_value` and friends);
- :mod:`~sb3_frontier.envs.tictactoe.opponents`: random and perfect opponents;
- :mod:`~sb3_frontier.envs.tictactoe.vs_opponent`: :class:`TicTacToeVsOpponent`, the single-agent view;
- :mod:`~sb3_frontier.envs.tictactoe.match`: :func:`play_match`.
"""

from sb3_frontier.envs.tictactoe.env import TicTacToeEnv
from sb3_frontier.envs.tictactoe.game import N_CELLS, WIN_LINES, board_image, canonical_observation, line_winner, render_board
from sb3_frontier.envs.tictactoe.match import play_match
from sb3_frontier.envs.tictactoe.opponents import (
    MinimaxOpponent,
    PlayerFn,
    RandomOpponent,
    make_opponent,
    minimax_opponent,
    random_opponent,
)
from sb3_frontier.envs.tictactoe.solver import minimax_action_values, minimax_optimal_actions, minimax_value
from sb3_frontier.envs.tictactoe.vs_opponent import AgentPlays, TicTacToeVsOpponent

__all__ = [
    "N_CELLS",
    "WIN_LINES",
    "AgentPlays",
    "MinimaxOpponent",
    "PlayerFn",
    "RandomOpponent",
    "TicTacToeEnv",
    "TicTacToeVsOpponent",
    "board_image",
    "canonical_observation",
    "line_winner",
    "make_opponent",
    "minimax_action_values",
    "minimax_opponent",
    "minimax_optimal_actions",
    "minimax_value",
    "play_match",
    "random_opponent",
    "render_board",
]
