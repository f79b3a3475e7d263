"""A ring of replay items addressed by absolute indices, sampled in proportion to priorities (over a :class:`SumTree`).

Items (MuZero positions, R2D2 sequences) are written in order; item ``k`` (its *absolute* index, ever increasing)
lives in slot ``k % capacity``. Writing past the capacity evicts the oldest items: they leave the sum tree before
their slots are reused, so nothing sampled afterwards can read overwritten data, and a priority update for an
evicted item (sampled before it was overwritten) is dropped instead of landing on its successor. Only items given a
priority are sampleable (a replay may store items that are never sampled, e.g. MuZero's look-ahead positions).

Priorities are those of prioritized replay (Schaul et al. 2016): ``p = (|error| + epsilon)^alpha``; sampling draws
``P(i) = p_i / sum_k p_k`` and importance weights ``(N P(i))^-beta`` are normalised by the batch's largest.
"""

from __future__ import annotations

import numpy as np

from sb3_frontier.common.sum_tree import SumTree


class PrioritizedRing:
    """
    Absolute-index ring with eviction and proportional prioritized sampling.

    :param capacity: number of slots
    :param priority_exponent: alpha (0: uniform sampling)
    :param priority_epsilon: added to ``|error|`` so that no item becomes unsampleable
    """

    def __init__(self, capacity: int, priority_exponent: float = 1.0, priority_epsilon: float = 1e-6) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if not (np.isfinite(priority_exponent) and priority_exponent >= 0):
            raise ValueError(f"priority_exponent must be finite and >= 0, got {priority_exponent}")
        if not (np.isfinite(priority_epsilon) and priority_epsilon > 0):
            raise ValueError(f"priority_epsilon must be finite and > 0, got {priority_epsilon}")
        self.capacity = int(capacity)
        self.priority_exponent = float(priority_exponent)
        self.priority_epsilon = float(priority_epsilon)
        self.tree = SumTree(self.capacity, min_priority=self.priority_epsilon)
        self.index_of_slot = np.full(self.capacity, -1, dtype=np.int64)  # absolute index held by each slot
        self.n_written = 0  # absolute index of the next item
        self.max_priority = 1.0

    def __len__(self) -> int:
        """Number of sampleable items."""
        return len(self.tree)

    def slots(self, indices: np.ndarray) -> np.ndarray:
        """Slots of absolute indices (any shape)."""
        return np.asarray(indices, dtype=np.int64) % self.capacity

    def is_live(self, indices: np.ndarray) -> np.ndarray:
        """Whether absolute indices still hold their item (written and not overwritten since)."""
        indices = np.asarray(indices, dtype=np.int64)
        return (indices >= max(self.n_written - self.capacity, 0)) & (indices < self.n_written)

    def reserve(self, length: int) -> np.ndarray:
        """
        Claim the next ``length`` absolute indices, evicting the items whose slots they reuse.

        :param length: number of items to write, at most the capacity
        :return: ``[length]`` absolute indices (write the items at ``slots(indices)``)
        """
        if not 0 <= length <= self.capacity:
            raise ValueError(f"cannot write {length} items into a ring of {self.capacity}")
        start = self.n_written
        indices = np.arange(start, start + length, dtype=np.int64)
        first_overwritten = max(start - self.capacity, 0)
        last_overwritten = start + length - self.capacity  # exclusive
        if last_overwritten > first_overwritten:
            self.tree.remove(np.arange(first_overwritten, last_overwritten) % self.capacity)
        self.index_of_slot[indices % self.capacity] = indices
        self.n_written += length
        return indices

    def _priorities(self, errors: np.ndarray) -> np.ndarray:
        errors = np.abs(np.asarray(errors, dtype=np.float64))
        if not np.all(np.isfinite(errors)):
            raise ValueError("Non-finite priorities (NaN or inf errors): check rewards, targets and losses")
        priorities = (errors + self.priority_epsilon) ** self.priority_exponent
        self.max_priority = max(self.max_priority, float(priorities.max(initial=0.0)))
        return priorities

    def set_priorities(self, indices: np.ndarray, errors: np.ndarray) -> None:
        """
        Make live items sampleable with priority ``(|error| + epsilon)^alpha``.

        :param indices: ``[B]`` absolute indices of live items
        :param errors: ``[B]`` errors (TD errors, value errors)
        """
        indices = np.asarray(indices, dtype=np.int64)
        if not np.all(self.is_live(indices)):
            raise ValueError("set_priorities got indices of items that are not (or no longer) in the ring")
        self.tree.update(self.slots(indices), self._priorities(errors))

    def update_priorities(self, indices: np.ndarray, errors: np.ndarray) -> None:
        """
        New priorities for sampled items; items evicted since they were sampled are skipped.

        :param indices: ``[B]`` absolute indices (as returned by :meth:`sample`)
        :param errors: ``[B]`` errors
        """
        indices = np.asarray(indices, dtype=np.int64)
        errors = np.asarray(errors)
        live = self.is_live(indices)
        slots = self.slots(indices[live])
        sampleable = self.tree.get(slots) > 0
        self.tree.update(slots[sampleable], self._priorities(errors[live][sampleable]))

    def sample(
        self, batch_size: int, rng: np.random.Generator, importance_exponent: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Draw items in proportion to their priorities (stratified over the total).

        :param batch_size: B
        :param rng: random generator
        :param importance_exponent: beta of the importance weights (0: all ones)
        :return: ``[B]`` absolute indices and ``[B]`` float32 importance weights (divided by the batch's largest)
        """
        if len(self) == 0:
            raise RuntimeError("The replay holds no sampleable item yet")
        slots = self.tree.sample(batch_size, rng)
        weights = self.tree.importance_weights(slots, importance_exponent, normalize="batch")
        return self.index_of_slot[slots], weights


__all__ = ["PrioritizedRing"]
