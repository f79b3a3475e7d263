"""IMPALA's actor: steps its envs with the behaviour policy and hands over an unroll every ``T`` steps.

Each step samples actions from the actor's copy of the policy (the learner's own network in-process) and records
their log-probabilities; after ``unroll_length`` steps the actor yields an :class:`~.unrolls.Unroll` of all its envs
with the recurrent state the unroll started from, and starts the next one from the last observation (Espeholt et
al. 2018, Sec. 3: "at the beginning of each trajectory, an actor updates its own local policy to the latest learner
policy" — the runners pull parameters every ``unroll_length`` actor steps, between unrolls).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_frontier.algorithms.popart_impala.unrolls import Unroll
from sb3_frontier.common.observations import Obs, obs_map, obs_stack
from sb3_frontier.common.runners import Actor, ActorStep, VecEnvCopy
from sb3_frontier.common.vec_steps import final_observation, split_step
from sb3_frontier.policies.popart_impala import PopArtIMPALAPolicy


def _copy(obs: Obs) -> Obs:
    """A private copy (VecFrameStack updates its observation buffer in place)."""
    return obs_map(lambda x: np.array(x, copy=True), obs)


class IMPALAActor(Actor):
    """
    Samples actions with the behaviour policy and yields one :class:`~.unrolls.Unroll` every ``unroll_length`` steps.

    :param env: the VecEnv
    :param network: the policy (the learner's own in-process, a CPU copy in actor processes)
    :param unroll_length: steps per unroll (T)
    :param task_ids: ``[n_envs]`` task of each env
    """

    def __init__(self, env: VecEnv, network: PopArtIMPALAPolicy, unroll_length: int, task_ids: np.ndarray) -> None:
        self.env = env
        self.n_envs = env.num_envs
        self.network = network  # what sync() loads parameters into
        self.policy = network
        self.unroll_length = unroll_length
        self.task_ids = np.asarray(task_ids, dtype=np.int64)
        if self.task_ids.shape != (self.n_envs,):
            raise ValueError(f"task_ids must have shape ({self.n_envs},), got {self.task_ids.shape}")

    def reset(self, observations: Any | None = None) -> None:
        obs: Obs = self.env.reset() if observations is None else observations  # type: ignore[assignment]
        self.policy.set_training_mode(False)
        self.obs = _copy(obs)
        self.episode_start = np.ones(self.n_envs, dtype=bool)
        h, c = self.policy.initial_state(self.n_envs)
        self.state = (h.cpu().numpy(), c.cpu().numpy())
        self._begin_unroll()

    def _begin_unroll(self) -> None:
        self._unroll_state = (self.state[0].copy(), self.state[1].copy())
        self._obs: list[Obs] = [self.obs]
        self._starts = [self.episode_start]
        self._actions: list[np.ndarray] = []
        self._log_probs: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self._terminated: list[np.ndarray] = []
        self._truncated: list[np.ndarray] = []
        self._life_loss: list[np.ndarray] = []
        self._versions: list[int] = []
        self._final_index: list[tuple[int, int]] = []
        self._finals: list[Obs] = []

    def step(self) -> ActorStep:
        device = self.policy.device
        with th.no_grad():
            actions_t, log_probs_t, (h, c) = self.policy.act(
                obs_as_tensor(self.obs, device),  # type: ignore[arg-type]
                (th.as_tensor(self.state[0], device=device), th.as_tensor(self.state[1], device=device)),
                th.as_tensor(self.episode_start, device=device),
            )
        actions = actions_t.cpu().numpy()
        new_obs, rewards, dones, infos = self.env.step(actions)
        ends = split_step(dones, infos)
        t = len(self._actions)
        for env in np.flatnonzero(ends.truncated).tolist():
            self._final_index.append((t, env))
            self._finals.append(final_observation(infos, env))
        self._actions.append(actions.astype(np.int64))
        self._log_probs.append(log_probs_t.cpu().numpy().astype(np.float32))
        self._rewards.append(np.asarray(rewards, dtype=np.float32))
        self._terminated.append(ends.terminated)
        self._truncated.append(ends.truncated)
        self._life_loss.append(ends.life_loss)
        self._versions.append(self.policy_version)
        self.obs = _copy(new_obs)  # type: ignore[arg-type]
        self.episode_start = ends.done
        self.state = (h.cpu().numpy(), c.cpu().numpy())
        self._obs.append(self.obs)
        self._starts.append(self.episode_start)
        items = []
        if len(self._actions) == self.unroll_length:
            items.append(self._finish_unroll())
            self._begin_unroll()
        return ActorStep(
            items=items,
            rewards=rewards,
            dones=dones,
            infos=list(infos),
            new_obs=new_obs,
            policy_version=self.policy_version,
        )

    def _finish_unroll(self) -> Unroll:
        return Unroll(
            observations=obs_stack(self._obs),
            episode_starts=np.stack(self._starts),
            actions=np.stack(self._actions),
            behaviour_log_probs=np.stack(self._log_probs),
            rewards=np.stack(self._rewards),
            terminated=np.stack(self._terminated),
            truncated=np.stack(self._truncated),
            life_loss=np.stack(self._life_loss),
            final_index=np.array(self._final_index, dtype=np.int64).reshape(-1, 2),
            final_observations=obs_stack(self._finals) if self._finals else None,
            task_ids=self.task_ids.copy(),
            policy_versions=np.array(self._versions, dtype=np.int64),
            state=self._unroll_state,
        )


class IMPALAActorFactory:
    """
    Builds IMPALA actors in actor processes, each with its own env copy and a CPU copy of the policy.

    :param env: the env copies' source
    :param policy: the learner's policy (copied to the CPU here)
    :param unroll_length: steps per unroll
    :param task_ids: ``[n_envs]`` task of each env of an actor
    """

    def __init__(self, env: VecEnvCopy, policy: PopArtIMPALAPolicy, unroll_length: int, task_ids: np.ndarray) -> None:
        self.env = env
        self.policy = copy.deepcopy(policy).to("cpu")
        self.policy.optimizer = None  # type: ignore[assignment]  # actors do not train
        self.policy.set_training_mode(False)
        self.unroll_length = unroll_length
        self.task_ids = np.asarray(task_ids)

    def __call__(self, index: int) -> IMPALAActor:
        return IMPALAActor(self.env.build(index), self.policy, self.unroll_length, self.task_ids)


__all__ = ["IMPALAActor", "IMPALAActorFactory"]
