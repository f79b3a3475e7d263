"""R2D2's actor: epsilon-greedy acting with the recurrent Q-network, sequences cut with their initial priorities.

Each env of the actor's VecEnv is one of the paper's actors, with its fixed epsilon from the ladder
``0.4^(1 + 7 i / (N - 1))`` over all ``N`` envs of all actors. The LSTM steps on every step (a random action does
not skip the network: the state must follow the observations). A :class:`~sb3_frontier.wrappers.SequenceStacker`
cuts the step stream into overlapping sequences with the state before their first step; the stacker is fed
observation *ids*, and the observations themselves go to the learner once, in the same message
(:class:`~sb3_frontier.algorithms.r2d2.replay.SequenceChunk`). Initial priorities come from the actor's own
Q-values (Sec. 3: "the actors compute priorities").
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_frontier.algorithms.r2d2.replay import SequenceChunk
from sb3_frontier.algorithms.r2d2.targets import sequence_priorities, window_bootstrap
from sb3_frontier.common.observations import Obs, obs_stack
from sb3_frontier.common.runners import Actor, ActorStep, VecEnvCopy
from sb3_frontier.common.vec_steps import final_observation, split_step
from sb3_frontier.policies.r2d2 import R2D2Policy
from sb3_frontier.wrappers.sequence import Sequence, SequenceStacker
from sb3_frontier.wrappers.value_transforms import ValueRescaling


def epsilon_ladder(n: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """
    The paper's per-actor epsilons ``base^(1 + alpha * i / (n - 1))`` (Ape-X, R2D2), ``i = 0 .. n - 1``.

    :param n: number of actors (envs); one actor gets ``base``
    :return: ``[n]`` epsilons, from ``base`` down to ``base^(1 + alpha)``
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return np.array([base])
    return base ** (1.0 + alpha * np.arange(n) / (n - 1))


class R2D2Actor(Actor):
    """
    Steps a VecEnv epsilon-greedily with the recurrent Q-network and yields :class:`SequenceChunk` items.

    :param env: the VecEnv (wrapped in :class:`~sb3_frontier.wrappers.VecPreviousActionReward`)
    :param network: the Q-network (the learner's own in-process, a CPU copy in actor processes)
    :param epsilons: ``[n_envs]`` exploration rates
    :param length: training steps per sequence
    :param overlap: steps shared by adjacent sequences
    :param burn_in: burn-in steps before each sequence
    :param gamma: discount (for the initial priorities)
    :param n_step: n of the targets (for the initial priorities)
    :param rescaling: the value transform h
    :param eta: priority mix
    :param rng: random generator of the exploration
    """

    def __init__(
        self,
        env: VecEnv,
        network: R2D2Policy,
        epsilons: np.ndarray,
        length: int,
        overlap: int,
        burn_in: int,
        gamma: float,
        n_step: int,
        rescaling: ValueRescaling,
        eta: float,
        rng: np.random.Generator,
    ) -> None:
        self.env = env
        self.n_envs = env.num_envs
        self.network = network  # what sync() loads parameters into
        self.q_network = network
        self.epsilons = np.asarray(epsilons, dtype=np.float64)
        if self.epsilons.shape != (self.n_envs,):
            raise ValueError(f"epsilons must have shape ({self.n_envs},), got {self.epsilons.shape}")
        self.length, self.overlap, self.burn_in = length, overlap, burn_in
        self.gamma, self.n_step, self.rescaling, self.eta = gamma, n_step, rescaling, eta
        self.rng = rng
        self.n_actions = network.n_actions
        self.history = burn_in + length + 1  # states kept per env to find a window's first state

    # ---------------------------------------------------------------------------------------------------- network
    def _forward(self, obs: Obs, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        device = self.q_network.device
        with th.no_grad():
            q, (h, c) = self.q_network.step(
                obs_as_tensor(obs, device),  # type: ignore[arg-type]
                (th.as_tensor(state[0], device=device), th.as_tensor(state[1], device=device)),
            )
        return q.cpu().numpy(), (h.cpu().numpy(), c.cpu().numpy())

    def _new_ids(self, count: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._next_id += count
        return ids

    # -------------------------------------------------------------------------------------------------- lifecycle
    def reset(self, observations: Any | None = None) -> None:
        obs: Obs = self.env.reset() if observations is None else observations  # type: ignore[assignment]
        self.q_network.set_training_mode(False)
        hidden = self.q_network.lstm_hidden_size
        zeros = np.zeros((self.n_envs, hidden), dtype=np.float32)
        self.state_before = (zeros, zeros.copy())
        self.q, self.state_after = self._forward(obs, self.state_before)
        self.stacker = SequenceStacker(self.length, self.overlap, self.burn_in)
        self._next_id = 1
        self.ids = self._new_ids(self.n_envs)
        self._pending: list[tuple[np.ndarray, Obs]] = [(self.ids, obs)]
        self.episode_step = np.zeros(self.n_envs, dtype=np.int64)
        self.state_history = np.zeros((self.n_envs, self.history, 2, hidden), dtype=np.float32)

    def step(self) -> ActorStep:
        explore = self.rng.random(self.n_envs) < self.epsilons
        actions = np.where(explore, self.rng.integers(self.n_actions, size=self.n_envs), self.q.argmax(axis=1))
        step_obs, rewards, dones, infos = self.env.step(actions)
        new_obs: Obs = step_obs  # type: ignore[assignment]
        ends = split_step(dones, infos)
        # The state before each env's next observation: zero where a new episode starts.
        keep = (~ends.done).astype(np.float32)[:, None]
        next_before = (self.state_after[0] * keep, self.state_after[1] * keep)
        q_next, next_after = self._forward(new_obs, next_before)
        next_value = q_next.max(axis=1)
        new_ids = self._new_ids(self.n_envs)
        next_ids = new_ids.copy()
        done = np.flatnonzero(ends.done)
        finals: list[Obs] = []
        if done.size:
            finals = [final_observation(infos, env) for env in done.tolist()]
            next_ids[done] = self._new_ids(done.size)
            next_value[done] = 0.0
            truncated = ends.truncated[done]
            if truncated.any():  # truncation bootstraps from the value of the final observation
                rows = done[truncated]
                q_final, _ = self._forward(
                    obs_stack([f for f, t in zip(finals, truncated, strict=True) if t]),
                    (self.state_after[0][rows], self.state_after[1][rows]),
                )
                next_value[rows] = q_final.max(axis=1)
        # Keep every env's state before this step, to read the state before a window's first training step.
        slot = self.episode_step % self.history
        self.state_history[np.arange(self.n_envs), slot, 0] = self.state_before[0]
        self.state_history[np.arange(self.n_envs), slot, 1] = self.state_before[1]
        q_taken = self.q[np.arange(self.n_envs), actions]
        sequences = self.stacker.add(
            self.ids,
            actions,
            rewards,
            ends.terminated,
            ends.truncated,
            next_ids,
            self.state_before,
            q_taken=q_taken.astype(np.float32),
            next_value=next_value.astype(np.float32),
            life_loss=ends.life_loss,
        )
        items = [self._sequence_item(seq) for seq in sequences]
        pending_ids = [new_ids]
        pending_obs = [new_obs]
        if done.size:
            pending_ids.append(next_ids[done])
            pending_obs.append(obs_stack(finals))
        chunk_ids = np.concatenate([ids for ids, _ in self._pending] + pending_ids)
        chunk_obs = _concat([obs for _, obs in self._pending] + pending_obs)
        self._pending = []
        self.episode_step = np.where(ends.done, 0, self.episode_step + 1)
        self.ids = new_ids
        self.q, self.state_before, self.state_after = q_next, next_before, next_after
        return ActorStep(
            items=[SequenceChunk(chunk_ids, chunk_obs, items)],
            rewards=rewards,
            dones=dones,
            infos=list(infos),
            new_obs=new_obs,
            policy_version=self.policy_version,
            stats={"rollout/exploration_rate": float(explore.mean())},
        )

    def _sequence_item(self, seq: Sequence) -> dict[str, np.ndarray]:
        """A sequence as the replay stores it, with the actor's priority estimate."""
        b = self.burn_in
        window = slice(b, None)
        mask = seq.mask[window]
        prefix, discount, index = window_bootstrap(
            seq.rewards[window, None],
            seq.terminated[window, None],
            seq.extras["life_loss"][window, None],
            mask[:, None],
            self.gamma,
            self.n_step,
        )
        # Values of the window's states s_0 .. s_L: s_k is the next observation of step k - 1.
        values = np.concatenate([[0.0], seq.extras["next_value"][window]])
        returns = prefix[:, 0] + discount[:, 0] * self.rescaling.inverse(values[index[:, 0]])
        errors = self.rescaling.transform(returns) - seq.extras["q_taken"][window]
        priority = sequence_priorities(np.abs(errors)[:, None], mask[:, None], self.eta)[0]
        window_step = seq.start_step + b  # the first training step (always a real step)
        slot = window_step % self.history
        return {
            "obs_ids": np.asarray(seq.observations, dtype=np.int64),
            "actions": seq.actions.astype(np.int64),
            "rewards": seq.rewards,
            "terminated": seq.terminated,
            "truncated": seq.truncated,
            "life_loss": seq.extras["life_loss"].astype(bool),
            "mask": seq.mask,
            "state": np.stack(seq.state),
            "window_state": self.state_history[seq.env_index, slot].copy(),
            "start_step": np.int64(seq.start_step),
            "priority": np.float64(priority),
        }


def _concat(parts: list[Obs]) -> Obs:
    """Concatenate observation batches along axis 0."""
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}  # type: ignore[index]
    return np.concatenate(parts)  # type: ignore[arg-type]


class R2D2ActorFactory:
    """
    Builds R2D2 actors in actor processes: each with its own env copy, a CPU copy of the network and its slice of
    the epsilon ladder.

    :param env: the env copies' source
    :param policy: the learner's network (copied to the CPU here)
    :param epsilons: ``[n_actors * n_envs]`` epsilons, actor ``i`` takes ``epsilons[i * n_envs : (i + 1) * n_envs]``
    :param actor_kwargs: the other arguments of :class:`R2D2Actor`
    """

    def __init__(self, env: VecEnvCopy, policy: R2D2Policy, epsilons: np.ndarray, **actor_kwargs: Any) -> None:
        self.env = env
        self.policy = copy.deepcopy(policy).to("cpu")
        self.policy.optimizer = None  # type: ignore[assignment]  # actors do not train
        self.policy.set_training_mode(False)
        self.epsilons = np.asarray(epsilons)
        self.actor_kwargs = actor_kwargs

    def __call__(self, index: int) -> R2D2Actor:
        n = self.env.num_envs
        return R2D2Actor(
            self.env.build(index),
            self.policy,
            self.epsilons[index * n : (index + 1) * n],
            rng=np.random.default_rng(self.env.actor_seed(index)),
            **self.actor_kwargs,
        )


__all__ = ["R2D2Actor", "R2D2ActorFactory", "epsilon_ladder"]
