"""Denormal floats flushed to zero while training: the mode's probe and scope, and that every thread and process that
runs the networks during ``learn`` has it (the learner, the sharded-gradient threads, actor processes)."""

from __future__ import annotations

import time

import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_frontier import R2D2, MuZero
from sb3_frontier.common.denormals import denormals_flushed, flush_denormals, set_denormals_flushed
from sb3_frontier.common.runners import ProcessRunner, VecEnvCopy
from sb3_frontier.common.sharded_gradient import ShardedGradient
from tests.runner_helpers import CountingFactory, gather

TINY = th.finfo(th.float32).tiny  # float32's smallest normal number

pytestmark = pytest.mark.skipif(not th.set_flush_denormal(False), reason="this CPU has no flush-to-zero mode")


@pytest.fixture(autouse=True)
def _ieee_mode():
    """Each test starts with IEEE denormals (the default) and leaves them so."""
    set_denormals_flushed(False)
    yield
    set_denormals_flushed(False)


def quarter_of_smallest_normal() -> float:
    return float(th.tensor([TINY]) * 0.25)


def test_the_probe_reads_the_mode_that_torch_sets():
    assert not denormals_flushed() and quarter_of_smallest_normal() == pytest.approx(TINY / 4, rel=1e-6)
    th.set_flush_denormal(True)
    assert denormals_flushed() and quarter_of_smallest_normal() == 0.0


@pytest.mark.parametrize("before", [False, True])
def test_flush_denormals_sets_the_mode_for_its_block_and_restores_the_callers(before: bool):
    set_denormals_flushed(before)
    with flush_denormals():
        assert denormals_flushed()
        with flush_denormals(False):
            assert not denormals_flushed()
        assert denormals_flushed()
    assert denormals_flushed() == before
    with pytest.raises(RuntimeError, match="inside"), flush_denormals(not before):
        assert denormals_flushed() == (not before)
        raise RuntimeError("inside")
    assert denormals_flushed() == before


def test_sharded_gradient_threads_take_the_callers_mode_at_every_call():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    layer = th.nn.Linear(3, 1)
    sharded = ShardedGradient(list(layer.parameters()), n_threads=2)
    x = th.ones(4, 3)

    def shard_loss(shard: slice) -> tuple[th.Tensor, bool]:
        return layer(x[shard]).pow(2).mean(), denormals_flushed()

    try:
        _, modes = sharded(4, shard_loss)  # starts the worker thread in IEEE mode
        assert modes == [False, False]
        with flush_denormals():
            _, modes = sharded(4, shard_loss)
        assert modes == [True, True]  # the worker thread, started before, follows the caller
        _, modes = sharded(4, shard_loss)
        assert modes == [False, False]
    finally:
        sharded.close()
        th.set_num_threads(threads)


class RecordMode(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def _on_step(self) -> bool:
        self.modes.append(denormals_flushed())
        return True


@pytest.mark.parametrize("algorithm", ["muzero", "r2d2"])
def test_learn_flushes_denormals_and_gives_the_caller_its_mode_back(algorithm: str):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    if algorithm == "muzero":
        model = MuZero(
            "MlpPolicy",
            env,
            num_simulations=2,
            batch_size=8,
            learning_starts=8,
            unroll_steps=2,
            policy_kwargs=dict(hidden_dim=16, net_arch=[16]),
            seed=0,
        )
    else:
        model = R2D2("MlpLstmPolicy", env, sequence_length=8, burn_in=2, overlap=4, batch_size=4, learning_starts=16, seed=0)
    trained = []
    original_train = model.train

    def train(*args, **kwargs):
        trained.append(denormals_flushed())
        return original_train(*args, **kwargs)

    model.train = train  # type: ignore[method-assign]
    callback = RecordMode()
    model.learn(64, callback=callback)
    assert callback.modes and all(callback.modes)
    assert trained and all(trained)
    assert not denormals_flushed()


def test_actor_processes_flush_denormals_whatever_the_learners_mode():
    env = make_vec_env("CartPole-v1", n_envs=2)
    runner = ProcessRunner(CountingFactory(VecEnvCopy(env, 0)), 2, th.nn.Linear(2, 1).state_dict(), 2)
    try:
        runner.reset()  # forked from a learner in IEEE mode
        steps = gather(runner, 6)
        deadline = time.monotonic() + 30
        while {s.actor for s in steps} != {0, 1} and time.monotonic() < deadline:
            steps.extend(runner.step())
    finally:
        runner.close()
    assert {s.actor for s in steps} == {0, 1}
    assert all(s.stats["denormals_flushed"] == 1.0 for s in steps)
