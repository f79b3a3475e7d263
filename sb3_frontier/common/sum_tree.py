"""Prioritized-replay segment tree (sums and minima) shared by the R2D2 and MuZero replays.

Proportional prioritization of Schaul et al. 2016, "Prioritized Experience Replay": item ``i`` is sampled with
probability ``P(i) = p_i / sum_k p_k`` (Eq. 1, with the exponent ``alpha`` already applied by the caller,
i.e. ``p_i`` here is ``p_i^alpha`` of the paper), and its importance-sampling weight is
``w_i = (N * P(i))^-beta / max_j w_j`` (Section 3.4).

The tree is a flat array of ``2 * size`` nodes (``size`` = capacity rounded up to a power of two): node 1 is
the root, node ``k`` has children ``2k`` and ``2k + 1``, and leaf ``i`` lives at node ``size + i``. Every
operation on a batch of ``B`` items costs ``O(B log N)`` and runs in numba, so sampling never slows down as
the replay fills up.
"""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np

__all__ = ["SumTree"]


@numba.njit(cache=True)
def _write_leaves(
    sums: np.ndarray,  # [2 * size] float64
    mins: np.ndarray,  # [2 * size] float64
    is_set: np.ndarray,  # [capacity] bool
    size: int,
    indices: np.ndarray,  # [B] int64, validated to lie in [0, capacity)
    priorities: np.ndarray,  # [B] float64, validated finite and already floored (ignored when unsetting)
    set_leaves: bool,
) -> int:
    """Write the leaves in order (set to ``priorities``, or unset: sum 0 and minimum +inf) and recompute their
    ancestors; return how many leaves changed between set and unset."""
    changed = 0
    for k in range(indices.shape[0]):
        idx = indices[k]
        if is_set[idx] != set_leaves:
            is_set[idx] = set_leaves
            changed += 1
        node = idx + size
        sums[node] = priorities[k] if set_leaves else 0.0
        mins[node] = priorities[k] if set_leaves else np.inf
        node //= 2
        while node >= 1:
            left = 2 * node
            # Recompute from the children (never add deltas): no drift after millions of updates.
            sums[node] = sums[left] + sums[left + 1]
            mins[node] = min(mins[left], mins[left + 1])
            node //= 2
    return changed


@numba.njit(cache=True)
def _find_prefix(
    sums: np.ndarray,  # [2 * size] float64
    size: int,
    masses: np.ndarray,  # [B] float64 in [0, total)
) -> np.ndarray:  # [B] int64
    """Descend from the root for each target mass; only ever step into a child whose sum is positive."""
    out = np.empty(masses.shape[0], dtype=np.int64)
    for k in range(masses.shape[0]):
        mass = masses[k]
        node = 1
        while node < size:
            left = 2 * node
            s_left = sums[left]
            s_right = sums[left + 1]
            # Go left when the mass falls there, or when round-off pushed it past a right subtree that is empty.
            # A node with a positive sum always has a child with a positive sum, so the leaf reached is positive:
            # it was set and is never a padding leaf, whatever the float round-off.
            if (mass < s_left and s_left > 0.0) or s_right <= 0.0:
                node = left
            else:
                mass -= s_left
                node = left + 1
        out[k] = node - size
    return out


@numba.njit(cache=True)
def _sample_masses(
    total: float,
    upper: float,
    uniforms: np.ndarray,  # [B] float64 in [0, 1)
    stratified: bool,
) -> np.ndarray:  # [B] float64 in [0, upper]
    """Turn uniforms into target masses: one per equal segment of the total when stratified, else over the total."""
    batch_size = uniforms.shape[0]
    masses = np.empty(batch_size, dtype=np.float64)
    segment = total / batch_size
    for k in range(batch_size):
        if stratified:
            mass = (k + uniforms[k]) * segment
        else:
            mass = uniforms[k] * total
        masses[k] = min(max(mass, 0.0), upper)
    return masses


class SumTree:
    """Segment tree over priorities keeping sums (for proportional sampling) and minima (for the max IS weight).

    Proportional prioritized replay (Schaul et al. 2016): ``P(i) = p_i / sum_k p_k`` (Eq. 1). The tree stores
    whatever priorities it is given, so apply the priority exponent ``alpha`` before :meth:`update`.

    Priorities are validated on every update: NaN, infinite and negative values raise ``ValueError`` and leave
    the tree untouched. Priorities below ``min_priority`` (in particular an exact 0, e.g. a TD error that is
    exactly zero) are stored as ``min_priority``: such an item stays sampleable, with a negligible probability,
    instead of becoming unreachable forever because of one zero error. Note that the floor enters the minimum
    and therefore the largest importance-sampling weight ``(N * p_min / total)^-beta``: keep it well below the
    priorities the algorithm produces, but not so small that ``p_min`` makes every other weight vanish.

    :param capacity: number of leaves (items), e.g. the replay capacity; rounded up to a power of two internally
    :param min_priority: positive floor applied to every stored priority; the default 1e-6 matches the
        ``prioritized_replay_eps`` commonly added to absolute TD errors
    """

    def __init__(self, capacity: int, min_priority: float = 1e-6) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"SumTree capacity must be a positive integer, got {capacity!r}")
        min_priority = float(min_priority)
        if not (np.isfinite(min_priority) and min_priority > 0.0):
            raise ValueError(f"SumTree min_priority must be finite and > 0, got {min_priority!r}")
        self._capacity = int(capacity)
        self._size = 1 << (self._capacity - 1).bit_length()  # smallest power of two >= capacity
        self._min_priority = min_priority
        # Largest priority such that a full tree of them still sums to a finite float64.
        self._max_priority = float(np.finfo(np.float64).max) / self._size
        self._sums = np.zeros(2 * self._size, dtype=np.float64)  # [2 * size], node 0 unused
        self._mins = np.full(2 * self._size, np.inf, dtype=np.float64)  # [2 * size], unset leaves are +inf
        self._is_set = np.zeros(self._capacity, dtype=np.bool_)  # [capacity]
        self._n_set = 0

    @property
    def capacity(self) -> int:
        """Number of leaves the tree holds (as requested, before rounding up to a power of two)."""
        return self._capacity

    @property
    def min_priority(self) -> float:
        """Floor applied to every stored priority."""
        return self._min_priority

    def __len__(self) -> int:
        """Number of leaves currently set (for a ring buffer: the number of items stored, <= capacity)."""
        return self._n_set

    def __repr__(self) -> str:
        return f"SumTree(capacity={self._capacity}, len={self._n_set}, total={self.total():.6g})"

    def _check_indices(self, indices: np.ndarray | list[int] | int, name: str = "indices") -> np.ndarray:
        """Validate indices (integers in ``[0, capacity)``) and return them as a flat int64 array."""
        arr = np.asarray(indices)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"SumTree {name} must be integers, got dtype {arr.dtype}")
        arr = arr.reshape(-1).astype(np.int64)
        if arr.min() < 0 or arr.max() >= self._capacity:
            bad = arr[(arr < 0) | (arr >= self._capacity)]
            raise ValueError(f"SumTree {name} must lie in [0, {self._capacity}), got {bad[:5].tolist()}")
        return arr

    def update(self, indices: np.ndarray | list[int] | int, priorities: np.ndarray | list[float] | float) -> None:
        """Set the priorities of a batch of leaves in ``O(B log N)``.

        If an index appears several times in one call, the last occurrence wins (the leaves are written in
        order), exactly as if the calls had been made one by one. Stored values are
        ``max(priority, min_priority)``. The whole batch is validated before anything is written, so a
        rejected call leaves the tree unchanged.

        :param indices: leaf indices in ``[0, capacity)``, shape ``[B]`` (any shape is flattened)
        :param priorities: priorities ``p_i >= 0``, finite, same number of elements as ``indices``
        :raises ValueError: on out-of-range or non-integer indices, mismatched sizes, NaN, infinite or negative
            priorities, or priorities so large that the total could overflow
        """
        idx = self._check_indices(indices)
        prio = np.asarray(priorities)
        if prio.dtype.kind not in "iuf":
            raise ValueError(f"SumTree priorities must be real numbers, got dtype {prio.dtype}")
        prio = prio.reshape(-1).astype(np.float64)
        if prio.shape[0] != idx.shape[0]:
            raise ValueError(f"SumTree.update got {idx.shape[0]} indices but {prio.shape[0]} priorities")
        if idx.shape[0] == 0:
            return
        bad = ~np.isfinite(prio) | (prio < 0.0)
        if bad.any():
            raise ValueError(
                "SumTree priorities must be finite and >= 0 (check the TD errors / value targets for NaN or inf); "
                f"got {prio[bad][:5].tolist()} at indices {idx[bad][:5].tolist()}"
            )
        if prio.max() > self._max_priority:
            raise ValueError(
                f"SumTree priorities must be <= {self._max_priority:.3g} so that the total stays finite, got {prio.max():.3g}"
            )
        prio = np.maximum(prio, self._min_priority)
        self._n_set += int(_write_leaves(self._sums, self._mins, self._is_set, self._size, idx, prio, True))

    def remove(self, indices: np.ndarray | list[int] | int) -> None:
        """Unset a batch of leaves (e.g. replay items that were overwritten): they are never sampled again until
        :meth:`update` sets them, and no longer count in :meth:`total`, :meth:`min` or ``len``.

        :param indices: leaf indices in ``[0, capacity)``; leaves that are not set are left as they are
        """
        idx = self._check_indices(indices)
        if idx.shape[0] == 0:
            return
        unused = np.zeros(idx.shape[0], dtype=np.float64)
        self._n_set -= int(_write_leaves(self._sums, self._mins, self._is_set, self._size, idx, unused, False))

    def total(self) -> float:
        """Sum of all stored priorities (0.0 when the tree is empty).

        :return: ``sum_i p_i``
        """
        return float(self._sums[1])

    def min(self) -> float:
        """Smallest stored priority over the leaves that were set (``inf`` when the tree is empty).

        :return: ``min_i p_i``
        """
        return float(self._mins[1])

    def get(self, indices: np.ndarray | list[int] | int) -> np.ndarray:
        """Stored priorities of a batch of leaves (0.0 for a leaf never set).

        :param indices: leaf indices in ``[0, capacity)``, shape ``[B]``
        :return: priorities, shape ``[B]``, float64
        """
        idx = self._check_indices(indices)
        return self._sums[idx + self._size].copy()

    def _check_not_empty(self) -> float:
        total = self.total()
        if self._n_set == 0 or not total > 0.0:
            raise ValueError("cannot sample from an empty SumTree: call update() with at least one priority first")
        return total

    def find(self, masses: np.ndarray | list[float] | float) -> np.ndarray:
        """Prefix-sum search: for each mass ``m`` return the leaf ``i`` with ``sum_{k<i} p_k <= m < sum_{k<=i} p_k``.

        A mass equal to the total maps to the last leaf with a positive priority. Whatever the float round-off,
        the returned leaves always hold a positive priority (so they were set).

        :param masses: target masses in ``[0, total]``, shape ``[B]``
        :return: leaf indices, shape ``[B]``, int64
        :raises ValueError: when the tree is empty or a mass is NaN or outside ``[0, total]``
        """
        total = self._check_not_empty()
        arr = np.asarray(masses, dtype=np.float64).reshape(-1)
        if arr.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        if not (np.all(arr >= 0.0) and np.all(arr <= total)):  # also rejects NaN
            raise ValueError(f"SumTree.find masses must lie in [0, total={total!r}], got min {arr.min()!r}, max {arr.max()!r}")
        arr = np.minimum(arr, np.nextafter(total, 0.0))
        return _find_prefix(self._sums, self._size, arr)

    def sample(self, batch_size: int, rng: np.random.Generator, stratified: bool = True) -> np.ndarray:
        """Sample leaves proportionally to their priorities, ``P(i) = p_i / sum_k p_k`` (Schaul et al. 2016, Eq. 1).

        With ``stratified=True`` the total is cut into ``batch_size`` equal segments and one mass is drawn
        uniformly inside each (the paper's Appendix B.2.1), which lowers the variance of the batch; each draw
        on its own is then not identically distributed, but every leaf is still picked with expected frequency
        ``batch_size * P(i)``. With ``stratified=False`` the draws are i.i.d. with probability ``P(i)``.
        Costs ``O(batch_size * log N)`` and consumes ``rng.random(batch_size)``.

        :param batch_size: number of indices to draw (>= 1)
        :param rng: source of randomness
        :param stratified: one draw per equal segment of the total (True) or i.i.d. draws (False)
        :return: leaf indices, shape ``[batch_size]``, int64; never a leaf that was not set
        :raises ValueError: when the tree is empty or ``batch_size < 1``
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"SumTree.sample batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"SumTree.sample rng must be a numpy.random.Generator, got {type(rng).__name__}")
        total = self._check_not_empty()
        uniforms = rng.random(int(batch_size))  # [B] in [0, 1)
        masses = _sample_masses(total, float(np.nextafter(total, 0.0)), uniforms, bool(stratified))
        return _find_prefix(self._sums, self._size, masses)

    def importance_weights(
        self,
        indices: np.ndarray | list[int] | int,
        beta: float,
        n: int | None = None,
        normalize: Literal["tree", "batch"] | None = "tree",
    ) -> np.ndarray:
        """Importance-sampling weights ``w_i = (N * P(i))^-beta`` (Schaul et al. 2016, Section 3.4), normalized.

        With ``normalize="tree"`` (the paper's ``w_i / max_j w_j`` over every stored item) the largest weight any
        item can get is 1, reached by the item of smallest priority: ``w_max = (N * p_min / total)^-beta``.
        With ``normalize="batch"`` the weights are divided by their maximum over ``indices`` (as in Acme's R2D2),
        and with ``None`` the raw ``(N * P(i))^-beta`` is returned. ``N`` cancels out of both normalized forms,
        so ``n`` only matters for ``normalize=None``. ``beta=0`` gives all ones.

        :param indices: sampled leaf indices, shape ``[B]``; every leaf must have been set
        :param beta: importance-sampling exponent, ``beta >= 0`` (usually annealed towards 1)
        :param n: number of items ``N`` in the replay; defaults to ``len(self)``
        :param normalize: ``"tree"``, ``"batch"`` or ``None`` (see above)
        :return: weights, shape ``[B]``, float32
        :raises ValueError: on a negative or non-finite ``beta``, ``n < 1``, an unknown ``normalize``, an empty tree
            or a leaf that was never set
        """
        beta = float(beta)
        if not (np.isfinite(beta) and beta >= 0.0):
            raise ValueError(f"SumTree.importance_weights beta must be finite and >= 0, got {beta!r}")
        if normalize not in ("tree", "batch", None):
            raise ValueError(f"SumTree.importance_weights normalize must be 'tree', 'batch' or None, got {normalize!r}")
        total = self._check_not_empty()
        n_items = len(self) if n is None else n
        if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
            raise ValueError(f"SumTree.importance_weights n must be a positive integer, got {n_items!r}")
        idx = self._check_indices(indices)
        prio = self._sums[idx + self._size]  # [B]
        if idx.shape[0] > 0 and not np.all(self._is_set[idx]):
            raise ValueError(
                f"SumTree.importance_weights got leaves that were never set: {idx[~self._is_set[idx]][:5].tolist()}"
            )
        if normalize == "tree":
            # (N p_i / total)^-beta / (N p_min / total)^-beta = (p_min / p_i)^beta: in (0, 1], no overflow.
            weights = (self.min() / prio) ** beta
        elif normalize == "batch":
            weights = (prio.min(initial=np.inf) / prio) ** beta
        else:
            weights = (float(n_items) * prio / total) ** (-beta)
        return weights.astype(np.float32)
