"""The previous action and reward as part of the observation (R2D2's and IMPALA's LSTM inputs).

R2D2 (Kapturowski et al. 2019) and IMPALA (Espeholt et al. 2018) feed the LSTM the one-hot previous action and the
previous reward beside the torso's features. Through the observation they reach every caller of ``predict`` (SB3's
``evaluate_policy``, ``EvalCallback``) without a change to SB3's API, as Acme's ``ObservationActionRewardWrapper``
does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

#: Keys the wrapper adds; a Box observation goes under :data:`OBSERVATION`.
OBSERVATION = "observation"
PREV_ACTION = "prev_action"
PREV_REWARD = "prev_reward"


def has_previous_action_reward(space: spaces.Space) -> bool:
    """Whether observations of ``space`` carry the previous action and reward (:class:`VecPreviousActionReward`)."""
    return isinstance(space, spaces.Dict) and PREV_ACTION in space.spaces and PREV_REWARD in space.spaces


class VecPreviousActionReward(VecEnvWrapper):
    """
    Adds the one-hot previous action (``"prev_action"``, ``[A]`` float32) and the previous reward (``"prev_reward"``,
    ``[1]`` float32) to every observation; both are zero at the first step of an episode.

    A Box observation becomes ``{"observation": obs, "prev_action": ..., "prev_reward": ...}``; a Dict observation
    keeps its keys and gains the two. The final observation of a finished episode (``infos[i]["terminal_observation"]``)
    carries the episode's last action and reward. Wrap evaluation envs the same way as the training env.

    :param venv: the VecEnv, with a Discrete action space
    """

    def __init__(self, venv: VecEnv) -> None:
        if not isinstance(venv.action_space, spaces.Discrete):
            raise ValueError(f"VecPreviousActionReward needs a Discrete action space, got {venv.action_space}")
        base = venv.observation_space
        extra = {
            PREV_ACTION: spaces.Box(0.0, 1.0, (int(venv.action_space.n),), np.float32),
            PREV_REWARD: spaces.Box(-np.inf, np.inf, (1,), np.float32),
        }
        if isinstance(base, spaces.Dict):
            clash = set(base.spaces) & set(extra)
            if clash:
                raise ValueError(f"The observation space already has the keys {sorted(clash)}")
            observation_space = spaces.Dict({**base.spaces, **extra})
        else:
            observation_space = spaces.Dict({OBSERVATION: base, **extra})
        super().__init__(venv, observation_space=observation_space)
        self.n_actions = int(venv.action_space.n)
        self._actions = np.zeros(self.num_envs, dtype=np.int64)

    def _wrap(self, obs: Any, actions: np.ndarray | None, rewards: np.ndarray | None) -> dict[str, np.ndarray]:
        n = len(actions) if actions is not None else self.num_envs
        one_hot = np.zeros((n, self.n_actions), dtype=np.float32)
        reward = np.zeros((n, 1), dtype=np.float32)
        if actions is not None and rewards is not None:
            one_hot[np.arange(n), actions] = 1.0
            reward[:, 0] = rewards
        base = dict(obs) if isinstance(obs, dict) else {OBSERVATION: obs}
        return {**base, PREV_ACTION: one_hot, PREV_REWARD: reward}

    def reset(self) -> VecEnvObs:
        return self._wrap(self.venv.reset(), None, None)  # type: ignore[return-value]

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        wrapped = self._wrap(obs, self._actions, rewards)
        for i in np.flatnonzero(dones).tolist():
            # The next episode starts with nothing before it; the final observation keeps the last action and reward.
            wrapped[PREV_ACTION][i] = 0.0
            wrapped[PREV_REWARD][i] = 0.0
            final = infos[i].get("terminal_observation")
            if final is not None:
                final_batch = {k: v[None] for k, v in final.items()} if isinstance(final, dict) else final[None]
                wrapped_final = self._wrap(final_batch, self._actions[i : i + 1], np.asarray(rewards[i : i + 1]))
                infos[i]["terminal_observation"] = {k: v[0] for k, v in wrapped_final.items()}
        return wrapped, rewards, dones, infos  # type: ignore[return-value]


__all__ = ["OBSERVATION", "PREV_ACTION", "PREV_REWARD", "VecPreviousActionReward", "has_previous_action_reward"]
