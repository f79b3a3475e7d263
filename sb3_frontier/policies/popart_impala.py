"""PopArt-IMPALA's actor-critic: torso -> (LSTM) -> a task-agnostic policy head and a PopArt value head.

Espeholt et al. (2018), Fig. 3: a shallow (Nature) or deep residual (IMPALA) CNN torso, a 256-unit LSTM in the Atari
agent (fed the previous action and reward as well), a linear policy head and a linear baseline. Hessel et al. (2018):
the baseline is a :class:`~sb3_frontier.wrappers.PopArt` head with one output and one set of statistics per task;
the policy is shared by all tasks, the task id only picks the value output. With ``popart=False`` on the algorithm the
same head serves plain IMPALA: its statistics are never updated, so it stays an ordinary linear layer.
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.distributions import Categorical

from sb3_frontier.policies.recurrent import LSTMState, RecurrentCorePolicy, batch_size_of
from sb3_frontier.wrappers.popart import PopArt
from sb3_frontier.wrappers.previous_action_reward import has_previous_action_reward


class PopArtIMPALAPolicy(RecurrentCorePolicy):
    """
    Actor-critic of PopArt-IMPALA: core (:class:`~sb3_frontier.policies.recurrent.RecurrentCorePolicy`) -> policy
    logits ``[..., A]`` and a PopArt value ``[..., n_tasks]``.

    :param observation_space: the env's observation space
    :param action_space: a Discrete action space
    :param lr_schedule: learning-rate schedule
    :param torso: ``"mlp"``, ``"nature"``, ``"impala"`` or ``"combined"``
    :param net_arch: hidden sizes of the MLP torso
    :param features_dim: output features of the convolutional torsos (256 in the paper)
    :param lstm_hidden_size: LSTM units (0: feed-forward; 256 in the paper's recurrent Atari agent)
    :param previous_action_reward: feed the core the previous action and reward (``None``: when the observations
        carry them, i.e. the env is wrapped in :class:`~sb3_frontier.wrappers.VecPreviousActionReward`)
    :param n_tasks: value outputs and PopArt statistics (one per task)
    :param popart_beta: step size of PopArt's statistics (3e-4 in the paper)
    :param normalize_images: divide uint8 images by 255
    :param optimizer_class: optimizer (RMSProp, as in the paper)
    :param optimizer_kwargs: its keyword arguments, merged over the paper's ``alpha=0.99, eps=0.01``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        torso: str = "mlp",
        net_arch: list[int] | None = None,
        features_dim: int = 256,
        lstm_hidden_size: int = 0,
        previous_action_reward: bool | None = None,
        n_tasks: int = 1,
        popart_beta: float = 3e-4,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.RMSprop,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if previous_action_reward is None:
            previous_action_reward = has_previous_action_reward(observation_space)
        if optimizer_class is th.optim.RMSprop:
            optimizer_kwargs = {"alpha": 0.99, "eps": 0.01, **(optimizer_kwargs or {})}
        super().__init__(
            observation_space,
            action_space,
            algorithm="PopArt-IMPALA",
            torso=torso,
            net_arch=[64, 64] if net_arch is None else net_arch,
            features_dim=features_dim,
            lstm_hidden_size=lstm_hidden_size,
            previous_action_reward=previous_action_reward,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.n_tasks = n_tasks
        self.popart_beta = popart_beta
        self.action_net = nn.Linear(self.core_dim, self.n_actions)
        self.value_net = PopArt(self.core_dim, n_tasks=n_tasks, beta=popart_beta)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(n_tasks=self.n_tasks, popart_beta=self.popart_beta)
        return data

    @property
    def recurrent(self) -> bool:
        """Whether the core has an LSTM (then acting carries a state)."""
        return self.lstm is not None

    # ------------------------------------------------------------------------------------------------- forward
    def heads(self, features: th.Tensor, task_ids: th.Tensor | None = None) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Policy logits and values of core features ``[..., core_dim]``.

        :param task_ids: ``[...]`` task of each sample (None: every task's value, ``[..., n_tasks]``)
        :return: logits ``[..., A]``, normalised and unnormalised values (``[...]`` with task ids)
        """
        normalized, values = self.value_net(features, task_ids)
        return self.action_net(features), normalized, values

    def act(
        self, obs: PyTorchObs, state: LSTMState, episode_start: th.Tensor | None = None, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, LSTMState]:
        """
        The behaviour policy on one step of ``B`` envs.

        :param obs: ``[B, ...]`` observations
        :param state: the recurrent state (ignored by a feed-forward core)
        :param episode_start: ``[B]`` bool, the state is zeroed first where True
        :param deterministic: the most probable action instead of a sample
        :return: actions ``[B]``, their log-probabilities ``[B]`` and the next state
        """
        features, state = self.core_step(obs, state, episode_start)
        distribution = Categorical(logits=self.action_net(features))
        actions = distribution.probs.argmax(dim=-1) if deterministic else distribution.sample()
        return actions, distribution.log_prob(actions), state

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:  # type: ignore[override]
        """Actions from a zero state (the algorithm's ``predict`` carries the recurrent state)."""
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        actions, _, _ = self.act(observation, self.initial_state(batch_size_of(observation)), deterministic=deterministic)
        return actions


class CnnPolicy(PopArtIMPALAPolicy):
    """PopArt-IMPALA with IMPALA's deep residual torso (``torso="nature"`` for the shallow Nature CNN)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("torso", "impala")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class CnnLstmPolicy(CnnPolicy):
    """The paper's recurrent Atari agent: IMPALA's residual torso, then a 256-unit LSTM."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("lstm_hidden_size", 256)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class MlpLstmPolicy(PopArtIMPALAPolicy):
    """An MLP torso, then a 64-unit LSTM."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("lstm_hidden_size", 64)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class MultiInputPolicy(PopArtIMPALAPolicy):
    """PopArt-IMPALA for Dict observations: SB3's CombinedExtractor as the torso (an MLP after it, ``net_arch``)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("torso", "combined")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


MlpPolicy = PopArtIMPALAPolicy

__all__ = ["CnnLstmPolicy", "CnnPolicy", "MlpLstmPolicy", "MlpPolicy", "MultiInputPolicy", "PopArtIMPALAPolicy"]
