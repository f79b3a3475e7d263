"""The core shared by R2D2's and IMPALA's networks: torso, the previous action and reward, and an optional LSTM.

Both agents read an observation through a torso (an MLP, DQN's Nature CNN, IMPALA's residual CNN, or SB3's
``CombinedExtractor`` for Dict observations), optionally append the one-hot previous action and the previous reward
(which reach the network through the observation: :class:`~sb3_frontier.wrappers.VecPreviousActionReward`), and run
an LSTM over time (R2D2 always; IMPALA in its recurrent Atari variant). The heads differ: R2D2 puts a dueling
Q-head on the core, IMPALA a policy head and a PopArt value head.

Recurrent state: ``(h, c)``, each ``[B, H]`` inside the networks; ``predict`` uses sb3-contrib's ``RecurrentPPO``
convention, arrays of shape ``(n_layers = 1, n_envs, H)`` (:meth:`RecurrentCorePolicy.state_to_tensors`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_frontier.policies.torsos import ChannelsLastKernels, ImpalaCnn, cpu_channels_last, cpu_channels_last_weights, mlp
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
        return _lstm_stretch(lstm, inputs, h, c)
    cuts = th.nonzero(resets.any(dim=1)).flatten().tolist()
    bounds = [t for t in cuts if t > 0]
    starts = [0, *bounds]
    ends = [*bounds, inputs.shape[0]]
    outputs = []
    for start, end in zip(starts, ends, strict=True):
        keep = (~resets[start]).to(h.dtype).unsqueeze(1)
        h, c = h * keep, c * keep
        out, (h, c) = _lstm_stretch(lstm, inputs[start:end], h, c)
        outputs.append(out)
    return th.cat(outputs, dim=0), (h, c)


def _lstm_stretch(lstm: nn.LSTM, inputs: th.Tensor, h: th.Tensor, c: th.Tensor) -> tuple[th.Tensor, LSTMState]:
    """
    ``lstm`` over ``[T, B, F]`` inputs from ``(h, c)`` (each ``[B, H]``), without resets. A single step (every acting
    step) goes through ``torch.lstm_cell`` with the LSTM's own parameters: the same arithmetic, at about 2.4x less
    time than ``nn.LSTM``'s sequence kernel on CPU for a few envs (1.2 against 2.9 ms at 4 envs of 512 units).
    """
    if inputs.shape[0] == 1 and _plain_lstm(lstm):
        w_ih, w_hh, b_ih, b_hh = lstm.all_weights[0]
        h, c = th.lstm_cell(inputs[0], (h, c), w_ih, w_hh, b_ih, b_hh)
        return h.unsqueeze(0), (h, c)
    out, (h_n, c_n) = lstm(inputs, (h.unsqueeze(0), c.unsqueeze(0)))
    return out, (h_n.squeeze(0), c_n.squeeze(0))


def _plain_lstm(lstm: nn.LSTM) -> bool:
    """One unidirectional layer with biases and no projection: what ``torch.lstm_cell`` computes."""
    return lstm.num_layers == 1 and not lstm.bidirectional and lstm.bias and lstm.proj_size == 0


def scaled_obs(obs: PyTorchObs, space: spaces.Space, normalize_images: bool) -> PyTorchObs:
    """
    SB3's ``preprocess_obs``, with a uint8 image divided by 255 in its float copy: the same numbers, one pass over a
    batch of frames instead of two (the learner converts ~10^3 frames per network per update).
    """
    if (
        normalize_images
        and isinstance(obs, th.Tensor)
        and obs.dtype == th.uint8
        and isinstance(space, spaces.Box)
        and is_image_space(space)
    ):
        return obs.float().div_(255.0)
    return preprocess_obs(obs, space, normalize_images=normalize_images)


def base_space(observation_space: spaces.Space) -> spaces.Space:
    """The observation space without the previous action and reward (the torso's input)."""
    if not has_previous_action_reward(observation_space):
        return observation_space
    assert isinstance(observation_space, spaces.Dict)
    rest = {k: v for k, v in observation_space.spaces.items() if k not in (PREV_ACTION, PREV_REWARD)}
    if set(rest) == {OBSERVATION}:
        return rest[OBSERVATION]
    return spaces.Dict(rest)


def batch_size_of(obs: PyTorchObs) -> int:
    """Leading dimension of a (possibly Dict) batch of observations."""
    leaf = next(iter(obs.values())) if isinstance(obs, dict) else obs
    return int(leaf.shape[0])


class RecurrentCorePolicy(ChannelsLastKernels, BasePolicy):
    """
    Torso -> (previous action and reward) -> LSTM, the part of the network R2D2 and IMPALA share; subclasses add
    their heads on :attr:`core_dim` features and create the optimizer.

    :param observation_space: the env's observation space (a Dict with ``"prev_action"`` and ``"prev_reward"`` when
        the env is wrapped in :class:`~sb3_frontier.wrappers.VecPreviousActionReward`)
    :param action_space: a Discrete action space
    :param algorithm: name of the agent, for error messages
    :param torso: ``"mlp"``, ``"nature"``, ``"impala"`` or ``"combined"`` (see :data:`TORSOS`)
    :param net_arch: hidden sizes of the MLP torso (and of an MLP after the combined extractor)
    :param features_dim: output features of the convolutional torsos
    :param lstm_hidden_size: LSTM units; 0 for no LSTM (a feed-forward core, whose state is empty)
    :param previous_action_reward: feed the core the previous action and reward
    :param normalize_images: divide uint8 images by 255
    :param optimizer_class: optimizer class (created by the subclass once its heads exist)
    :param optimizer_kwargs: its keyword arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        algorithm: str,
        torso: str,
        net_arch: list[int] | None,
        features_dim: int,
        lstm_hidden_size: int,
        previous_action_reward: bool,
        normalize_images: bool,
        optimizer_class: type[th.optim.Optimizer],
        optimizer_kwargs: dict[str, Any] | None,
    ):
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"{algorithm} needs a Discrete action space, got {action_space}")
        if torso not in TORSOS:
            raise ValueError(f"torso must be one of {TORSOS}, got {torso!r}")
        if isinstance(lstm_hidden_size, bool) or not isinstance(lstm_hidden_size, int) or lstm_hidden_size < 0:
            raise ValueError(f"lstm_hidden_size must be an integer >= 0, got {lstm_hidden_size!r}")
        super().__init__(
            observation_space,
            action_space,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
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
        self.previous_action_reward = previous_action_reward
        self.n_actions = int(action_space.n)
        self.base_space = base_space(observation_space)
        self.torso = self._make_torso()
        cpu_channels_last_weights(self)
        inputs = self.torso_dim + (self.n_actions + 1 if previous_action_reward else 0)
        self.lstm = nn.LSTM(inputs, lstm_hidden_size) if lstm_hidden_size > 0 else None
        #: features the heads read
        self.core_dim = lstm_hidden_size if lstm_hidden_size > 0 else inputs

    def _make_torso(self) -> nn.Module:
        space = self.base_space
        self.channels_first_images = False
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
        #: images [N, C, H, W] enter the torso channels-last on the CPU (see cpu_channels_last): the Nature CNN always
        #: reads [C, H, W]; IMPALA's CNN transposes [H, W, C] observations itself into a channels-last view
        self.channels_first_images = self.torso_name == "nature" or (
            isinstance(extractor, ImpalaCnn) and not extractor.image.channels_last
        )
        return extractor

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            torso=self.torso_name,
            net_arch=self.net_arch,
            features_dim=self.features_dim_arg,
            lstm_hidden_size=self.lstm_hidden_size,
            previous_action_reward=self.previous_action_reward,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    # ------------------------------------------------------------------------------------------------- forward
    def initial_state(self, batch_size: int) -> LSTMState:
        """Zero ``(h, c)``, each ``[batch_size, lstm_hidden_size]`` (empty tensors without an LSTM)."""
        zeros = th.zeros(batch_size, self.lstm_hidden_size, device=self.device)
        return zeros, zeros.clone()

    def core_inputs(self, obs: PyTorchObs) -> th.Tensor:
        """
        Core inputs of observations with any leading dimensions ``[*lead, ...]`` -> ``[*lead, F]``: the torso's
        features, then (if read) the one-hot previous action and the squashed previous reward.

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
            if self.channels_first_images:
                base = cpu_channels_last(base)  # before the /255 of the uint8 frames: the smaller copy
        features = self.torso(scaled_obs(base, self.base_space, self.normalize_images))
        if self.previous_action_reward:
            assert isinstance(obs, dict)
            prev_action = obs[PREV_ACTION].reshape(n, self.n_actions).float()
            prev_reward = obs[PREV_REWARD].reshape(n, 1).float()
            # The raw reward would dwarf the other inputs in games with large scores: squash it, keeping its sign.
            features = th.cat([features, prev_action, th.sign(prev_reward) * th.log1p(prev_reward.abs())], dim=1)
        return features.reshape(*lead, -1)

    def core_unroll(self, obs: PyTorchObs, state: LSTMState, resets: th.Tensor | None = None) -> tuple[th.Tensor, LSTMState]:
        """
        Core features of time-major sequences ``[T, B, ...]`` from ``state`` (see :func:`lstm_unroll` for
        ``resets``; a feed-forward core ignores both).

        :return: ``[T, B, core_dim]`` features and the final state
        """
        inputs = self.core_inputs(obs)
        if self.lstm is None:
            return inputs, state
        return lstm_unroll(self.lstm, inputs, state, resets)

    def core_step(
        self, obs: PyTorchObs, state: LSTMState, episode_start: th.Tensor | None = None
    ) -> tuple[th.Tensor, LSTMState]:
        """
        One step of ``B`` envs: ``[B, ...]`` observations -> ``[B, core_dim]`` features and the next state.

        :param episode_start: ``[B]`` bool, the state is zeroed first where True
        """
        resets = None if episode_start is None else episode_start.reshape(1, -1).bool()
        obs_t = {k: v.unsqueeze(0) for k, v in obs.items()} if isinstance(obs, dict) else obs.unsqueeze(0)
        out, state = self.core_unroll(obs_t, state, resets)
        return out[0], state

    # ------------------------------------------------------------------------------------- predict's state (numpy)
    def state_to_tensors(self, state: tuple[np.ndarray, ...] | None, n_envs: int) -> LSTMState:
        """
        ``predict``'s state, RecurrentPPO's ``(h, c)`` arrays of shape ``(1, n_envs, H)`` (``None`` at the start),
        as the tensors :meth:`core_step` takes.
        """
        if state is None:
            return self.initial_state(n_envs)
        h, c = (th.as_tensor(np.asarray(x), device=self.device, dtype=th.float32) for x in state)
        expected = (1, n_envs, self.lstm_hidden_size)
        if tuple(h.shape) != expected or tuple(c.shape) != expected:
            raise ValueError(f"state must be (h, c), each of shape {expected}, got {tuple(h.shape)} and {tuple(c.shape)}")
        return h[0], c[0]

    @staticmethod
    def state_to_numpy(state: LSTMState) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of :meth:`state_to_tensors`."""
        return state[0].cpu().numpy()[None], state[1].cpu().numpy()[None]


__all__ = ["TORSOS", "LSTMState", "RecurrentCorePolicy", "base_space", "batch_size_of", "lstm_unroll"]
