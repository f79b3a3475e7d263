"""R2D2's recurrent dueling Q-network: torso -> LSTM -> dueling head (Kapturowski et al. 2019, Sec. 3 and App. A).

The LSTM reads the torso's features and, as in the paper, the one-hot previous action and the previous reward,
which reach the network through the observation (:class:`~sb3_frontier.wrappers.VecPreviousActionReward`, applied
by :class:`~sb3_frontier.algorithms.r2d2.R2D2` to its env). Recurrent state: ``(h, c)``; the convention of
``predict`` is sb3-contrib's ``RecurrentPPO`` one, arrays of shape ``(n_layers = 1, n_envs, hidden)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_frontier.policies.torsos import ImpalaCnn, mlp
from sb3_frontier.wrappers.previous_action_reward import OBSERVATION, PREV_ACTION, PREV_REWARD, has_previous_action_reward

LSTMState = tuple[th.Tensor, th.Tensor]

#: Torsos by name: ``"mlp"`` (flatten + MLP), ``"nature"`` (DQN's Nature CNN), ``"impala"`` (IMPALA's residual CNN),
#: ``"combined"`` (SB3's CombinedExtractor for Dict observations).
TORSOS = ("mlp", "nature", "impala", "combined")


def lstm_unroll(
    lstm: nn.LSTM, inputs: th.Tensor, state: LSTMState, resets: th.Tensor | None = None
) -> tuple[th.Tensor, LSTMState]:
    """
    Run a one-layer LSTM over ``[T, B, F]`` inputs from ``state``, zeroing the state of sequence ``b`` before step
    ``t`` where ``resets[t, b]`` (an episode starts there). One cuDNN/MKL call per stretch of steps without a reset.

    :param lstm: the LSTM (``batch_first=False``)
    :param inputs: ``[T, B, F]``
    :param state: ``(h, c)``, each ``[B, H]``
    :param resets: ``[T, B]`` bool, or None for no reset
    :return: outputs ``[T, B, H]`` and the final state
    """
    h, c = state
    if resets is None or not bool(resets.any()):
        out, (h_n, c_n) = lstm(inputs, (h.unsqueeze(0), c.unsqueeze(0)))
        return out, (h_n.squeeze(0), c_n.squeeze(0))
    cuts = th.nonzero(resets.any(dim=1)).flatten().tolist()
    bounds = [t for t in cuts if t > 0]
    starts = [0, *bounds]
    ends = [*bounds, inputs.shape[0]]
    outputs = []
    for start, end in zip(starts, ends, strict=True):
        keep = (~resets[start]).to(h.dtype).unsqueeze(1)
        h, c = h * keep, c * keep
        out, (h_n, c_n) = lstm(inputs[start:end], (h.unsqueeze(0), c.unsqueeze(0)))
        outputs.append(out)
        h, c = h_n.squeeze(0), c_n.squeeze(0)
    return th.cat(outputs, dim=0), (h, c)


class R2D2Policy(BasePolicy):
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
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"R2D2 needs a Discrete action space, got {action_space}")
        if torso not in TORSOS:
            raise ValueError(f"torso must be one of {TORSOS}, got {torso!r}")
        for name, value in (("lstm_hidden_size", lstm_hidden_size), ("dueling_hidden_size", dueling_hidden_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        super().__init__(
            observation_space,
            action_space,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs={"eps": 1e-3, **(optimizer_kwargs or {})},
        )
        if previous_action_reward and not has_previous_action_reward(observation_space):
            raise ValueError(
                "previous_action_reward=True needs observations with 'prev_action' and 'prev_reward' "
                "(wrap the env in sb3_frontier.wrappers.VecPreviousActionReward), or pass previous_action_reward=False"
            )
        self.torso_name = torso
        self.net_arch = list(net_arch) if net_arch is not None else [64]
        self.features_dim_arg = features_dim
        self.lstm_hidden_size = lstm_hidden_size
        self.dueling_hidden_size = dueling_hidden_size
        self.previous_action_reward = previous_action_reward
        self.n_actions = int(action_space.n)
        self.base_space = self._base_space(observation_space)
        self.torso = self._make_torso()
        extra = self.n_actions + 1 if previous_action_reward else 0
        self.lstm = nn.LSTM(self.torso_dim + extra, lstm_hidden_size)
        self.value_stream = mlp(lstm_hidden_size, [dueling_hidden_size], 1)
        self.advantage_stream = mlp(lstm_hidden_size, [dueling_hidden_size], self.n_actions)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    # ----------------------------------------------------------------------------------------------- construction
    @staticmethod
    def _base_space(observation_space: spaces.Space) -> spaces.Space:
        """The observation without the previous action and reward."""
        if not has_previous_action_reward(observation_space):
            return observation_space
        assert isinstance(observation_space, spaces.Dict)
        rest = {k: v for k, v in observation_space.spaces.items() if k not in (PREV_ACTION, PREV_REWARD)}
        if set(rest) == {OBSERVATION}:
            return rest[OBSERVATION]
        return spaces.Dict(rest)

    def _make_torso(self) -> nn.Module:
        space = self.base_space
        if self.torso_name == "combined" or isinstance(space, spaces.Dict):
            if not isinstance(space, spaces.Dict):
                raise ValueError(f"torso='combined' is for Dict observations, got {space}")
            extractor: nn.Module = CombinedExtractor(space, normalized_image=not self.normalize_images)
        elif self.torso_name == "mlp":
            extractor = FlattenExtractor(space)
        elif self.torso_name == "nature":
            extractor = NatureCNN(space, features_dim=self.features_dim_arg, normalized_image=not self.normalize_images)  # type: ignore[arg-type]
        else:
            extractor = ImpalaCnn(space, features_dim=self.features_dim_arg)  # type: ignore[arg-type]
        dim = int(extractor.features_dim)  # type: ignore[arg-type]
        if self.torso_name == "mlp" or (self.torso_name == "combined" and self.net_arch):
            head = mlp(dim, self.net_arch, None)
            self.torso_dim = self.net_arch[-1] if self.net_arch else dim
            return nn.Sequential(extractor, head)
        self.torso_dim = dim
        return extractor

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            torso=self.torso_name,
            net_arch=self.net_arch,
            features_dim=self.features_dim_arg,
            lstm_hidden_size=self.lstm_hidden_size,
            dueling_hidden_size=self.dueling_hidden_size,
            previous_action_reward=self.previous_action_reward,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    # ------------------------------------------------------------------------------------------------- forward
    def initial_state(self, batch_size: int) -> LSTMState:
        """Zero ``(h, c)``, each ``[batch_size, hidden]``."""
        zeros = th.zeros(batch_size, self.lstm_hidden_size, device=self.device)
        return zeros, zeros.clone()

    def lstm_inputs(self, obs: PyTorchObs) -> th.Tensor:
        """
        LSTM inputs of observations with any leading dimensions ``[*lead, ...]`` -> ``[*lead, F]``.

        :param obs: tensors as stored (uint8 images are scaled here)
        """
        if isinstance(obs, dict):
            base: Any = {k: v for k, v in obs.items() if k not in (PREV_ACTION, PREV_REWARD)}
            if set(base) == {OBSERVATION}:
                base = base[OBSERVATION]
        else:
            base = obs
        leaves = list(base.values()) if isinstance(base, dict) else [base]
        space_leaves = list(self.base_space.spaces.values()) if isinstance(self.base_space, spaces.Dict) else [self.base_space]
        lead = leaves[0].shape[: leaves[0].ndim - len(space_leaves[0].shape or ())]
        n = int(np.prod(lead)) if lead else 1

        def flat(x: th.Tensor, space: spaces.Space) -> th.Tensor:
            return x.reshape(n, *space.shape)  # type: ignore[misc]

        if isinstance(base, dict):
            assert isinstance(self.base_space, spaces.Dict)
            base = {k: flat(v, self.base_space.spaces[k]) for k, v in base.items()}
        else:
            base = flat(base, self.base_space)
        features = self.torso(preprocess_obs(base, self.base_space, normalize_images=self.normalize_images))
        if self.previous_action_reward:
            assert isinstance(obs, dict)
            prev_action = obs[PREV_ACTION].reshape(n, self.n_actions).float()
            prev_reward = obs[PREV_REWARD].reshape(n, 1).float()
            # The raw reward would dwarf the other inputs in games with large scores: squash it, keeping its sign.
            features = th.cat([features, prev_action, th.sign(prev_reward) * th.log1p(prev_reward.abs())], dim=1)
        return features.reshape(*lead, -1)

    def q_from_lstm(self, lstm_out: th.Tensor) -> th.Tensor:
        """Dueling Q-values ``V + A - mean_a A`` of LSTM outputs ``[..., H]`` -> ``[..., A]``."""
        advantages = self.advantage_stream(lstm_out)
        return self.value_stream(lstm_out) + advantages - advantages.mean(dim=-1, keepdim=True)

    def unroll(self, obs: PyTorchObs, state: LSTMState, resets: th.Tensor | None = None) -> tuple[th.Tensor, LSTMState]:
        """
        Q-values of time-major sequences ``[T, B, ...]`` from ``state`` (see :func:`lstm_unroll` for ``resets``).

        :return: ``[T, B, A]`` Q-values and the final state
        """
        out, state = lstm_unroll(self.lstm, self.lstm_inputs(obs), state, resets)
        return self.q_from_lstm(out), state

    def step(self, obs: PyTorchObs, state: LSTMState, episode_start: th.Tensor | None = None) -> tuple[th.Tensor, LSTMState]:
        """
        One step of ``B`` envs: ``[B, ...]`` observations -> ``[B, A]`` Q-values and the next state.

        :param episode_start: ``[B]`` bool, the state is zeroed first where True
        """
        resets = None if episode_start is None else episode_start.reshape(1, -1).bool()
        inputs = self.lstm_inputs(obs).unsqueeze(0)
        out, state = lstm_unroll(self.lstm, inputs, state, resets)
        return self.q_from_lstm(out[0]), state

    def forward(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:  # type: ignore[override]
        """Greedy actions from a zero state (use :meth:`step` to carry the recurrent state)."""
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        q, _ = self.step(observation, self.initial_state(_batch_size(observation)))
        return q.argmax(dim=1)


def _batch_size(obs: PyTorchObs) -> int:
    leaf = next(iter(obs.values())) if isinstance(obs, dict) else obs
    return int(leaf.shape[0])


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

__all__ = ["TORSOS", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "R2D2Policy", "lstm_unroll"]
