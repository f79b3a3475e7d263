"""PopArt-IMPALA: unrolls, the learner's V-trace targets against brute force, PopArt's invariance and routing, policy
lag, actor processes, SB3 tooling and bad input."""

from __future__ import annotations

import itertools
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from test_r2d2 import EveryKLives  # flags lost lives every k steps, with varied rewards

from sb3_frontier import PopArtIMPALA
from sb3_frontier.algorithms.popart_impala.unrolls import Unroll, UnrollQueue
from sb3_frontier.common.runners import ActorError
from sb3_frontier.wrappers.multitask import TaskId

SMALL = dict(
    unroll_length=6,
    batch_size=3,
    gamma=0.9,
    runner="in-process",
    policy_kwargs=dict(net_arch=[16]),
)


class Scale(gym.RewardWrapper):
    def __init__(self, env: gym.Env, scale: float) -> None:
        super().__init__(env)
        self.scale = scale

    def reward(self, reward):
        return self.scale * float(reward)


def mixed_env(seed: int = 0, tasks: bool = False) -> DummyVecEnv:
    """CartPole copies ending by termination, by a short time limit (truncation) and with lost lives."""
    fns = [
        lambda: gym.make("CartPole-v1"),
        lambda: gym.make("CartPole-v1", max_episode_steps=5),
        lambda: EveryKLives(gym.make("CartPole-v1", max_episode_steps=9), k=4),
    ]
    if tasks:
        env = DummyVecEnv([lambda f=f, i=i: TaskId(Monitor(f()), i % 2) for i, f in enumerate(fns)])
    else:
        env = DummyVecEnv([lambda f=f: Monitor(f()) for f in fns])
    env.seed(seed)
    return env


def collected_batch(model: PopArtIMPALA, steps: int = 36) -> Unroll:
    """Act ``steps`` VecEnv steps with the model's actor (no learning) and return every unroll as one batch."""
    model.learn(steps * model.env.num_envs, callback=_NoTrain())
    queue = model.replay_buffer
    return queue.pop(len(queue))


class _NoTrain(BaseCallback):
    """Keeps the learner from consuming the queue (so that the collected unrolls can be inspected)."""

    def _on_training_start(self) -> None:
        self.model.train = lambda *args, **kwargs: None  # type: ignore[method-assign]

    def _on_training_end(self) -> None:
        del self.model.train  # the class's method again

    def _on_step(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------------------- unrolls
def test_unrolls_tile_the_stream_and_keep_final_observations():
    model = PopArtIMPALA("MlpLstmPolicy", mixed_env(), **{**SMALL, "policy_kwargs": dict(net_arch=[8], lstm_hidden_size=8)})
    model.learn(36 * 3, callback=_NoTrain())
    queue = model.replay_buffer
    unrolls = [queue.pop(3) for _ in range(len(queue) // 3)]
    assert len(unrolls) == 6
    for first, second in itertools.pairwise(unrolls):
        # the next unroll starts from the bootstrap observation, with the state reached there
        np.testing.assert_array_equal(first.observations[-1], second.observations[0])
        np.testing.assert_array_equal(first.episode_starts[-1], second.episode_starts[0])
        state = model.policy.initial_state(3)
        with th.no_grad():
            obs = th.as_tensor(first.observations[:-1])
            _, end = model.policy.core_unroll(
                obs, tuple(th.as_tensor(s) for s in first.state), th.as_tensor(first.episode_starts[:-1])
            )
        np.testing.assert_allclose(end[0].numpy(), second.state[0], atol=1e-5)
        del state
    batch = Unroll.concatenate(unrolls)
    assert batch.truncated[:, 1].any() and batch.terminated.any()
    assert batch.life_loss[:, 2].any()
    # each truncated step has its final observation, which differs from the next episode's first observation
    assert batch.final_observations is not None and len(batch.final_index) == int(batch.truncated.sum())
    for k, (t, b) in enumerate(batch.final_index.tolist()):
        assert batch.truncated[t, b] and batch.episode_starts[t + 1, b]
        assert not np.array_equal(batch.final_observations[k], batch.observations[t + 1, b])
    assert batch.observations.dtype == np.float32 and batch.actions.dtype == np.int64


def test_queue_splits_unrolls_first_in_first_out():
    model = PopArtIMPALA("MlpPolicy", mixed_env(), **SMALL)
    batch = collected_batch(model, steps=12)  # 2 unrolls of 3 envs
    queue = UnrollQueue(max_unrolls=100)
    queue.add(batch.columns(0, 3))
    queue.add(batch.columns(3, 6))
    first = queue.pop(2)
    second = queue.pop(3)
    assert len(queue) == 1
    np.testing.assert_array_equal(first.actions, batch.actions[:, :2])
    np.testing.assert_array_equal(second.actions, batch.actions[:, 2:5])
    np.testing.assert_array_equal(second.state[0], batch.state[0][2:5])
    full = UnrollQueue(max_unrolls=4)
    full.add(batch.columns(0, 3))
    full.add(batch.columns(3, 6))
    assert len(full) == 3 and full.dropped == 3


# ---------------------------------------------------------------------------------------------- learner targets
def brute_force_vs(rewards, discounts, values, bootstrap, rhos, cs):
    """v_s = V(x_s) + sum_t (prod_{i<t} d_i c_i) rho_t (r_t + d_t V(x_{t+1}) - V(x_t)), O(T^2), per column."""
    length, batch = rewards.shape
    nxt = np.concatenate([values[1:], bootstrap[None]])
    out = np.zeros((length, batch))
    for b in range(batch):
        for s in range(length):
            total, weight = values[s, b], 1.0
            for t in range(s, length):
                delta = rhos[t, b] * (rewards[t, b] + discounts[t, b] * nxt[t, b] - values[t, b])
                total += weight * delta
                weight *= discounts[t, b] * cs[t, b]
            out[s, b] = total
    return out


@pytest.mark.parametrize("policy", ["MlpPolicy", "MlpLstmPolicy"])
def test_learner_targets_match_step_by_step_brute_force(policy):
    """
    The learner's V-trace targets equal a brute force built from the network stepped one observation at a time
    (state zeroed at episode starts), with the final observation's value where a time limit cut the episode (from
    the state after the episode's last step), zero discounts at terminations and lost lives.
    """
    kwargs = dict(net_arch=[8], lstm_hidden_size=8) if policy == "MlpLstmPolicy" else dict(net_arch=[8])
    model = PopArtIMPALA(policy, mixed_env(), **{**SMALL, "policy_kwargs": kwargs, "seed": 1})
    batch = collected_batch(model)
    with th.no_grad():
        for p in model.policy.action_net.parameters():
            p.add_(0.3 * th.randn_like(p))  # the policy moved on: importance weights differ from 1
        model.policy.value_net.mu.fill_(2.0)
        model.policy.value_net.nu.fill_(13.0)  # sigma 3: targets in unnormalised units
        model.policy.value_net.sigma.fill_(3.0)
    length, n = batch.length, batch.n_envs
    values = np.zeros((length + 1, n))
    log_pi = np.zeros((length, n))
    final = np.zeros((length, n))
    policy_net = model.policy
    with th.no_grad():
        for b in range(n):
            h = tuple(th.as_tensor(s[b : b + 1]) for s in batch.state)
            for t in range(length + 1):
                obs = th.as_tensor(batch.observations[t, b : b + 1])
                start = th.as_tensor(batch.episode_starts[t, b : b + 1])
                features, h = policy_net.core_step(obs, h, start)
                _, _, value = policy_net.heads(features, th.zeros(1, dtype=th.long))
                values[t, b] = float(value)
                if t < length:
                    logits = policy_net.action_net(features)
                    log_pi[t, b] = float(th.log_softmax(logits, -1)[0, batch.actions[t, b]])
                    if batch.truncated[t, b]:
                        k = next(i for i, (tt, bb) in enumerate(batch.final_index.tolist()) if (tt, bb) == (t, b))
                        fin = th.as_tensor(batch.final_observations[k : k + 1])
                        f_features, _ = policy_net.core_step(fin, h, th.zeros(1, dtype=th.bool))
                        final[t, b] = float(policy_net.heads(f_features, th.zeros(1, dtype=th.long))[2])
    ratios = np.exp(log_pi - batch.behaviour_log_probs)
    assert np.abs(ratios - 1).max() > 0.05
    rhos, cs = np.minimum(1.0, ratios), np.minimum(1.0, ratios)
    stop = batch.terminated | batch.life_loss
    discounts = 0.9 * (~stop)
    rewards = batch.rewards + np.where(batch.truncated, discounts * final, 0.0)
    discounts = np.where(batch.truncated, 0.0, discounts)
    assert batch.truncated.any() and batch.terminated.any() and batch.life_loss.any()
    expected = brute_force_vs(rewards, discounts, values[:-1], values[-1], rhos, cs)
    got = model.vtrace_targets(batch).vs.numpy()
    # float32 networks: values of size ~10 carry ~1e-6 rounding, summed over at most T = 6 steps
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_popart_statistics_follow_each_task_only():
    model = PopArtIMPALA("MlpPolicy", mixed_env(tasks=True), **SMALL)
    assert model.policy.n_tasks == 2
    batch = collected_batch(model, steps=12)
    only_task_0 = batch.columns(0, 1)
    assert int(only_task_0.task_ids[0]) == 0
    before = {k: getattr(model.policy.value_net, k).clone() for k in ("mu", "nu", "sigma")}
    weight_1 = model.policy.value_net.weight[1].detach().clone()
    model.impala_loss(only_task_0)
    after = model.policy.value_net
    assert after.mu[0] != before["mu"][0] and after.sigma[0] != before["sigma"][0]
    assert after.mu[1] == before["mu"][1] and after.nu[1] == before["nu"][1]  # bit for bit
    th.testing.assert_close(after.weight[1], weight_1, rtol=0, atol=0)


def test_popart_updates_are_invariant_to_the_reward_scale():
    """
    Rewards x c with statistics x c (mu, sigma) and the same initial weights: the same normalised targets and
    advantages, so the same parameter updates; without PopArt the updates differ (the control).
    """

    def updates(scale: float, popart: bool) -> tuple[th.Tensor, PopArtIMPALA]:
        env = DummyVecEnv([lambda: Monitor(Scale(gym.make("CartPole-v1"), scale)) for _ in range(3)])
        env.seed(0)
        # plain SGD without clipping: the updates are the gradients (RMSProp would hide part of their scale)
        settings = dict(seed=3, popart=popart, learning_rate=1e-3, max_grad_norm=None)
        policy_kwargs = dict(net_arch=[16], optimizer_class=th.optim.SGD)
        model = PopArtIMPALA("MlpPolicy", env, **{**SMALL, **settings, "policy_kwargs": policy_kwargs})
        if popart:
            with th.no_grad():
                model.policy.value_net.nu.fill_(scale**2)
                model.policy.value_net.sigma.fill_(scale)
        start = th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()
        model.learn(6 * 3 * 8)
        assert model._n_updates == 8
        return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach() - start, model

    def relative_difference(a: th.Tensor, b: th.Tensor) -> float:
        return float((a - b).norm() / a.norm())

    small, small_model = updates(1.0, True)
    large, large_model = updates(1000.0, True)
    # identical normalised quantities in float32: the updates agree to rounding (~1e-7 per operation, compounded
    # over 8 updates of a few hundred operations each), far below the control's difference
    assert relative_difference(small, large) < 1e-4
    th.testing.assert_close(large_model.policy.value_net.mu, 1000.0 * small_model.policy.value_net.mu, rtol=1e-5, atol=1e-9)
    th.testing.assert_close(large_model.policy.value_net.sigma, 1000.0 * small_model.policy.value_net.sigma, rtol=1e-5, atol=0)
    plain_small, _ = updates(1.0, False)
    plain_large, _ = updates(10.0, False)  # (x1000 diverges within the 8 updates)
    assert relative_difference(plain_small, plain_large) > 1.0


# ------------------------------------------------------------------------------------------------- policy lag
def test_in_process_learning_has_no_lag_and_old_unrolls_are_dropped():
    model = PopArtIMPALA("MlpPolicy", mixed_env(), **SMALL)
    model.learn(6 * 3 * 4, log_interval=None)  # no log dump: the lags stay in _lag_stats
    assert model._n_updates == 4 and model._lag_stats == [0.0] * 4
    batch = collected_batch(model, steps=6)
    model._n_updates = 10
    model.max_policy_lag = 3
    model.replay_buffer.add(batch)
    model.train(1, 3)
    assert model._n_updates == 10 and model._dropped_lagging == 3


def test_actor_processes_learn_report_lag_and_leave_nothing_behind():
    model = PopArtIMPALA(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=2),
        **{**SMALL, "runner": "processes", "runner_kwargs": {"n_actors": 2}},
    )
    assert model.runner_kwargs["sync_every"] == SMALL["unroll_length"]
    model.learn(600)
    assert model._n_updates > 0
    assert not model.runner.running
    assert all(lag >= 0 for lag in model._lag_stats) or model._lag_stats == []


def test_killed_actor_process_is_reported():
    model = PopArtIMPALA("MlpPolicy", "CartPole-v1", **{**SMALL, "runner": "processes", "runner_kwargs": {"n_actors": 2}})

    class KillOne(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 50:
                os.kill(self.model.runner.pids[0], signal.SIGKILL)
            return True

    with pytest.raises(ActorError, match="Actor process 0"):
        model.learn(100_000, callback=KillOne())
    assert not model.runner.running


# ---------------------------------------------------------------------------------------------------- tooling
def test_predict_state_save_load_and_resume(tmp_path):
    model = PopArtIMPALA(
        "MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=3, seed=0), **{**SMALL, "policy_kwargs": dict(lstm_hidden_size=16)}
    )
    model.learn(200)
    obs = model.get_env().reset()
    actions, state = model.predict(obs, deterministic=True)
    assert actions.shape == (3,) and [s.shape for s in state] == [(1, 3, 16)] * 2
    fresh, _ = model.predict(obs, state=state, episode_start=np.ones(3, bool), deterministic=True)
    np.testing.assert_array_equal(fresh, actions)
    with th.no_grad():
        model.policy.value_net.update(th.full((5,), 40.0))  # statistics away from their start
    model.save(tmp_path / "impala")
    loaded = PopArtIMPALA.load(tmp_path / "impala", env=make_vec_env("CartPole-v1", n_envs=3))
    for key in ("mu", "nu", "sigma"):
        th.testing.assert_close(getattr(loaded.policy.value_net, key), getattr(model.policy.value_net, key))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    n = loaded.num_timesteps
    loaded.learn(60, reset_num_timesteps=False)
    assert loaded.num_timesteps >= n + 60
    mean, _ = evaluate_policy(loaded, loaded.get_env(), n_eval_episodes=2)
    assert mean > 0


def test_callbacks_and_default_budget(tmp_path):
    assert PopArtIMPALA.default_total_timesteps == 1_000_000
    model = PopArtIMPALA("MlpPolicy", "CartPole-v1", **SMALL)
    callbacks = [
        EvalCallback(make_vec_env("CartPole-v1"), eval_freq=100, n_eval_episodes=2, log_path=str(tmp_path)),
        CheckpointCallback(save_freq=150, save_path=str(tmp_path)),
    ]
    model.learn(300, callback=callbacks)
    assert (tmp_path / "evaluations.npz").exists()
    assert any(p.name.endswith(".zip") for p in tmp_path.iterdir())


def test_tensorboard_and_progress_bar(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("tqdm")
    pytest.importorskip("rich")
    model = PopArtIMPALA("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), **SMALL)
    model.learn(200, progress_bar=True, log_interval=1)
    assert list(tmp_path.rglob("events.out.tfevents.*"))


def test_per_task_statistics_lag_and_returns_are_logged(tmp_path):
    import csv

    from stable_baselines3.common.logger import configure

    model = PopArtIMPALA("MlpPolicy", mixed_env(tasks=True), **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(600, log_interval=1)
    with open(tmp_path / "progress.csv") as file:
        rows = list(csv.DictReader(file))
    columns = set(rows[0])
    for key in (
        "train/popart_mu_0",
        "train/popart_sigma_1",
        "train/policy_lag_mean",
        "train/policy_lag_max",
        "rollout/task_0_ep_rew_mean",
        "rollout/task_1_ep_rew_mean",
        "train/value_loss",
    ):
        assert key in columns, key
    sigmas = [float(row["train/popart_sigma_1"]) for row in rows if row["train/popart_sigma_1"]]
    assert sigmas and sigmas[-1] != 1.0  # the statistics moved


def test_cnn_policies_act_on_images():
    from stable_baselines3.common.envs import FakeImageEnv

    for policy in ("CnnPolicy", "CnnLstmPolicy"):
        env = make_vec_env(lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True), n_envs=2)
        model = PopArtIMPALA(policy, env, **{**SMALL, "policy_kwargs": dict(features_dim=32)})
        model.learn(60)
        assert model._n_updates > 0
        assert model.replay_buffer is not None


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(unroll_length=0), "unroll_length"),
        (dict(batch_size=0), "batch_size"),
        (dict(rho_bar=0.0), "rho_bar"),
        (dict(vtrace_lambda=1.5), "vtrace_lambda"),
        (dict(popart_beta=0.0), "popart_beta"),
        (dict(runner_kwargs={"bogus": 1}), "runner_kwargs"),
        (dict(n_tasks=3), "task ids"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PopArtIMPALA("MlpPolicy", "CartPole-v1", **{**SMALL, **kwargs})


def test_continuous_actions_are_rejected():
    with pytest.raises(ValueError, match="action space"):
        PopArtIMPALA("MlpPolicy", "Pendulum-v1", **SMALL)


def test_nan_rewards_and_losses_are_reported():
    class NaNReward(gym.Wrapper):
        def step(self, action):
            obs, _, terminated, truncated, info = self.env.step(action)
            return obs, float("nan"), terminated, truncated, info

    with pytest.raises(ValueError, match="non-finite rewards"):
        PopArtIMPALA("MlpPolicy", NaNReward(gym.make("CartPole-v1")), **SMALL).learn(10)
    model = PopArtIMPALA("MlpPolicy", mixed_env(), **{**SMALL, "popart": False})
    batch = collected_batch(model, steps=6)
    with th.no_grad():
        model.policy.value_net.weight.fill_(float("nan"))
    model.replay_buffer.add(batch)
    with pytest.raises(ValueError, match="loss"):
        model.train(1, 3)
