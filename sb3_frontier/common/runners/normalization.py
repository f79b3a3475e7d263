"""
``VecNormalize`` statistics of actors that step their own copies of the learner's VecEnv.

An actor process (or Ray actor) normalises observations with the statistics of its own copy of the VecEnv, which
it updates as it steps; the learner's VecEnv never steps, so without these helpers its statistics (what
``sync_envs_normalization`` hands to an ``EvalCallback``, what ``VecNormalize.save`` writes) would stay those of the
start of ``learn``. Actors send theirs every ``sync_every`` steps (:attr:`ActorStep.env_statistics`), and the learner
sets its own to everything the actors have seen: the statistics it started them with plus each actor's own
observations since then, pooled (:func:`pool_statistics`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

#: ``(obs_rms, ret_rms)`` of each ``VecNormalize`` of a VecEnv, outermost first; ``obs_rms`` may be a dict of them.
Statistics = list[tuple[Any, RunningMeanStd]]


def _vec_normalizes(env: VecEnv) -> list[VecNormalize]:
    found = []
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, VecNormalize):
            found.append(env)
        env = env.venv
    return found


def normalization_statistics(env: VecEnv) -> Statistics | None:
    """
    A copy of the statistics of every ``VecNormalize`` wrapping ``env``.

    :param env: a VecEnv
    :return: ``(obs_rms, ret_rms)`` per ``VecNormalize``, outermost first, or None if there is none
    """
    wrappers = _vec_normalizes(env)
    if not wrappers:
        return None
    return [(copy.deepcopy(w.obs_rms), copy.deepcopy(w.ret_rms)) for w in wrappers]


def load_normalization_statistics(env: VecEnv, statistics: Statistics) -> None:
    """
    Set the statistics of the ``VecNormalize`` wrappers of ``env`` (as :func:`normalization_statistics` lists them).

    :raises ValueError: when ``env`` holds another number of ``VecNormalize`` wrappers
    """
    wrappers = _vec_normalizes(env)
    if len(wrappers) != len(statistics):
        raise ValueError(f"The env holds {len(wrappers)} VecNormalize wrapper(s), the statistics are of {len(statistics)}")
    for wrapper, (obs_rms, ret_rms) in zip(wrappers, statistics, strict=True):
        wrapper.obs_rms = copy.deepcopy(obs_rms)
        wrapper.ret_rms = copy.deepcopy(ret_rms)


def _pool(base: RunningMeanStd, actors: list[RunningMeanStd]) -> RunningMeanStd:
    """``base`` plus what each actor added to its own copy of ``base``, through the first two raw moments."""
    count = base.count + sum(a.count - base.count for a in actors)
    total = base.count * base.mean + sum(a.count * a.mean - base.count * base.mean for a in actors)
    base_square = base.count * (base.var + np.square(base.mean))
    squares = base_square + sum(a.count * (a.var + np.square(a.mean)) - base_square for a in actors)
    pooled = RunningMeanStd(shape=np.shape(base.mean))
    pooled.count = count
    pooled.mean = total / count
    pooled.var = np.maximum(squares / count - np.square(pooled.mean), 0.0)
    return pooled


def pool_statistics(base: Statistics, actors: list[Statistics]) -> Statistics:
    """
    The statistics of everything seen: ``base`` (the learner's when the actors started from copies of it) and each
    actor's observations since, pooled as if one ``VecNormalize`` had seen them all.

    :param base: the learner's statistics when the actors were started
    :param actors: each actor's latest statistics (grown from ``base``)
    :return: the pooled statistics (a copy of the actor's with one actor)
    """
    if len(actors) == 1:
        return copy.deepcopy(actors[0])

    def pool(base_rms: Any, actor_rms: list[Any]) -> Any:
        if isinstance(base_rms, dict):
            return {key: _pool(value, [a[key] for a in actor_rms]) for key, value in base_rms.items()}
        return _pool(base_rms, actor_rms)

    return [
        (pool(obs_rms, [a[i][0] for a in actors]), pool(ret_rms, [a[i][1] for a in actors]))
        for i, (obs_rms, ret_rms) in enumerate(base)
    ]


__all__ = ["Statistics", "load_normalization_statistics", "normalization_statistics", "pool_statistics"]
