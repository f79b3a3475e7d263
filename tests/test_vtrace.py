"""Tests for the V-trace targets of IMPALA (Espeholt et al. 2018, Sec. 4) against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch as th

from sb3_frontier.algorithms.popart_impala.vtrace import VTraceReturns, vtrace

SHAPES = [(1, 1), (1, 5), (2, 3), (7, 4), (20, 8), (50, 3)]
# (rho_bar, c_bar, pg_rho_bar, lam): IMPALA's defaults, no clipping at all, rho_bar < c_bar, lam = 0, lam < 1 ...
HYPERPARAMETERS = [
    (1.0, 1.0, 1.0, 1.0),
    (None, None, None, 1.0),
    (2.0, 0.5, 1.5, 0.9),
    (0.5, 2.0, None, 0.0),
    (1.0, 1.0, 1.0, 0.5),
    (None, 1.0, 0.8, 1.0),
]
EPS = {th.float64: float(np.finfo(np.float64).eps), th.float32: float(np.finfo(np.float32).eps)}


# ----------------------------------------------------------------------------------------------------------
# Random problems and independent references (float64 numpy, straight from the paper's definitions)
# ----------------------------------------------------------------------------------------------------------


def random_problem(rng: np.random.Generator, T: int, B: int, p_terminate: float = 0.15) -> dict[str, np.ndarray]:
    """
    A random batch of unrolls: log-ratios mostly moderate, a fifth of them large (|log pi/mu| ~ 3-5, so every
    truncation level is active somewhere), per-step discounts in {0.9, 0.99}, and terminations (discount 0).
    """
    behaviour = -rng.uniform(0.05, 3.0, size=(T, B))
    log_ratios = rng.normal(0.0, 0.7, size=(T, B))
    large = rng.random((T, B)) < 0.2
    log_ratios[large] = rng.choice([-1.0, 1.0], size=int(large.sum())) * rng.uniform(3.0, 5.0, size=int(large.sum()))
    discounts = rng.choice([0.9, 0.99], size=(T, B))
    discounts[rng.random((T, B)) < p_terminate] = 0.0
    return {
        "behaviour_log_probs": behaviour,
        "target_log_probs": behaviour + log_ratios,
        "rewards": rng.normal(0.0, 1.0, size=(T, B)),
        "discounts": discounts,
        "values": rng.normal(0.0, 2.0, size=(T, B)),
        "bootstrap_value": rng.normal(0.0, 2.0, size=(B,)),
    }


def clip(x: np.ndarray, bar: float | None) -> np.ndarray:
    return x if bar is None else np.minimum(bar, x)


def brute_force_vtrace(
    p: dict[str, np.ndarray], rho_bar: float | None, c_bar: float | None, pg_rho_bar: float | None, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    The O(T^2) definition, float64: v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} d_i c_i) delta_t (Sec. 4.1, eq. 1
    with gamma^{t-s} generalised to per-step discounts), A_s = min(pg_rho_bar, pi/mu)(r_s + d_s v_{s+1} - V(x_s)).

    Also returns the same sums with every term replaced by its absolute value (bounds on the magnitudes of the
    intermediate quantities, from which the rounding tolerances are derived).

    :return: vs, pg_advantages, vs_scale, pg_scale, all [T, B]
    """
    blp, tlp = (np.asarray(p[k], dtype=np.float64) for k in ("behaviour_log_probs", "target_log_probs"))
    r, d, v = (np.asarray(p[k], dtype=np.float64) for k in ("rewards", "discounts", "values"))
    boot = np.asarray(p["bootstrap_value"], dtype=np.float64)
    T = v.shape[0]
    ratio = np.exp(tlp - blp)
    rho, c, pg_rho = clip(ratio, rho_bar), lam * clip(ratio, c_bar), clip(ratio, pg_rho_bar)
    v_next = np.concatenate([v[1:], boot[None]], axis=0)
    delta = rho * (r + d * v_next - v)
    delta_abs = rho * (np.abs(r) + d * np.abs(v_next) + np.abs(v))
    vs = v.copy()
    vs_scale = np.abs(v)
    for s in range(T):
        for t in range(s, T):
            coef = np.prod(d[s:t] * c[s:t], axis=0)  # empty product = 1 at t = s
            vs[s] += coef * delta[t]
            vs_scale[s] += coef * delta_abs[t]
    vs_next = np.concatenate([vs[1:], boot[None]], axis=0)
    vs_next_scale = np.concatenate([vs_scale[1:], np.abs(boot)[None]], axis=0)
    pg = pg_rho * (r + d * vs_next - v)
    pg_scale = pg_rho * (np.abs(r) + d * vs_next_scale + np.abs(v))
    return vs, pg, vs_scale, pg_scale


def tolerance(p: dict[str, np.ndarray], scale: np.ndarray, eps: float) -> np.ndarray:
    """
    Rounding bound for the recursion in a floating type of unit roundoff ``eps``.

    Each of the T steps of the backward recursion adds a few roundings (relative eps each) on quantities bounded by
    ``scale`` (the sum of absolute values of the terms), and every ratio exp(target - behaviour) carries a relative
    error of about eps (|target| + |behaviour| + 1) from the rounding of the log-probabilities and their difference,
    compounded along a trace of at most T factors. So the error is at most ~ 8 (T + 2) (1 + max|log-probs|) eps *
    scale; a wrong formula misses by O(scale) instead.
    """
    T = p["values"].shape[0]
    log_mag = float(np.max(np.abs(p["behaviour_log_probs"]) + np.abs(p["target_log_probs"])))
    return 8.0 * (T + 2) * (1.0 + log_mag) * eps * scale + 1e-300


def hp(hyper: tuple) -> dict:
    """(rho_bar, c_bar, pg_rho_bar, lam) as keyword arguments."""
    return dict(zip(("rho_bar", "c_bar", "pg_rho_bar", "lam"), hyper, strict=True))


def to_torch(p: dict[str, np.ndarray], dtype: th.dtype) -> dict[str, th.Tensor]:
    return {k: th.as_tensor(x, dtype=dtype) for k, x in p.items()}


def rounded_to(p: dict[str, np.ndarray], dtype: th.dtype) -> dict[str, np.ndarray]:
    """The problem as the dtype sees it (inputs rounded), back in float64 for the reference."""
    return {k: th.as_tensor(x, dtype=dtype).double().numpy() for k, x in p.items()}


# ----------------------------------------------------------------------------------------------------------
# 1. Against the brute-force definition
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [th.float64, th.float32])
@pytest.mark.parametrize("hyper", HYPERPARAMETERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_brute_force(shape: tuple[int, int], hyper: tuple, dtype: th.dtype) -> None:
    T, B = shape
    rho_bar, c_bar, pg_rho_bar, lam = hyper
    rng = np.random.default_rng(1000 * T + B)
    p = random_problem(rng, T, B)
    out = vtrace(**to_torch(p, dtype), rho_bar=rho_bar, c_bar=c_bar, pg_rho_bar=pg_rho_bar, lam=lam)
    assert isinstance(out, VTraceReturns)
    assert out.vs.dtype == dtype and out.pg_advantages.dtype == dtype
    assert out.vs.shape == (T, B) and out.pg_advantages.shape == (T, B)

    # Reference on the inputs as rounded to `dtype`, so the comparison measures only the arithmetic of vtrace:
    # in float64 the tolerance is derived from float64's eps, in float32 from float32's eps, in both times the
    # scale (sum of absolute values of the terms) of each return.
    ref = rounded_to(p, dtype)
    vs, pg, vs_scale, pg_scale = brute_force_vtrace(ref, rho_bar, c_bar, pg_rho_bar, lam)
    vs_tol = tolerance(ref, vs_scale, EPS[dtype])
    pg_tol = tolerance(ref, pg_scale, EPS[dtype])
    np.testing.assert_array_less(np.abs(out.vs.double().numpy() - vs), vs_tol)
    np.testing.assert_array_less(np.abs(out.pg_advantages.double().numpy() - pg), pg_tol)


def test_random_problems_exercise_clipping_and_terminations() -> None:
    """The random data of the brute-force test makes every truncation level and the termination cut matter."""
    p = random_problem(np.random.default_rng(2050), 50, 3)
    ratio = np.exp(p["target_log_probs"] - p["behaviour_log_probs"])
    for bar in (0.5, 0.8, 1.0, 1.5, 2.0):
        assert (ratio > bar).any() and (ratio < bar).any()
    assert (p["discounts"] == 0).any() and (p["discounts"] > 0).any()
    # and clipping changes the answer: the clipped and unclipped targets differ
    clipped = vtrace(**to_torch(p, th.float64))
    unclipped = vtrace(**to_torch(p, th.float64), rho_bar=None, c_bar=None, pg_rho_bar=None)
    assert not th.allclose(clipped.vs, unclipped.vs)
    assert not th.allclose(clipped.pg_advantages, unclipped.pg_advantages)


# ----------------------------------------------------------------------------------------------------------
# 2. On-policy: the n-step return
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_on_policy_is_n_step_return(shape: tuple[int, int]) -> None:
    T, B = shape
    rng = np.random.default_rng(7 * T + B)
    p = random_problem(rng, T, B)
    p["target_log_probs"] = p["behaviour_log_probs"].copy()
    r, d, boot = p["rewards"], p["discounts"], p["bootstrap_value"]
    # G_s = sum_{t=s}^{T-1} (prod_{i=s}^{t-1} d_i) r_t + (prod_{i=s}^{T-1} d_i) bootstrap: no value but the last.
    returns = np.zeros((T, B))
    for s in range(T):
        returns[s] = sum(np.prod(d[s:t], axis=0) * r[t] for t in range(s, T)) + np.prod(d[s:], axis=0) * boot

    out = vtrace(**to_torch(p, th.float64), rho_bar=1.0, c_bar=1.0, pg_rho_bar=1.0, lam=1.0)
    scale = np.abs(p["values"]).max() + T * (np.abs(r).max() + np.abs(boot).max())
    np.testing.assert_allclose(out.vs.numpy(), returns, rtol=0, atol=16 * (T + 2) * EPS[th.float64] * scale)
    next_vs = np.concatenate([returns[1:], boot[None]], axis=0)
    np.testing.assert_allclose(
        out.pg_advantages.numpy(), r + d * next_vs - p["values"], rtol=0, atol=16 * (T + 2) * EPS[th.float64] * scale
    )


# ----------------------------------------------------------------------------------------------------------
# 3. Truncation: the same as two separate episodes
# ----------------------------------------------------------------------------------------------------------


def truncated_problem(seed: int, T: int = 12) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Columns truncated at steps 4, 0, T-1, nowhere, twice (3 and 8), and at 5 where step 5 also terminates."""
    rng = np.random.default_rng(seed)
    B = 6
    p = random_problem(rng, T, B, p_terminate=0.0)
    truncated = np.zeros((T, B), dtype=bool)
    truncated[4, 0] = truncated[0, 1] = truncated[T - 1, 2] = True
    truncated[3, 4] = truncated[8, 4] = True
    truncated[5, 5] = True
    p["discounts"][5, 5] = 0.0
    final_values = rng.normal(0.0, 2.0, size=(T, B))
    return p, truncated, final_values


def split_reference(
    p: dict[str, np.ndarray], truncated: np.ndarray, final_values: np.ndarray, hyper: tuple, use_vtrace: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each column at its truncations; a piece ending in a truncation at step k bootstraps from final_values[k]."""
    T, B = p["values"].shape
    vs, pg = np.zeros((T, B)), np.zeros((T, B))
    for b in range(B):
        ends = [int(k) + 1 for k in np.flatnonzero(truncated[:, b])]
        bounds = [0, *ends] if ends and ends[-1] == T else [0, *ends, T]
        for start, stop in itertools.pairwise(bounds):
            piece = {k: x[start:stop, b : b + 1] for k, x in p.items() if k != "bootstrap_value"}
            last_truncated = truncated[stop - 1, b]
            piece["bootstrap_value"] = np.array([final_values[stop - 1, b] if last_truncated else p["bootstrap_value"][b]])
            if use_vtrace:
                out = vtrace(**to_torch(piece, th.float64), **hp(hyper))
                piece_vs, piece_pg = out.vs.numpy(), out.pg_advantages.numpy()
            else:
                piece_vs, piece_pg, _, _ = brute_force_vtrace(piece, *hyper)
            vs[start:stop, b], pg[start:stop, b] = piece_vs[:, 0], piece_pg[:, 0]
    return vs, pg


@pytest.mark.parametrize("use_vtrace", [False, True], ids=["brute-force", "vtrace"])
@pytest.mark.parametrize("hyper", HYPERPARAMETERS)
def test_truncation_equals_split_episodes(hyper: tuple, use_vtrace: bool) -> None:
    p, truncated, final_values = truncated_problem(seed=31)
    out = vtrace(
        **to_torch(p, th.float64), **hp(hyper), truncated=th.as_tensor(truncated), final_values=th.as_tensor(final_values)
    )
    vs, pg = split_reference(p, truncated, final_values, hyper, use_vtrace)
    _, _, vs_scale, pg_scale = brute_force_vtrace(p, *hyper)
    scale = max(vs_scale.max(), pg_scale.max(), np.abs(final_values).max())
    atol = tolerance(p, np.array(scale), EPS[th.float64])
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=0, atol=atol)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg, rtol=0, atol=atol)


def test_truncation_ignores_final_values_elsewhere() -> None:
    p, truncated, final_values = truncated_problem(seed=5)
    args = to_torch(p, th.float64)
    junk = final_values.copy()
    junk[~truncated] = np.nan
    a = vtrace(**args, truncated=th.as_tensor(truncated), final_values=th.as_tensor(final_values))
    b = vtrace(**args, truncated=th.as_tensor(truncated), final_values=th.as_tensor(junk))
    assert th.equal(a.vs, b.vs) and th.equal(a.pg_advantages, b.pg_advantages)


def perturb_after(p: dict[str, np.ndarray], k: int, seed: int) -> dict[str, np.ndarray]:
    """Resample everything of column 0 after step k (and its bootstrap value); steps <= k are kept."""
    rng = np.random.default_rng(seed)
    q = {key: x.copy() for key, x in p.items()}
    for key in ("behaviour_log_probs", "target_log_probs", "rewards", "values"):
        q[key][k + 1 :, 0] += rng.normal(0.0, 3.0, size=q[key][k + 1 :, 0].shape)
    q["discounts"][k + 1 :, 0] = rng.choice([0.5, 0.99], size=q["discounts"][k + 1 :, 0].shape)
    q["bootstrap_value"][0] += 10.0
    return q


def test_truncation_cuts_the_future() -> None:
    k, T = 4, 12
    p, truncated, final_values = truncated_problem(seed=11, T=T)
    assert truncated[k, 0] and not truncated[k + 1 :, 0].any()
    hyper = (None, None, None, 1.0)  # no clipping: everything after k would flow back if the cut were missing
    kwargs = {"truncated": th.as_tensor(truncated), "final_values": th.as_tensor(final_values)}
    a = vtrace(**to_torch(p, th.float64), **hp(hyper), **kwargs)
    b = vtrace(**to_torch(perturb_after(p, k, seed=12), th.float64), **hp(hyper), **kwargs)
    assert th.equal(a.vs[: k + 1, 0], b.vs[: k + 1, 0])
    assert th.equal(a.pg_advantages[: k + 1, 0], b.pg_advantages[: k + 1, 0])
    # control: without the truncation flag the same perturbation does reach step k
    c = vtrace(**to_torch(p, th.float64), **hp(hyper))
    d = vtrace(**to_torch(perturb_after(p, k, seed=12), th.float64), **hp(hyper))
    assert not th.equal(c.vs[: k + 1, 0], d.vs[: k + 1, 0])


# ----------------------------------------------------------------------------------------------------------
# 4. Termination cuts
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hyper", HYPERPARAMETERS)
def test_termination_cuts_the_future(hyper: tuple) -> None:
    k, T = 5, 15
    p = random_problem(np.random.default_rng(3), T, 4, p_terminate=0.0)
    p["discounts"][k, 0] = 0.0
    a = vtrace(**to_torch(p, th.float64), **hp(hyper))
    b = vtrace(**to_torch(perturb_after(p, k, seed=4), th.float64), **hp(hyper))
    assert th.equal(a.vs[: k + 1, 0], b.vs[: k + 1, 0])
    assert th.equal(a.pg_advantages[: k + 1, 0], b.pg_advantages[: k + 1, 0])
    assert th.equal(a.vs[:, 1:], b.vs[:, 1:])  # other columns untouched
    # control: with a nonzero discount at k the perturbation reaches step k (through V(x_{k+1}) at least)
    p["discounts"][k, 0] = 0.99
    c = vtrace(**to_torch(p, th.float64), **hp(hyper))
    d = vtrace(**to_torch(perturb_after(p, k, seed=4), th.float64), **hp(hyper))
    assert not th.equal(c.vs[k, 0], d.vs[k, 0])


def test_termination_with_overflowing_unclipped_ratio() -> None:
    """A zero discount cuts the trace even when an unclipped c_t = pi/mu overflows to inf."""
    p = random_problem(np.random.default_rng(8), 6, 2, p_terminate=0.0)
    p["discounts"][2, :] = 0.0
    p["target_log_probs"][2, :] = p["behaviour_log_probs"][2, :] + 200.0  # exp(200) = inf in float32
    out = vtrace(**to_torch(p, th.float32), rho_bar=1.0, c_bar=None, pg_rho_bar=1.0)
    assert th.isfinite(out.vs).all() and th.isfinite(out.pg_advantages).all()


# ----------------------------------------------------------------------------------------------------------
# 5. No gradient
# ----------------------------------------------------------------------------------------------------------


def test_outputs_carry_no_gradient() -> None:
    p = to_torch(random_problem(np.random.default_rng(0), 5, 3), th.float32)
    inputs = {k: x.clone().requires_grad_(True) for k, x in p.items()}
    out = vtrace(**inputs)
    for x in out:
        assert not x.requires_grad and x.grad_fn is None
    reference = vtrace(**p)
    assert th.equal(out.vs, reference.vs) and th.equal(out.pg_advantages, reference.pg_advantages)


def test_dtype_follows_values() -> None:
    p = to_torch(random_problem(np.random.default_rng(1), 4, 2), th.float64)
    p["values"] = p["values"].float()
    out = vtrace(**p)
    assert out.vs.dtype == th.float32 and out.pg_advantages.dtype == th.float32


# ----------------------------------------------------------------------------------------------------------
# 6. Bad inputs
# ----------------------------------------------------------------------------------------------------------


def _good() -> dict[str, th.Tensor]:
    return to_torch(random_problem(np.random.default_rng(0), 4, 3), th.float32)


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        ({"rewards": th.zeros(4, 2)}, {}, "rewards must have shape"),
        ({"discounts": th.zeros(3, 3)}, {}, "discounts must have shape"),
        ({"bootstrap_value": th.zeros(4)}, {}, "bootstrap_value must have shape"),
        ({"bootstrap_value": th.zeros(1, 3)}, {}, "bootstrap_value must have shape"),
        ({"values": th.zeros(4, 3, 1)}, {}, r"values must be time-major \[T, B\]"),
        ({"values": th.zeros(0, 3)}, {}, "T >= 1"),
        ({"target_log_probs": th.full((4, 3), float("nan"))}, {}, "target_log_probs has non-finite"),
        ({"behaviour_log_probs": th.full((4, 3), -float("inf"))}, {}, "behaviour_log_probs has non-finite"),
        ({"bootstrap_value": th.tensor([0.0, float("inf"), 0.0])}, {}, "bootstrap_value has non-finite"),
        ({}, {"rho_bar": 0.0}, "rho_bar must be None or a number > 0"),
        ({}, {"c_bar": -1.0}, "c_bar must be None or a number > 0"),
        ({}, {"pg_rho_bar": float("nan")}, "pg_rho_bar must be None or a number > 0"),
        ({}, {"lam": 1.5}, r"lam must be a number in \[0, 1\]"),
        ({}, {"lam": -0.1}, r"lam must be a number in \[0, 1\]"),
        ({}, {"truncated": th.zeros(4, 3, dtype=th.bool)}, "truncated and final_values must be given together"),
        ({}, {"final_values": th.zeros(4, 3)}, "truncated and final_values must be given together"),
        ({}, {"truncated": th.zeros(4, 2, dtype=th.bool), "final_values": th.zeros(4, 3)}, "truncated must have shape"),
        (
            {},
            {"truncated": th.ones(4, 3, dtype=th.bool), "final_values": th.full((4, 3), float("nan"))},
            "final_values",
        ),
    ],
)
def test_bad_inputs_raise_value_error(change: dict, kwargs: dict, match: str) -> None:
    args = _good() | change
    with pytest.raises(ValueError, match=match):
        vtrace(**args, **kwargs)


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        ({"rewards": np.zeros((4, 3))}, {}, "rewards must be a torch.Tensor"),
        ({"values": th.zeros(4, 3, dtype=th.int64)}, {}, "values must be a floating tensor"),
        ({}, {"truncated": th.zeros(4, 3), "final_values": th.zeros(4, 3)}, "truncated must be a bool tensor"),
    ],
)
def test_bad_types_raise_type_error(change: dict, kwargs: dict, match: str) -> None:
    args = _good() | change
    with pytest.raises(TypeError, match=match):
        vtrace(**args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# 7. Against rlax (DeepMind's JAX reference), when installed
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [1.0, 0.7])
@pytest.mark.parametrize(("rho_bar", "pg_rho_bar"), [(1.0, 1.0), (2.0, 0.5)])
def test_matches_rlax(rho_bar: float, pg_rho_bar: float, lam: float) -> None:
    """rlax fixes c_bar = 1 and, for lam < 1, bootstraps its advantage from lam v + (1 - lam) V: compare what agrees."""
    jax = pytest.importorskip("jax")
    rlax = pytest.importorskip("rlax")
    T, B = 20, 6
    p = rounded_to(random_problem(np.random.default_rng(99), T, B), th.float32)
    v_t = np.concatenate([p["values"][1:], p["bootstrap_value"][None]], axis=0)
    ratio = np.exp(p["target_log_probs"] - p["behaviour_log_probs"])

    def one_column(v_tm1, v_t, r_t, discount_t, rho_tm1):  # [T] each
        return rlax.vtrace_td_error_and_advantage(
            v_tm1, v_t, r_t, discount_t, rho_tm1, lam, clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_rho_bar
        )

    columns = [p["values"], v_t, p["rewards"], p["discounts"], ratio]
    ref = jax.vmap(one_column, in_axes=1, out_axes=1)(*(np.asarray(x, dtype=np.float32) for x in columns))
    ref_vs = np.asarray(ref.errors, dtype=np.float64) + p["values"]

    out = vtrace(**to_torch(p, th.float32), rho_bar=rho_bar, c_bar=1.0, pg_rho_bar=pg_rho_bar, lam=lam)
    _, _, vs_scale, pg_scale = brute_force_vtrace(p, rho_bar, 1.0, pg_rho_bar, lam)
    # both sides round in float32: twice the float32 tolerance of the brute-force test
    np.testing.assert_array_less(np.abs(out.vs.double().numpy() - ref_vs), 2 * tolerance(p, vs_scale, EPS[th.float32]))
    if lam == 1.0:
        ref_pg = np.asarray(ref.pg_advantage, dtype=np.float64)
        np.testing.assert_array_less(
            np.abs(out.pg_advantages.double().numpy() - ref_pg), 2 * tolerance(p, pg_scale, EPS[th.float32])
        )
