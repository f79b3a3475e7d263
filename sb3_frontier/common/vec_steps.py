"""How each env of a VecEnv step ended: terminated, truncated or a lost life, and its real final observation.

SB3's VecEnvs reset a finished env at once: ``dones[i]`` is ``terminated or truncated``, ``infos[i]
["TimeLimit.truncated"]`` tells a time limit (truncated and not terminated) and ``infos[i]["terminal_observation"]``
holds the observation the episode ended on. :class:`~sb3_frontier.wrappers.LifeLoss` adds ``infos[i]["life_loss"]``.
Our algorithms read a step through :func:`split_step`:

- **terminated**: the episode reached a terminal state: no bootstrap after this transition;
- **truncated**: a time limit cut the episode: bootstrap from the value of the final observation;
- **life_loss**: a life was lost but the game goes on (LifeLoss "roll"): no bootstrap after this transition, the
  recurrent state and the episode continue;
- **stop** = terminated or life_loss: where n-step, V-trace and MuZero targets stop bootstrapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sb3_frontier.common.observations import Obs, obs_leaves, obs_map

#: An observation batch: an array or a (possibly nested) dict of arrays.
ObsT = TypeVar("ObsT", bound="np.ndarray | dict[str, Any]")


@dataclass(frozen=True)
class StepEnds:
    """
    Per-env end flags of one VecEnv step (all ``[n_envs]`` bool).

    :param terminated: the episode ended in a terminal state
    :param truncated: the episode was cut by a time limit (not a terminal state)
    :param life_loss: a life was lost on this step (the episode may go on)
    """

    terminated: np.ndarray
    truncated: np.ndarray
    life_loss: np.ndarray

    @property
    def done(self) -> np.ndarray:
        """``[n_envs]`` the env was reset after this step (terminated or truncated)."""
        return self.terminated | self.truncated

    @property
    def stop(self) -> np.ndarray:
        """``[n_envs]`` bootstrapping stops after this transition (terminated or a lost life)."""
        return self.terminated | self.life_loss


def split_step(dones: np.ndarray, infos: Sequence[dict[str, Any]]) -> StepEnds:
    """
    Split the ``dones`` of an SB3 VecEnv step into terminated / truncated, and read the life-loss flags.

    :param dones: ``[n_envs]`` done flags returned by ``VecEnv.step``
    :param infos: the infos returned with them
    :return: the end flags
    """
    done = np.asarray(dones, dtype=bool)
    if done.shape != (len(infos),):
        raise ValueError(f"dones has shape {done.shape} but there are {len(infos)} infos")
    time_limit = np.fromiter((bool(info.get("TimeLimit.truncated", False)) for info in infos), bool, len(infos))
    life_loss = np.fromiter((bool(info.get("life_loss", False)) for info in infos), bool, len(infos))
    truncated = done & time_limit
    return StepEnds(terminated=done & ~truncated, truncated=truncated, life_loss=life_loss)


def final_observation(infos: Sequence[dict[str, Any]], env: int) -> Obs:
    """
    The observation env ``env`` ended its episode on (SB3 VecEnvs put it in ``infos[env]["terminal_observation"]``).

    :param infos: the infos of the step
    :param env: index of a done env
    :return: its final observation
    """
    try:
        return infos[env]["terminal_observation"]
    except KeyError:
        raise ValueError(f"env {env} is done but its info has no 'terminal_observation' (not an SB3 VecEnv?)") from None


def real_next_obs(new_obs: ObsT, dones: np.ndarray, infos: Sequence[dict[str, Any]]) -> ObsT:
    """
    The real next observations of a VecEnv step: ``new_obs`` with the final observation substituted where an env is
    done (its ``new_obs`` entry is already the first observation of the next episode). ``new_obs`` is not modified.

    :param new_obs: observations returned by ``VecEnv.step``, ``[n_envs, ...]`` or a (nested) dict of such arrays
    :param dones: ``[n_envs]`` done flags
    :param infos: the infos of the step
    :return: a copy of ``new_obs`` holding the final observations of the done envs
    """
    out = obs_map(lambda value: np.array(value, copy=True), new_obs)
    for env in np.flatnonzero(np.asarray(dones, dtype=bool)).tolist():
        for (_, buffer), (_, leaf) in zip(obs_leaves(out), obs_leaves(final_observation(infos, env)), strict=True):
            buffer[env] = leaf
    return out


__all__ = ["StepEnds", "final_observation", "real_next_obs", "split_step"]
