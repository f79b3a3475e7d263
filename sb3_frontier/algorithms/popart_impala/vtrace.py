"""V-trace off-policy targets for the value function and the policy gradient (IMPALA).

Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL with Importance Weighted Actor-Learner Architectures",
Sec. 4. A batch of ``B`` unrolls of ``T`` steps, time-major ``[T, B]``, was collected by a behaviour policy ``mu``;
the learner's policy is ``pi``. With the per-step discount ``d_t`` (``gamma`` while the episode goes on after step
``t``, 0 where step ``t`` terminated or, with ``LifeLoss(mode="roll")``, lost a life) in place of the paper's
constant ``gamma``:

    rho_t   = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t))            (truncated importance weight of the TD error)
    c_t     = lam * min(c_bar, pi(a_t|x_t) / mu(a_t|x_t))        (trace coefficient; lam: Sec. 4.1, Remark 2)
    delta_t = rho_t (r_t + d_t V(x_{t+1}) - V(x_t)),              V(x_T) = bootstrap_value
    v_s     = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} d_i c_i) delta_t                            (Sec. 4.1, eq. 1)

computed by the backward recursion of Remark 1 (``v_s - V(x_s) = delta_s + d_s c_s (v_{s+1} - V(x_{s+1}))``):

    acc_T = 0,    acc_t = delta_t + d_t c_t acc_{t+1},    v_t = V(x_t) + acc_t

and the policy-gradient advantage of Sec. 4.2,

    A_t = min(pg_rho_bar, pi(a_t|x_t) / mu(a_t|x_t)) (r_t + d_t v_{t+1} - V(x_t)),    v_T = bootstrap_value.

A zero discount cuts both the bootstrap ``V(x_{t+1})`` and the trace: nothing after a termination reaches the
targets before it.

Truncation (a time limit ended the episode at step ``t`` without terminating it; row ``t + 1`` of the stream
already belongs to the next episode) is handled by rewriting the problem into an equivalent one before the
recursion, where ``truncated[t, b]`` is True:

    r'_t = r_t + d_t * final_values[t, b],    d'_t = 0

so the target at ``t`` bootstraps from the value of the real final observation (times ``d_t``, so a step that
both terminates and truncates bootstraps from nothing), the trace is cut, and ``V(x_{t+1})`` of the next episode
is never used. ``delta_t``, ``v_t`` and ``A_t`` at that step then read ``r_t + d_t V(final observation) - V(x_t)``
as they should.

Deviations from the reference implementations, all deliberate:

- rlax's ``vtrace_td_error_and_advantage`` fixes ``c_bar = 1`` and, for ``lam < 1``, bootstraps the policy-gradient
  advantage from ``lam v_{t+1} + (1 - lam) V(x_{t+1})``; here ``c_bar`` is a parameter and ``A_t`` always uses
  ``v_{t+1}`` as in the paper (Sec. 4.2). With ``c_bar = 1`` the value targets agree, and with ``lam = 1`` the
  advantages agree too.
- ``None`` for ``rho_bar``, ``c_bar`` or ``pg_rho_bar`` means no truncation of that weight (scalable_agent's
  ``clip_rho_threshold=None``). The paper assumes ``rho_bar >= c_bar``; it is not required here.
- Truncation by a time limit (``truncated`` / ``final_values``) is an addition; the paper's unrolls only end by
  termination.

Everything is computed without autograd, in the dtype of ``values``: the outputs are targets.
"""

from __future__ import annotations

from numbers import Real
from typing import NamedTuple

import torch as th

__all__ = ["VTraceReturns", "vtrace"]


class VTraceReturns(NamedTuple):
    """
    The outputs of :func:`vtrace`, both ``[T, B]`` in the dtype of ``values`` and without gradient.

    :param vs: the V-trace value targets ``v_t`` (Sec. 4.1, eq. 1)
    :param pg_advantages: the policy-gradient advantages ``min(pg_rho_bar, pi/mu) (r_t + d_t v_{t+1} - V(x_t))``
        (Sec. 4.2)
    """

    vs: th.Tensor
    pg_advantages: th.Tensor


def _check_threshold(name: str, value: float | None) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or a real number > 0."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ValueError(f"{name} must be None or a number > 0, got {value!r}")


def _check_finite(name: str, x: th.Tensor) -> None:
    """Raise ``ValueError`` naming the input if ``x`` has a NaN or an infinity."""
    if not bool(th.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")


def _clipped(ratios: th.Tensor, bar: float | None) -> th.Tensor:
    """``min(bar, ratios)``, or ``ratios`` when ``bar`` is None."""
    return ratios if bar is None else th.clamp(ratios, max=bar)


def _validate_hyperparameters(rho_bar: float | None, c_bar: float | None, pg_rho_bar: float | None, lam: float) -> None:
    """Check the truncation levels (None or > 0) and ``lam`` (in [0, 1]) of :func:`vtrace`."""
    _check_threshold("rho_bar", rho_bar)
    _check_threshold("c_bar", c_bar)
    _check_threshold("pg_rho_bar", pg_rho_bar)
    if isinstance(lam, bool) or not isinstance(lam, Real) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1], got {lam!r}")


def _validate_tensors(
    tensors: dict[str, th.Tensor],
    bootstrap_value: th.Tensor,
    truncated: th.Tensor | None,
    final_values: th.Tensor | None,
) -> None:
    """Check the types, shapes, devices and finiteness of :func:`vtrace`'s tensor inputs."""
    if (truncated is None) != (final_values is None):
        raise ValueError("truncated and final_values must be given together (both or neither)")
    step_inputs = dict(tensors)  # every [T, B] input by name
    if truncated is not None and final_values is not None:
        step_inputs.update(truncated=truncated, final_values=final_values)
    for name, x in [*step_inputs.items(), ("bootstrap_value", bootstrap_value)]:
        if not isinstance(x, th.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")

    values = tensors["values"]
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"values must be time-major [T, B] with T >= 1, got shape {tuple(values.shape)}")
    if not values.is_floating_point():
        raise TypeError(f"values must be a floating tensor, got dtype {values.dtype}")
    expected = {name: values.shape for name in step_inputs} | {"bootstrap_value": values.shape[1:]}
    for name, x in [*step_inputs.items(), ("bootstrap_value", bootstrap_value)]:
        if x.shape != expected[name]:
            layout = "[B]" if name == "bootstrap_value" else "[T, B]"
            raise ValueError(f"{name} must have shape {layout} = {tuple(expected[name])}, got {tuple(x.shape)}")
        if x.device != values.device:
            raise ValueError(f"{name} is on {x.device} but values is on {values.device}")
    if truncated is not None and truncated.dtype != th.bool:
        raise TypeError(f"truncated must be a bool tensor, got dtype {truncated.dtype}")

    for name, x in [*tensors.items(), ("bootstrap_value", bootstrap_value)]:
        _check_finite(name, x)
    if truncated is not None and final_values is not None:
        # Only the entries at truncated steps are read.
        _check_finite("final_values (at truncated steps)", final_values[truncated])


def vtrace(
    behaviour_log_probs: th.Tensor,  # [T, B]
    target_log_probs: th.Tensor,  # [T, B]
    rewards: th.Tensor,  # [T, B]
    discounts: th.Tensor,  # [T, B]
    values: th.Tensor,  # [T, B]
    bootstrap_value: th.Tensor,  # [B]
    rho_bar: float | None = 1.0,
    c_bar: float | None = 1.0,
    pg_rho_bar: float | None = 1.0,
    lam: float = 1.0,
    *,
    truncated: th.Tensor | None = None,  # [T, B] bool
    final_values: th.Tensor | None = None,  # [T, B]
) -> VTraceReturns:
    """
    V-trace value targets and policy-gradient advantages (Espeholt et al. 2018, Sec. 4), time-major.

    ``v_t = V(x_t) + acc_t`` with ``acc_T = 0`` and ``acc_t = delta_t + d_t c_t acc_{t+1}`` (Sec. 4.1, Remark 1),
    ``delta_t = rho_t (r_t + d_t V(x_{t+1}) - V(x_t))``, ``rho_t = min(rho_bar, pi/mu)``,
    ``c_t = lam min(c_bar, pi/mu)``; ``A_t = min(pg_rho_bar, pi/mu) (r_t + d_t v_{t+1} - V(x_t))`` (Sec. 4.2), with
    ``V(x_T) = v_T = bootstrap_value``. See the module docstring for the truncation rewrite.

    All inputs are cast to the dtype of ``values``; the ratios ``pi/mu`` are ``exp(target - behaviour)`` of the
    log-probabilities. Nothing is differentiated: the outputs never require grad.

    :param behaviour_log_probs: ``[T, B]`` log mu(a_t|x_t) of the taken actions under the behaviour policy
    :param target_log_probs: ``[T, B]`` log pi(a_t|x_t) of the taken actions under the learner's policy
    :param rewards: ``[T, B]`` rewards r_t
    :param discounts: ``[T, B]`` discounts d_t after step t: gamma, or 0 where step t terminated (or lost a life in
        ``"roll"`` mode); a zero discount cuts both the bootstrap and the trace
    :param values: ``[T, B]`` the learner's values V(x_t); fixes the dtype of the computation
    :param bootstrap_value: ``[B]`` the value V(x_T) of the observation after the last step
    :param rho_bar: truncation level of the importance weights rho_t in the TD errors (> 0; None: no truncation)
    :param c_bar: truncation level of the trace coefficients c_t (> 0; None: no truncation)
    :param pg_rho_bar: truncation level of the importance weights of the policy-gradient advantage (> 0; None: none)
    :param lam: the trace discount lambda in [0, 1] multiplying c_t (Sec. 4.1, Remark 2); 1 is IMPALA's V-trace
    :param truncated: ``[T, B]`` bool, True where a time limit ended the episode at step t (the next row starts a
        new episode); must be given with ``final_values``
    :param final_values: ``[T, B]`` the value of the final observation of step t, read only where ``truncated``
    :return: ``VTraceReturns(vs, pg_advantages)``, both ``[T, B]`` in the dtype of ``values``
    :raises ValueError: on shapes that are not [T, B] / [B] with T >= 1, thresholds that are not > 0, ``lam`` outside
        [0, 1], non-finite inputs, inputs on another device than ``values``, or only one of ``truncated`` and
        ``final_values``
    :raises TypeError: on non-tensor inputs, non-floating ``values`` or non-bool ``truncated``
    """
    tensors = {
        "behaviour_log_probs": behaviour_log_probs,
        "target_log_probs": target_log_probs,
        "rewards": rewards,
        "discounts": discounts,
        "values": values,
    }
    _validate_hyperparameters(rho_bar, c_bar, pg_rho_bar, lam)
    _validate_tensors(tensors, bootstrap_value, truncated, final_values)

    dtype = values.dtype
    with th.no_grad():
        values = values.detach()
        bootstrap_value = bootstrap_value.detach().to(dtype)  # [B]
        rewards = rewards.detach().to(dtype)  # [T, B]
        discounts = discounts.detach().to(dtype)  # [T, B]
        if truncated is not None and final_values is not None:
            # r'_t = r_t + d_t V(final observation), d'_t = 0 at truncated steps (see the module docstring);
            # th.where so that the entries of final_values at other steps are never read.
            rewards = th.where(truncated, rewards + discounts * final_values.detach().to(dtype), rewards)
            discounts = th.where(truncated, th.zeros_like(discounts), discounts)

        ratios = th.exp(target_log_probs.detach().to(dtype) - behaviour_log_probs.detach().to(dtype))  # [T, B] pi/mu
        rhos = _clipped(ratios, rho_bar)  # [T, B]
        cs = lam * _clipped(ratios, c_bar)  # [T, B]
        # d_t c_t, exactly 0 where d_t = 0 even if an unclipped ratio overflowed to inf (0 * inf would be NaN)
        trace = th.where(discounts == 0, th.zeros_like(discounts), discounts * cs)  # [T, B]

        next_values = th.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)  # [T, B] V(x_{t+1})
        deltas = rhos * (rewards + discounts * next_values - values)  # [T, B]

        acc = th.zeros_like(bootstrap_value)  # [B] acc_T = 0
        vs_minus_v = th.empty_like(values)  # [T, B]
        for t in range(values.shape[0] - 1, -1, -1):
            acc = deltas[t] + trace[t] * acc
            vs_minus_v[t] = acc
        vs = values + vs_minus_v  # [T, B]

        next_vs = th.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)  # [T, B] v_{t+1}, v_T = bootstrap_value
        pg_advantages = _clipped(ratios, pg_rho_bar) * (rewards + discounts * next_vs - values)  # [T, B]
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)
