"""rl-zoo3 bridge: registers our algorithms in rl-zoo3 and ships their hyperparameter files.

>>> from sb3_frontier.zoo import register_algorithms
>>> register_algorithms()  # our algorithms now answer to ``--algo`` in rl-zoo3's scripts
"""

from __future__ import annotations

import importlib
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

#: zoo name -> "module:ClassName" of each algorithm of ours (imported lazily, only those that exist).
ALGORITHM_PATHS: dict[str, str] = {
    "muzero": "sb3_frontier.algorithms.muzero:MuZero",
    "r2d2": "sb3_frontier.algorithms.r2d2:R2D2",
    "popart_impala": "sb3_frontier.algorithms.popart_impala:PopArtIMPALA",
}

CONFIG_DIR = Path(__file__).resolve().parent.parent / "zoo_configs"


def available_algorithms() -> dict[str, type[BaseAlgorithm]]:
    """
    Our algorithms that are importable in this installation.

    :return: zoo name -> algorithm class
    """
    found: dict[str, type[BaseAlgorithm]] = {}
    for name, path in ALGORITHM_PATHS.items():
        module_name, class_name = path.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # this algorithm is not part of the installed package
            raise
        found[name] = getattr(module, class_name)
    return found


def config_path(algo: str) -> Path:
    """
    The hyperparameter file we ship for one of our algorithms.

    :param algo: zoo name of the algorithm (e.g. ``"muzero"``)
    :return: path of ``sb3_frontier/zoo_configs/<algo>.yml``
    """
    path = CONFIG_DIR / f"{algo}.yml"
    if not path.is_file():
        raise FileNotFoundError(f"No zoo config for {algo!r}: expected {path}")
    return path


def register_algorithms() -> dict[str, type[BaseAlgorithm]]:
    """
    Add our algorithms to rl-zoo3's ``ALGOS`` (and to its optuna samplers where we have them).

    Safe to call more than once.

    :return: the algorithms that were registered, by zoo name
    """
    try:
        from rl_zoo3 import utils as zoo_utils
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError("The zoo bridge needs rl-zoo3: pip install 'sb3-frontier[zoo]'") from error

    algorithms = available_algorithms()
    zoo_utils.ALGOS.update(algorithms)
    try:
        from rl_zoo3 import hyperparams_opt

        from sb3_frontier.zoo.samplers import SAMPLERS

        for name, (sampler, converter) in SAMPLERS.items():
            if name in algorithms:
                hyperparams_opt.HYPERPARAMS_SAMPLER[name] = sampler
                hyperparams_opt.HYPERPARAMS_CONVERTER[name] = converter  # type: ignore[assignment]
    except ImportError:  # optuna is optional for rl-zoo3's train without -optimize
        pass
    return algorithms


__all__ = ["ALGORITHM_PATHS", "CONFIG_DIR", "available_algorithms", "config_path", "register_algorithms"]
