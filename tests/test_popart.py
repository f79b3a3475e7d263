"""PopArt value head: ART statistics against brute force, POP output preservation, bounds, routing, save/load."""

import doctest
import math

import numpy as np
import pytest
import torch as th

import sb3_frontier.wrappers.popart as popart_module
from sb3_frontier.wrappers.popart import PopArt

th.set_num_threads(1)
F32_EPS = th.finfo(th.float32).eps


def linear_error_bound(features: th.Tensor, weight: th.Tensor, bias: th.Tensor) -> th.Tensor:
    """
    Bound on the difference between two float32 evaluations of w . x + b (any summation order, FMA or not).

    Each evaluation of the F products and F sums is within gamma_{F+1} (sum_i |w_i x_i| + |b|) of the exact
    value, gamma_n ~ n eps / 2 (Higham, Accuracy and Stability of Numerical Algorithms, Sec. 3.1), so two
    evaluations differ by at most (F + 1) eps of that magnitude. Shapes: features [..., F], weight [..., F],
    bias [...]; the bound is float64 [...].
    """
    magnitude = (features.double().abs() * weight.double().abs()).sum(-1) + bias.double().abs()
    return (features.shape[-1] + 1) * F32_EPS * magnitude


def assert_within(actual: th.Tensor, expected: th.Tensor, bound: th.Tensor) -> None:
    """Elementwise |actual - expected| <= bound, compared in float64."""
    error = (actual.double() - expected.double()).abs()
    assert bool((error <= bound).all()), f"max excess {float((error - bound).max())}"


def brute_force_ema(
    mu: list[float], nu: list[float], targets: th.Tensor, task_ids: th.Tensor, beta: float
) -> tuple[list[float], list[float]]:
    """The per-element EMAs of Hessel et al. (2018), one Python step per target in flattened order."""
    mu, nu = list(mu), list(nu)
    for x, k in zip(targets.reshape(-1).tolist(), task_ids.reshape(-1).tolist(), strict=True):
        mu[k] = (1.0 - beta) * mu[k] + beta * x
        nu[k] = (1.0 - beta) * nu[k] + beta * x * x
    return mu, nu


def expected_sigma(mu: list[float], nu: list[float], sigma_min: float, sigma_max: float) -> list[float]:
    """sigma = sqrt(clip(nu - mu^2, sigma_min^2, sigma_max^2)), with Python floats."""
    return [math.sqrt(min(max(n - m * m, sigma_min**2), sigma_max**2)) for m, n in zip(mu, nu, strict=True)]


# ---------------------------------------------------------------------------------------------------------------------
# POP: output preservation


def scale_jumping_targets(rng: np.random.Generator, n_updates: int, batch: int) -> list[th.Tensor]:
    """Batches whose scale jumps between 1e-2 and 1e4 every 20 updates, with a mean shift of several scales."""
    scales = [1e-2, 1e4, 1.0, 1e3, 1e-2, 1e2, 1e4, 1e-1, 10.0, 1e4]
    shifts = [0.0, 3.0, -5.0, 10.0, 1.0, -2.0, -8.0, 4.0, 0.5, 6.0]
    out = []
    for step in range(n_updates):
        block = (step // 20) % len(scales)
        x = scales[block] * (shifts[block] + rng.standard_normal(batch))
        out.append(th.as_tensor(x, dtype=th.float64))
    return out


def test_pop_preserves_unnormalized_outputs_float64() -> None:
    th.manual_seed(0)
    rng = np.random.default_rng(0)
    head = PopArt(16, beta=0.05).double()
    probes = th.randn(64, 16, dtype=th.float64)
    with th.no_grad():
        n0, v0 = head(probes)
    n_prev = n0
    sigmas = []
    for targets in scale_jumping_targets(rng, n_updates=200, batch=32):
        head.update(targets)
        with th.no_grad():
            n, v = head(probes)
        th.testing.assert_close(v, v0, rtol=1e-5, atol=0.0)  # unnormalised outputs unchanged after every update
        assert not th.allclose(n, n_prev, rtol=1e-6, atol=0.0)  # the normalised outputs do move
        th.testing.assert_close(v, head.sigma * n + head.mu, rtol=1e-12, atol=0.0)
        n_prev = n
        sigmas.append(float(head.sigma))
    assert max(sigmas) / min(sigmas) > 1e5  # the statistics really crossed orders of magnitude
    assert not th.allclose(n_prev, n0, rtol=1e-2)


def test_pop_preserves_unnormalized_outputs_float32() -> None:
    """With float32 parameters, each update keeps v(x) up to float32 rounding of the terms of sigma (w.x + b)."""
    th.manual_seed(1)
    rng = np.random.default_rng(1)
    head = PopArt(16, beta=0.05)
    probes = th.randn(64, 16)
    for targets in scale_jumping_targets(rng, n_updates=200, batch=32):
        with th.no_grad():
            _, v_before = head(probes)
            magnitude_before = head.sigma * (probes.abs() @ head.weight.abs().T + head.bias.abs()).double()
        head.update(targets.float())
        with th.no_grad():
            _, v_after = head(probes)
            magnitude_after = head.sigma * (probes.abs() @ head.weight.abs().T + head.bias.abs()).double()
        # float32 rounding of w.x + b is about 16 * 6e-8 of these magnitudes: 1e-5 leaves a 10x margin
        tolerance = 1e-5 * (v_before.abs().double() + magnitude_before + magnitude_after)
        assert bool(((v_after.double() - v_before.double()).abs() <= tolerance).all())


def test_pop_formula_single_update() -> None:
    """One update against the POP formula w' = sigma/sigma' w, b' = (sigma b + mu - mu')/sigma'."""
    head = PopArt(5, n_tasks=2, beta=0.3).double()
    head.update(th.tensor([[4.0, -1.0], [6.0, 2.0]], dtype=th.float64))
    w, b = head.weight.detach().clone(), head.bias.detach().clone()
    mu, sigma = head.mu.clone(), head.sigma.clone()
    head.update(th.tensor([[100.0, -30.0], [-50.0, 70.0]], dtype=th.float64))
    th.testing.assert_close(head.weight.detach(), sigma[:, None] / head.sigma[:, None] * w, rtol=1e-12, atol=0.0)
    th.testing.assert_close(head.bias.detach(), (sigma * b + mu - head.mu) / head.sigma, rtol=1e-12, atol=0.0)


# ---------------------------------------------------------------------------------------------------------------------
# ART: per-element statistics


@pytest.mark.parametrize("beta", [0.1, 3e-4, 1.0])
def test_art_matches_per_element_brute_force(beta: float) -> None:
    th.manual_seed(2)
    n_tasks = 3
    head = PopArt(4, n_tasks=n_tasks, beta=beta)
    mu, nu = [0.0] * n_tasks, [1.0] * n_tasks
    for step in range(4):
        targets = 10.0 * th.randn(5, 7, dtype=th.float64) + 3.0 * step  # [T, B]
        high = 2 if step == 0 else n_tasks  # the first batch has no targets for task 2
        task_ids = th.randint(0, high, (5, 7))  # interleaved task ids
        head.update(targets, task_ids)
        mu, nu = brute_force_ema(mu, nu, targets, task_ids, beta)
        th.testing.assert_close(head.mu, th.tensor(mu, dtype=th.float64), rtol=1e-12, atol=1e-12)
        th.testing.assert_close(head.nu, th.tensor(nu, dtype=th.float64), rtol=1e-12, atol=1e-12)
        sigma = expected_sigma(mu, nu, head.sigma_min, head.sigma_max)
        th.testing.assert_close(head.sigma, th.tensor(sigma, dtype=th.float64), rtol=1e-10, atol=0.0)
        if step == 0:
            assert head.mu[2] == 0.0 and head.nu[2] == 1.0 and head.sigma[2] == 1.0


def test_art_without_task_ids_uses_columns() -> None:
    """[..., n_tasks] targets: column k feeds task k, rows in order."""
    th.manual_seed(3)
    head = PopArt(4, n_tasks=3, beta=0.2)
    targets = 5.0 * th.randn(6, 4, 3, dtype=th.float64)  # [T, B, n_tasks]
    head.update(targets)
    task_ids = th.arange(3).expand(6, 4, 3)
    mu, nu = brute_force_ema([0.0] * 3, [1.0] * 3, targets, task_ids, 0.2)
    th.testing.assert_close(head.mu, th.tensor(mu, dtype=th.float64), rtol=1e-12, atol=1e-12)
    th.testing.assert_close(head.nu, th.tensor(nu, dtype=th.float64), rtol=1e-12, atol=1e-12)


def test_art_single_task_any_shape() -> None:
    head = PopArt(4, beta=0.1)
    targets = th.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # [T, B], float32 targets are accepted
    head.update(targets)
    mu, nu = brute_force_ema([0.0], [1.0], targets.double(), th.zeros(2, 3, dtype=th.long), 0.1)
    th.testing.assert_close(head.mu, th.tensor(mu, dtype=th.float64), rtol=1e-12, atol=0.0)
    th.testing.assert_close(head.nu, th.tensor(nu, dtype=th.float64), rtol=1e-12, atol=0.0)


def test_art_is_per_element_not_per_batch() -> None:
    """A batch of N equal targets moves mu by 1 - (1 - beta)^N of the way, not by beta."""
    beta, n = 3e-4, 640
    head = PopArt(4, beta=beta)
    head.update(th.full((20, 32), 10.0))
    assert float(head.mu) == pytest.approx(10.0 * (1.0 - (1.0 - beta) ** n), rel=1e-12)


def test_beta_one_keeps_last_target_of_each_task() -> None:
    head = PopArt(4, n_tasks=2, beta=1.0)
    head.update(th.tensor([1.0, 7.0, -2.0, 5.0]), th.tensor([0, 1, 0, 1]))
    assert head.mu.tolist() == [-2.0, 5.0]
    assert head.nu.tolist() == [4.0, 25.0]
    assert head.sigma.tolist() == [head.sigma_min, head.sigma_min]


# ---------------------------------------------------------------------------------------------------------------------
# sigma bounds


def test_sigma_min_for_constant_targets() -> None:
    head = PopArt(4, beta=0.5, sigma_min=1e-4)
    for _ in range(10):
        head.update(th.full((100,), 3.0))
    assert float(head.mu) == pytest.approx(3.0, rel=1e-12)
    assert float(head.sigma) == 1e-4


def test_sigma_max_for_enormous_spread() -> None:
    head = PopArt(4, beta=0.5, sigma_max=1e6)
    signs = th.tensor([1.0, -1.0]).repeat(50)
    head.update(1e9 * signs)
    assert float(head.nu) > 1e17  # the variance is ~1e18, beyond sigma_max^2 = 1e12
    assert float(head.sigma) == 1e6


# ---------------------------------------------------------------------------------------------------------------------
# multi-task routing and shapes


def test_updating_one_task_leaves_the_others_untouched() -> None:
    th.manual_seed(4)
    head = PopArt(8, n_tasks=3, beta=0.1)
    head.update(th.randn(10, 3))  # give every task non-trivial statistics first
    before = {name: t.detach().clone() for name, t in head.state_dict().items()}
    head.update(1000.0 * th.randn(32) + 500.0, th.ones(32, dtype=th.long))
    after = head.state_dict()
    for name in ("weight", "bias", "mu", "nu", "sigma"):
        assert th.equal(after[name][[0, 2]], before[name][[0, 2]]), name
        assert not th.equal(after[name][1], before[name][1]), name


def test_forward_with_task_ids_picks_the_task_output() -> None:
    th.manual_seed(5)
    head = PopArt(8, n_tasks=3, beta=0.1)
    head.update(th.tensor([[1.0, 100.0, -50.0], [3.0, 300.0, 20.0]]))
    features = th.randn(4, 6, 8)  # [T, B, in_features]
    task_ids = th.randint(0, 3, (4, 6))
    normalized, value = head(features, task_ids)
    assert normalized.shape == value.shape == (4, 6)
    # independent computation from the parameters and statistics
    w, b = head.weight.detach()[task_ids], head.bias.detach()[task_ids]  # [T, B, F], [T, B]
    expected_n = (features * w).sum(-1) + b
    expected_v = head.sigma[task_ids] * expected_n.double() + head.mu[task_ids]
    # two float32 evaluations of w . x + b (linear vs multiply-and-sum); the value adds sigma times that and
    # the rounding of sigma n + mu (computed in float64) to float32, eps / 2 of |v|
    bound_n = linear_error_bound(features, w, b)
    assert_within(normalized, expected_n, bound_n)
    assert_within(value, expected_v, head.sigma[task_ids] * bound_n + 0.5 * F32_EPS * expected_v.abs())
    all_n, all_v = head(features)  # [T, B, n_tasks]
    assert all_n.shape == all_v.shape == (4, 6, 3)
    th.testing.assert_close(normalized, all_n.gather(-1, task_ids.unsqueeze(-1)).squeeze(-1))
    th.testing.assert_close(value, all_v.gather(-1, task_ids.unsqueeze(-1)).squeeze(-1))


def test_single_task_shapes_keep_the_task_dimension() -> None:
    head = PopArt(8)
    normalized, value = head(th.randn(5, 8))
    assert normalized.shape == value.shape == (5, 1)
    normalized, value = head(th.randn(5, 8), th.zeros(5, dtype=th.long))
    assert normalized.shape == value.shape == (5,)


def test_normalize_and_unnormalize_are_inverse() -> None:
    th.manual_seed(6)
    head = PopArt(4, n_tasks=2, beta=0.2)
    head.update(th.tensor([[10.0, -1000.0], [30.0, 3000.0]], dtype=th.float64))
    targets = th.tensor([[20.0, 500.0], [0.0, -7.0]], dtype=th.float64)
    expected = (targets - head.mu) / head.sigma  # column k with task k's statistics
    th.testing.assert_close(head.normalize(targets), expected, rtol=1e-12, atol=0.0)
    th.testing.assert_close(head.unnormalize(head.normalize(targets)), targets, rtol=1e-12, atol=1e-12)
    ids = th.tensor([1, 0, 1])
    flat = th.tensor([500.0, 20.0, -7.0], dtype=th.float64)
    th.testing.assert_close(head.normalize(flat, ids), (flat - head.mu[ids]) / head.sigma[ids], rtol=1e-12, atol=0.0)
    th.testing.assert_close(head.unnormalize(flat, ids), head.sigma[ids] * flat + head.mu[ids], rtol=1e-12, atol=0.0)
    assert head.normalize(flat.float(), ids).dtype == th.float32


# ---------------------------------------------------------------------------------------------------------------------
# convergence on a stationary stream


def test_statistics_converge_on_a_stationary_stream() -> None:
    """
    After n >> 1/beta samples of N(m, s^2) the EMA mu is approximately N(m, beta/(2 - beta) s^2), and
    nu - mu^2 (an EMA of (x - m)^2 minus (mu - m)^2) has standard deviation s^2 sqrt(2 beta/(2 - beta)).
    The initial statistics keep a weight (1 - beta)^n = e^-30. Tolerances: 5 standard deviations.
    """
    m, s, beta, n, batch = 50.0, 7.0, 3e-4, 100_000, 1000
    gen = th.Generator().manual_seed(7)
    head = PopArt(4, beta=beta)
    for _ in range(n // batch):
        head.update(m + s * th.randn(batch, generator=gen, dtype=th.float64))
    mu_std = s * math.sqrt(beta / (2.0 - beta))  # ~0.086
    var_std = s**2 * math.sqrt(2.0 * beta / (2.0 - beta))  # ~0.85
    sigma_std = var_std / (2.0 * s)  # delta method, ~0.061
    assert abs(float(head.mu) - m) < 5.0 * mu_std
    assert abs(float(head.sigma) - s) < 5.0 * sigma_std


# ---------------------------------------------------------------------------------------------------------------------
# buffers, save/load, devices and dtypes, gradients, training


def test_statistics_are_buffers_saved_and_loaded(tmp_path) -> None:
    th.manual_seed(8)
    head = PopArt(8, n_tasks=2, beta=0.1)
    head.update(th.tensor([[5.0, 500.0], [9.0, -300.0]]))
    state = head.state_dict()
    assert set(state) == {"weight", "bias", "mu", "nu", "sigma"}
    assert {name for name, _ in head.named_buffers()} == {"mu", "nu", "sigma"}
    assert {name for name, _ in head.named_parameters()} == {"weight", "bias"}
    assert all(state[name].dtype == th.float64 for name in ("mu", "nu", "sigma"))

    path = tmp_path / "popart.pt"
    th.save(state, path)
    fresh = PopArt(8, n_tasks=2, beta=0.1)
    assert not th.equal(fresh.mu, head.mu)
    fresh.load_state_dict(th.load(path))
    for name, tensor in head.state_dict().items():
        assert th.equal(fresh.state_dict()[name], tensor), name
    features = th.randn(3, 8)
    th.testing.assert_close(fresh(features), head(features), rtol=0.0, atol=0.0)
    # later updates continue identically
    targets = th.tensor([[1.0, 2.0], [3.0, 4.0]])
    head.update(targets)
    fresh.update(targets)
    assert th.equal(fresh.mu, head.mu) and th.equal(fresh.weight, head.weight)


def test_to_dtype_and_device_move_everything() -> None:
    head = PopArt(8, n_tasks=2, beta=0.1)
    head.update(th.tensor([[5.0, 500.0], [9.0, -300.0]]))
    mu = head.mu.clone()
    head64 = head.to(th.float64)
    assert head64.weight.dtype == head64.bias.dtype == th.float64
    assert head64.mu.dtype == th.float64 and th.equal(head64.mu, mu)
    normalized, value = head64(th.randn(3, 8, dtype=th.float64))
    assert normalized.dtype == value.dtype == th.float64
    head_cpu = head64.to("cpu")
    assert head_cpu.mu.device.type == "cpu"
    buffers = {id(t) for t in head.buffers()}
    assert {id(head.mu), id(head.nu), id(head.sigma)} <= buffers


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    th.manual_seed(9)
    cpu = PopArt(8, n_tasks=3, beta=0.1)
    gpu = PopArt(8, n_tasks=3, beta=0.1)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.to("cuda")
    assert gpu.mu.device.type == "cuda" and gpu.mu.dtype == th.float64
    targets, ids = 100.0 * th.randn(64), th.randint(0, 3, (64,))
    cpu.update(targets, ids)
    gpu.update(targets.cuda(), ids.cuda())
    th.testing.assert_close(gpu.mu.cpu(), cpu.mu, rtol=1e-12, atol=0.0)
    # POP rescales in float64 on both devices and rounds once to float32 (eps / 2 each): at most one ulp apart
    assert_within(gpu.weight.detach().cpu(), cpu.weight.detach(), F32_EPS * cpu.weight.detach().double().abs())
    features = th.randn(16, 8)
    _, v_cpu = cpu(features, ids[:16])
    _, v_gpu = gpu(features.cuda(), ids[:16].cuda())
    # as in test_forward_with_task_ids_picks_the_task_output, with the final rounding on each device; the
    # weights themselves may differ by an ulp (eps |w_i x_i| more per term, at most one more bound's worth)
    with th.no_grad():
        w, b = cpu.weight[ids[:16]], cpu.bias[ids[:16]]
        bound = cpu.sigma[ids[:16]] * 2 * linear_error_bound(features, w, b) + F32_EPS * v_cpu.double().abs()
    assert_within(v_gpu.cpu(), v_cpu, bound)


def test_gradients_reach_parameters_not_statistics() -> None:
    head = PopArt(8, n_tasks=2)
    normalized, value = head(th.randn(4, 8), th.tensor([0, 1, 1, 0]))
    (normalized.sum() + value.sum()).backward()
    assert head.weight.grad is not None and head.bias.grad is not None
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    assert not any(t.requires_grad for t in head.buffers())
    assert all(t.grad is None for t in head.buffers())


def test_value_loss_on_normalized_targets_trains() -> None:
    """
    Interleaving update (ART + POP) and SGD on the normalised loss fits targets of scale 1e3 around 5e3.
    The targets are an exact linear function of the features, so gradient descent (lr 0.5 < 2 / L, L ~ 1.4
    for standard normal features plus the bias) converges geometrically to a zero loss.
    """
    th.manual_seed(10)
    features = th.randn(256, 8)
    w_true = th.randn(8)
    targets = 1000.0 * (features @ w_true) + 5000.0  # [256]
    head = PopArt(8, beta=0.05)
    optimizer = th.optim.SGD(head.parameters(), lr=0.5)
    losses = []
    for _ in range(40):
        head.update(targets)
        normalized, _ = head(features)
        loss = 0.5 * ((head.normalize(targets) - normalized.squeeze(-1)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-6 * losses[0]
    with th.no_grad():
        unnormalized_mse = float(((head(features)[1].squeeze(-1) - targets) ** 2).mean())
    assert unnormalized_mse < 1e-6 * float(targets.var())


def test_docstring_example_runs() -> None:
    results = doctest.testmod(popart_module)
    assert results.attempted > 0 and results.failed == 0


# ---------------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e200])
def test_non_finite_targets_raise_and_leave_everything_untouched(bad: float) -> None:
    head = PopArt(4, n_tasks=2, beta=0.1)
    head.update(th.tensor([[1.0, 2.0]]))
    before = {name: t.detach().clone() for name, t in head.state_dict().items()}
    targets = th.tensor([3.0, bad, 4.0], dtype=th.float64)
    with pytest.raises(ValueError, match=r"NaN|overflow"):
        head.update(targets, th.tensor([0, 1, 1]))
    for name, tensor in head.state_dict().items():
        assert th.equal(tensor, before[name]), name


def test_bad_task_ids_raise() -> None:
    head = PopArt(4, n_tasks=2)
    before = head.mu.clone()
    with pytest.raises(ValueError, match="task ids"):
        head.update(th.ones(3), th.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="task ids"):
        head.update(th.ones(3), th.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="integer"):
        head.update(th.ones(3), th.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        head.update(th.ones(3), th.tensor([0, 1]))
    with pytest.raises(ValueError, match="n_tasks"):
        head.update(th.ones(3, 3))  # no task ids and the last dimension is not n_tasks
    with pytest.raises(ValueError, match="task ids"):
        head(th.randn(3, 4), th.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="features"):
        head(th.randn(3, 5))
    with pytest.raises(ValueError, match="task ids"):
        head.normalize(th.ones(2), th.tensor([0, 3]))
    assert th.equal(head.mu, before)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": 0.0},
        {"beta": -0.1},
        {"beta": 1.5},
        {"beta": float("nan")},
        {"sigma_min": 0.0},
        {"sigma_min": -1.0},
        {"sigma_min": 2.0, "sigma_max": 1.0},
        {"sigma_min": 1.0, "sigma_max": 1.0},
        {"sigma_max": float("inf")},
        {"n_tasks": 0},
        {"n_tasks": 1.5},
        {"in_features": 0},
    ],
)
def test_bad_constructor_arguments_raise(kwargs: dict) -> None:
    args = {"in_features": 4, **kwargs}
    with pytest.raises(ValueError):
        PopArt(**args)


def test_fresh_head_is_identity_normalization() -> None:
    head = PopArt(4, n_tasks=2)
    assert head.mu.tolist() == [0.0, 0.0] and head.nu.tolist() == [1.0, 1.0] and head.sigma.tolist() == [1.0, 1.0]
    features = th.randn(3, 4)
    normalized, value = head(features)
    assert th.equal(normalized, value)
