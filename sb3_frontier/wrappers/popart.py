"""PopArt value head: adaptively rescaling targets (ART) while preserving outputs precisely (POP).

References: van Hasselt et al. (2016), "Learning values across many orders of magnitude" (Sec. 2, Algorithm 1);
Hessel et al. (2018), "Multi-task Deep Reinforcement Learning with PopArt" (per-task statistics with
first moment mu and second moment nu, step size beta = 3e-4, sigma clipped to [1e-4, 1e6]).
"""

from __future__ import annotations

import math

import torch as th
from torch import nn


class PopArt(nn.Module):
    """
    Linear value head with PopArt normalisation, one output and one set of statistics per task.

    The head computes the normalised value ``n(x) = w_k . x + b_k`` of task ``k`` and the unnormalised value
    ``v(x) = sigma_k * n(x) + mu_k``. :meth:`update` moves the statistics towards new targets (ART) and
    rescales ``w``, ``b`` so that ``v(x)`` is unchanged for every input (POP). The statistics ``mu``, ``nu``
    (second moment) and ``sigma`` are float64 buffers of shape ``[n_tasks]``: they are saved in the
    ``state_dict`` and follow ``.to(device)`` (like any floating buffer they also follow ``.to(dtype)``;
    :meth:`update` always computes in float64). A fresh head has ``mu = 0``, ``nu = 1``, ``sigma = 1``, the
    identity normalisation. The policy is task-agnostic: the task id only picks the value output and
    the statistics.

    Shape convention: without ``task_ids`` every output has a trailing task dimension, ``[..., n_tasks]``
    (also when ``n_tasks == 1``: nothing is squeezed); with ``task_ids`` of shape ``[...]`` the outputs
    are ``[...]``, the selected task's value.

    Typical use as the value head of a custom actor-critic (any SB3 features extractor, e.g. ``NatureCNN``
    or ``FlattenExtractor``, can provide the features); update the statistics with the unnormalised
    targets first, then compute the loss on normalised targets with a fresh forward pass:

    >>> import torch as th
    >>> from torch import nn
    >>> from sb3_frontier.wrappers.popart import PopArt
    >>> class ActorCritic(nn.Module):
    ...     def __init__(self, obs_dim: int, n_actions: int, n_tasks: int) -> None:
    ...         super().__init__()
    ...         self.torso = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh())
    ...         self.action_net = nn.Linear(64, n_actions)  # task-agnostic policy
    ...         self.value_net = PopArt(64, n_tasks=n_tasks)  # one value output per task
    ...     def forward(self, obs: th.Tensor, task_ids: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    ...         latent = self.torso(obs)
    ...         normalized, value = self.value_net(latent, task_ids)
    ...         return self.action_net(latent), normalized, value
    >>> model = ActorCritic(obs_dim=4, n_actions=2, n_tasks=3)
    >>> optimizer = th.optim.Adam(model.parameters(), lr=1e-3)
    >>> obs, task_ids = th.randn(32, 4), th.randint(0, 3, (32,))
    >>> returns = 1000.0 * th.randn(32)  # unnormalised value targets, e.g. V-trace's v_s
    >>> model.value_net.update(returns, task_ids)  # ART, then POP: v(x) is unchanged
    >>> logits, normalized, value = model(obs, task_ids)  # value = sigma * normalized + mu, for V-trace
    >>> value_loss = 0.5 * (model.value_net.normalize(returns, task_ids) - normalized).pow(2).mean()
    >>> optimizer.zero_grad()
    >>> value_loss.backward()
    >>> optimizer.step()
    >>> normalized.shape, value.shape, model.value_net(th.randn(32, 64))[0].shape
    (torch.Size([32]), torch.Size([32]), torch.Size([32, 3]))

    :meth:`update` rewrites ``weight`` and ``bias`` in place: call it before the forward pass whose output
    is differentiated (a graph built before the update cannot be backpropagated afterwards). POP is
    computed in float64; with float32 parameters each update preserves v(x) up to float32 rounding of
    ``sigma * (w . x + b)``, i.e. about 1e-7 of ``|v(x) - mu| + sigma |w| |x|``. When the targets' mean
    dwarfs the values to preserve, these rounding errors add up over many updates: use ``.double()`` if
    that matters.

    :param in_features: size of the input features
    :param n_tasks: number of tasks, one value output and one set of statistics each
    :param beta: step size of the exponential moving averages of the first and second moments,
        applied once per target element (Hessel et al. 2018 use 3e-4)
    :param sigma_min: lower bound of sigma (Hessel et al. 2018 use 1e-4)
    :param sigma_max: upper bound of sigma (Hessel et al. 2018 use 1e6)
    """

    mu: th.Tensor
    nu: th.Tensor
    sigma: th.Tensor

    def __init__(
        self,
        in_features: int,
        n_tasks: int = 1,
        beta: float = 3e-4,
        sigma_min: float = 1e-4,
        sigma_max: float = 1e6,
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
            raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must satisfy 0 < beta <= 1, got {beta!r}")
        if not (0.0 < sigma_min < sigma_max and math.isfinite(sigma_max)):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        self.in_features = in_features
        self.n_tasks = n_tasks
        self.beta = float(beta)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

        self.weight = nn.Parameter(th.empty(n_tasks, in_features))  # [n_tasks, in_features]
        self.bias = nn.Parameter(th.empty(n_tasks))  # [n_tasks]
        self.reset_parameters()

        mu = th.zeros(n_tasks, dtype=th.float64)
        nu = th.ones(n_tasks, dtype=th.float64)
        self.register_buffer("mu", mu)  # [n_tasks] first moment
        self.register_buffer("nu", nu)  # [n_tasks] second moment
        self.register_buffer("sigma", self._sigma(mu, nu))  # [n_tasks]

    def reset_parameters(self) -> None:
        """
        Initialise ``weight`` and ``bias`` as :class:`torch.nn.Linear` does (the statistics are left alone).
        """
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        """
        :return: the constructor arguments, for ``repr``
        """
        return (
            f"in_features={self.in_features}, n_tasks={self.n_tasks}, beta={self.beta}, "
            f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
        )

    def _sigma(self, mu: th.Tensor, nu: th.Tensor) -> th.Tensor:
        """
        sigma = sqrt(clip(nu - mu^2, sigma_min^2, sigma_max^2)), computed as clip(sqrt(max(nu - mu^2, 0)),
        sigma_min, sigma_max), the same value but exact at the bounds.

        :param mu: first moments, [n_tasks]
        :param nu: second moments, [n_tasks]
        :return: sigma, [n_tasks]
        """
        return th.sqrt(th.clamp(nu - mu * mu, min=0.0)).clamp(self.sigma_min, self.sigma_max)

    def _check_task_ids(self, task_ids: th.Tensor, shape: th.Size, what: str) -> th.Tensor:
        """
        Check that ``task_ids`` is an integer tensor of the given shape with values in [0, n_tasks).

        :param task_ids: task index of each element
        :param shape: the shape ``task_ids`` must have
        :param what: name of the tensor the ids go with, for the error message
        :return: ``task_ids`` as int64 on the statistics' device
        """
        if not isinstance(task_ids, th.Tensor):
            task_ids = th.as_tensor(task_ids)
        if task_ids.dtype == th.bool or task_ids.is_floating_point() or task_ids.is_complex():
            raise ValueError(f"task_ids must be an integer tensor, got dtype {task_ids.dtype}")
        if task_ids.shape != shape:
            raise ValueError(f"task_ids has shape {tuple(task_ids.shape)} but {what} needs shape {tuple(shape)}")
        task_ids = task_ids.to(device=self.mu.device, dtype=th.long)
        if task_ids.numel() > 0:
            low, high = int(task_ids.min()), int(task_ids.max())
            if low < 0 or high >= self.n_tasks:
                raise ValueError(f"task ids must lie in [0, {self.n_tasks}), got values in [{low}, {high}]")
        return task_ids

    def _statistics(self, values: th.Tensor, task_ids: th.Tensor | None, what: str) -> tuple[th.Tensor, th.Tensor]:
        """
        mu and sigma broadcastable against ``values``: gathered per element with ``task_ids``, else along
        the last dimension (which must be n_tasks, or anything when n_tasks == 1).

        :param values: [...] with task_ids, [..., n_tasks] without
        :param task_ids: [...] task index of each element, or None
        :param what: name of ``values``, for error messages
        :return: (mu, sigma), float64, broadcastable against ``values``
        """
        if task_ids is not None:
            ids = self._check_task_ids(task_ids, values.shape, what)
            return self.mu.double()[ids], self.sigma.double()[ids]
        if self.n_tasks > 1 and (values.dim() == 0 or values.shape[-1] != self.n_tasks):
            raise ValueError(
                f"without task_ids, {what} must have shape [..., n_tasks={self.n_tasks}], got {tuple(values.shape)}"
            )
        return self.mu.double(), self.sigma.double()

    def forward(self, features: th.Tensor, task_ids: th.Tensor | None = None) -> tuple[th.Tensor, th.Tensor]:
        """
        Normalised value n(x) = w . x + b and unnormalised value sigma * n(x) + mu.

        :param features: [..., in_features]
        :param task_ids: [...] task of each sample, or None for every task's output
        :return: (normalised, unnormalised), each [...] with task_ids, [..., n_tasks] without
        """
        if features.dim() == 0 or features.shape[-1] != self.in_features:
            raise ValueError(f"features must have shape [..., {self.in_features}], got {tuple(features.shape)}")
        normalized = nn.functional.linear(features, self.weight, self.bias)  # [..., n_tasks]
        if task_ids is not None:
            ids = self._check_task_ids(task_ids, features.shape[:-1], "features[..., 0]").to(normalized.device)
            normalized = th.gather(normalized, -1, ids.unsqueeze(-1)).squeeze(-1)  # [...]
        return normalized, self.unnormalize(normalized, task_ids)

    def normalize(self, targets: th.Tensor, task_ids: th.Tensor | None = None) -> th.Tensor:
        """
        Normalised targets (x - mu) / sigma with each element's task statistics.

        :param targets: unnormalised targets, [...] with task_ids, [..., n_tasks] without
        :param task_ids: [...] task of each target, or None
        :return: normalised targets, shape of ``targets``
        """
        targets = th.as_tensor(targets)
        mu, sigma = self._statistics(targets, task_ids, "targets")
        out_dtype = targets.dtype if targets.is_floating_point() else self.weight.dtype
        return ((targets.double() - mu.to(targets.device)) / sigma.to(targets.device)).to(out_dtype)

    def unnormalize(self, values: th.Tensor, task_ids: th.Tensor | None = None) -> th.Tensor:
        """
        Unnormalised values sigma * x + mu with each element's task statistics.

        :param values: normalised values, [...] with task_ids, [..., n_tasks] without
        :param task_ids: [...] task of each value, or None
        :return: unnormalised values, shape of ``values``
        """
        values = th.as_tensor(values)
        mu, sigma = self._statistics(values, task_ids, "values")
        out_dtype = values.dtype if values.is_floating_point() else self.weight.dtype
        return (sigma.to(values.device) * values.double() + mu.to(values.device)).to(out_dtype)

    @th.no_grad()
    def update(self, targets: th.Tensor, task_ids: th.Tensor | None = None) -> None:
        """
        ART then POP: move the statistics towards ``targets`` and rescale ``weight``, ``bias`` so that the
        unnormalised outputs are unchanged for every input.

        ART applies, once per target element in flattened (row-major) order and for each task over its own
        elements only, mu <- (1 - beta) mu + beta x and nu <- (1 - beta) nu + beta x^2 (Hessel et al. 2018),
        in closed form: for a task with elements x_0..x_{n-1},
        mu' = (1 - beta)^n mu + sum_i beta (1 - beta)^(n - 1 - i) x_i (likewise nu' with x_i^2).
        Then sigma' = sqrt(clip(nu' - mu'^2, sigma_min^2, sigma_max^2)).
        POP (van Hasselt et al. 2016, Sec. 2.1): w' = (sigma / sigma') w and b' = (sigma b + mu - mu') / sigma'.

        :param targets: unnormalised targets, [...] with task_ids, [..., n_tasks] without
            (any shape when n_tasks == 1)
        :param task_ids: [...] task of each target, or None
        """
        targets = th.as_tensor(targets)
        if targets.is_complex():
            raise ValueError(f"targets must be real, got dtype {targets.dtype}")
        if task_ids is not None:
            ids = self._check_task_ids(task_ids, targets.shape, "targets")  # [...]
        elif self.n_tasks == 1:
            ids = th.zeros(targets.shape, dtype=th.long, device=self.mu.device)
        elif targets.dim() == 0 or targets.shape[-1] != self.n_tasks:
            raise ValueError(
                f"without task_ids, targets must have shape [..., n_tasks={self.n_tasks}], got {tuple(targets.shape)}"
            )
        else:
            ids = th.arange(self.n_tasks, device=self.mu.device).expand(targets.shape)  # [..., n_tasks]
        x = targets.to(device=self.mu.device, dtype=th.float64).reshape(-1)  # [N]
        if not bool(th.isfinite(x).all()):
            raise ValueError("PopArt targets contain NaN or inf; the statistics were not updated")
        if x.numel() == 0:
            return
        new_mu, new_nu, counts = self._art(x, ids.reshape(-1))
        if not bool(th.isfinite(new_nu).all()):
            raise ValueError("PopArt second moment overflows float64 for these targets; the statistics were not updated")
        new_sigma = self._sigma(new_mu, new_nu)
        old_mu, old_sigma = self.mu.double().clone(), self.sigma.double().clone()  # copies: the buffers change next
        self.mu.copy_(new_mu)
        self.nu.copy_(new_nu)
        self.sigma.copy_(new_sigma)

        # POP, only for the tasks that received targets (others are left bit-for-bit untouched)
        touched = counts > 0  # [n_tasks]
        scale = th.where(touched, old_sigma / new_sigma, th.ones_like(old_sigma))  # [n_tasks]
        new_bias = (old_sigma * self.bias.double() + old_mu - new_mu) / new_sigma  # [n_tasks]
        new_weight = self.weight.double() * scale.unsqueeze(-1)  # [n_tasks, in_features]
        self.weight.copy_(th.where(touched.unsqueeze(-1), new_weight, self.weight.double()))
        self.bias.copy_(th.where(touched, new_bias, self.bias.double()))

    def _art(self, x: th.Tensor, ids: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Closed form of the per-element EMAs of x and x^2, per task, vectorised (no loop over elements).

        :param x: targets in flattened order, [N] float64
        :param ids: task of each target, [N] int64
        :return: (new mu, new nu, number of targets per task), each [n_tasks]
        """
        counts = th.bincount(ids, minlength=self.n_tasks)  # [n_tasks]
        ids_sorted, order = th.sort(ids, stable=True)  # each task's elements keep their order
        x_sorted = x[order]  # [N]
        starts = th.cumsum(counts, 0) - counts  # [n_tasks] first sorted position of each task
        rank = th.arange(x.numel(), device=x.device) - starts[ids_sorted]  # [N] index i within its task
        later = (counts[ids_sorted] - 1 - rank).double()  # [N] n - 1 - i
        decay = th.tensor(1.0 - self.beta, dtype=th.float64, device=x.device)
        weights = self.beta * th.pow(decay, later)  # [N] beta (1 - beta)^(n - 1 - i)
        keep = th.pow(decay, counts.double())  # [n_tasks] (1 - beta)^n, 1 for a task without targets
        zeros = th.zeros(self.n_tasks, dtype=th.float64, device=x.device)
        new_mu = keep * self.mu.double() + zeros.index_add(0, ids_sorted, weights * x_sorted)
        new_nu = keep * self.nu.double() + zeros.index_add(0, ids_sorted, weights * x_sorted * x_sorted)
        return new_mu, new_nu, counts
