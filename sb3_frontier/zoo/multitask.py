"""Multi-task ids in rl-zoo3's ``train``: a VecEnv of every game of the set, with a task id per env.

rl-zoo3's ``ExperimentManager.create_envs`` builds every env of its VecEnvs with the same ``gym.make(id, **env_kwargs)``
(through SB3's ``make_vec_env``), so that for a multi-task id (:class:`~sb3_frontier.envs.multitask.MultiTaskEnv`,
e.g. ``sb3_frontier/MinAtarMultiTask-v0``) every env would play task 0. :func:`use_multitask_envs` wraps
``create_envs``: for a multi-task id, the ``make_vec_env`` that ``rl_zoo3.exp_manager`` calls is replaced, for the
duration of the call, by :func:`multitask_make_vec_env`, which has ``make_vec_env``'s signature and builds the VecEnv
with :func:`~sb3_frontier.envs.multitask.multitask_vec_env` from what rl-zoo3 passes (seed, Monitor folder and
kwargs, ``env_wrapper``, VecEnv class and kwargs, ``env_kwargs``). Everything rl-zoo3 does after it (``vec_env_wrapper``,
``VecNormalize``, ``frame_stack``, ``VecTransposeImage``) runs unchanged; other ids are not touched.

- Training env: ``n_envs`` is split evenly over the tasks (env ``i * n_envs / n_tasks + j`` plays task ``i``);
  an ``n_envs`` that is not a multiple of the number of tasks is an error.
- Evaluation env (``--eval-freq``): ``--n-eval-envs`` rounded up to a multiple of the number of tasks, so at least
  one env per task; SB3's ``evaluate_policy`` spreads ``--eval-episodes`` over the envs, so give at least one episode
  per task to evaluate every game.
- ``enjoy`` and ``record-video`` are not changed: they build ``gym.make(id, **env_kwargs)``, i.e. task 0;
  ``--env-kwargs task:k`` plays game ``k`` of the set with the same model.

``--env-kwargs`` given to ``train`` go to every game (``env_ids`` replaces the set, ``full_action_set`` is
:func:`~sb3_frontier.wrappers.multitask.make_multitask_vec_env`'s); ``task`` is refused there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sb3_frontier.envs.multitask import is_multitask_spec, multitask_env_ids, multitask_vec_env

#: rl-zoo3's own ``ExperimentManager.create_envs``, kept by :func:`use_multitask_envs` (None until it runs).
_ZOO_CREATE_ENVS: Callable[..., VecEnv] | None = None


def envs_per_task(spec: EnvSpec, n_envs: int, n_tasks: int, evaluation: bool) -> int:
    """
    Number of envs of each task for a zoo VecEnv of ``n_envs`` envs.

    :param spec: The multi-task id, for the error message
    :param n_envs: The number of envs asked for (``n_envs`` of the zoo entry, or ``--n-eval-envs``)
    :param n_tasks: The number of tasks of the set
    :param evaluation: For the evaluation env: round up (at least one env per task) instead of requiring a multiple
    :return: ``n_envs / n_tasks`` (training) or ``ceil(n_envs / n_tasks)`` (evaluation)
    :raises ValueError: when a training ``n_envs`` is not a positive multiple of ``n_tasks``
    """
    if evaluation:
        return max(1, -(-n_envs // n_tasks))
    if n_envs < n_tasks or n_envs % n_tasks != 0:
        raise ValueError(
            f"{spec.id} trains on {n_tasks} tasks with the same number of envs each: n_envs must be a multiple of "
            f"{n_tasks}, got n_envs={n_envs} (set n_envs in the zoo entry, or with -params n_envs:{n_tasks})"
        )
    return n_envs // n_tasks


def multitask_make_vec_env(spec: EnvSpec, evaluation: bool) -> Callable[..., VecEnv]:
    """
    A stand-in for SB3's ``make_vec_env`` that builds the VecEnv of every game of the multi-task id ``spec``.

    :param spec: The multi-task id's registration
    :param evaluation: Whether it builds the evaluation env (see :func:`envs_per_task`)
    :return: A function with ``make_vec_env``'s signature; its ``env_id`` (rl-zoo3 passes a function building
        ``spec``) is not called, the games come from ``spec`` and ``env_kwargs``
    """

    def make_vec_env(
        env_id: str | Callable[..., gym.Env],
        n_envs: int = 1,
        seed: int | None = None,
        start_index: int = 0,
        monitor_dir: str | None = None,
        wrapper_class: Callable[[gym.Env], gym.Env] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        vec_env_cls: type[DummyVecEnv | SubprocVecEnv] | None = None,
        vec_env_kwargs: dict[str, Any] | None = None,
        monitor_kwargs: dict[str, Any] | None = None,
        wrapper_kwargs: dict[str, Any] | None = None,
    ) -> VecEnv:
        if start_index != 0:
            raise ValueError(
                f"A multi-task VecEnv numbers its envs from 0 (ranks decide the tasks), got start_index={start_index}"
            )
        n_tasks = len(multitask_env_ids(spec, env_kwargs))
        return multitask_vec_env(
            spec,
            envs_per_task(spec, n_envs, n_tasks, evaluation),
            env_kwargs,
            seed=seed,
            vec_env_cls=DummyVecEnv if vec_env_cls is None else vec_env_cls,
            wrapper_class=wrapper_class,
            monitor_dir=monitor_dir,
            wrapper_kwargs=wrapper_kwargs,
            vec_env_kwargs=vec_env_kwargs,
            monitor_kwargs=monitor_kwargs,
        )

    return make_vec_env


@contextmanager
def _make_vec_env_replaced(make_vec_env: Callable[..., VecEnv]) -> Iterator[None]:
    """Replace ``rl_zoo3.exp_manager.make_vec_env`` within the ``with`` block."""
    from rl_zoo3 import exp_manager

    original = exp_manager.make_vec_env
    exp_manager.make_vec_env = make_vec_env  # type: ignore[assignment]
    try:
        yield
    finally:
        exp_manager.make_vec_env = original


def create_envs(self: Any, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
    """
    rl-zoo3's ``ExperimentManager.create_envs``, with the VecEnv of every game for a multi-task id.

    :param self: The experiment manager
    :param n_envs: Number of envs
    :param eval_env: Whether it is the evaluation env
    :param no_log: Do not write Monitor files
    :return: The VecEnv, wrapped by rl-zoo3 as usual
    """
    assert _ZOO_CREATE_ENVS is not None, "use_multitask_envs() installs this method"
    spec = gym.spec(self.env_name.gym_id)
    if not is_multitask_spec(spec):
        return _ZOO_CREATE_ENVS(self, n_envs, eval_env=eval_env, no_log=no_log)
    with _make_vec_env_replaced(multitask_make_vec_env(spec, evaluation=eval_env)):
        return _ZOO_CREATE_ENVS(self, n_envs, eval_env=eval_env, no_log=no_log)


def use_multitask_envs() -> None:
    """Make rl-zoo3's experiment manager build multi-task ids as a VecEnv of all their games (safe to call again)."""
    global _ZOO_CREATE_ENVS
    from rl_zoo3.exp_manager import ExperimentManager

    if ExperimentManager.create_envs is create_envs:
        return
    _ZOO_CREATE_ENVS = ExperimentManager.create_envs
    ExperimentManager.create_envs = create_envs  # type: ignore[method-assign]


__all__ = ["create_envs", "envs_per_task", "multitask_make_vec_env", "use_multitask_envs"]
