"""R2D2's n-step transformed targets over a training window, and its sequence priorities.

For the steps ``t`` of a window (time-major ``[L, B]``), with ``d_t = gamma`` except 0 after a termination or a lost
life, the target is (Kapturowski et al. 2019, Sec. 2, with Pohlen et al.'s transform h)

    y_t = h( sum_{k < m_t} (prod_{j < k} d_{t+j}) r_{t+k} + (prod_{j < m_t} d_{t+j}) h^-1( Q_target(s_{t+m_t}, a*) ) )

with ``a* = argmax_a Q_online(s_{t+m_t}, a)`` (double Q) and ``m_t = min(n, L - t)``: the horizon shortens at the
window's end. Where the episode ends inside the window, the steps after its last step are padding; the bootstrap
index is capped at the episode's final observation (a truncated episode bootstraps from it; a terminated one has
a zero discount there).
"""

from __future__ import annotations

import numpy as np

from sb3_frontier.common.returns import n_step_parts


def window_bootstrap(
    rewards: np.ndarray,
    terminated: np.ndarray,
    life_loss: np.ndarray,
    mask: np.ndarray,
    gamma: float,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The parts of the n-step targets of a window: ``G_t = prefix_t + discount_t * v[index_t]``.

    :param rewards: ``[L, B]`` rewards
    :param terminated: ``[L, B]`` the step ended the episode in a terminal state
    :param life_loss: ``[L, B]`` a life was lost on the step (bootstrapping stops, the episode goes on)
    :param mask: ``[L, B]`` real steps (padding after an episode's end is False)
    :param gamma: the discount
    :param n: the number of steps
    :return: ``prefix [L, B]`` and ``discount [L, B]`` (float64), ``index [L, B]`` (int64 into the window's ``L + 1``
        states)
    """
    mask = np.asarray(mask, dtype=bool)
    stop = np.asarray(terminated, dtype=bool) | np.asarray(life_loss, dtype=bool)
    discounts = np.where(mask, gamma * (1.0 - stop), 1.0)
    prefix, discount, index = n_step_parts(np.where(mask, rewards, 0.0), discounts, n)
    length = mask.shape[0]
    valid_after = np.cumsum(mask[::-1], axis=0)[::-1] > 0  # some real step at or after t
    end = valid_after.sum(axis=0)  # last real step + 1 (the episode's final observation), per sequence
    return prefix, discount, np.minimum(index.reshape(length, *([1] * (mask.ndim - 1))), end)


def sequence_priorities(abs_errors: np.ndarray, mask: np.ndarray, eta: float = 0.9) -> np.ndarray:
    """
    R2D2's sequence priority ``eta * max_t |delta_t| + (1 - eta) * mean_t |delta_t|`` over the real steps.

    :param abs_errors: ``[L, B]`` absolute TD errors
    :param mask: ``[L, B]`` real steps
    :param eta: weight of the maximum (0.9 in the paper)
    :return: ``[B]`` priorities (NaN where a sequence has no real step)
    """
    mask = np.asarray(mask, dtype=bool)
    errors = np.where(mask, np.abs(abs_errors), 0.0)
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = errors.sum(axis=0) / count
    maximum = np.where(count > 0, errors.max(axis=0, initial=0.0), np.nan)
    return eta * maximum + (1.0 - eta) * mean


__all__ = ["sequence_priorities", "window_bootstrap"]
