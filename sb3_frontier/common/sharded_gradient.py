"""The gradient of a batch-mean loss computed on shards of the batch in parallel threads.

A CPU learner at one torch thread leaves the other cores idle during a gradient step, and torch's own intra-op threads
pay a barrier at every operation (on a shared machine a descheduled thread stalls all of them). Splitting the batch
into contiguous shards, one Python thread each (torch releases the GIL inside its kernels), gives every core a whole
forward and backward pass to run alone. The shards' gradients are summed in shard order, so a step is reproducible
and equals the whole batch's gradient up to float rounding.

Exact only for losses that are means of per-sample terms: layers that mix samples (batch normalisation) would see
each shard's statistics instead of the batch's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import torch as th

from sb3_frontier.common.denormals import denormals_flushed, set_denormals_flushed

T = TypeVar("T")


def shard_slices(batch_size: int, n_shards: int) -> list[slice]:
    """Contiguous slices of ``range(batch_size)`` into ``min(n_shards, batch_size)`` near-equal parts (the first ones
    one longer where it does not divide)."""
    if batch_size < 1 or n_shards < 1:
        raise ValueError(f"batch_size and n_shards must be >= 1, got {batch_size} and {n_shards}")
    n_shards = min(n_shards, batch_size)
    base, extra = divmod(batch_size, n_shards)
    slices, start = [], 0
    for i in range(n_shards):
        stop = start + base + (i < extra)
        slices.append(slice(start, stop))
        start = stop
    return slices


class ShardedGradient(Generic[T]):
    """
    Write into ``parameter.grad`` the gradient of a loss that is the mean over a batch, computing it on shards of the
    batch in ``n_threads`` threads (the calling thread takes the first shard).

    ``shard_loss(shard)`` returns the *mean* loss over the samples ``shard`` (a slice of the batch) and anything else
    the caller wants back from that shard; the shard's gradient is that of ``loss * len(shard) / batch_size``, so the
    sum over the shards is the gradient of the whole batch's mean. Parameters a shard's loss does not reach get a zero
    gradient. With ``n_threads == 1`` this is one ``backward`` of the whole batch's loss.

    :param parameters: the parameters to differentiate (their ``grad`` is overwritten)
    :param n_threads: threads, hence shards, per step (at most the batch size)
    """

    def __init__(self, parameters: Sequence[th.nn.Parameter], n_threads: int = 1) -> None:
        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self.parameters = [p for p in parameters if p.requires_grad]
        self.n_threads = n_threads
        self._pool: ThreadPoolExecutor | None = None
        self._torch_threads = 1
        self._flush_denormals = False
        self._warned = False

    def _shard_gradient(
        self, shard_loss: Callable[[slice], tuple[th.Tensor, T]], shard: slice, batch_size: int
    ) -> tuple[tuple[th.Tensor | None, ...], th.Tensor, T]:
        # Worker threads start with torch's defaults; run each at the caller's intra-op thread count and denormal mode.
        th.set_num_threads(self._torch_threads)
        set_denormals_flushed(self._flush_denormals)
        loss, extra = shard_loss(shard)
        fraction = (shard.stop - shard.start) / batch_size
        grads = th.autograd.grad(loss * fraction, self.parameters, allow_unused=True)
        return grads, loss.detach() * fraction, extra

    def __call__(self, batch_size: int, shard_loss: Callable[[slice], tuple[th.Tensor, T]]) -> tuple[th.Tensor, list[T]]:
        """
        Compute the gradient of the batch's mean loss into the parameters' ``grad``.

        :param batch_size: samples in the batch
        :param shard_loss: ``shard -> (mean loss over the shard, extra)``
        :return: the whole batch's mean loss (detached) and the shards' extras, in shard order
        """
        slices = shard_slices(batch_size, self.n_threads)
        if len(slices) == 1:
            loss, extra = shard_loss(slices[0])
            for p in self.parameters:
                p.grad = None
            loss.backward()
            for p in self.parameters:
                if p.grad is None:
                    p.grad = th.zeros_like(p)
            return loss.detach(), [extra]
        self._torch_threads = th.get_num_threads()
        self._flush_denormals = denormals_flushed()
        cores = os.cpu_count() or 1
        if not self._warned and len(slices) * self._torch_threads > cores:
            self._warned = True
            warnings.warn(
                f"{len(slices)} gradient threads at {self._torch_threads} torch threads each oversubscribe the "
                f"{cores} cores: call torch.set_num_threads(1) (or lower the gradient threads)",
                stacklevel=3,
            )
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(slices) - 1, thread_name_prefix="sharded-gradient")
        futures = [self._pool.submit(self._shard_gradient, shard_loss, s, batch_size) for s in slices[1:]]
        try:
            results = [self._shard_gradient(shard_loss, slices[0], batch_size)]
        finally:
            results += [future.result() for future in futures]  # waits for every shard, raising the first error
        total_loss = results[0][1]
        for _, shard_loss_value, _ in results[1:]:
            total_loss = total_loss + shard_loss_value
        for i, p in enumerate(self.parameters):
            grad = None
            for grads, _, _ in results:
                g = grads[i]
                if g is not None:
                    grad = g.clone() if grad is None else grad.add_(g)
            p.grad = th.zeros_like(p) if grad is None else grad
        return total_loss, [extra for _, _, extra in results]

    def close(self) -> None:
        """Stop the worker threads (a later call starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state


__all__ = ["ShardedGradient", "shard_slices"]
