"""The shared core: n-step returns, the prioritized ring, the VecEnv step split, observation helpers, train_freq."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

from sb3_frontier.common.observations import non_finite_keys, obs_stack, obs_take, obs_write, obs_zeros
from sb3_frontier.common.prioritized_ring import PrioritizedRing
from sb3_frontier.common.replay_algorithm import convert_train_freq
from sb3_frontier.common.returns import n_step_parts, n_step_returns
from sb3_frontier.common.vec_steps import real_next_obs, split_step


def brute_force_return(rewards, discounts, values, t, n):
    """G_t written as the definition: add rewards while the product of discounts lasts, then bootstrap."""
    horizon = min(n, len(rewards) - t)
    total, scale = 0.0, 1.0
    for i in range(horizon):
        total += scale * rewards[t + i]
        scale *= discounts[t + i]
    return total + scale * values[t + horizon]


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_n_step_returns_match_brute_force_with_terminations_and_truncations(n):
    rng = np.random.default_rng(n)
    length, batch, gamma = 23, 4, 0.97
    rewards = rng.normal(size=(length, batch))
    stops = rng.random((length, batch)) < 0.15  # terminations and lost lives: discount 0 after the step
    discounts = gamma * (1.0 - stops)  # truncations keep gamma: the bootstrap comes from the final observation
    values = rng.normal(size=(length + 1, batch))
    got = n_step_returns(rewards, discounts, values, n)
    want = np.array([[brute_force_return(rewards[:, b], discounts[:, b], values[:, b], t, n) for b in range(batch)]
                     for t in range(length)])  # fmt: skip
    # float64 sums of at most n terms of size ~1: a few ulps of the largest partial sum
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * np.finfo(np.float64).eps * max(1.0, np.abs(want).max()))
    _, discount, index = n_step_parts(rewards, discounts, n)
    assert np.all(index == np.minimum(np.arange(length) + n, length))
    cut = np.array([[stops[t : t + n, b].any() for b in range(batch)] for t in range(length)])
    assert np.all(discount[cut] == 0.0) and np.all(discount[~cut] > 0.0)


def test_n_step_parts_shorten_the_horizon_at_the_sequence_end_and_reject_bad_n():
    prefix, discount, index = n_step_parts(np.ones(3), np.full(3, 0.5), 5)
    np.testing.assert_allclose(prefix, [1.75, 1.5, 1.0])
    np.testing.assert_allclose(discount, [0.125, 0.25, 0.5])
    np.testing.assert_array_equal(index, [3, 3, 3])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n must be"):
            n_step_parts(np.ones(3), np.ones(3), bad)


def test_ring_evicts_overwritten_items_and_drops_their_late_priority_updates():
    ring = PrioritizedRing(5, priority_exponent=1.0, priority_epsilon=1e-6)
    first = ring.reserve(4)
    ring.set_priorities(first[:3], [1.0, 2.0, 3.0])  # item 3 is stored but never sampleable
    assert len(ring) == 3
    second = ring.reserve(3)  # absolute 4..6 reuse the slots of 0 and 1
    np.testing.assert_array_equal(second, [4, 5, 6])
    assert len(ring) == 1  # only item 2 is left sampleable
    np.testing.assert_array_equal(ring.is_live([0, 1, 2, 6, 7]), [False, False, True, True, False])
    ring.update_priorities(np.array([0, 2]), np.array([100.0, 4.0]))  # 0 was evicted: its update is dropped
    np.testing.assert_allclose(ring.tree.get(ring.slots(np.array([0, 2]))), [0.0, 4.0 + 1e-6])
    indices, weights = ring.sample(8, np.random.default_rng(0), importance_exponent=1.0)
    assert np.all(indices == 2) and np.all(weights == 1.0)
    with pytest.raises(ValueError, match="not \\(or no longer\\)"):
        ring.set_priorities(np.array([1]), np.array([1.0]))
    with pytest.raises(ValueError, match="Non-finite"):
        ring.update_priorities(np.array([2]), np.array([np.nan]))
    with pytest.raises(ValueError, match="cannot write"):
        ring.reserve(6)


def test_ring_samples_in_proportion_to_priorities():
    ring = PrioritizedRing(4, priority_exponent=0.5, priority_epsilon=1e-9)
    indices = ring.reserve(4)
    errors = np.array([1.0, 4.0, 9.0, 16.0])
    ring.set_priorities(indices, errors)
    sampled, _ = ring.sample(200_000, np.random.default_rng(1))
    freq = np.bincount(sampled, minlength=4) / sampled.size
    expected = np.sqrt(errors) / np.sqrt(errors).sum()
    # stratified sampling: each stratum holds one draw, the frequencies are within 1/B of the probabilities
    np.testing.assert_allclose(freq, expected, atol=2 / sampled.size + 1e-3)


def test_split_step_tells_terminated_truncated_and_lost_lives_apart():
    dones = np.array([True, True, False, False])
    infos = [{"TimeLimit.truncated": False}, {"TimeLimit.truncated": True}, {"life_loss": True}, {}]
    ends = split_step(dones, infos)
    np.testing.assert_array_equal(ends.terminated, [True, False, False, False])
    np.testing.assert_array_equal(ends.truncated, [False, True, False, False])
    np.testing.assert_array_equal(ends.stop, [True, False, True, False])
    np.testing.assert_array_equal(ends.done, dones)
    with pytest.raises(ValueError, match="infos"):
        split_step(dones, infos[:2])


def test_real_next_obs_substitutes_final_observations_for_arrays_and_dicts():
    new_obs = np.zeros((3, 2))
    infos = [{}, {"terminal_observation": np.ones(2)}, {}]
    out = real_next_obs(new_obs, np.array([False, True, False]), infos)
    np.testing.assert_array_equal(out, [[0, 0], [1, 1], [0, 0]])
    assert np.all(new_obs == 0)  # not modified
    dict_obs = {"a": np.zeros((2, 1)), "b": np.zeros((2, 3))}
    infos = [{"terminal_observation": {"a": np.ones(1), "b": np.full(3, 2.0)}}, {}]
    out = real_next_obs(dict_obs, np.array([True, False]), infos)
    np.testing.assert_array_equal(out["b"], [[2, 2, 2], [0, 0, 0]])
    with pytest.raises(ValueError, match="terminal_observation"):
        real_next_obs(new_obs, np.array([True, False, False]), [{}, {}, {}])


def test_observation_helpers_treat_arrays_and_dicts_alike():
    space = spaces.Dict({"x": spaces.Box(0, 1, (2,), np.float32), "y": spaces.Discrete(3)})
    store = obs_zeros(space, (4,))
    assert store["x"].shape == (4, 2) and store["y"].dtype == np.int64
    batch = obs_stack([{"x": np.ones(2, np.float32), "y": np.int64(2)}] * 2)
    obs_write(store, np.array([1, 3]), batch)
    np.testing.assert_array_equal(obs_take(store, np.array([0, 1]))["y"], [0, 2])
    assert non_finite_keys({"x": np.array([np.nan]), "y": np.array([1])}) == ["x"]
    assert non_finite_keys(np.array([1.0, np.inf])) == ["obs"] and non_finite_keys(np.zeros(2)) == []


def test_train_freq_takes_sb3_forms():
    assert convert_train_freq(4) == TrainFreq(4, TrainFrequencyUnit.STEP)
    assert convert_train_freq((2, "episode")) == TrainFreq(2, TrainFrequencyUnit.EPISODE)
    for bad, match in (((1, "hour"), "unit"), (0, "at least one"), ((1.5, "step"), "at least one"), ((1,), "train_freq")):
        with pytest.raises(ValueError, match=match):
            convert_train_freq(bad)


def test_shard_slices_partition_the_batch():
    from sb3_frontier.common.sharded_gradient import shard_slices

    for batch_size in (1, 2, 7, 64):
        for n in (1, 2, 3, 8):
            slices = shard_slices(batch_size, n)
            covered = [i for s in slices for i in range(s.start, s.stop)]
            assert covered == list(range(batch_size)) and len(slices) == min(n, batch_size)
            assert max(s.stop - s.start for s in slices) - min(s.stop - s.start for s in slices) <= 1
    with pytest.raises(ValueError, match="n_shards"):
        shard_slices(4, 0)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_sharded_gradient_is_the_whole_batch_gradient(n_threads):
    """float64, so that the shards' other order of summation leaves differences near 1e-16 of the gradient's scale."""
    import threading

    import torch as th

    from sb3_frontier.common.sharded_gradient import ShardedGradient, shard_slices

    th.manual_seed(0)
    net = th.nn.Sequential(th.nn.Linear(5, 16), th.nn.Tanh(), th.nn.Linear(16, 3)).double()
    unused = th.nn.Parameter(th.ones(2, dtype=th.float64))  # a parameter no loss reaches: gradient 0
    params = [*net.parameters(), unused]
    x, y = th.randn(11, 5, dtype=th.float64), th.randn(11, 3, dtype=th.float64)
    threads = set()

    def shard_loss(shard: slice):
        threads.add(threading.get_ident())
        return ((net(x[shard]) - y[shard]) ** 2).sum(1).mean(), shard.stop - shard.start

    whole = ((net(x) - y) ** 2).sum(1).mean()
    reference = th.autograd.grad(whole, net.parameters())
    gradient = ShardedGradient(params, n_threads)
    loss, sizes = gradient(11, shard_loss)
    assert sizes == [s.stop - s.start for s in shard_slices(11, n_threads)]
    assert len(threads) >= 2  # the caller's thread and at least one worker (a worker may take two shards)
    th.testing.assert_close(loss, whole.detach(), rtol=1e-13, atol=0)
    for p, g in zip(net.parameters(), reference, strict=True):
        scale = g.abs().max().item()
        th.testing.assert_close(p.grad, g, rtol=0, atol=1e-13 * scale)
    assert th.equal(unused.grad, th.zeros(2, dtype=th.float64))
    # A second call overwrites (does not accumulate) and a shard's error reaches the caller.
    gradient(11, shard_loss)
    th.testing.assert_close(params[0].grad, reference[0], rtol=0, atol=1e-13 * reference[0].abs().max().item())

    def failing(shard: slice):
        if shard.start > 0:
            raise RuntimeError("shard failed")
        return shard_loss(shard)

    with pytest.raises(RuntimeError, match="shard failed"):
        gradient(11, failing)
    gradient.close()


def test_sharded_gradient_warns_once_when_it_oversubscribes_the_cores():
    import os
    import warnings

    import torch as th

    from sb3_frontier.common.sharded_gradient import ShardedGradient

    weight = th.nn.Parameter(th.ones(3))
    x = th.randn(64, 3)
    n_threads = (os.cpu_count() or 1) + 1  # more shards than cores, whatever torch's thread count
    gradient = ShardedGradient([weight], n_threads)
    with pytest.warns(UserWarning, match="oversubscribe"):
        gradient(64, lambda shard: ((x[shard] * weight).sum(1).mean(), None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradient(64, lambda shard: ((x[shard] * weight).sum(1).mean(), None))
    # float32 sums of 64 terms in another order: within 64 eps32 of the largest term
    th.testing.assert_close(weight.grad, x.mean(0), rtol=0, atol=64 * th.finfo(th.float32).eps * x.abs().max().item())
    gradient.close()
