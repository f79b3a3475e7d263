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
e.g. equal priors, or ``c = 0`` at the root's first simulation) the node is scored in full, so the choice is always the
maximal pUCT score with ties to the lowest action index, exactly as scoring every child.

Embeddings: ``store [B, N, E]`` (every node's embedding flattened to ``E`` numbers), ``gather [B, E]`` (where the
selection kernel copies the parent embeddings the network needs next).
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


@numba.njit(cache=True, error_model="numpy", inline="always")
def _puct_factors(
    b: int,
    node: int,
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
    tables: np.ndarray,  # [2, N] float64
) -> tuple[float, float, float, float]:
    """Per-node factors of eq. 2: c1 + log((N(s) + c2 + 1) / c2), sqrt(N(s)), and the min-max shift and scale."""
    n_parent = node_i[b, node, VISITS]
    q_min = minmax[b, 0]
    q_max = minmax[b, 1]
    if q_max > q_min:
        return tables[0, n_parent], tables[1, n_parent], q_min, q_max - q_min
    return tables[0, n_parent], tables[1, n_parent], 0.0, 1.0  # identity: (q - 0) / 1 == q exactly


@numba.njit(cache=True, error_model="numpy")
def _puct_scan(
    b: int,
    node: int,
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
    root_legal: np.ndarray,  # [B, A] bool
    tables: np.ndarray,  # [2, N] float64
    scores: np.ndarray,  # [A] float64, scratch
) -> int:
    """Score every child of a node by pUCT (eq. 2) and return the best action (ties: lowest index; root: legal only)."""
    pb_c_log, sqrt_parent, shift, scale = _puct_factors(b, node, node_i, minmax, tables)
    num_actions = edge_f.shape[2]
    for a in range(num_actions):  # no branch and no loop-carried state: vectorisable
        n_child = edge_i[b, node, a, CHILD_VISITS]
        prior_score = pb_c_log * (sqrt_parent / (n_child + 1)) * edge_f[b, node, a, PRIOR]
        value_score = (edge_f[b, node, a, Q] - shift) / scale
        scores[a] = prior_score + value_score if n_child > 0 else prior_score
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


@numba.njit(cache=True, error_model="numpy", inline="always")
def _puct_fast(
    b: int,
    node: int,
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
    tables: np.ndarray,  # [2, N] float64
) -> int:
    """Return the action of maximal pUCT score (eq. 2) at one node, or -1 when :func:`_puct_scan` must decide.

    score(s, a) = Qnorm(s, a) + P(s, a) * sqrt(N(s)) / (1 + N(s, a)) * (c1 + log((N(s) + c2 + 1) / c2)), with
    Q(s, a) min-max normalised over the root's tree (identity while max <= min) and Qnorm = 0 for unvisited children;
    ties go to the lowest action index. Scores only the visited children and the unvisited child of highest prior
    (every unvisited child scores c P(s, a) with the same c); returns -1 if another unvisited child could tie with it.
    """
    pb_c_log, sqrt_parent, shift, scale = _puct_factors(b, node, node_i, minmax, tables)
    unvisited = node_i[b, node, BEST_UNVISITED]
    best_score = -np.inf
    best_action = edge_f.shape[2]
    if unvisited >= 0:
        c = pb_c_log * (sqrt_parent / 1)
        best_score = c * edge_f[b, node, unvisited, PRIOR]
        if c * node_f[b, node, SECOND_PRIOR] == best_score:
            return -1
        best_action = unvisited
    for j in range(node_i[b, node, NUM_VISITED]):
        a = edge_i[b, node, j, VISITED]
        n_child = edge_i[b, node, a, CHILD_VISITS]
        prior_score = pb_c_log * (sqrt_parent / (n_child + 1)) * edge_f[b, node, a, PRIOR]
        score = prior_score + (edge_f[b, node, a, Q] - shift) / scale
        if score > best_score or (score == best_score and a < best_action):
            best_score = score
            best_action = a
    return best_action


@numba.njit(cache=True, error_model="numpy", inline="always")
def _rescan_unvisited(
    b: int,
    node: int,
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    root_legal: np.ndarray,  # [B, A] bool
) -> None:
    """Cache the unvisited child of highest prior (lowest index on ties) and the second-highest unvisited prior."""
    best = -1
    p_best = -np.inf
    p_second = -np.inf
    for a in range(edge_f.shape[2]):
        if edge_i[b, node, a, CHILD] != UNEXPANDED or (node == 0 and not root_legal[b, a]):
            continue
        p = edge_f[b, node, a, PRIOR]
        if p > p_best:
            p_second = p_best
            p_best = p
            best = a
        elif p > p_second:
            p_second = p
    node_i[b, node, BEST_UNVISITED] = best
    node_f[b, node, SECOND_PRIOR] = p_second


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
    sim: int,
    sim_index: np.ndarray,  # [3, S, B] int64: parent, action, evaluated node
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E]
) -> None:
    """Descend every root's tree by pUCT to an unexpanded edge (or ``max_depth`` edges); gather parent embeddings.

    Writes, per root, the parent node, the action taken from it and the node the simulation evaluates: ``sim + 1``
    for a new node, or the existing child when the depth limit stopped the descent. The roots descend in lockstep,
    one level for every root at a time, so that the memory accesses of different roots overlap.
    """
    batch_size, _, num_actions, _ = edge_f.shape
    scores = np.empty(num_actions)
    parent_out = sim_index[0, sim]
    action_out = sim_index[1, sim]
    leaf_out = sim_index[2, sim]
    descending = -2
    for b in range(batch_size):
        if sim == 0:
            _rescan_unvisited(b, 0, edge_f, edge_i, node_f, node_i, root_legal)
        parent_out[b] = 0  # the current node while descending
        leaf_out[b] = descending
    remaining = batch_size
    depth = 0
    while remaining > 0:
        depth += 1
        for b in range(batch_size):
            if leaf_out[b] != descending:
                continue
            node = parent_out[b]
            action = _puct_fast(b, node, edge_f, edge_i, node_f, node_i, minmax, tables)
            if action < 0:
                action = _puct_scan(b, node, edge_f, edge_i, node_i, minmax, root_legal, tables, scores)
            action_out[b] = action
            child = edge_i[b, node, action, CHILD]
            if child == UNEXPANDED:
                leaf_out[b] = sim + 1
                remaining -= 1
            elif depth >= max_depth:
                leaf_out[b] = child
                remaining -= 1
            else:
                parent_out[b] = child
    for b in range(batch_size):
        node = parent_out[b]
        for e in range(gather.shape[1]):
            gather[b, e] = store[b, node, e]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _backup(
    leaves: np.ndarray,  # [B] int64
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    minmax: np.ndarray,  # [B, 2] float64
) -> None:
    """Back each tree's leaf network value up to its root (the pseudocode's ``backpropagate``, eq. 3-4).

    G = v(leaf); for each node from the leaf up: value_sum += G, N += 1, min-max update with
    Q = r + discount V(node) (also stored as the parent's edge statistics), then G = r + discount G with the reward
    and discount of the edge into that node. The trees climb in lockstep, one level each at a time.
    """
    batch_size = leaves.shape[0]
    nodes = leaves.copy()
    returns = np.empty(batch_size)
    for b in range(batch_size):
        returns[b] = node_f[b, nodes[b], RAW_VALUE]
    remaining = batch_size
    while remaining > 0:
        for b in range(batch_size):
            node = nodes[b]
            if node < 0:
                continue
            g = returns[b]
            value_sum = node_f[b, node, VALUE_SUM] + g
            visits = node_i[b, node, VISITS] + 1
            node_f[b, node, VALUE_SUM] = value_sum
            node_i[b, node, VISITS] = visits
            reward = node_f[b, node, REWARD]
            discount = node_f[b, node, DISCOUNT]
            q = reward + discount * (value_sum / visits)
            if q < minmax[b, 0]:
                minmax[b, 0] = q
            if q > minmax[b, 1]:
                minmax[b, 1] = q
            if node == 0:
                nodes[b] = -1
                remaining -= 1
                continue
            parent = node_i[b, node, PARENT]
            action = node_i[b, node, ACTION]
            edge_i[b, parent, action, CHILD_VISITS] = visits
            edge_f[b, parent, action, Q] = q
            returns[b] = reward + discount * g
            nodes[b] = parent


@numba.njit(cache=True, error_model="numpy", inline="always")
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


@numba.njit(cache=True, error_model="numpy", inline="always")
def _expand(
    b: int,
    leaf: int,
    parent: int,
    action: int,
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 6] int32
    root_legal: np.ndarray,  # [B, A] bool
    net_logits: np.ndarray,  # [B, A] float
    net_value: np.ndarray,  # [B] float
    net_reward: np.ndarray,  # [B] float
    net_discount: np.ndarray,  # [B] float
) -> None:
    """Create node ``leaf`` under ``(parent, action)`` from the network's outputs (the pseudocode's ``expand_node``).

    The new node's prior is softmax(logits) over all actions (interior nodes are not masked).
    """
    num_actions = edge_f.shape[2]
    edge_i[b, parent, action, CHILD] = leaf
    num_visited = node_i[b, parent, NUM_VISITED]
    edge_i[b, parent, num_visited, VISITED] = action
    node_i[b, parent, NUM_VISITED] = num_visited + 1
    node_i[b, leaf, PARENT] = parent
    node_i[b, leaf, ACTION] = action
    node_i[b, leaf, DEPTH] = node_i[b, parent, DEPTH] + 1
    node_f[b, leaf, REWARD] = net_reward[b]
    node_f[b, leaf, DISCOUNT] = net_discount[b]
    node_f[b, leaf, RAW_VALUE] = net_value[b]
    # Softmax over all actions, shifted by the maximum for stability.
    logit_max = -np.inf
    for a in range(num_actions):
        if net_logits[b, a] > logit_max:
            logit_max = net_logits[b, a]
    total = 0.0
    for a in range(num_actions):
        p = math.exp(float(net_logits[b, a]) - logit_max)
        edge_f[b, leaf, a, PRIOR] = p
        total += p
    for a in range(num_actions):
        edge_f[b, leaf, a, PRIOR] /= total
    _rescan_unvisited(b, leaf, edge_f, edge_i, node_f, node_i, root_legal)
    _rescan_unvisited(b, parent, edge_f, edge_i, node_f, node_i, root_legal)


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
    sim: int,
    sim_index: np.ndarray,  # [3, S, B] int64: parent, action, evaluated node
    net_logits: np.ndarray,  # [B, A] float
    net_value: np.ndarray,  # [B] float
    net_reward: np.ndarray,  # [B] float
    net_discount: np.ndarray,  # [B] float
    net_embedding: np.ndarray,  # [B, E]
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E] (unused when sim + 1 == S)
) -> int:
    """Finish simulation ``sim`` and select for ``sim + 1`` (if any), batched over B: one kernel call per simulation.

    Expansion writes the network's outputs (embedding, reward and discount of the edge, value, prior) into the new
    node ``sim + 1``. A simulation stopped by the depth limit at an existing node backs up that node's stored network
    value (what a deterministic model returns for the same state and action) and leaves the tree's shape unchanged.

    :return: 0, or the index in :data:`OUTPUT_NAMES` of a network output holding a non-finite number (the tree is
        then left untouched)
    """
    error = _non_finite_output(net_logits, net_value, net_reward, net_discount)
    if error != 0:
        return error
    batch_size = edge_f.shape[0]
    for b in range(batch_size):
        for e in range(net_embedding.shape[1]):
            store[b, sim + 1, e] = net_embedding[b, e]
        leaf = sim_index[2, sim, b]
        if leaf == sim + 1:
            _expand(
                b, leaf, sim_index[0, sim, b], sim_index[1, sim, b], edge_f, edge_i, node_f, node_i, root_legal,
                net_logits, net_value, net_reward, net_discount,
            )  # fmt: skip
    _backup(sim_index[2, sim], edge_f, edge_i, node_f, node_i, minmax)
    if sim + 1 < sim_index.shape[1]:
        select_leaves(edge_f, edge_i, node_f, node_i, minmax, root_legal, tables, max_depth, sim + 1, sim_index, store, gather)
    return 0
