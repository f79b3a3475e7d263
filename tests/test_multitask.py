"""Tests for the multi-task env tools: padding against the unpadded games, task ids through VecEnvs, the errors."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack

from sb3_frontier.envs import register_envs
from sb3_frontier.wrappers.multitask import (
    PadActions,
    PadObservation,
    TaskId,
    count_tasks,
    make_multitask_vec_env,
    task_ids,
)

register_envs()

#: Three MinAtar games with 4, 6 and 4 channels and minimal action sets of 3, 4 and 5 actions (6 in the full set).
GAMES = ["MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Asterix-v1"]
CHANNELS = [4, 6, 4]

#: Checker warnings that are not findings, and why (as in tests/test_env_checkers.py).
ALLOWED = {
    "is different from the unwrapped version": "a wrapper is checked",
    "It seems that your observation  is an image": "MinAtar boards are bool planes, not images",
    "It seems that your observation space  is an image": "MinAtar boards are bool planes, not images",
    "The minimal resolution for an image": "MinAtar boards are bool planes, not images",
    "minimum value is -infinity": "CartPole's own velocity bounds",
    "maximum value is infinity": "CartPole's own velocity bounds",
}


class FloatBoard(gym.Env[np.ndarray, np.int64]):
    """A MinAtar-sized float32 board: the same rank as MinAtar's bool boards, another dtype."""

    def __init__(self, low: float = 0.0) -> None:
        self.observation_space = gym.spaces.Box(low, 1.0, shape=(10, 10, 3), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(6)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.full(self.observation_space.shape, self.observation_space.low.max(), np.float32), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.full(self.observation_space.shape, self.observation_space.high.min(), np.float32), 0.0, True, False, {}


FLOAT_BOARD_ID = "sb3_frontier_tests/FloatBoard-v0"
if FLOAT_BOARD_ID not in gym.registry:
    gym.register(id=FLOAT_BOARD_ID, entry_point=FloatBoard)


def check_without_findings(check: Callable[[], None]) -> None:
    """Run an env checker; fail on any warning not in ``ALLOWED``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check()
    findings = [str(w.message) for w in caught if not any(allowed in str(w.message) for allowed in ALLOWED)]
    assert findings == []


def rollout(env: gym.Env, actions: list[int], seed: int) -> list[tuple[Any, ...]]:
    """``(obs, reward, terminated, truncated)`` of each step under ``actions``, resetting (unseeded) at episode ends."""
    obs, _ = env.reset(seed=seed)
    steps: list[tuple[Any, ...]] = [(obs, 0.0, False, False)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        steps.append((obs, float(reward), terminated, truncated))
        if terminated or truncated:
            obs, _ = env.reset()
            steps.append((obs, 0.0, False, False))
    return steps


def assert_same_rollouts(first: list[tuple[Any, ...]], second: list[tuple[Any, ...]]) -> None:
    assert len(first) == len(second)
    for (obs_a, *rest_a), (obs_b, *rest_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert rest_a == rest_b


# ---------------------------------------------------------------------------------------------------------- wrappers


def test_pad_observation_keeps_the_observation_in_its_slice_and_zeros_elsewhere() -> None:
    raw = gym.make("MinAtar/Breakout-v1")
    padded = PadObservation(gym.make("MinAtar/Breakout-v1"), (12, 11, 10))
    assert padded.observation_space == gym.spaces.Box(0.0, 1.0, (12, 11, 10), bool)
    actions = np.random.default_rng(0).integers(0, 3, size=60).tolist()
    raw_steps, padded_steps = rollout(raw, actions, seed=1), rollout(padded, actions, seed=1)
    assert len(raw_steps) == len(padded_steps)
    assert any(obs.any() for obs, *_ in raw_steps)  # the comparison below is not between empty boards
    for (raw_obs, *raw_rest), (padded_obs, *padded_rest) in zip(raw_steps, padded_steps, strict=True):
        assert padded_obs.dtype == np.bool_ and padded_obs.shape == (12, 11, 10)
        assert padded_obs in padded.observation_space
        np.testing.assert_array_equal(padded_obs[:10, :10, :4], raw_obs)
        untouched = padded_obs.copy()
        untouched[:10, :10, :4] = False
        assert not untouched.any()
        assert raw_rest == padded_rest


def test_pad_observation_bounds_float_box() -> None:
    env = PadObservation(gym.make("MountainCar-v0"), (4,))  # low [-1.2, -0.07], high [0.6, 0.07]
    np.testing.assert_allclose(env.observation_space.low, [-1.2, -0.07, -1.2, -1.2], rtol=1e-6)
    np.testing.assert_allclose(env.observation_space.high, [0.6, 0.07, 0.6, 0.6], rtol=1e-6)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs[2:].tolist() == [0.0, 0.0]
    wide = PadObservation(gym.make("MountainCar-v0"), (3,), low=-2.0, high=np.array([1.0, 1.0, 5.0]))
    np.testing.assert_allclose(wide.observation_space.low, [-2.0, -2.0, -2.0])
    np.testing.assert_allclose(wide.observation_space.high, [1.0, 1.0, 5.0])


def test_pad_observation_rejects_what_it_cannot_pad() -> None:
    with pytest.raises(ValueError, match="ranks differ"):
        PadObservation(gym.make("MinAtar/Breakout-v1"), (10, 10))
    with pytest.raises(ValueError, match="smaller shape"):
        PadObservation(gym.make("MinAtar/Breakout-v1"), (10, 9, 6))
    with pytest.raises(ValueError, match="Box observation"):
        PadObservation(gym.make("FrozenLake-v1"), (4,))
    with pytest.raises(ValueError, match="padding value 0"):
        PadObservation(FloatBoard(low=0.5), (10, 10, 4))  # 0 is below the board's bounds
    with pytest.raises(ValueError, match="contain the env's bounds"):
        PadObservation(gym.make("MountainCar-v0"), (3,), low=-1.0, high=1.0)  # the position goes down to -1.2


def test_pad_actions_passes_the_env_actions_and_maps_the_others_to_the_no_op() -> None:
    rng = np.random.default_rng(0)
    # the comparisons are sensitive to the action: moving the paddle changes the trajectory
    moves = rng.integers(1, 3, size=80).tolist()
    assert_no_op = rollout(gym.make("MinAtar/Breakout-v1"), [0] * 80, seed=2)
    with pytest.raises(AssertionError):
        assert_same_rollouts(rollout(gym.make("MinAtar/Breakout-v1"), moves, seed=2), assert_no_op)

    padded = PadActions(gym.make("MinAtar/Breakout-v1"), 6)
    assert padded.action_space == gym.spaces.Discrete(6)
    in_range = rng.integers(0, 3, size=200).tolist()
    assert_same_rollouts(rollout(padded, in_range, seed=3), rollout(gym.make("MinAtar/Breakout-v1"), in_range, seed=3))
    beyond = rng.integers(3, 6, size=80).tolist()
    assert_same_rollouts(rollout(padded, beyond, seed=2), assert_no_op)
    mixed = rng.integers(0, 6, size=200).tolist()
    as_env_actions = [a if a < 3 else 0 for a in mixed]
    assert_same_rollouts(rollout(padded, mixed, seed=4), rollout(gym.make("MinAtar/Breakout-v1"), as_env_actions, seed=4))
    assert [int(padded.action(a)) for a in range(6)] == [0, 1, 2, 0, 0, 0]
    assert [int(PadActions(gym.make("MinAtar/Breakout-v1"), 5, fallback=2).action(a)) for a in range(5)] == [0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="outside the padded action space"):
        padded.step(6)


def test_pad_actions_and_task_id_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n >= the env's 3 actions"):
        PadActions(gym.make("MinAtar/Breakout-v1"), 2)
    with pytest.raises(ValueError, match="fallback"):
        PadActions(gym.make("MinAtar/Breakout-v1"), 6, fallback=3)
    with pytest.raises(ValueError, match="Discrete action space"):
        PadActions(gym.make("Pendulum-v1"), 2)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="task_id"):
            TaskId(gym.make("CartPole-v1"), bad)  # type: ignore[arg-type]


def test_task_id_tags_the_env_and_every_info() -> None:
    env = TaskId(gym.make("CartPole-v1"), 3)
    assert env.task_id == 3 and env.get_wrapper_attr("task_id") == 3
    _, info = env.reset(seed=0)
    assert info["task_id"] == 3
    _, _, _, _, info = env.step(0)
    assert info["task_id"] == 3


def test_env_checkers_pass_on_padded_envs() -> None:
    # gymnasium's checker rejects MinAtar itself (its reset does not call super().reset(seed=seed)), so it checks the
    # wrappers on CartPole; SB3's checker checks them on a MinAtar game.
    check_without_findings(lambda: gym_check_env(TaskId(PadActions(PadObservation(gym.make("CartPole-v1"), (6,)), 4), 1)))
    minatar = TaskId(PadActions(PadObservation(gym.make("MinAtar/Breakout-v1"), (10, 10, 10)), 6), 0)
    check_without_findings(lambda: sb3_check_env(minatar, warn=True))


# ------------------------------------------------------------------------------------------------------------ VecEnv


def test_multitask_vec_env_spaces_ids_padding_seeding_and_monitor() -> None:
    seed = 7
    vec_env = make_multitask_vec_env(GAMES, n_envs_per_task=2, seed=seed)
    assert vec_env.num_envs == 6
    assert vec_env.observation_space == gym.spaces.Box(0.0, 1.0, (10, 10, 6), bool)
    assert vec_env.action_space == gym.spaces.Discrete(6)
    assert all(space == vec_env.observation_space for space in vec_env.get_attr("observation_space"))
    assert task_ids(vec_env).tolist() == [0, 0, 1, 1, 2, 2] and task_ids(vec_env).dtype == np.int64
    assert count_tasks(vec_env) == 3
    # full action set: every game acts on MinAtar's 6 shared actions, none is padded
    assert vec_env.get_attr("action_set") == [list(range(6))] * 6
    assert not any(vec_env.env_method("has_wrapper_attr", "n_env_actions"))

    # each env replays the unpadded game seeded with seed + rank, until its first episode ends
    singles = [gym.make(game, use_minimal_action_set=False) for game in GAMES for _ in range(2)]
    single_obs = [env.reset(seed=seed + rank)[0] for rank, env in enumerate(singles)]
    obs = vec_env.reset()
    assert [info["task_id"] for info in vec_env.reset_infos] == [0, 0, 1, 1, 2, 2]
    rng = np.random.default_rng(0)
    returns, lengths = np.zeros(6), np.zeros(6, dtype=int)
    episodes: dict[int, dict[str, Any]] = {}
    for _ in range(3000):
        for rank in range(6):
            if rank not in episodes:
                channels = CHANNELS[rank // 2]
                np.testing.assert_array_equal(obs[rank][..., :channels], single_obs[rank])
                assert not obs[rank][..., channels:].any()
        actions = rng.integers(0, 6, size=6)
        obs, rewards, dones, infos = vec_env.step(actions)
        for rank in range(6):
            assert infos[rank]["task_id"] == rank // 2
            if rank not in episodes:
                single_obs[rank], *_ = singles[rank].step(actions[rank])
                returns[rank] += rewards[rank]
                lengths[rank] += 1
                if dones[rank]:
                    episodes[rank] = infos[rank]["episode"]
        if len(episodes) == 6:
            break
    assert sorted(episodes) == list(range(6))
    assert [episodes[rank]["r"] for rank in range(6)] == pytest.approx(returns.tolist())
    assert [episodes[rank]["l"] for rank in range(6)] == lengths.tolist()
    assert len(set(lengths.tolist())) > 1  # the games (and seeds) really differ
    vec_env.close()


def test_minimal_action_sets_are_padded_with_the_no_op() -> None:
    vec_env = make_multitask_vec_env(GAMES, seed=0, full_action_set=False)
    assert vec_env.action_space == gym.spaces.Discrete(5)  # Asterix's minimal set
    assert [len(action_set) for action_set in vec_env.get_attr("action_set")] == [3, 4, 5]
    assert vec_env.env_method("has_wrapper_attr", "n_env_actions") == [True, True, False]
    assert vec_env.get_attr("n_env_actions", indices=[0, 1]) == [3, 4]
    vec_env.close()


def test_monitor_files_per_rank(tmp_path: Any) -> None:
    vec_env = make_multitask_vec_env(GAMES[:2], n_envs_per_task=2, seed=0, monitor_dir=str(tmp_path))
    vec_env.close()
    assert sorted(os.listdir(tmp_path)) == [f"{rank}.monitor.csv" for rank in range(4)]


def test_different_sizes_of_a_float_box_share_one_space() -> None:
    # CartPole (4,) and MountainCar (2,): padded to (4,), bounds the union of both; 2 and 3 actions, padded to 3
    vec_env = make_multitask_vec_env(["CartPole-v1", "MountainCar-v0"], n_envs_per_task=2, seed=0)
    space = vec_env.observation_space
    assert space.shape == (4,) and space.dtype == np.float32 and vec_env.action_space == gym.spaces.Discrete(3)
    assert all(env_space == space for env_space in vec_env.get_attr("observation_space"))
    assert space.low[0] == pytest.approx(-4.8) and space.high[1] == np.inf and space.low[3] == -np.inf
    obs = vec_env.reset()
    assert all(o in space for o in obs) and not obs[2:, 2:].any()
    vec_env.step(np.array([2, 2, 2, 2]))
    vec_env.close()


def test_frame_stack_and_subprocesses_keep_the_task_ids() -> None:
    stacked = VecFrameStack(make_multitask_vec_env(GAMES, n_envs_per_task=2, seed=0), n_stack=4)
    assert stacked.observation_space.shape == (10, 10, 24)
    assert task_ids(stacked).tolist() == [0, 0, 1, 1, 2, 2] and count_tasks(stacked) == 3
    stacked.close()
    # fork: six spawned workers would each import torch and MinAtar (~5 s of CPU each); spawn is tested below
    subproc = make_multitask_vec_env(
        GAMES, n_envs_per_task=2, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"}
    )
    stacked = VecFrameStack(subproc, n_stack=2)
    assert task_ids(stacked).tolist() == [0, 0, 1, 1, 2, 2]
    stacked.reset()
    _, _, _, infos = stacked.step(np.arange(6))
    assert [info["task_id"] for info in infos] == [0, 0, 1, 1, 2, 2]
    stacked.close()


def test_spawned_workers_build_the_games_without_registering_them() -> None:
    # a spawned worker has no MinAtar ids in its registry: the envs are built from their EnvSpec
    vec_env = make_multitask_vec_env(GAMES[:2], seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "spawn"})
    assert task_ids(vec_env).tolist() == [0, 1]
    obs = vec_env.reset()
    assert obs.shape == (2, 10, 10, 6) and not obs[0, ..., 4:].any()
    vec_env.close()


def untagged_and_tagged(vec_env_cls: type[VecEnv], **kwargs: Any) -> VecEnv:
    return vec_env_cls([lambda: TaskId(gym.make("CartPole-v1"), 0), lambda: gym.make("CartPole-v1")], **kwargs)


def test_task_ids_of_untagged_and_partially_tagged_envs() -> None:
    untagged = make_vec_env("CartPole-v1", n_envs=2)
    assert task_ids(untagged) is None and count_tasks(untagged) == 1
    with pytest.raises(ValueError, match=r"Only some envs carry a task id: envs \[1\]"):
        task_ids(untagged_and_tagged(DummyVecEnv))
    # in a subprocess, asking a missing attribute would kill the worker: the worker must survive the check
    subproc = untagged_and_tagged(SubprocVecEnv, start_method="fork")
    with pytest.raises(ValueError, match="Only some envs"):
        task_ids(subproc)
    assert subproc.get_attr("task_id", indices=[0]) == [0]
    subproc.close()


@pytest.mark.parametrize(
    ("env_ids", "match"),
    [
        (["CartPole-v1", "MinAtar/Breakout-v1"], "ranks differ"),
        (["MinAtar/Breakout-v1", FLOAT_BOARD_ID], "dtypes differ"),
        (["CartPole-v1", "FrozenLake-v1"], "Box observations"),
        (["CartPole-v1", "Pendulum-v1"], "Discrete action spaces"),
    ],
)
def test_incompatible_games_are_rejected(env_ids: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_multitask_vec_env(env_ids)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="sequence of env ids"):
        make_multitask_vec_env("MinAtar/Breakout-v1")
    with pytest.raises(ValueError, match="sequence of env ids"):
        make_multitask_vec_env([])
    with pytest.raises(ValueError, match="n_envs_per_task"):
        make_multitask_vec_env(GAMES, n_envs_per_task=0)


# ---------------------------------------------------------------------------------------------- registered multi-task id

MULTITASK_ID = "sb3_frontier/MinAtarMultiTask-v0"


def test_the_multitask_id_plays_each_game_as_the_vec_env_does() -> None:
    """``gym.make(id, task=k)``: game k in the set's common spaces, tagged k, replaying env k of the VecEnv."""
    seed = 11
    vec_env = make_multitask_vec_env(GAMES, seed=seed)
    vec_obs = vec_env.reset()
    for task, (game, channels) in enumerate(zip(GAMES, CHANNELS, strict=True)):
        env = gym.make(MULTITASK_ID, task=task)
        assert env.observation_space == vec_env.observation_space == gym.spaces.Box(0.0, 1.0, (10, 10, 6), bool)
        assert env.action_space == vec_env.action_space == gym.spaces.Discrete(6)
        assert env.unwrapped.task_id == task and env.get_wrapper_attr("task_id") == task
        obs, info = env.reset(seed=seed + task)  # the VecEnv seeds env k with seed + k
        assert info["task_id"] == task
        np.testing.assert_array_equal(obs, vec_obs[task])
        unpadded, _ = gym.make(game, use_minimal_action_set=False).reset(seed=seed + task)
        np.testing.assert_array_equal(obs[..., :channels], unpadded)
        assert not obs[..., channels:].any()
        for action in range(6):
            obs, reward, _, _, info = env.step(action)
            assert obs in env.observation_space and type(reward) is float and info["task_id"] == task
    vec_env.close()


def test_the_multitask_id_renders_its_game_and_refuses_bad_tasks() -> None:
    env = gym.make(MULTITASK_ID, task=1, render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (10, 10, 3)  # MinAtar's own frame of the game
    for task in (3, -1, True, 1.0):
        with pytest.raises(ValueError, match="task must be an index of env_ids"):
            gym.make(MULTITASK_ID, task=task)
    with pytest.raises(ValueError, match="sequence of env ids"):
        gym.make(MULTITASK_ID, env_ids="MinAtar/Breakout-v1")


def test_multitask_ids_build_every_game_as_one_vec_env() -> None:
    from sb3_frontier.envs.multitask import is_multitask_spec, multitask_env_ids, multitask_vec_env

    spec = gym.spec(MULTITASK_ID)
    assert is_multitask_spec(spec) and not is_multitask_spec(gym.spec("CartPole-v1"))
    assert multitask_env_ids(spec) == tuple(GAMES)
    with pytest.raises(ValueError, match="not a multi-task id"):
        multitask_env_ids(gym.spec("CartPole-v1"))
    vec_env = multitask_vec_env(spec, 2, seed=0)
    assert task_ids(vec_env).tolist() == [0, 0, 1, 1, 2, 2] and vec_env.observation_space.shape == (10, 10, 6)
    vec_env.close()
    # env_kwargs replace the set and its action sets; the rest goes to every game
    two = multitask_vec_env(spec, 1, {"env_ids": GAMES[:2], "full_action_set": False, "sticky_action_prob": 0.0}, seed=0)
    assert task_ids(two).tolist() == [0, 1] and two.action_space == gym.spaces.Discrete(4)  # Space Invaders' minimal set
    assert [game.sticky_action_prob for game in two.get_attr("game")] == [0.0, 0.0]  # MinAtar's default is 0.1
    two.close()
    with pytest.raises(ValueError, match="selects one game"):
        multitask_vec_env(spec, 1, {"task": 0})
