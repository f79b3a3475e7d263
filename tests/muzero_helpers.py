"""Small MuZero models the MuZero tests share: CartPole (MLP) and MinAtar Breakout (the residual CNN)."""

from __future__ import annotations

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env

from sb3_frontier import MuZero
from sb3_frontier.envs import register_envs


def cartpole_muzero(**kwargs) -> MuZero:
    kwargs = {"learning_starts": 10_000, "batch_size": 32, "num_simulations": 4, "seed": 0, **kwargs}
    return MuZero("MlpPolicy", gym.make("CartPole-v1"), **kwargs)


def small_model(policy: str, seed: int) -> MuZero:
    """A fresh network on CartPole (MLP) or MinAtar Breakout (the residual CNN), its replay filled, no update made."""
    if policy == "MlpPolicy":
        model = cartpole_muzero(seed=seed)
        model.learn(300)
        return model
    register_envs()
    env = make_vec_env("MinAtar/Breakout-v1", n_envs=2, seed=seed)
    cnn = dict(channels=8, n_blocks=1, head_channels=4, head_hidden=[16])
    model = MuZero(
        "CnnPolicy", env, learning_starts=10**6, batch_size=16, num_simulations=2, buffer_size=5000,
        segment_length=20, seed=seed, policy_kwargs=cnn,
    )  # fmt: skip
    model.learn(200)
    return model
