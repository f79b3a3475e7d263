"""Compiled kernels of the batched MuZero search: selection, expansion and backup on fixed-shape arrays.

The search tree of ``B`` roots lives in four packed numpy arrays, ``N = num_simulations + 1`` nodes per root; node 0
is the root and the node created by simulation ``s`` has index ``s + 1``. Fields of one node (or one edge) sit side by
side in memory, so that a step of the descent or of the backup touches few cache lines:

- ``edge_f [B, N, A, 2]`` float64: ``PRIOR`` P(s, a) and ``Q`` Q(s, a) = r + discount V(child) of visited children;
- ``edge_i [B, N, A, 3]`` int32: ``CHILD`` (child node index or :data:`UNEXPANDED`), ``CHILD_VISITS`` N(s, a), and
  ``VISITED`` (slot ``j < NUM_VISITED`` holds the ``j``-th child action visited, in order of first visit);
- ``node_f [B, N, 5]`` float64: ``VALUE_SUM`` (sum of backed-up returns), ``REWARD`` and ``DISCOUNT`` of the edge into
  the node (root: 0 and 1), ``RAW_VALUE`` (the network's value of the node), ``SECOND_PRIOR`` (see below);
- ``node_i [B, N, 6]`` int32: ``VISITS`` N(s), ``PARENT``, ``ACTION`` (from the parent), ``DEPTH``, ``NUM_VISITED``,
  ``BEST_UNVISITED`` (see below).

Per root: ``minmax [B, 2]`` = (minimum, maximum) of the tree's Q statistics; ``root_legal [B, A]``. ``tables [2, N]``
holds ``c1 + log((n + c2 + 1) / c2)`` and ``sqrt(n)`` for every possible visit count ``n`` (eq. 2's factors).

Selection only scores the visited children and the unvisited child of highest prior (``BEST_UNVISITED``, lowest index
among equal priors): every unvisited child scores ``c P(s, a)`` with the same ``c >= 0``, so no other unvisited child
can score more. When another unvisited child could score the same (``c * SECOND_PRIOR`` equals the best one's score,
e.g. equal priors, or ``c = 0`` at the root's first simulation) the node is scored in full (:func:`_puct_scan`), so the
choice is always the maximal pUCT score with ties to the lowest action index, exactly as scoring every child.

Embeddings: ``store [B, N, E]`` (every node's embedding flattened to ``E`` numbers), ``gather [B, E]`` (where the
selection kernel copies the parent embeddings the network needs next).

The per-root, per-level work is written out inside the kernels' loops rather than in helper functions: numba
reference-counts the arrays passed to a helper at every call, which cost several times the work itself here.
"""

import math

import numba
import numpy as np

#: Children index of an edge whose child node has not been expanded yet.
UNEXPANDED = -1

#: Error codes of :func:`expand_backup_select` (0: fine), naming the network output that was not finite.
OUTPUT_NAMES = ("", "prior_logits", "value", "reward", "discount")

# Field indices of the packed arrays (see the module docstring).
PRIOR, Q = 0, 1  # edge_f
CHILD, CHILD_VISITS, VISITED = 0, 1, 2  # edge_i
VALUE_SUM, REWARD, DISCOUNT, RAW_VALUE, SECOND_PRIOR = 0, 1, 2, 3, 4  # node_f
VISITS, PARENT, ACTION, DEPTH, NUM_VISITED, BEST_UNVISITED = 0, 1, 2, 3, 4, 5  # node_i
NUM_EDGE_F, NUM_EDGE_I, NUM_NODE_F, NUM_NODE_I = 2, 3, 5, 6


@numba.njit(cache=True, error_model="numpy")
def _q_normalisation(q_min: float, q_max: float) -> tuple[float, float]:
    """``(shift, scale)`` of the tree's min-max normalisation ``(q - shift) / scale``; the identity while
    ``q_max <= q_min`` (``(q - 0) / 1 == q`` exactly)."""
    if q_max > q_min:
        return q_min, q_max - q_min
    return 0.0, 1.0


@numba.njit(cache=True, error_model="numpy")
def _own_value(value_sum: float, visits: int, raw_value: float) -> float:
    """A node's value V(s): its mean backed-up return, or the network's value before its first backup."""
    return value_sum / visits if visits > 0 else raw_value


@numba.njit(cache=True, error_model="numpy")
def _prior_score(pb_c_log: float, sqrt_parent: float, n_child: int, prior: float) -> float:
    """pUCT's exploration term (eq. 2): ``P(s, a) sqrt(N(s)) / (1 + N(s, a)) (c1 + log((N(s) + c2 + 1) / c2))``.
    Every caller goes through here, so that equal inputs give bitwise equal scores."""
    return pb_c_log * (sqrt_parent / (n_child + 1)) * prior


@numba.njit(cache=True, error_model="numpy")
def _puct_scan(
    b: int,
    node: int,
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
    root_legal: np.ndarray,  # [B, A] bool
    tables: np.ndarray,  # [2, N] float64
    unvisited_parent: bool,
    scores: np.ndarray,  # [A] float64, scratch
) -> int:
    """
    Score every child of a node by pUCT and return the best action (MuZero, Appendix B, eq. 2).

    score(s, a) = Qnorm(s, a) + P(s, a) * sqrt(N(s)) / (1 + N(s, a)) * (c1 + log((N(s) + c2 + 1) / c2)), with
    Q(s, a) min-max normalised over the root's tree (identity while max <= min); an unvisited child's Q is 0, or,
    with ``unvisited_parent``, the node's own value V(s) (normalised the same way). Ties go to the lowest action
    index; at the root (``node == 0``) only legal actions count.
    """
    n_parent = node_i[b, node, VISITS]
    pb_c_log = tables[0, n_parent]
    sqrt_parent = tables[1, n_parent]
    shift, scale = _q_normalisation(minmax[b, 0], minmax[b, 1])
    unvisited_score = 0.0
    if unvisited_parent:
        own = _own_value(node_f[b, node, VALUE_SUM], n_parent, node_f[b, node, RAW_VALUE])
        unvisited_score = (own - shift) / scale
    num_actions = edge_f.shape[2]
    for a in range(num_actions):  # no branch and no loop-carried state: vectorisable
        n_child = edge_i[b, node, a, CHILD_VISITS]
        prior_score = _prior_score(pb_c_log, sqrt_parent, n_child, edge_f[b, node, a, PRIOR])
        value_score = (edge_f[b, node, a, Q] - shift) / scale
        scores[a] = prior_score + (value_score if n_child > 0 else unvisited_score)
    if node == 0:
        for a in range(num_actions):
            if not root_legal[b, a]:
                scores[a] = -np.inf
    best_score = scores[0]
    best_action = 0
    for a in range(1, num_actions):
        if scores[a] > best_score:
            best_score = scores[a]
            best_action = a
    return best_action


@numba.njit(cache=True, error_model="numpy")
def _keep_top_two(action: int, prior: float, best: int, p_best: float, p_second: float) -> tuple[int, float, float]:
    """Fold ``(action, prior)`` into a running (best action, its prior, second-highest prior), the actions coming in
    increasing order: a prior must be strictly higher to win, so ties keep the lowest action index."""
    if prior > p_best:
        return action, prior, p_best
    if prior > p_second:
        return best, p_best, prior
    return best, p_best, p_second


@numba.njit(cache=True, error_model="numpy")
def _rescan_unvisited(
    nodes: np.ndarray,  # [B, K] int64, -1 = none
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    root_legal: np.ndarray,  # [B, A] bool
) -> None:
    """For nodes ``nodes[b, k]`` of tree ``b``: cache the unvisited child of highest prior (lowest index on ties; at
    the root legal children only) as ``BEST_UNVISITED`` and the second-highest unvisited prior as ``SECOND_PRIOR``."""
    for b in range(nodes.shape[0]):
        for k in range(nodes.shape[1]):
            node = nodes[b, k]
            if node < 0:
                continue
            best = -1
            p_best = -np.inf
            p_second = -np.inf
            for a in range(edge_f.shape[2]):
                if edge_i[b, node, a, CHILD] != UNEXPANDED or (node == 0 and not root_legal[b, a]):
                    continue
                best, p_best, p_second = _keep_top_two(a, edge_f[b, node, a, PRIOR], best, p_best, p_second)
            node_i[b, node, BEST_UNVISITED] = best
            node_f[b, node, SECOND_PRIOR] = p_second


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
def select_leaves(
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
    root_legal: np.ndarray,  # [B, A] bool
    tables: np.ndarray,  # [2, N] float64
    max_depth: int,
    unvisited_parent: bool,
    sim: int,
    sim_index: np.ndarray,  # [4, S, B] int64: parent, action, evaluated node, its depth
    path: np.ndarray,  # [B, N] int64
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E]
) -> None:
    """
    Descend every root's tree by pUCT (eq. 2) to an unexpanded edge (or ``max_depth`` edges), batched over B.

    Writes, per root, the parent node, the action taken from it, the node the simulation evaluates (``sim + 1``
    for a new node, or the existing child when the depth limit stopped the descent) and its depth, the nodes on the
    way (``path[b, :depth + 1]``, for the backup), and copies the parent's embedding into ``gather``. The roots
    descend in lockstep, one level for every root at a time.
    """
    batch_size, _, num_actions, _ = edge_f.shape
    scores = np.empty(num_actions)
    parent_out = sim_index[0, sim]
    action_out = sim_index[1, sim]
    leaf_out = sim_index[2, sim]
    depth_out = sim_index[3, sim]
    descending = -2
    if sim == 0:  # the roots' cached unvisited priors
        _rescan_unvisited(np.zeros((batch_size, 1), dtype=np.int64), edge_f, edge_i, node_f, node_i, root_legal)
    parent_out[:] = 0  # the current node while descending
    leaf_out[:] = descending
    path[:, 0] = 0
    remaining = batch_size
    depth = 0
    while remaining > 0:
        depth += 1
        for b in range(batch_size):
            if leaf_out[b] != descending:
                continue
            node = parent_out[b]
            # pUCT factors of this node (eq. 2) and the min-max normalisation of the root's tree.
            n_parent = node_i[b, node, VISITS]
            pb_c_log = tables[0, n_parent]
            sqrt_parent = tables[1, n_parent]
            shift, scale = _q_normalisation(minmax[b, 0], minmax[b, 1])
            # The unvisited child of highest prior: every unvisited child scores c * P(s, a) + u, the same c >= 0
            # and u for all (u: 0, or the node's own normalised value with `unvisited_parent`).
            best_score = -np.inf
            action = num_actions
            unvisited = node_i[b, node, BEST_UNVISITED]
            if unvisited >= 0:
                prior_score = _prior_score(pb_c_log, sqrt_parent, 0, edge_f[b, node, unvisited, PRIOR])
                if unvisited_parent:
                    own = _own_value(node_f[b, node, VALUE_SUM], n_parent, node_f[b, node, RAW_VALUE])
                    best_score = prior_score + (own - shift) / scale
                else:
                    best_score = prior_score
                if _prior_score(pb_c_log, sqrt_parent, 0, node_f[b, node, SECOND_PRIOR]) == prior_score:
                    action = -1  # another unvisited child may tie: score every child
                else:
                    action = unvisited
            if action < 0:
                action = _puct_scan(
                    b, node, edge_f, edge_i, node_f, node_i, minmax, root_legal, tables, unvisited_parent, scores
                )
            else:
                # The visited children, in order of first visit; ties go to the lowest action index.
                for j in range(node_i[b, node, NUM_VISITED]):
                    a = edge_i[b, node, j, VISITED]
                    n_child = edge_i[b, node, a, CHILD_VISITS]
                    prior_score = _prior_score(pb_c_log, sqrt_parent, n_child, edge_f[b, node, a, PRIOR])
                    score = prior_score + (edge_f[b, node, a, Q] - shift) / scale
                    if score > best_score or (score == best_score and a < action):
                        best_score = score
                        action = a
            action_out[b] = action
            child = edge_i[b, node, action, CHILD]
            if child == UNEXPANDED:
                leaf_out[b] = sim + 1
                path[b, depth] = sim + 1
                depth_out[b] = depth
                remaining -= 1
            elif depth >= max_depth:
                leaf_out[b] = child
                path[b, depth] = child
                depth_out[b] = depth
                remaining -= 1
            else:
                parent_out[b] = child
                path[b, depth] = child
    _gather_parents(parent_out, store, gather)


@numba.njit(cache=True, error_model="numpy")
def _non_finite_output(
    net_logits: np.ndarray,  # [B, A]
    net_value: np.ndarray,  # [B]
    net_reward: np.ndarray,  # [B]
    net_discount: np.ndarray,  # [B]
) -> int:
    """Index in :data:`OUTPUT_NAMES` of the first network output holding a non-finite number, 0 if none."""
    batch_size, num_actions = net_logits.shape
    for b in range(batch_size):
        for a in range(num_actions):
            if not math.isfinite(net_logits[b, a]):
                return 1
    for b in range(batch_size):
        if not math.isfinite(net_value[b]):
            return 2
        if not math.isfinite(net_reward[b]):
            return 3
        if not math.isfinite(net_discount[b]):
            return 4
    return 0


@numba.njit(cache=True, error_model="numpy")
def _expand(
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    sim: int,
    sim_index: np.ndarray,  # [4, S, B] int64: parent, action, evaluated node, its depth
    net_logits: np.ndarray,  # [B, A] float
    net_value: np.ndarray,  # [B] float
    net_reward: np.ndarray,  # [B] float
    net_discount: np.ndarray,  # [B] float
    net_embedding: np.ndarray,  # [B, E]
    store: np.ndarray,  # [B, N, E]
    rescan: np.ndarray,  # [B, 1] int64, out: the parent whose unvisited children changed (-1 = none)
) -> None:
    """
    Create node ``sim + 1`` of every tree from the network's outputs (the pseudocode's ``expand_node``).

    Writes its embedding, the reward and discount of its edge, its value, prior = softmax(logits) over all
    actions (interior nodes are not masked), and its ``BEST_UNVISITED``/``SECOND_PRIOR`` (every child is unvisited).
    The parent, whose unvisited children changed, goes into ``rescan``. Trees whose simulation stopped at
    ``max_depth`` get no new node.
    """
    batch_size, _, num_actions, _ = edge_f.shape
    new_node = sim + 1
    for b in range(batch_size):
        for e in range(net_embedding.shape[1]):
            store[b, new_node, e] = net_embedding[b, e]
        if sim_index[2, sim, b] != new_node:
            continue  # stopped by the depth limit at an existing node
        parent = sim_index[0, sim, b]
        action = sim_index[1, sim, b]
        edge_i[b, parent, action, CHILD] = new_node
        num_visited = node_i[b, parent, NUM_VISITED]
        edge_i[b, parent, num_visited, VISITED] = action
        node_i[b, parent, NUM_VISITED] = num_visited + 1
        node_i[b, new_node, PARENT] = parent
        node_i[b, new_node, ACTION] = action
        node_i[b, new_node, DEPTH] = node_i[b, parent, DEPTH] + 1
        node_f[b, new_node, REWARD] = net_reward[b]
        node_f[b, new_node, DISCOUNT] = net_discount[b]
        node_f[b, new_node, RAW_VALUE] = net_value[b]
        # Prior: softmax over all actions, shifted by the maximum for stability. Every child of the new node is
        # unvisited: its BEST_UNVISITED and SECOND_PRIOR come from the final priors (as `_rescan_unvisited` finds).
        logit_max = -np.inf
        for a in range(num_actions):
            if net_logits[b, a] > logit_max:
                logit_max = net_logits[b, a]
        total = 0.0
        for a in range(num_actions):
            p = math.exp(float(net_logits[b, a]) - logit_max)
            edge_f[b, new_node, a, PRIOR] = p
            total += p
        best = -1
        p_best = -np.inf
        p_second = -np.inf
        for a in range(num_actions):
            p = edge_f[b, new_node, a, PRIOR] / total
            edge_f[b, new_node, a, PRIOR] = p
            best, p_best, p_second = _keep_top_two(a, p, best, p_best, p_second)
        node_i[b, new_node, BEST_UNVISITED] = best
        node_f[b, new_node, SECOND_PRIOR] = p_second
        rescan[b, 0] = parent


@numba.njit(cache=True, error_model="numpy")
def _backup(
    path: np.ndarray,  # [B, N] int64
    depths: np.ndarray,  # [B] int64
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
) -> None:
    """
    Back every tree's leaf network value up to its root (the pseudocode's ``backpropagate``, eq. 3-4).

    G = v(leaf); for each node of the search path from the leaf up: value_sum += G, N += 1, min-max update with
    Q = r + discount V(node) (also stored as the parent's edge statistics), then G = r + discount G with the reward
    and discount of the edge into that node. The path was recorded by the selection, so that the memory accesses of
    the steps do not wait on each other.
    """
    for b in range(path.shape[0]):
        depth = depths[b]
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
            q = reward + discount * (value_sum / visits)
            q_min = min(q_min, q)
            q_max = max(q_max, q)
            if k > 0:
                parent = path[b, k - 1]
                action = node_i[b, node, ACTION]
                edge_i[b, parent, action, CHILD_VISITS] = visits
                edge_f[b, parent, action, Q] = q
                g = reward + discount * g
        minmax[b, 0] = q_min
        minmax[b, 1] = q_max


@numba.njit(cache=True, error_model="numpy")
def expand_backup_select(
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
    root_legal: np.ndarray,  # [B, A] bool
    tables: np.ndarray,  # [2, N] float64
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
    Finish simulation ``sim`` and select for ``sim + 1`` (if any), batched over B: one kernel call per simulation.

    Expansion (the pseudocode's ``expand_node``) writes the network's outputs into the new node ``sim + 1``: its
    embedding, the reward and discount of its edge, its value, and prior = softmax(logits) over all actions (interior
    nodes are not masked). A simulation stopped by the depth limit at an existing node evaluates that node with its
    stored network value (what a deterministic model returns for the same state and action) and leaves the tree's
    shape unchanged.

    Backup (the pseudocode's ``backpropagate``, eq. 3-4): G = v(leaf); for each node from the leaf up,
    value_sum += G, N += 1, min-max update with Q = r + discount V(node) (also stored as the parent's edge
    statistics), then G = r + discount G with the reward and discount of the edge into that node.

    :return: 0, or the index in :data:`OUTPUT_NAMES` of a network output holding a non-finite number (the tree is
        then left untouched)
    """
    error = _non_finite_output(net_logits, net_value, net_reward, net_discount)
    if error != 0:
        return error
    rescan = np.full((edge_f.shape[0], 1), -1, dtype=np.int64)
    _expand(
        edge_f, edge_i, node_f, node_i, sim, sim_index, net_logits, net_value, net_reward, net_discount, net_embedding,
        store, rescan,
    )  # fmt: skip
    _rescan_unvisited(rescan, edge_f, edge_i, node_f, node_i, root_legal)
    _backup(path, sim_index[3, sim], edge_f, edge_i, node_f, node_i, minmax)
    if sim + 1 < sim_index.shape[1]:
        select_leaves(
            edge_f, edge_i, node_f, node_i, minmax, root_legal, tables, max_depth, unvisited_parent, sim + 1, sim_index,
            path, store, gather,
        )  # fmt: skip
    return 0
