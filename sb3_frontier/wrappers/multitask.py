"""Several games as one VecEnv for multi-task training: a common observation and action space, and a task id per env.

Multi-task PopArt-IMPALA (Hessel et al. 2018, "Multi-task deep reinforcement learning with PopArt") trains one agent
on many games at once. The policy is task-agnostic: it sees one common observation space and acts in one common
action space, so the same network plays every game. The task id of an env only selects which value output and which
PopArt statistics (mu, sigma) its returns are scored and normalised with; it is not an input of the policy. This
module builds that setting from gymnasium envs:

- :class:`PadObservation` zero-pads a game's Box observation to the common (largest) shape;
- :class:`PadActions` exposes the common (largest) ``Discrete(n)``; an action the game lacks is its no-op;
- :class:`TaskId` tags an env with its task (``env.task_id``, ``info["task_id"]``);
- :func:`make_multitask_vec_env` builds, checks and stacks all of these for a list of env ids;
- :func:`task_ids` and :func:`count_tasks` read the tags back from any VecEnv (the algorithm's side);
- :func:`game_kwargs`, :func:`common_spaces` and :func:`pad_to` are its steps (a game's kwargs, the spaces every
  game pads to, one game padded to them), shared with :class:`~sb3_frontier.envs.multitask.MultiTaskEnv`, which
  builds one game of a set as a registered env (``gym.make("sb3_frontier/MinAtarMultiTask-v0", task=2)``).

Action sets. A padded action index must mean the same thing in every game, or the shared policy learns a
different meaning for each index per task. Arcade games have a natural common set: every MinAtar game acts on
MinAtar's six actions ``(no-op, left, up, right, down, fire)`` (``minatar.Environment.num_actions()`` is 6 for every
game, and each game's ``action_map`` is ``['n', 'l', 'u', 'r', 'd', 'f']``), and every ALE game on the 18 Atari
actions. The ``-v1`` MinAtar ids (``use_minimal_action_set=True``) and ALE's default (``full_action_space=False``)
expose each game's *minimal* set instead, re-indexed per game: index 1 is "left" in Breakout ``[n, l, r]`` but
"up" in Freeway ``[n, u, d]``. :func:`make_multitask_vec_env` therefore switches registered games to their full
action set by default (:data:`FULL_ACTION_SET_KWARGS`), as the paper does with the 18 Atari actions; games without
such a switch are padded with :class:`PadActions`, whose extra indices are the game's no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from numbers import Integral
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.core import ActType, ObsType
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

#: Name of the attribute (and of the info key) that holds an env's task id.
TASK_ID = "task_id"

#: MinAtar's full action set, in index order (each game's ``action_map``; ``-v0`` ids and ``use_minimal_action_set=False``).
MINATAR_ACTIONS: tuple[str, ...] = ("no-op", "left", "up", "right", "down", "fire")

#: Constructor kwargs that switch a registered game to its full action set, whose indices mean the same in every
#: game of its suite: MinAtar's ``use_minimal_action_set`` (6 actions) and ALE's ``full_action_space`` (18 actions).
#: :func:`make_multitask_vec_env` sets those the env's registration declares (its ``spec.kwargs``).
FULL_ACTION_SET_KWARGS: dict[str, bool] = {"use_minimal_action_set": False, "full_action_space": True}


class TaskId(gym.Wrapper[ObsType, ActType, ObsType, ActType], gym.utils.RecordConstructorArgs):
    """
    Tag an env with the index of its task: the attribute ``task_id`` and ``info["task_id"]`` in every ``reset`` and
    ``step`` info.

    The attribute is what the learner reads once (``vec_env.get_attr("task_id")``, see :func:`task_ids`) to pick
    each env's value output and PopArt statistics; the info key travels with each transition, so that per-task
    episode statistics (``info["episode"]`` from SB3's ``Monitor`` arrives in the same info) need no lookup.

    :param env: Environment to tag
    :param task_id: Index of its task, in ``[0, n_tasks)``
    """

    task_id: int

    def __init__(self, env: gym.Env[ObsType, ActType], task_id: int) -> None:
        if isinstance(task_id, bool) or not isinstance(task_id, Integral) or task_id < 0:
            raise ValueError(f"task_id must be a non-negative integer, got {task_id!r}")
        gym.utils.RecordConstructorArgs.__init__(self, task_id=int(task_id))
        gym.Wrapper.__init__(self, env)
        self.task_id = int(task_id)

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """
        Step the wrapped env and tag the info.

        :param action: Action to take
        :return: ``obs, reward, terminated, truncated, info`` with ``info["task_id"]`` set
        """
        obs, reward, terminated, truncated, info = self.env.step(action)
        info[TASK_ID] = self.task_id
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        """
        Reset the wrapped env and tag the info.

        :param seed: Seed passed to the wrapped env's ``reset``
        :param options: Options passed to the wrapped env's ``reset``
        :return: ``obs, info`` with ``info["task_id"]`` set
        """
        obs, info = self.env.reset(seed=seed, options=options)
        info[TASK_ID] = self.task_id
        return obs, info


def _padded_bounds(space: spaces.Box, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """
    Default bounds of ``space`` zero-padded to ``shape``: its own bounds in its slice, elsewhere its lowest low and
    highest high (a uniform Box, such as MinAtar's ``Box(False, True)``, stays uniform).

    :param space: The unpadded Box
    :param shape: The padded shape (same rank, at least as large in every dim)
    :return: ``low, high``, each of ``shape`` and ``space.dtype``
    """
    region = tuple(slice(0, size) for size in space.shape)
    bounds = []
    for bound, reduce in ((space.low, np.min), (space.high, np.max)):
        fill = reduce(bound) if bound.size > 0 else 0
        padded = np.full(shape, fill, dtype=space.dtype)
        padded[region] = bound
        bounds.append(padded)
    return bounds[0], bounds[1]


class PadObservation(gym.ObservationWrapper[np.ndarray, ActType, np.ndarray], gym.utils.RecordConstructorArgs):
    """
    Zero-pad a Box observation to a larger shape of the same rank, so that games of different sizes share one
    observation space (MinAtar's ``(10, 10, C)`` boards have C = 4 to 10 channels).

    The observation sits at the start of every dim (``padded[:h, :w, :c] = obs``): padding is trailing, so a
    channel-last board keeps its cells where they were and gains empty channels. The padded entries are always 0
    (``False`` for a bool Box), in the env's dtype. The padded space's bounds are ``low``/``high`` when given, else
    the env's bounds in its slice and its lowest low / highest high elsewhere; either way 0 must lie within the
    bounds of every padded entry, and the env's own bounds within the padded ones, so that every observation is in
    the space. :func:`make_multitask_vec_env` passes the union of its games' bounds, so that every env of the
    VecEnv reports the same space.

    :param env: Environment with a Box observation space
    :param shape: The padded shape: the env's rank, at least as large as the env's shape in every dim
    :param low: Lower bounds of the padded space, broadcastable to ``shape`` (None: see above)
    :param high: Upper bounds of the padded space, broadcastable to ``shape`` (None: see above)
    """

    def __init__(
        self,
        env: gym.Env[np.ndarray, ActType],
        shape: Sequence[int],
        low: np.ndarray | float | None = None,
        high: np.ndarray | float | None = None,
    ) -> None:
        space = env.observation_space
        if not isinstance(space, spaces.Box):
            raise ValueError(f"PadObservation needs a Box observation space, got {space}")
        target = tuple(int(size) for size in shape)
        if len(target) != len(space.shape):
            raise ValueError(f"Cannot pad an observation of shape {space.shape} to {target}: the ranks differ")
        if any(new < old for new, old in zip(target, space.shape, strict=True)):
            raise ValueError(f"Cannot pad an observation of shape {space.shape} to the smaller shape {target}")
        gym.utils.RecordConstructorArgs.__init__(self, shape=target, low=low, high=high)
        gym.ObservationWrapper.__init__(self, env)
        self.region = tuple(slice(0, size) for size in space.shape)
        default_low, default_high = _padded_bounds(space, target)
        padded_low = default_low if low is None else np.broadcast_to(np.asarray(low, dtype=space.dtype), target).copy()
        padded_high = default_high if high is None else np.broadcast_to(np.asarray(high, dtype=space.dtype), target).copy()
        if np.any(padded_low[self.region] > space.low) or np.any(padded_high[self.region] < space.high):
            raise ValueError(f"The padded bounds must contain the env's bounds in its slice {self.region}")
        is_padding = np.ones(target, dtype=bool)
        is_padding[self.region] = False
        zero = np.zeros((), dtype=space.dtype)
        if np.any(padded_low[is_padding] > zero) or np.any(padded_high[is_padding] < zero):
            raise ValueError("The padding value 0 lies outside the padded space's bounds; give low/high that contain it")
        self.shape = target
        self.dtype: np.dtype = space.dtype
        self.observation_space = spaces.Box(low=padded_low, high=padded_high, shape=target, dtype=space.dtype)  # type: ignore[arg-type]

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """
        Place the observation in a zero array of the padded shape.

        :param observation: Observation of the wrapped env
        :return: The padded observation
        """
        padded = np.zeros(self.shape, dtype=self.dtype)
        padded[self.region] = observation
        return padded


class PadActions(gym.ActionWrapper[ObsType, np.int64, np.int64], gym.utils.RecordConstructorArgs):
    """
    Expose ``Discrete(n)`` over an env's ``Discrete(k)``, ``k <= n``, so that games with fewer actions share the
    action space of the game with the most.

    Actions ``0 .. k-1`` are passed on unchanged; actions ``k .. n-1``, which the game lacks, become ``fallback``,
    by default action 0: in MinAtar (any action set) and in the ALE (full and minimal sets) action 0 is the no-op,
    so a button the game does not have does nothing, which is what pressing it on the console would do. (Mapping
    ``a`` to ``a % k`` instead would give the extra indices the meaning of unrelated actions, different in every
    game.) The policy still learns that those indices act like a no-op in this game. Prefer a full action set where
    the games have one (see the module docstring): then no index is padded.

    :param env: Environment with a ``Discrete(k)`` action space starting at 0
    :param n: Number of actions to expose, at least ``k``
    :param fallback: The env's action that the indices ``>= k`` take (default 0, the no-op of MinAtar and the ALE)
    """

    n_env_actions: int
    fallback: int

    def __init__(self, env: gym.Env[ObsType, np.int64], n: int, fallback: int = 0) -> None:
        space = env.action_space
        if not isinstance(space, spaces.Discrete) or int(space.start) != 0:
            raise ValueError(f"PadActions needs a Discrete action space starting at 0, got {space}")
        k = int(space.n)
        if isinstance(n, bool) or not isinstance(n, Integral) or n < k:
            raise ValueError(f"PadActions needs n >= the env's {k} actions, got n={n!r}")
        if isinstance(fallback, bool) or not isinstance(fallback, Integral) or not 0 <= fallback < k:
            raise ValueError(f"fallback must be one of the env's actions 0..{k - 1}, got {fallback!r}")
        gym.utils.RecordConstructorArgs.__init__(self, n=int(n), fallback=int(fallback))
        gym.ActionWrapper.__init__(self, env)
        self.n_env_actions = k
        self.fallback = int(fallback)
        self.action_space = spaces.Discrete(int(n))

    def action(self, action: np.int64) -> np.int64:
        """
        The env's action for a padded action.

        :param action: Action in ``[0, n)``
        :return: ``action`` if the env has it, else ``fallback``
        """
        index = int(action)
        if not 0 <= index < int(self.action_space.n):  # type: ignore[attr-defined]
            raise ValueError(f"Action {action!r} is outside the padded action space {self.action_space}")
        return np.int64(index if index < self.n_env_actions else self.fallback)


def _make_game(
    spec: gym.envs.registration.EnvSpec,
    env_kwargs: dict[str, Any],
    wrapper_class: Callable[..., gym.Env] | None,
    wrapper_kwargs: dict[str, Any],
    monitor_path: str | None,
    monitor_kwargs: dict[str, Any],
) -> gym.Env:
    """
    One game before padding: ``gym.make``, SB3's ``Monitor``, then ``wrapper_class``, as in SB3's ``make_vec_env``.

    :param spec: The game's registration (an ``EnvSpec`` needs no registry, so a spawned worker can build it)
    :param env_kwargs: Constructor kwargs
    :param wrapper_class: Wrapper applied after ``Monitor``, or None
    :param wrapper_kwargs: Its kwargs
    :param monitor_path: ``Monitor``'s file (None: no file)
    :param monitor_kwargs: ``Monitor``'s other kwargs
    :return: The env
    """
    env: gym.Env = Monitor(gym.make(spec, **env_kwargs), filename=monitor_path, **monitor_kwargs)
    if wrapper_class is not None:
        env = wrapper_class(env, **wrapper_kwargs)
    return env


def game_kwargs(
    spec: gym.envs.registration.EnvSpec, env_kwargs: dict[str, Any] | None, full_action_set: bool
) -> dict[str, Any]:
    """
    Constructor kwargs of one game of a multi-task set: the kwargs of :data:`FULL_ACTION_SET_KWARGS` that the game's
    registration declares (with ``full_action_set``), then ``env_kwargs``, which take precedence.

    :param spec: The game's registration
    :param env_kwargs: Kwargs given for every game (None: none)
    :param full_action_set: Switch the game to its full action set where its registration allows it
    :return: The kwargs for ``gym.make(spec, **kwargs)``
    """
    switch = {key: value for key, value in FULL_ACTION_SET_KWARGS.items() if key in spec.kwargs} if full_action_set else {}
    return {**switch, **(env_kwargs or {})}


def common_spaces(env_ids: Sequence[str], make_games: Sequence[Callable[[], gym.Env]]) -> tuple[spaces.Box, spaces.Discrete]:
    """
    The observation space every game pads to (largest size in each dim, union of the padded bounds) and the action
    space every game pads to (the most actions). One env of each game is built with ``make_games`` and closed.

    :param env_ids: The games' ids, for the error messages
    :param make_games: One factory per game, building it as it will be played before padding
    :return: ``observation_space, action_space``
    """
    games = []
    try:
        for make_game in make_games:
            games.append(make_game())
        return _common_spaces(env_ids, games)
    finally:
        for game in games:
            game.close()


def _common_spaces(env_ids: Sequence[str], games: Sequence[gym.Env]) -> tuple[spaces.Box, spaces.Discrete]:
    """:func:`common_spaces` of built games."""
    observation_spaces = [game.observation_space for game in games]
    for env_id, space in zip(env_ids, observation_spaces, strict=True):
        if not isinstance(space, spaces.Box):
            raise ValueError(f"Multi-task envs need Box observations to pad, but {env_id} has {space}")
    boxes: list[spaces.Box] = observation_spaces  # type: ignore[assignment]
    first_id, first = env_ids[0], boxes[0]
    for env_id, box in zip(env_ids, boxes, strict=True):
        if len(box.shape) != len(first.shape):
            raise ValueError(
                f"Cannot pad {first_id} (observation shape {first.shape}) and {env_id} (shape {box.shape}) "
                "to a common shape: their ranks differ"
            )
        if box.dtype != first.dtype:
            raise ValueError(
                f"Cannot pad {first_id} (observation dtype {first.dtype}) and {env_id} (dtype {box.dtype}) "
                "to a common space: their dtypes differ"
            )
    shape = tuple(int(size) for size in np.max([box.shape for box in boxes], axis=0))
    padded = [_padded_bounds(box, shape) for box in boxes]
    low = np.min([bounds[0] for bounds in padded], axis=0).astype(first.dtype)
    high = np.max([bounds[1] for bounds in padded], axis=0).astype(first.dtype)
    observation_space = spaces.Box(low=low, high=high, shape=shape, dtype=first.dtype)  # type: ignore[arg-type]

    for env_id, game in zip(env_ids, games, strict=True):
        space = game.action_space
        if not isinstance(space, spaces.Discrete) or int(space.start) != 0:
            raise ValueError(f"Multi-task envs need Discrete action spaces starting at 0, but {env_id} has {space}")
    n_actions = max(int(game.action_space.n) for game in games)  # type: ignore[attr-defined]
    return observation_space, spaces.Discrete(n_actions)


def pad_to(env: gym.Env, observation_space: spaces.Box, action_space: spaces.Discrete) -> gym.Env:
    """
    Pad a game to a multi-task set's common spaces (:func:`common_spaces`): :class:`PadObservation` and
    :class:`PadActions`, each only where the game's own space differs.

    :param env: The game, as built for the set (after any ``wrapper_class``)
    :param observation_space: The common observation space
    :param action_space: The common action space
    :return: The padded env, whose spaces are the common ones
    """
    if env.observation_space != observation_space:
        env = PadObservation(env, observation_space.shape, low=observation_space.low, high=observation_space.high)
    if env.action_space != action_space:
        env = PadActions(env, int(action_space.n))
    return env


def make_multitask_vec_env(
    env_ids: Sequence[str],
    n_envs_per_task: int = 1,
    seed: int | None = None,
    vec_env_cls: type[DummyVecEnv | SubprocVecEnv] = DummyVecEnv,
    wrapper_class: Callable[..., gym.Env] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    monitor_dir: str | None = None,
    full_action_set: bool = True,
    wrapper_kwargs: dict[str, Any] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """
    A VecEnv of several games for a multi-task agent (Hessel et al. 2018): ``n_envs_per_task`` envs of each id, in
    the order of ``env_ids`` (env ``i * n_envs_per_task + j`` plays ``env_ids[i]`` and has task id ``i``).

    Each env is ``gym.make(env_id, **env_kwargs)``, wrapped in SB3's ``Monitor`` (episode statistics for the
    logger, in ``info["episode"]``), then ``wrapper_class`` (as in SB3's ``make_vec_env``), then padded to the
    common spaces (:class:`PadObservation` to the largest size in each dim, the union of the games' bounds;
    :class:`PadActions` to the most actions; each only where the game needs it), then :class:`TaskId`. Seeding
    follows ``make_vec_env``: env of rank ``r`` gets ``seed + r`` at its first reset and for its action space.

    With ``full_action_set`` (default), games whose registration declares a kwarg of
    :data:`FULL_ACTION_SET_KWARGS` get it (MinAtar: ``use_minimal_action_set=False``, so ``MinAtar/<Game>-v1``
    acts on MinAtar's 6 shared actions, like ``-v0``; ALE: ``full_action_space=True``, the 18 Atari actions), so
    that an action index means the same in every game; ``env_kwargs`` that set the same kwarg take precedence. Other
    games keep their action sets and are padded. One env of each game is built (and closed) here first to read
    its spaces.

    :param env_ids: Registered gymnasium ids, one per task (register MinAtar first:
        ``sb3_frontier.envs.register_envs()``)
    :param n_envs_per_task: Number of envs of each game
    :param seed: Seed of the first env (None: random, as in SB3)
    :param vec_env_cls: ``DummyVecEnv`` or ``SubprocVecEnv`` (envs are built from their ``EnvSpec``, so spawned
        workers need no registration)
    :param wrapper_class: Wrapper applied to each game after ``Monitor`` and before padding, or None
    :param env_kwargs: Constructor kwargs of every game
    :param monitor_dir: Folder of the ``Monitor`` files (``<rank>.monitor.csv``; None: no file)
    :param full_action_set: Switch games to their full action set where their registration allows it
    :param wrapper_kwargs: Kwargs of ``wrapper_class``
    :param vec_env_kwargs: Kwargs of ``vec_env_cls`` (e.g. ``{"start_method": "spawn"}``)
    :param monitor_kwargs: Other kwargs of ``Monitor`` (e.g. ``info_keywords``)
    :return: The VecEnv; read its task ids with :func:`task_ids`
    """
    if isinstance(env_ids, str) or len(env_ids) == 0:
        raise ValueError(f"env_ids must be a non-empty sequence of env ids, got {env_ids!r}")
    if isinstance(n_envs_per_task, bool) or not isinstance(n_envs_per_task, Integral) or n_envs_per_task < 1:
        raise ValueError(f"n_envs_per_task must be a positive integer, got {n_envs_per_task!r}")
    wrapper_kwargs = dict(wrapper_kwargs or {})
    monitor_kwargs = dict(monitor_kwargs or {})
    specs = [gym.spec(env_id) for env_id in env_ids]
    kwargs_per_task = [game_kwargs(spec, env_kwargs, full_action_set) for spec in specs]
    observation_space, action_space = common_spaces(
        env_ids,
        [
            partial(_make_game, spec, kwargs, wrapper_class, wrapper_kwargs, None, monitor_kwargs)
            for spec, kwargs in zip(specs, kwargs_per_task, strict=True)
        ],
    )

    def make_env(task: int, rank: int) -> Callable[[], gym.Env]:
        def _init() -> gym.Env:
            monitor_path = None
            if monitor_dir is not None:
                os.makedirs(monitor_dir, exist_ok=True)
                monitor_path = os.path.join(monitor_dir, str(rank))
            game = _make_game(specs[task], kwargs_per_task[task], wrapper_class, wrapper_kwargs, monitor_path, monitor_kwargs)
            env = TaskId(pad_to(game, observation_space, action_space), task)
            if seed is not None:
                env.action_space.seed(seed + rank)
            return env

        return _init

    env_fns = [
        make_env(task, task * n_envs_per_task + index) for task in range(len(env_ids)) for index in range(n_envs_per_task)
    ]
    vec_env = vec_env_cls(env_fns, **(vec_env_kwargs or {}))
    vec_env.seed(seed)
    return vec_env


def task_ids(vec_env: VecEnv) -> np.ndarray | None:
    """
    The task id of each env of a VecEnv (its :class:`TaskId` tag), through any VecEnvWrappers and in subprocesses.

    :param vec_env: The VecEnv (``DummyVecEnv``, ``SubprocVecEnv``, or VecEnvWrappers around one)
    :return: ``[n_envs]`` int64 task ids, or None when no env carries one (a single-task env)
    :raises ValueError: when only some envs carry a task id (a multi-task learner would mix untagged envs into
        task 0's statistics), or a task id is not a non-negative integer
    """
    # has_wrapper_attr first: get_attr of a missing attribute kills a SubprocVecEnv worker
    tagged = np.array([bool(has) for has in vec_env.env_method("has_wrapper_attr", TASK_ID)], dtype=bool)
    if not tagged.any():
        return None
    if not tagged.all():
        raise ValueError(
            f"Only some envs carry a task id: envs {np.flatnonzero(~tagged).tolist()} have none. "
            "Tag every env with TaskId (make_multitask_vec_env does) or none."
        )
    values = vec_env.get_attr(TASK_ID)
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise ValueError(f"Env {index} has task id {value!r}; task ids must be non-negative integers")
    return np.asarray(values, dtype=np.int64)


def count_tasks(vec_env: VecEnv) -> int:
    """
    Number of tasks a VecEnv's task ids index: ``max(task_ids) + 1`` (the number of value outputs and PopArt
    statistics a multi-task agent needs; a task absent from this VecEnv still counts if a larger id is present),
    1 for a VecEnv without task ids.

    :param vec_env: The VecEnv
    :return: The number of tasks
    """
    ids = task_ids(vec_env)
    return 1 if ids is None else int(ids.max()) + 1


__all__ = [
    "FULL_ACTION_SET_KWARGS",
    "MINATAR_ACTIONS",
    "TASK_ID",
    "PadActions",
    "PadObservation",
    "TaskId",
    "common_spaces",
    "count_tasks",
    "game_kwargs",
    "make_multitask_vec_env",
    "pad_to",
    "task_ids",
]
