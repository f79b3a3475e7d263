"""The runner backends: the local-process runner's transport (parameters, steps, policy lag) and lifecycle (errors,
dead actors, shutdown), and MuZero learning with actor processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_frontier import MuZero
from sb3_frontier.common.runners import ActorError, ActorStep, ProcessRunner, SharedParameters, VecEnvCopy
from sb3_frontier.common.runners.processes import StopFlag
from tests.runner_helpers import BrokenEnv, CountingActor, CountingFactory, alive, gather

TINY = dict(hidden_dim=16, net_arch=[16])


def make_runner(n_actors: int = 2, seed: int | None = 0, fail_after: int | None = None, **kwargs) -> ProcessRunner:
    env = make_vec_env("CartPole-v1", n_envs=2)
    return ProcessRunner(
        CountingFactory(VecEnvCopy(env, seed), fail_after), n_actors, th.nn.Linear(2, 1).state_dict(), 2, **kwargs
    )


def test_shared_parameters_copy_on_read_only_when_the_version_changed():
    import multiprocessing as mp

    template = {"w": th.zeros(3), "n": th.zeros((), dtype=th.long)}
    shared = SharedParameters(template, mp.get_context("fork"))
    state, version, progress = shared.read(known_version=0)
    assert state is None and version == 0 and progress == 1.0
    shared.write({"w": th.tensor([1.0, 2.0, 3.0]), "n": th.tensor(7)}, version=4, progress_remaining=0.25)
    state, version, progress = shared.read(known_version=0)
    assert version == 4 and progress == 0.25
    assert state is not None and state["w"].tolist() == [1.0, 2.0, 3.0] and state["n"].dtype == th.long
    state["w"] += 1  # a private copy: the shared one is unchanged
    assert shared.tensors["w"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(KeyError, match="lack"):
        shared.write({"w": th.zeros(3)}, version=5, progress_remaining=0.0)


def test_process_runner_gathers_steps_from_every_actor_and_delivers_parameters():
    runner = make_runner(n_actors=2)
    try:
        runner.reset()
        first = gather(runner, 10)
        deadline = time.monotonic() + 30
        while {step.actor for step in first} != {0, 1} and time.monotonic() < deadline:
            first.extend(runner.step())
        assert {step.actor for step in first} == {0, 1}
        assert all(step.n_env_steps == 2 for step in first)
        assert all(step.policy_version == 0 for step in first)
        # New parameters with a version: every actor acts with them (weight sum 2 * 3) after its next read.
        runner.sync({"weight": th.full((1, 2), 3.0), "bias": th.zeros(1)}, version=5, progress_remaining=0.5)
        deadline = time.monotonic() + 30
        seen: dict[int, ActorStep] = {}
        while len(seen) < 2 and time.monotonic() < deadline:
            for step in runner.step():
                if step.policy_version == 5:
                    seen[step.actor] = step
        assert set(seen) == {0, 1}
        assert all(step.stats["weight"] == pytest.approx(6.0) for step in seen.values())
        assert all(step.stats["runner/policy_lag"] == 0.0 for step in seen.values())
    finally:
        runner.close()


def test_process_runner_actors_play_different_episodes():
    runner = make_runner(n_actors=2, seed=3)
    try:
        runner.reset()
        first_obs: dict[int, np.ndarray] = {}
        deadline = time.monotonic() + 30
        while len(first_obs) < 2 and time.monotonic() < deadline:
            for step in runner.step():
                actor, _count, obs, _pid = step.items[0]
                first_obs.setdefault(actor, obs)
        assert not np.allclose(first_obs[0], first_obs[1])  # reseeded copies, not the same inherited env
    finally:
        runner.close()


def test_process_runner_policy_lag_counts_updates_since_the_acting_parameters():
    runner = make_runner(n_actors=1, sync_every=10_000)  # the actor reads the parameters once, at its first step
    try:
        runner.reset()
        gather(runner, 2)
        runner.sync({"weight": th.zeros(1, 2), "bias": th.zeros(1)}, version=7, progress_remaining=0.5)
        lags = [step.stats["runner/policy_lag"] for step in gather(runner, 3)]
        assert lags[-1] == 7.0  # still acting with version 0
    finally:
        runner.close()


def test_process_runner_raises_the_actors_traceback_and_stops_everything():
    runner = make_runner(n_actors=2, fail_after=3)
    runner.reset()
    pids = runner.pids
    with pytest.raises(ActorError, match=r"FloatingPointError: actor \d broke at step 4"):
        gather(runner, 1000)
    assert not runner.running
    deadline = time.monotonic() + 10
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(pids) == []


def test_process_runner_reports_a_killed_actor_instead_of_waiting():
    runner = make_runner(n_actors=2)
    runner.reset()
    gather(runner, 2)
    victim = runner.pids[1]
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(ActorError, match=r"died with exit code -9"):
        gather(runner, 10_000)  # the other actor keeps sending: the dead one must be noticed all the same
    assert time.monotonic() - start < 15
    assert alive(runner.pids) == []


def exited(pid: int) -> bool:
    """Whether the child ``pid`` has ended (a zombie not yet reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class DiesHoldingTheLock(CountingFactory):
    """Actor 1 takes the shared parameters' lock at its third step and is killed holding it (as SIGKILL or the OOM
    killer can catch an actor in the middle of a read); the lock is inherited through fork."""

    def __init__(self, env: VecEnvCopy, lock) -> None:
        super().__init__(env)
        self.lock = lock

    def __call__(self, index: int) -> CountingActor:
        actor = super().__call__(index)
        if index == 1:
            step, lock = actor.step, self.lock

            def step_then_die() -> ActorStep:
                if actor.steps == 2:
                    lock.acquire()
                    os.kill(os.getpid(), signal.SIGKILL)
                return step()

            actor.step = step_then_die  # type: ignore[method-assign]
        return actor


def test_an_actor_killed_holding_the_parameter_lock_is_reported_by_sync_and_close_returns():
    env = make_vec_env("CartPole-v1", n_envs=2)
    params = th.nn.Linear(2, 1).state_dict()
    runner = ProcessRunner(CountingFactory(VecEnvCopy(env, 0)), 2, params, 2, start_method="fork")
    runner.factory = DiesHoldingTheLock(VecEnvCopy(env, 0), runner.parameters.lock)
    runner.reset()
    pids = runner.pids
    victim = pids[1]
    deadline = time.monotonic() + 30
    while not exited(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exited(victim)
    outcome: dict[str, BaseException] = {}

    def sync() -> None:
        try:
            runner.sync(params, 1, 0.5)
        except BaseException as error:  # the test reads it below
            outcome["error"] = error

    thread = threading.Thread(target=sync, daemon=True)  # a writer that waits forever must not hang the suite
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "sync() waits on the lock the dead actor holds"
    assert isinstance(outcome.get("error"), ActorError) and "died" in str(outcome["error"])
    assert not runner.running and alive(pids) == []


def _spin_until_stopped(stop) -> None:
    while not stop.is_set():
        pass


def test_the_stop_flag_can_be_set_after_an_actor_was_killed_while_reading_it():
    """Actors are killed at any moment, most often inside their loop's stop check: the learner's set() must not wait
    on anything the dead actor held (a multiprocessing.Event's lock would stay taken)."""
    context = mp.get_context("fork")
    for _ in range(20):
        stop = StopFlag(context)
        actor = context.Process(target=_spin_until_stopped, args=(stop,), daemon=True)
        actor.start()
        time.sleep(0.02)  # the actor spins in is_set()
        os.kill(actor.pid, signal.SIGKILL)
        actor.join(5)
        setter = threading.Thread(target=stop.set, daemon=True)
        setter.start()
        setter.join(5)
        assert not setter.is_alive(), "set() waits on a lock the killed actor held"
        assert stop.is_set()
    stop = StopFlag(context)
    actor = context.Process(target=_spin_until_stopped, args=(stop,), daemon=True)
    actor.start()
    stop.set()
    actor.join(5)
    assert actor.exitcode == 0  # a live actor sees the flag


def test_process_runner_close_stops_blocked_actors_and_is_idempotent():
    runner = make_runner(n_actors=2)
    runner.reset()
    gather(runner, 1)
    pids = runner.pids
    time.sleep(0.3)  # actors now wait on their full pipes
    start = time.monotonic()
    runner.close()
    runner.close()
    assert time.monotonic() - start < 10
    assert alive(pids) == []
    with pytest.raises(RuntimeError, match="not running"):
        runner.step()


def test_process_runner_rejects_bad_options():
    env = make_vec_env("CartPole-v1", n_envs=1)
    params = th.nn.Linear(2, 1).state_dict()
    with pytest.raises(ValueError, match="n_actors"):
        ProcessRunner(CountingFactory(VecEnvCopy(env, 0)), 0, params, 1)
    with pytest.raises(ValueError, match="sync_every"):
        ProcessRunner(CountingFactory(VecEnvCopy(env, 0)), 1, params, 1, sync_every=0)
    with pytest.raises(ValueError, match="needs the learner's state dict"):
        ProcessRunner(CountingFactory(VecEnvCopy(env, 0)), 1, params, 1).sync(None, 1, 1.0)


# ---------------------------------------------------------------------------------------------------- with MuZero
def tiny_muzero(env, **kwargs) -> MuZero:
    options = dict(num_simulations=4, learning_starts=50, batch_size=16, buffer_size=2000, seed=0, policy_kwargs=TINY)
    return MuZero("MlpPolicy", env, runner="processes", **{**options, **kwargs})


def test_muzero_learns_with_actor_processes_and_leaves_none_behind():
    model = tiny_muzero(make_vec_env("CartPole-v1", n_envs=2), runner_kwargs={"n_actors": 2})
    pids: list[int] = []

    class Watch(BaseCallback):
        def _on_step(self) -> bool:
            if not pids:
                pids.extend(self.model.runner.pids)
            return True

    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(400, callback=Watch())
    assert model.num_timesteps >= 400
    assert len(model.replay_buffer) > 0 and model._n_updates > 0
    assert any(not th.equal(before[k], v) for k, v in model.policy.state_dict().items())
    assert len(pids) == 2
    assert alive(pids) == []
    # Learning continues with new actor processes; the counters carry on.
    steps = model.num_timesteps
    model.learn(200, reset_num_timesteps=False)
    assert model.num_timesteps >= steps + 200


def test_muzero_actor_processes_stop_when_learning_is_interrupted():
    model = tiny_muzero(make_vec_env("CartPole-v1", n_envs=2))
    pids: list[int] = []

    class CtrlC(BaseCallback):
        def _on_step(self) -> bool:
            pids.extend(self.model.runner.pids)
            if self.num_timesteps >= 100:
                raise KeyboardInterrupt
            return True

    with pytest.raises(KeyboardInterrupt):
        model.learn(10_000, callback=CtrlC())
    assert pids and alive(sorted(set(pids))) == []


def test_an_env_that_raises_in_an_actor_reaches_the_caller_with_its_traceback():
    model = tiny_muzero(DummyVecEnv([BrokenEnv]))
    with pytest.raises(ActorError, match="the emulator lost its ROM"):
        model.learn(1000)
    assert not model.runner.running


def test_muzero_actor_processes_with_spawn():
    model = tiny_muzero(make_vec_env("CartPole-v1", n_envs=2), runner_kwargs={"start_method": "spawn"})
    model.learn(200)
    assert model.num_timesteps >= 200 and len(model.replay_buffer) > 0


def test_unknown_runner_options_are_rejected():
    with pytest.raises(ValueError, match="Unknown runner_kwargs"):
        MuZero("MlpPolicy", "CartPole-v1", runner="processes", runner_kwargs={"actors": 2})
    with pytest.raises(ValueError, match="Unknown runner_kwargs"):
        MuZero("MlpPolicy", "CartPole-v1", runner_kwargs={"n_actors": 2})  # in-process has no options
    with pytest.raises(ValueError, match="n_actors"):
        MuZero("MlpPolicy", "CartPole-v1", runner="processes", runner_kwargs={"n_actors": 0})


class SlowBigActor(CountingActor):
    """Takes 0.1 s per step and sends 1 MB with each (more than a pipe holds)."""

    def step(self) -> ActorStep:
        time.sleep(0.1)
        step = super().step()
        step.items.append(np.ones(1 << 20, dtype=np.uint8))
        return step


class SlowBigFactory(CountingFactory):
    def __call__(self, index: int) -> CountingActor:
        return SlowBigActor(self.env.build(index), index)


@pytest.mark.parametrize("max_pending, ahead", [(32, True), (1, False)])
def test_actors_run_ahead_of_the_learner_up_to_max_pending(max_pending: int, ahead: bool) -> None:
    """While the learner is busy, an actor keeps producing (up to max_pending steps), even steps larger than a pipe."""
    env = make_vec_env("CartPole-v1", n_envs=1)
    runner = ProcessRunner(SlowBigFactory(VecEnvCopy(env, 0)), 1, th.nn.Linear(2, 1).state_dict(), 1, max_pending=max_pending)
    try:
        runner.reset()
        runner.step()  # the actor is up
        time.sleep(3.0)  # the learner "trains": ~30 actor steps of 0.1 s
        start = time.perf_counter()
        received = 0
        while received < 20:
            received += len(runner.step())
        elapsed = time.perf_counter() - start
    finally:
        runner.close()
    # produced beforehand: read at once; not produced: 20 steps of 0.1 s each
    assert (elapsed < 1.0) == ahead, elapsed


def test_pooled_vec_normalize_statistics_are_those_of_one_running_mean_over_every_observation():
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    from sb3_frontier.common.runners.normalization import pool_statistics

    rng = np.random.default_rng(0)
    start, *seen = (rng.normal(loc, scale, size=(n, 3)) for loc, scale, n in ((1.0, 2.0, 50), (-3.0, 0.5, 70), (4.0, 1.0, 30)))

    def rms(*arrays: np.ndarray) -> RunningMeanStd:
        out = RunningMeanStd(shape=(3,))
        for array in arrays:
            out.update(array)
        return out

    def stats(*arrays: np.ndarray) -> list:  # one VecNormalize: dict observations and returns
        return [({"a": rms(*arrays), "b": rms(*[2 * x for x in arrays])}, rms(*[x[:, :1].repeat(3, 1) for x in arrays]))]

    base = stats(start)
    pooled = pool_statistics(base, [stats(start, seen[0]), stats(start, seen[1])])
    everything = stats(start, *seen)  # one VecNormalize that saw the start and both actors' observations
    for got, want in [(pooled[0][0]["a"], everything[0][0]["a"]), (pooled[0][0]["b"], everything[0][0]["b"]),
                      (pooled[0][1], everything[0][1])]:  # fmt: skip
        assert got.count == pytest.approx(want.count, rel=1e-12)
        # float64 moments of values of order 10: the raw-moment subtraction loses a few digits, not more
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got.var, want.var, rtol=1e-9, atol=1e-9)
    one = pool_statistics(base, [stats(start, seen[0])])  # one actor: its own statistics
    np.testing.assert_array_equal(one[0][1].mean, stats(start, seen[0])[0][1].mean)
