"""
Batched MuZero search (Schrittwieser et al. 2020), with the inputs of mctx's ``muzero_policy``.

The search runs ``num_simulations`` simulations on ``B`` roots at once. Each simulation makes exactly one call of
``recurrent_fn`` for the whole batch (the batched network call), one conversion of its outputs to numpy and one
kernel call; the tree lives in fixed-shape numpy arrays ``[B, num_simulations + 1, ...]`` and the set-up (root prior
and noise), selection, expansion, backup and read-out (visit counts, acting weights, the action draw) run in
numba-compiled kernels batched over ``B`` (:mod:`sb3_frontier.algorithms.muzero._tree`), so the Python cost of a
search does not grow with ``B``.

Semantics follow the paper's pseudocode (supplementary material, ``run_mcts``):

- pUCT (Appendix B, eq. 2): ``Qnorm(s, a) + P(s, a) sqrt(N(s)) / (1 + N(s, a)) (c1 + log((N(s) + c2 + 1) / c2))``
  with ``c1 = pb_c_init = 1.25`` and ``c2 = pb_c_base = 19652``; an unexpanded child scores ``Qnorm = 0``
  (``unvisited_value="zero"``, the pseudocode) or the normalised value of its parent (``"parent"``); ties go
  to the lowest action index (the pseudocode's ``max`` over tuples would take the highest).
- ``Q(s, a) = r(s, a) + discount(s, a) V(child)`` is min-max normalised with the statistics of the root's whole
  tree, updated during backup with ``r + discount V(node)`` for every node on the path (the root counts as
  reward 0, discount 1, so its entry is ``V(root)``); normalisation is the identity while ``max <= min``.
  ``known_bounds=(lo, hi)`` (the pseudocode's ``MinMaxStats(known_bounds)``, for games whose values are known to lie
  in ``[lo, hi]``, e.g. ``(-1, 1)`` for board games) starts the statistics at ``min = lo``, ``max = hi`` instead of
  empty: normalisation is then on from the first simulation, and Q values outside the bounds still widen them.
- Backup (eq. 3-4): ``G = v(leaf)``; walking up, ``value_sum += G``, ``N += 1``, then ``G = r + discount G`` with
  the reward and discount of the edge into the node, both given by ``recurrent_fn`` (mctx's convention).
  **Two-player zero-sum games**: return ``discount = -1`` (times the game's discount) so that values flip
  perspective at every ply; every node's value is then from the point of view of the player to move there, and
  ``Q(s, a)`` from the point of view of the player choosing ``a``.
- The root's network value is stored but not backed up: ``search_value`` is the mean of the ``num_simulations``
  backed-up returns, as ``root.value()`` in the pseudocode (mctx also averages in the root's network value).
- Root prior: ``softmax(prior_logits)`` over the legal actions; Dirichlet noise over the legal actions only,
  ``(1 - fraction) P + fraction Dir(alpha)``. Illegal root actions are never selected. Interior nodes are not masked.
- The first simulation (``N(root) = 0``) scores every root action 0 and takes the lowest legal action, as the
  pseudocode does (mctx counts the root's network evaluation as one visit instead).
- ``max_depth``: a simulation that reaches ``max_depth`` edges at an already expanded node evaluates that node with
  its stored network value (what a deterministic model returns again) and leaves the tree's shape unchanged.

On the CPU the parent embeddings handed to ``recurrent_fn`` live in one buffer that the search refills for the next
simulation: a ``recurrent_fn`` that keeps its input beyond the call must copy it (returning it, or a view of it, as
the next embedding is fine). The search builds no autograd graph (the recurrent calls run under ``torch.no_grad()``).

Example (a tiny MLP model used as ``recurrent_fn``)::

    import numpy as np
    import torch
    from sb3_frontier.algorithms.muzero import mcts

    B, A, H = 4, 3, 8
    torch.manual_seed(0)
    dynamics = torch.nn.Linear(H + A, H)
    heads = torch.nn.Linear(H, A + 2)  # policy logits, value, reward

    def recurrent_fn(embedding, action):
        x = torch.cat([embedding, torch.nn.functional.one_hot(action, A).float()], dim=1)
        next_embedding = torch.tanh(dynamics(x))
        out = heads(next_embedding)
        discount = torch.full((len(action),), 0.997)
        return mcts.RecurrentFnOutput(out[:, A + 1], discount, out[:, :A], out[:, A]), next_embedding

    embedding = torch.randn(B, H)
    out = heads(embedding)
    root = mcts.RootFnOutput(prior_logits=out[:, :A], value=out[:, A], embedding=embedding)
    result = mcts.muzero_policy(root, recurrent_fn, num_simulations=16, rng=np.random.default_rng(0))
    result.action          # [B] int64, sampled from result.action_weights
    result.visit_counts    # [B, A], each row sums to 16
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from sb3_frontier.algorithms.muzero import _tree

ArrayLike = Any  # a torch.Tensor or a numpy array


class RootFnOutput(NamedTuple):
    """
    The network's initial inference on the ``B`` roots (mctx's ``RootFnOutput``).

    :param prior_logits: policy logits ``[B, A]``
    :param value: value ``[B]`` (stored in the tree; the pseudocode does not back it up)
    :param embedding: hidden states ``[B, *embedding_shape]``, a torch tensor or a numpy array
    """

    prior_logits: ArrayLike
    value: ArrayLike
    embedding: ArrayLike


class RecurrentFnOutput(NamedTuple):
    """
    What ``recurrent_fn`` returns beside the next embedding (mctx's ``RecurrentFnOutput``).

    :param reward: reward of the transition ``[B]``
    :param discount: discount of the transition ``[B]`` (``-1`` for two-player zero-sum games, ``0`` past a terminal)
    :param prior_logits: policy logits of the new state ``[B, A]``
    :param value: value of the new state ``[B]``
    """

    reward: ArrayLike
    discount: ArrayLike
    prior_logits: ArrayLike
    value: ArrayLike


class SearchTree(NamedTuple):
    """
    The search tree of ``B`` roots in fixed-shape arrays, ``N = num_simulations + 1`` nodes, node 0 = root.

    The node created by simulation ``s`` (0-based) has index ``s + 1``. ``reward``/``discount`` are those of the
    edge into the node (root: 0 and 1). Entries of nodes a depth-limited search never created hold the initial values
    (visits 0, parent -1, no children, prior 0). The per-edge arrays are contiguous; the per-node ones are views into
    the packed storage the kernels use (fields of one node side by side in memory), hence not contiguous.

    :param children: child node index per edge, -1 if unexpanded ``[B, N, A]`` int32
    :param prior: P(s, a) ``[B, N, A]`` float64 (the root's row is masked and noised)
    :param child_visits: N(s, a), the visits of the child ``[B, N, A]`` int32
    :param child_q: Q(s, a) = r(s, a) + discount(s, a) V(child) for visited children, else 0 ``[B, N, A]`` float64
    :param visits: N(s) ``[B, N]`` int32
    :param value_sum: sum of backed-up returns ``[B, N]`` float64
    :param reward: reward of the edge into the node ``[B, N]`` float64
    :param discount: discount of the edge into the node ``[B, N]`` float64
    :param raw_value: the network's value of the node ``[B, N]`` float64
    :param parents: parent node index, -1 for the root ``[B, N]`` int32
    :param action_from_parent: action leading into the node, -1 for the root ``[B, N]`` int32
    :param depth: number of edges from the root ``[B, N]`` int32
    :param minmax: (minimum, maximum) of the tree's Q statistics, ``known_bounds`` included ``[B, 2]`` float64
    :param root_legal: legal root actions ``[B, A]`` bool
    :param embeddings: embedding store ``[B, N, *embedding_shape]`` (torch tensor or numpy array, as the root's)
    """

    children: np.ndarray
    prior: np.ndarray
    child_visits: np.ndarray
    child_q: np.ndarray
    visits: np.ndarray
    value_sum: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    raw_value: np.ndarray
    parents: np.ndarray
    action_from_parent: np.ndarray
    depth: np.ndarray
    minmax: np.ndarray
    root_legal: np.ndarray
    embeddings: ArrayLike


class SearchOutput(NamedTuple):
    """
    Result of :func:`muzero_policy` (numpy arrays).

    :param action: action to play ``[B]`` int64, drawn from ``action_weights``
    :param action_weights: ``visit_counts^(1/T)`` normalised over the legal actions ``[B, A]``
        (temperature 0: one-hot on ``action``)
    :param visit_counts: root visit counts N(root, a) ``[B, A]`` int64, summing to ``num_simulations``
    :param visit_probs: visit counts normalised (temperature 1), MuZero's policy target ``[B, A]``
    :param search_value: mean backed-up return at the root ``[B]``
    :param root_q: ``r(root, a) + discount(root, a) V(child)`` for visited children, 0 for unvisited ones ``[B, A]``
    :param root_prior: prior the search used at the root (masked, with noise) ``[B, A]``
    :param max_depth: deepest node of each tree, in edges from the root ``[B]`` int64
    :param tree: the whole search tree
    """

    action: np.ndarray
    action_weights: np.ndarray
    visit_counts: np.ndarray
    visit_probs: np.ndarray
    search_value: np.ndarray
    root_q: np.ndarray
    root_prior: np.ndarray
    max_depth: np.ndarray
    tree: SearchTree


@dataclass
class SearchTimings:
    """
    Wall-clock accumulators of :func:`muzero_policy` (pass one as ``timings=`` to turn timing on).

    :param searches: number of calls timed
    :param simulations: number of simulations timed
    :param total_s: total time in the search
    :param network_s: time inside ``recurrent_fn`` (the network)
    :param kernel_s: time in the compiled kernels (set-up, selection/expansion/backup, read-out)
    """

    searches: int = 0
    simulations: int = 0
    total_s: float = 0.0
    network_s: float = 0.0
    kernel_s: float = 0.0

    @property
    def bookkeeping_s(self) -> float:
        """Time spent outside the network: kernels, set-up, embedding gather/store and output conversion."""
        return self.total_s - self.network_s

    @property
    def bookkeeping_fraction(self) -> float:
        """Share of the search time spent outside the network."""
        return self.bookkeeping_s / self.total_s if self.total_s > 0 else 0.0

    def reset(self) -> None:
        """Zero every accumulator."""
        self.searches = self.simulations = 0
        self.total_s = self.network_s = self.kernel_s = 0.0


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """Convert a torch tensor or array-like to a numpy array (no copy for CPU tensors)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype not in (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool):
            x = x.double()
        return x.cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - only reached with exotic inputs
        raise ValueError(f"{name} must be a torch tensor or a numpy array, got {type(x).__name__}") from exc


def _host_float(x: ArrayLike) -> np.ndarray:
    """Conversion of one network output to a float32/float64 numpy array (no copy for CPU tensors)."""
    if isinstance(x, torch.Tensor):
        try:
            a = x.numpy()
        except (RuntimeError, TypeError):  # requires grad, another device, or a dtype numpy lacks
            a = x.detach().cpu().double().numpy()
    else:
        a = np.asarray(x)
    if a.dtype.char not in "fd":
        a = a.astype(np.float64)
    return a


def _recurrent_arrays(out: Any, shapes: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    Convert one ``recurrent_fn`` output to numpy and check its shapes: called once per simulation.

    CPU torch tensors of float32/float64 take the fast path (views, no copy); accelerator tensors are packed and
    moved to the host with one transfer.

    :param out: the ``RecurrentFnOutput`` (or any object with its four fields)
    :param shapes: expected shapes of prior_logits, value, reward and discount
    :return: prior_logits, value, reward, discount as float32/float64 numpy arrays
    """
    logits, value, reward, discount = out.prior_logits, out.value, out.reward, out.discount
    try:
        arrays = (logits.numpy(), value.numpy(), reward.numpy(), discount.numpy())
        fast = (arrays[0].dtype.char + arrays[1].dtype.char + arrays[2].dtype.char + arrays[3].dtype.char) in _FLOAT_CHARS
    except (AttributeError, RuntimeError, TypeError):
        fast = False
    if not fast:
        if isinstance(logits, torch.Tensor) and not logits.is_cpu:
            # One device -> host transfer for the four outputs.
            scalars = torch.stack([torch.as_tensor(x, device=logits.device) for x in (value, reward, discount)], dim=-1)
            host = torch.cat([logits.double(), scalars.double()], dim=-1).cpu().numpy()
            num_actions = host.shape[-1] - 3
            arrays = (host[..., :num_actions], host[..., num_actions], host[..., num_actions + 1], host[..., num_actions + 2])
        else:
            arrays = (_host_float(logits), _host_float(value), _host_float(reward), _host_float(discount))
    if (arrays[0].shape, arrays[1].shape, arrays[2].shape, arrays[3].shape) != shapes:
        for name, x, shape in zip(("prior_logits", "value", "reward", "discount"), arrays, shapes, strict=True):
            if x.shape != shape:
                raise ValueError(f"recurrent_fn returned {name} of shape {x.shape}, expected {shape}")
    return arrays


# Empty stand-ins for the Gamma draws without noise and the uniform draws at temperature 0.
_NO_NOISE = np.empty((0, 0), dtype=np.float64)
_NO_DRAWS = np.empty(0, dtype=np.float64)

# dtype characters of four float32/float64 arrays, the combinations the kernels take as they are
_FLOAT_CHARS = frozenset(a + b + c + d for a in "fd" for b in "fd" for c in "fd" for d in "fd")


def _numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """The numpy dtype of a torch dtype, None if numpy has none."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


def _kernel_dtype(dtype: np.dtype | None) -> bool:
    """Whether the kernels can gather embeddings of this numpy dtype (numbers and booleans, float16 excepted)."""
    return dtype is not None and dtype.kind in "fiub" and dtype != np.float16


class _EmbeddingStore:
    """
    Embeddings of every node ``[B, N, *embedding_shape]`` on the root embedding's device and dtype.

    On the CPU (torch or numpy, numeric dtypes) the kernels do the copying: the selection kernel gathers the parent
    embeddings of the next simulation into ``input`` (one ``[B, *embedding_shape]`` buffer, sharing memory with numpy,
    refilled every simulation) and the expansion kernel writes the new nodes' embeddings into the store. Elsewhere
    (accelerators, dtypes numpy lacks) one ``index_select`` and one ``copy_`` per simulation do it on the device.

    :param embedding: root embeddings ``[B, *embedding_shape]``
    :param num_simulations: S; the store has ``N = S + 1`` nodes
    """

    def __init__(self, embedding: ArrayLike, num_simulations: int) -> None:
        batch_size = embedding.shape[0]
        self.shape = tuple(embedding.shape)
        self.batch_size = batch_size
        num_nodes = num_simulations + 1
        self.is_torch = isinstance(embedding, torch.Tensor)
        if self.is_torch:
            self.np_dtype = _numpy_dtype(embedding.dtype) if embedding.is_cpu else None
            self.store: ArrayLike = torch.empty(
                (batch_size, num_nodes, *self.shape[1:]), dtype=embedding.dtype, device=embedding.device
            )
            self.store[:, 0] = embedding.detach()
        else:
            embedding = np.asarray(embedding)
            self.np_dtype = embedding.dtype
            self.store = np.empty((batch_size, num_nodes, *self.shape[1:]), dtype=embedding.dtype)
            self.store[:, 0] = embedding
        self.kernel_gather = _kernel_dtype(self.np_dtype)
        if self.kernel_gather:
            self.input: ArrayLike = self.store[:, 0].clone() if self.is_torch else self.store[:, 0].copy()
            host_store = self.store.numpy() if self.is_torch else self.store
            self.kernel_store = host_store.reshape(batch_size, num_nodes, -1)
            self.kernel_input = (self.input.numpy() if self.is_torch else self.input).reshape(batch_size, -1)
        else:
            # The kernels then copy nothing (E = 0); `device_gather` and `host_embedding` do the work.
            self.kernel_store = np.zeros((batch_size, num_nodes, 0), dtype=np.float32)
            self.kernel_input = np.zeros((batch_size, 0), dtype=np.float32)
            self.node_offset = np.arange(batch_size, dtype=np.int64) * num_nodes

    def device_gather(self, parent: np.ndarray, action: np.ndarray) -> tuple[ArrayLike, ArrayLike]:
        """Parent embeddings and actions on the store's device, for stores the kernels do not gather from."""
        if self.is_torch:
            index = torch.from_numpy(np.stack([parent + self.node_offset, action])).to(self.store.device)
            flat = self.store.view(-1, *self.shape[1:])
            return flat.index_select(0, index[0]), index[1]
        return self.store.reshape(-1, *self.shape[1:])[parent + self.node_offset], action.copy()

    def host_embedding(self, node: int, embedding: ArrayLike) -> np.ndarray:
        """The new nodes' embeddings ``[B, E]`` for the expansion kernel to store (or stored here on the device)."""
        if self.kernel_gather:
            try:
                host = embedding.numpy()  # CPU torch tensor: a view
            except (AttributeError, RuntimeError, TypeError):
                host = _to_numpy(embedding, "embedding")
            if host.shape != self.shape:
                raise ValueError(f"recurrent_fn returned an embedding of shape {host.shape}, expected {self.shape}")
            if host.dtype != self.np_dtype:
                host = host.astype(self.np_dtype)
            return host if host.ndim == 2 else host.reshape(self.batch_size, -1)
        if tuple(embedding.shape) != self.shape:
            raise ValueError(f"recurrent_fn returned an embedding of shape {tuple(embedding.shape)}, expected {self.shape}")
        if not self.is_torch:
            self.store[:, node] = _to_numpy(embedding, "embedding")
        elif isinstance(embedding, torch.Tensor):
            self.store[:, node].copy_(embedding)
        else:
            self.store[:, node].copy_(torch.as_tensor(np.asarray(embedding)))
        return self.kernel_input


def temperature_weights(
    visit_counts: ArrayLike,
    temperature: float,
    invalid_actions: ArrayLike | None = None,
    prior: ArrayLike | None = None,
) -> np.ndarray:
    """
    Acting distribution from root visit counts: ``N(a)^(1/T) / sum_b N(b)^(1/T)`` over the legal actions.

    Computed in log space so that small temperatures do not overflow. Temperature 0 gives a one-hot on the
    most-visited legal action (ties: highest ``prior``, then lowest index). A row whose legal actions all have
    zero visits gets the uniform distribution over its legal actions.

    :param visit_counts: root visit counts ``[B, A]``
    :param temperature: T >= 0
    :param invalid_actions: ``[B, A]`` bool, True = illegal (mctx convention), or None
    :param prior: ``[B, A]`` tie-break for temperature 0, or None
    :return: weights ``[B, A]`` float64, 0 on illegal actions, rows summing to 1
    """
    counts = _to_numpy(visit_counts, "visit_counts").astype(np.float64)
    if counts.ndim != 2:
        raise ValueError(f"visit_counts must have shape [B, A], got {counts.shape}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("visit_counts must be finite and non-negative")
    legal = _legal_mask(invalid_actions, counts.shape)
    p = None if prior is None else _to_numpy(prior, "prior").astype(np.float64)
    if p is not None and p.shape != counts.shape:
        raise ValueError(f"prior must have shape {counts.shape}, got {p.shape}")
    return _temperature_weights(counts, temperature, legal, p)


def _temperature_weights(counts: np.ndarray, temperature: float, legal: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """:func:`temperature_weights` on checked inputs: float64 counts ``[B, A]``, legal mask, prior or None."""
    if temperature == 0.0:
        weights = np.zeros_like(counts)
        weights[np.arange(len(counts)), _argmax_visits(counts, legal, prior)] = 1.0
        return weights
    positive = legal & (counts > 0)
    with np.errstate(divide="ignore"):
        log_w = np.where(positive, np.log(np.where(positive, counts, 1.0)) / temperature, -np.inf)
    none = ~positive.any(axis=1)
    if none.any():
        log_w[none] = np.where(legal[none], 0.0, -np.inf)
    log_w -= log_w.max(axis=1, keepdims=True)
    weights = np.exp(log_w)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


def select_action(
    visit_counts: ArrayLike,
    temperature: float,
    rng: np.random.Generator | None = None,
    invalid_actions: ArrayLike | None = None,
    prior: ArrayLike | None = None,
) -> np.ndarray:
    """
    Pick actions from root visit counts with a temperature (MuZero's visit-count softmax, Appendix D).

    ``T > 0``: sample ``a ~ N(a)^(1/T) / sum_b N(b)^(1/T)`` over the legal actions (:func:`temperature_weights`).
    ``T = 0``: the most-visited legal action, ties broken by the highest ``prior``, then the lowest index.
    Illegal actions are never chosen.

    :param visit_counts: root visit counts ``[B, A]``
    :param temperature: T >= 0
    :param rng: random generator (a fresh one if None)
    :param invalid_actions: ``[B, A]`` bool, True = illegal, or None
    :param prior: ``[B, A]`` tie-break for temperature 0, or None
    :return: actions ``[B]`` int64
    """
    weights = temperature_weights(visit_counts, temperature, invalid_actions, prior)
    if temperature == 0.0:
        return weights.argmax(axis=1).astype(np.int64)
    return _sample(weights, np.random.default_rng() if rng is None else rng)


def _legal_mask(invalid_actions: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """Legal-action mask ``[B, A]`` from mctx's ``invalid_actions`` (True = illegal); every row needs a legal action."""
    if invalid_actions is None:
        return np.ones(shape, dtype=bool)
    invalid = _to_numpy(invalid_actions, "invalid_actions")
    if invalid.shape != shape:
        raise ValueError(f"invalid_actions must have shape {shape}, got {invalid.shape}")
    legal = ~invalid.astype(bool)
    empty = np.flatnonzero(~legal.any(axis=1))
    if len(empty) > 0:
        raise ValueError(f"roots {empty.tolist()} have no legal action (invalid_actions is True everywhere)")
    return legal


def _argmax_visits(counts: np.ndarray, legal: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """Most-visited legal action per row; ties by the highest prior, then the lowest index."""
    masked = np.where(legal, counts, -1.0)
    is_best = masked == masked.max(axis=1, keepdims=True)
    if prior is None:
        return is_best.argmax(axis=1).astype(np.int64)
    return np.where(is_best, prior, -np.inf).argmax(axis=1).astype(np.int64)


def _sample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one index per row of ``weights`` ``[B, A]``; zero-weight entries are never drawn."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random((len(weights), 1)) * cdf[:, -1:]
    action = (cdf <= u).sum(axis=1)
    # Guard against u rounding up to the total: fall back to the last action with positive weight.
    last_positive = weights.shape[1] - 1 - (weights[:, ::-1] > 0).argmax(axis=1)
    return np.minimum(action, last_positive).astype(np.int64)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_known_bounds(known_bounds: Any) -> tuple[float, float]:
    """The initial (minimum, maximum) of the Q statistics: ``known_bounds`` checked, or (inf, -inf) (empty) if None."""
    if known_bounds is None:
        return math.inf, -math.inf
    try:
        lo, hi = (float(x) for x in known_bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"known_bounds must be a pair (lo, hi) of numbers, got {known_bounds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"known_bounds must be finite with lo < hi, got {known_bounds!r}")
    return lo, hi


def _check_inputs(
    root: RootFnOutput,
    invalid_actions: ArrayLike | None,
    dirichlet_alpha: float,
    dirichlet_fraction: float,
    pb_c_init: float,
    pb_c_base: float,
    temperature: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the root and the hyperparameters; return root logits, value (float64) and the legal mask."""
    logits = _to_numpy(root.prior_logits, "root.prior_logits").astype(np.float64)
    value = _to_numpy(root.value, "root.value").astype(np.float64)
    if logits.ndim != 2 or logits.shape[1] < 1 or logits.shape[0] < 1:
        raise ValueError(f"root.prior_logits must have shape [B, A] with B, A >= 1, got {logits.shape}")
    batch_size = logits.shape[0]
    if value.shape != (batch_size,):
        raise ValueError(f"root.value must have shape [B] = ({batch_size},), got {value.shape}")
    emb_shape = tuple(root.embedding.shape)
    if len(emb_shape) < 1 or emb_shape[0] != batch_size:
        raise ValueError(f"root.embedding must have shape [B, ...] with B = {batch_size}, got {emb_shape}")
    legal = _legal_mask(invalid_actions, logits.shape)
    if not np.all(np.isfinite(logits[legal])):
        raise ValueError("root.prior_logits holds non-finite numbers on legal actions")
    if not np.all(np.isfinite(value)):
        raise ValueError("root.value holds non-finite numbers")
    if not 0.0 <= dirichlet_fraction <= 1.0:
        raise ValueError(f"dirichlet_fraction must be in [0, 1], got {dirichlet_fraction}")
    if dirichlet_fraction > 0.0 and not dirichlet_alpha > 0.0:
        raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}")
    if not (np.isfinite(pb_c_init) and pb_c_init >= 0.0):
        # c1 < 0 would make the exploration term negative at small N(s): the selection (which scores only the unvisited
        # child of highest prior) assumes it is not, and the pseudocode's pUCT has c1 > 0.
        raise ValueError(f"pb_c_init must be a finite number >= 0, got {pb_c_init}")
    if not (np.isfinite(pb_c_base) and pb_c_base > 0.0):
        raise ValueError(f"pb_c_base must be a finite number > 0, got {pb_c_base}")
    if not np.isfinite(temperature) or temperature < 0.0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    return logits, value, legal


def muzero_policy(
    root: RootFnOutput,
    recurrent_fn: Callable[[ArrayLike, ArrayLike], tuple[Any, ArrayLike]],
    num_simulations: int,
    *,
    invalid_actions: ArrayLike | None = None,
    dirichlet_alpha: float = 0.25,
    dirichlet_fraction: float = 0.25,
    pb_c_init: float = 1.25,
    pb_c_base: float = 19652.0,
    temperature: float = 1.0,
    rng: np.random.Generator | None = None,
    max_depth: int | None = None,
    unvisited_value: str = "zero",
    known_bounds: tuple[float, float] | None = None,
    timings: SearchTimings | None = None,
) -> SearchOutput:
    """
    Run MuZero's search on ``B`` roots at once and pick an action from the root visit counts.

    See the module docstring for the exact semantics (paper pseudocode, per-edge discounts, two-player use with
    ``discount = -1``, tie-breaking, ``max_depth``). The recurrent calls run under ``torch.no_grad()``.

    :param root: root prior logits ``[B, A]``, value ``[B]`` and embedding ``[B, ...]`` (torch or numpy)
    :param recurrent_fn: ``(embedding [B, ...], action [B] int64) -> (RecurrentFnOutput, next_embedding [B, ...])``,
        called once per simulation on the whole batch; the action has the embedding's type (a torch tensor on the
        embedding's device, or a numpy array); the outputs may be torch tensors or numpy arrays; the embedding batch
        is a buffer refilled for the next simulation (copy it to keep it)
    :param num_simulations: number of simulations (>= 1), i.e. of ``recurrent_fn`` calls
    :param invalid_actions: ``[B, A]`` bool, True = illegal at the root (mctx convention), or None
    :param dirichlet_alpha: root Dirichlet noise concentration (0.25 for Atari in the paper)
    :param dirichlet_fraction: root noise weight (0.25 in the paper); 0 turns noise off
    :param pb_c_init: pUCT constant c1 (finite, >= 0)
    :param pb_c_base: pUCT constant c2 (finite, > 0)
    :param temperature: visit-count temperature of the acting distribution; 0 = most visited action
    :param rng: random generator for the noise and the action draw (a fresh one if None)
    :param max_depth: maximum number of edges a simulation descends (None: unlimited)
    :param unvisited_value: Q of an unvisited child in pUCT: ``"zero"`` (the paper's pseudocode: normalised Q = 0) or
        ``"parent"`` (the parent's own value V(s), normalised like the other Q values; as mctx's default
        ``qtransform_by_parent_and_siblings`` and EfficientZero do), which keeps few-simulation searches from
        following the first visited child
    :param known_bounds: ``(lo, hi)`` with finite ``lo < hi``: the initial minimum and maximum of the Q statistics
        (the pseudocode's ``MinMaxStats(known_bounds)``); None: start empty (normalisation off until two values differ)
    :param timings: accumulators to add this call's timings to (None: no timing)
    :return: actions, acting weights, visit counts, search values, root Q values and the tree
    """
    timed = timings is not None
    t_start = time.perf_counter() if timed else 0.0
    num_simulations = _check_positive_int(num_simulations, "num_simulations")
    depth_limit = num_simulations + 1 if max_depth is None else _check_positive_int(max_depth, "max_depth")
    if unvisited_value not in ("zero", "parent"):
        raise ValueError(f"unvisited_value must be 'zero' or 'parent', got {unvisited_value!r}")
    unvisited_parent = unvisited_value == "parent"
    bounds = _check_known_bounds(known_bounds)
    root_logits, root_value, legal = _check_inputs(
        root, invalid_actions, dirichlet_alpha, dirichlet_fraction, pb_c_init, pb_c_base, temperature
    )
    rng = np.random.default_rng() if rng is None else rng
    batch_size, num_actions = root_logits.shape
    num_nodes = num_simulations + 1
    # Dirichlet noise: Gamma(alpha, 1) draws for every root action (the kernel keeps the legal ones).
    gamma = rng.standard_gamma(dirichlet_alpha, size=(batch_size, num_actions)) if dirichlet_fraction > 0.0 else _NO_NOISE

    # Tree storage (see `_tree`): the kernels write every entry before reading it, so nothing is initialised here.
    edge_shape = (batch_size, num_nodes, num_actions)
    prior = np.empty(edge_shape, dtype=np.float64)
    child_q = np.empty(edge_shape, dtype=np.float64)
    children = np.empty(edge_shape, dtype=np.int32)
    child_visits = np.empty(edge_shape, dtype=np.int32)
    visited = np.empty(edge_shape, dtype=np.int32)
    node_f = np.empty((batch_size, num_nodes, _tree.NUM_NODE_F), dtype=np.float64)
    node_i = np.empty((batch_size, num_nodes, _tree.NUM_NODE_I), dtype=np.int32)
    minmax = np.empty((batch_size, 2), dtype=np.float64)
    puct = np.empty((num_nodes, num_nodes), dtype=np.float64)
    # Per-simulation indices [4, S, B]: parent node, action, evaluated node (sim + 1, or an existing node at
    # max_depth), its depth; the nodes on the current simulation's path [B, N].
    sim_index = np.empty((4, num_simulations, batch_size), dtype=np.int64)
    path = np.empty((batch_size, num_nodes), dtype=np.int64)
    embeddings = _EmbeddingStore(root.embedding, num_simulations)
    kernel_store, kernel_input = embeddings.kernel_store, embeddings.kernel_input
    kernel_gather = embeddings.kernel_gather
    shapes = ((batch_size, num_actions), (batch_size,), (batch_size,), (batch_size,))
    if kernel_gather:
        parent_input = embeddings.input
        # Actions as torch tensors sharing memory with `sim_index` (no copy per simulation), or numpy rows.
        actions = torch.from_numpy(sim_index[1]).unbind(0) if embeddings.is_torch else list(sim_index[1])

    with torch.no_grad():
        if timed:
            t0 = time.perf_counter()
        _tree.init_tree(
            root_logits, root_value, legal, gamma, dirichlet_fraction, pb_c_init, pb_c_base, bounds[0], bounds[1], prior,
            children, node_f, node_i, visited, minmax, puct, depth_limit, unvisited_parent, sim_index, path,
            kernel_store, kernel_input,
        )  # fmt: skip
        if timed:
            timings.kernel_s += time.perf_counter() - t0  # type: ignore[union-attr]
        for sim in range(num_simulations):
            if kernel_gather:
                parent_embedding, action = parent_input, actions[sim]
            else:
                parent_embedding, action = embeddings.device_gather(sim_index[0, sim], sim_index[1, sim])
            if timed:
                t1 = time.perf_counter()
            out, next_embedding = recurrent_fn(parent_embedding, action)
            if timed:
                t2 = time.perf_counter()
                timings.network_s += t2 - t1  # type: ignore[union-attr]
            net_logits, net_value, net_reward, net_discount = _recurrent_arrays(out, shapes)
            net_embedding = embeddings.host_embedding(sim + 1, next_embedding)
            if timed:
                t3 = time.perf_counter()
            error = _tree.step(
                prior, children, node_f, node_i, visited, minmax, legal, puct, depth_limit, unvisited_parent, sim,
                sim_index, path, net_logits, net_value, net_reward, net_discount, net_embedding, kernel_store,
                kernel_input,
            )  # fmt: skip
            if timed:
                timings.kernel_s += time.perf_counter() - t3  # type: ignore[union-attr]
            if error:
                raise ValueError(f"recurrent_fn returned non-finite {_tree.OUTPUT_NAMES[error]} at simulation {sim}")

    # Read-out (and the tree's edge statistics) in one kernel; the action draw uses one uniform number per root.
    uniform = rng.random((batch_size,)) if temperature > 0.0 else _NO_DRAWS
    visit_counts = np.empty((batch_size, num_actions), dtype=np.int64)
    visit_probs = np.empty((batch_size, num_actions), dtype=np.float64)
    action_weights = np.empty((batch_size, num_actions), dtype=np.float64)
    root_q = np.empty((batch_size, num_actions), dtype=np.float64)
    root_prior = np.empty((batch_size, num_actions), dtype=np.float64)
    search_value = np.empty(batch_size, dtype=np.float64)
    max_depth_out = np.empty(batch_size, dtype=np.int64)
    action_out = np.empty(batch_size, dtype=np.int64)
    if timed:
        t4 = time.perf_counter()
    _tree.finish(
        prior, child_q, children, child_visits, node_f, node_i, legal, sim_index, temperature, uniform, visit_counts,
        visit_probs, action_weights, root_q, root_prior, search_value, max_depth_out, action_out,
    )  # fmt: skip
    if timed:
        timings.kernel_s += time.perf_counter() - t4  # type: ignore[union-attr]
    tree = SearchTree(
        children=children,
        prior=prior,
        child_visits=child_visits,
        child_q=child_q,
        visits=node_i[..., _tree.VISITS],
        value_sum=node_f[..., _tree.VALUE_SUM],
        reward=node_f[..., _tree.REWARD],
        discount=node_f[..., _tree.DISCOUNT],
        raw_value=node_f[..., _tree.RAW_VALUE],
        parents=node_i[..., _tree.PARENT],
        action_from_parent=node_i[..., _tree.ACTION],
        depth=node_i[..., _tree.DEPTH],
        minmax=minmax,
        root_legal=legal,
        embeddings=embeddings.store,
    )
    if timed:
        timings.searches += 1  # type: ignore[union-attr]
        timings.simulations += num_simulations  # type: ignore[union-attr]
        timings.total_s += time.perf_counter() - t_start  # type: ignore[union-attr]
    return SearchOutput(
        action=action_out,
        action_weights=action_weights,
        visit_counts=visit_counts,
        visit_probs=visit_probs,
        search_value=search_value,
        root_q=root_q,
        root_prior=root_prior,
        max_depth=max_depth_out,
        tree=tree,
    )


# Gumbel MuZero's search, re-exported here beside muzero_policy; imported last because gumbel.py imports this module.
from sb3_frontier.algorithms.muzero.gumbel import gumbel_muzero_policy  # noqa: E402, F401
