"""Optuna hyperparameter samplers for rl-zoo3's ``-optimize``, one per algorithm of ours that has one.

A sampler draws a trial's parameters and returns MuZero's constructor arguments; its converter turns the parameters
stored in a study back into constructor arguments (rl-zoo3's ``--trial-id``/``--study-name`` loading).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Sampler = Callable[..., dict[str, Any]]
Converter = Callable[[dict[str, Any]], dict[str, Any]]


def convert_muzero_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    MuZero constructor arguments from a trial's parameters.

    :param sampled_params: the parameters :func:`sample_muzero_params` suggested
    :return: keyword arguments for ``MuZero``
    """
    hyperparams = dict(sampled_params)
    hyperparams["gamma"] = 1.0 - hyperparams.pop("one_minus_gamma")
    hyperparams["batch_size"] = 2 ** hyperparams.pop("batch_size_pow")
    return hyperparams


def sample_muzero_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Sample MuZero hyperparameters (the ones that matter most on small problems).

    :param trial: an optuna trial
    :param n_actions: unused (rl-zoo3's signature)
    :param n_envs: unused (rl-zoo3's signature)
    :param additional_args: unused (rl-zoo3's signature)
    :return: keyword arguments for ``MuZero``
    """
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
        "batch_size_pow": trial.suggest_int("batch_size_pow", 6, 9),
        "num_simulations": trial.suggest_categorical("num_simulations", [8, 16, 25, 50]),
        "gradient_steps": trial.suggest_int("gradient_steps", 1, 4),
        "td_steps": trial.suggest_categorical("td_steps", [5, 10, 20]),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 1e-3, 3e-2, log=True),
        "value_bootstrap": trial.suggest_categorical("value_bootstrap", ["search", "target"]),
    }
    return convert_muzero_params(params)


#: zoo name -> (sampler(trial, n_actions, n_envs, additional_args), converter(params))
SAMPLERS: dict[str, tuple[Sampler, Converter]] = {"muzero": (sample_muzero_params, convert_muzero_params)}
