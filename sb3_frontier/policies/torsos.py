"""Network building blocks shared by our agents' policies: MLPs, residual blocks, the MuZero down-sampler."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """
    A multilayer perceptron ``in_dim -> hidden... -> out_dim`` with ``activation`` between layers.

    :param in_dim: input features
    :param hidden: sizes of the hidden layers (each followed by the activation)
    :param out_dim: output features of a last linear layer, or ``None`` to end with the last hidden layer
    :param activation: activation class
    :return: the network
    """
    layers: list[nn.Module] = []
    last = in_dim
    for size in hidden:
        layers += [nn.Linear(last, size), activation()]
        last = size
    if out_dim is not None:
        layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


def min_max_scale(hidden: th.Tensor, eps: float = 1e-5) -> th.Tensor:
    """
    Scale each sample's hidden state to [0, 1] over all its features (MuZero, Appendix G: "we scale the hidden
    state to the same range as the action input"). Per sample, never across the batch. Any memory format is kept
    (a channels-last state stays channels-last); tied extremes share the gradient of the minimum or maximum.

    :param hidden: [B, ...] hidden states
    :param eps: guard against a constant hidden state
    :return: [B, ...] scaled states
    """
    features = tuple(range(1, hidden.dim()))
    low = hidden.amin(dim=features, keepdim=True)
    high = hidden.amax(dim=features, keepdim=True)
    return (hidden - low) / (high - low + eps)  # keeps the memory format (channels-last images stay so)


class ScaleGradient(th.autograd.Function):
    """Identity forward, gradient multiplied by ``scale`` backward (MuZero's ``scale_gradient``)."""

    @staticmethod
    def forward(ctx, x: th.Tensor, scale: float) -> th.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: th.Tensor) -> tuple[th.Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def scale_gradient(x: th.Tensor, scale: float) -> th.Tensor:
    """
    Leave ``x`` unchanged but scale the gradient flowing back through it.

    :param x: any tensor
    :param scale: gradient multiplier (MuZero uses 1/2 for the hidden state entering the dynamics)
    :return: ``x``
    """
    return ScaleGradient.apply(x, scale)


def cpu_channels_last(x: th.Tensor) -> th.Tensor:
    """
    An image batch in the channels-last memory format when it lives on the CPU (the same values, another layout).

    oneDNN, PyTorch's CPU convolution backend, computes NHWC convolutions without reordering their inputs into its
    blocked layout and back: on the small convolutions of our torsos that is up to 3x faster (forward and backward)
    than NCHW. Convolutions keep the layout of their input, so converting a torso's input once is enough. Other
    devices keep their default layout.

    :param x: [B, C, H, W]
    :return: ``x`` itself if it is not on the CPU or already channels-last, else a channels-last copy
    """
    return x.contiguous(memory_format=th.channels_last) if x.is_cpu else x


def cpu_channels_last_weights(module: nn.Module) -> None:
    """
    Lay out ``module``'s convolution kernels (its 4-D parameters) channels-last where they live on the CPU, and in the
    default layout elsewhere, in place (the same Parameter objects, so an optimizer built on them still holds them).

    A channels-last input (:func:`cpu_channels_last`) convolved with a default-layout kernel makes PyTorch copy the
    kernel into the input's layout at every call, forward and backward: in a search of small batches those copies
    are a tenth of the network's time.

    :param module: the network
    """
    for parameter in module.parameters():
        if parameter.dim() != 4:
            continue
        layout = th.channels_last if parameter.is_cpu else th.contiguous_format
        if not parameter.is_contiguous(memory_format=layout):
            parameter.data = parameter.data.contiguous(memory_format=layout)


class ChannelsLastKernels(nn.Module):
    """
    Mixin for networks whose convolutions read channels-last inputs on the CPU (:func:`cpu_channels_last`): every
    move or cast (``.to(device)``, ``.cpu()``, ``share_memory()``) goes through ``_apply``, which then re-lays the
    kernels for the device they landed on (:func:`cpu_channels_last_weights`). A network using it also calls that
    function once its convolutions are built (a policy constructed on the CPU and never moved).
    """

    def _apply(self, fn: Callable[[th.Tensor], th.Tensor], recurse: bool = True) -> ChannelsLastKernels:
        super()._apply(fn, recurse)
        cpu_channels_last_weights(self)
        return self


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with padding 1."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


class ResidualBlock(nn.Module):
    """
    A pre-activation residual block: ``x + conv(relu(conv(relu(x))))`` (no normalisation layers, so the network
    behaves the same in training and search whatever the batch size).

    :param channels: channels in and out
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.conv2(th.relu(self.conv1(th.relu(x))))


class DownSample(nn.Module):
    """
    MuZero's Atari down-sampler (Appendix F), with configurable widths: conv stride 2 -> ``c`` channels,
    residual blocks, conv stride 2 -> ``2c``, residual blocks, average pool stride 2, residual blocks, average pool
    stride 2. A 96x96 frame becomes 6x6 (the paper: c=128, 2/3/3 blocks).

    :param in_channels: input channels (stacked frames)
    :param channels: output channels (``2c`` above)
    :param n_blocks: residual blocks at each of the three resolutions
    """

    def __init__(self, in_channels: int, channels: int, n_blocks: Sequence[int] = (1, 1, 1)):
        super().__init__()
        half = max(1, channels // 2)
        self.net = nn.Sequential(
            conv3x3(in_channels, half, stride=2),
            *[ResidualBlock(half) for _ in range(n_blocks[0])],
            conv3x3(half, channels, stride=2),
            *[ResidualBlock(channels) for _ in range(n_blocks[1])],
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
            *[ResidualBlock(channels) for _ in range(n_blocks[2])],
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return self.net(x)

    @staticmethod
    def output_size(size: int) -> int:
        """Spatial size after the down-sampler for an input of ``size`` (each of the four stages halves it)."""
        for _ in range(4):
            size = (size - 1) // 2 + 1
        return size


def is_channels_last(space: spaces.Box) -> bool:
    """
    Whether a 3-D observation space is channel-last ([H, W, C]): the smallest dimension is the last one
    (SB3's heuristic for images, applied to any 3-D Box).

    :param space: a 3-D Box
    :return: ``True`` for [H, W, C]
    """
    shape = space.shape
    assert len(shape) == 3
    return int(np.argmin(shape)) == 2 and shape[2] < shape[0]


class ImageExtractor(BaseFeaturesExtractor):
    """
    Keeps a 3-D observation as an image [C, H, W] (SB3's preprocessing, i.e. /255 for uint8 images, is done
    before): transposes channel-last inputs so that any 3-D Box (ALE frames, MinAtar's boolean [10, 10, C] grids)
    can feed a convolutional torso.

    :param observation_space: a 3-D Box
    :param channels_last: whether observations are [H, W, C] (``None``: guess from the shape)
    """

    def __init__(self, observation_space: spaces.Box, channels_last: bool | None = None):
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(
                f"CnnPolicy needs a 3-D Box observation space ([C, H, W] or [H, W, C]), got {observation_space}; "
                "use MlpPolicy for vectors or MultiInputPolicy for Dict spaces"
            )
        self.channels_last = is_channels_last(observation_space) if channels_last is None else channels_last
        shape = observation_space.shape
        self.image_shape = (shape[2], shape[0], shape[1]) if self.channels_last else tuple(shape)
        super().__init__(observation_space, features_dim=int(np.prod(shape)))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        if self.channels_last:
            observations = observations.permute(0, 3, 1, 2)
        return observations.float()


class ImpalaCnn(BaseFeaturesExtractor):
    """
    IMPALA's deep residual torso (Espeholt et al. 2018, Fig. 3): three stages of a 3x3 convolution, a 3x3 max-pool
    of stride 2 and two residual blocks (16, 32, 32 channels), then ReLU and a linear layer to ``features_dim``.

    Observations are images ([C, H, W] or [H, W, C], preprocessed by SB3: /255 for uint8); the pooling halves the
    spatial size three times, so small grids (MinAtar's 10x10) work as well as Atari frames.

    :param observation_space: a 3-D Box
    :param features_dim: output features (256 in the paper)
    :param channels: channels of the three stages
    :param channels_last: whether observations are [H, W, C] (``None``: guess from the shape)
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        features_dim: int = 256,
        channels: Sequence[int] = (16, 32, 32),
        channels_last: bool | None = None,
    ):
        image = ImageExtractor(observation_space, channels_last)
        super().__init__(observation_space, features_dim)
        self.image = image
        layers: list[nn.Module] = []
        in_channels, size_h, size_w = image.image_shape
        for out_channels in channels:
            layers += [
                conv3x3(in_channels, out_channels),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
                ResidualBlock(out_channels),
                ResidualBlock(out_channels),
            ]
            in_channels = out_channels
            size_h, size_w = (size_h - 1) // 2 + 1, (size_w - 1) // 2 + 1
        layers += [nn.ReLU(), nn.Flatten()]
        self.cnn = nn.Sequential(*layers)
        self.linear = nn.Sequential(nn.Linear(in_channels * size_h * size_w, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(self.image(observations)))
