"""The Ray backend on a local Ray instance: transport (steps in order, parameters through the object store, policy
lag), faults (a killed actor comes back, an env that raises reaches the caller, nothing is left running), and the
three algorithms learning with Ray actors, their batches like the local-process runner's."""

from __future__ import annotations

import copy
import os
import signal
import sys
import time

import cloudpickle
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize

from sb3_frontier import R2D2, MuZero, PopArtIMPALA
from sb3_frontier.algorithms.muzero import REANALYZE_PRESET
from sb3_frontier.algorithms.muzero.planning import Planner
from sb3_frontier.algorithms.muzero.reanalyze import fresh_policy_targets
from sb3_frontier.common.runners import ActorError, ActorStep, RayRunner, RayWorkerPool, VecEnvCopy, Worker
from sb3_frontier.common.runners.ray_runner import ensure_ray
from tests import runner_helpers
from tests.runner_helpers import BrokenEnv, CountingFactory, alive, gather

ray = pytest.importorskip("ray")
# Ray workers receive these modules' classes by value (Ray's own cloudpickle for the actor factory, cloudpickle for envs)
for _pickler in (cloudpickle, ray.cloudpickle):
    for _module in (sys.modules[__name__], runner_helpers):
        _pickler.register_pickle_by_value(_module)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One small local instance for the module (4 logical CPUs: two actors of one CPU fit with room to spare)."""
    started = ensure_ray(None, {"num_cpus": 4, "object_store_memory": 200 * 1024**2})
    yield
    if started:
        ray.shutdown()


def wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still running after up to ``timeout`` seconds (Ray ends a killed actor's process asynchronously)."""
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def make_runner(n_actors: int = 2, fail_after: int | None = None, **kwargs) -> RayRunner:
    env = make_vec_env("CartPole-v1", n_envs=2)
    return RayRunner(CountingFactory(VecEnvCopy(env, 0), fail_after), n_actors, th.nn.Linear(2, 1).state_dict(), 2, **kwargs)


# ------------------------------------------------------------------------------------------------------- transport
def test_steps_come_one_at_a_time_in_each_actors_order_from_every_actor():
    runner = make_runner(steps_per_request=4, max_in_flight=3)
    try:
        runner.reset()
        batches = []
        while min(sum(b[0].actor == a for b in batches) for a in (0, 1)) < 20:  # the actors start at their own pace
            batches.append(runner.step())
    finally:
        runner.close()
    assert all(len(batch) == 1 for batch in batches)  # the learner takes the steps one by one (its replay ratio)
    steps = [batch[0] for batch in batches]
    for actor in (0, 1):
        numbers = [s.items[0][1] for s in steps if s.actor == actor]
        assert numbers == list(range(1, len(numbers) + 1))  # in order, none lost, none twice
    # the two actors step different episodes (reseeded copies)
    first = {s.actor: s.items[0][2] for s in steps if s.items[0][1] == 1}
    assert not np.array_equal(first[0], first[1])


def test_parameters_reach_the_actors_at_their_sync_steps_with_the_policy_lag_logged():
    runner = make_runner(n_actors=1, sync_every=5, steps_per_request=2, max_in_flight=1)
    try:
        runner.reset()
        start = gather(runner, 3)
        layer = th.nn.Linear(2, 1)
        with th.no_grad():
            layer.weight.fill_(2.5)
        runner.sync(layer.state_dict(), version=7, progress_remaining=0.5)
        later = gather(runner, 30)
    finally:
        runner.close()
    steps = start + later
    loaded = [s for s in steps if s.policy_version == 7]
    assert loaded, "the new parameters never arrived"
    first = loaded[0].items[0][1]
    assert (first - 1) % 5 == 0  # loaded at a step that is a multiple of sync_every (0-based)
    assert all(s.stats["weight"] == pytest.approx(5.0) for s in loaded)
    assert all(s.stats["weight"] != pytest.approx(5.0) for s in steps if s.policy_version != 7)
    assert {s.stats["runner/policy_lag"] for s in later if s.policy_version == 0} <= {7.0}
    assert all(s.stats["runner/policy_lag"] == 0.0 for s in loaded)
    assert all(s.stats["denormals_flushed"] == 1.0 for s in steps)  # as the learner trains (common.denormals)


def test_vec_env_wrappers_travel_to_the_actors():
    env = VecFrameStack(VecNormalize(make_vec_env("CartPole-v1", n_envs=2)), 3)
    runner = RayRunner(CountingFactory(VecEnvCopy(env, 0)), 1, th.nn.Linear(2, 1).state_dict(), 2)
    try:
        runner.reset()
        (step,) = runner.step()
    finally:
        runner.close()
    assert step.items[0][2].shape == (12,)  # 3 frames of 4 numbers: the frame stack came along
    assert np.all(np.abs(step.items[0][2]) <= 10.0)  # normalised and clipped by VecNormalize


def test_a_monitored_vec_env_pickles_and_its_copies_write_no_monitor_file(tmp_path):
    import pickle

    env = make_vec_env("CartPole-v1", n_envs=2, monitor_dir=str(tmp_path))
    copy = pickle.loads(pickle.dumps(VecEnvCopy(env, 0))).build(0)
    copy.reset()
    episodes = []
    for _ in range(60):  # always pushing left ends an episode within ~10 steps
        _, _, dones, infos = copy.step(np.zeros(2, dtype=np.int64))
        episodes += [info["episode"] for info, done in zip(infos, dones, strict=True) if done]
    assert episodes and all(e["l"] > 0 for e in episodes)  # the statistics still reach the learner in the infos
    assert copy.envs[0].results_writer is None and env.envs[0].results_writer is not None


# ---------------------------------------------------------------------------------------------------------- faults
def test_a_killed_actor_is_restarted_and_the_others_go_on():
    runner = make_runner(steps_per_request=2)
    try:
        runner.reset()
        gather(runner, 10)
        pids = runner.pids
        os.kill(pids[0], signal.SIGKILL)
        steps: list[ActorStep] = []
        while sum(s.actor == 0 and s.items[0][3] != pids[0] for s in steps) < 5:  # until the new actor 0 has stepped
            steps.extend(runner.step())
        new_pids = runner.pids
    finally:
        runner.close()
    assert runner.restarts == 1
    assert new_pids[0] != pids[0] and new_pids[1] == pids[1]
    after = [s for s in steps if s.actor == 0 and s.items[0][3] == new_pids[0]]
    assert after, "the restarted actor produced nothing"
    numbers = [s.items[0][1] for s in after]
    assert numbers == list(range(1, len(numbers) + 1))  # fresh episodes, in order
    assert wait_dead(pids + new_pids) == []


def test_an_actor_that_keeps_dying_is_reported_once_the_restarts_are_used():
    runner = make_runner(n_actors=1, max_restarts=1)
    runner.reset()
    gather(runner, 2)
    with pytest.raises(ActorError, match="restart"):
        for _ in range(3):
            restarts = runner.restarts
            os.kill(runner.pids[0], signal.SIGKILL)
            while runner.restarts == restarts:  # steps it answered before it died may still arrive
                runner.step()
    assert not runner.running


def test_an_actor_that_raises_reaches_the_learner_with_its_traceback_and_everything_stops():
    runner = make_runner(fail_after=3)
    runner.reset()
    pids = runner.pids
    with pytest.raises(ActorError) as error:
        gather(runner, 100)
    message = str(error.value)
    assert "broke at step 4" in message and "FloatingPointError" in message and "in step" in message, message
    assert not runner.running
    assert wait_dead(pids) == []
    runner.close()  # idempotent


def test_close_kills_every_actor_and_bad_options_are_rejected():
    runner = make_runner()
    runner.reset()
    gather(runner, 4)
    pids = runner.pids
    runner.close()
    runner.close()
    assert wait_dead(pids) == []
    with pytest.raises(RuntimeError, match="reset"):
        runner.step()
    for bad in ({"steps_per_request": 0}, {"max_in_flight": 0}, {"num_cpus_per_actor": 0}, {"max_restarts": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_runner(**bad)


def test_a_cluster_without_room_for_the_actors_is_reported():
    runner = make_runner(n_actors=1, num_cpus_per_actor=64, start_timeout=2.0)
    runner.reset()
    with pytest.raises(ActorError, match="room"):
        runner.step()
    assert not runner.running


# ---------------------------------------------------------------------------------------------------- worker pool
class ScalingWorker(Worker):
    """Answers x with (x * the network's weight sum, its pid); raises on a request of ``fail_on``."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.network = th.nn.Linear(2, 1)
        with th.no_grad():
            self.network.weight.fill_(0.5)
        self.fail_on = fail_on

    def __call__(self, request: float) -> tuple[float, int]:
        if request == self.fail_on:
            raise ZeroDivisionError(f"request {request} divided by zero")
        time.sleep(0.02)
        return request * float(self.network.weight.detach().sum()), os.getpid()


class ScalingFactory:
    def __init__(self, fail_on: float | None = None) -> None:
        self.fail_on = fail_on

    def __call__(self, index: int) -> ScalingWorker:
        return ScalingWorker(self.fail_on)


def make_pool(n_workers: int = 2, fail_on: float | None = None, **kwargs) -> RayWorkerPool:
    kwargs = {"num_cpus_per_worker": 0.5, **kwargs}
    return RayWorkerPool(ScalingFactory(fail_on), n_workers, th.nn.Linear(2, 1).state_dict(), **kwargs)


def test_a_worker_pool_answers_every_request_with_the_parameters_of_its_submission():
    pool = make_pool()
    try:
        pool.start()
        first = [pool.submit(float(x)) for x in range(6)]  # the initial parameters' weight sum is random
        weights = th.nn.Linear(2, 1).state_dict()
        weights["weight"].fill_(2.0)
        pool.sync(weights, version=3)
        second = [pool.submit(float(x)) for x in range(6)]
        answers = {ticket: pool.result(ticket) for ticket in reversed(first + second)}  # read in any order
        pids = pool.pids
    finally:
        pool.close()
    assert [answers[t][0] for t in second] == [4.0 * x for x in range(6)]  # loaded before the requests after sync
    initial = {answers[t][0] / x for t, x in zip(first[1:], range(1, 6), strict=True)}
    assert len(initial) == 1 and initial != {4.0}
    assert {answers[t][1] for t in first + second} == set(pids) and len(set(pids)) == 2  # spread over both workers
    assert wait_dead(pids) == []
    with pytest.raises(KeyError, match="ticket"):
        pool.result(first[0])


def test_a_killed_worker_is_restarted_and_its_pending_requests_are_answered():
    pool = make_pool()
    try:
        pool.start()
        pool.result(pool.submit(0.0))
        pids = pool.pids
        tickets = [pool.submit(float(x)) for x in range(1, 21)]
        os.kill(pids[0], signal.SIGKILL)
        answers = [pool.result(t) for t in tickets]
        new_pids = pool.pids
    finally:
        pool.close()
    assert pool.restarts == 1 and new_pids[0] != pids[0] and new_pids[1] == pids[1]
    scale = answers[0][0] / 1.0
    assert [a for a, _ in answers] == pytest.approx([scale * x for x in range(1, 21)])  # none lost
    assert wait_dead(pids + new_pids) == []


def test_a_worker_that_raises_reaches_the_learner_with_its_traceback_and_the_pool_stops():
    pool = make_pool(fail_on=3.0)
    pool.start()
    pids = pool.pids
    tickets = [pool.submit(float(x)) for x in range(6)]
    with pytest.raises(ActorError, match="divided by zero") as error:
        for ticket in tickets:
            pool.result(ticket)
    assert "ZeroDivisionError" in str(error.value) and "in __call__" in str(error.value)
    assert not pool.running and wait_dead(pids) == []
    with pytest.raises(RuntimeError, match="start"):
        pool.submit(1.0)
    for bad in ({"n_workers": 0}, {"num_cpus_per_worker": 0}, {"max_restarts": -1}, {"start_timeout": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_pool(**bad)


# ------------------------------------------------------------------------------------------------------ algorithms
TINY_R2D2 = dict(
    learning_starts=100,
    batch_size=4,
    sequence_length=8,
    burn_in=2,
    overlap=4,
    buffer_size=2000,
    train_freq=4,
    policy_kwargs=dict(lstm_hidden_size=16, net_arch=[16], dueling_hidden_size=16),
)
TINY_MUZERO = dict(learning_starts=100, batch_size=8, num_simulations=4, policy_kwargs=dict(hidden_dim=16, net_arch=[16]))
TINY_IMPALA = dict(unroll_length=10, batch_size=2)
ALGORITHMS = {
    "r2d2": (R2D2, "MlpLstmPolicy", TINY_R2D2),
    "popart_impala": (PopArtIMPALA, "MlpPolicy", TINY_IMPALA),
    "muzero": (MuZero, "MlpPolicy", TINY_MUZERO),
}


def make_model(name: str, runner: str, env: VecEnv | None = None, **kwargs):
    cls, policy, options = ALGORITHMS[name]
    env = env if env is not None else make_vec_env("CartPole-v1", n_envs=2, seed=0)
    return cls(policy, env, runner=runner, runner_kwargs={"n_actors": 2, **kwargs}, seed=0, **options)


def signature(value) -> object:
    """What a batch item is made of: types, array shapes and dtypes, recursively (not the numbers)."""
    if isinstance(value, np.ndarray):  # the leading length varies with the episodes (segments, chunks)
        return ("array", value.ndim, value.shape[1:], str(value.dtype), value.flags.writeable)
    if isinstance(value, th.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if isinstance(value, dict):
        return {k: signature(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [signature(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return (type(value).__name__, {k: signature(getattr(value, k)) for k in value.__dataclass_fields__})
    if hasattr(value, "__dict__"):
        return (type(value).__name__, {k: signature(v) for k, v in sorted(vars(value).items())})
    return type(value).__name__


class Record(BaseCallback):
    """Records what the actors handed over (via the model's _store) and the actors' pids."""

    def __init__(self) -> None:
        super().__init__()
        self.pids: list[int] = []

    def _on_training_start(self) -> None:
        self.items: list[tuple[int, int, object]] = []
        store = self.model._store

        def recording_store(step):
            for item in step.items:
                self.items.append((step.actor, step.policy_version, item))
            return store(step)

        self.model._store = recording_store

    def _on_step(self) -> bool:
        if not self.pids:
            self.pids = list(self.model.runner.pids)
        return True

    def _on_training_end(self) -> None:
        del self.model._store


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_algorithm_learns_with_two_ray_actors_like_with_actor_processes(name: str):
    records = {}
    for runner in ("processes", "ray"):
        model = make_model(name, runner)
        record = Record()
        before = {k: v.clone() for k, v in model.policy.state_dict().items()}
        model.learn(400, callback=record)
        assert model.num_timesteps >= 400 and model._n_updates > 0
        assert any(not th.equal(before[k], v) for k, v in model.policy.state_dict().items())
        assert {actor for actor, _, _ in record.items} == {0, 1}
        versions = [version for _, version, _ in record.items]
        assert 0 <= min(versions) and max(versions) <= model._n_updates
        records[runner] = record
        if runner == "ray":
            assert len(record.pids) == 2 and wait_dead(record.pids) == []
    shapes = {runner: {repr(signature(item)) for _, _, item in record.items} for runner, record in records.items()}
    assert shapes["ray"] == shapes["processes"]


@pytest.mark.parametrize("runner", ["processes", "ray"])
def test_the_learners_vec_normalize_takes_the_statistics_of_the_actors_own_envs(runner: str):
    # The learner's VecEnv never steps: without the actors' statistics it would keep those of the start of learn
    # (count 1e-4, mean 0), and EvalCallback / VecNormalize.save would normalise with them.
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0), norm_reward=False)
    model = make_model("popart_impala", runner, env=env)  # 2 actors, statistics sent every unroll of 10 steps
    model.learn(400)
    obs_rms = env.obs_rms
    # Each actor reports at its steps 0, 10, 20, ...: at most 10 steps of 2 envs per actor are not counted yet.
    assert model.num_timesteps - 2 * 20 <= obs_rms.count <= model.num_timesteps + 10
    assert np.all(obs_rms.var > 1e-3) and not np.allclose(obs_rms.mean, 0.0)
    before = obs_rms.count
    model.learn(200, reset_num_timesteps=False)  # new actors start from the learner's statistics and add to them
    assert env.obs_rms.count >= before + 200 - 2 * 20


def test_r2d2_epsilon_ladder_spans_every_ray_actor():
    model = make_model("r2d2", "ray", n_actors=3)
    epsilons = model._epsilons()
    assert epsilons.shape == (6,)
    assert epsilons[0] == pytest.approx(0.4) and epsilons[-1] == pytest.approx(0.4**8)


def test_learning_survives_a_killed_actor_with_replay_and_counters_intact():
    model = make_model("muzero", "ray")
    log: dict[str, list] = {"replay": [], "steps": []}

    class KillOnce(BaseCallback):
        def _on_step(self) -> bool:
            log["replay"].append(len(self.model.replay_buffer))
            log["steps"].append(self.model.num_timesteps)
            if self.model.num_timesteps == 200:
                pid = self.model.runner.pids[1]
                os.kill(pid, signal.SIGKILL)
                # Ray learns of the death asynchronously; until it has, actor 0 alone could serve the rest of the
                # budget and the runner would never see actor 1's requests fail. A call on the dead actor returns
                # (raises) once Ray knows.
                assert wait_dead([pid]) == []
                with pytest.raises(ray.exceptions.RayActorError):
                    ray.get(self.model.runner._actors[1].pid.remote(), timeout=60)
            return True

    model.learn(600, callback=KillOnce())
    assert model.runner.restarts == 1
    assert model.num_timesteps == 600
    assert np.all(np.diff(log["steps"]) == 2)  # every VecEnv step counted once, none lost or repeated
    assert np.all(np.diff(log["replay"]) >= 0) and log["replay"][-1] > log["replay"][log["steps"].index(200)]


@pytest.mark.parametrize("name", ["r2d2", "muzero"])
def test_an_env_that_raises_reaches_learn_with_its_traceback_and_no_actor_is_left(name: str):
    model = make_model(name, "ray", env=DummyVecEnv([BrokenEnv]))
    with pytest.raises(ActorError, match="the emulator lost its ROM") as error:
        model.learn(1000)
    assert "in step" in str(error.value)  # the env's own frame is in the traceback
    assert not model.runner.running


def test_interrupted_learning_leaves_no_ray_actor_behind():
    model = make_model("popart_impala", "ray")
    pids: list[int] = []

    class CtrlC(BaseCallback):
        def _on_step(self) -> bool:
            if not pids:
                pids.extend(self.model.runner.pids)
            if self.num_timesteps >= 100:
                raise KeyboardInterrupt
            return True

    with pytest.raises(KeyboardInterrupt):
        model.learn(10_000, callback=CtrlC())
    assert len(pids) == 2 and wait_dead(pids) == []


REANALYZE = dict(**REANALYZE_PRESET, dirichlet_fraction=0.0)  # no root noise: a fresh search is reproducible


def test_muzero_learns_with_reanalyze_workers_that_search_with_the_latest_parameters():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero(
        "MlpPolicy",
        env,
        runner="ray",
        runner_kwargs={"n_actors": 1, "num_cpus_per_actor": 0.5},
        reanalyze_workers=2,
        reanalyze_kwargs={"num_cpus_per_worker": 0.5},
        seed=0,
        **{**TINY_MUZERO, "num_simulations": 32},  # visit fractions fine enough to tell two networks apart
        **REANALYZE,
    )
    pids: list[int] = []

    class WorkerPids(BaseCallback):
        def _on_step(self) -> bool:
            if not pids and self.model._reanalyze_pipeline is not None:
                pids.extend(self.model._reanalyze_pipeline.pool.pids)
            return True

    model.learn(200, callback=WorkerPids())
    assert model._n_updates > 0 and len(pids) == 2 and wait_dead(pids) == []
    assert model._reanalyze_pipeline is None  # closed with learn()

    # The pipeline by hand: batches sampled ahead, searched by the workers with the parameters of their sampling.
    old_planner = Planner(copy.deepcopy(model.policy), model.search_settings, np.random.default_rng(0))
    pipeline = model._reanalyze_workers_pipeline()
    rng = np.random.default_rng(1)
    try:
        prepared = [pipeline.next(16, rng, 1.0, model._actor_parameters(), version=10)]
        th.manual_seed(5)
        with th.no_grad():  # another network
            for param in model.policy.parameters():
                param.copy_(th.randn_like(param))
        prepared += [pipeline.next(16, rng, 1.0, model._actor_parameters(), version=11) for _ in range(pipeline.depth)]
    finally:
        model._close_runner()
    assert pipeline.depth == 4 and [p.policy_lag for p in prepared] == [0, 1, 1, 1, 0]
    threads = th.get_num_threads()
    th.set_num_threads(1)  # as the workers: the same float operations, so the same visit counts
    try:
        for item, planner in zip(prepared, [old_planner] * 4 + [model.planner], strict=True):
            rows = round(0.8 * 16)
            mask = item.batch.policy_mask[:rows]
            positions = item.batch.positions[:rows][mask]
            observations = model.replay_buffer.observations_at(positions)
            fresh = fresh_policy_targets(planner, observations, item.batch.legal[:rows][mask])
            np.testing.assert_array_equal(item.batch.policies[:rows][mask], fresh)
            assert item.refreshed == len(positions)
    finally:
        th.set_num_threads(threads)
    # the stored games' targets were refreshed (the last batch's search wrote last), and the parameters mattered
    last = prepared[-1].batch
    mask = last.policy_mask[:rows]
    positions = last.positions[:rows][mask]
    np.testing.assert_array_equal(model.replay_buffer.policies[positions % model.buffer_size], last.policies[:rows][mask])
    stale = fresh_policy_targets(old_planner, model.replay_buffer.observations_at(positions), last.legal[:rows][mask])
    assert not np.array_equal(stale, last.policies[:rows][mask])


def test_muzero_learning_survives_a_killed_reanalyze_worker():
    model = MuZero("MlpPolicy", "CartPole-v1", reanalyze_workers=1, seed=0, **TINY_MUZERO, **REANALYZE)
    seen = {"restarts": 0, "updates": []}

    class KillOnce(BaseCallback):
        def _on_step(self) -> bool:
            pipeline = self.model._reanalyze_pipeline
            if pipeline is not None:
                if self.model.num_timesteps == 150:
                    os.kill(pipeline.pool.pids[0], signal.SIGKILL)
                seen["restarts"] = pipeline.pool.restarts
            seen["updates"].append(self.model._n_updates)
            return True

    model.learn(300, callback=KillOnce())
    assert model.num_timesteps == 300 and seen["restarts"] == 1
    training = np.array(seen["updates"][seen["updates"].index(1) :])
    assert np.all(np.diff(training) == 1) and len(training) > 150  # one update per step, before and after the kill


def test_muzero_with_a_reanalyze_worker_that_raises_stops_and_leaves_nothing_running(monkeypatch):
    from sb3_frontier.algorithms.muzero import reanalyze

    def broken(planner, observations, legal):
        raise MemoryError("the search ran out of nodes")

    monkeypatch.setattr(reanalyze, "fresh_policy_targets", broken)
    cloudpickle.register_pickle_by_value(reanalyze)  # the workers get the patched module
    ray.cloudpickle.register_pickle_by_value(reanalyze)
    try:
        model = MuZero("MlpPolicy", "CartPole-v1", reanalyze_workers=1, seed=0, **TINY_MUZERO, **REANALYZE)
        with pytest.raises(ActorError, match="ran out of nodes"):
            model.learn(300)
    finally:
        cloudpickle.unregister_pickle_by_value(reanalyze)
        ray.cloudpickle.unregister_pickle_by_value(reanalyze)
    assert model._reanalyze_pipeline is None


def test_reanalyze_worker_options_are_checked():
    with pytest.raises(ValueError, match="reanalyze_fraction"):
        MuZero("MlpPolicy", "CartPole-v1", reanalyze_workers=2)
    with pytest.raises(ValueError, match="Unknown reanalyze_kwargs"):
        MuZero("MlpPolicy", "CartPole-v1", reanalyze_workers=1, reanalyze_kwargs={"n_workers": 2}, **REANALYZE)
    with pytest.raises(ValueError, match="reanalyze_workers >= 1"):
        MuZero("MlpPolicy", "CartPole-v1", reanalyze_kwargs={"batches_ahead": 2}, **REANALYZE)
    with pytest.raises(ValueError, match="batches_ahead"):
        MuZero("MlpPolicy", "CartPole-v1", reanalyze_workers=1, reanalyze_kwargs={"batches_ahead": 0}, **REANALYZE)
    with pytest.raises(ValueError, match="reanalyze_workers"):
        MuZero("MlpPolicy", "CartPole-v1", reanalyze_workers=-1, **REANALYZE)


def test_unknown_ray_options_are_rejected():
    with pytest.raises(ValueError, match="Unknown runner_kwargs"):
        MuZero("MlpPolicy", "CartPole-v1", runner="ray", runner_kwargs={"address": "auto"})


def test_a_zoo_yaml_puts_training_on_ray(tmp_path):
    import subprocess

    import yaml

    conf = tmp_path / "muzero_ray.yml"
    entry = {
        "policy": "MlpPolicy",
        "n_timesteps": 300,
        "n_envs": 2,
        "learning_starts": 100,
        "batch_size": 8,
        "num_simulations": 4,
        "policy_kwargs": "dict(hidden_dim=16, net_arch=[16])",
        "runner": "ray",
        "runner_kwargs": {"n_actors": 2, "num_cpus_per_actor": 0.5},
    }
    conf.write_text(yaml.safe_dump({"CartPole-v1": entry}))
    args = ["train", "--algo", "muzero", "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "--eval-freq", "-1"]
    result = subprocess.run(
        [sys.executable, "-m", "sb3_frontier.zoo", *args, "-conf", str(conf), "--seed", "0", "--verbose", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = tmp_path / "logs" / "muzero" / "CartPole-v1_1"
    assert (saved / "CartPole-v1.zip").is_file()
    assert "policy_lag" in result.stdout  # the Ray actors' steps reached the logs (printed under "runner/")
