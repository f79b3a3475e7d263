"""bfloat16 training (``training_precision="bfloat16"``): the unroll runs in bfloat16 in every thread that computes a
shard's gradient, the gradient matches float32's within bfloat16's precision, and the rest stays float32."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch as th

from sb3_frontier import MuZero
from sb3_frontier.algorithms.muzero.losses import muzero_loss
from sb3_frontier.common import precision
from sb3_frontier.common.precision import autocast, check_training_precision
from tests.muzero_helpers import cartpole_muzero, small_model

BF16_EPS = th.finfo(th.bfloat16).eps  # 2**-7: bfloat16 keeps 8 significant bits


def test_check_training_precision_names_and_warns_where_bfloat16_is_emulated(monkeypatch):
    assert check_training_precision("float32", th.device("cpu")) is None
    with pytest.raises(ValueError, match="training_precision must be one of"):
        check_training_precision("float16")
    with pytest.raises(ValueError, match="training_precision must be one of"):
        cartpole_muzero(training_precision="bf16")
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert cartpole_muzero(training_precision="bfloat16")._autocast_dtype is th.bfloat16


def test_autocast_runs_products_in_the_dtype_and_nothing_without_one():
    layer = th.nn.Linear(3, 2)
    x = th.ones(4, 3)
    with autocast(th.device("cpu"), th.bfloat16):
        assert layer(x).dtype == th.bfloat16
    with autocast(th.device("cpu"), None):
        assert layer(x).dtype == th.float32


@pytest.mark.parametrize("policy", ["MlpPolicy", "CnnPolicy"])
@pytest.mark.parametrize("seed", [0, 1])
def test_bfloat16_gradient_matches_float32_within_bfloat16_precision(policy: str, seed: int):
    model = small_model(policy, seed)
    batch = model.replay_buffer.sample(16, np.random.default_rng(seed), 1.0)
    value_targets = batch.value_targets(model._bootstrap_values(batch, None))
    params = [param for param in model.policy.parameters() if param.requires_grad]

    def gradient(dtype):
        model.policy.zero_grad()
        losses, root_values = muzero_loss(model.policy, batch, value_targets, autocast_dtype=dtype)
        assert all(part.dtype == th.float32 for part in losses.values()) and root_values.dtype == np.float32
        losses["loss"].backward()
        assert all(param.grad is not None and param.grad.dtype == th.float32 for param in params)
        return th.cat([param.grad.flatten() for param in params]), losses["loss"].item()

    exact, exact_loss = gradient(None)
    rounded, rounded_loss = gradient(th.bfloat16)
    error = float((rounded - exact).norm() / exact.norm())
    # Every product reads its operands rounded to bfloat16 (relative error up to eps/2 each) and accumulates in
    # float32; the roundings are independent, so on a fresh network the gradient's relative error is of order eps/2
    # per layer in series (measured on seeds 0-2: 0.45 eps for the MLP, 0.3-1.2 eps for the CNN's residual torsos
    # unrolled five steps). 4 eps bounds it; a forward pass left in float32 would give exactly 0.
    assert 0.0 < error < 4 * BF16_EPS
    assert rounded_loss == pytest.approx(exact_loss, rel=4 * BF16_EPS)


@pytest.mark.parametrize("gradient_threads", [1, 2])
@pytest.mark.parametrize("training_precision", ["float32", "bfloat16"])
def test_every_gradient_thread_trains_in_the_chosen_precision(gradient_threads: int, training_precision: str):
    threads = th.get_num_threads()
    th.set_num_threads(1)  # one torch thread per gradient thread
    try:
        check_every_gradient_thread(gradient_threads, training_precision)
    finally:
        th.set_num_threads(threads)


def check_every_gradient_thread(gradient_threads: int, training_precision: str) -> None:
    model = cartpole_muzero(learning_starts=64, gradient_threads=gradient_threads, training_precision=training_precision)
    seen: set[tuple[int, th.dtype]] = set()

    def record(module, inputs, output):
        if th.is_grad_enabled():  # the training unroll, not the search
            seen.add((threading.get_ident(), output.dtype))

    for module in model.policy.modules():
        if isinstance(module, th.nn.Linear):
            module.register_forward_hook(record)
    model.learn(100)
    assert model._n_updates > 0
    dtype = th.bfloat16 if training_precision == "bfloat16" else th.float32
    assert {dt for _, dt in seen} == {dtype}
    assert len({thread for thread, _ in seen}) == gradient_threads
    assert all(param.dtype == th.float32 for param in model.policy.parameters())
    assert all(
        value.dtype == th.float32
        for state in model.policy.optimizer.state.values()
        for value in state.values()
        if isinstance(value, th.Tensor) and value.is_floating_point()
    )


def test_training_precision_is_saved_with_the_model(tmp_path):
    model = cartpole_muzero(training_precision="bfloat16")
    model.save(tmp_path / "model")
    loaded = MuZero.load(tmp_path / "model")
    assert loaded.training_precision == "bfloat16" and loaded._autocast_dtype is th.bfloat16
