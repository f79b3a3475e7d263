"""
Batched Gumbel MuZero search (Danihelka et al., "Policy improvement by planning with Gumbel", ICLR 2022), with the
inputs of mctx's ``gumbel_muzero_policy``.

The search runs ``num_simulations`` simulations on ``B`` roots at once, as :func:`mcts.muzero_policy
<sb3_frontier.algorithms.muzero.mcts.muzero_policy>` does: one call of ``recurrent_fn`` per simulation for the whole
batch, the tree in fixed-shape numpy arrays ``[B, num_simulations + 1, ...]``, selection, expansion and backup in
numba kernels batched over ``B`` (:mod:`sb3_frontier.algorithms.muzero._gumbel_tree`).

Semantics (S = ``num_simulations``, m = ``min(max_num_considered_actions, number of legal root actions)``):

- **Gumbel noise** ``g(a) = gumbel_scale * G(a)``, ``G(a) ~ Gumbel(0, 1)`` i.i.d. per root and action: the search's
  only draw from ``rng`` is ``rng.gumbel(size=(B, A))``, made before anything else; a ``gumbel`` argument replaces it,
  and with ``gumbel_scale=0`` (evaluation) nothing is drawn, so that evaluating leaves the generator where acting
  left it.
- **Completed Q-values** at a node s (Appendix D, mctx's ``qtransform_completed_by_mix_value`` with its defaults
  ``rescale_values=True``, ``use_mixed_value=True``, ``epsilon=1e-8``): ``Q(s, a) = r(s, a) + discount(s, a) V(child)``
  for visited children, the mixed value ``v_mix = (v(s) + sum_b N(b) sum_{a visited} pi(a) Q(s, a) /
  sum_{a visited} pi(a)) / (1 + sum_b N(b))`` for the others (``v(s)`` the network's value, ``pi`` the prior floored
  at the smallest normal float64); then the paper's monotone transform after a min-max rescaling over the node's
  children, ``sigma(q) = (maxvisit_init + max_b N(b)) * value_scale * (q - min q) / max(max q - min q, 1e-8)``.
- **Root** (Sequential Halving with Gumbel): the visit count that simulation k considers is
  ``considered_visits(m, S)[k]`` (mctx's ``get_sequence_of_considered_visits``); simulation k takes, among the legal
  actions visited exactly that often, the one of highest ``g(a) + logits(a) + sigma(q(a))``. The first ``min(m, S)``
  simulations thus visit the Gumbel-Top-m actions of ``g + logits`` in order (the unvisited actions share one sigma);
  every later phase visits the best half (at least 2) of the actions that finished the previous phase, ranked by the
  current ``g + logits + sigma(q)``.
- **Below the root** (Section 5, "Planning at non-root nodes"): ``argmax_a pi'(a) - N(a) / (1 + sum_b N(b))`` with
  ``pi' = softmax(logits + sigma(q))`` over all actions (interior nodes are not masked).
- **Backup**: ``G = v(leaf)``; walking up, ``value_sum += G``, ``N += 1``, then ``G = r + discount G`` with the reward
  and discount of the edge into the node, both from ``recurrent_fn``. **Two-player zero-sum games**: return
  ``discount = -1`` (times the game's discount); values then flip perspective at every ply, as in ``muzero_policy``.
- **Action**: among the legal actions of the highest visit count (the actions left by the last halving), the highest
  ``g(a) + logits(a) + sigma(q(a))`` with the final completed Q-values. **Policy target** (``action_weights``): the
  improved policy ``softmax(logits + sigma(q))`` over the legal actions, 0 on illegal ones.
- ``max_depth``: a simulation that reaches ``max_depth`` edges at an already expanded node evaluates that node with its
  stored network value (what a deterministic model returns again) and leaves the tree's shape unchanged.
- Ties (equal scores) go to the lowest action index everywhere, as ``jnp.argmax`` does.

Deviations from the paper: the root runs mctx's one-simulation-at-a-time form of Sequential Halving above rather than
whole phases: the ranking among the remaining actions is re-evaluated at each visit, with the current sigma, instead
of once at the end of a phase; each remaining action gets ``max(1, floor(S / (ceil(log2 m) * remaining)))`` visits per
phase; halving stops at 2 actions, and the budget left after the last phase keeps alternating between those 2; the
action is chosen among the most visited actions. The completed Q-values are min-max rescaled before sigma (mctx's
``rescale_values``).

Deviations from mctx (``mctx.gumbel_muzero_policy`` with its default ``qtransform``):

- The root's network value is stored but not counted as a visit: ``search_value`` is the mean of the S backed-up
  returns (as in ``muzero_policy``), where mctx's root value is ``(v(root) + S * search_value) / (S + 1)``. Selection
  is unaffected: it reads the children's visit counts and the root's network value (in ``v_mix``), not the root's mean.
- At the root, the min-max rescaling of the completed Q-values runs over the legal actions only; mctx completes the
  illegal actions with ``v_mix`` too and lets them enter the minimum and maximum, which changes sigma when every legal
  action has been visited and ``v_mix`` lies outside the range of their Q-values.
- A depth-limited simulation does not write the network's outputs into the tree (mctx overwrites the node's logits,
  value, reward and discount with the new evaluation and resets its value to the network's value); for a
  deterministic model both give the same tree up to rounding, since such a node has no children.
- No floor of -1e9 on the root scores (mctx's ``score_considered`` clamps ``g + logits + sigma`` at -1e9, which only
  matters for legal logits below -1e9).
- Everything is float64 (mctx computes in the dtype of the inputs, float32 by default). The sums over visited
  children run in order of first visit, and below the root ``pi'`` is evaluated as ``pi(a) exp(sigma(a) - max sigma)``
  normalised (``softmax(logits + sigma)`` up to rounding): scores equal only in exact arithmetic may be ordered
  differently than in mctx.
- The noise comes from numpy's ``Generator.gumbel`` (mctx: ``jax.random.gumbel``); to replay mctx's noise, pass its
  ``search_tree.extra_data.root_gumbel`` as ``gumbel`` with ``gumbel_scale=1``.

On the CPU the parent embeddings handed to ``recurrent_fn`` live in one buffer that the search refills for the next
simulation: a ``recurrent_fn`` that keeps its input beyond the call must copy it. The search builds no autograd graph.

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
    result = mcts.gumbel_muzero_policy(root, recurrent_fn, num_simulations=8, rng=np.random.default_rng(0))
    result.action          # [B] int64, one of the most visited actions
    result.action_weights  # [B, A] improved policy softmax(logits + sigma(completed Q)), the policy target
    result.visit_counts    # [B, A], each row sums to 8
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sb3_frontier.algorithms.muzero import _gumbel_tree, _tree, mcts
from sb3_frontier.algorithms.muzero.mcts import ArrayLike, RootFnOutput, SearchOutput, SearchTimings, SearchTree


@functools.lru_cache(maxsize=256)
def considered_visits(max_num_considered_actions: int, num_simulations: int) -> tuple[int, ...]:
    """
    Sequential Halving's visit schedule at the root (mctx's ``get_sequence_of_considered_visits``).

    Entry k is the visit count of the actions simulation k may visit. With ``m <= 1`` it is ``0, 1, ..., S - 1``.
    Otherwise, starting with ``n = m`` actions at 0 visits: every remaining action gets
    ``max(1, floor(S / (ceil(log2 m) n)))`` more visits, one round of n entries ``v, v, ..., v`` per visit, then
    ``n = max(2, floor(n / 2))``; repeated until S entries.

    :param max_num_considered_actions: m, the number of actions considered at the start
    :param num_simulations: S
    :return: S visit counts
    """
    if max_num_considered_actions <= 1:
        return tuple(range(num_simulations))
    log2_m = math.ceil(math.log2(max_num_considered_actions))
    sequence: list[int] = []
    visits = 0  # of every remaining action
    remaining = max_num_considered_actions
    while len(sequence) < num_simulations:
        extra_visits = max(1, num_simulations // (log2_m * remaining))
        for _ in range(extra_visits):
            sequence.extend([visits] * remaining)
            visits += 1
        remaining = max(2, remaining // 2)
    return tuple(sequence[:num_simulations])


def _check_non_negative(value: float, name: str) -> float:
    if not np.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _gumbel_noise(
    gumbel: ArrayLike | None, gumbel_scale: float, legal: np.ndarray, rng: np.random.Generator | None
) -> np.ndarray:
    """``gumbel_scale * G`` ``[B, A]``, G the given noise or ``rng.gumbel(size=(B, A))`` (no draw at scale 0)."""
    if gumbel is None and gumbel_scale == 0.0:
        return np.zeros(legal.shape)
    if gumbel is None:
        noise = (np.random.default_rng() if rng is None else rng).gumbel(size=legal.shape)
    else:
        noise = mcts._to_numpy(gumbel, "gumbel").astype(np.float64)
        if noise.shape != legal.shape:
            raise ValueError(f"gumbel must have shape {legal.shape}, got {noise.shape}")
        if not np.all(np.isfinite(noise[legal])):
            raise ValueError("gumbel holds non-finite numbers on legal actions")
    return gumbel_scale * noise


def _considered_table(max_num_considered_actions: int, num_legal: np.ndarray, num_simulations: int) -> np.ndarray:
    """``[B, S]`` schedule of every root: :func:`considered_visits` of ``min(max considered, legal actions)``."""
    num_considered = np.minimum(max_num_considered_actions, num_legal)
    table = np.empty((len(num_legal), num_simulations), dtype=np.int64)
    for m in np.unique(num_considered):
        table[num_considered == m] = considered_visits(int(m), num_simulations)
    return table


def gumbel_muzero_policy(
    root: RootFnOutput,
    recurrent_fn: Callable[[ArrayLike, ArrayLike], tuple[Any, ArrayLike]],
    num_simulations: int,
    *,
    invalid_actions: ArrayLike | None = None,
    max_num_considered_actions: int = 16,
    gumbel_scale: float = 1.0,
    value_scale: float = 0.1,
    maxvisit_init: float = 50.0,
    rng: np.random.Generator | None = None,
    gumbel: ArrayLike | None = None,
    max_depth: int | None = None,
    timings: SearchTimings | None = None,
) -> SearchOutput:
    """
    Run Gumbel MuZero's search on ``B`` roots at once (Danihelka et al. 2022, Full Gumbel MuZero).

    See the module docstring for the exact semantics and every deviation from the paper and from mctx. The recurrent
    calls run under ``torch.no_grad()``.

    :param root: root prior logits ``[B, A]``, value ``[B]`` and embedding ``[B, ...]`` (torch or numpy)
    :param recurrent_fn: ``(embedding [B, ...], action [B] int64) -> (RecurrentFnOutput, next_embedding [B, ...])``,
        called once per simulation on the whole batch, as for :func:`mcts.muzero_policy
        <sb3_frontier.algorithms.muzero.mcts.muzero_policy>`
    :param num_simulations: number of simulations S (>= 1), i.e. of ``recurrent_fn`` calls
    :param invalid_actions: ``[B, A]`` bool, True = illegal at the root (mctx convention), or None
    :param max_num_considered_actions: m, the number of root actions Gumbel-Top-k samples (mctx's default 16)
    :param gumbel_scale: scale of the Gumbel noise (1: sampling; 0: deterministic, e.g. for evaluation)
    :param value_scale: ``c_scale`` of sigma (mctx's default 0.1)
    :param maxvisit_init: ``c_visit`` of sigma (mctx's default 50)
    :param rng: random generator of the Gumbel noise (a fresh one if None): one draw, ``rng.gumbel(size=(B, A))``,
        skipped when ``gumbel`` is given or ``gumbel_scale`` is 0
    :param gumbel: standard Gumbel noise ``[B, A]`` to use instead of drawing it (scaled by ``gumbel_scale``), or None
    :param max_depth: maximum number of edges a simulation descends (None: unlimited)
    :param timings: accumulators to add this call's timings to (None: no timing)
    :return: the action, the improved policy as ``action_weights``, root visit counts, ``search_value`` (mean
        backed-up return at the root), ``root_q`` (the completed Q-values at the root, unscaled: Q for visited
        actions, ``v_mix`` for the others), ``root_prior`` (softmax of the logits over the legal actions), the
        tree's depth and the tree (its ``minmax``: the smallest and largest Q of a visited edge, unused by the search)
    """
    timed = timings is not None
    t_start = time.perf_counter() if timed else 0.0
    num_simulations = mcts._check_positive_int(num_simulations, "num_simulations")
    depth_limit = num_simulations + 1 if max_depth is None else mcts._check_positive_int(max_depth, "max_depth")
    max_considered = mcts._check_positive_int(max_num_considered_actions, "max_num_considered_actions")
    gumbel_scale = _check_non_negative(gumbel_scale, "gumbel_scale")
    value_scale = _check_non_negative(value_scale, "value_scale")
    maxvisit_init = _check_non_negative(maxvisit_init, "maxvisit_init")
    # The root checks of muzero_policy (its noise, pUCT and temperature settings play no part here: neutral values).
    root_logits, root_value, legal = mcts._check_inputs(
        root, invalid_actions, dirichlet_alpha=0.25, dirichlet_fraction=0.0, pb_c_init=1.25, pb_c_base=19652.0, temperature=1.0
    )
    batch_size, num_actions = root_logits.shape
    num_nodes = num_simulations + 1
    noise = _gumbel_noise(gumbel, gumbel_scale, legal, rng)
    considered = _considered_table(max_considered, legal.sum(axis=1), num_simulations)

    # Tree storage (packed per node / per edge, see `_gumbel_tree`): the kernels write every entry before reading it
    # (the roots in `init_roots`, each node when it is created, the nodes no simulation created in `finish`).
    edge_f = np.empty((batch_size, num_nodes, num_actions, _gumbel_tree.NUM_EDGE_F), dtype=np.float64)
    edge_i = np.empty((batch_size, num_nodes, num_actions, _gumbel_tree.NUM_EDGE_I), dtype=np.int32)
    node_f = np.empty((batch_size, num_nodes, _gumbel_tree.NUM_NODE_F), dtype=np.float64)
    node_i = np.empty((batch_size, num_nodes, _gumbel_tree.NUM_NODE_I), dtype=np.int32)
    # Root logits shifted so that the largest legal one is 0, illegal ones -inf (prior 0); g(a) + logits(a).
    logits = np.empty((batch_size, num_actions))
    root_score = np.empty((batch_size, num_actions))
    settings = (root_score, considered, value_scale, maxvisit_init, depth_limit)

    # Per-simulation indices [4, S, B]: parent node, action, evaluated node, its depth; the current path [B, N].
    sim_index = np.empty((4, num_simulations, batch_size), dtype=np.int64)
    path = np.empty((batch_size, num_nodes), dtype=np.int64)
    embeddings = mcts._EmbeddingStore(root.embedding, num_simulations)
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
        _gumbel_tree.init_roots(
            root_logits, root_value, legal, noise, edge_f, edge_i, node_f, node_i, logits, *settings, sim_index, path,
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
            net_logits, net_value, net_reward, net_discount = mcts._recurrent_arrays(out, shapes)
            net_embedding = embeddings.host_embedding(sim + 1, next_embedding)
            if timed:
                t3 = time.perf_counter()
            error = _gumbel_tree.expand_backup_select(
                edge_f, edge_i, node_f, node_i, legal, *settings, sim, sim_index, path, net_logits, net_value,
                net_reward, net_discount, net_embedding, kernel_store, kernel_input,
            )  # fmt: skip
            if timed:
                timings.kernel_s += time.perf_counter() - t3  # type: ignore[union-attr]
            if error:
                raise ValueError(f"recurrent_fn returned non-finite {_tree.OUTPUT_NAMES[error]} at simulation {sim}")

    # Read-out (and the nodes no simulation created) in one kernel: completed Q-values, the final action among the most
    # visited actions, the improved policy, the tree's Q range and depth.
    completed = np.empty((batch_size, num_actions))
    visit_counts = np.empty((batch_size, num_actions), dtype=np.int64)
    action_weights = np.empty((batch_size, num_actions))
    action = np.empty(batch_size, dtype=np.int64)
    minmax = np.empty((batch_size, 2))
    max_depth_out = np.empty(batch_size, dtype=np.int64)
    if timed:
        t4 = time.perf_counter()
    _gumbel_tree.finish(
        edge_f, edge_i, node_f, node_i, legal, logits, root_score, value_scale, maxvisit_init, sim_index, completed,
        visit_counts, action_weights, action, minmax, max_depth_out,
    )  # fmt: skip
    if timed:
        timings.kernel_s += time.perf_counter() - t4  # type: ignore[union-attr]
    child_q = edge_f[..., _gumbel_tree.Q]
    child_visits = edge_i[..., _gumbel_tree.CHILD_VISITS]
    tree = SearchTree(
        children=edge_i[..., _gumbel_tree.CHILD],
        prior=edge_f[..., _gumbel_tree.PRIOR],
        child_visits=child_visits,
        child_q=child_q,
        visits=node_i[..., _gumbel_tree.VISITS],
        value_sum=node_f[..., _gumbel_tree.VALUE_SUM],
        reward=node_f[..., _gumbel_tree.REWARD],
        discount=node_f[..., _gumbel_tree.DISCOUNT],
        raw_value=node_f[..., _gumbel_tree.RAW_VALUE],
        parents=node_i[..., _gumbel_tree.PARENT],
        action_from_parent=node_i[..., _gumbel_tree.ACTION],
        depth=node_i[..., _gumbel_tree.DEPTH],
        minmax=minmax,
        root_legal=legal,
        embeddings=embeddings.store,
    )
    if timed:
        timings.searches += 1  # type: ignore[union-attr]
        timings.simulations += num_simulations  # type: ignore[union-attr]
        timings.total_s += time.perf_counter() - t_start  # type: ignore[union-attr]
    return SearchOutput(
        action=action,
        action_weights=action_weights,
        visit_counts=visit_counts,
        visit_probs=visit_counts / num_simulations,
        search_value=tree.value_sum[:, 0] / num_simulations,
        root_q=completed,
        root_prior=edge_f[:, 0, :, _gumbel_tree.PRIOR].copy(),
        max_depth=max_depth_out,
        tree=tree,
    )
