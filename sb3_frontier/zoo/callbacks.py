"""Evaluation in the zoo for algorithms that take action masks (ours), the way sb3-contrib evaluates MaskablePPO."""

from __future__ import annotations

from typing import Any

from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.utils import is_masking_supported


class MaskAwareEvalCallback(MaskableEvalCallback):
    """
    rl-zoo3's ``EvalCallback`` for our algorithms: when the evaluation env has ``action_masks()`` (sb3-contrib's
    convention, e.g. our tic-tac-toe envs), the masks are passed to ``predict`` as MaskablePPO's evaluation does, so
    that evaluation never plays an illegal move; other envs are evaluated exactly as by SB3's ``EvalCallback``.

    :param eval_env: the evaluation env
    :param args: ``EvalCallback``'s other arguments
    :param kwargs: ``EvalCallback``'s other keyword arguments
    """

    def __init__(self, eval_env: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(eval_env, *args, **kwargs)
        self.use_masking = is_masking_supported(self.eval_env)


def use_mask_aware_evaluation() -> None:
    """Make rl-zoo3's experiment manager evaluate with :class:`MaskAwareEvalCallback` (for our algorithms' runs)."""
    from rl_zoo3 import exp_manager

    exp_manager.EvalCallback = MaskAwareEvalCallback  # type: ignore[misc]


__all__ = ["MaskAwareEvalCallback", "use_mask_aware_evaluation"]
