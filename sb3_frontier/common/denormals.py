"""Denormal (subnormal) floats flushed to zero while training on CPU.

A float32 below 1.18e-38 is denormal, and x86 CPUs take a slow microcode path for every operation that reads or
writes one, often 10-100x slower than a normal float. Training makes them: weight decay shrinks the weights of a unit
that no longer gets a gradient (a dead ReLU) geometrically towards zero, and Adam's second moment of a gradient near
zero underflows the same way. A matrix product that touches them slows down as a whole; on CartPole our MuZero's
gradient steps were 5x slower after 12,000 environment steps than at the start, for that reason alone.

Flushing them to zero (the CPU's flush-to-zero and denormals-are-zero modes, through ``torch.set_flush_denormal``)
changes no number above 1.18e-38 and removes the slow path. The mode is a per-thread CPU register that new threads
inherit from the thread that starts them: :func:`flush_denormals` sets it on the calling thread for a block and puts
back what was there, and :func:`denormals_flushed` reads it, so a worker thread can take its caller's mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch as th

#: float32's smallest normal number: a product below it is denormal unless the CPU flushes it to zero.
_SMALLEST_NORMAL = float(th.finfo(th.float32).tiny)


def denormals_flushed() -> bool:
    """Whether float operations on the calling thread flush denormal results to zero (probed with one product)."""
    product = th.tensor([_SMALLEST_NORMAL], dtype=th.float32) * th.tensor([0.25], dtype=th.float32)
    return bool(product.item() == 0.0)


def set_denormals_flushed(enabled: bool) -> bool:
    """
    Turn flushing of denormal floats on or off for the calling thread (and the threads it starts afterwards).

    :param enabled: flush (True) or keep IEEE denormals (False)
    :return: whether the CPU supports the mode (when it does not, nothing changes)
    """
    return bool(th.set_flush_denormal(enabled))


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """
    Run a block with denormal floats flushed to zero (or not) on the calling thread, then restore the previous mode,
    also when the block raises.

    :param enabled: the mode inside the block
    """
    previous = denormals_flushed()
    if previous == enabled:
        yield
        return
    set_denormals_flushed(enabled)
    try:
        yield
    finally:
        set_denormals_flushed(previous)


__all__ = ["denormals_flushed", "flush_denormals", "set_denormals_flushed"]
