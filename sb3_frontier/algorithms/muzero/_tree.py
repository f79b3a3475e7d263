"""Compiled kernels of the batched MuZero search: set-up, selection, expansion, backup and read-out on fixed-shape arrays.

The search tree of ``B`` roots lives in numpy arrays of ``N = num_simulations + 1`` nodes per root; node 0 is the root
and the node created by simulation ``s`` has index ``s + 1``.

Per edge (the :class:`~sb3_frontier.algorithms.muzero.mcts.SearchTree` fields, contiguous ``[B, N, A]`` arrays):

- ``prior`` float64 P(s, a) and ``children`` int32 (the child node or :data:`UNEXPANDED`), written when the node is
  created and kept up to date;
- ``child_visits`` int32 N(s, a) and ``child_q`` float64 Q(s, a) = r + discount V(child) (0 for unvisited children),
  which the search reads from the child nodes instead: :func:`finish` writes them in one sequential pass. Two more rows
  of ``A`` numbers written per created node were a third of a search's time at ``A = 18`` (fresh cache lines).

Per node (packed: the fields of one node side by side, so that a step of the descent or of the backup touches few
cache lines):

- ``node_f [B, N, 8]`` float64: ``VALUE_SUM`` (sum of backed-up returns), ``REWARD`` and ``DISCOUNT`` of the edge into
  the node (root: 0 and 1), ``RAW_VALUE`` (the network's value of the node), ``SECOND_PRIOR`` (see below), ``EDGE_Q``
  and ``EDGE_PRIOR`` (Q and P of the edge into the node, as the parent's selection reads them), ``OWN_VALUE`` (V(s),
  the mean backed-up return, or the network's value before the first backup);
- ``node_i [B, N, 8]`` int32: ``VISITS`` N(s), ``PARENT``, ``ACTION`` (from the parent), ``DEPTH``, ``NUM_VISITED``,
  ``BEST_UNVISITED`` (see below);
- ``visited [B, N, A]`` int32: slot ``j < NUM_VISITED`` holds the ``j``-th child node visited, in order of first visit.

Per root: ``minmax [B, 2]`` = (minimum, maximum) of the tree's Q statistics; ``root_legal [B, A]``. ``puct [N, N]``
holds pUCT's exploration factor ``(c1 + log((n + c2 + 1) / c2)) sqrt(n) / (1 + m)`` for every parent visit count ``n``
and child visit count ``m`` (eq. 2), so that scoring a child takes one multiplication (and no division).

Nothing is initialised before it is used: :func:`init_tree` writes the root, the expansion writes a new node and its
priors and children, and :func:`finish` gives the nodes a depth-limited search never created their initial values (visits 0,
parent -1, prior 0, ...).

Selection only scores the visited children and the unvisited child of highest prior (``BEST_UNVISITED``, lowest index
among equal priors): every unvisited child scores ``c P(s, a)`` with the same ``c >= 0``, so no other unvisited child
can score more. When another unvisited child could score the same (``c * SECOND_PRIOR`` equals the best one's score,
e.g. equal priors, or ``c = 0`` at the root's first simulation) the node is scored in full (:func:`_puct_scan`), so the
choice is always the maximal pUCT score with ties to the lowest action index, exactly as scoring every child.

A simulation is one kernel call (:func:`step`): a pass over the roots for the expansions, one for the backups, then
:func:`select_leaves`, one root at a time, each descent whole (its tree stays in the cache). Short simple loops measured
faster than one pass doing all three per root, and whole descents faster than moving every root one level at a time.

Embeddings: ``store [B, N, E]`` (every node's embedding flattened to ``E`` numbers), ``gather [B, E]`` (where the
selection copies the parent embeddings the network needs next).

The per-root work is written out inside the kernels' loops: numba reference-counts the arrays passed to a called
function at every call (also, it turned out, to most ``inline="always"`` ones), which costs more than the work of a
tree level. The exceptions are small: :func:`_top_two` (inlined without that cost), :func:`_puct_scan` (called on ties
only) and one call of :func:`select_leaves` per simulation.
"""

import math
from typing import Any

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

#: Children index of an edge whose child node has not been expanded yet.
UNEXPANDED = -1

#: Error codes of :func:`step` (0: fine), naming the network output that was not finite.
OUTPUT_NAMES = ("", "prior_logits", "value", "reward", "discount")

# Field indices of the packed node arrays (see the module docstring).
VALUE_SUM, REWARD, DISCOUNT, RAW_VALUE, SECOND_PRIOR, EDGE_Q, EDGE_PRIOR, OWN_VALUE = 0, 1, 2, 3, 4, 5, 6, 7  # node_f
VISITS, PARENT, ACTION, DEPTH, NUM_VISITED, BEST_UNVISITED = 0, 1, 2, 3, 4, 5  # node_i
NUM_NODE_F, NUM_NODE_I = 8, 8

# Rows of the per-simulation indices ``sim_index [4, S, B]``.
SIM_PARENT, SIM_ACTION, SIM_LEAF, SIM_DEPTH = 0, 1, 2, 3


def _bitcast(from_type: Any, to_type: Any) -> Any:
    """A numba intrinsic that reads the bits of a ``from_type`` scalar as a ``to_type`` one (LLVM's ``bitcast``)."""

    def typer(typingctx: Any, x: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.bitcast(args[0], context.get_value_type(to_type))

        return to_type(from_type), codegen

    return intrinsic(typer)


#: The IEEE 754 bit pattern of a float64 as an int64: ordered as the floats, for floats >= 0.
_bits_from_float = _bitcast(types.float64, types.int64)
#: The float64 of an IEEE 754 bit pattern.
_float_from_bits = _bitcast(types.int64, types.float64)


@numba.njit(cache=True, error_model="numpy")
def _q_normalisation(q_min: float, q_max: float) -> tuple[float, float]:
    """``(shift, scale)`` of the tree's min-max normalisation ``(q - shift) / scale``; the identity while
    ``q_max <= q_min`` (``(q - 0) / 1 == q`` exactly)."""
    if q_max > q_min:
        return q_min, q_max - q_min
    return 0.0, 1.0


@numba.njit(cache=True, error_model="numpy")
def _puct_factors(pb_c_init: float, pb_c_base: float, puct: np.ndarray) -> None:  # puct: [N, N] float64
    """pUCT's exploration factor (eq. 2) ``(c1 + log((N(s) + c2 + 1) / c2)) sqrt(N(s)) / (1 + N(s, a))`` for every
    parent visit count ``N(s)`` and child visit count ``N(s, a)``, in the pseudocode's order of operations (the
    exploration term is this times ``P(s, a)``)."""
    num_nodes = puct.shape[0]
    for n_parent in range(num_nodes):
        pb_c = math.log((n_parent + pb_c_base + 1) / pb_c_base) + pb_c_init
        sqrt_parent = math.sqrt(n_parent)
        for n_child in range(num_nodes):
            puct[n_parent, n_child] = pb_c * (sqrt_parent / (n_child + 1))


@numba.njit(cache=True, error_model="numpy", inline="always")
def _top_two(
    b: int,
    node: int,
    prior: np.ndarray,  # [B, N, A] float64
    children: np.ndarray,  # [B, N, A] int32
    root_legal: np.ndarray,  # [B, A] bool
    node_f: np.ndarray,  # [B, N, 8] float64
    node_i: np.ndarray,  # [B, N, 8] int32
) -> None:
    """Cache a node's unvisited child of highest prior (lowest index on ties; at the root legal children only) as
    ``BEST_UNVISITED`` (-1 if none) and the second-highest unvisited prior (an equal one counts) as ``SECOND_PRIOR``.

    Three passes over the children (the maximum, its first index, the maximum of the others) on integer keys."""
    num_actions = prior.shape[2]
    interior = node != 0
    # Keys: a prior's bit pattern (ordered as the prior, priors being >= 0), -1 for visited or illegal children.
    # Integer maxima have no NaN rules, so these loops vectorise.
    best_key = -1
    for a in range(num_actions):
        unvisited = (children[b, node, a] == UNEXPANDED) & (interior | root_legal[b, a])
        best_key = max(best_key, _bits_from_float(prior[b, node, a]) if unvisited else -1)
    best = -1
    if best_key >= 0:
        for a in range(num_actions):
            if (children[b, node, a] == UNEXPANDED) and _bits_from_float(prior[b, node, a]) == best_key:
                if interior or root_legal[b, a]:
                    best = a
                    break
    second_key = -1
    for a in range(num_actions):
        unvisited = (children[b, node, a] == UNEXPANDED) & (interior | root_legal[b, a]) & (a != best)
        second_key = max(second_key, _bits_from_float(prior[b, node, a]) if unvisited else -1)
    p_second = _float_from_bits(second_key) if second_key >= 0 else -np.inf
    node_i[b, node, BEST_UNVISITED] = best
    node_f[b, node, SECOND_PRIOR] = p_second


@numba.njit(cache=True, error_model="numpy")
def _puct_scan(
    b: int,
    node: int,
    prior: np.ndarray,  # [B, N, A] float64
    node_f: np.ndarray,  # [B, N, 8] float64
    node_i: np.ndarray,  # [B, N, 8] int32
    visited: np.ndarray,  # [B, N, A] int32
    root_legal: np.ndarray,  # [B, A] bool
    puct: np.ndarray,  # [N, N] float64
    shift: float,
    scale: float,
    unvisited_score: float,
    scores: np.ndarray,  # [A] float64, scratch
) -> int:
    """
    Score every child of a node by pUCT and return the best action (MuZero, Appendix B, eq. 2).

    score(s, a) = Qnorm(s, a) + P(s, a) * sqrt(N(s)) / (1 + N(s, a)) * (c1 + log((N(s) + c2 + 1) / c2)), with
    Q(s, a) min-max normalised over the root's tree (``(q - shift) / scale``); an unvisited child's normalised Q is
    ``unvisited_score``. Ties go to the lowest action index; at the root (``node == 0``) only legal actions count.
    """
    num_actions = prior.shape[2]
    n_parent = node_i[b, node, VISITS]
    for a in range(num_actions):
        scores[a] = puct[n_parent, 0] * prior[b, node, a] + unvisited_score
    for j in range(node_i[b, node, NUM_VISITED]):
        child = visited[b, node, j]
        prior_score = puct[n_parent, node_i[b, child, VISITS]] * node_f[b, child, EDGE_PRIOR]
        scores[node_i[b, child, ACTION]] = prior_score + (node_f[b, child, EDGE_Q] - shift) / scale
    if node == 0:
        for a in range(num_actions):
            if not root_legal[b, a]:
                scores[a] = -np.inf
    best_action = 0
    for a in range(1, num_actions):
        if scores[a] > scores[best_action]:
            best_action = a
    return best_action


@numba.njit(cache=True, error_model="numpy")
def select_leaves(
    prior: np.ndarray,  # [B, N, A] float64
    children: np.ndarray,  # [B, N, A] int32
    node_f: np.ndarray,  # [B, N, 8] float64
    node_i: np.ndarray,  # [B, N, 8] int32
    visited: np.ndarray,  # [B, N, A] int32
    minmax: np.ndarray,  # [B, 2] float64
    root_legal: np.ndarray,  # [B, A] bool
    puct: np.ndarray,  # [N, N] float64
    max_depth: int,
    unvisited_parent: bool,
    sim: int,
    sim_index: np.ndarray,  # [4, S, B] int64
    path: np.ndarray,  # [B, N] int64
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E]
) -> None:
    """
    Descend every root's tree by pUCT (eq. 2) to an unexpanded edge (or ``max_depth`` edges) for simulation ``sim``.

    Writes, per root, the parent node, the action taken from it, the node the simulation evaluates (``sim + 1`` for a
    new node, or the existing child when the depth limit stopped the descent) and its depth into ``sim_index[:, sim]``,
    the nodes on the way into ``path[b, :depth + 1]`` (for the backup), and copies the parent's embedding into
    ``gather``. One root at a time, the whole descent (its tree stays in the cache).
    """
    batch_size, _, num_actions = prior.shape
    scores = np.empty(num_actions)
    for b in range(batch_size):
        shift, scale = _q_normalisation(minmax[b, 0], minmax[b, 1])
        node = 0
        depth = 0
        path[b, 0] = 0
        while True:
            depth += 1
            # pUCT's exploration factors at this node's visit count (eq. 2): puct[n_parent, n_child].
            n_parent = node_i[b, node, VISITS]
            # The unvisited child of highest prior: every unvisited child scores c * P(s, a) + u, the same c >= 0 and
            # u for all (u: 0, or the node's own normalised value with `unvisited_parent`).
            unvisited_score = 0.0
            if unvisited_parent:
                unvisited_score = (node_f[b, node, OWN_VALUE] - shift) / scale
            best_score = -np.inf
            action = num_actions
            child = UNEXPANDED
            unvisited = node_i[b, node, BEST_UNVISITED]
            full_scan = False
            if unvisited >= 0:
                prior_score = puct[n_parent, 0] * prior[b, node, unvisited]
                best_score = prior_score + unvisited_score
                action = unvisited
                # another unvisited child may tie: score every child
                full_scan = puct[n_parent, 0] * node_f[b, node, SECOND_PRIOR] == prior_score
            if full_scan:
                action = _puct_scan(
                    b, node, prior, node_f, node_i, visited, root_legal, puct, shift, scale, unvisited_score, scores
                )
                child = children[b, node, action]
            else:
                # The visited children, in order of first visit; ties go to the lowest action index.
                for j in range(node_i[b, node, NUM_VISITED]):
                    c = visited[b, node, j]
                    prior_score = puct[n_parent, node_i[b, c, VISITS]] * node_f[b, c, EDGE_PRIOR]
                    score = prior_score + (node_f[b, c, EDGE_Q] - shift) / scale
                    a = node_i[b, c, ACTION]
                    if score > best_score or (score == best_score and a < action):
                        best_score = score
                        action = a
                        child = c
            if child == UNEXPANDED or depth >= max_depth:
                break
            node = child
            path[b, depth] = child
        leaf = sim + 1 if child == UNEXPANDED else child
        path[b, depth] = leaf
        sim_index[SIM_PARENT, sim, b] = node
        sim_index[SIM_ACTION, sim, b] = action
        sim_index[SIM_LEAF, sim, b] = leaf
        sim_index[SIM_DEPTH, sim, b] = depth
        for e in range(gather.shape[1]):
            gather[b, e] = store[b, node, e]


@numba.njit(cache=True, error_model="numpy")
def _non_finite_output(
    net_logits: np.ndarray,  # [B, A]
    net_value: np.ndarray,  # [B]
    net_reward: np.ndarray,  # [B]
    net_discount: np.ndarray,  # [B]
) -> int:
    """Index in :data:`OUTPUT_NAMES` of the first network output holding a non-finite number, 0 if none.

    ``x - x`` is 0 for finite ``x`` and NaN otherwise: one branch-free AND over each output (which vectorises)."""
    batch_size, num_actions = net_logits.shape
    finite = True
    for b in range(batch_size):
        for a in range(num_actions):
            x = float(net_logits[b, a])
            finite &= x - x == 0.0
    if not finite:
        return 1
    value_finite = reward_finite = discount_finite = True
    for b in range(batch_size):
        value, reward, discount = float(net_value[b]), float(net_reward[b]), float(net_discount[b])
        value_finite &= value - value == 0.0
        reward_finite &= reward - reward == 0.0
        discount_finite &= discount - discount == 0.0
    if not value_finite:
        return 2
    if not reward_finite:
        return 3
    if not discount_finite:
        return 4
    return 0


@numba.njit(cache=True, error_model="numpy")
def _gather_parents(
    parent: np.ndarray,  # [B] int64
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E]
) -> None:
    """Copy the embedding of node ``parent[b]`` of every tree into ``gather[b]``."""
    for b in range(gather.shape[0]):
        node = parent[b]
        for e in range(gather.shape[1]):
            gather[b, e] = store[b, node, e]


@numba.njit(cache=True, error_model="numpy")
def init_tree(
    root_logits: np.ndarray,  # [B, A] float64
    root_value: np.ndarray,  # [B] float64
    root_legal: np.ndarray,  # [B, A] bool
    gamma: np.ndarray,  # [B, A] float64: Gamma(alpha, 1) draws of the Dirichlet noise ([0, 0] without noise)
    dirichlet_fraction: float,
    pb_c_init: float,
    pb_c_base: float,
    known_min: float,
    known_max: float,
    prior: np.ndarray,  # [B, N, A] float64
    children: np.ndarray,  # [B, N, A] int32
    node_f: np.ndarray,  # [B, N, 8] float64
    node_i: np.ndarray,  # [B, N, 8] int32
    visited: np.ndarray,  # [B, N, A] int32
    minmax: np.ndarray,  # [B, 2] float64
    puct: np.ndarray,  # [N, N] float64
    max_depth: int,
    unvisited_parent: bool,
    sim_index: np.ndarray,  # [4, S, B] int64
    path: np.ndarray,  # [B, N] int64
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E]
) -> None:
    """
    Set up every root and select the first simulation's leaves.

    The pUCT factors (eq. 2) for every parent and child visit count; the Q statistics at ``(known_min, known_max)`` (empty:
    ``(inf, -inf)``); the root: reward 0, discount 1, the network's value, and the prior
    ``P = (1 - fraction) softmax(logits)|legal + fraction Dir(alpha)|legal`` (``add_exploration_noise``), the
    Dirichlet sample being the Gamma draws normalised over the legal actions (uniform if their sum underflows to 0).
    """
    batch_size, num_actions = root_logits.shape
    _puct_factors(pb_c_init, pb_c_base, puct)
    noisy = gamma.shape[0] > 0 and dirichlet_fraction > 0.0
    for b in range(batch_size):
        minmax[b, 0] = known_min
        minmax[b, 1] = known_max
        node_f[b, 0, VALUE_SUM] = 0.0
        node_f[b, 0, REWARD] = 0.0
        node_f[b, 0, DISCOUNT] = 1.0
        node_f[b, 0, RAW_VALUE] = root_value[b]
        node_f[b, 0, OWN_VALUE] = root_value[b]
        node_f[b, 0, EDGE_Q] = 0.0
        node_f[b, 0, EDGE_PRIOR] = 0.0
        node_i[b, 0, VISITS] = 0
        node_i[b, 0, PARENT] = -1
        node_i[b, 0, ACTION] = -1
        node_i[b, 0, DEPTH] = 0
        node_i[b, 0, NUM_VISITED] = 0
        logit_max = -np.inf
        for a in range(num_actions):
            if root_legal[b, a]:
                logit_max = max(logit_max, root_logits[b, a])
        total = 0.0
        for a in range(num_actions):
            p = math.exp(root_logits[b, a] - logit_max) if root_legal[b, a] else 0.0
            prior[b, 0, a] = p
            total += p
        for a in range(num_actions):
            prior[b, 0, a] /= total
            children[b, 0, a] = UNEXPANDED
        if noisy:
            gamma_sum = 0.0
            for a in range(num_actions):
                gamma_sum += gamma[b, a] if root_legal[b, a] else 0.0
            legal_count = 0
            for a in range(num_actions):
                legal_count += root_legal[b, a]
            for a in range(num_actions):
                if not root_legal[b, a]:
                    continue
                # A sum that underflowed to 0 (tiny alpha) falls back to uniform noise over the legal actions.
                noise = gamma[b, a] / gamma_sum if gamma_sum > 0.0 else 1.0 / legal_count
                prior[b, 0, a] = (1.0 - dirichlet_fraction) * prior[b, 0, a] + dirichlet_fraction * noise
        _top_two(b, 0, prior, children, root_legal, node_f, node_i)
    select_leaves(
        prior, children, node_f, node_i, visited, minmax, root_legal, puct, max_depth, unvisited_parent, 0, sim_index,
        path, store, gather,
    )  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def step(
    prior: np.ndarray,  # [B, N, A] float64
    children: np.ndarray,  # [B, N, A] int32
    node_f: np.ndarray,  # [B, N, 8] float64
    node_i: np.ndarray,  # [B, N, 8] int32
    visited: np.ndarray,  # [B, N, A] int32
    minmax: np.ndarray,  # [B, 2] float64
    root_legal: np.ndarray,  # [B, A] bool
    puct: np.ndarray,  # [N, N] float64
    max_depth: int,
    unvisited_parent: bool,
    sim: int,
    sim_index: np.ndarray,  # [4, S, B] int64: parent, action, evaluated node, its depth
    path: np.ndarray,  # [B, N] int64: nodes of the current simulation's path
    net_logits: np.ndarray,  # [B, A] float
    net_value: np.ndarray,  # [B] float
    net_reward: np.ndarray,  # [B] float
    net_discount: np.ndarray,  # [B] float
    net_embedding: np.ndarray,  # [B, E]
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E] (unused when sim + 1 == S)
) -> int:
    """
    Finish simulation ``sim`` and select for ``sim + 1`` (if any): one call per simulation.

    Per root: the new node's embedding goes into the store and expansion (the pseudocode's ``expand_node``) creates
    node ``sim + 1`` from the network's outputs (a simulation stopped by the depth limit at an existing node evaluates
    that node with its stored network value, what a deterministic model returns for the same state and action, and
    leaves the tree's shape unchanged); then per root the backup (``backpropagate``, eq. 3-4); then the descents of
    simulation ``sim + 1`` (:func:`select_leaves`).

    :return: 0, or the index in :data:`OUTPUT_NAMES` of a network output holding a non-finite number (the tree is
        then left untouched)
    """
    error = _non_finite_output(net_logits, net_value, net_reward, net_discount)
    if error != 0:
        return error
    batch_size, _, num_actions = prior.shape
    new_node = sim + 1
    for b in range(batch_size):
        for e in range(net_embedding.shape[1]):
            store[b, new_node, e] = net_embedding[b, e]
        if sim_index[SIM_LEAF, sim, b] == new_node:
            # Expansion: the new node's statistics, its edges, and its link into the parent.
            parent = sim_index[SIM_PARENT, sim, b]
            action = sim_index[SIM_ACTION, sim, b]
            edge_prior = prior[b, parent, action]
            node_f[b, new_node, VALUE_SUM] = 0.0
            node_f[b, new_node, REWARD] = net_reward[b]
            node_f[b, new_node, DISCOUNT] = net_discount[b]
            node_f[b, new_node, RAW_VALUE] = net_value[b]
            node_f[b, new_node, OWN_VALUE] = net_value[b]
            node_f[b, new_node, EDGE_Q] = 0.0
            node_f[b, new_node, EDGE_PRIOR] = edge_prior
            node_i[b, new_node, VISITS] = 0
            node_i[b, new_node, PARENT] = parent
            node_i[b, new_node, ACTION] = action
            node_i[b, new_node, DEPTH] = node_i[b, parent, DEPTH] + 1
            node_i[b, new_node, NUM_VISITED] = 0
            # Prior: softmax over all actions (interior nodes are not masked), shifted by the maximum for stability,
            # summed in action order.
            logit_max = -np.inf
            for a in range(num_actions):
                logit_max = max(logit_max, float(net_logits[b, a]))
            for a in range(num_actions):
                prior[b, new_node, a] = math.exp(float(net_logits[b, a]) - logit_max)
            total = 0.0
            for a in range(num_actions):
                total += prior[b, new_node, a]
            for a in range(num_actions):
                prior[b, new_node, a] /= total
                children[b, new_node, a] = UNEXPANDED
            _top_two(b, new_node, prior, children, root_legal, node_f, node_i)
            children[b, parent, action] = new_node
            num_visited = node_i[b, parent, NUM_VISITED]
            visited[b, parent, num_visited] = new_node
            node_i[b, parent, NUM_VISITED] = num_visited + 1
            # The parent lost an unvisited child: its cache changes if it held this child or its prior.
            if action == node_i[b, parent, BEST_UNVISITED] or edge_prior >= node_f[b, parent, SECOND_PRIOR]:
                _top_two(b, parent, prior, children, root_legal, node_f, node_i)
    for b in range(batch_size):
        # Backup along the recorded path: G = v(leaf); value_sum += G, N += 1, Q = r + discount V(node) into the
        # min-max statistics, G = r + discount G.
        depth = sim_index[SIM_DEPTH, sim, b]
        g = node_f[b, path[b, depth], RAW_VALUE]
        q_min = minmax[b, 0]
        q_max = minmax[b, 1]
        for k in range(depth, -1, -1):
            node = path[b, k]
            value_sum = node_f[b, node, VALUE_SUM] + g
            visits = node_i[b, node, VISITS] + 1
            node_f[b, node, VALUE_SUM] = value_sum
            node_i[b, node, VISITS] = visits
            reward = node_f[b, node, REWARD]
            discount = node_f[b, node, DISCOUNT]
            own_value = value_sum / visits
            q = reward + discount * own_value
            node_f[b, node, OWN_VALUE] = own_value
            node_f[b, node, EDGE_Q] = q
            q_min = min(q_min, q)
            q_max = max(q_max, q)
            g = reward + discount * g
        minmax[b, 0] = q_min
        minmax[b, 1] = q_max
    if new_node < sim_index.shape[1]:
        select_leaves(
            prior, children, node_f, node_i, visited, minmax, root_legal, puct, max_depth, unvisited_parent, new_node,
            sim_index, path, store, gather,
        )  # fmt: skip
    return 0


@numba.njit(cache=True, error_model="numpy")
def _complete(
    prior: np.ndarray,  # [B, N, A] float64
    child_q: np.ndarray,  # [B, N, A] float64, out
    children: np.ndarray,  # [B, N, A] int32
    child_visits: np.ndarray,  # [B, N, A] int32, out
    node_f: np.ndarray,  # [B, N, 8] float64
    node_i: np.ndarray,  # [B, N, 8] int32
    sim_index: np.ndarray,  # [4, S, B] int64
    max_depth: np.ndarray,  # [B] int64, out
) -> None:
    """Write the edge statistics the search keeps in the nodes (each created node's visits and Q into its parent's
    edge, 0 elsewhere), give the nodes that depth-limited simulations never created their initial values, and find the
    depth of each tree's deepest node."""
    batch_size, num_nodes, num_actions = prior.shape
    for b in range(batch_size):
        for node in range(num_nodes):
            for a in range(num_actions):
                child_visits[b, node, a] = 0
                child_q[b, node, a] = 0.0
        deepest = 0
        for node in range(1, num_nodes):
            if sim_index[SIM_LEAF, node - 1, b] == node:
                parent = node_i[b, node, PARENT]
                a = node_i[b, node, ACTION]
                child_visits[b, parent, a] = node_i[b, node, VISITS]
                child_q[b, parent, a] = node_f[b, node, EDGE_Q]
                deepest = max(deepest, node_i[b, node, DEPTH])
                continue
            for field in range(NUM_NODE_F):
                node_f[b, node, field] = 0.0
            node_f[b, node, DISCOUNT] = 1.0
            for field in range(NUM_NODE_I):
                node_i[b, node, field] = 0
            node_i[b, node, PARENT] = -1
            node_i[b, node, ACTION] = -1
            node_i[b, node, BEST_UNVISITED] = -1
            for a in range(num_actions):
                prior[b, node, a] = 0.0
                children[b, node, a] = UNEXPANDED
        max_depth[b] = deepest


@numba.njit(cache=True, error_model="numpy", inline="always")
def _acting_weights(
    b: int,
    visit_counts: np.ndarray,  # [B, A] int64
    root_legal: np.ndarray,  # [B, A] bool
    root_prior: np.ndarray,  # [B, A] float64
    temperature: float,
    weights: np.ndarray,  # [B, A] float64, out
) -> int:
    """
    Root ``b``'s acting weights ``N(a)^(1/T)`` normalised over the legal actions, computed in log space (a root without
    visits to a legal action gets uniform weights over them); ``T = 0``: one-hot on the most visited legal action, ties
    by the highest prior, then the lowest index. Returns the last action of positive weight.
    """
    num_actions = visit_counts.shape[1]
    if temperature == 0.0:
        best = -1
        for a in range(num_actions):
            if root_legal[b, a] and (
                best < 0
                or visit_counts[b, a] > visit_counts[b, best]
                or (visit_counts[b, a] == visit_counts[b, best] and root_prior[b, a] > root_prior[b, best])
            ):
                best = a
        for a in range(num_actions):
            weights[b, a] = 1.0 if a == best else 0.0
        return best
    any_visited = False
    for a in range(num_actions):
        any_visited |= root_legal[b, a] and visit_counts[b, a] > 0
    log_max = -np.inf
    for a in range(num_actions):
        log_w = -np.inf
        if root_legal[b, a] and not any_visited:
            log_w = 0.0
        elif root_legal[b, a] and visit_counts[b, a] > 0:
            log_w = math.log(visit_counts[b, a]) / temperature
        weights[b, a] = log_w
        log_max = max(log_max, log_w)
    total = 0.0
    for a in range(num_actions):
        weights[b, a] = math.exp(weights[b, a] - log_max)
        total += weights[b, a]
    last_positive = 0
    for a in range(num_actions):
        weights[b, a] /= total
        if weights[b, a] > 0.0:
            last_positive = a
    return last_positive


@numba.njit(cache=True, error_model="numpy")
def finish(
    prior: np.ndarray,  # [B, N, A] float64
    child_q: np.ndarray,  # [B, N, A] float64
    children: np.ndarray,  # [B, N, A] int32
    child_visits: np.ndarray,  # [B, N, A] int32
    node_f: np.ndarray,  # [B, N, 8] float64
    node_i: np.ndarray,  # [B, N, 8] int32
    root_legal: np.ndarray,  # [B, A] bool
    sim_index: np.ndarray,  # [4, S, B] int64
    temperature: float,
    uniform: np.ndarray,  # [B] float64 in [0, 1): the draws of the action sample (unused at temperature 0)
    visit_counts: np.ndarray,  # [B, A] int64, out
    visit_probs: np.ndarray,  # [B, A] float64, out
    action_weights: np.ndarray,  # [B, A] float64, out
    root_q: np.ndarray,  # [B, A] float64, out
    root_prior: np.ndarray,  # [B, A] float64, out
    search_value: np.ndarray,  # [B] float64, out
    max_depth: np.ndarray,  # [B] int64, out
    action: np.ndarray,  # [B] int64, out
) -> None:
    """
    Complete the trees and read the search's results out of them.

    Every created node's visits and Q go into its parent's edge (``child_visits``, ``child_q``); nodes a depth-limited
    search never created get their initial values. Then per root: visit counts and their distribution, root Q values
    (0 for unvisited actions), the prior, the mean backed-up return, the depth of the deepest node, the acting weights
    (:func:`_acting_weights`) and the action: greedy at temperature 0, else the number of cumulative weights (summed
    in action order) at or below ``uniform`` times their total, never an action of weight 0.
    """
    batch_size, num_actions = visit_counts.shape
    _complete(prior, child_q, children, child_visits, node_f, node_i, sim_index, max_depth)
    for b in range(batch_size):
        total_visits = node_i[b, 0, VISITS]
        search_value[b] = node_f[b, 0, VALUE_SUM] / total_visits
        for a in range(num_actions):
            n = child_visits[b, 0, a]
            visit_counts[b, a] = n
            visit_probs[b, a] = n / total_visits
            root_q[b, a] = child_q[b, 0, a] if n > 0 else 0.0
            root_prior[b, a] = prior[b, 0, a]
        last_positive = _acting_weights(b, visit_counts, root_legal, root_prior, temperature, action_weights)
        if temperature == 0.0:
            action[b] = last_positive
            continue
        cumulative = 0.0
        for a in range(num_actions):
            cumulative += action_weights[b, a]
        u = uniform[b] * cumulative
        chosen = 0
        cumulative = 0.0
        for a in range(num_actions):
            cumulative += action_weights[b, a]
            chosen += cumulative <= u
        action[b] = min(chosen, last_positive)
