"""R2D2's prioritized sequence replay: every observation stored once, sequences as indices into them.

Adjacent R2D2 sequences overlap (80 steps, 40 shared, plus a 40-step burn-in): copying each sequence's frames
would store every frame three times. Here observations live once in a ring of ``capacity`` slots (uint8 frames stay
uint8) and a sequence holds the ``T + 1`` absolute indices of its observations (``T = burn_in + length``), its
actions, rewards, end flags and validity mask, and the recurrent state before its first step. Sequences live in a
:class:`~sb3_frontier.common.prioritized_ring.PrioritizedRing` and are sampled in proportion to
``priority^alpha``; a sequence leaves the sum tree when one of its observations is overwritten.

Actors number the observations they send (ids from 1; 0 is padding); :meth:`SequenceReplay.add_observations` and
:meth:`SequenceReplay.add_sequences` translate each actor's ids into ring indices, so the learner stores what
actors produce in any interleaving.

Memory: ``capacity * bytes_per_observation`` for the observations (:meth:`SequenceReplay.nbytes`), plus per sequence
``8 (T + 1)`` bytes of indices, ``13 T`` bytes of actions, rewards and flags and ``16 * hidden`` bytes of states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_frontier.common.observations import Obs, obs_leaves, obs_map, obs_write, obs_zeros
from sb3_frontier.common.prioritized_ring import PrioritizedRing


@dataclass
class SequenceChunk:
    """
    What an actor step hands to the replay: new observations (numbered) and the sequences completed.

    :param ids: ``[k]`` int64 ids of the new observations (per actor, increasing, from 1)
    :param observations: ``[k, ...]`` the observations (a dict of arrays for Dict spaces)
    :param sequences: the completed sequences, each a dict of arrays (see :meth:`SequenceReplay.add_sequences`)
    """

    ids: np.ndarray
    observations: Obs
    sequences: list[dict[str, np.ndarray]]


@dataclass
class SequenceBatch:
    """
    Sampled sequences, time-major.

    :param indices: ``[B]`` absolute indices of the sequences (for priority updates)
    :param weights: ``[B]`` importance weights (ones without importance sampling)
    :param observations: ``[T + 1, B, ...]`` (padding slots are zeros)
    :param actions: ``[T, B]`` int64
    :param rewards: ``[T, B]`` float32
    :param terminated: ``[T, B]`` bool
    :param truncated: ``[T, B]`` bool
    :param life_loss: ``[T, B]`` bool
    :param mask: ``[T, B]`` bool, real steps
    :param state: ``(h, c)``, each ``[B, H]``: before slot 0
    :param window_state: ``(h, c)``, each ``[B, H]``: the actor's state before the first training step (slot
        ``burn_in``), for the staleness diagnostic
    :param start_step: ``[B]`` episode step of slot 0
    """

    indices: np.ndarray
    weights: np.ndarray
    observations: Obs
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    life_loss: np.ndarray
    mask: np.ndarray
    state: tuple[np.ndarray, np.ndarray]
    window_state: tuple[np.ndarray, np.ndarray]
    start_step: np.ndarray

    def shard(self, index: slice) -> SequenceBatch:
        """The sequences ``index`` (a slice of the batch axis; views, no copies)."""
        return SequenceBatch(
            indices=self.indices[index],
            weights=self.weights[index],
            observations=obs_map(lambda value: value[:, index], self.observations),
            actions=self.actions[:, index],
            rewards=self.rewards[:, index],
            terminated=self.terminated[:, index],
            truncated=self.truncated[:, index],
            life_loss=self.life_loss[:, index],
            mask=self.mask[:, index],
            state=(self.state[0][index], self.state[1][index]),
            window_state=(self.window_state[0][index], self.window_state[1][index]),
            start_step=self.start_step[index],
        )

    def resets(self) -> np.ndarray:
        """``[T + 1, B]`` bool: the slots where an episode starts (the recurrent state is zeroed there)."""
        slots = np.arange(self.actions.shape[0] + 1)[:, None]
        return (self.start_step[None, :] + slots) == 0


class SequenceReplay:
    """
    Observations stored once, fixed-length sequences sampled by priority.

    :param capacity: observations held (the oldest are overwritten)
    :param observation_space: the observation space
    :param sequence_slots: ``T = burn_in + length`` steps per sequence
    :param hidden_size: LSTM units (the stored states are ``[hidden_size]`` each)
    :param max_sequences: sequences held (default: enough for every observation to start a new window)
    :param priority_exponent: alpha (0.9 in the paper)
    :param id_window: how many of an actor's latest ids stay translatable (must cover a sequence of every env)
    """

    def __init__(
        self,
        capacity: int,
        observation_space: spaces.Space,
        sequence_slots: int,
        hidden_size: int,
        stride: int,
        max_sequences: int | None = None,
        priority_exponent: float = 0.9,
        id_window: int = 1 << 16,
    ) -> None:
        if capacity < sequence_slots + 1:
            raise ValueError(
                f"The replay holds {capacity} observations: fewer than one sequence needs ({sequence_slots + 1}); "
                "enlarge buffer_size or shorten the sequences"
            )
        self.capacity = int(capacity)
        self.observation_space = observation_space
        self.sequence_slots = int(sequence_slots)
        self.hidden_size = int(hidden_size)
        self.stride = int(stride)
        if max_sequences is None:
            max_sequences = max(2 * math.ceil(capacity / max(stride, 1)), 1)
        self.id_window = int(id_window)
        self.observations = obs_zeros(observation_space, (self.capacity + 1,))  # the last row stays zero: padding
        self.n_observations = 0  # absolute index of the next observation
        self.ring = PrioritizedRing(int(max_sequences), priority_exponent)
        n, t = self.ring.capacity, self.sequence_slots
        self.obs_index = np.full((n, t + 1), -1, dtype=np.int64)
        self.actions = np.zeros((n, t), dtype=np.int64)
        self.rewards = np.zeros((n, t), dtype=np.float32)
        self.terminated = np.zeros((n, t), dtype=bool)
        self.truncated = np.zeros((n, t), dtype=bool)
        self.life_loss = np.zeros((n, t), dtype=bool)
        self.mask = np.zeros((n, t), dtype=bool)
        self.states = np.zeros((n, 4, self.hidden_size), dtype=np.float32)  # h, c, window h, window c
        self.start_step = np.zeros(n, dtype=np.int64)
        self.oldest = np.zeros(n, dtype=np.int64)  # oldest observation index of each sequence
        self._sweep = 0  # absolute index of the oldest sequence not yet checked for overwritten observations
        self._ids: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # source -> (ids, absolute indices) rings
        self.non_finite_priorities = 0

    def __len__(self) -> int:
        """Sampleable sequences."""
        return len(self.ring)

    def settings(self) -> dict[str, Any]:
        """What must match between a replay and the model that samples it."""
        return {
            "observation_space": self.observation_space,
            "sequence_slots": self.sequence_slots,
            "hidden_size": self.hidden_size,
        }

    def nbytes(self) -> int:
        """Bytes of the storage arrays (observations, sequences, sum tree)."""
        total = sum(leaf.nbytes for _, leaf in obs_leaves(self.observations))
        arrays = (self.obs_index, self.actions, self.rewards, self.terminated, self.truncated, self.life_loss)
        for array in (*arrays, self.mask, self.states, self.start_step, self.oldest):
            total += array.nbytes
        for holder in (self.ring, self.ring.tree):
            total += sum(value.nbytes for value in vars(holder).values() if isinstance(value, np.ndarray))
        return total

    # ------------------------------------------------------------------------------------------------------ writing
    def add_observations(self, source: int, ids: np.ndarray, observations: Obs) -> None:
        """
        Store an actor's new observations.

        :param source: the actor (ids are per actor)
        :param ids: ``[k]`` their ids (>= 1)
        :param observations: ``[k, ...]``
        """
        ids = np.asarray(ids, dtype=np.int64)
        k = len(ids)
        if k == 0:
            return
        if k > self.capacity:
            raise ValueError(f"{k} observations at once do not fit a replay of {self.capacity}")
        start = self.n_observations
        absolute = np.arange(start, start + k, dtype=np.int64)
        obs_write(self.observations, absolute % self.capacity, observations)
        self.n_observations += k
        known_ids, known_abs = self._ids.setdefault(
            source, (np.zeros(self.id_window, dtype=np.int64), np.full(self.id_window, -1, dtype=np.int64))
        )
        known_ids[ids % self.id_window] = ids
        known_abs[ids % self.id_window] = absolute
        self._evict_overwritten()

    def _evict_overwritten(self) -> None:
        """Take the sequences whose observations were overwritten out of the sum tree (oldest first)."""
        first_live = self.n_observations - self.capacity
        while self._sweep < self.ring.n_written:
            slot = self._sweep % self.ring.capacity
            if not self.ring.is_live(np.array([self._sweep]))[0]:
                self._sweep += 1
                continue
            if self.oldest[slot] >= first_live:
                break
            self.ring.tree.remove(slot)
            self._sweep += 1

    def _translate(self, source: int, ids: np.ndarray) -> np.ndarray:
        """Absolute observation indices of an actor's ids (0 -> -1, padding)."""
        known_ids, known_abs = self._ids[source]
        slots = ids % self.id_window
        absolute = np.where(ids > 0, known_abs[slots], -1)
        stale = (ids > 0) & (known_ids[slots] != ids)
        if stale.any():
            raise ValueError("A sequence refers to observations the replay no longer knows (id_window too small)")
        return absolute

    def add_sequences(self, source: int, sequences: list[dict[str, np.ndarray]], count_non_finite: bool = True) -> np.ndarray:
        """
        Store sequences of an actor (their observations must have been added).

        Each sequence is a dict with ``obs_ids [T + 1]`` (0 for padding), ``actions``, ``rewards``, ``terminated``,
        ``truncated``, ``life_loss``, ``mask`` (each ``[T]``), ``state`` and ``window_state`` (``[2, H]``),
        ``start_step`` and ``priority`` (the actor's estimate; NaN or missing: the current maximum).

        :param count_non_finite: count NaN priorities in :attr:`non_finite_priorities` (False when NaN means "none given")
        :return: the absolute indices given to the sequences
        """
        if not sequences:
            return np.zeros(0, dtype=np.int64)
        indices = self.ring.reserve(len(sequences))
        slots = self.ring.slots(indices)
        errors = np.empty(len(sequences))
        for j, (slot, seq) in enumerate(zip(slots, sequences, strict=True)):
            absolute = self._translate(source, np.asarray(seq["obs_ids"], dtype=np.int64))
            self.obs_index[slot] = absolute
            self.actions[slot] = seq["actions"]
            self.rewards[slot] = seq["rewards"]
            self.terminated[slot] = seq["terminated"]
            self.truncated[slot] = seq["truncated"]
            self.life_loss[slot] = seq["life_loss"]
            self.mask[slot] = seq["mask"]
            self.states[slot, :2] = seq["state"]
            self.states[slot, 2:] = seq["window_state"]
            self.start_step[slot] = seq["start_step"]
            valid = absolute[absolute >= 0]
            self.oldest[slot] = valid.min() if valid.size else self.n_observations
            errors[j] = float(seq.get("priority", np.nan))
        live = self.oldest[slots] >= self.n_observations - self.capacity
        self.ring.set_priorities(indices[live], self._finite_errors(errors[live], count_non_finite))
        return indices

    def _finite_errors(self, errors: np.ndarray, count: bool = True) -> np.ndarray:
        """Errors with NaN / inf replaced by the error of the current maximum priority (counted unless ``count`` is False)."""
        bad = ~np.isfinite(errors)
        if bad.any():
            self.non_finite_priorities += int(bad.sum()) if count else 0
            ring = self.ring
            # the error whose priority (|error| + epsilon)^alpha is the current maximum
            highest = max(ring.max_priority ** (1.0 / max(ring.priority_exponent, 1e-12)) - ring.priority_epsilon, 0.0)
            errors = np.where(bad, highest, errors)
        return errors

    # ----------------------------------------------------------------------------------------------------- sampling
    def update_priorities(self, indices: np.ndarray, errors: np.ndarray) -> None:
        """New priorities of sampled sequences (non-finite ones become the current maximum)."""
        self.ring.update_priorities(indices, self._finite_errors(np.asarray(errors, dtype=np.float64)))

    def sample(self, batch_size: int, rng: np.random.Generator, importance_exponent: float = 0.0) -> SequenceBatch:
        """
        Draw ``batch_size`` sequences in proportion to their priorities.

        :param importance_exponent: beta of the importance weights (0: ones)
        """
        first_live = self.n_observations - self.capacity
        for _ in range(100):
            indices, weights = self.ring.sample(batch_size, rng, importance_exponent)
            slots = self.ring.slots(indices)
            stale = self.oldest[slots] < first_live
            if not stale.any():
                break
            # Sequences written out of order can outlive the oldest-first sweep: drop them and draw again.
            self.ring.tree.remove(np.unique(slots[stale]))
        else:  # pragma: no cover - needs a replay full of overwritten sequences
            raise RuntimeError("The replay holds no live sequence")
        rows = self.obs_index[slots].T  # [T + 1, B]
        where = np.where(rows >= 0, rows % self.capacity, self.capacity)
        observations = obs_map(lambda store: store[where], self.observations)
        states = self.states[slots]
        return SequenceBatch(
            indices=indices,
            weights=weights,
            observations=observations,
            actions=self.actions[slots].T.copy(),
            rewards=self.rewards[slots].T.copy(),
            terminated=self.terminated[slots].T.copy(),
            truncated=self.truncated[slots].T.copy(),
            life_loss=self.life_loss[slots].T.copy(),
            mask=self.mask[slots].T.copy(),
            state=(states[:, 0].copy(), states[:, 1].copy()),
            window_state=(states[:, 2].copy(), states[:, 3].copy()),
            start_step=self.start_step[slots].copy(),
        )


__all__ = ["SequenceBatch", "SequenceChunk", "SequenceReplay"]
