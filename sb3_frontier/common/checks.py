"""Validation of hyperparameters at the boundary where the user sets them."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_integer(name: str, value: Any, minimum: int) -> int:
    """
    Validate an integer hyperparameter.

    :param name: its name, for the message
    :param value: the value
    :param minimum: the smallest value allowed
    :return: the value as an int
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


__all__ = ["check_integer"]
