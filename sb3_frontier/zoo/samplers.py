"""Optuna hyperparameter samplers for rl-zoo3's ``-optimize``, one per algorithm of ours that has one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Sampler = Callable[..., dict[str, Any]]
Converter = Callable[[dict[str, Any]], dict[str, Any]]

#: zoo name -> (sampler(trial, n_actions, n_envs, additional_args), converter(params))
SAMPLERS: dict[str, tuple[Sampler, Converter]] = {}
