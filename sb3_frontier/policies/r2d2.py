"""R2D2's recurrent dueling Q-network: torso -> LSTM -> dueling head (Kapturowski et al. 2019, Sec. 3 and App. A).

The LSTM reads the torso's features and, as in the paper, the one-hot previous action and the previous reward,
which reach the network through the observation (:class:`~sb3_frontier.wrappers.VecPreviousActionReward`, applied
by :class:`~sb3_frontier.algorithms.r2d2.R2D2` to its env). Recurrent state: ``(h, c)``; the convention of
``predict`` is sb3-contrib's ``RecurrentPPO`` one, arrays of shape ``(n_layers = 1, n_envs, hidden)``.
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from sb3_frontier.policies.recurrent import LSTMState, RecurrentCorePolicy, batch_size_of
from sb3_frontier.policies.torsos import mlp


class R2D2Policy(RecurrentCorePolicy):
    """
    Recurrent dueling Q-network: torso -> LSTM (with the one-hot previous action and the previous reward as extra
    inputs) -> dueling head ``Q = V + A - mean_a A``.

    :param observation_space: the env's observation space (a Dict with ``"prev_action"`` and ``"prev_reward"`` when
        the env is wrapped in :class:`~sb3_frontier.wrappers.VecPreviousActionReward`)
    :param action_space: a Discrete action space
    :param lr_schedule: learning-rate schedule
    :param torso: ``"mlp"``, ``"nature"``, ``"impala"`` or ``"combined"`` (see :data:`TORSOS`)
    :param net_arch: hidden sizes of the MLP torso
    :param features_dim: output features of the convolutional torsos
    :param lstm_hidden_size: LSTM units (512 in the paper)
    :param dueling_hidden_size: hidden units of each dueling stream (512 in the paper)
    :param previous_action_reward: feed the LSTM the previous action and reward (the paper's default)
    :param normalize_images: divide uint8 images by 255
    :param optimizer_class: optimizer (Adam)
    :param optimizer_kwargs: its keyword arguments, merged over ``eps=1e-3`` (the paper's Adam epsilon)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        torso: str = "mlp",
        net_arch: list[int] | None = None,
        features_dim: int = 512,
        lstm_hidden_size: int = 64,
        dueling_hidden_size: int = 64,
        previous_action_reward: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if isinstance(lstm_hidden_size, bool) or not isinstance(lstm_hidden_size, int) or lstm_hidden_size < 1:
            raise ValueError(f"lstm_hidden_size must be an integer >= 1, got {lstm_hidden_size!r}")
        if dueling_hidden_size < 1:
            raise ValueError(f"dueling_hidden_size must be >= 1, got {dueling_hidden_size}")
        super().__init__(
            observation_space,
            action_space,
            algorithm="R2D2",
            torso=torso,
            net_arch=net_arch,
            features_dim=features_dim,
            lstm_hidden_size=lstm_hidden_size,
            previous_action_reward=previous_action_reward,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs={"eps": 1e-3, **(optimizer_kwargs or {})},
        )
        self.dueling_hidden_size = dueling_hidden_size
        self.value_stream = mlp(lstm_hidden_size, [dueling_hidden_size], 1)
        self.advantage_stream = mlp(lstm_hidden_size, [dueling_hidden_size], self.n_actions)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dueling_hidden_size=self.dueling_hidden_size)
        return data

    def q_from_lstm(self, lstm_out: th.Tensor) -> th.Tensor:
        """Dueling Q-values ``V + A - mean_a A`` of LSTM outputs ``[..., H]`` -> ``[..., A]``."""
        advantages = self.advantage_stream(lstm_out)
        return self.value_stream(lstm_out) + advantages - advantages.mean(dim=-1, keepdim=True)

    def unroll(self, obs: PyTorchObs, state: LSTMState, resets: th.Tensor | None = None) -> tuple[th.Tensor, LSTMState]:
        """
        Q-values of time-major sequences ``[T, B, ...]`` from ``state`` (see :func:`lstm_unroll` for ``resets``).

        :return: ``[T, B, A]`` Q-values and the final state
        """
        out, state = self.core_unroll(obs, state, resets)
        return self.q_from_lstm(out), state

    def step(self, obs: PyTorchObs, state: LSTMState, episode_start: th.Tensor | None = None) -> tuple[th.Tensor, LSTMState]:
        """
        One step of ``B`` envs: ``[B, ...]`` observations -> ``[B, A]`` Q-values and the next state.

        :param episode_start: ``[B]`` bool, the state is zeroed first where True
        """
        out, state = self.core_step(obs, state, episode_start)
        return self.q_from_lstm(out), state

    def forward(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:  # type: ignore[override]
        """Greedy actions from a zero state (use :meth:`step` to carry the recurrent state)."""
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        q, _ = self.step(observation, self.initial_state(batch_size_of(observation)))
        return q.argmax(dim=1)


class CnnPolicy(R2D2Policy):
    """R2D2 with a convolutional torso (Nature CNN by default; ``torso="impala"`` for IMPALA's) and the paper's
    sizes: 512 LSTM units, 512 hidden units per dueling stream."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        torso: str = "nature",
        lstm_hidden_size: int = 512,
        dueling_hidden_size: int = 512,
        **kwargs: Any,
    ):
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            torso=torso,
            lstm_hidden_size=lstm_hidden_size,
            dueling_hidden_size=dueling_hidden_size,
            **kwargs,
        )


class MultiInputPolicy(R2D2Policy):
    """R2D2 for Dict observations: SB3's CombinedExtractor as the torso (an MLP after it, ``net_arch``)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("torso", "combined")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


MlpPolicy = R2D2Policy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "R2D2Policy"]
