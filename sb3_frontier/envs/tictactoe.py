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

Conventions shared by everything in this module:

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
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
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
_LINE_BITS: tuple[int, ...] = tuple(sum(1 << c for c in line) for line in WIN_LINES)
_FULL = (1 << N_CELLS) - 1
_SYMBOLS = (".", "X", "O")  # board cell value -> text: empty, player 0, player 1

AgentPlays = int | Literal["alternate"]
#: What an opponent (or an agent in :func:`play_match`) is: ``(canonical obs [2, 3, 3], mask [9]) -> action``.
PlayerFn = Callable[[np.ndarray, np.ndarray], int]


# ----------------------------------------------------------------------------------------------------------
# Board helpers. ``board`` is an int8 array [9]: 0 empty, 1 a stone of player 0, 2 a stone of player 1.
# ----------------------------------------------------------------------------------------------------------
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


def _parse_state(state: Any) -> tuple[int, int]:
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
    obs = np.asarray(state)
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
    if _has_line(own):
        raise ValueError("The player to move already has a full line: the game ended before this position")
    return own, opp


def _has_line(bits: int) -> bool:
    return any(bits & line == line for line in _LINE_BITS)


def _bits_to_mask(bits: int) -> np.ndarray:
    return np.array([(bits >> i) & 1 == 1 for i in range(N_CELLS)], dtype=bool)


def _check_mask(mask: np.ndarray | None, legal: np.ndarray) -> np.ndarray:
    """Validate a given action mask against the legal moves of the position; return the legal moves."""
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


# ----------------------------------------------------------------------------------------------------------
# Negamax, memoised over positions (at most 3^9 of them; 5478 are reachable from the empty board).
# ----------------------------------------------------------------------------------------------------------
_SCORES: dict[int, int] = {}
_VS_RANDOM: dict[int, Fraction] = {}


def _empty_cells(own: int, opp: int) -> list[int]:
    occupied = own | opp
    return [i for i in range(N_CELLS) if not (occupied >> i) & 1]


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
    key = own | (opp << N_CELLS)
    cached = _SCORES.get(key)
    if cached is not None:
        return cached
    if _has_line(opp):
        score = -(1 + N_CELLS - (own | opp).bit_count())
    elif own | opp == _FULL:
        score = 0
    else:
        score = max(-_score(opp, own | (1 << i)) for i in _empty_cells(own, opp))
    _SCORES[key] = score
    return score


def _vs_random(own: int, opp: int) -> Fraction:
    """
    Expected result for the perfect player to move (``own``) against a uniformly random player (``opp``).

    The perfect player picks, among the moves that keep the game value, one that maximises this expectation
    (the first two keys of :func:`_move_keys`); the random player picks uniformly among the empty cells.

    :param own: bitboard of the perfect player, to move
    :param opp: bitboard of the random player
    :return: exact expectation in [-1, 1] of the result (+1 win, 0 draw, -1 loss)
    """
    key = own | (opp << N_CELLS)
    cached = _VS_RANDOM.get(key)
    if cached is None:
        if _has_line(opp):
            cached = Fraction(-1)
        elif own | opp == _FULL:
            cached = Fraction(0)
        else:
            keys = _move_keys(own, opp)
            value = max(k[0] for k in keys.values())
            cached = max(k[1] for k in keys.values() if k[0] == value)
        _VS_RANDOM[key] = cached
    return cached


def _random_to_move(perfect: int, rand: int) -> Fraction:
    """Expected result for the perfect player, who has just moved, with the random player to move."""
    if _has_line(perfect):
        return Fraction(1)
    if perfect | rand == _FULL:
        return Fraction(0)
    replies = _empty_cells(perfect, rand)
    return sum((_vs_random(perfect, rand | (1 << i)) for i in replies), Fraction(0)) / len(replies)


def _move_keys(own: int, opp: int) -> dict[int, tuple[int, Fraction, int]]:
    """
    Ranking key of each legal move for the player to move (empty dict if the game is over).

    Key ``(game value, expected result against a uniformly random player, negamax score)``: a perfect player
    keeps the game value, then gives a random opponent the most chances to err, then wins as fast (or loses
    as slowly) as it can. Lexicographic order; the best keys are the optimal moves.
    """
    if _has_line(opp):
        return {}
    keys = {}
    for i in _empty_cells(own, opp):
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
    own, opp = _parse_state(state)
    return int(np.sign(_score(own, opp)))


def minimax_action_values(state: Any) -> np.ndarray:
    """
    Game-theoretic value of each move for the player to move.

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :return: float64 [9]: ``+1``/``0``/``-1`` for the mover after each legal move under perfect play from
        there, ``nan`` for occupied cells (and everywhere once the game is over)
    """
    own, opp = _parse_state(state)
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
    own, opp = _parse_state(state)
    keys = _move_keys(own, opp)
    if not keys:
        return np.zeros(0, dtype=np.int64)
    best = max(keys.values())
    return np.array(sorted(a for a, k in keys.items() if k == best), dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Opponents
# ----------------------------------------------------------------------------------------------------------
def _legal_mask(state: Any) -> np.ndarray:
    if isinstance(state, gym.Env) and isinstance(state.unwrapped, TicTacToeEnv):
        return state.unwrapped.action_masks()
    own, opp = _parse_state(state)
    if _has_line(opp):
        return np.zeros(N_CELLS, dtype=bool)
    return ~_bits_to_mask(own | opp)


def random_opponent(state: Any, mask: np.ndarray | None, rng: np.random.Generator) -> int:
    """
    A uniformly random legal move.

    :param state: a :class:`TicTacToeEnv` or a canonical observation ``[2, 3, 3]`` (plane 0 = player to move)
    :param mask: bool [9], True = legal; must agree with the board (``None``: read it from the board)
    :param rng: random generator to draw the move with
    :return: the chosen cell, ``0..8``
    """
    legal = _check_mask(mask, _legal_mask(state))
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
    _check_mask(mask, _legal_mask(state))
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


# ----------------------------------------------------------------------------------------------------------
# Environments
# ----------------------------------------------------------------------------------------------------------
def _observation_space() -> spaces.Box:
    return spaces.Box(low=0.0, high=1.0, shape=(2, 3, 3), dtype=np.float32)


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
        self.observation_space = _observation_space()
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
    rows = [" ".join(_SYMBOLS[int(v)] for v in board[3 * r : 3 * r + 3]) for r in range(3)]
    if not game_over:
        status = f"{_SYMBOLS[to_play + 1]} to play"
    elif winner is None:
        status = "draw"
    else:
        status = f"{_SYMBOLS[winner + 1]} wins"
    return "\n".join([*rows, status]) + "\n"


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
        self.observation_space = _observation_space()
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
        return text + f"agent plays {_SYMBOLS[self.agent_side + 1]}\n"


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


__all__ = [
    "WIN_LINES",
    "MinimaxOpponent",
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
