"""Invertible value rescaling and two-hot categorical supports for scalar targets.

``ValueRescaling`` is the transform h of Pohlen et al. 2018 ("Observe and Look Further", Proposition A.2),
used by R2D2 on its Q-learning targets and by MuZero on its value and reward targets. ``CategoricalSupport``
is MuZero's two-hot projection of a (rescaled) scalar onto a fixed grid of bins (Schrittwieser et al. 2020,
Appendix F), whose expectation recovers the scalar.

Both work on numpy arrays (and Python / numpy scalars) and on torch tensors alike, keeping the input's
type, floating dtype, device and shape; nothing converts between numpy and torch.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, overload

import numpy as np
import torch

__all__ = ["CategoricalSupport", "ValueRescaling"]

#: torch device types without float64 arithmetic, on which :meth:`CategoricalSupport.encode` stays in the input dtype
_DEVICES_WITHOUT_FLOAT64 = frozenset({"mps"})


def _as_float_numpy(x: Any) -> np.ndarray | np.generic:
    """
    Turn a numpy array, numpy scalar or array-like into a floating numpy array or scalar.

    Floating dtypes are kept; booleans and integers become float64.

    :param x: numpy array, numpy scalar or array-like of real numbers
    :return: a floating ``np.ndarray`` (for arrays and array-likes) or floating ``np.generic`` (for numpy scalars)
    """
    arr = x if isinstance(x, (np.ndarray, np.generic)) else np.asarray(x)
    kind = arr.dtype.kind
    if kind == "f":
        return arr
    if kind in "biu":
        return arr.astype(np.float64)
    raise TypeError(f"Expected real numbers, got an array of dtype {arr.dtype}")


def _as_float_tensor(x: torch.Tensor) -> torch.Tensor:
    """
    Turn a torch tensor into a floating tensor: floating dtypes are kept, booleans and integers become the default dtype.

    :param x: torch tensor of real numbers
    :return: floating tensor on the same device
    """
    if x.is_complex():
        raise TypeError(f"Expected real numbers, got a tensor of dtype {x.dtype}")
    if x.is_floating_point():
        return x
    return x.to(torch.get_default_dtype())


def _h(x: Any, eps: float, sqrt: Callable[[Any], Any], absolute: Callable[[Any], Any]) -> Any:
    """
    h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x (Pohlen et al. 2018, eq. 3), backend-agnostic.

    Written as x / (sqrt(|x| + 1) + 1) + eps x, which is the same function without the cancellation of
    sqrt(|x| + 1) - 1 near 0, and whose autograd derivative at 0 is the true one, 1/2 + eps (the sign(x)|x|
    form gives eps there, since torch differentiates sign to 0).

    :param x: floating numpy array / scalar or torch tensor
    :param eps: the Lipschitz regulariser eps >= 0
    :param sqrt: elementwise square root of the backend
    :param absolute: elementwise absolute value of the backend
    :return: h(x), same type, dtype and shape as x
    """
    return x / (sqrt(absolute(x) + 1.0) + 1.0) + eps * x


def _h_inv(y: Any, eps: float, sqrt: Callable[[Any], Any], absolute: Callable[[Any], Any]) -> Any:
    """
    h^-1(y) = sign(y)(((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1) (Pohlen et al. 2018, Prop. A.2).

    With s = sqrt(|x| + 1), the closed form gives s - 1 = 2|y| / (sqrt(1 + 4 eps (1 + eps + |y|)) + 1 + 2 eps)
    (multiply numerator and denominator by the conjugate), and |x| = s^2 - 1 = (s - 1)(s + 1). Hence, with the
    signed t = sign(y)(s - 1), h^-1(y) = t (|t| + 2): no cancellation near 0, no division by eps (eps = 0 gives
    sign(y)((|y| + 1)^2 - 1)), and an autograd derivative at 0 equal to the true 2 / (1 + 2 eps).

    :param y: floating numpy array / scalar or torch tensor
    :param eps: the Lipschitz regulariser eps >= 0
    :param sqrt: elementwise square root of the backend
    :param absolute: elementwise absolute value of the backend
    :return: h^-1(y), same type, dtype and shape as y
    """
    t = 2.0 * y / (sqrt(1.0 + 4.0 * eps * (1.0 + eps + absolute(y))) + 1.0 + 2.0 * eps)
    return t * (absolute(t) + 2.0)


def _apply_elementwise(fn: Callable[..., Any], x: Any, eps: float) -> Any:
    """
    Apply ``fn`` (``_h`` or ``_h_inv``) with the backend that matches ``x``, keeping its type; +-inf map to +-inf.

    Both h and h^-1 are odd, increasing and unbounded, so their limits at +-inf are +-inf, but the closed
    forms evaluate to inf/inf = NaN there. The infinite elements are therefore replaced by 0 before ``fn``
    and put back after it. In torch the put-back value is detached: the gradient at +-inf is 0 (h is not
    differentiable there), and no inf * 0 = NaN reaches the gradient of the finite elements.

    :param fn: the backend-agnostic elementwise function
    :param x: torch tensor, numpy array, numpy scalar, Python number or array-like
    :param eps: the Lipschitz regulariser
    :return: a torch tensor for a tensor, an ``np.ndarray`` for an array or array-like, a numpy scalar
        for a numpy scalar, a Python float for a Python number
    """
    if isinstance(x, torch.Tensor):
        t = _as_float_tensor(x)
        t_inf = torch.isinf(t)
        return torch.where(t_inf, t.detach(), fn(torch.where(t_inf, torch.zeros_like(t), t), eps, torch.sqrt, torch.abs))
    if isinstance(x, (int, float)) and not isinstance(x, np.generic):
        return float(_apply_elementwise(fn, np.float64(x), eps))
    arr = _as_float_numpy(x)
    is_inf = np.isinf(arr)
    out = np.where(is_inf, arr, fn(np.where(is_inf, arr.dtype.type(0), arr), eps, np.sqrt, np.abs))
    # np.where gives a 0-d array for a scalar: give a scalar back for a scalar, an array for an array
    return out if isinstance(arr, np.ndarray) else out[()]


class ValueRescaling:
    """
    Invertible value rescaling h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x of Pohlen et al. 2018 (eq. 3).

    Used by R2D2 (eps = 1e-3) on its n-step Q targets, h(sum_k gamma^k r_k + gamma^n h^-1(Q_target)), and by
    MuZero (eps = 1e-3) on value and reward targets before the two-hot projection. eps x sits outside the
    bracket (Pohlen et al.); the MuZero paper's appendix prints it inside, which is a typo.

    Both directions accept torch tensors (any shape, dtype and device; autograd-safe everywhere, including
    0), numpy arrays and scalars (dtype kept), Python numbers (a float comes back) and array-likes (an
    ``np.ndarray`` comes back). Integer and boolean inputs become floating point. +-inf map to +-inf exactly in
    both directions (the limits of h and h^-1; the torch gradient there is 0), NaN gives NaN.

    :param eps: the Lipschitz regulariser eps >= 0 that makes h^-1 Lipschitz (1e-3 in R2D2 and MuZero);
        eps = 0 is allowed
    """

    def __init__(self, eps: float = 1e-3) -> None:
        eps = float(eps)
        if not math.isfinite(eps) or eps < 0.0:
            raise ValueError(f"ValueRescaling needs a finite eps >= 0, got eps={eps}")
        self.eps = eps

    @overload
    def transform(self, x: torch.Tensor) -> torch.Tensor: ...

    @overload
    def transform(self, x: float) -> float: ...

    @overload
    def transform(self, x: Any) -> Any: ...

    def transform(self, x: Any) -> Any:
        """
        h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x (Pohlen et al. 2018, eq. 3).

        :param x: values, shape [...] (tensor, array, scalar or array-like)
        :return: h(x), shape [...], same type, dtype and device as x
        """
        return _apply_elementwise(_h, x, self.eps)

    @overload
    def inverse(self, y: torch.Tensor) -> torch.Tensor: ...

    @overload
    def inverse(self, y: float) -> float: ...

    @overload
    def inverse(self, y: Any) -> Any: ...

    def inverse(self, y: Any) -> Any:
        """
        Exact inverse h^-1(y) = sign(y)(((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1) (Pohlen et al., Prop. A.2).

        Evaluated in a rearranged form without cancellation near 0, which also holds for eps = 0, where
        h^-1(y) = sign(y)((|y| + 1)^2 - 1).

        :param y: rescaled values, shape [...] (tensor, array, scalar or array-like)
        :return: h^-1(y), shape [...], same type, dtype and device as y
        """
        return _apply_elementwise(_h_inv, y, self.eps)

    def bellman_target(self, rewards: Any, discounts: Any, next_values: Any) -> Any:
        """
        The transformed Bellman target h(r + discount * h^-1(v)) (Pohlen et al. 2018, eq. 4): values live in h-space,
        so the bootstrap leaves it, takes the (n-step, discounted) reward, and returns.

        :param rewards: (n-step discounted) rewards, [...]
        :param discounts: discount of the bootstrap, 0 where the episode terminated (gamma^k after k steps), [...]
        :param next_values: bootstrap values in h-space (e.g. max_a Q_target(s', a)), [...]
        :return: targets in h-space, [...] (broadcast of the three; tensors in, tensor out)
        """
        return self.transform(rewards + discounts * self.inverse(next_values))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ValueRescaling):
            return NotImplemented
        return self.eps == other.eps

    def __hash__(self) -> int:
        return hash((ValueRescaling, self.eps))

    def __repr__(self) -> str:
        return f"ValueRescaling(eps={self.eps!r})"


def _nan_error(n_nan: int, first: tuple[int, ...], shape: tuple[int, ...]) -> ValueError:
    """
    The error :meth:`CategoricalSupport.encode` raises for an input holding NaN.

    :param n_nan: number of NaN elements
    :param first: index of the first NaN element
    :param shape: shape of the input
    :return: the ValueError to raise
    """
    return ValueError(
        f"CategoricalSupport.encode got NaN in {n_nan} of {math.prod(shape)} values (first at index {first} "
        f"of an input of shape {shape}): NaN has no two-hot encoding"
    )


class CategoricalSupport:
    """
    Two-hot categorical representation of scalars on a uniform grid of bins (MuZero, Schrittwieser et al. 2020, App. F).

    A scalar x is first rescaled, v = h(x) if a transform is set, then clamped to [vmin, vmax] and written as a
    distribution over the ``n_bins`` atoms z_0 = vmin < ... < z_{n-1} = vmax with mass only on the two atoms
    around v: p_k = (z_{k+1} - v) / (z_{k+1} - z_k), p_{k+1} = 1 - p_k for z_k <= v <= z_{k+1}, so that
    sum_i p_i z_i = v. Decoding takes the expectation and applies h^-1. Any bin step works, not only 1.

    MuZero's default is ``CategoricalSupport(-300.0, 300.0, 601, ValueRescaling(1e-3))`` for both value and
    reward. Targets beyond the support, +-inf included, are clamped to the end bins: check
    :meth:`fraction_clipped` and warn when the support is too small for the reward scale. NaN targets raise
    a ValueError in :meth:`encode`.

    :param vmin: value of the first atom (in the transformed space if a transform is set)
    :param vmax: value of the last atom (in the transformed space if a transform is set)
    :param n_bins: number of atoms, at least 2
    :param transform: rescaling applied before encoding and inverted after decoding; None for none
    """

    def __init__(self, vmin: float, vmax: float, n_bins: int, transform: ValueRescaling | None = None) -> None:
        if isinstance(n_bins, bool):
            raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
        try:
            n_bins = operator.index(n_bins)
        except TypeError:
            raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}") from None
        if n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {n_bins}")
        vmin, vmax = float(vmin), float(vmax)
        if not (math.isfinite(vmin) and math.isfinite(vmax)):
            raise ValueError(f"The support bounds must be finite, got vmin={vmin}, vmax={vmax}")
        if not vmin < vmax:
            raise ValueError(f"The support needs vmin < vmax, got vmin={vmin}, vmax={vmax}")
        if transform is not None and not isinstance(transform, ValueRescaling):
            raise TypeError(f"transform must be a ValueRescaling or None, got {type(transform).__name__}")
        self.vmin = vmin
        self.vmax = vmax
        self.n_bins = n_bins
        self.transform = transform
        atoms = np.linspace(vmin, vmax, n_bins, dtype=np.float64)  # [n_bins]
        atoms.setflags(write=False)
        self._atoms = atoms
        # torch copies of the atoms, one per (device, dtype); rebuilt on demand, never pickled
        self._atoms_cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def step(self) -> float:
        """
        Distance between neighbouring atoms, (vmax - vmin) / (n_bins - 1).

        :return: the bin step
        """
        return (self.vmax - self.vmin) / (self.n_bins - 1)

    @property
    def atoms(self) -> np.ndarray:
        """
        The bin centres, ``np.linspace(vmin, vmax, n_bins)`` in float64 (read-only).

        :return: atoms, shape [n_bins]
        """
        return self._atoms

    def _torch_atoms(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """
        The atoms as a tensor on ``device`` with ``dtype``, cached per (device, dtype).

        :param device: torch device
        :param dtype: floating torch dtype
        :return: atoms, shape [n_bins]
        """
        key = (device, dtype)
        atoms = self._atoms_cache.get(key)
        if atoms is None:
            atoms = torch.from_numpy(self._atoms.copy()).to(device=device, dtype=dtype)
            self._atoms_cache[key] = atoms
        return atoms

    def _check_bins(self, shape: tuple[int, ...] | torch.Size, what: str) -> None:
        """
        Raise a ValueError unless the last axis of ``shape`` has ``n_bins`` entries.

        :param shape: shape of the probabilities or logits
        :param what: name of the argument, for the message
        """
        if len(shape) == 0 or shape[-1] != self.n_bins:
            raise ValueError(f"{what} must have shape [..., {self.n_bins}] (n_bins on the last axis), got {tuple(shape)}")

    @overload
    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    @overload
    def encode(self, x: Any) -> np.ndarray: ...

    def encode(self, x: Any) -> torch.Tensor | np.ndarray:
        """
        Two-hot encoding of scalars: h (if set), clamp to [vmin, vmax], split the mass between the two neighbouring atoms.

        The expectation of the result over the atoms equals the clamped (transformed) value; a value on an
        atom puts all its mass there. +-inf (and any value beyond the support) is clamped to the end bin,
        a one-hot on z_0 or z_{n-1}. NaN has no encoding: an input holding NaN raises a ValueError (for a
        tensor on a GPU, the check costs one synchronisation).

        The projection (h, clamp, floor, weights) is computed in float64 and only the probabilities are cast
        back to x's dtype: at MuZero's scale (|v| up to 300) a float32 ulp of v is 3e-5, which float32
        arithmetic would pass on to the weights, and numpy and torch would round it differently. In float64
        the weights are those of the exact v up to ~1e-16 * max(|vmin|, |vmax|) / step, and both backends
        agree up to the rounding of the final cast (one ulp of 1 in x's dtype). On a torch device without
        float64 (MPS) the projection stays in x's dtype.

        :param x: scalars, shape [...] (tensor, array, scalar or array-like)
        :return: probabilities, shape [..., n_bins]; a tensor with x's dtype and device for a tensor,
            otherwise an ``np.ndarray`` with x's floating dtype
        """
        if isinstance(x, torch.Tensor):
            return self._encode_torch(x)
        return self._encode_numpy(x)

    def _encode_numpy(self, x: Any) -> np.ndarray:
        """
        Numpy two-hot encoding, see :meth:`encode`.

        :param x: scalars, shape [...]
        :return: probabilities, shape [..., n_bins]
        """
        x_np = np.asarray(_as_float_numpy(x))  # [...]
        is_nan = np.isnan(x_np)
        if is_nan.any():
            raise _nan_error(int(is_nan.sum()), tuple(int(i) for i in np.argwhere(is_nan)[0]), x_np.shape)
        v = x_np.astype(np.promote_types(x_np.dtype, np.float64), copy=False)  # [...], float64 (or wider)
        if self.transform is not None:
            v = self.transform.transform(v)
        v = np.clip(v, self.vmin, self.vmax)
        atoms = self._atoms.astype(v.dtype, copy=False)  # [n_bins]
        lower = np.floor((v - self.vmin) / self.step).astype(np.int64)
        lower = np.clip(lower, 0, self.n_bins - 2)  # [...]
        z_lo, z_hi = atoms[lower], atoms[lower + 1]
        # rounding of the floor can put v a hair outside [z_lo, z_hi]: the clip moves the mean by O(ulp)
        w_hi = np.clip((v - z_lo) / (z_hi - z_lo), 0.0, 1.0)  # [...]
        probs = np.zeros((*v.shape, self.n_bins), dtype=x_np.dtype)  # [..., n_bins]
        np.put_along_axis(probs, lower[..., None], (1.0 - w_hi)[..., None].astype(x_np.dtype), axis=-1)
        np.put_along_axis(probs, lower[..., None] + 1, w_hi[..., None].astype(x_np.dtype), axis=-1)
        return probs

    def _encode_torch(self, x: torch.Tensor) -> torch.Tensor:
        """
        Torch two-hot encoding, see :meth:`encode`.

        :param x: scalars, shape [...]
        :return: probabilities, shape [..., n_bins], on x's device with x's floating dtype
        """
        x_t = _as_float_tensor(x)  # [...]
        is_nan = torch.isnan(x_t)
        if is_nan.any():
            first = tuple(int(i) for i in torch.nonzero(is_nan)[0].tolist())
            raise _nan_error(int(is_nan.sum().item()), first, tuple(x_t.shape))
        v = x_t if x_t.device.type in _DEVICES_WITHOUT_FLOAT64 else x_t.to(torch.promote_types(x_t.dtype, torch.float64))
        if self.transform is not None:
            v = self.transform.transform(v)
        v = v.clamp(self.vmin, self.vmax)
        atoms = self._torch_atoms(v.device, v.dtype)  # [n_bins]
        lower = torch.floor((v - self.vmin) / self.step).long().clamp(0, self.n_bins - 2)  # [...]
        z_lo, z_hi = atoms[lower], atoms[lower + 1]
        w_hi = ((v - z_lo) / (z_hi - z_lo)).clamp(0.0, 1.0)  # [...]
        probs = torch.zeros((*v.shape, self.n_bins), dtype=x_t.dtype, device=v.device)  # [..., n_bins]
        probs = probs.scatter(-1, lower.unsqueeze(-1), (1.0 - w_hi).unsqueeze(-1).to(x_t.dtype))
        return probs.scatter(-1, lower.unsqueeze(-1) + 1, w_hi.unsqueeze(-1).to(x_t.dtype))

    @overload
    def decode(self, probs: torch.Tensor) -> torch.Tensor: ...

    @overload
    def decode(self, probs: Any) -> np.ndarray: ...

    def decode(self, probs: Any) -> torch.Tensor | np.ndarray:
        """
        Expectation over the atoms, sum_i p_i z_i, followed by h^-1 if a transform is set.

        :param probs: probabilities, shape [..., n_bins]
        :return: scalars, shape [...]; same type, dtype and device as probs
        """
        if isinstance(probs, torch.Tensor):
            p = _as_float_tensor(probs)
            self._check_bins(p.shape, "probs")
            value: Any = p @ self._torch_atoms(p.device, p.dtype)  # [...]
        else:
            p_np = np.asarray(_as_float_numpy(probs))
            self._check_bins(p_np.shape, "probs")
            value = np.asarray(p_np @ self._atoms.astype(p_np.dtype, copy=False))  # [...]
        if self.transform is not None:
            value = self.transform.inverse(value)
        return value

    @overload
    def decode_logits(self, logits: torch.Tensor) -> torch.Tensor: ...

    @overload
    def decode_logits(self, logits: Any) -> np.ndarray: ...

    def decode_logits(self, logits: Any) -> torch.Tensor | np.ndarray:
        """
        Softmax over the last axis, then :meth:`decode`.

        :param logits: unnormalised log-probabilities, shape [..., n_bins]
        :return: scalars, shape [...]; same type, dtype and device as logits
        """
        if isinstance(logits, torch.Tensor):
            z = _as_float_tensor(logits)
            self._check_bins(z.shape, "logits")
            value = torch.softmax(z, dim=-1) @ self._torch_atoms(z.device, z.dtype)  # [...]
            if self.transform is None:
                return value
            # A softmax's expectation over the atoms lies in [vmin, vmax] (NaN for NaN logits): never +-inf, so h^-1
            # needs none of the guard of ValueRescaling.inverse (the same numbers, a third of the small operations
            # that dominate this call inside a search).
            return _h_inv(value, self.transform.eps, torch.sqrt, torch.abs)
        z_np = np.asarray(_as_float_numpy(logits))
        self._check_bins(z_np.shape, "logits")
        e = np.exp(z_np - z_np.max(axis=-1, keepdims=True))  # stable: the largest logit maps to exp(0)
        return self.decode(e / e.sum(axis=-1, keepdims=True))

    def fraction_clipped(self, x: Any) -> float:
        """
        Fraction of the elements of x whose (transformed) value lies outside [vmin, vmax] and is clamped by :meth:`encode`.

        A large fraction means the support is too small for the scale of the targets.

        :param x: scalars, shape [...] (tensor, array, scalar or array-like)
        :return: the fraction in [0, 1]; 0.0 for an empty input
        """
        if isinstance(x, torch.Tensor):
            v = _as_float_tensor(x)
            if v.numel() == 0:
                return 0.0
            if self.transform is not None:
                v = self.transform.transform(v)
            return float(((v < self.vmin) | (v > self.vmax)).sum().item()) / v.numel()
        v_np = np.asarray(_as_float_numpy(x))
        if v_np.size == 0:
            return 0.0
        if self.transform is not None:
            v_np = self.transform.transform(v_np)
        return float(np.count_nonzero((v_np < self.vmin) | (v_np > self.vmax))) / v_np.size

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_atoms_cache"] = {}  # device tensors need not survive pickling (nor exist where it is loaded)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._atoms.setflags(write=False)

    def __repr__(self) -> str:
        return (
            f"CategoricalSupport(vmin={self.vmin!r}, vmax={self.vmax!r}, n_bins={self.n_bins}, transform={self.transform!r})"
        )
