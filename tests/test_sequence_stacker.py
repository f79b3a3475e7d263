"""SequenceStacker: R2D2 sequences (burn-in, overlap, padding, stored state) against a brute-force slicer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_frontier.wrappers.sequence import Sequence, SequenceStacker, stack_sequences

# ----------------------------------------------------------------------------------------------------------------
# Synthetic streams: every observation encodes (env, episode, step) so that any misalignment is visible.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Stream:
    """A recorded VecEnv stream, one dict of batched arrays per add() call."""

    n_envs: int
    state_env_axis: int
    steps: list[dict[str, Any]] = field(default_factory=list)


def _encode_obs(env: int, episode: int, step: int, terminal: bool, dict_obs: bool) -> Any:
    vec = np.array([env, episode, step, -1.0 if terminal else 1.0], dtype=np.float32)
    if not dict_obs:
        return vec
    img = np.full((2, 2), (env * 50 + episode * 7 + step) % 256, dtype=np.uint8)
    return {"vec": vec, "img": img}


def _stack_obs(items: list[Any]) -> Any:
    if isinstance(items[0], dict):
        return {key: np.stack([it[key] for it in items]) for key in items[0]}
    return np.stack(items)


def make_stream(
    plans: list[list[tuple[int, str]]],
    n_steps: int,
    dict_obs: bool = False,
    state_env_axis: int = 0,
    seed: int = 0,
) -> Stream:
    """
    Build a synthetic stream: env e plays the episodes of ``plans[e]`` (length, "term" | "trunc") cyclically.

    Recurrent states encode (env, global step) and are the state *before* each step.
    """
    rng = np.random.default_rng(seed)
    n_envs = len(plans)
    stream = Stream(n_envs=n_envs, state_env_axis=state_env_axis)
    episode = [0] * n_envs
    step_in_ep = [0] * n_envs
    plan_idx = [0] * n_envs
    for g in range(n_steps):
        obs, next_obs, term, trunc = [], [], [], []
        for e in range(n_envs):
            ep_len, kind = plans[e][plan_idx[e] % len(plans[e])]
            t = step_in_ep[e]
            done = t == ep_len - 1
            obs.append(_encode_obs(e, episode[e], t, False, dict_obs))
            next_obs.append(_encode_obs(e, episode[e], t + 1, done, dict_obs))
            term.append(done and kind == "term")
            trunc.append(done and kind == "trunc")
            if done:
                episode[e] += 1
                step_in_ep[e] = 0
                plan_idx[e] += 1
            else:
                step_in_ep[e] = t + 1
        # States [n_layers=2, n_envs, hidden=3] (axis 1) or [n_envs, 3] (axis 0), value = 1000 e + g (+ offsets).
        base = 1000.0 * np.arange(n_envs) + g  # [n_envs]
        if state_env_axis == 1:
            h = base[None, :, None] + 0.1 * np.arange(2)[:, None, None] + 0.01 * np.arange(3)[None, None, :]
        else:
            h = base[:, None] + 0.01 * np.arange(3)[None, :]
        stream.steps.append(
            {
                "observations": _stack_obs(obs),
                "actions": (100 * np.arange(n_envs) + g).astype(np.int64),
                "rewards": rng.normal(size=n_envs).astype(np.float32),
                "terminated": np.array(term),
                "truncated": np.array(trunc),
                "next_observations": _stack_obs(next_obs),
                "state": (h.astype(np.float32), (-h).astype(np.float32)),
                "extras": {
                    "log_prob": rng.normal(size=n_envs).astype(np.float32),
                    "logits": rng.normal(size=(n_envs, 3)).astype(np.float32),
                    "policy_version": np.full(n_envs, g // 7, dtype=np.int64),
                },
            }
        )
    return stream


# ----------------------------------------------------------------------------------------------------------------
# Brute-force slicer: cut each env's stream into episodes, build every window straight from the rules.
# ----------------------------------------------------------------------------------------------------------------


def _env_slice(x: Any, e: int, axis: int = 0) -> Any:
    if isinstance(x, dict):
        return {key: _env_slice(v, e, axis) for key, v in x.items()}
    return np.take(x, e, axis=axis)


def _zeros_like_obs(x: Any, n: int) -> Any:
    if isinstance(x, dict):
        return {key: _zeros_like_obs(v, n) for key, v in x.items()}
    return np.zeros((n, *np.shape(x)), dtype=np.asarray(x).dtype)


def _set_obs(buf: Any, i: int, value: Any) -> None:
    if isinstance(buf, dict):
        for key in buf:
            _set_obs(buf[key], i, value[key])
    else:
        buf[i] = value


def brute_force(
    stream: Stream, length: int, overlap: int, burn_in: int, flush_points: set[int]
) -> tuple[dict[tuple[int, int, int], dict[str, Any]], dict[tuple[int, int, int], tuple[str, int]]]:
    """
    Expected sequences keyed by (env, global step of the episode's first step, start_step), and when each is emitted.

    ``flush_points`` are the global steps after whose add() a flush() happens; the stream must end with one.
    """
    stride = length - overlap
    T = burn_in + length
    expected: dict[tuple[int, int, int], dict[str, Any]] = {}
    when: dict[tuple[int, int, int], tuple[str, int]] = {}
    for e in range(stream.n_envs):
        episodes: list[tuple[list[int], bool]] = []  # (global steps, cut by a flush)
        current: list[int] = []
        for g, step in enumerate(stream.steps):
            current.append(g)
            if step["terminated"][e] or step["truncated"][e]:
                episodes.append((current, False))
                current = []
            elif g in flush_points:
                episodes.append((current, True))
                current = []
        assert not current, "the stream must end with a flush"
        for gs, cut in episodes:
            L = len(gs)
            k = 0
            while k * stride < L:
                t0 = k * stride
                s0 = t0 - burn_in
                first_step = stream.steps[gs[0]]
                obs = _zeros_like_obs(_env_slice(first_step["observations"], e), T + 1)
                seq: dict[str, Any] = {
                    "observations": obs,
                    "actions": np.zeros((T, *first_step["actions"].shape[1:]), dtype=first_step["actions"].dtype),
                    "rewards": np.zeros(T, dtype=np.float32),
                    "terminated": np.zeros(T, dtype=bool),
                    "truncated": np.zeros(T, dtype=bool),
                    "mask": np.zeros(T, dtype=bool),
                    "extras": {key: np.zeros((T, *v.shape[1:]), dtype=v.dtype) for key, v in first_step["extras"].items()},
                }
                valid_slots = []
                for i in range(T):
                    s = s0 + i
                    if 0 <= s < L:
                        step = stream.steps[gs[s]]
                        _set_obs(obs, i, _env_slice(step["observations"], e))
                        seq["actions"][i] = step["actions"][e]
                        seq["rewards"][i] = step["rewards"][e]
                        seq["terminated"][i] = step["terminated"][e]
                        seq["truncated"][i] = step["truncated"][e]
                        seq["mask"][i] = True
                        for key, v in step["extras"].items():
                            seq["extras"][key][i] = v[e]
                        valid_slots.append(i)
                last_slot = valid_slots[-1]
                last_step = stream.steps[gs[s0 + last_slot]]
                _set_obs(obs, last_slot + 1, _env_slice(last_step["next_observations"], e))
                first_valid_step = stream.steps[gs[s0 + valid_slots[0]]]
                seq["state"] = tuple(_env_slice(s, e, stream.state_env_axis) for s in first_valid_step["state"])
                key = (e, gs[0], s0)
                expected[key] = seq
                window_last = t0 + length - 1
                if window_last <= L - 1:
                    when[key] = ("add", gs[window_last])
                elif not cut:
                    when[key] = ("add", gs[L - 1])
                else:
                    when[key] = ("flush", gs[L - 1])
                if t0 + length >= L:
                    break
                k += 1
    return expected, when


def run_stacker(stacker: SequenceStacker, stream: Stream, flush_points: set[int]) -> list[tuple[tuple[str, int], Sequence]]:
    """Feed the stream to the stacker, flushing after the add() of each flush point; tag sequences by their call."""
    out = []
    for g, step in enumerate(stream.steps):
        seqs = stacker.add(
            step["observations"],
            step["actions"],
            step["rewards"],
            step["terminated"],
            step["truncated"],
            step["next_observations"],
            step["state"],
            **step["extras"],
        )
        out.extend((("add", g), s) for s in seqs)
        if g in flush_points:
            out.extend((("flush", g), s) for s in stacker.flush())
    return out


def _assert_obs_equal(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for key in expected:
            _assert_obs_equal(actual[key], expected[key], f"{where}[{key}]")
    else:
        assert actual.shape == expected.shape and actual.dtype == expected.dtype, where
        np.testing.assert_array_equal(actual, expected, err_msg=where)


def compare_with_brute_force(
    stream: Stream, length: int, overlap: int, burn_in: int, flush_points: set[int] | None = None
) -> list[Sequence]:
    """Run the stacker and the brute-force slicer on the stream and compare every field of every sequence."""
    flush_points = set(flush_points or set()) | {len(stream.steps) - 1}
    stacker = SequenceStacker(length=length, overlap=overlap, burn_in=burn_in, state_env_axis=stream.state_env_axis)
    emitted = run_stacker(stacker, stream, flush_points)
    expected, when = brute_force(stream, length, overlap, burn_in, flush_points)

    actual: dict[tuple[int, int, int], Sequence] = {}
    actual_when: dict[tuple[int, int, int], tuple[str, int]] = {}
    for tag, seq in emitted:
        assert seq.mask.any()
        last_valid = int(np.flatnonzero(seq.mask)[-1])
        # Every sequence is emitted by the call that added its last valid step: that fixes its episode.
        episode_first_g = tag[1] - (seq.start_step + last_valid)
        key = (seq.env_index, episode_first_g, seq.start_step)
        assert key not in actual, f"sequence {key} emitted twice"
        actual[key] = seq
        actual_when[key] = tag
    assert set(actual) == set(expected)
    assert actual_when == when

    T = burn_in + length
    episode_ids: dict[tuple[int, int], int] = {}
    for key, exp in expected.items():
        seq = actual[key]
        where = f"sequence {key}"
        _assert_obs_equal(seq.observations, exp["observations"], f"{where} observations")
        for name in ("actions", "rewards", "terminated", "truncated", "mask"):
            got = getattr(seq, name)
            assert got.shape == exp[name].shape and got.dtype == exp[name].dtype, f"{where} {name}"
            np.testing.assert_array_equal(got, exp[name], err_msg=f"{where} {name}")
        assert seq.rewards.dtype == np.float32 and seq.mask.shape == (T,)
        assert set(seq.extras) == set(exp["extras"])
        for name, v in exp["extras"].items():
            assert seq.extras[name].shape == v.shape, f"{where} extras[{name}]"
            np.testing.assert_array_equal(seq.extras[name], v, err_msg=f"{where} extras[{name}]")
        assert len(seq.state) == len(exp["state"])
        for got_s, exp_s in zip(seq.state, exp["state"], strict=True):
            assert got_s.shape == exp_s.shape
            np.testing.assert_array_equal(got_s, exp_s, err_msg=f"{where} state")
        episode = key[:2]
        episode_ids.setdefault(episode, seq.episode_id)
        assert episode_ids[episode] == seq.episode_id, f"{where}: episode_id changes within an episode"
    assert len(set(episode_ids.values())) == len(episode_ids), "episode ids are not unique per episode"
    return [seq for _, seq in emitted]


# ----------------------------------------------------------------------------------------------------------------
# Brute-force comparisons
# ----------------------------------------------------------------------------------------------------------------

# Episodes shorter than burn_in, than a stride, exactly a stride / length / burn_in + length long, and long ones.
MIXED_PLANS = [
    [(1, "term"), (3, "trunc"), (5, "term"), (17, "term"), (2, "term")],
    [(8, "trunc"), (12, "term"), (4, "term"), (6, "trunc")],
    [(23, "term"), (1, "trunc"), (9, "term"), (3, "term")],
]


@pytest.mark.parametrize(
    "length, overlap, burn_in",
    [
        (5, 2, 3),  # stride 3
        (5, 2, 0),  # no burn-in
        (5, 0, 3),  # no overlap
        (4, 3, 6),  # stride 1, burn-in longer than the window
        (1, 0, 0),  # one-step sequences
        (1, 0, 2),
        (3, 1, 1),
    ],
)
def test_matches_brute_force(length: int, overlap: int, burn_in: int) -> None:
    stream = make_stream(MIXED_PLANS, n_steps=90, seed=length * 100 + overlap * 10 + burn_in)
    seqs = compare_with_brute_force(stream, length, overlap, burn_in)
    assert len(seqs) > 0


def test_matches_brute_force_paper_defaults() -> None:
    plans = [[(100, "term"), (30, "trunc")], [(200, "trunc"), (81, "term")], [(39, "term"), (120, "term"), (80, "term")]]
    stream = make_stream(plans, n_steps=420, seed=1)
    compare_with_brute_force(stream, length=80, overlap=40, burn_in=40)


def test_dict_observations_and_state_env_axis_1() -> None:
    stream = make_stream(MIXED_PLANS, n_steps=70, dict_obs=True, state_env_axis=1, seed=3)
    seqs = compare_with_brute_force(stream, length=5, overlap=2, burn_in=3)
    assert isinstance(seqs[0].observations, dict)
    assert seqs[0].observations["img"].shape == (8 + 1, 2, 2) and seqs[0].observations["img"].dtype == np.uint8
    assert seqs[0].state[0].shape == (2, 3)  # (n_layers, hidden): the env axis removed


def test_flush_in_the_middle_matches_brute_force() -> None:
    stream = make_stream(MIXED_PLANS, n_steps=80, seed=5)
    compare_with_brute_force(stream, length=5, overlap=2, burn_in=3, flush_points={10, 11, 40})


# ----------------------------------------------------------------------------------------------------------------
# Hand-checked cases
# ----------------------------------------------------------------------------------------------------------------


def _single_env_episode(length: int, overlap: int, burn_in: int, ep_len: int, kind: str = "term") -> list[Sequence]:
    stream = make_stream([[(ep_len, kind)]], n_steps=ep_len)
    stacker = SequenceStacker(length=length, overlap=overlap, burn_in=burn_in)
    return [s for _, s in run_stacker(stacker, stream, flush_points=set())]


def test_paper_example_episode_of_100_steps() -> None:
    seqs = _single_env_episode(80, 40, 40, ep_len=100)
    assert [s.start_step for s in seqs] == [-40, 0]  # training windows at steps 0 and 40 only
    first, second = seqs
    assert first.mask.tolist() == [False] * 40 + [True] * 80
    assert second.mask.tolist() == [True] * 100 + [False] * 20
    # Observation vec = (env, episode, step, +1 / -1 for terminal).
    np.testing.assert_array_equal(first.observations[40:121, 2], np.arange(81))
    np.testing.assert_array_equal(second.observations[:101, 2], np.arange(101))
    assert second.observations[100, 3] == -1.0  # terminal observation right after the last step
    assert not second.observations[101:].any()  # padding
    assert second.terminated.tolist() == [False] * 99 + [True] + [False] * 20
    assert not second.truncated.any() and not first.terminated.any()
    # The state is the one passed with the first valid step (step 0 for both, global step 0 => value 0).
    assert first.state[0][0] == 0.0 and second.state[0][0] == 0.0


def test_state_is_the_one_before_the_first_valid_slot() -> None:
    seqs = _single_env_episode(4, 2, 2, ep_len=11)
    # Windows at 0, 2, 4, 6, 8 (the window at 8 reaches step 10, the last), start steps -2, 0, 2, 4, 6.
    assert [s.start_step for s in seqs] == [-2, 0, 2, 4, 6]
    for s in seqs:
        first_valid_step = max(0, s.start_step)
        assert s.state[0][0] == first_valid_step  # h encodes the global step (env 0)
        assert s.state[1][0] == -first_valid_step
        assert s.observations[int(np.argmax(s.mask)), 2] == first_valid_step
    assert seqs[-1].mask.tolist() == [True] * 5 + [False]
    assert seqs[-1].truncated.sum() == 0 and seqs[-1].terminated[4]


def test_short_episodes_are_kept_whole() -> None:
    seqs = _single_env_episode(5, 2, 3, ep_len=2, kind="trunc")
    assert len(seqs) == 1
    (s,) = seqs
    assert s.start_step == -3
    assert s.mask.tolist() == [False] * 3 + [True] * 2 + [False] * 3
    assert s.truncated.tolist() == [False] * 4 + [True] + [False] * 3 and not s.terminated.any()
    np.testing.assert_array_equal(s.observations[3:6, 2], [0, 1, 2])
    assert s.observations[5, 3] == -1.0


def test_episode_of_exactly_one_window_emits_one_sequence() -> None:
    seqs = _single_env_episode(5, 2, 3, ep_len=5)
    assert [s.start_step for s in seqs] == [-3]
    assert seqs[0].mask.tolist() == [False] * 3 + [True] * 5
    assert seqs[0].terminated.tolist() == [False] * 7 + [True]
    assert seqs[0].observations[8, 3] == -1.0  # terminal observation at index T


def test_extras_aligned_with_their_steps() -> None:
    stream = make_stream([[(7, "term")], [(4, "trunc")]], n_steps=14, seed=9)
    stacker = SequenceStacker(length=3, overlap=1, burn_in=2)
    for (_, g), s in run_stacker(stacker, stream, flush_points={13}):
        last_valid = int(np.flatnonzero(s.mask)[-1])
        for i in np.flatnonzero(s.mask):
            step_g = g - (last_valid - i)
            assert s.extras["log_prob"][i] == stream.steps[step_g]["extras"]["log_prob"][s.env_index]
            assert s.actions[i] == 100 * s.env_index + step_g
        assert not s.extras["log_prob"][~s.mask].any()


# ----------------------------------------------------------------------------------------------------------------
# flush
# ----------------------------------------------------------------------------------------------------------------


def _add(stacker: SequenceStacker, stream: Stream, g: int) -> list[Sequence]:
    step = stream.steps[g]
    return stacker.add(
        step["observations"],
        step["actions"],
        step["rewards"],
        step["terminated"],
        step["truncated"],
        step["next_observations"],
        step["state"],
        **step["extras"],
    )


def test_flush_semantics() -> None:
    stream = make_stream([[(100, "term")]], n_steps=12)
    stacker = SequenceStacker(length=4, overlap=2, burn_in=2)
    assert stacker.flush() == []  # nothing added yet
    emitted = [s for g in range(5) for s in _add(stacker, stream, g)]
    assert [s.start_step for s in emitted] == [-2]  # window at 0 complete after step 3
    flushed = stacker.flush()
    assert len(flushed) == 1
    (f,) = flushed
    assert f.start_step == 0 and f.mask.tolist() == [True] * 5 + [False]
    assert not f.terminated.any() and not f.truncated.any()
    np.testing.assert_array_equal(f.observations[:6, 2], np.arange(6))  # step 5's obs is the bootstrap observation
    assert f.observations[5, 3] == 1.0 and not f.observations[6].any()
    assert f.episode_id == emitted[0].episode_id
    assert stacker.flush() == []  # forgotten

    # The next add starts a new episode: its burn-in does not reach into the steps before the flush.
    after = [s for g in range(5, 9) for s in _add(stacker, stream, g)]
    assert len(after) == 1
    assert after[0].start_step == -2 and after[0].mask.tolist() == [False] * 2 + [True] * 4
    np.testing.assert_array_equal(after[0].observations[2:7, 2], [5, 6, 7, 8, 9])
    assert after[0].state[0][0] == 5.0
    assert after[0].episode_id != f.episode_id


def test_after_flush_the_first_observations_are_those_passed() -> None:
    # A collection phase ends with flush(), then the envs are reset: the new episodes start from the new observations.
    stacker = SequenceStacker(length=2, overlap=0, burn_in=1)
    zeros, ones = np.zeros((2, 1), np.float32), np.ones((2, 1), np.float32)
    no = np.zeros(2, dtype=bool)
    stacker.add(zeros, np.zeros(2), np.zeros(2), no, no, zeros + 5, None)
    assert len(stacker.flush()) == 2
    stacker.add(ones, np.zeros(2), np.zeros(2), no, no, ones + 1, None)
    seqs = stacker.add(ones + 1, np.zeros(2), np.zeros(2), no, no, ones + 2, None)
    assert len(seqs) == 2
    for s in seqs:
        np.testing.assert_array_equal(s.observations[:, 0], [0, 1, 2, 3])  # front padding, then 1, 2 and next obs 3
        assert s.state == ()


def test_within_an_episode_observations_come_from_the_previous_next_observations() -> None:
    # Documented contract: only the first observation of an episode is read from `observations`.
    stacker = SequenceStacker(length=3, overlap=0, burn_in=0)
    no, yes = np.zeros(1, dtype=bool), np.ones(1, dtype=bool)
    obs = [np.full((1, 1), v, np.float32) for v in range(10)]
    stacker.add(obs[0], np.zeros(1), np.zeros(1), no, no, obs[1], None)
    stacker.add(obs[7], np.zeros(1), np.zeros(1), no, no, obs[2], None)  # inconsistent `observations` is not read
    (s,) = stacker.add(obs[2], np.zeros(1), np.zeros(1), yes, no, obs[3], None)
    np.testing.assert_array_equal(s.observations[:, 0], [0, 1, 2, 3])
    (s,) = stacker.add(obs[4], np.zeros(1), np.zeros(1), yes, no, obs[5], None)  # a new episode: read
    np.testing.assert_array_equal(s.observations[:, 0], [4, 5, 0, 0])


def test_flush_right_after_a_completed_window_emits_nothing() -> None:
    stream = make_stream([[(100, "term")]], n_steps=4)
    stacker = SequenceStacker(length=4, overlap=2, burn_in=2)
    emitted = [s for g in range(4) for s in _add(stacker, stream, g)]
    assert len(emitted) == 1
    assert stacker.flush() == []  # the window at 2 would only repeat steps covered by the window at 0


# ----------------------------------------------------------------------------------------------------------------
# stack_sequences
# ----------------------------------------------------------------------------------------------------------------


def test_stack_sequences_shapes_and_content() -> None:
    stream = make_stream(MIXED_PLANS, n_steps=30, dict_obs=True, state_env_axis=1, seed=2)
    stacker = SequenceStacker(length=5, overlap=2, burn_in=3, state_env_axis=1)
    seqs = [s for _, s in run_stacker(stacker, stream, flush_points={29})]
    batch = stack_sequences(seqs)
    B, T = len(seqs), 8
    assert batch["observations"]["vec"].shape == (B, T + 1, 4)
    assert batch["observations"]["img"].shape == (B, T + 1, 2, 2)
    assert batch["actions"].shape == (B, T)
    for name in ("rewards", "terminated", "truncated", "mask"):
        assert batch[name].shape == (B, T)
    assert batch["rewards"].dtype == np.float32 and batch["mask"].dtype == bool
    assert [s.shape for s in batch["state"]] == [(B, 2, 3), (B, 2, 3)]
    assert batch["extras"]["logits"].shape == (B, T, 3) and batch["extras"]["log_prob"].shape == (B, T)
    for name in ("env_index", "start_step", "episode_id"):
        assert batch[name].shape == (B,)
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(batch["observations"]["vec"][b], s.observations["vec"])
        np.testing.assert_array_equal(batch["state"][1][b], s.state[1])
        np.testing.assert_array_equal(batch["mask"][b], s.mask)
        assert batch["start_step"][b] == s.start_step and batch["env_index"][b] == s.env_index


def test_stack_sequences_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        stack_sequences([])
    short = _single_env_episode(3, 1, 0, ep_len=3)
    long = _single_env_episode(5, 1, 0, ep_len=5)
    with pytest.raises(ValueError, match="different lengths"):
        stack_sequences(short + long)


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(length=0), "length"),
        (dict(length=4, overlap=4), "overlap"),
        (dict(length=4, overlap=-1), "overlap"),
        (dict(burn_in=-1), "burn_in"),
        (dict(length=2.5), "length"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SequenceStacker(**kwargs)


def test_inconsistent_steps_raise() -> None:
    stream3 = make_stream(MIXED_PLANS, n_steps=2)
    stream2 = make_stream(MIXED_PLANS[:2], n_steps=2)
    stacker = SequenceStacker(length=3, overlap=1, burn_in=1)
    _add(stacker, stream3, 0)
    with pytest.raises(ValueError, match="n_envs=3"):
        _add(stacker, stream2, 1)
    step = stream3.steps[1]
    args = (step["observations"], step["actions"], step["rewards"], step["terminated"], step["truncated"])
    with pytest.raises(ValueError, match="extras"):
        stacker.add(*args, step["next_observations"], step["state"], log_prob=step["extras"]["log_prob"])
    with pytest.raises(ValueError, match="state"):
        stacker.add(*args, step["next_observations"], step["state"][:1], **step["extras"])
    with pytest.raises(ValueError, match="next_observations"):
        stacker.add(*args, step["next_observations"][:, :2], step["state"], **step["extras"])


def test_real_next_obs_errors_and_dict() -> None:
    new_obs = {"a": np.zeros((2, 3)), "b": np.ones((2, 1), dtype=np.int64)}
    infos = [{}, {"terminal_observation": {"a": np.full(3, 7.0), "b": np.array([5])}}]
    out = SequenceStacker.real_next_obs(new_obs, np.array([False, True]), infos)
    np.testing.assert_array_equal(out["a"], [[0, 0, 0], [7, 7, 7]])
    np.testing.assert_array_equal(out["b"], [[1], [5]])
    assert not new_obs["a"].any()  # not modified in place
    with pytest.raises(ValueError, match="terminal_observation"):
        SequenceStacker.real_next_obs(new_obs, np.array([True, False]), infos)


# ----------------------------------------------------------------------------------------------------------------
# A real SB3 VecEnv
# ----------------------------------------------------------------------------------------------------------------


def _cartpole_vec_env(n_envs: int, max_episode_steps: int) -> DummyVecEnv:
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1", max_episode_steps=max_episode_steps) for _ in range(n_envs)])
    venv.seed(0)
    return venv


def test_real_next_obs_on_dummy_vec_env() -> None:
    venv = _cartpole_vec_env(3, max_episode_steps=500)
    rng = np.random.default_rng(0)
    obs = venv.reset()
    n_done = 0
    for _ in range(300):
        new_obs, _, dones, infos = venv.step(rng.integers(0, 2, size=3))
        before = new_obs.copy()
        real = SequenceStacker.real_next_obs(new_obs, dones, infos)
        np.testing.assert_array_equal(new_obs, before)
        for i in range(3):
            if dones[i]:
                n_done += 1
                np.testing.assert_array_equal(real[i], infos[i]["terminal_observation"])
                assert not np.array_equal(real[i], new_obs[i])  # the reset observation is not the terminal one
            else:
                np.testing.assert_array_equal(real[i], new_obs[i])
        obs = new_obs
    assert n_done > 5
    assert obs.shape == (3, 4)


def test_end_to_end_on_dummy_vec_env() -> None:
    n_envs, length, overlap, burn_in = 3, 8, 4, 4
    venv = _cartpole_vec_env(n_envs, max_episode_steps=15)  # some episodes end by truncation
    rng = np.random.default_rng(1)
    stream = Stream(n_envs=n_envs, state_env_axis=1)
    obs = venv.reset()
    terminal_obs: dict[tuple[int, int], np.ndarray] = {}
    hidden = np.zeros((1, n_envs, 2), dtype=np.float32)
    for g in range(300):
        actions = rng.integers(0, 2, size=n_envs)
        new_obs, rewards, dones, infos = venv.step(actions)
        truncated = dones & np.array([info.get("TimeLimit.truncated", False) for info in infos])
        state_before = (hidden.copy(),)
        hidden = hidden + 1.0  # a toy recurrent state that advances every step
        hidden[:, dones] = 0.0  # reset at episode starts
        for i in np.flatnonzero(dones):
            terminal_obs[(int(i), g)] = infos[i]["terminal_observation"]
        stream.steps.append(
            {
                "observations": obs,
                "actions": actions,
                "rewards": rewards,
                "terminated": dones & ~truncated,
                "truncated": truncated,
                "next_observations": SequenceStacker.real_next_obs(new_obs, dones, infos),
                "state": state_before,
                "extras": {"prev_action": rng.integers(0, 2, size=n_envs)},
            }
        )
        obs = new_obs
    assert any(s["truncated"].any() for s in stream.steps) and any(s["terminated"].any() for s in stream.steps)
    seqs = compare_with_brute_force(stream, length, overlap, burn_in)

    # Independently: every sequence whose last valid step ended the episode holds that episode's terminal observation.
    stacker = SequenceStacker(length=length, overlap=overlap, burn_in=burn_in, state_env_axis=1)
    n_checked = 0
    for (_, g), s in run_stacker(stacker, stream, flush_points={299}):
        last_valid = int(np.flatnonzero(s.mask)[-1])
        if s.terminated[last_valid] or s.truncated[last_valid]:
            np.testing.assert_array_equal(s.observations[last_valid + 1], terminal_obs[(s.env_index, g)])
            n_checked += 1
        # The toy state counts steps since the episode start: before the first valid step it is that step's index.
        np.testing.assert_array_equal(s.state[0], np.full((1, 2), max(0, s.start_step), dtype=np.float32))
    assert n_checked == len(terminal_obs)  # exactly one sequence ends at each episode's last step
    batch = stack_sequences(seqs)
    assert batch["observations"].shape == (len(seqs), length + burn_in + 1, 4)


# ----------------------------------------------------------------------------------------------------------------
# Property-based
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def _configs(draw: st.DrawFn) -> tuple[int, int, int, list[list[tuple[int, str]]], int, set[int]]:
    length = draw(st.integers(1, 10))
    overlap = draw(st.integers(0, length - 1))
    burn_in = draw(st.integers(0, 10))
    n_envs = draw(st.integers(1, 3))
    episode = st.tuples(st.integers(1, 30), st.sampled_from(["term", "trunc"]))
    plans = [draw(st.lists(episode, min_size=1, max_size=4)) for _ in range(n_envs)]
    n_steps = draw(st.integers(1, 60))
    flush_points = set(draw(st.lists(st.integers(0, n_steps - 1), max_size=2)))
    return length, overlap, burn_in, plans, n_steps, flush_points


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs())
def test_property_matches_brute_force(config: tuple[int, int, int, list[list[tuple[int, str]]], int, set[int]]) -> None:
    length, overlap, burn_in, plans, n_steps, flush_points = config
    stream = make_stream(plans, n_steps=n_steps)
    compare_with_brute_force(stream, length, overlap, burn_in, flush_points)
