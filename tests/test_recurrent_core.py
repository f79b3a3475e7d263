"""The recurrent core shared by R2D2 and PopArt-IMPALA: images reach the convolutions channels-last on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from sb3_frontier.policies.popart_impala import PopArtIMPALAPolicy
from sb3_frontier.policies.recurrent import scaled_obs


def constant_lr(_: float) -> float:
    return 1e-3


@pytest.mark.parametrize(
    ("torso", "shape", "dtype"),
    [
        ("nature", (4, 84, 84), np.uint8),  # Atari frames, [C, H, W]
        ("impala", (4, 84, 84), np.uint8),
        ("impala", (10, 10, 6), np.bool_),  # MinAtar boards, [H, W, C]: IMPALA's CNN transposes them itself
    ],
)
def test_images_enter_the_convolutions_channels_last_with_the_same_features(torso, shape, dtype):
    space = spaces.Box(0, 255 if dtype == np.uint8 else 1, shape, dtype)
    policy = PopArtIMPALAPolicy(space, spaces.Discrete(3), constant_lr, torso=torso)
    first_conv = next(m for m in policy.torso.modules() if isinstance(m, th.nn.Conv2d))
    layouts = []
    first_conv.register_forward_pre_hook(lambda _, args: layouts.append(args[0].is_contiguous(memory_format=th.channels_last)))
    obs = th.as_tensor(np.stack([space.sample() for _ in range(6)])).reshape(2, 3, *shape)  # [T, B, ...]
    features = policy.core_inputs(obs)
    assert layouts == [True]
    kernels = [param for param in policy.parameters() if param.dim() == 4]
    assert kernels and all(k.is_contiguous(memory_format=th.channels_last) for k in kernels)  # no copy per call
    assert features.shape == (2, 3, policy.torso_dim)

    # The same features through the torso in the default layout (float32 rounding of a different summation order).
    plain = preprocess_obs(obs.reshape(6, *shape), space).contiguous()
    if torso == "nature":
        assert plain.is_contiguous() and not plain.is_contiguous(memory_format=th.channels_last)
    reference = policy.torso(plain).reshape(2, 3, -1)
    scale = float(reference.abs().max()) + 1.0
    th.testing.assert_close(features, reference, atol=1e3 * th.finfo(th.float32).eps * scale, rtol=0)


def test_vector_observations_are_left_alone():
    space = spaces.Box(-1, 1, (4,), np.float32)
    policy = PopArtIMPALAPolicy(space, spaces.Discrete(2), constant_lr)
    assert not policy.channels_first_images
    assert policy.core_inputs(th.zeros(5, 4)).shape == (5, policy.torso_dim)


def test_scaled_obs_is_sb3_preprocessing_without_touching_the_frames():
    rng = np.random.default_rng(0)
    image = spaces.Box(0, 255, (4, 8, 8), np.uint8)
    frames = th.as_tensor(rng.integers(0, 256, (3, 4, 8, 8), dtype=np.uint8))
    before = frames.clone()
    assert th.equal(scaled_obs(frames, image, True), preprocess_obs(frames, image, normalize_images=True))
    assert th.equal(frames, before)
    assert th.equal(scaled_obs(frames, image, False), preprocess_obs(frames, image, normalize_images=False))
    vector = spaces.Box(-1, 1, (3,))
    x = th.randn(5, 3)
    assert th.equal(scaled_obs(x, vector, True), preprocess_obs(x, vector, normalize_images=True))
