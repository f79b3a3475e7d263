"""One task of a multi-task set as a registered env: ``gym.make("sb3_frontier/MinAtarMultiTask-v0", task=k)``.

:func:`~sb3_frontier.wrappers.multitask.make_multitask_vec_env` builds the training VecEnv of a multi-task agent, every
game of the set at once. Tools that build each env with the same ``gym.make(id, **kwargs)`` (rl-zoo3's ``enjoy`` and
``record-video``, gymnasium's and SB3's env checkers) need one id instead. :class:`MultiTaskEnv` is the entry point of
such an id: game ``task`` of the set ``env_ids`` (the id's registered kwargs), with the kwargs, the common spaces and
the padding that env ``task`` of :func:`make_multitask_vec_env` gets (the steps are shared:
:func:`~sb3_frontier.wrappers.multitask.game_kwargs`, :func:`~sb3_frontier.wrappers.multitask.common_spaces`,
:func:`~sb3_frontier.wrappers.multitask.pad_to`), tagged with :class:`~sb3_frontier.wrappers.multitask.TaskId`. A
model trained on the set therefore plays any one game of it through the id. One difference: in the VecEnv a
``wrapper_class`` goes between the game and the padding, here it goes around the padded game (as ``make_vec_env``
puts it), so the two agree for wrappers that keep the spaces' shapes only.

:func:`multitask_vec_env` builds the whole set of such an id as one VecEnv (what ``sb3-frontier train`` does with it,
see :mod:`sb3_frontier.zoo.multitask`); :func:`is_multitask_spec` tells such ids apart.

Why a class rather than a function returning the wrapped game: gymnasium's checker requires the unwrapped env's
``reset(seed=...)`` to seed ``env.np_random`` (``super().reset(seed=seed)``), which MinAtar's env does not do. As the
unwrapped env, :class:`MultiTaskEnv` seeds its own generator and passes the seed on to the game.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from numbers import Integral
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from stable_baselines3.common.vec_env import VecEnv

from sb3_frontier.envs import MULTITASK_ENTRY_POINT
from sb3_frontier.wrappers.multitask import TaskId, common_spaces, game_kwargs, make_multitask_vec_env, pad_to


class MultiTaskEnv(gym.Env[np.ndarray, np.int64]):
    """
    Game ``task`` of the multi-task set ``env_ids``, in the set's common observation and action spaces, tagged with
    its task id (the attribute ``task_id`` and ``info["task_id"]``).

    ``env_kwargs`` go to every game (each game is built once, and closed, to read the common spaces), after the
    full-action-set switch of its registration when ``full_action_set`` is on, exactly as in
    :func:`~sb3_frontier.wrappers.multitask.make_multitask_vec_env`. The render modes are the game's; ``"human"``
    and ``"rgb_array"`` are those MinAtar and the ALE both have.

    :param env_ids: Registered gymnasium ids of the set, one per task (MinAtar's are registered by
        :func:`sb3_frontier.envs.register_envs`)
    :param task: Index of the game to play in ``env_ids`` (its task id)
    :param full_action_set: Switch the games to their full action set where their registration allows it
    :param render_mode: Render mode of the game (None: no rendering)
    :param env_kwargs: Constructor kwargs of every game
    """

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"]}

    task_id: int

    def __init__(
        self,
        env_ids: Sequence[str],
        task: int = 0,
        full_action_set: bool = True,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        if isinstance(env_ids, str) or len(env_ids) == 0:
            raise ValueError(f"env_ids must be a non-empty sequence of env ids, got {env_ids!r}")
        if isinstance(task, bool) or not isinstance(task, Integral) or not 0 <= task < len(env_ids):
            raise ValueError(f"task must be an index of env_ids, 0..{len(env_ids) - 1}, got {task!r}")
        self.env_ids = tuple(env_ids)
        self.task_id = int(task)
        self.render_mode = render_mode
        specs = [gym.spec(env_id) for env_id in self.env_ids]
        kwargs = [game_kwargs(spec, env_kwargs, full_action_set) for spec in specs]
        self.observation_space, self.action_space = common_spaces(
            self.env_ids, [partial(gym.make, spec, **game) for spec, game in zip(specs, kwargs, strict=True)]
        )
        render = {} if render_mode is None else {"render_mode": render_mode}
        game = gym.make(specs[self.task_id], **render, **kwargs[self.task_id])
        self.game: gym.Env[np.ndarray, np.int64] = TaskId(
            pad_to(game, self.observation_space, self.action_space), self.task_id
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Seed this env's generator (with a seed) and reset the game with the same seed.

        :param seed: Seed of the game (None: the game goes on with its own random stream)
        :param options: Options of the game's ``reset``
        :return: ``obs, info``, with ``info["task_id"]``
        """
        super().reset(seed=seed)
        return self.game.reset(seed=seed, options=options)

    def step(self, action: np.int64) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """
        Step the game.

        :param action: Action in the common action space (an index the game lacks is its no-op)
        :return: ``obs, reward, terminated, truncated, info``, with ``info["task_id"]`` and the reward as a Python
            float (MinAtar's Space Invaders returns NumPy integers, which SB3's checker refuses)
        """
        obs, reward, terminated, truncated, info = self.game.step(action)
        return obs, float(reward), terminated, truncated, info

    def render(self) -> Any:
        """
        Render the game (the game's own rendering, unpadded).

        :return: What the game's ``render`` returns
        """
        return self.game.render()

    def close(self) -> None:
        """Close the game."""
        self.game.close()
        super().close()


def is_multitask_spec(spec: EnvSpec) -> bool:
    """
    Whether an id is a multi-task set (its entry point is :class:`MultiTaskEnv`).

    :param spec: The id's registration (``gym.spec(env_id)``)
    :return: True for a multi-task id
    """
    return spec.entry_point in (MULTITASK_ENTRY_POINT, MultiTaskEnv)


def multitask_env_ids(spec: EnvSpec, env_kwargs: dict[str, Any] | None = None) -> tuple[str, ...]:
    """
    The games of a multi-task id, one per task: its registered ``env_ids``, or those of ``env_kwargs``.

    :param spec: The multi-task id's registration
    :param env_kwargs: Kwargs given on top of the registered ones
    :return: The games' ids
    """
    if not is_multitask_spec(spec):
        raise ValueError(
            f"{spec.id} is not a multi-task id: its entry point is {spec.entry_point!r}, not {MULTITASK_ENTRY_POINT!r}"
        )
    return tuple({**spec.kwargs, **(env_kwargs or {})}["env_ids"])


def multitask_vec_env(
    spec: EnvSpec, n_envs_per_task: int, env_kwargs: dict[str, Any] | None = None, **vec_env_options: Any
) -> VecEnv:
    """
    Every game of a multi-task id as one VecEnv: :func:`~sb3_frontier.wrappers.multitask.make_multitask_vec_env` of
    its ``env_ids`` and ``full_action_set``, the remaining kwargs going to every game. ``task`` selects a single game
    and is refused here.

    :param spec: The multi-task id's registration
    :param n_envs_per_task: Number of envs of each game
    :param env_kwargs: Kwargs given on top of the registered ones (``env_ids``, ``full_action_set``, game kwargs)
    :param vec_env_options: Other arguments of ``make_multitask_vec_env`` (``seed``, ``vec_env_cls``,
        ``wrapper_class``, ``monitor_dir``, ...)
    :return: The VecEnv, env ``i * n_envs_per_task + j`` playing task ``i``
    """
    kwargs = {**spec.kwargs, **(env_kwargs or {})}
    if "task" in kwargs:
        raise ValueError(
            f"task={kwargs['task']!r} selects one game of {spec.id}, but its VecEnv plays every game; "
            "give task only to gym.make (e.g. to enjoy one game)"
        )
    env_ids = multitask_env_ids(spec, env_kwargs)
    full_action_set = bool(kwargs.pop("full_action_set", True))
    kwargs.pop("env_ids")
    return make_multitask_vec_env(
        env_ids, n_envs_per_task, env_kwargs=kwargs, full_action_set=full_action_set, **vec_env_options
    )


__all__ = ["MultiTaskEnv", "is_multitask_spec", "multitask_env_ids", "multitask_vec_env"]
