"""RescaledDQN / RescaledQRDQN: the transformed n-step Bellman target against a brute force written from the definition,
over episodes that terminate and episodes that are truncated inside the n-step window."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_frontier.algorithms.r2d2 import RescaledDQN, RescaledQRDQN
from sb3_frontier.wrappers import ValueRescaling


def step_id(obs: np.ndarray) -> int:
    return round(float(obs[0]) * 1000)


class Chain(gym.Env):
    """Observation: a unique step id (over 1000) and noise; large rewards (h matters); terminates at random, else
    truncated."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self) -> None:
        self.counter = 0

    def _obs(self) -> np.ndarray:
        self.counter += 1
        return np.array([self.counter / 1000, self.np_random.normal()], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        reward = float(self.np_random.normal(scale=40.0)) + 10.0 * int(action)
        terminated = bool(self.np_random.random() < 0.15)
        return self._obs(), reward, terminated, False, {}


class Record(BaseCallback):
    """Every transition by the id of its observation: (reward, terminated, truncated, real next observation)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[int, tuple[float, bool, bool, np.ndarray]] = {}
        self.next_id: dict[int, int] = {}

    def _on_training_start(self) -> None:
        self.last = self.model._last_obs.copy()

    def _on_step(self) -> bool:
        new_obs, reward, done, info = (
            self.locals["new_obs"],
            self.locals["rewards"],
            self.locals["dones"],
            self.locals["infos"],
        )
        truncated = bool(info[0].get("TimeLimit.truncated", False))
        next_obs = info[0]["terminal_observation"] if done[0] else new_obs[0]
        key = step_id(self.last[0])
        self.by_id[key] = (float(reward[0]), bool(done[0]) and not truncated, truncated, np.asarray(next_obs).copy())
        self.last = new_obs.copy()
        return True


def brute_force_target(model, record: Record, obs_id: int, n: int, gamma: float, values) -> float:
    """h(sum_k gamma^k r_k + gamma^k' h^-1(max_a Q_target(s_k'))) from the recorded episode, in float64."""
    h = ValueRescaling(model.value_rescaling_eps)
    total, scale, key = 0.0, 1.0, obs_id
    for _ in range(n):
        reward, terminated, truncated, next_obs = record.by_id[key]
        total += scale * reward
        scale *= gamma
        if terminated:
            return float(h.transform(total))
        if truncated:
            break
        key = step_id(next_obs)
    bootstrap = values(th.as_tensor(next_obs[None], dtype=th.float32))
    return float(h.transform(total + scale * h.inverse(float(bootstrap.detach()))))


def fill(model_class, n_steps: int, gamma: float, **kwargs):
    env = DummyVecEnv([lambda: TimeLimit(Chain(), max_episode_steps=6)])
    model = model_class(
        "MlpPolicy", env, n_steps=n_steps, gamma=gamma, learning_starts=10_000, buffer_size=2_000, seed=1, **kwargs
    )
    record = Record()
    model.learn(600, callback=record)
    # A target network unlike the online one, with values of a size where h^-1 matters.
    with th.no_grad():
        for param in model.policy.parameters():
            param.normal_(0.0, 2.0)
    return model, record


@pytest.mark.parametrize("n_steps", [1, 3])
def test_rescaled_dqn_target_matches_brute_force(n_steps):
    gamma = 0.9
    model, record = fill(RescaledDQN, n_steps, gamma)
    batch = model.replay_buffer.sample(256)
    got = model._targets(batch).squeeze(1).double().numpy()
    q_target = model.q_net_target
    want = np.array(
        [
            brute_force_target(model, record, step_id(obs), n_steps, gamma, lambda o: q_target(o).max())
            for obs in batch.observations.numpy()
        ]
    )
    kinds = {record.by_id[step_id(obs)][1:3] for obs in batch.observations.numpy()}
    assert ((True, False) in kinds and (False, True) in kinds) or n_steps == 1  # terminations and truncations sampled
    # float32 arithmetic on returns of size ~100: a few ulps of the largest magnitude before h
    scale = max(1.0, float(np.abs(ValueRescaling().inverse(want)).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * np.finfo(np.float32).eps * scale)


def test_rescaled_qrdqn_target_quantiles_match_brute_force():
    gamma, n_steps = 0.95, 3
    model, record = fill(RescaledQRDQN, n_steps, gamma, policy_kwargs=dict(n_quantiles=5))
    batch = model.replay_buffer.sample(128)
    got = model._targets(batch).double().numpy()
    assert got.shape == (128, 5)

    def quantiles_of_greedy(obs):
        quantiles = model.quantile_net_target(obs)[0]  # [n_quantiles, A]
        return quantiles[:, quantiles.mean(dim=0).argmax()]

    want = np.array(
        [
            [
                brute_force_target(model, record, step_id(obs), n_steps, gamma, lambda o, j=j: quantiles_of_greedy(o)[j])
                for j in range(5)
            ]
            for obs in batch.observations.numpy()
        ]
    )
    scale = max(1.0, float(np.abs(ValueRescaling().inverse(want)).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * np.finfo(np.float32).eps * scale)


def test_bellman_target_is_h_of_the_bootstrapped_return():
    h = ValueRescaling(1e-3)
    rewards, discounts, values = np.array([3.0, -200.0]), np.array([0.99, 0.0]), np.array([5.0, 7.0])
    want = [h.transform(3.0 + 0.99 * h.inverse(5.0)), h.transform(-200.0)]
    np.testing.assert_allclose(h.bellman_target(rewards, discounts, values), want, rtol=1e-12)
    got = h.bellman_target(th.tensor(rewards), th.tensor(discounts), th.tensor(values))
    assert isinstance(got, th.Tensor) and np.allclose(got.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("model_class", [RescaledDQN, RescaledQRDQN])
def test_rescaled_models_learn_save_and_load(model_class, tmp_path):
    model = model_class("MlpPolicy", "CartPole-v1", learning_starts=50, value_rescaling_eps=0.01, seed=0)
    model.learn(300)
    assert model._n_updates > 0
    model.save(tmp_path / "model")
    loaded = model_class.load(tmp_path / "model")
    assert loaded.value_rescaling_eps == 0.01 and loaded.rescaling == ValueRescaling(0.01)
    obs = model.env.reset()
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="eps"):
        model_class("MlpPolicy", "CartPole-v1", value_rescaling_eps=-1.0)
