"""Tic-tac-toe for MuZero's board-game mode: rules, canonical observations, perfect play, single-agent view."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from fractions import Fraction
from functools import cache

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_frontier.envs.tictactoe import (
    MinimaxOpponent,
    RandomOpponent,
    TicTacToeEnv,
    TicTacToeVsOpponent,
    make_opponent,
    minimax_action_values,
    minimax_opponent,
    minimax_optimal_actions,
    minimax_value,
    play_match,
    random_opponent,
)

# --------------------------------------------------------------------------------------------------------
# An independent referee: plain tuples, written from the rules and nothing else.
# A board is a tuple of 9 entries: None (empty), 0 (player 0's stone) or 1 (player 1's stone).
# --------------------------------------------------------------------------------------------------------
REF_LINES = [(r * 3, r * 3 + 1, r * 3 + 2) for r in range(3)] + [(c, c + 3, c + 6) for c in range(3)] + [(0, 4, 8), (2, 4, 6)]
EMPTY: tuple[int | None, ...] = (None,) * 9


def ref_winner(board: tuple[int | None, ...]) -> int | None:
    for line in REF_LINES:
        owners = {board[i] for i in line}
        if len(owners) == 1 and None not in owners:
            return owners.pop()
    return None


def ref_play(board: tuple[int | None, ...], cell: int, player: int) -> tuple[int | None, ...]:
    assert board[cell] is None
    return (*board[:cell], player, *board[cell + 1 :])


def ref_obs(board: tuple[int | None, ...], player: int) -> np.ndarray:
    """Canonical observation [2, 3, 3]: plane 0 = ``player``'s stones, plane 1 = the other player's."""
    own = [1.0 if v == player else 0.0 for v in board]
    other = [1.0 if v == 1 - player else 0.0 for v in board]
    return np.array([own, other], dtype=np.float32).reshape(2, 3, 3)


def ref_to_move(board: tuple[int | None, ...]) -> int:
    return sum(v is not None for v in board) % 2


def ref_over(board: tuple[int | None, ...]) -> bool:
    return ref_winner(board) is not None or None not in board


@cache
def ref_value_for_player0(board: tuple[int | None, ...]) -> int:
    """Plain minimax from player 0's side (max for player 0, min for player 1), no negamax, no bitboards."""
    winner = ref_winner(board)
    if winner is not None:
        return 1 if winner == 0 else -1
    if None not in board:
        return 0
    player = ref_to_move(board)
    children = [ref_value_for_player0(ref_play(board, c, player)) for c in range(9) if board[c] is None]
    return max(children) if player == 0 else min(children)


def reachable_positions() -> list[tuple[int | None, ...]]:
    seen = {EMPTY}
    frontier = [EMPTY]
    while frontier:
        board = frontier.pop()
        if ref_over(board):
            continue
        for c in range(9):
            if board[c] is None:
                child = ref_play(board, c, ref_to_move(board))
                if child not in seen:
                    seen.add(child)
                    frontier.append(child)
    return sorted(seen, key=lambda b: tuple(-1 if v is None else v for v in b))


def board_from_rows(rows: str) -> tuple[int | None, ...]:
    """``"XX. / OO. / ..."`` -> board (X = player 0, O = player 1)."""
    cells = rows.replace("/", "").replace(" ", "")
    assert len(cells) == 9
    return tuple({"X": 0, "O": 1, ".": None}[c] for c in cells)


TTT_IDS = {
    "sb3_frontier/TicTacToe-v0": ("sb3_frontier.envs.tictactoe:TicTacToeEnv", {}),
    "sb3_frontier/TicTacToeVsRandom-v0": ("sb3_frontier.envs.tictactoe:TicTacToeVsOpponent", {"opponent": "random"}),
    "sb3_frontier/TicTacToeVsMinimax-v0": ("sb3_frontier.envs.tictactoe:TicTacToeVsOpponent", {"opponent": "minimax"}),
}


def test_registered_on_import() -> None:
    """``import sb3_frontier`` (done by the imports above) registers the three ids with these entry points."""
    for env_id, (entry_point, kwargs) in TTT_IDS.items():
        spec = gym.spec(env_id)
        assert (spec.entry_point, spec.kwargs) == (entry_point, kwargs)


def play_sequence(moves: list[int]) -> Iterator[tuple[int, np.ndarray, float, bool, dict]]:
    """Step a fresh TicTacToeEnv through ``moves``; yield (mover, obs, reward, terminated, info) per ply."""
    env = TicTacToeEnv()
    _, info = env.reset(seed=0)
    for ply, cell in enumerate(moves):
        mover = info["to_play"]
        assert mover == ply % 2
        obs, reward, terminated, truncated, info = env.step(cell)
        assert truncated is False
        yield mover, obs, float(reward), terminated, info


# --------------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------------
def winning_sequence(line: tuple[int, int, int], winner: int) -> list[int]:
    """A legal game in which ``winner`` completes ``line`` with its last move and nobody wins earlier."""
    n_filler = 2 if winner == 0 else 3
    off_line = [c for c in range(9) if c not in line]
    for filler in itertools.combinations(off_line, n_filler):
        board = list(EMPTY)
        for c in filler:
            board[c] = 1 - winner
        if ref_winner(tuple(board)) is None:
            break
    first, second = (list(line), list(filler)) if winner == 0 else (list(filler), list(line))
    moves = [m for pair in itertools.zip_longest(first, second) for m in pair if m is not None]
    return moves


@pytest.mark.parametrize("winner", [0, 1])
@pytest.mark.parametrize("line", REF_LINES)
def test_win_on_every_line(line: tuple[int, int, int], winner: int) -> None:
    moves = winning_sequence(line, winner)
    steps = list(play_sequence(moves))
    board = EMPTY
    for ply, (mover, _, reward, terminated, info) in enumerate(steps):
        board = ref_play(board, moves[ply], mover)
        last = ply == len(moves) - 1
        assert ref_winner(board) == (winner if last else None)  # the sequence itself is right
        assert reward == (1.0 if last else 0.0)
        assert terminated == last
        assert info["to_play"] == 1 - mover
        if last:
            assert info["winner"] == winner
            assert not info["action_mask"].any()
        else:
            assert "winner" not in info
            np.testing.assert_array_equal(info["action_mask"], [v is None for v in board])


def test_draw() -> None:
    moves = [0, 4, 8, 1, 7, 6, 2, 5, 3]
    board = EMPTY
    info: dict = {}
    for ply, (mover, _, reward, terminated, step_info) in enumerate(play_sequence(moves)):
        board = ref_play(board, moves[ply], mover)
        info = step_info
        assert reward == 0.0
        assert terminated == (ply == 8)
    assert ref_winner(board) is None and None not in board
    assert info["winner"] == -1
    assert not info["action_mask"].any()


def test_random_games_match_the_referee() -> None:
    """500 random games: reward, termination, winner, mask, to_play and the canonical observation at every ply."""
    rng = np.random.default_rng(1)
    env = TicTacToeEnv()
    outcomes = set()
    for _ in range(500):
        obs, info = env.reset()
        board = EMPTY
        np.testing.assert_array_equal(obs, ref_obs(board, 0))
        terminated = False
        while not terminated:
            mover = ref_to_move(board)
            assert info["to_play"] == mover
            legal = [v is None for v in board]
            np.testing.assert_array_equal(info["action_mask"], legal)
            np.testing.assert_array_equal(env.action_masks(), legal)
            cell = int(rng.choice(np.flatnonzero(legal)))
            prev_obs = obs
            obs, reward, terminated, _, info = env.step(cell)
            board = ref_play(board, cell, mover)
            assert terminated == ref_over(board)
            assert reward == (1.0 if ref_winner(board) == mover else 0.0)
            assert info["to_play"] == 1 - mover
            np.testing.assert_array_equal(obs, ref_obs(board, 1 - mover))
            # the view flips each ply: the new mover's stones are the old opponent plane, and vice versa
            np.testing.assert_array_equal(obs[0], prev_obs[1])
            placed = prev_obs[0].copy().reshape(9)
            placed[cell] = 1.0
            np.testing.assert_array_equal(obs[1].reshape(9), placed)
            assert obs.dtype == np.float32 and obs in env.observation_space
        winner = ref_winner(board)
        assert info["winner"] == (-1 if winner is None else winner)
        outcomes.add(info["winner"])
    assert outcomes == {-1, 0, 1}


def test_illegal_move() -> None:
    env = TicTacToeEnv()
    env.reset()
    env.step(4)  # player 0
    board_before = env.board.copy()
    _, reward, terminated, truncated, info = env.step(4)  # player 1 plays the occupied centre
    assert reward == -1.0 and terminated is True and truncated is False
    assert info["illegal_move"] is True
    assert info["winner"] == 0  # the other player wins the forfeited game
    np.testing.assert_array_equal(env.board, board_before)
    assert not info["action_mask"].any()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    for bad in (9, -1, 2.5):
        with pytest.raises(ValueError, match="Action"):
            env.step(bad)
    _, reward, _, _, info = env.step(np.int64(0))  # numpy integers are fine
    assert info["illegal_move"] is False and reward == 0.0


def test_reset_info_and_render() -> None:
    env = TicTacToeEnv(render_mode="ansi")
    obs, info = env.reset(seed=3)
    assert info["to_play"] == 0 and info["action_mask"].all() and info["action_mask"].dtype == bool
    assert not obs.any()
    for cell in (0, 4, 1):
        env.step(cell)
    assert env.render() == "X X .\n. O .\n. . .\nO to play\n"
    env.step(8)
    env.step(2)
    assert env.render() == "X X X\n. O .\n. . O\nX wins\n"
    assert TicTacToeEnv().render() is None
    with pytest.raises(ValueError, match="render_mode"):
        TicTacToeEnv(render_mode="human")


def test_sb3_contrib_reads_the_masks() -> None:
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    vec_env = DummyVecEnv([lambda: TicTacToeEnv(), lambda: TicTacToeVsOpponent("random", agent_plays=1)])
    vec_env.seed(0)
    vec_env.reset()
    assert is_masking_supported(vec_env)
    masks = get_action_masks(vec_env)
    assert masks.shape == (2, 9)
    assert masks[0].all() and masks[1].sum() == 8  # the opponent has moved in the second env


# --------------------------------------------------------------------------------------------------------
# Perfect play
# --------------------------------------------------------------------------------------------------------
def test_minimax_values_match_plain_minimax_on_every_reachable_position() -> None:
    positions = reachable_positions()
    assert len(positions) == 5478  # the known count of positions reachable in tic-tac-toe
    for board in positions:
        mover = ref_to_move(board)
        sign = 1 if mover == 0 else -1  # ref value is from player 0's side
        obs = ref_obs(board, mover)
        assert minimax_value(obs) == sign * ref_value_for_player0(board)
        values = minimax_action_values(obs)
        for c in range(9):
            if board[c] is None and not ref_over(board):
                assert values[c] == sign * ref_value_for_player0(ref_play(board, c, mover))
            else:
                assert np.isnan(values[c])
    assert minimax_value(ref_obs(EMPTY, 0)) == 0  # tic-tac-toe is a draw


@pytest.mark.parametrize(
    ("rows", "value", "optimal"),
    [
        ("XX. / OO. / ...", 1, [2]),  # X to move wins at once (the quickest win is preferred)
        ("XX. / .O. / ...", 0, [2]),  # O to move must block the top row
        ("OO. / XX. / X..", 1, [2]),  # O to move: winning at once beats blocking X at 5
        ("XX. / XO. / .O.", -1, None),  # O to move faces two threats (2 and 6): lost
        ("X.. / ... / ...", 0, [4]),  # O must take the centre against a corner opening
    ],
)
def test_minimax_hand_set_positions(rows: str, value: int, optimal: list[int] | None) -> None:
    board = board_from_rows(rows)
    mover = ref_to_move(board)
    assert value == (1 if mover == 0 else -1) * ref_value_for_player0(board)  # the expectation itself is right
    obs = ref_obs(board, mover)
    assert minimax_value(obs) == value
    actions = minimax_optimal_actions(obs)
    if optimal is not None:
        assert actions.tolist() == optimal
        assert MinimaxOpponent()(obs, obs.sum(axis=0).reshape(9) == 0) == optimal[0]
    values = minimax_action_values(obs)
    assert np.all(values[actions] == value)  # an optimal move keeps the game value


def test_minimax_opponent_reads_an_env() -> None:
    env = TicTacToeEnv()
    env.reset()
    for cell in (0, 4, 1):
        env.step(cell)
    # O to move must block at 2
    assert MinimaxOpponent()(env) == 2
    assert minimax_opponent(env, env.action_masks()) == 2
    assert minimax_value(env) == 0


def enumerate_games(perfect_side: int) -> tuple[int, dict[int | None, int]]:
    """
    Every game in which ``perfect_side`` plays any of minimax's optimal moves and the other side any legal move.

    :return: number of games and the count of each winner (``None`` = draw)
    """
    results: dict[int | None, int] = {0: 0, 1: 0, None: 0}
    n_games = 0

    def walk(board: tuple[int | None, ...]) -> None:
        nonlocal n_games
        if ref_over(board):
            n_games += 1
            results[ref_winner(board)] += 1
            return
        mover = ref_to_move(board)
        if mover == perfect_side:
            moves = minimax_optimal_actions(ref_obs(board, mover)).tolist()
            assert len(moves) >= 1
        else:
            moves = [c for c in range(9) if board[c] is None]
        for c in moves:
            walk(ref_play(board, c, mover))

    walk(EMPTY)
    return n_games, results


@pytest.mark.parametrize("perfect_side", [0, 1])
def test_minimax_never_loses_against_any_sequence(perfect_side: int) -> None:
    n_games, results = enumerate_games(perfect_side)
    assert results[1 - perfect_side] == 0
    assert n_games == sum(results.values()) and n_games > 100
    assert results[perfect_side] > 0  # it does punish mistakes


def test_minimax_vs_minimax_always_draws() -> None:
    draws = set()

    def walk(board: tuple[int | None, ...]) -> None:
        if ref_over(board):
            draws.add(ref_winner(board) is None)
            return
        mover = ref_to_move(board)
        for c in minimax_optimal_actions(ref_obs(board, mover)).tolist():
            walk(ref_play(board, c, mover))

    walk(EMPTY)  # every combination of tie-breaks on both sides
    assert draws == {True}
    result = play_match(MinimaxOpponent(seed=1), "minimax", n_games=10, seed=2)
    assert result["draws"] == 10


def exact_win_rate_vs_random(perfect_side: int) -> Fraction:
    """P(minimax wins) against a uniformly random player, minimax uniform over its optimal moves (exact)."""

    @cache
    def expected(board: tuple[int | None, ...]) -> Fraction:
        if ref_over(board):
            return Fraction(int(ref_winner(board) == perfect_side))
        mover = ref_to_move(board)
        if mover == perfect_side:
            moves = minimax_optimal_actions(ref_obs(board, mover)).tolist()
        else:
            moves = [c for c in range(9) if board[c] is None]
        return sum((expected(ref_play(board, c, mover)) for c in moves), Fraction(0)) / len(moves)

    return expected(EMPTY)


def test_minimax_beats_random() -> None:
    p_first, p_second = exact_win_rate_vs_random(0), exact_win_rate_vs_random(1)
    assert p_first > Fraction(99, 100) and p_second > Fraction(9, 10)
    result = play_match(MinimaxOpponent(), "random", n_games=200, seed=0)
    assert result["losses"] == 0
    assert result["win_rate"] > 0.9
    for side, p in (("first", p_first), ("second", p_second)):
        n = result[side]["games"]
        assert n == 100
        sd = np.sqrt(n * float(p) * (1 - float(p)))
        assert abs(result[side]["wins"] - n * float(p)) < 4 * sd + 1


def test_optimal_moves_maximise_the_result_against_random() -> None:
    """Among moves of best game value, the optimal set is the argmax of the win chance against a random player."""

    @cache
    def expected(board: tuple[int | None, ...], perfect_side: int) -> Fraction:  # result for perfect_side in [-1, 1]
        if ref_over(board):
            w = ref_winner(board)
            return Fraction(0 if w is None else (1 if w == perfect_side else -1))
        mover = ref_to_move(board)
        if mover == perfect_side:
            moves = minimax_optimal_actions(ref_obs(board, mover)).tolist()
        else:
            moves = [c for c in range(9) if board[c] is None]
        return sum((expected(ref_play(board, c, mover), perfect_side) for c in moves), Fraction(0)) / len(moves)

    for board in reachable_positions():
        if ref_over(board):
            continue
        mover = ref_to_move(board)
        obs = ref_obs(board, mover)
        values = minimax_action_values(obs)
        best_value = np.nanmax(values)
        candidates = [c for c in range(9) if values[c] == best_value]
        gains = {c: expected(ref_play(board, c, mover), mover) for c in candidates}
        best_gain = max(gains.values())
        optimal = minimax_optimal_actions(obs).tolist()
        assert set(optimal) <= {c for c in candidates if gains[c] == best_gain}


def test_opponents_respect_masks_and_seeds() -> None:
    board = board_from_rows("XO. / .X. / ...")
    obs = ref_obs(board, 1)
    mask = np.array([v is None for v in board])
    picks = {RandomOpponent(seed=s)(obs, mask) for s in range(50)}
    assert picks == set(np.flatnonzero(mask).tolist())
    assert RandomOpponent(seed=7)(obs, mask) == RandomOpponent(seed=7)(obs, mask)
    assert random_opponent(obs, None, np.random.default_rng(0)) in picks
    # random tie-breaks cover exactly the optimal set; seed=None always takes the lowest one
    opening = ref_obs(EMPTY, 0)
    optimal = minimax_optimal_actions(opening).tolist()
    assert {MinimaxOpponent(seed=s)(opening) for s in range(60)} == set(optimal)
    assert {MinimaxOpponent()(opening) for _ in range(5)} == {optimal[0]}
    with pytest.raises(ValueError, match="mask"):
        RandomOpponent(0)(obs, ~mask)
    with pytest.raises(ValueError, match="mask"):
        MinimaxOpponent()(obs, np.ones(9, dtype=bool))
    with pytest.raises(ValueError, match="game is over"):
        MinimaxOpponent()(ref_obs(board_from_rows("XXX / OO. / ..."), 1))
    with pytest.raises(ValueError, match="18 entries"):
        minimax_value(np.zeros(9))
    with pytest.raises(ValueError, match="both players"):
        minimax_value(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="stones"):
        minimax_value(ref_obs(board_from_rows("XX. / ... / ..."), 0))
    with pytest.raises(ValueError, match="Unknown opponent"):
        make_opponent("perfect")


# --------------------------------------------------------------------------------------------------------
# Single-agent view
# --------------------------------------------------------------------------------------------------------
class Scripted:
    """Opponent that plays a fixed list of cells and records what it was shown."""

    def __init__(self, cells: list[int]) -> None:
        self.cells = list(cells)
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, obs: np.ndarray, mask: np.ndarray) -> int:
        self.seen.append((obs.copy(), mask.copy()))
        return self.cells.pop(0)


def test_vs_opponent_agent_first_wins() -> None:
    opponent = Scripted([3, 4])
    env = TicTacToeVsOpponent(opponent, agent_plays=0)
    obs, info = env.reset(seed=0)
    assert info["agent_plays"] == 0 and "opponent_action" not in info and not obs.any()
    board = EMPTY
    for cell, reply in ((0, 3), (1, 4)):
        obs, reward, terminated, _, info = env.step(cell)
        before_reply = ref_play(board, cell, 0)
        board = ref_play(before_reply, reply, 1)
        assert reward == 0.0 and not terminated
        assert info["opponent_action"] == reply and info["to_play"] == 0
        np.testing.assert_array_equal(obs, ref_obs(board, 0))
        np.testing.assert_array_equal(info["action_mask"], [v is None for v in board])
        # the opponent saw the board from its own side, before its reply
        seen_obs, seen_mask = opponent.seen[-1]
        np.testing.assert_array_equal(seen_obs, ref_obs(before_reply, 1))
        np.testing.assert_array_equal(seen_mask, [v is None for v in before_reply])
    obs, reward, terminated, _, info = env.step(2)
    assert reward == 1.0 and terminated and info["winner"] == 0
    assert "opponent_action" not in info and opponent.cells == []


def test_vs_opponent_agent_second_loses_and_draws() -> None:
    env = TicTacToeVsOpponent(Scripted([0, 1, 2]), agent_plays=1)
    obs, info = env.reset()
    assert info["agent_plays"] == 1 and info["to_play"] == 1 and info["opponent_action"] == 0
    np.testing.assert_array_equal(obs, ref_obs(ref_play(EMPTY, 0, 0), 1))  # plane 1 = the opponent's first stone
    env.step(4)
    obs, reward, terminated, _, info = env.step(5)
    assert reward == -1.0 and terminated and info["winner"] == 0 and info["opponent_action"] == 2
    np.testing.assert_array_equal(obs, ref_obs(board_from_rows("XXX / .OO / ..."), 1))

    # a draw: agent (X) 0, 8, 7, 2, 3 against O 4, 1, 6, 5
    env = TicTacToeVsOpponent(Scripted([4, 1, 6, 5]), agent_plays=0)
    env.reset()
    rewards = [env.step(c)[1] for c in (0, 8, 7, 2)]
    _, reward, terminated, _, info = env.step(3)
    assert rewards == [0.0] * 4 and reward == 0.0 and terminated and info["winner"] == -1


def test_vs_opponent_illegal_moves() -> None:
    env = TicTacToeVsOpponent(Scripted([4]), agent_plays=1)
    env.reset()
    _, reward, terminated, _, info = env.step(4)
    assert reward == -1.0 and terminated and info["illegal_move"] is True and info["winner"] == 0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env = TicTacToeVsOpponent(Scripted([0]), agent_plays=0)
    env.reset()
    with pytest.raises(RuntimeError, match="opponent played an illegal move"):
        env.step(0)


def test_vs_opponent_alternates_sides() -> None:
    env = TicTacToeVsOpponent("random")
    sides = [env.reset(seed=5 if i == 0 else None)[1]["agent_plays"] for i in range(5)]
    assert sides == [0, 1, 0, 1, 0]
    assert env.reset(seed=5)[1]["agent_plays"] == 0  # a seeded reset restarts the schedule
    assert env.reset(options={"agent_plays": 0})[1]["agent_plays"] == 0  # one-game override
    assert env.reset()[1]["agent_plays"] == 0  # schedule continues: third game of the schedule
    # the same seed gives the same opponent moves
    first = [TicTacToeVsOpponent("random", agent_plays=1).reset(seed=s)[1]["opponent_action"] for s in range(20)]
    again = [TicTacToeVsOpponent("random", agent_plays=1).reset(seed=s)[1]["opponent_action"] for s in range(20)]
    assert first == again and len(set(first)) > 1
    with pytest.raises(ValueError, match="agent_plays"):
        TicTacToeVsOpponent("random", agent_plays=2)
    with pytest.raises(ValueError, match="agent_plays"):
        env.reset(options={"agent_plays": "x"})
    with pytest.raises(ValueError, match="Unknown opponent"):
        TicTacToeVsOpponent("perfect")


def test_registered_views_use_their_opponent() -> None:
    env = gym.make("sb3_frontier/TicTacToeVsMinimax-v0", agent_plays=1)
    _, info = env.reset(seed=0)
    assert info["opponent_action"] in minimax_optimal_actions(ref_obs(EMPTY, 0)).tolist()
    rng = np.random.default_rng(0)
    for _ in range(20):  # a random agent never beats the perfect opponent
        _, info = env.reset()
        terminated, reward = False, 0.0
        while not terminated:
            _, r, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
            reward = float(r)
        assert reward <= 0.0
    env_random = gym.make("sb3_frontier/TicTacToeVsRandom-v0")
    assert isinstance(env_random.unwrapped, TicTacToeVsOpponent)
    assert isinstance(env_random.unwrapped.opponent_spec, str) and env_random.unwrapped.opponent_spec == "random"


# --------------------------------------------------------------------------------------------------------
# play_match
# --------------------------------------------------------------------------------------------------------
def test_play_match_counts_add_up() -> None:
    rng = np.random.default_rng(0)

    def random_agent(obs: np.ndarray, mask: np.ndarray) -> int:
        return int(rng.choice(np.flatnonzero(mask)))

    result = play_match(random_agent, "random", n_games=51, seed=3)
    assert result["wins"] + result["draws"] + result["losses"] == result["n_games"] == 51
    assert result["first"]["games"] == 26 and result["second"]["games"] == 25
    for key in ("wins", "draws", "losses"):
        assert result["first"][key] + result["second"][key] == result[key]
        assert result[f"{key[:-1] if key != 'losses' else 'loss'}_rate"] == pytest.approx(result[key] / 51)
    assert result["mean_reward"] == pytest.approx((result["wins"] - result["losses"]) / 51)
    assert result["illegal_moves"] == 0
    assert result["wins"] > 0 and result["losses"] > 0

    # the same match against a copy of the env played by hand gives the same tally
    rng = np.random.default_rng(0)
    env = TicTacToeVsOpponent("random")
    tally = {1.0: 0, 0.0: 0, -1.0: 0}
    for game in range(51):
        obs, info = env.reset(seed=3 if game == 0 else None)
        terminated = False
        while not terminated:
            obs, r, terminated, _, info = env.step(random_agent(obs, info["action_mask"]))
        tally[float(r)] += 1
    assert (tally[1.0], tally[0.0], tally[-1.0]) == (result["wins"], result["draws"], result["losses"])

    # an agent that always plays cell 0 loses every game by an illegal move
    stubborn = play_match(lambda obs, mask: 0, "random", n_games=6, agent_plays=1, seed=0)
    assert stubborn["illegal_moves"] == stubborn["losses"] == 6 and stubborn["second"]["games"] == 6
    with pytest.raises(ValueError, match="n_games"):
        play_match(random_agent, "random", n_games=0)


# --------------------------------------------------------------------------------------------------------
# Package layout
# --------------------------------------------------------------------------------------------------------
PACKAGE_NAMES = {
    "game": ["N_CELLS", "WIN_LINES", "board_image", "canonical_observation", "line_winner", "render_board"],
    "env": ["TicTacToeEnv"],
    "solver": ["minimax_action_values", "minimax_optimal_actions", "minimax_value"],
    "opponents": ["MinimaxOpponent", "PlayerFn", "RandomOpponent", "make_opponent", "minimax_opponent", "random_opponent"],
    "vs_opponent": ["AgentPlays", "TicTacToeVsOpponent"],
    "match": ["play_match"],
}


def test_one_module_per_idea_and_the_package_reexports_them() -> None:
    import importlib

    package = importlib.import_module("sb3_frontier.envs.tictactoe")
    for module_name, names in PACKAGE_NAMES.items():
        module = importlib.import_module(f"sb3_frontier.envs.tictactoe.{module_name}")
        for name in names:
            assert getattr(package, name) is getattr(module, name), (module_name, name)
    assert sorted(package.__all__) == sorted(name for names in PACKAGE_NAMES.values() for name in names)


def test_solver_memoises_pure_functions_not_module_dicts() -> None:
    from sb3_frontier.envs.tictactoe import solver

    module_dicts = [name for name, value in vars(solver).items() if isinstance(value, dict) and not name.startswith("__")]
    assert module_dicts == []
    solver._score.cache_clear()
    solver._vs_random.cache_clear()
    assert minimax_optimal_actions(ref_obs(EMPTY, 0)).tolist() == [0, 2, 6, 8]  # corners: most chances for a random player
    # the empty board's search visits every position reachable from it once
    assert 0 < solver._score.cache_info().currsize <= 3**9
    assert solver._score.cache_info().misses == solver._score.cache_info().currsize
