"""Tests of the batched Gumbel MuZero search against a per-node-object transcription of the paper, and against mctx."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest
import torch

from sb3_frontier.algorithms.muzero import gumbel, mcts

torch.set_num_threads(1)

VALUE_SCALE, MAXVISIT_INIT, EPSILON = 0.1, 50.0, 1e-8
TINY = float(np.finfo(np.float64).tiny)
# Float tolerance: the search and the reference compute the same float64 quantities (Q values, mixed values, softmax
# weights of size O(1..10)) in a different order, each from at most a few hundred roundings of relative size
# eps = 2.2e-16; 1000 eps bounds that with room, while any error in a formula shows at 1e-3 or more.
TOL = 1000 * np.finfo(np.float64).eps


# ---------------------------------------------------------------------------------------------------------------------
# A deterministic model: a small float64 MLP, written once for numpy and once for jax (for mctx).
# ---------------------------------------------------------------------------------------------------------------------

DISCOUNTS = (0.0, 0.9, 1.0, -1.0)


class MLPModel:
    """
    ``next = tanh([embedding, one_hot(action)] W)``, heads ``next Wh`` = logits, value, reward (``sin`` of the head);
    discount: a constant, or with ``"mixed"`` one of :data:`DISCOUNTS` chosen by the signs of two features.

    :param num_actions: A
    :param discount: a constant discount or ``"mixed"``
    :param hidden: embedding size
    :param seed: weights seed
    :param quantized: logits rounded to {-1, 0, 1}: equal priors, and thus equal scores of unvisited actions, are then
        common (values and rewards stay generic: scores that are equal only in exact arithmetic would be decided by
        rounding)
    """

    def __init__(self, num_actions: int, discount: float | str, hidden: int = 6, seed: int = 0, quantized: bool = False):
        rng = np.random.default_rng(seed)
        self.num_actions = num_actions
        self.discount = discount
        self.quantized = quantized
        self.w = rng.standard_normal((hidden + num_actions, hidden))
        self.w_heads = rng.standard_normal((hidden, num_actions + 2))
        self.calls: list[int] = []

    def heads(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = embedding @ self.w_heads
        logits, value, reward = out[:, : self.num_actions], out[:, self.num_actions], np.sin(out[:, self.num_actions + 1])
        if self.quantized:
            logits = np.clip(logits, -1.0, 1.0).round()
        if self.discount == "mixed":
            index = (embedding[:, 0] > 0).astype(np.int64) + 2 * (embedding[:, 1] > 0)
            discount = np.asarray(DISCOUNTS)[index]
        else:
            discount = np.full(len(embedding), float(self.discount))
        return logits, value, reward, discount

    def root(self, batch_size: int, seed: int) -> mcts.RootFnOutput:
        embedding = np.random.default_rng(seed + 1000).standard_normal((batch_size, self.w.shape[1]))
        logits, value, _, _ = self.heads(embedding)
        return mcts.RootFnOutput(prior_logits=logits, value=value, embedding=embedding)

    def __call__(self, embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
        self.calls.append(len(action))
        assert isinstance(action, np.ndarray) and action.dtype == np.int64
        nxt = np.tanh(np.concatenate([embedding, np.eye(self.num_actions)[action]], axis=1) @ self.w)
        logits, value, reward, discount = self.heads(nxt)
        return mcts.RecurrentFnOutput(reward=reward, discount=discount, prior_logits=logits, value=value), nxt

    def jax_recurrent_fn(self) -> Any:
        """The same model as an mctx ``recurrent_fn(params, rng_key, action, embedding)`` (needs jax with x64)."""
        import jax
        import jax.numpy as jnp
        import mctx

        w, w_heads, num_actions = jnp.asarray(self.w), jnp.asarray(self.w_heads), self.num_actions
        assert not self.quantized

        def recurrent_fn(params: Any, rng_key: Any, action: Any, embedding: Any) -> tuple[Any, Any]:
            del params, rng_key
            nxt = jnp.tanh(jnp.concatenate([embedding, jax.nn.one_hot(action, num_actions, dtype=embedding.dtype)], 1) @ w)
            out = nxt @ w_heads
            if self.discount == "mixed":
                index = (nxt[:, 0] > 0).astype(jnp.int32) + 2 * (nxt[:, 1] > 0).astype(jnp.int32)
                discount = jnp.asarray(DISCOUNTS, dtype=nxt.dtype)[index]
            else:
                discount = jnp.full(len(action), float(self.discount), dtype=nxt.dtype)
            return mctx.RecurrentFnOutput(
                reward=jnp.sin(out[:, num_actions + 1]), discount=discount, prior_logits=out[:, :num_actions],
                value=out[:, num_actions],
            ), nxt  # fmt: skip

        return recurrent_fn


# ---------------------------------------------------------------------------------------------------------------------
# Reference: Gumbel MuZero (Danihelka et al. 2022) step by step, one root at a time, one object per node.
# ---------------------------------------------------------------------------------------------------------------------


def reference_schedule(num_considered: int, num_simulations: int) -> list[int]:
    """Sequential Halving's visit counts per simulation (mctx's ``get_sequence_of_considered_visits``)."""
    if num_considered <= 1:
        return list(range(num_simulations))
    phases = math.ceil(math.log2(num_considered))
    schedule: list[int] = []
    counts = [0] * num_considered  # visits of each considered action, best first
    remaining = num_considered
    while len(schedule) < num_simulations:
        for _ in range(max(1, int(num_simulations / (phases * remaining)))):
            for i in range(remaining):
                schedule.append(counts[i])
                counts[i] += 1
        remaining = max(2, remaining // 2)
    return schedule[:num_simulations]


def _softmax(logits: dict[int, float]) -> dict[int, float]:
    top = max(logits.values())
    exps = {a: math.exp(x - top) for a, x in logits.items()}
    total = sum(exps.values())
    return {a: e / total for a, e in exps.items()}


class Node:
    """A search node: the network's outputs on it, the edge into it, its children and statistics."""

    def __init__(self, logits: dict[int, float], value: float, reward: float, discount: float, hidden: np.ndarray):
        self.logits = logits  # over the node's actions (the legal ones at the root)
        self.prior = _softmax(logits)
        self.network_value = value
        self.reward = reward
        self.discount = discount
        self.hidden = hidden
        self.children: dict[int, Node] = {}
        self.visit_count = 0
        self.value_sum = 0.0

    def value(self) -> float:
        return self.value_sum / self.visit_count

    def visits(self, action: int) -> int:
        return self.children[action].visit_count if action in self.children else 0

    def q(self, action: int) -> float:
        child = self.children[action]
        return child.reward + child.discount * child.value()


def completed_q(node: Node) -> tuple[dict[int, float], dict[int, float]]:
    """Completed Q-values (Appendix D: unvisited actions get the mixed value) and sigma after min-max rescaling."""
    actions = list(node.logits)
    visits = {a: node.visits(a) for a in actions}
    total = sum(visits.values())
    visited = [a for a in actions if visits[a] > 0]
    if visited:
        weights = {a: max(TINY, node.prior[a]) for a in visited}
        expected_q = sum(weights[a] * node.q(a) for a in visited) / sum(weights.values())
        mixed = (node.network_value + total * expected_q) / (1 + total)
    else:
        mixed = node.network_value
    q = {a: node.q(a) if visits[a] > 0 else mixed for a in actions}
    low, high = min(q.values()), max(q.values())
    scale = (MAXVISIT_INIT + max(visits.values())) * VALUE_SCALE
    sigma = {a: scale * (q[a] - low) / max(high - low, EPSILON) for a in actions}
    return q, sigma


def _argmax(scores: dict[int, float]) -> int:
    """The action of highest score, the lowest on ties."""
    return max(sorted(scores), key=lambda a: (scores[a], -a))


def reference_search(
    model: MLPModel,
    root: mcts.RootFnOutput,
    b: int,
    num_simulations: int,
    legal: np.ndarray,
    noise: np.ndarray,
    max_considered: int,
    max_depth: int | None = None,
) -> dict[str, Any]:
    """Search root ``b`` alone; ``noise`` = its scaled Gumbel noise [A]. Returns the root's results and its tree."""
    num_actions = root.prior_logits.shape[1]
    legal_actions = [a for a in range(num_actions) if legal[a]]
    root_logits = {a: float(root.prior_logits[b, a]) for a in legal_actions}
    tree = Node(root_logits, float(root.value[b]), 0.0, 1.0, root.embedding[b : b + 1])
    schedule = reference_schedule(min(max_considered, len(legal_actions)), num_simulations)
    created: list[tuple[int, ...]] = []  # the action path of each new node, in order of creation
    for sim in range(num_simulations):
        node, search_path, actions = tree, [tree], []
        action = -1
        while True:
            _, sigma = completed_q(node)
            if node is tree:  # Sequential Halving with Gumbel
                candidates = [a for a in legal_actions if node.visits(a) == schedule[sim]]
                action = _argmax({a: noise[a] + root_logits[a] + sigma[a] for a in candidates})
            else:  # the deterministic selection of Section 5
                improved = _softmax({a: node.logits[a] + sigma[a] for a in node.logits})
                total = sum(node.visits(a) for a in node.logits)
                action = _argmax({a: improved[a] - node.visits(a) / (1 + total) for a in node.logits})
            actions.append(action)
            depth = len(search_path)
            if action in node.children and (max_depth is None or depth < max_depth):
                node = node.children[action]
                search_path.append(node)
                continue
            break
        if action in node.children:  # stopped by the depth limit: the node's stored network value
            leaf = node.children[action]
        else:
            out, hidden = model(node.hidden, np.array([action]))
            logits = {a: float(out.prior_logits[0, a]) for a in range(num_actions)}
            leaf = Node(logits, float(out.value[0]), float(out.reward[0]), float(out.discount[0]), hidden)
            node.children[action] = leaf
            created.append(tuple(actions))
        search_path.append(leaf)
        value = leaf.network_value
        for visited_node in reversed(search_path):
            visited_node.value_sum += value
            visited_node.visit_count += 1
            value = visited_node.reward + visited_node.discount * value
    q, sigma = completed_q(tree)
    most = max(tree.visits(a) for a in legal_actions)
    action = _argmax({a: noise[a] + root_logits[a] + sigma[a] for a in legal_actions if tree.visits(a) == most})
    improved = _softmax({a: root_logits[a] + sigma[a] for a in legal_actions})
    return {
        "action": action,
        "visit_counts": np.array([tree.visits(a) for a in range(num_actions)]),
        "action_weights": np.array([improved.get(a, 0.0) for a in range(num_actions)]),
        "root_q": np.array([q.get(a, np.nan) for a in range(num_actions)]),
        "search_value": tree.value(),
        "tree": tree,
        "created": created,
    }


def _random_invalid(rng: np.random.Generator, batch_size: int, num_actions: int) -> np.ndarray:
    invalid = rng.random((batch_size, num_actions)) < 0.4
    invalid[np.arange(batch_size), rng.integers(num_actions, size=batch_size)] = False
    return invalid


def _compare_subtree(ref: Node, out: mcts.SearchOutput, b: int, node: int) -> None:
    """The reference node and node ``node`` of tree ``b`` have the same children, visits, values and Q values."""
    tree = out.tree
    assert tree.visits[b, node] == ref.visit_count
    np.testing.assert_allclose(tree.value_sum[b, node], ref.value_sum, rtol=TOL, atol=TOL)
    children = {int(a): int(c) for a, c in enumerate(tree.children[b, node]) if c >= 0}
    assert sorted(children) == sorted(ref.children)
    for action, child in children.items():
        assert tree.child_visits[b, node, action] == ref.visits(action)
        np.testing.assert_allclose(tree.child_q[b, node, action], ref.q(action), rtol=TOL, atol=TOL)
        _compare_subtree(ref.children[action], out, b, child)


def _check_against_reference(
    model: MLPModel,
    root: mcts.RootFnOutput,
    out: mcts.SearchOutput,
    sims: int,
    legal: np.ndarray,
    noise: np.ndarray,
    max_considered: int,
    max_depth: int | None = None,
) -> None:
    for b in range(len(legal)):
        ref = reference_search(model, root, b, sims, legal[b], noise[b], max_considered, max_depth)
        np.testing.assert_array_equal(out.visit_counts[b], ref["visit_counts"])
        assert out.action[b] == ref["action"]
        np.testing.assert_allclose(out.action_weights[b], ref["action_weights"], rtol=TOL, atol=TOL)
        np.testing.assert_allclose(out.root_q[b][legal[b]], ref["root_q"][legal[b]], rtol=TOL, atol=TOL)
        np.testing.assert_allclose(out.search_value[b], ref["search_value"], rtol=TOL, atol=TOL)
        _compare_subtree(ref["tree"], out, b, 0)
        # Nodes in order of creation (node k + 1 by simulation k, unless the depth limit stopped it).
        tree = out.tree
        paths = []
        for node in range(1, sims + 1):
            if tree.parents[b, node] < 0:
                continue
            path, k = [], node
            while k > 0:
                path.append(int(tree.action_from_parent[b, k]))
                k = tree.parents[b, k]
            paths.append(tuple(reversed(path)))
        assert paths == ref["created"]


# ---------------------------------------------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("discount", [0.95, -1.0, "mixed"])
@pytest.mark.parametrize("num_actions", [2, 3, 7])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_matches_reference(batch_size: int, num_actions: int, discount: float | str) -> None:
    rng = np.random.default_rng(batch_size * 100 + num_actions)
    settings = [(1, 16), (2, 2), (5, 4), (10, 1), (13, 3), (16, 16), (33, 4), (50, 2)]
    for seed, (sims, max_considered) in enumerate(settings):
        model = MLPModel(num_actions, discount, seed=seed)
        root = model.root(batch_size, seed)
        invalid = _random_invalid(rng, batch_size, num_actions) if seed % 2 else None
        legal = np.ones((batch_size, num_actions), bool) if invalid is None else ~invalid
        scale = [1.0, 0.5, 3.0][seed % 3]
        noise = scale * np.random.default_rng(seed).gumbel(size=(batch_size, num_actions))
        out = gumbel.gumbel_muzero_policy(
            root, model, sims, invalid_actions=invalid, max_num_considered_actions=max_considered, gumbel_scale=scale,
            rng=np.random.default_rng(seed),
        )  # fmt: skip
        _check_against_reference(model, root, out, sims, legal, noise, max_considered)
        np.testing.assert_array_equal(out.visit_counts.sum(axis=1), sims)
        np.testing.assert_array_equal(out.tree.visits[:, 0], sims)


@pytest.mark.parametrize("max_depth", [1, 2, 3])
@pytest.mark.parametrize("discount", [1.0, "mixed"])
def test_max_depth_matches_reference(max_depth: int, discount: float | str) -> None:
    model = MLPModel(3, discount, seed=max_depth)
    root = model.root(4, seed=7)
    for sims, max_considered in [(9, 3), (24, 2)]:
        out = gumbel.gumbel_muzero_policy(
            root, model, sims, max_num_considered_actions=max_considered, max_depth=max_depth, rng=np.random.default_rng(3)
        )
        noise = np.random.default_rng(3).gumbel(size=(4, 3))
        _check_against_reference(model, root, out, sims, np.ones((4, 3), bool), noise, max_considered, max_depth)
        assert out.max_depth.max() == max_depth


def test_matches_reference_with_ties() -> None:
    """Quantised logits, no noise: many equal scores (unvisited actions of equal prior), to the lowest action index."""
    for seed in range(4):
        model = MLPModel(4, [1.0, -1.0][seed % 2], seed=seed, quantized=True)
        root = model.root(6, seed)
        out = gumbel.gumbel_muzero_policy(root, model, 20, max_num_considered_actions=4, gumbel_scale=0.0)
        _check_against_reference(model, root, out, 20, np.ones((6, 4), bool), np.zeros((6, 4)), 4)


def test_schedule() -> None:
    """Sequential Halving's visit counts: hand-computed cases and the plain transcription above."""
    # m = 4, S = 10: ceil(log2 4) = 2 phases; 4 actions get max(1, 10 // 8) = 1 visit, then 2 actions 10 // 4 = 2.
    assert gumbel.considered_visits(4, 10) == (0, 0, 0, 0, 1, 1, 2, 2, 3, 3)
    assert gumbel.considered_visits(2, 5) == (0, 0, 1, 1, 2)
    assert gumbel.considered_visits(1, 4) == (0, 1, 2, 3)
    assert gumbel.considered_visits(16, 3) == (0, 0, 0)
    for m in range(1, 20):
        for sims in [*range(1, 40), 50, 100, 200]:
            assert gumbel.considered_visits(m, sims) == tuple(reference_schedule(m, sims)), (m, sims)


def test_schedule_matches_mctx() -> None:
    seq_halving = pytest.importorskip("mctx._src.seq_halving")
    for m in range(0, 33):
        for sims in [*range(1, 70), 100, 200, 800]:
            assert gumbel.considered_visits(m, sims) == seq_halving.get_sequence_of_considered_visits(m, sims)


# ---------------------------------------------------------------------------------------------------------------------
# Against mctx
# ---------------------------------------------------------------------------------------------------------------------


@functools.cache
def _mctx_policy(model_key: tuple[int, str, int], sims: int, max_considered: int, max_depth: int | None) -> Any:
    import jax
    import mctx

    num_actions, discount, seed = model_key
    recurrent_fn = MLPModel(num_actions, discount, seed=seed).jax_recurrent_fn()
    return jax.jit(
        functools.partial(
            mctx.gumbel_muzero_policy, params=None, recurrent_fn=recurrent_fn, num_simulations=sims,
            max_num_considered_actions=max_considered, max_depth=max_depth,
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    "discount, sims, max_considered, invalid, max_depth",
    [
        (0.95, 7, 3, False, None),
        (0.95, 16, 16, False, None),
        (-1.0, 50, 4, False, None),
        ("mixed", 32, 8, False, None),
        (-1.0, 11, 2, True, None),
        (0.95, 20, 5, False, 2),
    ],
)
def test_matches_mctx(discount: float | str, sims: int, max_considered: int, invalid: bool, max_depth: int | None) -> None:
    """
    Same model, same Gumbel noise (mctx's, read back from its tree): same visit counts everywhere in the tree, same
    action, same improved policy and root Q values; mctx's root value also averages in the root's network value.
    With invalid actions, ``max_considered`` is below the number of legal actions, so that an unvisited legal action
    stays in the rescaling of the completed Q-values (mctx also lets the illegal ones in: see gumbel.py).
    """
    jax = pytest.importorskip("jax")
    mctx = pytest.importorskip("mctx")
    batch_size, num_actions = 4, 5
    model = MLPModel(num_actions, discount, seed=sims)
    root = model.root(batch_size, seed=sims)
    rng = np.random.default_rng(sims)
    invalid_actions = None
    if invalid:
        invalid_actions = rng.random((batch_size, num_actions)) < 0.3
        invalid_actions[:, :3] = False
    with jax.enable_x64(True):
        policy = _mctx_policy((num_actions, discount, sims), sims, max_considered, max_depth)
        theirs = policy(
            rng_key=jax.random.PRNGKey(sims),
            root=mctx.RootFnOutput(prior_logits=root.prior_logits, value=root.value, embedding=root.embedding),
            invalid_actions=invalid_actions,
        )
        tree = theirs.search_tree
        noise = np.asarray(tree.extra_data.root_gumbel)
        completed = jax.vmap(mctx.qtransform_completed_by_mix_value, in_axes=[0, None])(tree, tree.ROOT_INDEX)
        their_q = np.asarray(tree.qvalues(np.zeros(batch_size, np.int32)))
        their_value = np.asarray(tree.node_values[:, 0])
        their_visits = np.asarray(tree.children_visits)
        their_children = np.asarray(tree.children_index)
        assert np.asarray(completed).dtype == np.float64
    ours = gumbel.gumbel_muzero_policy(
        root, model, sims, invalid_actions=invalid_actions, max_num_considered_actions=max_considered, gumbel=noise,
        max_depth=max_depth,
    )  # fmt: skip
    # Node k is created by simulation k - 1 in both: the whole trees coincide.
    np.testing.assert_array_equal(ours.tree.children, their_children)
    np.testing.assert_array_equal(ours.tree.child_visits, their_visits)
    np.testing.assert_array_equal(ours.visit_counts, their_visits[:, 0])
    np.testing.assert_array_equal(ours.action, np.asarray(theirs.action))
    np.testing.assert_allclose(ours.action_weights, np.asarray(theirs.action_weights), rtol=TOL, atol=TOL)
    visited = ours.visit_counts > 0
    np.testing.assert_allclose(ours.root_q[visited], their_q[visited], rtol=TOL, atol=TOL)
    # mctx's root value counts the root's network value as one more visit.
    np.testing.assert_allclose((root.value + sims * ours.search_value) / (sims + 1), their_value, rtol=TOL, atol=TOL)


def test_illegal_root_actions_do_not_change_the_root() -> None:
    """
    Appending actions that are illegal at the root changes nothing at the root, even when every legal action is
    visited (mctx's rescaling would take the illegal actions' mixed value into its minimum and maximum). One-step
    searches (max_depth 1), so that the interior nodes, which see every action, play no part.
    """
    num_legal, extra = 3, 2
    for seed in range(10):
        model = MLPModel(num_legal + extra, 0.9, seed=seed)
        root = model.root(4, seed)
        noise = np.random.default_rng(seed).gumbel(size=(4, num_legal + extra))
        invalid = np.zeros((4, num_legal + extra), bool)
        invalid[:, num_legal:] = True
        full = gumbel.gumbel_muzero_policy(root, model, 8, invalid_actions=invalid, gumbel=noise, max_depth=1)

        def legal_only(embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
            out, nxt = model(embedding, action)  # noqa: B023
            return out._replace(prior_logits=out.prior_logits[:, :num_legal]), nxt

        small_root = root._replace(prior_logits=root.prior_logits[:, :num_legal])
        small = gumbel.gumbel_muzero_policy(small_root, legal_only, 8, gumbel=noise[:, :num_legal], max_depth=1)
        assert np.all(full.visit_counts[:, :num_legal] > 0)
        np.testing.assert_array_equal(full.visit_counts[:, :num_legal], small.visit_counts)
        np.testing.assert_array_equal(full.action, small.action)
        np.testing.assert_allclose(full.action_weights[:, :num_legal], small.action_weights, rtol=TOL, atol=TOL)
        np.testing.assert_array_equal(full.action_weights[:, num_legal:], 0.0)
        np.testing.assert_allclose(full.root_q[:, :num_legal], small.root_q, rtol=TOL, atol=TOL)


# ---------------------------------------------------------------------------------------------------------------------
# Known cases
# ---------------------------------------------------------------------------------------------------------------------


def _bandit(arm_values: np.ndarray) -> Any:
    """One-step model: pulling arm a pays ``arm_values[a]`` and ends the episode (discount 0, values 0)."""
    num_arms = len(arm_values)

    def recurrent_fn(embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
        batch_size = len(action)
        out = mcts.RecurrentFnOutput(
            reward=arm_values[action], discount=np.zeros(batch_size), prior_logits=np.zeros((batch_size, num_arms)),
            value=np.zeros(batch_size),
        )  # fmt: skip
        return out, embedding

    return recurrent_fn


@pytest.mark.parametrize("num_arms, sims", [(2, 2), (2, 3), (2, 4), (3, 3), (3, 4), (4, 4)])
def test_bandit_picks_the_best_arm(num_arms: int, sims: int) -> None:
    """
    Uniform prior, every arm considered, budget >= arms: every arm is tried, and the best arm wins every comparison
    it enters when the Gumbel noise of another arm exceeds its own by less than the gap of sigma between the best arm
    (rescaled Q 1) and the second best (rescaled Q ``second``): ``(maxvisit_init + 1) * value_scale * (1 - second)``
    at least. The search then picks it, whatever the noise otherwise is. Without noise it always does. The improved
    policy puts its largest weight on the best arm for any noise.
    """
    arm_values = np.array([0.0, 1.0, -0.2, 0.1])[:num_arms]
    best = int(arm_values.argmax())
    ranked = np.sort(arm_values)
    second = (ranked[-2] - ranked[0]) / (ranked[-1] - ranked[0])
    gap = (MAXVISIT_INIT + 1) * VALUE_SCALE * (1 - second)
    batch_size, seeds = 64, 8
    root = mcts.RootFnOutput(np.zeros((batch_size, num_arms)), np.zeros(batch_size), np.zeros((batch_size, 1)))
    covered = 0
    for seed in range(seeds):
        noise = np.random.default_rng(seed).gumbel(size=(batch_size, num_arms))
        out = gumbel.gumbel_muzero_policy(root, _bandit(arm_values), sims, max_num_considered_actions=num_arms, gumbel=noise)
        assert np.all(out.visit_counts > 0)
        np.testing.assert_array_equal(out.root_q, np.broadcast_to(arm_values, (batch_size, num_arms)))
        assert np.all(out.action_weights.argmax(axis=1) == best)
        dominated = np.delete(noise - noise[:, best : best + 1], best, axis=1).max(axis=1) < gap
        assert np.all(out.action[dominated] == best)
        covered += dominated.sum()
    assert covered >= 0.9 * batch_size * seeds  # the condition is not vacuous
    out = gumbel.gumbel_muzero_policy(root, _bandit(arm_values), sims, max_num_considered_actions=num_arms, gumbel_scale=0.0)
    assert np.all(out.action == best)


def test_bandit_action_is_the_gumbel_argmax() -> None:
    """
    Arms = simulations = considered actions: each arm is pulled once, and the action is argmax of g + logits + sigma(q)
    (the paper's A_{n+1}) with sigma(q) = (50 + 1) * 0.1 * (q - min q) / (max q - min q): computed by hand here.
    """
    arm_values = np.array([0.3, -0.2, 0.9, 0.1, 0.0])
    logits = np.random.default_rng(0).standard_normal((200, 5))
    root = mcts.RootFnOutput(logits, np.zeros(200), np.zeros((200, 1)))
    noise = np.random.default_rng(1).gumbel(size=(200, 5))
    out = gumbel.gumbel_muzero_policy(root, _bandit(arm_values), 5, max_num_considered_actions=5, gumbel=noise)
    np.testing.assert_array_equal(out.visit_counts, 1)
    sigma = 51 * 0.1 * (arm_values - arm_values.min()) / (arm_values.max() - arm_values.min())
    np.testing.assert_array_equal(out.action, (noise + logits + sigma).argmax(axis=1))
    improved = np.exp(logits + sigma) / np.exp(logits + sigma).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out.action_weights, improved, rtol=TOL, atol=TOL)
    # Gumbel-Top-k: with 2 simulations only the two arms of highest g + logits are pulled, in that order.
    out = gumbel.gumbel_muzero_policy(root, _bandit(arm_values), 2, max_num_considered_actions=5, gumbel=noise)
    top_two = np.argsort(-(noise + logits), axis=1)[:, :2]
    np.testing.assert_array_equal(np.sort(np.flatnonzero(out.visit_counts[0])), np.sort(top_two[0]))
    np.testing.assert_array_equal(out.visit_counts.sum(axis=1), 2)
    np.testing.assert_array_equal(np.take_along_axis(out.visit_counts, top_two, axis=1), 1)
    np.testing.assert_array_equal(out.tree.action_from_parent[:, 1], top_two[:, 0])


# ---------------------------------------------------------------------------------------------------------------------
# Conventions, batching and plumbing
# ---------------------------------------------------------------------------------------------------------------------


def test_noise_comes_from_rng_in_the_documented_order() -> None:
    model = MLPModel(4, 0.9)
    root = model.root(3, 0)
    drawn = gumbel.gumbel_muzero_policy(root, model, 10, gumbel_scale=2.0, rng=np.random.default_rng(5))
    given = gumbel.gumbel_muzero_policy(root, model, 10, gumbel=2.0 * np.random.default_rng(5).gumbel(size=(3, 4)))
    np.testing.assert_array_equal(drawn.visit_counts, given.visit_counts)
    np.testing.assert_array_equal(drawn.action, given.action)
    np.testing.assert_array_equal(drawn.action_weights, given.action_weights)


def test_batched_equals_one_by_one() -> None:
    model = MLPModel(5, "mixed")
    root = model.root(6, seed=4)
    invalid = _random_invalid(np.random.default_rng(0), 6, 5)
    noise = np.random.default_rng(1).gumbel(size=(6, 5))
    batched = gumbel.gumbel_muzero_policy(root, model, 21, invalid_actions=invalid, gumbel=noise, max_num_considered_actions=3)
    for b in range(6):
        single = gumbel.gumbel_muzero_policy(
            mcts.RootFnOutput(*(x[b : b + 1] for x in root)), model, 21, invalid_actions=invalid[b : b + 1],
            gumbel=noise[b : b + 1], max_num_considered_actions=3,
        )  # fmt: skip
        np.testing.assert_array_equal(single.visit_counts[0], batched.visit_counts[b])
        assert single.action[0] == batched.action[b]
        np.testing.assert_array_equal(single.tree.child_visits[0], batched.tree.child_visits[b])
        # The model's matrix products round differently on 1 and 6 rows.
        np.testing.assert_allclose(single.action_weights[0], batched.action_weights[b], rtol=TOL, atol=TOL)


def test_outputs_and_tree_structure() -> None:
    model = MLPModel(4, 0.9)
    root = model.root(3, seed=2)
    invalid = np.array([[False, True, False, False], [False] * 4, [True, True, False, True]])
    out = gumbel.gumbel_muzero_policy(root, model, 15, invalid_actions=invalid, rng=np.random.default_rng(0))
    legal = ~invalid
    assert out.action.dtype == np.int64 and np.all(legal[np.arange(3), out.action])
    np.testing.assert_array_equal(out.visit_counts[invalid], 0)
    np.testing.assert_array_equal(out.action_weights[invalid], 0.0)
    np.testing.assert_allclose(out.action_weights.sum(axis=1), 1.0, rtol=TOL)
    np.testing.assert_allclose(out.visit_probs, out.visit_counts / 15)
    masked = np.where(legal, root.prior_logits, -np.inf)
    np.testing.assert_allclose(out.root_prior, np.exp(masked) / np.exp(masked).sum(axis=1, keepdims=True), rtol=TOL)
    np.testing.assert_array_equal(out.visit_counts[2], [0, 0, 15, 0])  # one legal action: every simulation
    assert out.action[2] == 2 and out.action_weights[2, 2] == 1.0
    tree = out.tree
    for b in range(3):
        for node in range(1, 16):
            parent, action = tree.parents[b, node], tree.action_from_parent[b, node]
            assert tree.children[b, parent, action] == node
            assert tree.depth[b, node] == tree.depth[b, parent] + 1
            _, expected = model(tree.embeddings[b, parent][None], np.array([action], dtype=np.int64))
            np.testing.assert_allclose(tree.embeddings[b, node], expected[0], rtol=TOL, atol=TOL)  # 1 row vs 3 rows
            kids = tree.children[b, node][tree.children[b, node] >= 0]
            assert tree.visits[b, node] == 1 + tree.visits[b, kids].sum()
        visited = tree.child_visits[b] > 0
        np.testing.assert_array_equal(tree.minmax[b], [tree.child_q[b][visited].min(), tree.child_q[b][visited].max()])
    assert np.all(out.max_depth == tree.depth.max(axis=1))


def test_torch_model_and_one_batched_call_per_simulation() -> None:
    """Torch embeddings and actions (the model in torch float64 around the numpy one) give the numpy search's tree."""
    model = MLPModel(3, -1.0)
    root = model.root(4, seed=1)
    calls: list[int] = []

    def torch_fn(embedding: torch.Tensor, action: torch.Tensor) -> tuple[mcts.RecurrentFnOutput, torch.Tensor]:
        assert isinstance(action, torch.Tensor) and action.dtype == torch.int64 and not torch.is_grad_enabled()
        calls.append(len(action))
        out, nxt = model(embedding.numpy(), action.numpy())
        return mcts.RecurrentFnOutput(*(torch.from_numpy(np.asarray(x)) for x in out)), torch.from_numpy(nxt)

    torch_root = mcts.RootFnOutput(*(torch.from_numpy(np.asarray(x)) for x in root))
    noise = np.random.default_rng(0).gumbel(size=(4, 3))
    via_torch = gumbel.gumbel_muzero_policy(torch_root, torch_fn, 17, gumbel=noise)
    model.calls.clear()
    via_numpy = gumbel.gumbel_muzero_policy(root, model, 17, gumbel=noise)
    assert calls == [4] * 17 and model.calls == [4] * 17
    np.testing.assert_array_equal(via_torch.tree.child_visits, via_numpy.tree.child_visits)
    np.testing.assert_array_equal(via_torch.action, via_numpy.action)
    np.testing.assert_array_equal(via_torch.action_weights, via_numpy.action_weights)


def test_reexported_from_mcts_and_docstring_example_runs() -> None:
    assert mcts.gumbel_muzero_policy is gumbel.gumbel_muzero_policy
    doc = gumbel.__doc__ or ""
    example = doc.split("Example (a tiny MLP model used as ``recurrent_fn``)::")[1]
    code = "\n".join(line[4:] for line in example.splitlines() if line.startswith("    ") or not line.strip())
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    result = namespace["result"]
    assert result.action.shape == (4,) and result.action.dtype == np.int64
    np.testing.assert_array_equal(result.visit_counts.sum(axis=1), 8)
    most = result.visit_counts == result.visit_counts.max(axis=1, keepdims=True)
    assert np.all(most[np.arange(4), result.action])


def test_timings() -> None:
    model = MLPModel(3, 0.9)
    timings = mcts.SearchTimings()
    gumbel.gumbel_muzero_policy(model.root(2, 0), model, 5, timings=timings)
    gumbel.gumbel_muzero_policy(model.root(2, 0), model, 5, timings=timings)
    assert timings.searches == 2 and timings.simulations == 10
    assert 0.0 < timings.network_s < timings.total_s
    assert 0.0 < timings.kernel_s < timings.total_s


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise() -> None:
    model = MLPModel(3, 1.0)
    root = model.root(2, 0)
    search = functools.partial(gumbel.gumbel_muzero_policy, root, model)
    for sims in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match="num_simulations"):
            search(sims)  # type: ignore[arg-type]
    for considered in [0, -2, 2.5]:
        with pytest.raises(ValueError, match="max_num_considered_actions"):
            search(3, max_num_considered_actions=considered)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_depth"):
        search(3, max_depth=0)
    for name in ["value_scale", "maxvisit_init", "gumbel_scale"]:
        for bad in [-0.1, np.inf, np.nan]:
            with pytest.raises(ValueError, match=name):
                search(3, **{name: bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prior_logits"):
        gumbel.gumbel_muzero_policy(root._replace(prior_logits=np.zeros(3)), model, 3)
    with pytest.raises(ValueError, match=r"root\.value"):
        gumbel.gumbel_muzero_policy(root._replace(value=np.zeros(3)), model, 3)
    with pytest.raises(ValueError, match="embedding"):
        gumbel.gumbel_muzero_policy(root._replace(embedding=np.zeros((3, 1))), model, 3)
    with pytest.raises(ValueError, match="invalid_actions"):
        search(3, invalid_actions=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"roots \[1\] have no legal action"):
        search(3, invalid_actions=np.array([[False, True, True], [True, True, True]]))
    with pytest.raises(ValueError, match=r"gumbel must have shape \(2, 3\)"):
        search(3, gumbel=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="gumbel holds non-finite"):
        search(3, gumbel=np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]]))
    nan_logits = root.prior_logits.copy()
    nan_logits[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        gumbel.gumbel_muzero_policy(root._replace(prior_logits=nan_logits), model, 3)
    # -inf logits and any noise on illegal actions are allowed
    masked = root.prior_logits.copy()
    masked[0, 1] = -np.inf
    invalid = np.array([[False, True, False], [False, False, False]])
    noise = np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]])
    out = gumbel.gumbel_muzero_policy(root._replace(prior_logits=masked), model, 3, invalid_actions=invalid, gumbel=noise)
    assert out.visit_counts[0, 1] == 0


@pytest.mark.parametrize("name", ["prior_logits", "value", "reward", "discount"])
def test_non_finite_network_outputs_raise(name: str) -> None:
    model = MLPModel(3, 1.0)

    def poisoned(embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
        out, nxt = model(embedding, action)
        x = np.array(getattr(out, name), dtype=np.float64)
        x[1] = np.nan
        return out._replace(**{name: x}), nxt

    with pytest.raises(ValueError, match=f"non-finite {name}"):
        gumbel.gumbel_muzero_policy(model.root(2, 0), poisoned, 3)
    with pytest.raises(ValueError, match=f"{name} of shape"):
        gumbel.gumbel_muzero_policy(
            model.root(2, 0), lambda e, a: (model(e, a)[0]._replace(**{name: np.zeros((2, 7))}), model(e, a)[1]), 3
        )


class _NumpyWithEmpty:
    """numpy, with ``empty`` replaced: set as the ``np`` of the search modules only (numba compiles kernels with the
    real numpy, so numpy itself is left alone)."""

    def __init__(self, fill: Any) -> None:
        self.fill = fill

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def empty(self, shape: Any, dtype: Any = float, **kwargs: Any) -> np.ndarray:
        out = np.empty(shape, dtype=dtype, **kwargs)
        kind = np.dtype(dtype).kind
        out.fill(0 if self.fill is None else np.nan if kind == "f" else True if kind == "b" else self.fill)
        return out


@pytest.mark.parametrize("search", ["gumbel", "muzero"])
@pytest.mark.parametrize("max_depth", [None, 1, 2])
def test_trees_are_written_whole_from_uninitialised_storage(
    monkeypatch: pytest.MonkeyPatch, search: str, max_depth: int | None
) -> None:
    """The searches allocate their trees with ``np.empty`` and the kernels write every entry (the roots at set-up,
    each node when created, the nodes a depth-limited search never created at the end): poisoned storage gives the
    same outputs and trees as zeroed storage, and the nodes never created hold their initial values."""
    model = MLPModel(4, "mixed", seed=2)
    root = model.root(5, seed=3)
    legal = ~_random_invalid(np.random.default_rng(1), 5, 4)

    def run() -> mcts.SearchOutput:
        kwargs: dict[str, Any] = dict(invalid_actions=~legal, rng=np.random.default_rng(0), max_depth=max_depth)
        if search == "gumbel":
            return gumbel.gumbel_muzero_policy(root, model, 12, max_num_considered_actions=4, **kwargs)
        return mcts.muzero_policy(root, model, 12, **kwargs)

    outputs = []
    for fill in (None, -7):  # zeroed storage, then storage filled with NaN, -7 and True (values no search writes)
        with monkeypatch.context() as patch:
            patch.setattr(mcts, "np", _NumpyWithEmpty(fill))
            patch.setattr(gumbel, "np", _NumpyWithEmpty(fill))
            outputs.append(run())
    clean, poisoned = outputs
    for name in (
        "action",
        "action_weights",
        "visit_counts",
        "visit_probs",
        "search_value",
        "root_q",
        "root_prior",
        "max_depth",
    ):
        np.testing.assert_array_equal(getattr(poisoned, name), getattr(clean, name), err_msg=name)
    for name in mcts.SearchTree._fields:
        if name != "embeddings":
            np.testing.assert_array_equal(
                np.asarray(getattr(poisoned.tree, name)), np.asarray(getattr(clean.tree, name)), err_msg=name
            )
    tree = poisoned.tree
    created = tree.visits > 0
    created[:, 0] = True
    if max_depth is not None:
        assert not created.all()  # some simulations stopped at an existing node
    never = ~created
    assert np.all(tree.parents[never] == -1) and np.all(tree.action_from_parent[never] == -1)
    assert np.all(tree.children[never] == -1) and np.all(tree.prior[never] == 0) and np.all(tree.child_visits[never] == 0)
    assert np.all(tree.discount[never] == 1) and np.all(tree.value_sum[never] == 0) and np.all(tree.raw_value[never] == 0)


def test_no_draw_without_noise() -> None:
    """At ``gumbel_scale=0`` (evaluation) the search leaves the generator untouched; at scale 1 it draws once."""
    model = MLPModel(4, 0.9)
    root = model.root(3, 0)
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    noiseless = gumbel.gumbel_muzero_policy(root, model, 10, gumbel_scale=0.0, rng=rng)
    assert rng.bit_generator.state == state
    zero = gumbel.gumbel_muzero_policy(root, model, 10, gumbel=np.zeros((3, 4)))
    np.testing.assert_array_equal(noiseless.visit_counts, zero.visit_counts)
    np.testing.assert_array_equal(noiseless.action, zero.action)
    gumbel.gumbel_muzero_policy(root, model, 10, gumbel_scale=1.0, rng=rng)
    assert rng.bit_generator.state != state
