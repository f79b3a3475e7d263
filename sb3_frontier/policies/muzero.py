"""MuZero's networks (Schrittwieser et al. 2020): representation h, dynamics g and prediction f.

The policy holds the three functions and the categorical supports of value and reward. Planning (the search) lives
in :mod:`sb3_frontier.algorithms.muzero`; ``policy.predict`` alone acts greedily on the prior of f(h(o)), while
``MuZero.predict`` searches.
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from sb3_frontier.policies.torsos import (
    ChannelsLastKernels,
    DownSample,
    ImageExtractor,
    ResidualBlock,
    conv3x3,
    cpu_channels_last,
    cpu_channels_last_weights,
    min_max_scale,
    mlp,
)
from sb3_frontier.wrappers.value_transforms import CategoricalSupport, ValueRescaling

SupportSpec = tuple[float, float, int]

#: The paper's supports: 601 bins on [-300, 300] over h-transformed values (Appendix F).
PAPER_SUPPORT: SupportSpec = (-300.0, 300.0, 601)

#: The paper's L2 regularisation coefficient (c in Eq. 1), applied as the optimizer's ``weight_decay``.
L2_COEF = 1e-4


def make_support(spec: SupportSpec | CategoricalSupport, eps: float) -> CategoricalSupport:
    """
    Build the categorical support of a value or reward head.

    :param spec: ``(vmin, vmax, n_bins)`` over h-transformed scalars, or a ready support
    :param eps: epsilon of the value transform h (``ValueRescaling``)
    :return: the support
    """
    if isinstance(spec, CategoricalSupport):
        return spec
    vmin, vmax, n_bins = spec
    return CategoricalSupport(float(vmin), float(vmax), int(n_bins), transform=ValueRescaling(eps))


class MuZeroPolicy(BasePolicy):
    """
    MuZero networks with MLP torsos, for vector observations (``"MlpPolicy"``).

    - representation ``s0 = h(o)``: features -> MLP -> ``hidden_dim``, min-max scaled to [0, 1] per sample;
    - dynamics ``r, s' = g(s, a)``: [s, one-hot(a)] -> MLP trunk -> next state (min-max scaled) and reward logits;
    - prediction ``p, v = f(s)``: MLP trunk -> policy logits and value logits.

    Value and reward are categorical over ``CategoricalSupport`` (two-hot targets on h-transformed scalars); their
    output layers start at zero so a fresh network predicts value 0 and reward 0.

    :param observation_space: observation space
    :param action_space: a ``Discrete`` action space
    :param lr_schedule: learning-rate schedule (for the optimizer)
    :param hidden_dim: size of the hidden state
    :param net_arch: hidden layer sizes per function: keys ``representation``, ``dynamics``, ``prediction``
        (a list applies to all three)
    :param value_support: ``(vmin, vmax, n_bins)`` of the value head over h(value)
    :param reward_support: ``(vmin, vmax, n_bins)`` of the reward head over h(reward) (sized on its own: rewards are
        usually much smaller than returns)
    :param value_transform_eps: epsilon of h (Pohlen et al. 2018)
    :param activation_fn: activation of the MLPs
    :param features_extractor_class: SB3 features extractor (flatten for vectors, combined for Dict spaces)
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: divide uint8 images by 255
    :param optimizer_class: optimizer
    :param optimizer_kwargs: optimizer keyword arguments, merged over ``weight_decay=1e-4`` (MuZero's L2
        regularisation; pass ``weight_decay=0`` to turn it off)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        hidden_dim: int = 64,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        value_support: SupportSpec | CategoricalSupport = PAPER_SUPPORT,
        reward_support: SupportSpec | CategoricalSupport = PAPER_SUPPORT,
        value_transform_eps: float = 1e-3,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"MuZero needs a Discrete action space, got {action_space}")
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs={"weight_decay": L2_COEF, **(optimizer_kwargs or {})},
        )
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        self.hidden_dim = hidden_dim
        self.net_arch = net_arch
        self.value_support_spec = value_support
        self.reward_support_spec = reward_support
        self.value_transform_eps = value_transform_eps
        self.activation_fn = activation_fn
        self.n_actions = int(action_space.n)
        self.value_support = make_support(value_support, value_transform_eps)
        self.reward_support = make_support(reward_support, value_transform_eps)
        self._build(lr_schedule)

    # ----------------------------------------------------------------------------------------------- construction
    def _arch(self, key: str, default: list[int]) -> list[int]:
        if self.net_arch is None:
            return default
        if isinstance(self.net_arch, dict):
            return list(self.net_arch.get(key, default))
        return list(self.net_arch)

    def _build_networks(self) -> None:
        """Create representation, dynamics and prediction (MLP torsos)."""
        act = self.activation_fn
        self.features_extractor = self.make_features_extractor()
        features_dim = self.features_extractor.features_dim
        self.representation_net = mlp(features_dim, self._arch("representation", [128]), self.hidden_dim, act)
        dyn = self._arch("dynamics", [128])
        self.dynamics_trunk = mlp(self.hidden_dim + self.n_actions, dyn, None, act)
        trunk_dim = dyn[-1] if dyn else self.hidden_dim + self.n_actions
        self.dynamics_state = nn.Linear(trunk_dim, self.hidden_dim)
        self.reward_head = nn.Linear(trunk_dim, self.reward_support.n_bins)
        pred = self._arch("prediction", [128])
        self.prediction_trunk = mlp(self.hidden_dim, pred, None, act)
        pred_dim = pred[-1] if pred else self.hidden_dim
        self.policy_head = nn.Linear(pred_dim, self.n_actions)
        self.value_head = nn.Linear(pred_dim, self.value_support.n_bins)

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_networks()
        for head in (self.reward_head, self.value_head):
            assert isinstance(head, nn.Linear | nn.Conv2d)
            nn.init.zeros_(head.weight)
            if head.bias is not None:
                nn.init.zeros_(head.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                hidden_dim=self.hidden_dim,
                net_arch=self.net_arch,
                value_support=self.value_support_spec,
                reward_support=self.reward_support_spec,
                value_transform_eps=self.value_transform_eps,
                activation_fn=self.activation_fn,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                normalize_images=self.normalize_images,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                lr_schedule=self._dummy_schedule,
            )
        )
        return data

    # -------------------------------------------------------------------------------------------- the three functions
    def encode_actions(self, hidden: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """One-hot actions to concatenate with a vector hidden state: [B] -> [B, A]."""
        return F.one_hot(actions.long(), self.n_actions).to(hidden.dtype)

    def representation(self, obs: PyTorchObs) -> th.Tensor:
        """
        h: observations -> hidden state s0, min-max scaled per sample.

        :param obs: observation batch (torch, as given by ``obs_to_tensor``)
        :return: [B, *hidden_shape]
        """
        features = self.extract_features(obs, self.features_extractor)
        return min_max_scale(self.representation_net(features))

    def dynamics(self, hidden: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        g: (s, a) -> (s', reward logits); s' min-max scaled per sample.

        :param hidden: [B, *hidden_shape]
        :param actions: [B] action indices
        :return: next hidden state [B, *hidden_shape], reward logits [B, reward bins]
        """
        trunk = self.dynamics_trunk(th.cat([hidden, self.encode_actions(hidden, actions)], dim=1))
        return min_max_scale(self.dynamics_state(trunk)), self.reward_head(trunk)

    def prediction(self, hidden: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        f: s -> (policy logits, value logits).

        :param hidden: [B, *hidden_shape]
        :return: policy logits [B, A], value logits [B, value bins]
        """
        trunk = self.prediction_trunk(hidden)
        return self.policy_head(trunk), self.value_head(trunk)

    def initial_inference(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        f(h(o)).

        :param obs: observation batch
        :return: hidden state, policy logits [B, A], value logits [B, value bins]
        """
        hidden = self.representation(obs)
        policy_logits, value_logits = self.prediction(hidden)
        return hidden, policy_logits, value_logits

    def recurrent_inference(self, hidden: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        g then f.

        :param hidden: [B, *hidden_shape]
        :param actions: [B]
        :return: next hidden state, reward logits, policy logits, value logits
        """
        next_hidden, reward_logits = self.dynamics(hidden, actions)
        policy_logits, value_logits = self.prediction(next_hidden)
        return next_hidden, reward_logits, policy_logits, value_logits

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Act on the prior of f(h(o)) alone, without search (``MuZero.predict`` searches)."""
        _, policy_logits, _ = self.initial_inference(observation)
        if deterministic:
            return policy_logits.argmax(dim=1)
        return th.distributions.Categorical(logits=policy_logits).sample()


class MuZeroCnnPolicy(ChannelsLastKernels, MuZeroPolicy):
    """
    MuZero networks with residual convolutional torsos (``"CnnPolicy"``), the paper's design at CPU-sized widths.

    Observations are 3-D ([C, H, W] or [H, W, C], e.g. stacked Atari frames or MinAtar grids). Frames of 32 pixels
    or more are first down-sampled 16x (the paper's Atari down-sampler: 96x96 -> 6x6); small grids are used at full
    resolution. The action enters the dynamics as one-hot planes. Hidden states are [channels, h, w], min-max
    scaled per sample.

    :param channels: channels of the hidden state (the paper: 256)
    :param n_blocks: residual blocks in each of representation, dynamics and prediction (the paper: 16)
    :param downsample: down-sample the frames (``None``: when their height is >= 32)
    :param downsample_blocks: residual blocks at the three resolutions of the down-sampler (the paper: 2, 3, 3)
    :param head_channels: channels of the 1x1 convolutions that feed the reward, value and policy heads
    :param head_hidden: hidden layer sizes of those heads
    :param channels_last: observations are [H, W, C] (``None``: guessed from the shape)
    :param kwargs: the rest of :class:`MuZeroPolicy`'s arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        channels: int = 32,
        n_blocks: int = 2,
        downsample: bool | None = None,
        downsample_blocks: tuple[int, int, int] = (1, 1, 1),
        head_channels: int = 16,
        head_hidden: list[int] | None = None,
        channels_last: bool | None = None,
        **kwargs: Any,
    ):
        self.channels = channels
        self.n_blocks = n_blocks
        self.downsample = downsample
        self.downsample_blocks = tuple(downsample_blocks)
        self.head_channels = head_channels
        self.head_hidden = [64] if head_hidden is None else list(head_hidden)
        self.channels_last = channels_last
        kwargs.setdefault("features_extractor_class", ImageExtractor)
        if kwargs["features_extractor_class"] is ImageExtractor:
            kwargs.setdefault("features_extractor_kwargs", {})
            kwargs["features_extractor_kwargs"] = {
                "channels_last": channels_last,
                **(kwargs["features_extractor_kwargs"] or {}),
            }
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_networks(self) -> None:
        extractor = self.make_features_extractor()
        if not isinstance(extractor, ImageExtractor):
            raise ValueError("MuZeroCnnPolicy needs an ImageExtractor-like features extractor returning [B, C, H, W]")
        self.features_extractor = extractor
        in_channels, height, width = extractor.image_shape
        down = height >= 32 if self.downsample is None else self.downsample
        c = self.channels
        if down:
            self.representation_net = nn.Sequential(DownSample(in_channels, c, self.downsample_blocks))
            height, width = DownSample.output_size(height), DownSample.output_size(width)
        else:
            self.representation_net = nn.Sequential(conv3x3(in_channels, c))
        self.representation_net.extend([ResidualBlock(c) for _ in range(self.n_blocks)])
        self.hidden_shape = (c, height, width)
        flat = self.head_channels * height * width

        self.dynamics_in = conv3x3(c + self.n_actions, c)
        self.dynamics_blocks = nn.Sequential(*[ResidualBlock(c) for _ in range(self.n_blocks)])
        self.reward_conv = nn.Conv2d(c, self.head_channels, kernel_size=1)
        self.reward_mlp = mlp(flat, self.head_hidden, None, self.activation_fn)
        head_dim = self.head_hidden[-1] if self.head_hidden else flat
        self.reward_head = nn.Linear(head_dim, self.reward_support.n_bins)

        self.prediction_blocks = nn.Sequential(*[ResidualBlock(c) for _ in range(self.n_blocks)])
        self.policy_conv = nn.Conv2d(c, self.head_channels, kernel_size=1)
        self.policy_mlp = mlp(flat, self.head_hidden, self.n_actions, self.activation_fn)
        self.value_conv = nn.Conv2d(c, self.head_channels, kernel_size=1)
        self.value_mlp = mlp(flat, self.head_hidden, None, self.activation_fn)
        self.value_head = nn.Linear(head_dim, self.value_support.n_bins)
        cpu_channels_last_weights(self)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                channels=self.channels,
                n_blocks=self.n_blocks,
                downsample=self.downsample,
                downsample_blocks=self.downsample_blocks,
                head_channels=self.head_channels,
                head_hidden=self.head_hidden,
                channels_last=self.channels_last,
            )
        )
        return data

    def encode_actions(self, hidden: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """One-hot action planes: [B] -> [B, A, h, w] (the paper tiles the one-hot action into planes)."""
        planes = F.one_hot(actions.long(), self.n_actions).to(hidden.dtype)
        return planes[:, :, None, None].expand(-1, -1, hidden.shape[2], hidden.shape[3])

    def representation(self, obs: PyTorchObs) -> th.Tensor:
        # Channels-last on the CPU (see cpu_channels_last); the convolutions, the hidden state and its gradient keep it.
        # [C, H, W] frames are reordered before the float conversion and /255 (which keep the layout): a quarter of
        # the bytes of uint8; [H, W, C] ones are channels-last once the extractor has permuted them.
        extractor = self.features_extractor
        if isinstance(obs, th.Tensor) and isinstance(extractor, ImageExtractor) and not extractor.channels_last:
            obs = cpu_channels_last(obs)
        features = self.extract_features(obs, extractor)
        return min_max_scale(self.representation_net(cpu_channels_last(features)))

    def dynamics(self, hidden: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        hidden = cpu_channels_last(hidden)  # the search hands over its stored states in the default layout
        x = cpu_channels_last(th.cat([hidden, self.encode_actions(hidden, actions)], dim=1))
        x = self.dynamics_blocks(hidden + self.dynamics_in(x))
        reward = self.reward_head(self.reward_mlp(th.relu(self.reward_conv(th.relu(x))).flatten(1)))
        return min_max_scale(x), reward

    def prediction(self, hidden: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        x = th.relu(self.prediction_blocks(hidden))
        policy_logits = self.policy_mlp(th.relu(self.policy_conv(x)).flatten(1))
        value_logits = self.value_head(self.value_mlp(th.relu(self.value_conv(x)).flatten(1)))
        return policy_logits, value_logits


class MuZeroMultiInputPolicy(MuZeroPolicy):
    """
    MuZero networks for Dict observation spaces (``"MultiInputPolicy"``): SB3's ``CombinedExtractor`` flattens and
    concatenates the entries (images through a small CNN), then the MLP torsos of :class:`MuZeroPolicy` follow.

    :param kwargs: :class:`MuZeroPolicy`'s arguments
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"MultiInputPolicy needs a Dict observation space, got {observation_space}")
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


MlpPolicy = MuZeroPolicy
CnnPolicy = MuZeroCnnPolicy
MultiInputPolicy = MuZeroMultiInputPolicy

__all__ = [
    "L2_COEF",
    "PAPER_SUPPORT",
    "CnnPolicy",
    "MlpPolicy",
    "MuZeroCnnPolicy",
    "MuZeroMultiInputPolicy",
    "MuZeroPolicy",
    "MultiInputPolicy",
    "get_action_dim",
    "make_support",
]
