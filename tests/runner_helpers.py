"""What the runner tests of every backend share: a counting actor, an env that raises, process checks."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecEnv

from sb3_frontier.common.denormals import denormals_flushed
from sb3_frontier.common.runners import Actor, ActorStep, Runner, VecEnvCopy


class CountingActor(Actor):
    """
    Steps a VecEnv with random actions. Each step's item is (actor index, step number, first env's observation,
    process id); its stats hold the sum of the network's weight, so that parameter sync is visible, and whether the
    actor's thread flushes denormal floats.
    """

    def __init__(self, env: VecEnv, index: int, fail_after: int | None = None) -> None:
        self.env = env
        self.n_envs = env.num_envs
        self.index = index
        self.network = th.nn.Linear(2, 1)
        self.fail_after = fail_after
        self.steps = 0

    def reset(self, observations=None) -> None:
        self.obs = self.env.reset()

    def step(self) -> ActorStep:
        self.steps += 1
        if self.fail_after is not None and self.steps > self.fail_after:
            raise FloatingPointError(f"actor {self.index} broke at step {self.steps}")
        actions = np.array([self.env.action_space.sample() for _ in range(self.n_envs)])
        self.obs, rewards, dones, infos = self.env.step(actions)
        return ActorStep(
            items=[(self.index, self.steps, self.obs[0].copy(), os.getpid())],
            rewards=rewards,
            dones=dones,
            infos=list(infos),
            policy_version=self.policy_version,
            stats={"weight": float(self.network.weight.detach().sum()), "denormals_flushed": float(denormals_flushed())},
        )


class CountingFactory:
    def __init__(self, env: VecEnvCopy, fail_after: int | None = None) -> None:
        self.env = env
        self.fail_after = fail_after

    def __call__(self, index: int) -> CountingActor:
        return CountingActor(self.env.build(index), index, self.fail_after)


class BrokenEnv(gym.Env):
    """Raises on the fifth step."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t == 5:
            raise OSError("the emulator lost its ROM")
        return np.zeros(2, np.float32), 0.0, False, False, {}


def alive(pids: list[int]) -> list[int]:
    """The pids that still run (zombies reaped by the runner do not)."""
    running = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        running.append(pid)
    return running


def gather(runner: Runner, n: int) -> list[ActorStep]:
    """At least ``n`` actor steps from the runner."""
    steps: list[ActorStep] = []
    while len(steps) < n:
        steps.extend(runner.step())
    return steps
