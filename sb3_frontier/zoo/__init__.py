"""rl-zoo3 bridge: registers our algorithms in rl-zoo3 and ships their hyperparameter files.

>>> from sb3_frontier.zoo import register_algorithms
>>> register_algorithms()  # our algorithms now answer to ``--algo`` in rl-zoo3's scripts
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

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
        algorithm = getattr(module, class_name, None)
        if algorithm is not None:  # the package may ship an algorithm's pieces before the algorithm itself
            found[name] = algorithm
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


def read_hyperparams(
    algo: str, env_id: str, path: str | Path | None = None, allow: tuple[str, ...] = ()
) -> tuple[int, int, dict[str, Any]]:
    """
    One entry of an rl-zoo3 hyperparameter file, ready for the algorithm's constructor.

    Schedules (``lin_0.001``) and ``policy_kwargs`` strings are converted as rl-zoo3 does; entries that need rl-zoo3's
    environment set-up (``normalize``, ``env_wrapper``, ``frame_stack``, ...) are refused: use ``sb3-frontier train``.

    :param algo: zoo algorithm name (``"muzero"``, ``"ppo"``, ...)
    :param env_id: the entry (an environment id, or ``"atari"``)
    :param path: the YAML file (default: ours for our algorithms, rl-zoo3's ``hyperparams/<algo>.yml`` otherwise)
    :param allow: environment set-up keys the caller applies itself (e.g. ``("normalize", "vec_env_wrapper")``): kept
        in ``kwargs`` as written, for the caller to pop
    :return: ``(n_envs, n_timesteps, kwargs)``, ``kwargs`` holding ``policy`` and the constructor arguments
    """
    import yaml
    from rl_zoo3.exp_manager import ExperimentManager

    if path is None:
        if algo in ALGORITHM_PATHS:
            path = config_path(algo)
        else:
            import rl_zoo3

            path = Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"
    entry = dict(yaml.safe_load(Path(path).read_text())[env_id])
    set_up = {"normalize", "env_wrapper", "frame_stack", "callback", "vec_env_wrapper", "env_kwargs"} - set(allow)
    unsupported = set_up & set(entry)
    if unsupported:
        raise ValueError(f"read_hyperparams does not handle {sorted(unsupported)} (entry {algo}/{env_id}); use the zoo")
    n_envs = int(entry.pop("n_envs", 1))
    n_timesteps = int(float(entry.pop("n_timesteps")))
    entry = ExperimentManager._preprocess_schedules(entry)
    if isinstance(entry.get("policy_kwargs"), str):
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
        from torch import nn

        # the names rl-zoo3's own files use (its A2C Atari entry: optimizer_class=RMSpropTFLike)
        namespace = {"nn": nn, "dict": dict, "RMSpropTFLike": RMSpropTFLike}
        entry["policy_kwargs"] = eval(entry["policy_kwargs"], namespace)
    return n_envs, n_timesteps, entry


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


__all__ = ["ALGORITHM_PATHS", "CONFIG_DIR", "available_algorithms", "config_path", "read_hyperparams", "register_algorithms"]
