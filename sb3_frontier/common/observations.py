"""Observation batches that are either one array or a dict of arrays (gymnasium's Box and Dict spaces).

Every helper here treats both forms alike, so that replay, collection and search code never branches on the
observation space itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch as th
from gymnasium import spaces

#: An observation batch: one array, or a dict of arrays sharing their leading dimensions (SB3's spaces; the helpers
#: below also take nested dicts).
Obs: TypeAlias = "np.ndarray | dict[str, np.ndarray]"


def obs_map(fn: Callable[..., Any], obs: Any, *rest: Any) -> Any:
    """
    Apply ``fn`` leaf-wise: to the array, or to every array of a (possibly nested) dict, keeping its keys; the
    matching leaves of ``rest`` are passed along.

    :param fn: function of one array (and of the matching arrays of ``rest``)
    :param obs: an array or a dict of arrays
    :param rest: observations of the same structure
    :return: ``fn(obs, *rest)`` per leaf, in the structure of ``obs``
    """
    if isinstance(obs, Mapping):
        return {key: obs_map(fn, obs[key], *(other[key] for other in rest)) for key in obs}
    return fn(obs, *rest)


def obs_leaves(obs: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """
    The ``(path, array)`` pairs of an array or a (possibly nested) dict of arrays, in key order.

    :param obs: an array or a dict of arrays
    :param prefix: path of ``obs`` itself (``"['key']"`` per level below it)
    :return: the leaves with their paths
    """
    if isinstance(obs, Mapping):
        leaves: list[tuple[str, Any]] = []
        for key in obs:
            leaves.extend(obs_leaves(obs[key], f"{prefix}[{key!r}]"))
        return leaves
    return [(prefix, obs)]


def obs_take(obs: Obs, index: Any) -> Obs:
    """
    Index the leading dimension(s): ``obs[index]`` for an array, per leaf for a dict.

    :param obs: ``[N, ...]`` (or a dict of such arrays)
    :param index: an int, slice or index array
    :return: the selected observations
    """
    return obs_map(lambda value: value[index], obs)


def obs_stack(observations: Sequence[Obs]) -> Obs:
    """
    Stack single observations into a batch ``[len, ...]`` (per leaf for dicts).

    :param observations: observations of one space
    :return: the batch
    """
    return obs_map(lambda *values: np.stack(values), observations[0], *observations[1:])


def obs_batch_size(obs: Any) -> int:
    """
    Leading dimension of a batch (the first key's for a dict; numpy or torch).

    :param obs: ``[B, ...]`` array or tensor, or a dict of them
    :return: B
    """
    first = next(iter(obs.values())) if isinstance(obs, dict) else obs
    return int(first.shape[0])


def obs_zeros(space: spaces.Space, leading: tuple[int, ...]) -> Obs:
    """
    Zero storage for observations of ``space`` with the given leading dimensions, in the space's dtype.

    :param space: a Box (or any space with shape and dtype) or a Dict of them
    :param leading: leading dimensions, e.g. ``(capacity,)``
    :return: ``[*leading, *shape]`` array, or a dict of such arrays
    """
    if isinstance(space, spaces.Dict):
        return {key: np.zeros((*leading, *sub.shape), dtype=sub.dtype) for key, sub in space.spaces.items()}  # type: ignore[misc]
    assert space.shape is not None
    return np.zeros((*leading, *space.shape), dtype=space.dtype)


def obs_write(store: Obs, index: Any, values: Obs) -> None:
    """
    ``store[index] = values`` for an array, per leaf for a dict.

    :param store: storage from :func:`obs_zeros`
    :param index: where to write (int, slice or index array)
    :param values: the observations
    """

    def write(target: np.ndarray, value: np.ndarray) -> None:
        target[index] = value

    obs_map(write, store, values)


def non_finite_keys(obs: Any) -> list[str]:
    """
    Names of the entries of an observation batch that hold NaN or infinity (floating arrays or tensors only).

    :param obs: an array/tensor or a dict of them
    :return: ``["obs"]`` or the offending dict keys; empty when every number is finite
    """
    items = obs.items() if isinstance(obs, dict) else [("obs", obs)]
    bad = []
    for key, value in items:
        if isinstance(value, th.Tensor):
            if value.is_floating_point() and not bool(th.isfinite(value).all()):
                bad.append(str(key))
        else:
            array = np.asarray(value)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad.append(str(key))
    return bad


__all__ = [
    "Obs",
    "non_finite_keys",
    "obs_batch_size",
    "obs_leaves",
    "obs_map",
    "obs_stack",
    "obs_take",
    "obs_write",
    "obs_zeros",
]
