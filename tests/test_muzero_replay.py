"""MuZero replay: n-step value targets, reward alignment, segments of long games, eviction, two-player outcomes.

Every target is checked against a brute-force computation on the whole game, written from the paper's definitions.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from sb3_frontier.algorithms.muzero.collection import SegmentBuilder
from sb3_frontier.algorithms.muzero.replay import (
    GameSegment,
    MuZeroReplayBuffer,
    n_step_targets,
    outcome_targets,
)

N_ACTIONS = 3
EPS32, EPS64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)


def float_tolerance(rewards, values, n):
    """Targets are stored in float32: n + 1 terms of size max(|r|, |v|) round to a few float32 ulps of their sum."""
    return 4 * (n + 1) * EPS32 * float(max(np.abs(rewards).max(initial=0.0), np.abs(values).max(initial=0.0), 1.0))


OBS_SPACE = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)


def brute_force_value(rewards, stops, values, t, n, gamma, end, terminal):
    """z_t over a whole game of ``end`` transitions (final observation at index ``end``), from the definition."""
    z, discount = 0.0, 1.0
    for i in range(n):
        j = t + i
        if j >= end:  # reached the final observation
            return z if terminal else z + discount * values[end]
        z += discount * rewards[j]
        discount *= gamma
        if stops[j]:
            return z
    if t + n == end and terminal:
        return z
    return z + discount * values[t + n]


def make_game(rng, length, p_stop=0.0):
    rewards = rng.normal(size=length).astype(np.float32)
    stops = rng.random(length) < p_stop
    values = rng.normal(size=length + 1).astype(np.float32)
    return rewards, stops, values


@pytest.mark.parametrize("terminal", [True, False])
@pytest.mark.parametrize("p_stop", [0.0, 0.1])
def test_n_step_targets_match_brute_force(terminal, p_stop):
    rng = np.random.default_rng(0)
    n, gamma = 4, 0.9
    for length in (1, 2, 3, 4, 5, 9, 30):
        rewards, stops, values = make_game(rng, length, p_stop)
        # Segment layout: L transitions then the final observation.
        seg_rewards = np.append(rewards, 0.0).astype(np.float32)
        seg_stops = np.append(stops, terminal)
        prefix, discount, offsets, valid = n_step_targets(seg_rewards, seg_stops, terminal, n, gamma)
        for t in range(length + 1):
            boot = values[offsets[t]] if offsets[t] >= 0 else 0.0
            got = prefix[t] + discount[t] * boot
            if t == length:
                assert valid[t] == terminal
                if terminal:
                    assert got == 0.0
                continue
            want = brute_force_value(rewards, stops, values, t, n, gamma, length, terminal)
            # float32 rewards summed in float64 against float32 inputs: a few ulps of the partial sums' magnitude
            assert got == pytest.approx(want, rel=0, abs=float_tolerance(rewards, values, n)), (length, t)
            assert valid[t]


def feed_game(builder, rewards, stops, values, game_id, terminal, policies=None):
    """Run a whole game through a SegmentBuilder; observations encode (game, step)."""
    segments = []
    length = len(rewards)
    for t in range(length):
        policy = np.full(N_ACTIONS, 1 / N_ACTIONS, np.float32) if policies is None else policies[t]
        obs = np.array([game_id, t], np.float32)
        seg = builder.append(obs, t % N_ACTIONS, rewards[t], stops[t], values[t], policy, np.ones(N_ACTIONS, bool))
        if seg is not None:
            segments.append(seg)
    final = builder.finish(np.array([game_id, length], np.float32), terminal, values[length])
    if final is not None:
        segments.append(final)
    return segments


@pytest.mark.parametrize("terminal", [True, False])
def test_long_games_are_cut_into_segments_with_full_targets(terminal):
    rng = np.random.default_rng(1)
    k, n, gamma, seg_len = 3, 5, 0.97, 20
    length = 137
    rewards, stops, values = make_game(rng, length, p_stop=0.05)
    builder = SegmentBuilder(seg_len, k + n, N_ACTIONS)
    segments = feed_game(builder, rewards, stops, values, 0, terminal)
    assert len(segments) > 3
    replay = MuZeroReplayBuffer(10_000, OBS_SPACE, N_ACTIONS, unroll_steps=k, td_steps=n, gamma=gamma)
    starts = []
    for seg in segments:
        abs_idx = replay.add(seg)
        starts += [int(replay.observations[i % replay.buffer_size][1]) for i in abs_idx[: seg.n_starts]]
    # Every transition of the game is a sampleable start exactly once; the final observation is not.
    assert sorted(starts) == list(range(length))
    assert len(replay) == length
    # Stored value targets equal the whole-game brute force (the look-ahead makes every n-step target complete).
    for slot in range(replay.n_written):
        t = int(replay.observations[slot][1])
        if replay.tree.get(np.array([slot]))[0] == 0 or t == length:
            continue
        boot = replay.root_values[replay.bootstrap_index[slot]] if replay.bootstrap_index[slot] >= 0 else 0.0
        got = replay.value_prefix[slot] + replay.bootstrap_discount[slot] * boot
        want = brute_force_value(rewards, stops, values, t, n, gamma, length, terminal)
        assert got == pytest.approx(want, rel=0, abs=float_tolerance(rewards, values, n)), t


def test_sampled_unrolls_align_actions_rewards_values_and_policies():
    rng = np.random.default_rng(2)
    k, n, gamma = 5, 3, 0.9
    replay = MuZeroReplayBuffer(5_000, OBS_SPACE, N_ACTIONS, unroll_steps=k, td_steps=n, gamma=gamma)
    games = {}
    builder = SegmentBuilder(15, k + n, N_ACTIONS)
    for game_id in range(12):
        length = int(rng.integers(1, 40))
        terminal = bool(game_id % 2)
        rewards, stops, values = make_game(rng, length)
        policies = rng.dirichlet(np.ones(N_ACTIONS), size=length).astype(np.float32)
        games[game_id] = (rewards, stops, values, terminal, length, policies)
        for seg in feed_game(builder, rewards, stops, values, game_id, terminal, policies):
            replay.add(seg)
    batch = replay.sample(512, rng, importance_exponent=0.5)
    z = batch.value_targets()
    for b in range(512):
        game_id, t = (int(x) for x in batch.observations[b])
        rewards, stops, values, terminal, length, policies = games[game_id]
        assert t < length
        for step in range(k + 1):
            p = t + step
            # Reward target of unroll step k is the reward of the transition (s_{t+k-1}, a_{t+k-1}).
            if step >= 1:
                q = p - 1
                if q < length:
                    assert batch.actions[b, step - 1] == q % N_ACTIONS
                    assert batch.rewards[b, step] == pytest.approx(rewards[q])
                    assert batch.reward_mask[b, step]
                else:
                    assert batch.reward_mask[b, step] == terminal
                    assert batch.rewards[b, step] == 0.0
            assert not batch.reward_mask[b, 0]
            if p < length:
                assert batch.value_mask[b, step]
                assert z[b, step] == pytest.approx(
                    brute_force_value(rewards, stops, values, p, n, gamma, length, terminal),
                    rel=0,
                    abs=float_tolerance(rewards, values, n),
                )
                assert batch.policy_mask[b, step]
                np.testing.assert_array_equal(batch.policies[b, step], policies[p])  # stored and read as they are
            elif terminal:  # absorbing state after a termination: value 0, no policy target
                assert batch.value_mask[b, step] and z[b, step] == 0.0
                assert not batch.policy_mask[b, step]
            else:  # nothing is known after a truncation
                assert not batch.value_mask[b, step] and not batch.policy_mask[b, step]
    assert batch.weights.max() == pytest.approx(1.0)
    assert np.all(batch.weights > 0)


def test_truncation_bootstraps_and_termination_does_not():
    gamma, n = 0.5, 10
    for terminal in (True, False):
        replay = MuZeroReplayBuffer(100, OBS_SPACE, N_ACTIONS, unroll_steps=1, td_steps=n, gamma=gamma)
        builder = SegmentBuilder(50, 1 + n, N_ACTIONS)
        rewards = np.ones(2, np.float32)
        values = np.array([0.0, 0.0, 8.0], np.float32)  # final observation's value 8
        for seg in feed_game(builder, rewards, np.zeros(2, bool), values, 0, terminal):
            replay.add(seg)
        boot = replay.root_values[replay.bootstrap_index[0]] if replay.bootstrap_index[0] >= 0 else 0.0
        z0 = replay.value_prefix[0] + replay.bootstrap_discount[0] * boot
        assert z0 == pytest.approx(1.5 if terminal else 1.5 + 0.25 * 8.0)


def test_life_loss_stops_bootstrapping_but_not_the_game():
    replay = MuZeroReplayBuffer(100, OBS_SPACE, N_ACTIONS, unroll_steps=1, td_steps=5, gamma=1.0)
    builder = SegmentBuilder(50, 6, N_ACTIONS)
    rewards = np.array([1, 2, 4, 8, 16, 32], np.float32)
    stops = np.array([0, 1, 0, 0, 0, 0], bool)  # a life lost on the second transition
    values = np.full(7, 100.0, np.float32)
    for seg in feed_game(builder, rewards, stops, values, 0, terminal=False):
        replay.add(seg)
    z = replay.value_prefix + replay.bootstrap_discount * np.where(
        replay.bootstrap_index >= 0, replay.root_values[np.maximum(replay.bootstrap_index, 0)], 0
    )
    assert z[0] == pytest.approx(3.0)  # 1 + 2, no bootstrap past the life loss
    assert z[2] == pytest.approx(4 + 8 + 16 + 32 + 100.0)  # the episode goes on: truncated end bootstraps


def test_eviction_keeps_every_sample_intact():
    rng = np.random.default_rng(3)
    k, n = 2, 3
    replay = MuZeroReplayBuffer(64, OBS_SPACE, N_ACTIONS, unroll_steps=k, td_steps=n, gamma=0.9)
    builder = SegmentBuilder(10, k + n, N_ACTIONS)
    written = {}
    for game_id in range(40):
        length = int(rng.integers(1, 25))
        rewards, stops, values = make_game(rng, length)
        written[game_id] = (rewards, length)
        for seg in feed_game(builder, rewards, stops, values, game_id, True):
            replay.add(seg)
        assert len(replay) <= replay.buffer_size
        batch = replay.sample(64, rng)
        for b in range(64):
            game, t = (int(x) for x in batch.observations[b])
            rewards, length = written[game]
            for step in range(1, k + 1):
                if t + step - 1 < length:  # reward targets read the same game, never overwritten data
                    assert batch.rewards[b, step] == pytest.approx(rewards[t + step - 1])
            # every unrolled position holds the same game at the expected step
            pos = batch.positions[b]
            for step, p in enumerate(pos):
                if p >= 0:
                    obs = replay.observations_at(np.array([p]))[0]
                    assert (int(obs[0]), int(obs[1])) == (game, t + step)


def test_priorities_start_at_value_errors_and_update():
    replay = MuZeroReplayBuffer(100, OBS_SPACE, N_ACTIONS, unroll_steps=1, td_steps=1, gamma=1.0, priority_exponent=1.0)
    seg = GameSegment(
        observations=np.zeros((3, 2), np.float32),
        actions=np.array([0, 1, -1]),
        rewards=np.array([1.0, 2.0, 0.0], np.float32),
        stops=np.array([False, True, True]),
        root_values=np.array([0.5, 5.0, 0.0], np.float32),
        policies=np.full((3, N_ACTIONS), 1 / 3, np.float32),
        legal=np.ones((3, N_ACTIONS), bool),
        n_starts=2,
        terminal=True,
    )
    replay.add(seg)
    # z_0 = 1 + v_1 = 6 -> |0.5 - 6| ; z_1 = 2 (terminated) -> |5 - 2|
    np.testing.assert_allclose(replay.tree.get(np.array([0, 1, 2])), [5.5 + 1e-6, 3.0 + 1e-6, 0.0], rtol=4 * EPS64)
    replay.update_priorities(np.array([1]), np.array([0.25]))
    np.testing.assert_allclose(replay.tree.get(np.array([1])), [0.25 + 1e-6], rtol=4 * EPS64)


def test_two_player_outcome_targets_alternate():
    # 5 moves, the last mover wins: positions 4 (last mover) +1, 3 -1, 2 +1, ... terminal observation -1.
    rewards = np.array([0, 0, 0, 0, 1, 0], np.float32)
    np.testing.assert_array_equal(outcome_targets(rewards, terminal=True), [1, -1, 1, -1, 1, -1])
    draw = np.zeros(10, np.float32)
    np.testing.assert_array_equal(outcome_targets(draw, terminal=True), np.zeros(10))
    builder = SegmentBuilder(3, 2, N_ACTIONS, two_player=True)  # games are never cut in two-player mode
    segments = feed_game(builder, np.array([0, 0, 1], np.float32), np.zeros(3, bool), np.zeros(4), 0, True)
    assert len(segments) == 1
    np.testing.assert_array_equal(segments[0].value_targets, [1, -1, 1, -1])
    np.testing.assert_array_equal(segments[0].rewards, 0)  # the outcome lives in the values only
    replay = MuZeroReplayBuffer(100, OBS_SPACE, N_ACTIONS, unroll_steps=4, td_steps=2, gamma=1.0, two_player=True)
    replay.add(segments[0])
    batch = replay.sample(16, np.random.default_rng(0))
    z = batch.value_targets()
    for b in range(16):
        t = int(batch.observations[b][1])
        for step in range(5):
            # inside the game the outcome for the player to move; past its end the absorbing plies keep alternating,
            # consistent with backing the terminal value up with discount -1
            assert batch.value_mask[b, step] and z[b, step] == (1 if (t + step) % 2 == 0 else -1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        MuZeroReplayBuffer(0, OBS_SPACE, N_ACTIONS)
    with pytest.raises(ValueError):
        MuZeroReplayBuffer(10, OBS_SPACE, N_ACTIONS, unroll_steps=0)
    with pytest.raises(ValueError):
        MuZeroReplayBuffer(10, OBS_SPACE, N_ACTIONS, td_steps=0)
    replay = MuZeroReplayBuffer(10, OBS_SPACE, N_ACTIONS)
    with pytest.raises(RuntimeError):
        replay.sample(4, np.random.default_rng(0))
    big = SegmentBuilder(100, 0, N_ACTIONS)
    segs = feed_game(big, np.zeros(20, np.float32), np.zeros(20, bool), np.zeros(21), 0, True)
    with pytest.raises(ValueError):
        replay.add(segs[0])
