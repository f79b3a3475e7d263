"""Time-major n-step returns (rlax's ``n_step_bootstrapped_returns``, split into the parts a replay stores).

For a sequence of ``T`` transitions ``(s_t, a_t, r_t, s_{t+1})`` with per-step discounts ``d_t`` (``gamma``, or 0
after a terminal step or a lost life), the n-step target of step ``t`` is

    G_t = sum_{i < m_t} (prod_{j < i} d_{t+j}) r_{t+i} + (prod_{j < m_t} d_{t+j}) v(s_{t+m_t}),   m_t = min(n, T - t)

(R2D2 Sec. 2 with h applied around it; MuZero Appendix G's ``z_t``; the horizon shortens at the sequence's end, as
rlax does). A zero discount cuts both the later rewards and the bootstrap, so a termination or a lost life inside
the n steps ends the return there; a truncation keeps ``d_t = gamma`` and bootstraps from the final observation.

The value ``v`` is not an input: :func:`n_step_parts` returns the reward sum, the bootstrap discount and the index of
the bootstrap state, so that the caller can bootstrap from stored search values, a target network evaluated later
(MuZero Reanalyze) or ``h^-1`` of a target Q (R2D2), without recomputing the sums.
"""

from __future__ import annotations

import numpy as np


def n_step_parts(rewards: np.ndarray, discounts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The parts of the n-step targets ``G_t = prefix_t + bootstrap_discount_t * v[bootstrap_index_t]``.

    :param rewards: ``[T, ...]`` rewards ``r_t`` (time-major; trailing batch dimensions allowed)
    :param discounts: ``[T, ...]`` discounts ``d_t`` applied after step ``t`` (``gamma * (1 - stop_t)``)
    :param n: the number of steps, >= 1
    :return: ``prefix [T, ...]`` (float64 discounted reward sums), ``bootstrap_discount [T, ...]`` (float64
        ``prod_{j < m_t} d_{t+j}``, 0 when a zero discount cut the return) and ``bootstrap_index [T]`` (int64,
        ``t + m_t`` in ``[1, T]``: an index into the ``T + 1`` states ``s_0 .. s_T``)
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    rewards = np.asarray(rewards, dtype=np.float64)
    discounts = np.asarray(discounts, dtype=np.float64)
    if rewards.shape != discounts.shape or rewards.ndim < 1:
        raise ValueError(f"rewards and discounts must have the same shape [T, ...], got {rewards.shape}, {discounts.shape}")
    length = rewards.shape[0]
    prefix = np.zeros_like(rewards)
    carried = np.ones_like(discounts)  # prod_{j < i} d_{t+j} while step t accumulates
    for i in range(min(n, length)):
        rows = length - i  # steps t whose i-th reward lies inside the sequence
        prefix[:rows] += carried[:rows] * rewards[i:]
        carried[:rows] *= discounts[i:]
    bootstrap_index = np.minimum(np.arange(length) + n, length)
    return prefix, carried, bootstrap_index


def n_step_returns(rewards: np.ndarray, discounts: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """
    n-step bootstrapped returns (rlax's ``n_step_bootstrapped_returns`` with ``lambda = 1``), time-major.

    :param rewards: ``[T, ...]`` rewards
    :param discounts: ``[T, ...]`` discounts after each step
    :param values: ``[T + 1, ...]`` values of the states ``s_0 .. s_T`` (``values[0]`` is not used)
    :param n: the number of steps
    :return: ``[T, ...]`` float64 returns
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[:1] != (np.shape(rewards)[0] + 1,) or values.shape[1:] != np.shape(rewards)[1:]:
        raise ValueError(f"values must have shape [T + 1, ...] for rewards of shape {np.shape(rewards)}, got {values.shape}")
    prefix, bootstrap_discount, bootstrap_index = n_step_parts(rewards, discounts, n)
    return prefix + bootstrap_discount * values[bootstrap_index]


__all__ = ["n_step_parts", "n_step_returns"]
