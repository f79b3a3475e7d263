"""Mixed-precision training: the network's forward pass in bfloat16 under ``torch.autocast``, the loss in float32.

bfloat16 keeps float32's exponent range (no loss scaling is needed, unlike float16) with an 8-bit significand:
matrix products and convolutions read bfloat16 copies of their inputs and weights and accumulate in float32, while
the parameters, their gradients and the optimizer state stay float32. On a CPU with native bfloat16 instructions
(AVX512-BF16 or AMX) convolutions run faster: MuZero's Atari gradient step (batch 64, five-step unrolls, one thread)
took 107 ms against 191 ms in float32 on an AVX512-BF16 CPU. Without them oneDNN emulates bfloat16, slower than
float32, so :func:`check_training_precision` warns. On CUDA it needs compute capability 8.0 or newer.

Autocast is thread-local: a loss function that worker threads run (``ShardedGradient``) must enter it itself, which is
what :func:`autocast` is for.
"""

from __future__ import annotations

import contextlib
import warnings

import torch as th

#: ``training_precision`` names and the dtype autocast runs the forward pass in (None: no autocast).
TRAINING_PRECISIONS: dict[str, th.dtype | None] = {"float32": None, "bfloat16": th.bfloat16}


def native_bfloat16(device: th.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU that supports it)."""
    if device.type == "cuda":
        return bool(th.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(th.cpu, probe, lambda: False)()) for probe in probes)
    return True


def check_training_precision(precision: str, device: th.device | None = None) -> th.dtype | None:
    """
    The autocast dtype of ``training_precision``, warning when ``device`` would emulate it.

    :param precision: ``"float32"`` (no autocast) or ``"bfloat16"``
    :param device: the device the learner trains on (None: only check the name)
    :return: the dtype of the forward pass, None for float32
    :raises ValueError: an unknown precision
    """
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"training_precision must be one of {sorted(TRAINING_PRECISIONS)}, got {precision!r}")
    dtype = TRAINING_PRECISIONS[precision]
    if dtype is th.bfloat16 and device is not None and not native_bfloat16(device):
        warnings.warn(
            f"training_precision='bfloat16' on {device}, which has no native bfloat16 arithmetic (a CPU needs "
            "AVX512-BF16 or AMX, a GPU compute capability 8.0): it is emulated and likely slower than float32",
            stacklevel=3,
        )
    return dtype


def autocast(device: th.device, dtype: th.dtype | None) -> contextlib.AbstractContextManager[object]:
    """
    ``torch.autocast`` to ``dtype`` on ``device``'s type for a block, or nothing when ``dtype`` is None.

    :param device: where the block computes
    :param dtype: the lower precision (``th.bfloat16``), or None for float32
    """
    if dtype is None:
        return contextlib.nullcontext()
    return th.autocast(device.type, dtype=dtype)


__all__ = ["TRAINING_PRECISIONS", "autocast", "check_training_precision", "native_bfloat16"]
