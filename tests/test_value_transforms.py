"""Tests for the value rescaling h of Pohlen et al. 2018 and the two-hot categorical support of MuZero."""

import math
import pickle
import re

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import softmax

from sb3_frontier.wrappers.value_transforms import CategoricalSupport, ValueRescaling

torch.set_num_threads(1)

EPSILONS = [0.0, 1e-3, 1e-2, 1.0]
F32_EPS = float(np.finfo(np.float32).eps)
# h and h^-1 take at most ~8 roundings (abs, +, sqrt, +, /, *, + ...), each <= eps/2 relative, amplified at
# most 2x by the conditioning of the steps after it (h^-1 is close to y^2 or y/eps): <= 8 eps relative
FORMULA_ULPS = 8
HYP = settings(deadline=None, max_examples=100)


# ----------------------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------------------


def textbook_h(x: np.ndarray | float, eps: float) -> np.ndarray:
    """h exactly as printed by Pohlen et al. (eq. 3), evaluated directly (cancellation near 0 included)."""
    return np.sign(x) * (np.sqrt(np.abs(x) + 1.0) - 1.0) + eps * np.asarray(x)


def mp_h(x: float, eps: float) -> mpmath.mpf:
    """h in high precision, textbook form; the working precision grows with 1/|x| so sqrt(|x|+1)-1 keeps its digits."""
    with mpmath.workdps(40 + max(0, -math.floor(math.log10(abs(x)))) if x != 0 else 40):
        v = mpmath.mpf(x)
        return mpmath.sign(v) * (mpmath.sqrt(abs(v) + 1) - 1) + mpmath.mpf(eps) * v


def mp_h_inv(y: float, eps: float) -> mpmath.mpf:
    """h^-1 in high precision, the closed form of Pohlen et al. (Prop. A.2) as printed (eps = 0: its limit)."""
    with mpmath.workdps(60 + max(0, -math.floor(math.log10(abs(y)))) if y != 0 else 60):
        v, e = mpmath.mpf(y), mpmath.mpf(eps)
        if eps == 0.0:
            return mpmath.sign(v) * ((abs(v) + 1) ** 2 - 1)
        return mpmath.sign(v) * (((mpmath.sqrt(1 + 4 * e * (abs(v) + 1 + e)) - 1) / (2 * e)) ** 2 - 1)


def root_find_h_inv(y: float, eps: float) -> float:
    """h^-1(y) by Brent's method on the textbook h: |h^-1(y)| <= (|y| + 1)^2 - 1 brackets the root."""
    bound = (abs(y) + 1.0) ** 2
    return brentq(lambda x: float(textbook_h(x, eps)) - y, -bound, bound, xtol=1e-300, rtol=4 * np.finfo(float).eps)


def brute_force_two_hot(values: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Two-hot by a loop over elements: clamp, find the nearest atom by argmin, pick the neighbour on v's side."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    out = np.zeros((flat.size, atoms.size))
    for i, v in enumerate(flat):
        v = min(max(v, atoms[0]), atoms[-1])
        k = int(np.argmin(np.abs(atoms - v)))
        if atoms[k] == v:
            out[i, k] = 1.0
            continue
        lo = k if atoms[k] < v else k - 1
        hi = lo + 1
        # solve p_lo + p_hi = 1, p_lo z_lo + p_hi z_hi = v
        p_hi = (v - atoms[lo]) / (atoms[hi] - atoms[lo])
        out[i, lo], out[i, hi] = 1.0 - p_hi, p_hi
    return out.reshape((*np.shape(values), atoms.size))


# ----------------------------------------------------------------------------------------------------------
# ValueRescaling
# ----------------------------------------------------------------------------------------------------------

xs = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
eps_st = st.sampled_from(EPSILONS)


@HYP
@given(x=xs, eps=eps_st)
def test_inverse_of_transform_is_identity(x: float, eps: float) -> None:
    r = ValueRescaling(eps)
    back = r.inverse(r.transform(np.float64(x)))
    assert abs(back - x) <= 1e-12 * abs(x) + 1e-300
    # the same through arrays and through torch
    arr = np.array([x, -x, 0.5 * x])
    np.testing.assert_allclose(r.inverse(r.transform(arr)), arr, rtol=1e-12, atol=1e-300)
    t = torch.tensor(arr, dtype=torch.float64)
    np.testing.assert_allclose(r.inverse(r.transform(t)).numpy(), arr, rtol=1e-12, atol=1e-300)


@HYP
@given(y=st.floats(min_value=-3e3, max_value=3e3, allow_nan=False), eps=eps_st)
def test_transform_of_inverse_is_identity(y: float, eps: float) -> None:
    r = ValueRescaling(eps)
    back = r.transform(r.inverse(np.float64(y)))
    assert abs(back - y) <= 1e-12 * abs(y) + 1e-300


@pytest.mark.parametrize("eps", EPSILONS)
def test_transform_matches_textbook_formula(eps: float) -> None:
    mags = np.logspace(-12, 6, 200)
    x = np.concatenate([-mags[::-1], [0.0], mags])
    # the textbook form loses ~1e-16 absolute to cancellation near 0, hence the absolute floor
    np.testing.assert_allclose(ValueRescaling(eps).transform(x), textbook_h(x, eps), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("eps", EPSILONS)
def test_inverse_matches_pohlen_closed_form(eps: float) -> None:
    # away from 0 the printed closed form has no cancellation and can be evaluated in float64 directly
    y = np.concatenate([-np.logspace(0, 3.3, 50), np.logspace(0, 3.3, 50)])
    if eps == 0.0:
        expected = np.sign(y) * ((np.abs(y) + 1.0) ** 2 - 1.0)
    else:
        expected = np.sign(y) * (((np.sqrt(1 + 4 * eps * (np.abs(y) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1)
    np.testing.assert_allclose(ValueRescaling(eps).inverse(y), expected, rtol=1e-9)


@pytest.mark.parametrize("eps", EPSILONS)
def test_high_precision_agreement_including_tiny_values(eps: float) -> None:
    """Relative error of a few ulp everywhere, down to |x| = 1e-30: no cancellation near 0 in either direction."""
    r = ValueRescaling(eps)
    mags = np.logspace(-30, 6, 73)
    for x in np.concatenate([-mags, mags]):
        ref_h = mp_h(float(x), eps)
        assert abs(float((mpmath.mpf(r.transform(float(x))) - ref_h) / ref_h)) < 1e-14
    for y in np.concatenate([-np.logspace(-30, 3.3, 67), np.logspace(-30, 3.3, 67)]):
        ref_inv = mp_h_inv(float(y), eps)
        assert abs(float((mpmath.mpf(r.inverse(float(y))) - ref_inv) / ref_inv)) < 1e-14


@settings(deadline=None, max_examples=50)
@given(magnitude=st.floats(min_value=1e-6, max_value=2e3), negative=st.booleans(), eps=eps_st)
def test_inverse_matches_root_find(magnitude: float, negative: bool, eps: float) -> None:
    # below ~1e-6 the textbook h that brentq inverts is dominated by its cancellation error (the tiny values
    # are covered by the high-precision test above)
    y = -magnitude if negative else magnitude
    expected = root_find_h_inv(y, eps)
    got = ValueRescaling(eps).inverse(y)
    # the textbook h that brentq inverts is itself ~1e-16 off near 0, which the inverse scales by ~2
    assert abs(got - expected) <= 1e-10 * abs(expected) + 1e-15


@HYP
@given(a=xs, b=xs, eps=eps_st)
def test_transform_is_odd_and_increasing(a: float, b: float, eps: float) -> None:
    r = ValueRescaling(eps)
    assert r.transform(-a) == -r.transform(a)
    assert r.inverse(-a / 1e3) == -r.inverse(a / 1e3)
    lo, hi = min(a, b), max(a, b)
    assert r.transform(lo) <= r.transform(hi)
    assert r.inverse(lo / 1e3) <= r.inverse(hi / 1e3)
    # strictly increasing once the gap is resolvable in float64 (h' >= min(eps, 1 / (2 sqrt(1e6 + 1))))
    if hi - lo > 1e-9 * (1.0 + abs(lo) + abs(hi)):
        assert r.transform(lo) < r.transform(hi)


def test_strictly_increasing_on_dense_grid() -> None:
    x = np.concatenate([-np.logspace(6, -8, 5000), [0.0], np.logspace(-8, 6, 5000)])
    for eps in EPSILONS:
        r = ValueRescaling(eps)
        assert np.all(np.diff(r.transform(x)) > 0)
        assert np.all(np.diff(r.inverse(r.transform(x))) > 0)


def test_eps_term_outside_the_bracket() -> None:
    """h(+-3) = +-(sqrt(4) - 1 + 3 eps); the MuZero appendix's typo sign(x)(sqrt(|x|+1) - 1 + eps x) gives -(1 - 3 eps)."""
    eps = 1e-3
    r = ValueRescaling(eps)
    assert r.transform(3.0) == pytest.approx(1.0 + 3 * eps, rel=1e-15)
    assert r.transform(-3.0) == pytest.approx(-(1.0 + 3 * eps), rel=1e-15)
    assert r.inverse(1.0 + 3 * eps) == pytest.approx(3.0, rel=1e-14)
    assert r.inverse(-(1.0 + 3 * eps)) == pytest.approx(-3.0, rel=1e-14)


def test_eps_zero_closed_form() -> None:
    r = ValueRescaling(0.0)
    y = np.linspace(-50.0, 50.0, 101)
    np.testing.assert_allclose(r.inverse(y), np.sign(y) * ((np.abs(y) + 1.0) ** 2 - 1.0), rtol=1e-14, atol=0)
    x = np.array([0.0, 3.0, 8.0, 15.0, -24.0])  # sqrt(|x| + 1) is an integer
    np.testing.assert_array_equal(r.transform(x), np.sign(x) * (np.sqrt(np.abs(x) + 1.0) - 1.0))


@pytest.mark.parametrize("bad", [-1e-3, -1.0, float("nan"), float("inf")])
def test_bad_eps_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="eps"):
        ValueRescaling(bad)


def test_repr_and_equality() -> None:
    assert repr(ValueRescaling(0.25)) == "ValueRescaling(eps=0.25)"
    assert "0.001" in repr(ValueRescaling())
    assert ValueRescaling(1e-3) == ValueRescaling()
    assert ValueRescaling(1e-3) != ValueRescaling(1e-2)


@pytest.mark.parametrize("shape", [(), (7,), (4, 3, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_types_dtypes_shapes_and_backend_agreement(shape: tuple[int, ...], dtype: str) -> None:
    r = ValueRescaling(1e-3)
    rng = np.random.default_rng(0)
    x_np = np.asarray(rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 5, shape), dtype=dtype)
    x_t = torch.from_numpy(x_np.copy())
    for fn_name in ("transform", "inverse"):
        out_np = getattr(r, fn_name)(x_np)
        out_t = getattr(r, fn_name)(x_t)
        assert isinstance(out_np, np.ndarray) and out_np.dtype == np.dtype(dtype) and out_np.shape == shape
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == getattr(torch, dtype) and tuple(out_t.shape) == shape
        assert out_t.device == x_t.device
        # the same elementwise formula in both backends, each within FORMULA_ULPS eps of the exact value
        # (torch's vectorised kernels may round differently from numpy's), so within twice that of each other
        rtol = 2 * FORMULA_ULPS * float(np.finfo(dtype).eps)
        np.testing.assert_allclose(out_t.numpy(), out_np, rtol=rtol, atol=0)
        # float32 results are float32-accurate against the float64 computation (itself ~1e-16 accurate)
        ref = getattr(r, fn_name)(x_np.astype(np.float64))
        np.testing.assert_allclose(out_np, ref, rtol=FORMULA_ULPS * float(np.finfo(dtype).eps))


def test_scalar_types() -> None:
    r = ValueRescaling(1e-3)
    assert type(r.transform(3.0)) is float and type(r.inverse(1.0)) is float
    assert type(r.transform(3)) is float  # Python int -> float
    out32 = r.transform(np.float32(3.0))
    assert isinstance(out32, np.float32)
    assert isinstance(r.inverse(np.float64(1.0)), np.float64)
    out = r.transform(np.array(3.0))
    assert isinstance(out, np.ndarray) and out.shape == ()
    ints = r.transform(np.arange(-3, 4))
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, textbook_h(np.arange(-3.0, 4.0), 1e-3), rtol=1e-14)
    assert r.transform(torch.arange(-3, 4)).dtype == torch.get_default_dtype()
    lst = r.transform([1.0, -2.0])
    assert isinstance(lst, np.ndarray) and lst.shape == (2,)
    with pytest.raises(TypeError):
        r.transform(np.array([1 + 1j]))


@pytest.mark.parametrize("eps", EPSILONS)
def test_autograd_gradient_at_zero(eps: float) -> None:
    r = ValueRescaling(eps)
    # expected derivatives from central differences on the high-precision textbook formulas
    with mpmath.workdps(50):
        dh0 = float(mpmath.diff(lambda v: _mp_h_exact(v, eps), 0))
        dhinv0 = float(mpmath.diff(lambda v: _mp_h_inv_exact(v, eps), 0))
    assert dh0 == pytest.approx(0.5 + eps, rel=1e-12)
    assert dhinv0 == pytest.approx(2.0 / (1.0 + 2.0 * eps), rel=1e-12)
    for dtype in (torch.float32, torch.float64):
        # the derivatives at 0 are 1 / (1 + 1) + eps and 2 / (1 + 1 + 2 eps): a few roundings in ``dtype``
        rel = FORMULA_ULPS * torch.finfo(dtype).eps
        x = torch.zeros((), dtype=dtype, requires_grad=True)
        (g,) = torch.autograd.grad(r.transform(x), x)
        assert g.item() == pytest.approx(dh0, rel=rel)
        y = torch.zeros((), dtype=dtype, requires_grad=True)
        (g,) = torch.autograd.grad(r.inverse(y), y)
        assert g.item() == pytest.approx(dhinv0, rel=rel)


def _mp_h_exact(v: mpmath.mpf, eps: float) -> mpmath.mpf:
    return mpmath.sign(v) * (mpmath.sqrt(abs(v) + 1) - 1) + mpmath.mpf(eps) * v


def _mp_h_inv_exact(v: mpmath.mpf, eps: float) -> mpmath.mpf:
    e = mpmath.mpf(eps)
    if eps == 0.0:
        return mpmath.sign(v) * ((abs(v) + 1) ** 2 - 1)
    return mpmath.sign(v) * (((mpmath.sqrt(1 + 4 * e * (abs(v) + 1 + e)) - 1) / (2 * e)) ** 2 - 1)


@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_autograd_gradients_finite_and_correct_everywhere(eps: float) -> None:
    r = ValueRescaling(eps)
    mags = np.array([1e-300, 1e-30, 1e-8, 1e-3, 0.5, 1.0, 3.0, 1e2, 1e4, 1e6])
    grid = np.concatenate([-mags[::-1], [0.0, -0.0], mags])
    for fn, mp_fn in ((r.transform, _mp_h_exact), (r.inverse, _mp_h_inv_exact)):
        x = torch.tensor(grid, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fn(x).sum(), x)
        assert torch.isfinite(g).all()
        with mpmath.workdps(50):
            expected = [float(mpmath.diff(lambda v, f=mp_fn: f(v, eps), mpmath.mpf(float(v)))) for v in grid]
        np.testing.assert_allclose(g.numpy(), expected, rtol=1e-9)
        x32 = torch.tensor(grid, dtype=torch.float32, requires_grad=True)
        (g32,) = torch.autograd.grad(fn(x32).sum(), x32)
        assert torch.isfinite(g32).all()


@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.3])
def test_gradcheck(eps: float) -> None:
    r = ValueRescaling(eps)
    x = torch.tensor([-50.0, -2.0, -0.3, 0.0, 1e-4, 0.7, 4.0, 100.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(r.transform, (x,))
    assert torch.autograd.gradcheck(r.inverse, (x,))
    assert torch.autograd.gradgradcheck(r.transform, (x[x != 0].detach().requires_grad_(),))


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("fn_name", ["transform", "inverse"])
def test_infinities_map_to_infinities(eps: float, fn_name: str) -> None:
    """h(+-inf) = h^-1(+-inf) = +-inf exactly (the closed forms alone give inf / inf = NaN), in every backend."""
    fn = getattr(ValueRescaling(eps), fn_name)
    inf = float("inf")
    assert fn(inf) == inf and fn(-inf) == -inf and type(fn(inf)) is float
    out32 = fn(np.float32(-inf))
    assert isinstance(out32, np.float32) and out32 == -inf
    finite = np.array([-2.0, -1e-3, 0.0, 0.5, 3.0])
    for dtype in ("float32", "float64"):
        x = np.concatenate([[-inf], finite, [inf]]).astype(dtype)
        with np.errstate(all="raise"):  # no inf / inf computed on the way
            out = fn(x)
        assert out.dtype == np.dtype(dtype)
        assert out[0] == -inf and out[-1] == inf
        np.testing.assert_array_equal(out[1:-1], fn(x[1:-1]))  # the finite elements are untouched
        t = torch.tensor(x, requires_grad=True)
        out_t = fn(t)
        assert out_t.dtype == getattr(torch, dtype)
        assert out_t[0].item() == -inf and out_t[-1].item() == inf
        torch.testing.assert_close(out_t[1:-1], fn(torch.tensor(x[1:-1])), rtol=0, atol=0)
        # gradients: 0 at +-inf, and those of the finite elements alone everywhere else
        (g,) = torch.autograd.grad(out_t.sum(), t)
        t_finite = torch.tensor(x[1:-1], requires_grad=True)
        (g_finite,) = torch.autograd.grad(fn(t_finite).sum(), t_finite)
        assert torch.isfinite(g).all()
        assert g[0].item() == 0.0 and g[-1].item() == 0.0
        torch.testing.assert_close(g[1:-1], g_finite, rtol=0, atol=0)


def test_nan_stays_nan() -> None:
    r = ValueRescaling()
    assert math.isnan(r.transform(float("nan"))) and math.isnan(r.inverse(float("nan")))
    out = r.transform(np.array([1.0, np.nan, np.inf]))
    assert out[0] == r.transform(1.0) and np.isnan(out[1]) and out[2] == np.inf
    assert torch.isnan(r.inverse(torch.tensor([np.nan]))).all()


# ----------------------------------------------------------------------------------------------------------
# CategoricalSupport
# ----------------------------------------------------------------------------------------------------------

SUPPORTS = [
    pytest.param((-300.0, 300.0, 601, ValueRescaling(1e-3)), id="muzero-601-h"),
    pytest.param((-300.0, 300.0, 601, None), id="601-identity"),
    pytest.param((-10.0, 10.0, 11, None), id="step2"),
    pytest.param((-10.0, 10.0, 11, ValueRescaling(1e-3)), id="step2-h"),
    pytest.param((-1.0, 2.3, 7, None), id="step0.55"),
    pytest.param((-1.0, 2.3, 7, ValueRescaling(0.0)), id="step0.55-h0"),
    pytest.param((0.0, 1.0, 2, None), id="two-bins"),
    pytest.param((-5.0, 5.0, 21, ValueRescaling(0.5)), id="step0.5-h"),
]


def make_support(args: tuple) -> CategoricalSupport:
    return CategoricalSupport(*args)


def inner_range(s: CategoricalSupport) -> tuple[float, float]:
    """The range of raw values whose transformed value lies inside [vmin, vmax]."""
    if s.transform is None:
        return s.vmin, s.vmax
    return float(s.transform.inverse(s.vmin)), float(s.transform.inverse(s.vmax))


def support_scale(s: CategoricalSupport) -> float:
    """Largest |atom|: the scale of the transformed values, of their rounding and of the sums p_i z_i."""
    return max(abs(s.vmin), abs(s.vmax))


def encode_agreement_tol(s: CategoricalSupport, dtype: str) -> float:
    """
    Largest difference between two correct two-hot encodings (numpy and torch) of the same input.

    The projection runs in float64 in both: v = h(x) is off by a few float64 ulps of |v| <= scale (each
    backend rounds its own way), which moves a weight (v - z_lo) / step by ~4 eps64 scale / step; the weights
    are then rounded once to ``dtype``, which may round such a hair on either side of a ``dtype`` number:
    one ulp of 1 (weights lie in [0, 1]), twice for margin.
    """
    return 2 * float(np.finfo(dtype).eps) + 4 * float(np.finfo(np.float64).eps) * support_scale(s) / s.step


def decode_error_bound(s: CategoricalSupport, d: np.ndarray, dtype: str) -> np.ndarray:
    """
    Bound on the rounding error of ``decode`` in ``dtype`` at decoded values ``d`` (elementwise).

    The expectation p_lo z_lo + p_hi z_hi (two non-zero terms; the probabilities themselves are rounded to
    ``dtype``) is off by at most ~3 eps scale in the transformed space; h^-1 multiplies that by its slope
    1 / h'(d), with h'(x) = 1 / (2 sqrt(|x| + 1)) + eps_h, and adds its own ~8 roundings, 8 eps |d|.
    """
    eps = float(np.finfo(dtype).eps)
    d = np.abs(np.asarray(d, dtype=np.float64))
    slope = 1.0 if s.transform is None else 1.0 / (0.5 / np.sqrt(d + 1.0) + s.transform.eps)
    return eps * (4.0 * support_scale(s) * slope + 8.0 * d)


@pytest.mark.parametrize("args", SUPPORTS)
def test_atoms_and_step(args: tuple) -> None:
    s = make_support(args)
    vmin, vmax, n, transform = args
    np.testing.assert_array_equal(s.atoms, np.linspace(vmin, vmax, n))
    assert s.atoms.dtype == np.float64 and s.atoms.shape == (n,)
    assert s.step == pytest.approx(s.atoms[1] - s.atoms[0], rel=1e-12)
    assert (s.vmin, s.vmax, s.n_bins, s.transform) == (vmin, vmax, n, transform)
    with pytest.raises(ValueError):
        s.atoms[0] = 123.0  # read-only


def test_muzero_default_step_and_steps_other_than_one() -> None:
    assert CategoricalSupport(-300, 300, 601).step == 1.0
    assert CategoricalSupport(-10, 10, 11).step == 2.0
    assert CategoricalSupport(-1.0, 2.3, 7).step == pytest.approx(0.55)


def assert_two_hot(p: np.ndarray) -> None:
    """Rows sum to 1, non-negative, at most two non-zero entries and those adjacent."""
    flat = p.reshape(-1, p.shape[-1])
    assert np.all(flat >= 0)
    np.testing.assert_allclose(flat.sum(-1), 1.0, rtol=0, atol=1e-12)
    for row in flat:
        nz = np.flatnonzero(row)
        assert 1 <= nz.size <= 2
        if nz.size == 2:
            assert nz[1] == nz[0] + 1


@pytest.mark.parametrize("args", SUPPORTS)
@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_encode_is_two_hot_and_matches_brute_force(args: tuple, data: st.DataObject) -> None:
    s = make_support(args)
    x = np.array(data.draw(st.lists(st.floats(-1e7, 1e7, allow_nan=False), min_size=1, max_size=12)))
    p = s.encode(x)
    assert p.shape == (x.size, s.n_bins) and p.dtype == np.float64
    assert_two_hot(p)
    v = x if s.transform is None else textbook_h(x, s.transform.eps)
    np.testing.assert_allclose(p, brute_force_two_hot(v, s.atoms), rtol=0, atol=1e-9)


@pytest.mark.parametrize("args", SUPPORTS)
@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_decode_encode_roundtrip_inside_range(args: tuple, data: st.DataObject) -> None:
    s = make_support(args)
    lo, hi = inner_range(s)
    x = np.array(data.draw(st.lists(st.floats(lo, hi, allow_nan=False), min_size=1, max_size=12)))
    back = s.decode(s.encode(x))
    assert back.shape == x.shape and back.dtype == np.float64
    # exact up to the rounding of one two-term sum of atoms of size ~max|atom|
    scale = max(abs(s.vmin), abs(s.vmax))
    np.testing.assert_allclose(back, x, rtol=1e-10, atol=1e-13 * scale)


@pytest.mark.parametrize("args", SUPPORTS)
def test_value_on_an_atom_is_one_hot(args: tuple) -> None:
    vmin, vmax, n, _ = args
    s = CategoricalSupport(vmin, vmax, n)  # no transform, so the atoms themselves are representable inputs
    np.testing.assert_array_equal(s.encode(s.atoms), np.eye(n))
    np.testing.assert_array_equal(s.encode(torch.from_numpy(s.atoms.copy())).numpy(), np.eye(n))


@pytest.mark.parametrize("args", SUPPORTS)
def test_out_of_range_clamps_to_end_bins(args: tuple) -> None:
    s = make_support(args)
    lo, hi = inner_range(s)
    x = np.array([hi + 1.0, 10 * abs(hi) + 5.0, 1e12, lo - 1.0, -10 * abs(lo) - 5.0, -1e12])
    p = s.encode(x)
    last, first = np.eye(s.n_bins)[-1], np.eye(s.n_bins)[0]
    np.testing.assert_array_equal(p[:3], np.stack([last] * 3))
    np.testing.assert_array_equal(p[3:], np.stack([first] * 3))
    np.testing.assert_allclose(s.decode(p), [hi] * 3 + [lo] * 3, rtol=1e-12)
    pt = s.encode(torch.tensor(x))
    np.testing.assert_array_equal(pt.numpy(), p)


@pytest.mark.parametrize("args", SUPPORTS)
@pytest.mark.parametrize("shape", [(), (5,), (4, 3, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_torch_agree_dtypes_shapes(args: tuple, shape: tuple[int, ...], dtype: str) -> None:
    s = make_support(args)
    lo, hi = inner_range(s)
    rng = np.random.default_rng(1)
    x = np.asarray(rng.uniform(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), size=shape), dtype=dtype)
    p_np = s.encode(x)
    p_t = s.encode(torch.from_numpy(x.copy()))
    assert isinstance(p_np, np.ndarray) and p_np.dtype == np.dtype(dtype) and p_np.shape == (*shape, s.n_bins)
    assert isinstance(p_t, torch.Tensor) and p_t.dtype == getattr(torch, dtype) and tuple(p_t.shape) == (*shape, s.n_bins)
    np.testing.assert_allclose(p_t.numpy(), p_np, rtol=0, atol=encode_agreement_tol(s, dtype))
    d_np = s.decode(p_np)
    d_t = s.decode(p_t)
    assert isinstance(d_np, np.ndarray) and d_np.dtype == np.dtype(dtype) and d_np.shape == shape
    assert isinstance(d_t, torch.Tensor) and d_t.dtype == getattr(torch, dtype) and tuple(d_t.shape) == shape
    # each backend decodes within decode_error_bound of the exact value, so they differ by at most twice that
    diff = np.abs(d_t.numpy().astype(np.float64) - d_np)
    assert np.all(diff <= 2.0 * decode_error_bound(s, d_np, dtype))
    # decode(encode(x)) is as accurate as the dtype allows, against the float64 clamp of x
    expected = np.clip(x.astype(np.float64), lo, hi)
    assert np.all(np.abs(d_np - expected) <= decode_error_bound(s, expected, dtype))


@pytest.mark.parametrize("args", SUPPORTS)
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_narrow_dtypes_encode_in_float64(args: tuple, dtype: str) -> None:
    """float16/float32 inputs are projected in float64; only the probabilities are rounded to the input dtype."""
    s = make_support(args)
    lo, hi = inner_range(s)
    x = np.random.default_rng(5).uniform(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), size=500)
    x = np.clip(x, -np.finfo(dtype).max, np.finfo(dtype).max).astype(dtype)  # h^-1(300) is near float16's max
    expected = s.encode(x.astype(np.float64)).astype(dtype)
    np.testing.assert_array_equal(s.encode(x), expected)
    # torch evaluates h in float64 too, possibly an ulp of |v| away from numpy, which can flip a final rounding
    got_t = s.encode(torch.from_numpy(x.copy()))
    assert got_t.dtype == getattr(torch, dtype)
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=0, atol=encode_agreement_tol(s, dtype))


@pytest.mark.parametrize("args", SUPPORTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_encode_infinities_clamp_to_end_bins(args: tuple, dtype: str) -> None:
    s = make_support(args)
    x = np.array([np.inf, -np.inf, 1.0, np.inf], dtype=dtype)
    eye = np.eye(s.n_bins, dtype=dtype)
    p = s.encode(x)
    np.testing.assert_array_equal(p[[0, 1, 3]], eye[[-1, 0, -1]])
    np.testing.assert_array_equal(p[2], s.encode(x[2:3])[0])
    np.testing.assert_array_equal(s.encode(torch.from_numpy(x.copy())).numpy(), p)
    np.testing.assert_array_equal(s.encode(x.dtype.type(-np.inf)), eye[0])
    lo, hi = inner_range(s)
    np.testing.assert_allclose(s.decode(p[[0, 1]]), [hi, lo], rtol=FORMULA_ULPS * float(np.finfo(dtype).eps))
    assert s.fraction_clipped(x) == 0.75


@pytest.mark.parametrize("transform", [None, ValueRescaling()])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(
    ("values", "first", "count"),
    [
        (np.float64(np.nan), (), 1),
        (np.array([np.nan, 1.0, 2.0]), (0,), 1),
        (np.array([1.0, np.nan, 2.0]), (1,), 1),
        (np.array([1.0, 2.0, np.nan]), (2,), 1),
        (np.array([[1.0, np.inf, 0.0], [-2.0, np.nan, np.nan]], dtype=np.float32), (1, 1), 2),
    ],
)
def test_encode_nan_raises(
    transform: ValueRescaling | None, backend: str, values: np.ndarray, first: tuple[int, ...], count: int
) -> None:
    s = CategoricalSupport(-10.0, 10.0, 11, transform)
    x = torch.from_numpy(np.array(values)) if backend == "torch" else values
    with pytest.raises(ValueError, match=rf"NaN in {count} of .*first at index {re.escape(str(first))}"):
        s.encode(x)


def test_encode_nan_raises_for_python_values() -> None:
    s = CategoricalSupport(-10.0, 10.0, 11)
    with pytest.raises(ValueError, match="NaN"):
        s.encode(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        s.encode([0.0, float("nan")])


def test_python_and_numpy_scalars() -> None:
    s = CategoricalSupport(-10.0, 10.0, 11, ValueRescaling())
    p = s.encode(2.5)
    assert isinstance(p, np.ndarray) and p.shape == (11,) and p.dtype == np.float64
    p32 = s.encode(np.float32(2.5))
    assert p32.dtype == np.float32 and p32.shape == (11,)
    back = s.decode(p)
    assert isinstance(back, np.ndarray) and back.shape == ()
    assert float(back) == pytest.approx(2.5, rel=1e-12)
    assert s.encode([1.0, 2.0]).shape == (2, 11)
    assert s.encode(np.arange(3)).dtype == np.float64


@pytest.mark.parametrize("args", SUPPORTS)
def test_decode_logits_is_decode_of_softmax(args: tuple) -> None:
    s = make_support(args)
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(4, 3, s.n_bins))
    expected = s.decode(softmax(logits, axis=-1))
    np.testing.assert_allclose(s.decode_logits(logits), expected, rtol=1e-12, atol=1e-12)
    got_t = s.decode_logits(torch.from_numpy(logits))
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=1e-12, atol=1e-12)
    # huge logits do not overflow: a logit far above the rest is a one-hot on its atom
    big = np.full((2, s.n_bins), -1e4)
    big[0, 0], big[1, -1] = 1e4, 1e4
    lo, hi = inner_range(s)
    np.testing.assert_allclose(s.decode_logits(big), [lo, hi], rtol=1e-12)
    # float32: softmax gives an exact one-hot; the end atom (vmax = 2.3 is not a float32 number) and h^-1 round
    np.testing.assert_allclose(
        s.decode_logits(torch.from_numpy(big).float()).numpy(), [lo, hi], rtol=FORMULA_ULPS * F32_EPS, atol=0
    )


@pytest.mark.parametrize("args", SUPPORTS)
def test_fraction_clipped(args: tuple) -> None:
    s = make_support(args)
    rng = np.random.default_rng(3)
    lo, hi = inner_range(s)
    x = rng.uniform(lo - (hi - lo), hi + (hi - lo), size=(50, 4))
    eps = None if s.transform is None else s.transform.eps
    expected = (
        sum(1 for v in x.reshape(-1) if not s.vmin <= (v if eps is None else float(textbook_h(v, eps))) <= s.vmax) / x.size
    )
    assert 0.0 < expected < 1.0
    assert s.fraction_clipped(x) == pytest.approx(expected, abs=1e-15)
    assert s.fraction_clipped(torch.from_numpy(x)) == pytest.approx(expected, abs=1e-15)
    # float32: rounding x and h(x) moves values by a few float32 ulps; none of these lies that close to a bound
    # (checked), so the count is exact
    x32 = x.astype(np.float32)
    v32 = x32.astype(np.float64) if s.transform is None else textbook_h(x32.astype(np.float64), eps)
    near = 4 * FORMULA_ULPS * F32_EPS * support_scale(s)
    assert np.all((np.abs(v32 - s.vmin) > near) & (np.abs(v32 - s.vmax) > near))
    assert s.fraction_clipped(x32) == pytest.approx(expected, abs=1e-15)
    # the ends of the range (pulled in by 1e-12 relative, as h(h^-1(vmax)) may round a hair above vmax) are not clipped
    assert s.fraction_clipped(np.array([lo, hi, 0.5 * (lo + hi)]) * (1.0 - 1e-12)) == 0.0
    assert s.fraction_clipped(np.array([])) == 0.0
    assert s.fraction_clipped(torch.zeros(0)) == 0.0
    assert isinstance(s.fraction_clipped(x), float)


def test_fraction_clipped_flags_a_support_too_small_for_the_rewards() -> None:
    s = CategoricalSupport(-1.0, 1.0, 21)  # fine for clipped Atari rewards, too small for raw scores
    assert s.fraction_clipped(np.array([0.0, 1.0, -1.0, 0.5])) == 0.0
    assert s.fraction_clipped(np.array([0.0, 100.0, -1.0, 7.0])) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vmin": -1.0, "vmax": 1.0, "n_bins": 1}, "n_bins"),
        ({"vmin": -1.0, "vmax": 1.0, "n_bins": 0}, "n_bins"),
        ({"vmin": -1.0, "vmax": 1.0, "n_bins": -5}, "n_bins"),
        ({"vmin": -1.0, "vmax": 1.0, "n_bins": 2.5}, "n_bins"),
        ({"vmin": -1.0, "vmax": 1.0, "n_bins": True}, "n_bins"),
        ({"vmin": 1.0, "vmax": 1.0, "n_bins": 5}, "vmin < vmax"),
        ({"vmin": 2.0, "vmax": 1.0, "n_bins": 5}, "vmin < vmax"),
        ({"vmin": -float("inf"), "vmax": 1.0, "n_bins": 5}, "finite"),
        ({"vmin": 0.0, "vmax": float("nan"), "n_bins": 5}, "finite"),
    ],
)
def test_bad_support_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CategoricalSupport(**kwargs)


def test_bad_transform_and_bad_shapes_raise() -> None:
    with pytest.raises(TypeError, match="ValueRescaling"):
        CategoricalSupport(-1.0, 1.0, 5, transform=lambda x: x)  # type: ignore[arg-type]
    s = CategoricalSupport(-1.0, 1.0, 5)
    assert CategoricalSupport(-1.0, 1.0, np.int64(5)).n_bins == 5
    for bad in (np.ones((3, 4)) / 4, np.float64(1.0), np.ones(6) / 6):
        with pytest.raises(ValueError, match=r"\[\.\.\., 5\]"):
            s.decode(bad)
        with pytest.raises(ValueError, match=r"\[\.\.\., 5\]"):
            s.decode_logits(bad)
    with pytest.raises(ValueError, match=r"\[\.\.\., 5\]"):
        s.decode(torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"\[\.\.\., 5\]"):
        s.decode_logits(torch.ones(3, 4))


def test_torch_atoms_cached_per_dtype_and_dropped_by_pickle() -> None:
    s = CategoricalSupport(-300.0, 300.0, 601, ValueRescaling())
    cpu = torch.device("cpu")
    a32 = s._torch_atoms(cpu, torch.float32)
    assert s._torch_atoms(cpu, torch.float32) is a32
    a64 = s._torch_atoms(cpu, torch.float64)
    assert a64 is not a32 and a64.dtype == torch.float64
    np.testing.assert_array_equal(a64.numpy(), s.atoms)
    x = torch.tensor([0.0, 3.0, -1234.5], dtype=torch.float64)
    p = s.encode(x)
    clone = pickle.loads(pickle.dumps(s))
    assert clone._atoms_cache == {}
    assert repr(clone) == repr(s)
    np.testing.assert_array_equal(clone.encode(x).numpy(), p.numpy())
    with pytest.raises(ValueError):
        clone.atoms[0] = 0.0


def test_repr() -> None:
    s = CategoricalSupport(-300.0, 300.0, 601, ValueRescaling(1e-3))
    assert repr(s) == "CategoricalSupport(vmin=-300.0, vmax=300.0, n_bins=601, transform=ValueRescaling(eps=0.001))"


def test_gradient_through_decode_logits() -> None:
    s = CategoricalSupport(-10.0, 10.0, 11, ValueRescaling())
    logits = torch.randn(3, 11, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(s.decode_logits, (logits,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_preserved() -> None:
    s = CategoricalSupport(-300.0, 300.0, 601, ValueRescaling())
    x = torch.linspace(-1e4, 1e4, 1001, device="cuda")
    p = s.encode(x)
    assert p.device == x.device and p.dtype == x.dtype
    np.testing.assert_allclose(p.cpu().numpy(), s.encode(x.cpu().numpy()), rtol=0, atol=encode_agreement_tol(s, "float32"))
    back = s.decode(p)
    assert back.device == x.device
    back_cpu = s.decode(s.encode(x.cpu().numpy()))
    # each device decodes within decode_error_bound of the exact value, so they differ by at most twice that
    assert np.all(np.abs(back.cpu().numpy().astype(np.float64) - back_cpu) <= 2.0 * decode_error_bound(s, back_cpu, "float32"))
    assert s.fraction_clipped(x) == s.fraction_clipped(x.cpu())
