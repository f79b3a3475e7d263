"""Value rescaling instead of reward clipping for SB3's DQN and sb3-contrib's QR-DQN: swap one class.

R2D2 (and Ape-X DQfD before it, Pohlen et al. 2018) keep Atari's rewards unclipped and learn Q-values in the space of
h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x with the transformed Bellman operator

    target = h(R + discount * h^-1(max_a Q_target(s', a)))

where R is the (n-step, discounted) reward and discount is gamma^k after k steps, 0 at termination; truncation
bootstraps. :class:`RescaledDQN` and :class:`RescaledQRDQN` are SB3's classes with this target (QR-DQN: every target
quantile goes through it) and nothing else changed: ``n_steps``, ``target_update_interval``, the zoo and every other
argument work as in SB3. Use them with unclipped rewards (e.g. ``AtariWrapper(clip_reward=False)``): their Q-values are
h(return); ``predict`` is unchanged, since h is increasing and keeps the greedy action.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from sb3_contrib import QRDQN
from sb3_contrib.common.utils import quantile_huber_loss
from stable_baselines3 import DQN
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_frontier.wrappers.value_transforms import ValueRescaling


class _TransformedTarget:
    """What both classes add to their SB3 base: h with its eps, the transformed target, and SB3's training loop around
    a per-class loss (SB3 writes the target inline in ``train``, so the loop is restated once here)."""

    rescaling: ValueRescaling
    value_rescaling_eps: float

    def __init__(self, *args: Any, value_rescaling_eps: float = 1e-3, **kwargs: Any) -> None:
        self.value_rescaling_eps = value_rescaling_eps
        self.rescaling = ValueRescaling(value_rescaling_eps)  # checks eps before the networks are built
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()  # type: ignore[misc]
        self.rescaling = ValueRescaling(self.value_rescaling_eps)  # also after load, which skips __init__

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "rescaling"]  # type: ignore[misc]

    def _bellman_target(self, replay_data: ReplayBufferSamples, next_values: th.Tensor) -> th.Tensor:
        """h(R + discount h^-1(next_values)); discount gamma^k after k steps (SB3's n-step buffer), 0 at termination."""
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma  # type: ignore[attr-defined]
        return self.rescaling.bellman_target(replay_data.rewards, (1 - replay_data.dones) * discounts, next_values)

    def _loss(self, replay_data: ReplayBufferSamples) -> th.Tensor:
        raise NotImplementedError

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        model: Any = self
        model.policy.set_training_mode(True)
        model._update_learning_rate(model.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            loss = self._loss(model.replay_buffer.sample(batch_size, env=model._vec_normalize_env))
            losses.append(loss.item())
            model.policy.optimizer.zero_grad()
            loss.backward()
            if model.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(model.policy.parameters(), model.max_grad_norm)
            model.policy.optimizer.step()
        model._n_updates += gradient_steps
        model.logger.record("train/n_updates", model._n_updates, exclude="tensorboard")
        model.logger.record("train/loss", np.mean(losses))


class RescaledDQN(_TransformedTarget, DQN):
    """
    SB3's DQN learning h(Q) with the transformed Bellman target h(R + discount h^-1(max_a Q_target(s', a))).

    :param args: DQN's arguments
    :param value_rescaling_eps: eps of h (1e-3 in R2D2)
    :param kwargs: DQN's keyword arguments
    """

    def _targets(self, replay_data: ReplayBufferSamples) -> th.Tensor:
        """Transformed targets of a batch, [batch, 1]."""
        with th.no_grad():
            next_q_values = self.q_net_target(replay_data.next_observations).max(dim=1, keepdim=True).values
            return self._bellman_target(replay_data, next_q_values)

    def _loss(self, replay_data: ReplayBufferSamples) -> th.Tensor:
        current_q_values = th.gather(self.q_net(replay_data.observations), dim=1, index=replay_data.actions.long())
        return F.smooth_l1_loss(current_q_values, self._targets(replay_data))


class RescaledQRDQN(_TransformedTarget, QRDQN):
    """
    sb3-contrib's QR-DQN with every target quantile through the transformed Bellman operator:
    h(R + discount h^-1(theta_j(s', a*))), a* greedy for the mean quantile of the target network.

    :param args: QRDQN's arguments
    :param value_rescaling_eps: eps of h (1e-3 in R2D2)
    :param kwargs: QRDQN's keyword arguments
    """

    def _targets(self, replay_data: ReplayBufferSamples) -> th.Tensor:
        """Transformed target quantiles of a batch, [batch, n_quantiles]."""
        with th.no_grad():
            next_quantiles = self.quantile_net_target(replay_data.next_observations)  # [batch, n_quantiles, A]
            greedy = next_quantiles.mean(dim=1, keepdim=True).argmax(dim=2, keepdim=True)
            next_quantiles = next_quantiles.gather(dim=2, index=greedy.expand(-1, self.n_quantiles, 1)).squeeze(dim=2)
            return self._bellman_target(replay_data, next_quantiles)

    def _loss(self, replay_data: ReplayBufferSamples) -> th.Tensor:
        actions = replay_data.actions[..., None].long().expand(-1, self.n_quantiles, 1)
        current_quantiles = th.gather(self.quantile_net(replay_data.observations), dim=2, index=actions).squeeze(dim=2)
        return quantile_huber_loss(current_quantiles, self._targets(replay_data), sum_over_quantiles=True)


__all__ = ["RescaledDQN", "RescaledQRDQN"]
