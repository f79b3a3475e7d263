"""IMPALA's unrolls: what an actor hands the learner, and the first-in first-out queue the learner batches them from.

An unroll is ``T`` consecutive steps of each env of an actor, cut from the continuous stream of its experience:
episodes do not start unrolls (no padding, no wasted steps), they end inside them, flagged by ``terminated`` /
``truncated`` and by ``episode_starts`` (where the recurrent state restarts). Row ``T`` of the observations is the
observation after the last step, whose value bootstraps the V-trace targets; the next unroll starts from it. The
behaviour log-probabilities and the version of the parameters that acted travel along, so that the learner corrects
for policy lag with V-trace and reports it (Espeholt et al. 2018, Sec. 3 and 4).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sb3_frontier.common.observations import Obs, obs_batch_size, obs_map, obs_take


def _concat(parts: Sequence[Obs], axis: int) -> Obs:
    return obs_map(lambda *values: np.concatenate(values, axis=axis), parts[0], *parts[1:])


@dataclass
class Unroll:
    """
    ``T`` steps of ``B`` envs (time-major arrays).

    :param observations: ``[T + 1, B, ...]`` the observations acted on; row ``T`` is the bootstrap observation
    :param episode_starts: ``[T + 1, B]`` bool, observation ``t`` begins an episode (the recurrent state is zeroed
        before it)
    :param actions: ``[T, B]`` int64
    :param behaviour_log_probs: ``[T, B]`` float32, log mu(a_t | x_t) of the acting parameters
    :param rewards: ``[T, B]`` float32
    :param terminated: ``[T, B]`` bool, the episode ended in a terminal state at step ``t``
    :param truncated: ``[T, B]`` bool, the episode was cut by a time limit at step ``t``
    :param life_loss: ``[T, B]`` bool, a life was lost at step ``t`` (no bootstrap across it; the episode goes on)
    :param final_index: ``[K, 2]`` int64, the ``(t, b)`` of each truncated step
    :param final_observations: ``[K, ...]`` the observations those episodes ended on (their values bootstrap)
    :param task_ids: ``[B]`` int64 task of each env
    :param policy_versions: ``[T]`` int64 version of the parameters that acted at each step
    :param state: ``(h, c)``, each ``[B, H]`` float32, the recurrent state before row 0 (``H = 0`` without an LSTM)
    """

    observations: Obs
    episode_starts: np.ndarray
    actions: np.ndarray
    behaviour_log_probs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    life_loss: np.ndarray
    final_index: np.ndarray
    final_observations: Obs | None
    task_ids: np.ndarray
    policy_versions: np.ndarray
    state: tuple[np.ndarray, np.ndarray]

    @property
    def length(self) -> int:
        """T, the steps of each env."""
        return int(self.actions.shape[0])

    @property
    def n_envs(self) -> int:
        """B, the envs (columns)."""
        return int(self.actions.shape[1])

    def columns(self, start: int, stop: int) -> Unroll:
        """The unroll of envs ``start .. stop - 1``."""
        keep = (self.final_index[:, 1] >= start) & (self.final_index[:, 1] < stop)
        final_index = self.final_index[keep] - np.array([0, start])
        finals = None if self.final_observations is None or not keep.any() else obs_take(self.final_observations, keep)
        return Unroll(
            observations=obs_map(lambda x: x[:, start:stop], self.observations),
            episode_starts=self.episode_starts[:, start:stop],
            actions=self.actions[:, start:stop],
            behaviour_log_probs=self.behaviour_log_probs[:, start:stop],
            rewards=self.rewards[:, start:stop],
            terminated=self.terminated[:, start:stop],
            truncated=self.truncated[:, start:stop],
            life_loss=self.life_loss[:, start:stop],
            final_index=final_index,
            final_observations=finals,
            task_ids=self.task_ids[start:stop],
            policy_versions=self.policy_versions,
            state=(self.state[0][start:stop], self.state[1][start:stop]),
        )

    @staticmethod
    def concatenate(unrolls: Sequence[Unroll]) -> Unroll:
        """Unrolls of the same length side by side, ``[T, B_1 + B_2 + ...]``; versions: the oldest per step."""
        if len(unrolls) == 1:
            return unrolls[0]
        lengths = {u.length for u in unrolls}
        if len(lengths) != 1:
            raise ValueError(f"Unrolls of different lengths cannot be batched: {sorted(lengths)}")
        offsets = np.cumsum([0] + [u.n_envs for u in unrolls[:-1]])
        final_index = np.concatenate([u.final_index + np.array([0, off]) for u, off in zip(unrolls, offsets, strict=True)])
        finals = [u.final_observations for u in unrolls if u.final_observations is not None]
        return Unroll(
            observations=_concat([u.observations for u in unrolls], axis=1),
            episode_starts=np.concatenate([u.episode_starts for u in unrolls], axis=1),
            actions=np.concatenate([u.actions for u in unrolls], axis=1),
            behaviour_log_probs=np.concatenate([u.behaviour_log_probs for u in unrolls], axis=1),
            rewards=np.concatenate([u.rewards for u in unrolls], axis=1),
            terminated=np.concatenate([u.terminated for u in unrolls], axis=1),
            truncated=np.concatenate([u.truncated for u in unrolls], axis=1),
            life_loss=np.concatenate([u.life_loss for u in unrolls], axis=1),
            final_index=final_index.reshape(-1, 2).astype(np.int64),
            final_observations=_concat(finals, axis=0) if finals else None,
            task_ids=np.concatenate([u.task_ids for u in unrolls]),
            policy_versions=np.min(np.stack([u.policy_versions for u in unrolls]), axis=0),
            state=(np.concatenate([u.state[0] for u in unrolls]), np.concatenate([u.state[1] for u in unrolls])),
        )


class UnrollQueue:
    """
    The learner's queue of unrolls, first in first out: :meth:`pop` takes the oldest ``batch_size`` env columns
    (splitting an actor's unroll between two batches when needed), so every step is learned from exactly once.

    :param max_unrolls: env columns held at most; the oldest are dropped beyond it (counted in :attr:`dropped`)
    """

    def __init__(self, max_unrolls: int) -> None:
        if max_unrolls < 1:
            raise ValueError(f"max_unrolls must be >= 1, got {max_unrolls}")
        self.max_unrolls = max_unrolls
        self._items: deque[tuple[Unroll, int]] = deque()  # (unroll, arrival number)
        self._columns = 0
        self._arrivals = 0
        #: env columns dropped because the queue was full (the learner fell behind)
        self.dropped = 0

    def __len__(self) -> int:
        """Env columns (unrolls of one env) waiting."""
        return self._columns

    def add(self, unroll: Unroll) -> None:
        """Queue an actor's unroll (all its env columns)."""
        if obs_batch_size(obs_map(lambda x: x[0], unroll.observations)) != unroll.n_envs:
            raise ValueError("The unroll's observations and actions disagree on the number of envs")
        self._items.append((unroll, self._arrivals))
        self._arrivals += 1
        self._columns += unroll.n_envs
        while self._columns > self.max_unrolls:
            oldest, _ = self._items.popleft()
            self._columns -= oldest.n_envs
            self.dropped += oldest.n_envs

    def pop(self, batch_size: int) -> Unroll:
        """The oldest ``batch_size`` env columns, as one batch."""
        if batch_size > self._columns:
            raise ValueError(f"Only {self._columns} unrolls are queued, {batch_size} were asked for")
        parts: list[Unroll] = []
        needed = batch_size
        while needed > 0:
            unroll, arrival = self._items.popleft()
            if unroll.n_envs <= needed:
                parts.append(unroll)
                needed -= unroll.n_envs
            else:
                parts.append(unroll.columns(0, needed))
                self._items.appendleft((unroll.columns(needed, unroll.n_envs), arrival))
                needed = 0
        self._columns -= batch_size
        return Unroll.concatenate(parts)

    def clear(self) -> None:
        """Forget every queued unroll."""
        self._items.clear()
        self._columns = 0


__all__ = ["Unroll", "UnrollQueue"]
