"""Compiled kernels of the batched Gumbel MuZero search: selection, expansion and backup on fixed-shape arrays.

The search tree of ``B`` roots lives in four packed numpy arrays, ``N = num_simulations + 1`` nodes per root; node 0
is the root and the node created by simulation ``s`` has index ``s + 1`` (the layout of
:mod:`sb3_frontier.algorithms.muzero._tree`, with the fields Gumbel MuZero needs):

- ``edge_f [B, N, A, 2]`` float64: ``PRIOR`` pi(s, a) = softmax of the network's logits (at the root over the legal
  actions, 0 on illegal ones) and ``Q`` Q(s, a) = r(s, a) + discount(s, a) V(child) of visited children;
- ``edge_i [B, N, A, 3]`` int32: ``CHILD`` (child node index or :data:`UNEXPANDED`), ``CHILD_VISITS`` N(s, a), and
  ``VISITED`` (slot ``j < NUM_VISITED`` holds the ``j``-th child action visited, in order of first visit);
- ``node_f [B, N, 5]`` float64: ``VALUE_SUM`` (sum of backed-up returns), ``REWARD`` and ``DISCOUNT`` of the edge into
  the node (root: 0 and 1), ``RAW_VALUE`` (the network's value of the node), ``UNVISITED_PRIOR`` (the sum of the
  unvisited children's priors);
- ``node_i [B, N, 7]`` int32: ``VISITS`` N(s), ``PARENT``, ``ACTION`` (from the parent), ``DEPTH``, ``NUM_VISITED``,
  ``BEST_UNVISITED`` (the unvisited child of highest prior, lowest index on ties) and ``FIRST_UNVISITED`` (the lowest
  unvisited action), both -1 when every child has been visited.

At the root, the unvisited statistics cover the legal actions only (illegal ones are never visited).

Nothing is initialised before it is used: :func:`init_roots` writes the roots, the expansion writes a new node and
its edges, and :func:`finish` gives the nodes a depth-limited search never created their initial values, then reads
the results out. Zeroing the four arrays in numpy beforehand and reading the results out in numpy took about 15% of
a search of 256 roots at A = 18 (3.3 ms of 22 ms).

Per root: ``root_legal [B, A]``; ``root_score [B, A]`` = g(a) + logits(a), the Gumbel noise plus the shifted root
logits; ``considered [B, S]`` = the visit count Sequential Halving considers at each simulation of that root.

Every unvisited child of a node has the same completed Q-value (the mixed value), hence the same sigma: the selection
below the root scores the visited children and the unvisited one of highest prior only, and the unvisited children's
share of the softmax is their summed prior times one exponential. A selection step therefore costs O(visited
children); the unvisited statistics are rescanned (O(A)) only for the node that gained a child.

The selection's per-node work is written out inside its loop: numba reference-counts the arrays passed to a called
function at every call (``inline="always"`` ones included), which costs more than the work of a tree level.

Embeddings: ``store [B, N, E]`` (every node's embedding flattened to ``E`` numbers), ``gather [B, E]`` (where the
selection kernel copies the parent embeddings the network needs next).
"""

import math

import numba
import numpy as np

from sb3_frontier.algorithms.muzero._tree import UNEXPANDED, _gather_parents, _non_finite_output

# Field indices of the packed arrays (see the module docstring).
PRIOR, Q = 0, 1  # edge_f
CHILD, CHILD_VISITS, VISITED = 0, 1, 2  # edge_i
VALUE_SUM, REWARD, DISCOUNT, RAW_VALUE, UNVISITED_PRIOR = 0, 1, 2, 3, 4  # node_f
VISITS, PARENT, ACTION, DEPTH, NUM_VISITED, BEST_UNVISITED, FIRST_UNVISITED = 0, 1, 2, 3, 4, 5, 6  # node_i
NUM_EDGE_F, NUM_EDGE_I, NUM_NODE_F, NUM_NODE_I = 2, 3, 5, 7

#: Smallest prior weight in the mixed value (float64's smallest normal number, as mctx's ``finfo.tiny``).
TINY = float(np.finfo(np.float64).tiny)
#: Smallest denominator of the min-max rescaling of the completed Q-values (mctx's ``epsilon``).
EPSILON = 1e-8


@numba.njit(cache=True, error_model="numpy", inline="always")
def rescan_unvisited(
    b: int,
    node: int,
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
    root_legal: np.ndarray,  # [B, A] bool
) -> None:
    """Recompute ``UNVISITED_PRIOR``, ``BEST_UNVISITED`` and ``FIRST_UNVISITED`` of one node (at the root: over the
    legal actions), the priors summed in action order."""
    at_root = node == 0
    best = -1
    first = -1
    best_prior = -1.0
    total = 0.0
    for a in range(edge_f.shape[2]):
        if edge_i[b, node, a, CHILD] != UNEXPANDED or (at_root and not root_legal[b, a]):
            continue
        p = edge_f[b, node, a, PRIOR]
        total += p
        if p > best_prior:
            best_prior = p
            best = a
        if first < 0:
            first = a
    node_f[b, node, UNVISITED_PRIOR] = total
    node_i[b, node, BEST_UNVISITED] = best
    node_i[b, node, FIRST_UNVISITED] = first


@numba.njit(cache=True, error_model="numpy", inline="always")
def node_statistics(
    b: int,
    node: int,
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
    value_scale: float,
    maxvisit_init: float,
) -> tuple[int, float, float, float, float]:
    """
    What a node's completed Q-values and their transform sigma need (Danihelka et al. 2022, Appendix D), from its
    visited children, with N(a) their visits and pi the node's prior (floored at :data:`TINY`):

    - mixed value ``v_mix = (v(s) + sum_b N(b) * sum_{a: N(a) > 0} pi(a) Q(s, a) / sum_{a: N(a) > 0} pi(a))
      / (1 + sum_b N(b))`` (``v(s)`` the network's value of the node, ``v_mix = v(s)`` before any visit);
    - completed ``q(a) = Q(s, a)`` if ``N(a) > 0``, else ``v_mix``;
    - ``sigma(q) = coef * (q - min q)`` with ``coef = (maxvisit_init + max_b N(b)) * value_scale /
      max(max q - min q, EPSILON)`` (the paper's sigma after mctx's min-max rescaling of the completed Q-values);
      ``v_mix`` enters the minimum and maximum only while some child (at the root: some legal child) is unvisited.

    :return: ``sum_b N(b)``, ``v_mix``, ``min q``, ``max q``, ``coef``
    """
    sum_visits = 0
    max_visits = 0
    sum_prior = 0.0
    weighted_q = 0.0
    q_min = np.inf
    q_max = -np.inf
    for j in range(node_i[b, node, NUM_VISITED]):
        a = edge_i[b, node, j, VISITED]
        n = edge_i[b, node, a, CHILD_VISITS]
        q = edge_f[b, node, a, Q]
        p = max(TINY, edge_f[b, node, a, PRIOR])
        sum_visits += n
        max_visits = max(max_visits, n)
        sum_prior += p
        weighted_q += p * q
        q_min = min(q_min, q)
        q_max = max(q_max, q)
    mixed_value = node_f[b, node, RAW_VALUE]
    if sum_visits > 0:
        mixed_value = (mixed_value + sum_visits * (weighted_q / sum_prior)) / (sum_visits + 1)
    if node_i[b, node, BEST_UNVISITED] >= 0:
        q_min = min(q_min, mixed_value)
        q_max = max(q_max, mixed_value)
    coef = (maxvisit_init + max_visits) * value_scale / max(q_max - q_min, EPSILON)
    return sum_visits, mixed_value, q_min, q_max, coef


@numba.njit(cache=True, error_model="numpy")
def select_leaves(  # noqa: C901 (one loop with every level's work written out, see the module docstring)
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
    root_legal: np.ndarray,  # [B, A] bool
    root_score: np.ndarray,  # [B, A] float64
    considered: np.ndarray,  # [B, S] int64
    value_scale: float,
    maxvisit_init: float,
    max_depth: int,
    sim: int,
    sim_index: np.ndarray,  # [4, S, B] int64: parent, action, evaluated node, its depth
    path: np.ndarray,  # [B, N] int64
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E]
) -> None:
    """
    Descend every root's tree to an unexpanded edge (or ``max_depth`` edges), batched over B.

    - At the root, Sequential Halving with Gumbel: among the legal actions whose visit count equals the count the
      schedule considers at this simulation (``considered[b, sum_a N(a)]``), the one of highest
      ``g(a) + logits(a) + sigma(q(a))``.
    - Below it, the deterministic selection (Section 5, "Planning at non-root nodes"):
      ``argmax_a pi'(a) - N(a) / (1 + sum_b N(b))`` with ``pi' = softmax(logits + sigma(q))``, computed as
      ``pi'(a) = pi(a) exp(sigma(a) - max sigma) / Z``: the unvisited children share one sigma, so that they weigh
      ``UNVISITED_PRIOR`` times one exponential in Z, and the best of them is the one of highest prior (or, should
      their weight underflow to 0, the lowest one).

    Ties go to the lowest action index. Each step reads the node's completed-Q statistics as :func:`node_statistics`
    defines them, written out here: passed to a helper, the arrays are reference-counted at every tree level, which
    measured half of the descent's time (465 against 252 ns per tree and simulation at B = 256, A = 2).

    Writes, per root, the parent node, the action taken from it, the node the simulation evaluates (``sim + 1`` for a
    new node, or the existing child when the depth limit stopped the descent) and its depth, the nodes on the way
    (``path[b, :depth + 1]``, for the backup), and copies the parent's embedding into ``gather``.
    """
    batch_size, _, num_actions, _ = edge_f.shape
    weights = np.empty(num_actions)
    for b in range(batch_size):
        if sim == 0:
            rescan_unvisited(b, 0, edge_f, edge_i, node_f, node_i, root_legal)
        node = 0
        depth = 0
        path[b, 0] = 0
        while True:
            # node_statistics: sum and maximum of the children's visits, v_mix, min and max of q, sigma's coefficient.
            sum_visits = 0
            max_visits = 0
            sum_prior = 0.0
            weighted_q = 0.0
            q_min = np.inf
            q_max = -np.inf
            num_visited = node_i[b, node, NUM_VISITED]
            for j in range(num_visited):
                a = edge_i[b, node, j, VISITED]
                n = edge_i[b, node, a, CHILD_VISITS]
                q = edge_f[b, node, a, Q]
                p = max(TINY, edge_f[b, node, a, PRIOR])
                sum_visits += n
                max_visits = max(max_visits, n)
                sum_prior += p
                weighted_q += p * q
                q_min = min(q_min, q)
                q_max = max(q_max, q)
            mixed_value = node_f[b, node, RAW_VALUE]
            if sum_visits > 0:
                mixed_value = (mixed_value + sum_visits * (weighted_q / sum_prior)) / (sum_visits + 1)
            best_unvisited = node_i[b, node, BEST_UNVISITED]
            if best_unvisited >= 0:
                q_min = min(q_min, mixed_value)
                q_max = max(q_max, mixed_value)
            coef = (maxvisit_init + max_visits) * value_scale / max(q_max - q_min, EPSILON)

            action = -1
            best_score = -np.inf
            if node == 0:
                visit = considered[b, sum_visits]
                if visit == 0:  # the unvisited legal actions, which share one sigma
                    sigma = coef * (mixed_value - q_min)
                    for a in range(num_actions):
                        if edge_i[b, 0, a, CHILD] == UNEXPANDED and root_legal[b, a]:
                            score = root_score[b, a] + sigma
                            if score > best_score or action < 0:
                                best_score = score
                                action = a
                else:
                    for j in range(num_visited):
                        a = edge_i[b, 0, j, VISITED]
                        if edge_i[b, 0, a, CHILD_VISITS] == visit:
                            score = root_score[b, a] + coef * (edge_f[b, 0, a, Q] - q_min)
                            if score > best_score or (score == best_score and a < action) or action < 0:
                                best_score = score
                                action = a
            else:
                sigma_max = coef * (q_max - q_min)
                unvisited_weight = 0.0  # v_mix lies in [min q, max q] only when some child is unvisited
                if best_unvisited >= 0:
                    unvisited_weight = math.exp(coef * (mixed_value - q_min) - sigma_max)
                total = node_f[b, node, UNVISITED_PRIOR] * unvisited_weight
                for j in range(num_visited):
                    a = edge_i[b, node, j, VISITED]
                    w = edge_f[b, node, a, PRIOR] * math.exp(coef * (edge_f[b, node, a, Q] - q_min) - sigma_max)
                    weights[j] = w
                    total += w
                if best_unvisited >= 0:
                    best_score = edge_f[b, node, best_unvisited, PRIOR] * unvisited_weight / total
                    action = best_unvisited if best_score > 0.0 else node_i[b, node, FIRST_UNVISITED]
                visit_norm = 1 + sum_visits
                for j in range(num_visited):
                    a = edge_i[b, node, j, VISITED]
                    score = weights[j] / total - edge_i[b, node, a, CHILD_VISITS] / visit_norm
                    if score > best_score or (score == best_score and a < action) or action < 0:
                        best_score = score
                        action = a
            depth += 1
            child = edge_i[b, node, action, CHILD]
            if child == UNEXPANDED or depth >= max_depth:
                break
            node = child
            path[b, depth] = child
        leaf = sim + 1 if child == UNEXPANDED else child
        path[b, depth] = leaf
        sim_index[0, sim, b] = node
        sim_index[1, sim, b] = action
        sim_index[2, sim, b] = leaf
        sim_index[3, sim, b] = depth
    _gather_parents(sim_index[0, sim], store, gather)


@numba.njit(cache=True, error_model="numpy")
def _expand(
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
    root_legal: np.ndarray,  # [B, A] bool
    sim: int,
    sim_index: np.ndarray,  # [4, S, B] int64
    net_logits: np.ndarray,  # [B, A] float
    net_value: np.ndarray,  # [B] float
    net_reward: np.ndarray,  # [B] float
    net_discount: np.ndarray,  # [B] float
    net_embedding: np.ndarray,  # [B, E]
    store: np.ndarray,  # [B, N, E]
) -> None:
    """
    Create node ``sim + 1`` of every tree from the network's outputs: its embedding, the reward and discount of its
    edge, its value and its prior = softmax(logits) over all actions (interior nodes are not masked), every child
    unvisited; the parent records the new child as visited and rescans its unvisited children. Trees whose simulation
    stopped at ``max_depth`` get no new node. Every field of the new node and its edges is written here (the arrays
    are not initialised beforehand; :func:`finish` fills the nodes no simulation created).
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
        rescan_unvisited(b, parent, edge_f, edge_i, node_f, node_i, root_legal)
        node_i[b, new_node, VISITS] = 0
        node_i[b, new_node, PARENT] = parent
        node_i[b, new_node, ACTION] = action
        node_i[b, new_node, DEPTH] = node_i[b, parent, DEPTH] + 1
        node_i[b, new_node, NUM_VISITED] = 0
        node_f[b, new_node, VALUE_SUM] = 0.0
        node_f[b, new_node, REWARD] = net_reward[b]
        node_f[b, new_node, DISCOUNT] = net_discount[b]
        node_f[b, new_node, RAW_VALUE] = net_value[b]
        logit_max = -np.inf
        for a in range(num_actions):
            logit_max = max(logit_max, float(net_logits[b, a]))
        total = 0.0
        for a in range(num_actions):
            p = math.exp(float(net_logits[b, a]) - logit_max)
            edge_f[b, new_node, a, PRIOR] = p
            edge_f[b, new_node, a, Q] = 0.0
            edge_i[b, new_node, a, CHILD] = UNEXPANDED
            edge_i[b, new_node, a, CHILD_VISITS] = 0
            total += p
        # Every child of the new node is unvisited: its unvisited statistics (what rescan_unvisited would find) come
        # out of the normalisation, with no call (whose array arguments numba would reference-count).
        unvisited_prior = 0.0
        best = 0
        for a in range(num_actions):
            p = edge_f[b, new_node, a, PRIOR] / total
            edge_f[b, new_node, a, PRIOR] = p
            unvisited_prior += p
            if p > edge_f[b, new_node, best, PRIOR]:
                best = a
        node_f[b, new_node, UNVISITED_PRIOR] = unvisited_prior
        node_i[b, new_node, BEST_UNVISITED] = best
        node_i[b, new_node, FIRST_UNVISITED] = 0


@numba.njit(cache=True, error_model="numpy")
def _backup(
    path: np.ndarray,  # [B, N] int64
    depths: np.ndarray,  # [B] int64
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
) -> None:
    """
    Back every tree's leaf network value up to its root: G = v(leaf); for each node of the search path from the leaf
    up, value_sum += G, N += 1, the parent's edge statistics N(s, a) and Q(s, a) = r + discount V(node), then
    G = r + discount G with the reward and discount of the edge into that node.
    """
    for b in range(path.shape[0]):
        depth = depths[b]
        g = node_f[b, path[b, depth], RAW_VALUE]
        for k in range(depth, -1, -1):
            node = path[b, k]
            value_sum = node_f[b, node, VALUE_SUM] + g
            visits = node_i[b, node, VISITS] + 1
            node_f[b, node, VALUE_SUM] = value_sum
            node_i[b, node, VISITS] = visits
            if k > 0:
                reward = node_f[b, node, REWARD]
                discount = node_f[b, node, DISCOUNT]
                parent = path[b, k - 1]
                action = node_i[b, node, ACTION]
                edge_i[b, parent, action, CHILD_VISITS] = visits
                edge_f[b, parent, action, Q] = reward + discount * (value_sum / visits)
                g = reward + discount * g


@numba.njit(cache=True, error_model="numpy")
def expand_backup_select(
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
    root_legal: np.ndarray,  # [B, A] bool
    root_score: np.ndarray,  # [B, A] float64
    considered: np.ndarray,  # [B, S] int64
    value_scale: float,
    maxvisit_init: float,
    max_depth: int,
    sim: int,
    sim_index: np.ndarray,  # [4, S, B] int64
    path: np.ndarray,  # [B, N] int64
    net_logits: np.ndarray,  # [B, A] float
    net_value: np.ndarray,  # [B] float
    net_reward: np.ndarray,  # [B] float
    net_discount: np.ndarray,  # [B] float
    net_embedding: np.ndarray,  # [B, E]
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E] (unused when sim + 1 == S)
) -> int:
    """
    Finish simulation ``sim`` (expansion and backup) and select for ``sim + 1`` (if any): one kernel call per
    simulation, batched over B. A simulation stopped by the depth limit at an existing node evaluates that node with
    its stored network value and leaves the tree's shape unchanged.

    :return: 0, or the index in :data:`sb3_frontier.algorithms.muzero._tree.OUTPUT_NAMES` of a network output holding a
        non-finite number (the tree is then left untouched)
    """
    error = _non_finite_output(net_logits, net_value, net_reward, net_discount)
    if error != 0:
        return error
    _expand(
        edge_f, edge_i, node_f, node_i, root_legal, sim, sim_index, net_logits, net_value, net_reward, net_discount,
        net_embedding, store,
    )  # fmt: skip
    _backup(path, sim_index[3, sim], edge_f, edge_i, node_f, node_i)
    if sim + 1 < sim_index.shape[1]:
        select_leaves(
            edge_f, edge_i, node_f, node_i, root_legal, root_score, considered, value_scale, maxvisit_init, max_depth,
            sim + 1, sim_index, path, store, gather,
        )  # fmt: skip
    return 0


@numba.njit(cache=True, error_model="numpy")
def init_roots(
    root_logits: np.ndarray,  # [B, A] float
    root_value: np.ndarray,  # [B] float
    root_legal: np.ndarray,  # [B, A] bool
    noise: np.ndarray,  # [B, A] float64: gumbel_scale * G
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
    root_logits_shifted: np.ndarray,  # [B, A] float64, out
    root_score: np.ndarray,  # [B, A] float64, out
    considered: np.ndarray,  # [B, S] int64
    value_scale: float,
    maxvisit_init: float,
    max_depth: int,
    sim_index: np.ndarray,  # [4, S, B] int64
    path: np.ndarray,  # [B, N] int64
    store: np.ndarray,  # [B, N, E]
    gather: np.ndarray,  # [B, E]
) -> None:
    """
    Set up every root and select the first simulation's leaves (the tree arrays are not initialised beforehand).

    The root logits shifted so that the largest legal one is 0 (illegal ones: -inf); the root prior
    ``softmax(logits)`` over the legal actions (0 on illegal ones); ``root_score = g + logits`` (illegal: -inf); the
    root node: value sum 0, reward 0, discount 1, the network's value, no visits, parent and action -1, depth 0.
    """
    batch_size, _, num_actions, _ = edge_f.shape
    for b in range(batch_size):
        logit_max = -np.inf
        for a in range(num_actions):
            if root_legal[b, a]:
                logit_max = max(logit_max, float(root_logits[b, a]))
        total = 0.0
        for a in range(num_actions):
            legal = root_legal[b, a]
            shifted = float(root_logits[b, a]) - logit_max if legal else -np.inf
            root_logits_shifted[b, a] = shifted
            root_score[b, a] = noise[b, a] + shifted if legal else -np.inf
            p = math.exp(shifted) if legal else 0.0
            edge_f[b, 0, a, PRIOR] = p
            edge_f[b, 0, a, Q] = 0.0
            edge_i[b, 0, a, CHILD] = UNEXPANDED
            edge_i[b, 0, a, CHILD_VISITS] = 0
            total += p
        for a in range(num_actions):
            edge_f[b, 0, a, PRIOR] /= total
        node_f[b, 0, VALUE_SUM] = 0.0
        node_f[b, 0, REWARD] = 0.0
        node_f[b, 0, DISCOUNT] = 1.0
        node_f[b, 0, RAW_VALUE] = root_value[b]
        node_i[b, 0, VISITS] = 0
        node_i[b, 0, PARENT] = -1
        node_i[b, 0, ACTION] = -1
        node_i[b, 0, DEPTH] = 0
        node_i[b, 0, NUM_VISITED] = 0
    select_leaves(
        edge_f, edge_i, node_f, node_i, root_legal, root_score, considered, value_scale, maxvisit_init, max_depth, 0,
        sim_index, path, store, gather,
    )  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def finish(
    edge_f: np.ndarray,  # [B, N, A, 2] float64
    edge_i: np.ndarray,  # [B, N, A, 3] int32
    node_f: np.ndarray,  # [B, N, 5] float64
    node_i: np.ndarray,  # [B, N, 7] int32
    root_legal: np.ndarray,  # [B, A] bool
    root_logits_shifted: np.ndarray,  # [B, A] float64
    root_score: np.ndarray,  # [B, A] float64
    value_scale: float,
    maxvisit_init: float,
    sim_index: np.ndarray,  # [4, S, B] int64
    completed: np.ndarray,  # [B, A] float64, out
    visit_counts: np.ndarray,  # [B, A] int64, out
    action_weights: np.ndarray,  # [B, A] float64, out
    action: np.ndarray,  # [B] int64, out
    minmax: np.ndarray,  # [B, 2] float64, out
    max_depth: np.ndarray,  # [B] int64, out
) -> None:
    """
    Complete the trees and read the search's results out of them.

    Nodes a depth-limited search never created get their initial values (value sum, visits and reward 0, discount 1,
    parent and action -1, unexpanded children of prior 0). Per root: the completed Q-values ``q(a)`` and
    ``sigma(q(a))`` (:func:`node_statistics`), the visit counts, the action (among the most visited legal actions,
    the one of highest ``g + logits + sigma``, the lowest index on ties), the improved policy
    ``softmax(logits + sigma)`` over the legal actions (0 on illegal ones), the smallest and largest Q of a visited
    edge and the deepest node's depth.
    """
    batch_size, num_nodes, num_actions, _ = edge_f.shape
    for b in range(batch_size):
        q_min = np.inf
        q_max = -np.inf
        deepest = 0
        for node in range(1, num_nodes):
            if sim_index[2, node - 1, b] == node:
                q = edge_f[b, node_i[b, node, PARENT], node_i[b, node, ACTION], Q]
                q_min = min(q_min, q)
                q_max = max(q_max, q)
                deepest = max(deepest, node_i[b, node, DEPTH])
                continue
            node_f[b, node, VALUE_SUM] = 0.0
            node_f[b, node, REWARD] = 0.0
            node_f[b, node, DISCOUNT] = 1.0
            node_f[b, node, RAW_VALUE] = 0.0
            node_f[b, node, UNVISITED_PRIOR] = 0.0
            for field in range(NUM_NODE_I):
                node_i[b, node, field] = 0
            node_i[b, node, PARENT] = -1
            node_i[b, node, ACTION] = -1
            for a in range(num_actions):
                edge_f[b, node, a, PRIOR] = 0.0
                edge_f[b, node, a, Q] = 0.0
                edge_i[b, node, a, CHILD] = UNEXPANDED
                edge_i[b, node, a, CHILD_VISITS] = 0
                edge_i[b, node, a, VISITED] = 0
        minmax[b, 0] = q_min if q_min <= q_max else np.nan
        minmax[b, 1] = q_max if q_min <= q_max else np.nan
        max_depth[b] = deepest
        _, mixed_value, q_low, _, coef = node_statistics(b, 0, edge_f, edge_i, node_f, node_i, value_scale, maxvisit_init)
        most = -1
        for a in range(num_actions):
            n = edge_i[b, 0, a, CHILD_VISITS]
            visit_counts[b, a] = n
            if root_legal[b, a]:
                most = max(most, n)
        best = -1
        best_score = -np.inf
        weight_max = -np.inf
        for a in range(num_actions):
            q = edge_f[b, 0, a, Q] if edge_i[b, 0, a, CHILD_VISITS] > 0 else mixed_value
            completed[b, a] = q
            sigma = coef * (q - q_low)
            weight = root_logits_shifted[b, a] + sigma if root_legal[b, a] else -np.inf
            action_weights[b, a] = weight
            weight_max = max(weight_max, weight)
            if root_legal[b, a] and visit_counts[b, a] == most:
                score = root_score[b, a] + sigma
                if best < 0 or score > best_score:
                    best = a
                    best_score = score
        action[b] = best
        total = 0.0
        for a in range(num_actions):
            w = math.exp(action_weights[b, a] - weight_max) if root_legal[b, a] else 0.0
            action_weights[b, a] = w
            total += w
        for a in range(num_actions):
            action_weights[b, a] /= total
