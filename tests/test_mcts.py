"""Tests of the batched MuZero search against a per-node-object transcription of the paper's pseudocode."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from sb3_frontier.algorithms.muzero import mcts

torch.set_num_threads(1)

C1, C2 = 1.25, 19652.0
EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def _rounding_tolerance(eps: float, scale: float, operations: int) -> float:
    """Bound on the rounding error of ``operations`` floating-point operations of relative precision ``eps`` on numbers
    of magnitude at most ``scale``: each rounding is at most ``eps * scale``."""
    return operations * eps * scale


# ---------------------------------------------------------------------------------------------------------------------
# Deterministic random models: every output is a hash of the action path (the embedding holds the path's hash).
# ---------------------------------------------------------------------------------------------------------------------


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform(h: np.ndarray, salt: int) -> np.ndarray:
    """A number in [0, 1) determined by the hash ``h`` and ``salt``."""
    return (_splitmix(h + np.uint64(salt)) >> np.uint64(11)).astype(np.float64) * 2.0**-53


class HashModel:
    """
    A deterministic model whose rewards, values, logits and discounts are pseudo-random functions of the action path.

    :param num_actions: A
    :param discount: a constant discount, or ``"mixed"`` for per-edge discounts drawn from {0, 0.9, 1, -1}
    :param quantized: draw logits, values and rewards from three values each, so that priors and Q values tie often
    """

    def __init__(self, num_actions: int, discount: float | str, quantized: bool = False) -> None:
        self.num_actions = num_actions
        self.discount = discount
        self.quantized = quantized
        self.calls: list[int] = []

    def _draw(self, h: np.ndarray, salt: int, scale: float) -> np.ndarray:
        u = _uniform(h, salt)
        if self.quantized:
            return scale * (np.floor(3.0 * u) - 1.0) / 2.0
        return scale * (u - 0.5)

    def outputs(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Logits [B, A], value, reward, discount [B] of the states with hashes ``h`` [B]."""
        logits = np.stack([self._draw(h, 10 + k, 3.0) for k in range(self.num_actions)], axis=1)
        value = self._draw(h, 1, 2.0)
        reward = self._draw(h, 2, 2.0)
        if self.discount == "mixed":
            discount = np.array([0.0, 0.9, 1.0, -1.0])[(_splitmix(h + np.uint64(3)) % np.uint64(4)).astype(np.int64)]
        else:
            discount = np.full(len(h), float(self.discount))
        return logits, value, reward, discount

    def root(self, batch_size: int, seed: int) -> mcts.RootFnOutput:
        """Roots with hashes derived from ``seed``."""
        h = _splitmix(np.arange(batch_size, dtype=np.uint64) + np.uint64(1000 * seed))
        logits, value, _, _ = self.outputs(h)
        return mcts.RootFnOutput(prior_logits=logits, value=value, embedding=h[:, None])

    def __call__(self, embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
        self.calls.append(len(action))
        assert isinstance(action, np.ndarray) and action.dtype == np.int64
        h = _splitmix(embedding[:, 0] * np.uint64(1_000_003) + action.astype(np.uint64) + np.uint64(1))
        logits, value, reward, discount = self.outputs(h)
        return mcts.RecurrentFnOutput(reward=reward, discount=discount, prior_logits=logits, value=value), h[:, None]


class TorchMLP:
    """A tiny float64 MLP model on torch tensors: (embedding, one-hot action) -> next embedding and heads."""

    def __init__(self, num_actions: int, hidden: int = 6, seed: int = 0, device: str = "cpu") -> None:
        gen = torch.Generator().manual_seed(seed)
        self.num_actions = num_actions
        self.device = device
        w_dyn = torch.randn(hidden + num_actions, hidden, generator=gen, dtype=torch.float64)
        w_head = torch.randn(hidden, num_actions + 2, generator=gen, dtype=torch.float64)
        self.w_dyn = w_dyn.to(device).requires_grad_()
        self.w_head = w_head.to(device).requires_grad_()
        self.grad_enabled: list[bool] = []

    def heads(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding @ self.w_head

    def root(self, batch_size: int, seed: int) -> mcts.RootFnOutput:
        gen = torch.Generator().manual_seed(seed + 100)
        embedding = torch.randn(batch_size, self.w_dyn.shape[1], generator=gen, dtype=torch.float64).to(self.device)
        out = self.heads(embedding)
        return mcts.RootFnOutput(out[:, : self.num_actions], out[:, self.num_actions], embedding)

    def __call__(self, embedding: torch.Tensor, action: torch.Tensor) -> tuple[mcts.RecurrentFnOutput, torch.Tensor]:
        self.grad_enabled.append(torch.is_grad_enabled())
        assert isinstance(action, torch.Tensor) and action.dtype == torch.int64
        one_hot = torch.nn.functional.one_hot(action, self.num_actions).double()
        nxt = torch.tanh(torch.cat([embedding, one_hot], dim=1) @ self.w_dyn)
        out = self.heads(nxt)
        reward = torch.sin(out[:, self.num_actions + 1])
        discount = torch.full_like(reward, 0.95)
        return mcts.RecurrentFnOutput(reward, discount, out[:, : self.num_actions], out[:, self.num_actions]), nxt


# ---------------------------------------------------------------------------------------------------------------------
# Reference: a plain transcription of the MuZero pseudocode (Schrittwieser et al. 2020, supplementary material), with
# per-edge discounts (mctx convention), the root counted as reward 0 / discount 1, lowest-index tie-breaking and the
# depth limit documented in mcts.py.
# ---------------------------------------------------------------------------------------------------------------------


class MinMaxStats:
    def __init__(self, known_bounds: tuple[float, float] | None = None) -> None:
        self.maximum = known_bounds[1] if known_bounds else -math.inf
        self.minimum = known_bounds[0] if known_bounds else math.inf

    def update(self, value: float) -> None:
        self.maximum = max(self.maximum, value)
        self.minimum = min(self.minimum, value)

    def normalize(self, value: float) -> float:
        if self.maximum > self.minimum:
            return (value - self.minimum) / (self.maximum - self.minimum)
        return value


class Node:
    def __init__(self, prior: float) -> None:
        self.visit_count = 0
        self.prior = prior
        self.value_sum = 0.0
        self.children: dict[int, Node] = {}
        self.hidden_state: Any = None
        self.reward = 0.0
        self.discount = 1.0
        self.network_value = 0.0

    def expanded(self) -> bool:
        return len(self.children) > 0

    def value(self) -> float:
        if self.visit_count == 0:
            return 0.0
        return self.value_sum / self.visit_count


def _softmax(logits: list[float]) -> list[float]:
    m = max(logits)
    e = [math.exp(x - m) for x in logits]
    total = 0.0
    for x in e:
        total += x
    return [x / total for x in e]


def ucb_score(parent: Node, child: Node, min_max_stats: MinMaxStats, unvisited: str = "zero") -> float:
    pb_c = math.log((parent.visit_count + C2 + 1) / C2) + C1
    pb_c *= math.sqrt(parent.visit_count) / (child.visit_count + 1)
    prior_score = pb_c * child.prior
    if child.visit_count > 0:
        value_score = min_max_stats.normalize(child.reward + child.discount * child.value())
    elif unvisited == "parent":  # the parent's own value: mean backed-up return, or its network value before any
        own = parent.value() if parent.visit_count > 0 else parent.network_value
        value_score = min_max_stats.normalize(own)
    else:
        value_score = 0.0
    return prior_score + value_score


def select_child(node: Node, min_max_stats: MinMaxStats, unvisited: str = "zero") -> tuple[int, Node]:
    best_action, best_score = -1, -math.inf
    for action in sorted(node.children):
        score = ucb_score(node, node.children[action], min_max_stats, unvisited)
        if score > best_score:
            best_action, best_score = action, score
    return best_action, node.children[best_action]


def expand_node(node: Node, actions: list[int], logits: list[float], value: float, hidden: Any) -> None:
    node.hidden_state = hidden
    node.network_value = value
    policy = _softmax([logits[a] for a in actions])
    for action, p in zip(actions, policy, strict=True):
        node.children[action] = Node(p)


def backpropagate(search_path: list[Node], value: float, min_max_stats: MinMaxStats) -> None:
    for node in reversed(search_path):
        node.value_sum += value
        node.visit_count += 1
        min_max_stats.update(node.reward + node.discount * node.value())
        value = node.reward + node.discount * value


def _row(x: Any, i: int) -> Any:
    return x[i : i + 1]


def _scalar(x: Any) -> float:
    return float(x.detach().reshape(-1)[0]) if isinstance(x, torch.Tensor) else float(np.asarray(x).reshape(-1)[0])


def reference_search(
    model: Any,
    root: mcts.RootFnOutput,
    b: int,
    num_simulations: int,
    legal: np.ndarray,
    max_depth: int | None = None,
    unvisited: str = "zero",
    known_bounds: tuple[float, float] | None = None,
    stats_out: list[MinMaxStats] | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Search root ``b`` alone with per-node objects; returns visit counts [A], search value, root Q [A] (and appends
    the final min-max statistics to ``stats_out``)."""
    num_actions = root.prior_logits.shape[1]
    logits = [float(x) for x in np.asarray(mcts._to_numpy(root.prior_logits, "logits"))[b]]
    legal_actions = [a for a in range(num_actions) if legal[a]]
    tree_root = Node(0.0)
    expand_node(tree_root, legal_actions, logits, _scalar(_row(root.value, b)), _row(root.embedding, b))
    stats = MinMaxStats(known_bounds)
    if stats_out is not None:
        stats_out.append(stats)
    for _ in range(num_simulations):
        node = tree_root
        search_path = [node]
        action = -1
        while node.expanded():
            action, node = select_child(node, stats, unvisited)
            search_path.append(node)
            if max_depth is not None and len(search_path) - 1 >= max_depth and node.expanded():
                break
        if node.expanded():  # stopped by the depth limit: the node's stored network value
            value = node.network_value
        else:
            parent = search_path[-2]
            action_batch = (
                torch.tensor([action]) if isinstance(parent.hidden_state, torch.Tensor) else np.array([action], np.int64)
            )
            with torch.no_grad():
                out, hidden = model(parent.hidden_state, action_batch)
            node.reward = _scalar(out.reward)
            node.discount = _scalar(out.discount)
            value = _scalar(out.value)
            child_logits = [float(x) for x in np.asarray(mcts._to_numpy(out.prior_logits, "logits"))[0]]
            expand_node(node, list(range(num_actions)), child_logits, value, hidden)
        backpropagate(search_path, value, stats)
    visits = np.zeros(num_actions, dtype=np.int64)
    root_q = np.zeros(num_actions)
    for a, child in tree_root.children.items():
        visits[a] = child.visit_count
        if child.visit_count > 0:
            root_q[a] = child.reward + child.discount * child.value()
    return visits, tree_root.value(), root_q


def _random_invalid(rng: np.random.Generator, batch_size: int, num_actions: int) -> np.ndarray:
    invalid = rng.random((batch_size, num_actions)) < 0.4
    invalid[np.arange(batch_size), rng.integers(num_actions, size=batch_size)] = False
    return invalid


def _check_against_reference(model: Any, root: mcts.RootFnOutput, out: mcts.SearchOutput, sims: int, legal: np.ndarray,
                             max_depth: int | None = None, unvisited: str = "zero",
                             known_bounds: tuple[float, float] | None = None, eps: float = EPS64) -> None:  # fmt: skip
    """
    Compare every root of a search with :func:`reference_search`: visit counts exactly, values within rounding.

    The search and the reference do the same float64 operations in the same order, so they differ only where the model
    gives a batched call other bits than a one-row call (BLAS kernels chosen by shape) or where the compiler fuses a
    multiply-add: roundings of relative size ``eps`` (the model outputs' dtype). A mean return adds up ``sims`` returns
    built in ``<= sims`` steps of ``r + discount G``: ``3 sims`` roundings, on returns bounded by ``(depth + 1)`` times
    the largest reward or value (``|discount| <= 1`` in every test model).
    """
    tree = out.tree
    depth = int(tree.depth.max()) + 1
    scale = depth * max(1.0, float(np.abs(tree.reward).max()), float(np.abs(tree.raw_value).max()))
    tolerance = _rounding_tolerance(eps, scale, 3 * sims)
    for b in range(len(legal)):
        stats: list[MinMaxStats] = []
        visits, value, root_q = reference_search(model, root, b, sims, legal[b], max_depth, unvisited, known_bounds, stats)
        assert out.tree.minmax[b].tolist() == [stats[0].minimum, stats[0].maximum]
        np.testing.assert_array_equal(out.visit_counts[b], visits)
        np.testing.assert_allclose(out.search_value[b], value, rtol=0.0, atol=tolerance)
        np.testing.assert_allclose(out.root_q[b], root_q, rtol=0.0, atol=tolerance)


# ---------------------------------------------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unvisited", ["zero", "parent"])
@pytest.mark.parametrize("discount", [1.0, 0.9, -1.0, "mixed"])
@pytest.mark.parametrize("num_actions", [2, 3, 7])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_matches_reference(batch_size: int, num_actions: int, discount: float | str, unvisited: str) -> None:
    rng = np.random.default_rng(batch_size * 100 + num_actions)
    for seed, sims in enumerate([1, 2, 10, 50]):
        model = HashModel(num_actions, discount)
        root = model.root(batch_size, seed)
        invalid = _random_invalid(rng, batch_size, num_actions) if seed % 2 else None
        out = mcts.muzero_policy(
            root, model, sims, invalid_actions=invalid, dirichlet_fraction=0.0, rng=rng, unvisited_value=unvisited
        )
        legal = np.ones((batch_size, num_actions), bool) if invalid is None else ~invalid
        _check_against_reference(model, root, out, sims, legal, unvisited=unvisited)
        assert np.all(out.visit_counts.sum(axis=1) == sims)
        assert np.all(out.tree.visits[:, 0] == sims)


@pytest.mark.parametrize("unvisited", ["zero", "parent"])
@pytest.mark.parametrize("discount", [1.0, -1.0, "mixed"])
def test_matches_reference_with_ties(discount: float | str, unvisited: str) -> None:
    """Equal priors and equal Q values everywhere: the tie-breaking must match scoring every child."""
    rng = np.random.default_rng(3)
    for seed, (num_actions, sims) in enumerate([(2, 30), (3, 40), (7, 50), (18, 60)]):
        model = HashModel(num_actions, discount, quantized=True)
        root = model.root(4, seed)
        invalid = _random_invalid(rng, 4, num_actions)
        out = mcts.muzero_policy(root, model, sims, invalid_actions=invalid, dirichlet_fraction=0.0, unvisited_value=unvisited)
        _check_against_reference(model, root, out, sims, ~invalid, unvisited=unvisited)


@pytest.mark.parametrize("unvisited", ["zero", "parent"])
@pytest.mark.parametrize("discount", [0.9, -1.0, "mixed"])
@pytest.mark.parametrize("known_bounds", [(-1.0, 1.0), (-0.05, 0.02), (0.0, 0.5), (-30.0, 30.0)])
def test_known_bounds_match_reference(known_bounds: tuple[float, float], discount: float | str, unvisited: str) -> None:
    """The pseudocode's MinMaxStats(known_bounds): statistics start at the bounds (normalisation on from the first
    simulation) and are widened by values outside them; (-0.05, 0.02) and (0, 0.5) are narrower than the model's values
    on one or both sides, (-30, 30) much wider (the prior term then dominates)."""
    rng = np.random.default_rng(7)
    for seed, (num_actions, sims) in enumerate([(2, 12), (3, 40), (7, 50)]):
        model = HashModel(num_actions, discount)
        root = model.root(4, seed)
        invalid = _random_invalid(rng, 4, num_actions)
        out = mcts.muzero_policy(
            root, model, sims, invalid_actions=invalid, dirichlet_fraction=0.0, unvisited_value=unvisited,
            known_bounds=known_bounds,
        )  # fmt: skip
        _check_against_reference(model, root, out, sims, ~invalid, unvisited=unvisited, known_bounds=known_bounds)
        lo, hi = known_bounds
        assert np.all(out.tree.minmax[:, 0] <= lo) and np.all(out.tree.minmax[:, 1] >= hi)
        widened = (out.tree.minmax[:, 0] < lo) | (out.tree.minmax[:, 1] > hi)
        # Q = r + discount V with r, V in [-1, 1): narrow bounds are always widened, (-30, 30) never
        if hi - lo < 1.0:
            assert widened.all()
        elif hi - lo > 4.0:
            assert not widened.any()


def test_known_bounds_normalise_from_the_first_simulation() -> None:
    """Brute force on a bandit: with bounds the root's scores are (Q - lo) / (hi - lo) + prior term from the start, so
    an arm with a reward above the others' is revisited at once; without bounds the second simulation still sees
    max <= min (one value) and takes the prior's choice."""
    arm_rewards = np.array([0.2, 0.1, 0.0])
    model = _constant_model(3, lambda d, a: arm_rewards[a] if d == 1 else 0.0, 0.0, lambda d, a: 0.0)
    lo, hi = -1.0, 1.0
    for sims in range(1, 8):
        out = mcts.muzero_policy(_root(1, 3), model, sims, dirichlet_fraction=0.0, known_bounds=(lo, hi))
        # replay the search by hand: pUCT with Q normalised by (lo, hi) widened by the Q values seen
        visits, q_sum, q_min, q_max = np.zeros(3), np.zeros(3), lo, hi
        for n in range(sims):
            c = (C1 + math.log((n + C2 + 1) / C2)) * math.sqrt(n)
            q = np.where(visits > 0, q_sum / np.maximum(visits, 1), 0.0)
            qn = np.where(visits > 0, (q - q_min) / (q_max - q_min), 0.0)
            a = int(np.argmax(qn + c * (1 / 3) / (1 + visits)))
            visits[a] += 1
            q_sum[a] += arm_rewards[a]
            root_value = q_sum.sum() / (n + 1)
            q_min, q_max = min(q_min, arm_rewards[a], root_value), max(q_max, arm_rewards[a], root_value)
        np.testing.assert_array_equal(out.visit_counts[0], visits)
        assert out.tree.minmax[0].tolist() == [lo, hi]  # every value inside the bounds
    unbounded = mcts.muzero_policy(_root(1, 3), model, 7, dirichlet_fraction=0.0)
    bounded = mcts.muzero_policy(_root(1, 3), model, 7, dirichlet_fraction=0.0, known_bounds=(lo, hi))
    assert not np.array_equal(unbounded.visit_counts, bounded.visit_counts)


@pytest.mark.parametrize(
    "known_bounds", [(1.0, 1.0), (2.0, -2.0), (0.0, np.inf), (np.nan, 1.0), (1.0,), (0.0, 1.0, 2.0), "ab", 3.0]
)
def test_known_bounds_validated(known_bounds: Any) -> None:
    model = HashModel(3, 1.0)
    with pytest.raises(ValueError, match="known_bounds"):
        mcts.muzero_policy(model.root(2, 0), model, 3, known_bounds=known_bounds)


@pytest.mark.parametrize("embedding_type", ["numpy", "torch"])
def test_device_path_equals_kernel_path(embedding_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path for accelerators and dtypes numpy lacks (index_select/copy_ instead of the kernels) gives the same."""
    model = HashModel(3, "mixed")
    root = model.root(5, seed=9)
    if embedding_type == "torch":

        def recurrent_fn(embedding: torch.Tensor, action: torch.Tensor) -> Any:
            out, nxt = model(embedding.numpy().view(np.uint64), action.numpy())
            return mcts.RecurrentFnOutput(*(torch.from_numpy(x) for x in out)), torch.from_numpy(nxt.view(np.int64))

        root = root._replace(embedding=torch.from_numpy(root.embedding.view(np.int64)))
    else:
        recurrent_fn = model
    kwargs = {"invalid_actions": _random_invalid(np.random.default_rng(1), 5, 3), "dirichlet_fraction": 0.0}
    kernel = mcts.muzero_policy(root, recurrent_fn, 25, **kwargs)
    monkeypatch.setattr(mcts, "_kernel_dtype", lambda dtype: False)
    device = mcts.muzero_policy(root, recurrent_fn, 25, **kwargs)
    np.testing.assert_array_equal(kernel.visit_counts, device.visit_counts)
    np.testing.assert_array_equal(kernel.search_value, device.search_value)
    np.testing.assert_array_equal(np.asarray(kernel.tree.embeddings), np.asarray(device.tree.embeddings))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_embeddings_match_cpu() -> None:
    """Embeddings and model on the GPU: same search as on the CPU (one host transfer per simulation)."""
    cpu_model, gpu_model = TorchMLP(4, seed=2), TorchMLP(4, seed=2, device="cuda")
    cpu = mcts.muzero_policy(cpu_model.root(6, seed=0), cpu_model, 30, dirichlet_fraction=0.0)
    gpu_root = gpu_model.root(6, seed=0)
    assert gpu_root.embedding.is_cuda
    gpu = mcts.muzero_policy(gpu_root, gpu_model, 30, dirichlet_fraction=0.0)
    assert gpu.tree.embeddings.is_cuda
    np.testing.assert_array_equal(cpu.visit_counts, gpu.visit_counts)
    # cuBLAS and the CPU's BLAS add each layer's products in other orders (<= 10 float64 roundings per layer); the
    # difference is carried down the tree by the dynamics, whose gain per level is at most the spectral norm of their
    # embedding weights (tanh' <= 1), and out by the heads: a bound on the scale of the values' differences.
    hidden = cpu_model.w_dyn.shape[1]
    with torch.no_grad():
        gain = max(1.0, float(torch.linalg.matrix_norm(cpu_model.w_dyn[:hidden], ord=2)))
        head = max(1.0, float(torch.linalg.matrix_norm(cpu_model.w_head, ord=2)))
    scale = (int(cpu.max_depth.max()) + 1) * max(
        1.0, float(np.abs(cpu.tree.reward).max()), float(np.abs(cpu.tree.raw_value).max())
    )
    tolerance = _rounding_tolerance(EPS64, scale * head * gain ** int(cpu.max_depth.max()), 10 + 3 * 30)
    np.testing.assert_allclose(cpu.search_value, gpu.search_value, rtol=0.0, atol=tolerance)
    np.testing.assert_allclose(cpu.root_q, gpu.root_q, rtol=0.0, atol=tolerance)


@pytest.mark.parametrize("unvisited_parent", [False, True])
@pytest.mark.parametrize("all_legal", [True, False])
def test_selection_shortcut_equals_full_scan(all_legal: bool, unvisited_parent: bool) -> None:
    """The selection kernel scores only visited children and the best unvisited one; it must pick what scoring
    every child picks (ties: lowest index), here on many root states built with ties everywhere."""
    from sb3_frontier.algorithms.muzero import _tree

    rng = np.random.default_rng(int(all_legal))
    batch_size, num_actions, num_nodes = 4000, 6, 40
    edge_shape = (batch_size, num_nodes, num_actions)
    prior, children, visited = (
        np.zeros(edge_shape),
        np.full(edge_shape, _tree.UNEXPANDED, np.int32),
        np.zeros(edge_shape, np.int32),
    )
    node_f = np.zeros((batch_size, num_nodes, _tree.NUM_NODE_F))
    node_i = np.zeros((batch_size, num_nodes, _tree.NUM_NODE_I), dtype=np.int32)
    legal = np.ones((batch_size, num_actions), bool) if all_legal else rng.random((batch_size, num_actions)) < 0.8
    legal[np.arange(batch_size), rng.integers(num_actions, size=batch_size)] = True
    # few distinct values, so that scores tie often; children visited in a random order
    prior[:, 0] = rng.choice([0.0, 0.1, 0.2, 0.4], size=(batch_size, num_actions))
    visits = rng.choice([0, 1, 2, 4], size=(batch_size, num_actions), p=[0.4, 0.2, 0.2, 0.2]) * legal
    q = rng.choice([-0.5, 0.0, 0.5, 1.0], size=visits.shape)
    for b in range(batch_size):
        for j, a in enumerate(rng.permutation(np.flatnonzero(visits[b] > 0))):
            child = j + 1
            children[b, 0, a], visited[b, 0, j] = child, child
            node_i[b, child, [_tree.VISITS, _tree.ACTION]] = visits[b, a], a
            node_f[b, child, [_tree.EDGE_Q, _tree.EDGE_PRIOR]] = q[b, a], prior[b, 0, a]
        node_i[b, 0, _tree.NUM_VISITED] = (visits[b] > 0).sum()
        _tree._top_two(b, 0, prior, children, legal, node_f, node_i)
    node_i[:, 0, _tree.VISITS] = visits.sum(axis=1)
    node_f[:, 0, _tree.OWN_VALUE] = rng.choice([-0.5, 0.0, 1.0], size=batch_size)
    minmax = np.where(rng.random((batch_size, 1)) < 0.7, [[-0.5, 1.0]], [[0.5, 0.5]])
    puct = np.empty((num_nodes, num_nodes))
    _tree._puct_factors(C1, C2, puct)
    sim_index = np.zeros((4, 1, batch_size), dtype=np.int64)
    path = np.zeros((batch_size, num_nodes), dtype=np.int64)
    no_embedding = np.zeros((batch_size, num_nodes, 0), dtype=np.float32)
    _tree.select_leaves(
        prior, children, node_f, node_i, visited, minmax, legal, puct, 1, unvisited_parent, 0, sim_index, path,
        no_embedding, no_embedding[:, 0],
    )  # fmt: skip
    scores = np.empty(num_actions)
    full = []
    for b in range(batch_size):
        shift, scale = _tree._q_normalisation(minmax[b, 0], minmax[b, 1])
        unvisited_score = (node_f[b, 0, _tree.OWN_VALUE] - shift) / scale if unvisited_parent else 0.0
        full.append(_tree._puct_scan(b, 0, prior, node_f, node_i, visited, legal, puct, shift, scale, unvisited_score, scores))
    np.testing.assert_array_equal(sim_index[_tree.SIM_ACTION, 0], full)
    assert np.all(legal[np.arange(batch_size), full])
    # the shortcut was taken for most roots (no tie with another unvisited child)
    c = puct[node_i[:, 0, _tree.VISITS], 0]
    best = node_i[:, 0, _tree.BEST_UNVISITED]
    best_prior = prior[np.arange(batch_size), 0, np.maximum(best, 0)]
    with np.errstate(invalid="ignore"):  # 0 * -inf where c = 0
        assert np.mean((best < 0) | (c * node_f[:, 0, _tree.SECOND_PRIOR] != c * best_prior)) > 0.3


def test_puct_factors_follow_the_pseudocode() -> None:
    """The pUCT table holds (c1 + log((n + c2 + 1) / c2)) * (sqrt(n) / (m + 1)) in the pseudocode's order of operations,
    so that table * prior is bitwise the pseudocode's prior score."""
    from sb3_frontier.algorithms.muzero import _tree

    puct = np.empty((30, 30))
    _tree._puct_factors(C1, C2, puct)
    for n in range(30):
        for m in range(30):
            pb_c = math.log((n + C2 + 1) / C2) + C1
            pb_c *= math.sqrt(n) / (m + 1)
            assert puct[n, m] == pb_c


@pytest.mark.parametrize("num_actions", [1, 2, 5, 18])
def test_best_unvisited_cache_matches_brute_force(num_actions: int) -> None:
    """``_top_two`` (integer keys from the priors' bits) against numpy: the unvisited child of highest prior (lowest
    index on ties, legal only at the root) and the second-highest unvisited prior (an equal one counts; -inf if none)."""
    from sb3_frontier.algorithms.muzero import _tree

    rng = np.random.default_rng(num_actions)
    batch_size, num_nodes = 3000, 3
    prior = rng.choice([0.0, 1e-300, 0.1, 0.25, 0.5, 1.0], size=(batch_size, num_nodes, num_actions))
    children = np.where(rng.random(prior.shape) < 0.4, 1, _tree.UNEXPANDED).astype(np.int32)
    legal = rng.random((batch_size, num_actions)) < 0.7
    node_f = np.zeros((batch_size, num_nodes, _tree.NUM_NODE_F))
    node_i = np.zeros((batch_size, num_nodes, _tree.NUM_NODE_I), dtype=np.int32)
    for b in range(batch_size):
        for node in range(num_nodes):
            _tree._top_two(b, node, prior, children, legal, node_f, node_i)
    unvisited = children == _tree.UNEXPANDED
    unvisited[:, 0] &= legal  # the root's illegal children are never candidates
    masked = np.where(unvisited, prior, -np.inf)
    best = np.where(unvisited.any(axis=2), masked.argmax(axis=2), -1)  # argmax: the first of equal maxima
    np.testing.assert_array_equal(node_i[..., _tree.BEST_UNVISITED], best)
    others = masked.copy()
    b_idx, n_idx = np.nonzero(best >= 0)
    others[b_idx, n_idx, best[b_idx, n_idx]] = -np.inf
    np.testing.assert_array_equal(node_f[..., _tree.SECOND_PRIOR], others.max(axis=2))
    assert np.mean(node_f[..., _tree.SECOND_PRIOR] == masked.max(axis=2)) > 0.2  # ties were exercised


def test_nodes_never_created_keep_their_initial_values() -> None:
    """A simulation stopped by the depth limit creates no node: that node's entries are the tree's initial values."""
    model = HashModel(2, 0.9)
    out = mcts.muzero_policy(model.root(3, seed=1), model, 20, max_depth=2, dirichlet_fraction=0.0)
    tree = out.tree
    missing = tree.visits == 0
    missing[:, 0] = False
    assert missing.sum() > 10  # 2 actions, depth 2: at most 6 nodes besides the root
    np.testing.assert_array_equal(tree.parents[missing], -1)
    np.testing.assert_array_equal(tree.action_from_parent[missing], -1)
    np.testing.assert_array_equal(tree.depth[missing], 0)
    np.testing.assert_array_equal(tree.discount[missing], 1.0)
    for field in (tree.value_sum, tree.reward, tree.raw_value, tree.prior, tree.child_q, tree.child_visits):
        np.testing.assert_array_equal(field[missing], 0)
    np.testing.assert_array_equal(tree.children[missing], -1)
    # created nodes: edge statistics are those of the child nodes
    for b in range(3):
        for node in np.flatnonzero(~missing[b])[1:]:
            parent, action = tree.parents[b, node], tree.action_from_parent[b, node]
            assert tree.child_visits[b, parent, action] == tree.visits[b, node]
            q = tree.reward[b, node] + tree.discount[b, node] * tree.value_sum[b, node] / tree.visits[b, node]
            assert tree.child_q[b, parent, action] == q


@pytest.mark.parametrize("temperature", [0.0, 0.3, 1.0, 2.5])
def test_search_read_out_matches_select_action(temperature: float) -> None:
    """The search's compiled read-out gives the acting weights of ``temperature_weights`` and the action that
    ``select_action`` draws from the same random numbers (temperature 0: the most visited action, ties by prior)."""
    model = HashModel(4, "mixed", quantized=True)
    root = model.root(500, seed=3)
    invalid = _random_invalid(np.random.default_rng(5), 500, 4)
    out = mcts.muzero_policy(root, model, 9, invalid_actions=invalid, temperature=temperature, rng=np.random.default_rng(1))
    weights = mcts.temperature_weights(out.visit_counts, temperature, invalid, out.root_prior)
    # float64 log/exp and sums of <= 4 terms in another order: a few roundings of numbers <= 1
    np.testing.assert_allclose(out.action_weights, weights, rtol=0.0, atol=_rounding_tolerance(EPS64, 1.0, 8))
    np.testing.assert_array_equal(out.visit_probs, out.visit_counts / 9)
    # replay the search's draws: the Dirichlet noise's Gamma draws, then the action's uniform draws
    rng = np.random.default_rng(1)
    rng.standard_gamma(0.25, size=(500, 4))
    expected = mcts.select_action(out.visit_counts, temperature, rng, invalid_actions=invalid, prior=out.root_prior)
    np.testing.assert_array_equal(out.action, expected)
    if temperature == 0.0:
        np.testing.assert_array_equal(out.action_weights, np.eye(4)[expected])


@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_max_depth_matches_reference(max_depth: int) -> None:
    rng = np.random.default_rng(max_depth)
    model = HashModel(3, "mixed")
    root = model.root(4, seed=7)
    invalid = _random_invalid(rng, 4, 3)
    out = mcts.muzero_policy(root, model, 30, invalid_actions=invalid, dirichlet_fraction=0.0, max_depth=max_depth)
    _check_against_reference(model, root, out, 30, ~invalid, max_depth)
    assert np.all(out.max_depth <= max_depth)
    assert np.all(out.max_depth == max_depth)  # 30 simulations fill depth 3 of a 3-action tree


def test_torch_model_matches_reference() -> None:
    model = TorchMLP(num_actions=4)
    root = model.root(3, seed=1)
    invalid = np.array([[False, True, False, False], [False, False, False, False], [True, True, False, True]])
    out = mcts.muzero_policy(root, model, 25, invalid_actions=torch.as_tensor(invalid), dirichlet_fraction=0.0)
    _check_against_reference(model, root, out, 25, ~invalid)
    # The search never records gradients, and the embedding store keeps the root embedding in node 0.
    assert model.grad_enabled and not any(model.grad_enabled)
    assert not out.tree.embeddings.requires_grad
    torch.testing.assert_close(out.tree.embeddings[:, 0], root.embedding)


def test_float32_torch_outputs() -> None:
    """Float32 outputs (the usual network dtype) go through the same path as float64 ones."""
    model64 = TorchMLP(num_actions=3, seed=3)

    def model32(embedding: torch.Tensor, action: torch.Tensor) -> tuple[mcts.RecurrentFnOutput, torch.Tensor]:
        out, nxt = model64(embedding.double(), action)
        return mcts.RecurrentFnOutput(*(x.float() for x in out)), nxt.float()

    root64 = model64.root(2, seed=0)
    root32 = mcts.RootFnOutput(*(x.float() for x in root64))
    out = mcts.muzero_policy(root32, model32, 12, dirichlet_fraction=0.0)
    _check_against_reference(model32, root32, out, 12, np.ones((2, 3), bool), eps=EPS32)  # float32 outputs
    assert out.tree.embeddings.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------------
# Known cases
# ---------------------------------------------------------------------------------------------------------------------


def _constant_model(num_actions: int, reward_fn: Any, value: float, discount_fn: Any) -> Any:
    """Model over integer embeddings = depth: the reward/discount of an edge depend on (depth, action)."""

    def recurrent_fn(embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
        depth = embedding[:, 0] + 1
        reward = np.array([reward_fn(d, a) for d, a in zip(depth, action, strict=True)])
        discount = np.array([discount_fn(d, a) for d, a in zip(depth, action, strict=True)])
        out = mcts.RecurrentFnOutput(reward, discount, np.zeros((len(action), num_actions)), np.full(len(action), value))
        return out, depth[:, None]

    return recurrent_fn


def _root(batch_size: int, num_actions: int, value: float = 0.0) -> mcts.RootFnOutput:
    return mcts.RootFnOutput(
        np.zeros((batch_size, num_actions)), np.full(batch_size, value), np.zeros((batch_size, 1), np.int64)
    )


def test_bandit() -> None:
    arm_rewards = np.array([0.1, 0.9, 0.5, -0.3])
    # Depth 1: the arm's reward; deeper: reward 0, discount 0; values 0 everywhere.
    model = _constant_model(4, lambda d, a: arm_rewards[a] if d == 1 else 0.0, 0.0, lambda d, a: 0.0)
    out = mcts.muzero_policy(_root(2, 4), model, 50, dirichlet_fraction=0.0, temperature=0.0)
    assert np.all(out.visit_counts.argmax(axis=1) == 1)
    assert np.all(out.action == 1)
    visited = out.visit_counts > 0
    assert visited.all()  # uniform prior: every arm gets tried
    np.testing.assert_allclose(out.root_q, np.broadcast_to(arm_rewards, (2, 4)))
    # search value = visit-weighted mean of the arm rewards (children values are 0)
    np.testing.assert_allclose(out.search_value, (out.visit_counts * arm_rewards).sum(axis=1) / 50)


@pytest.mark.parametrize("max_depth", [None, 3])
def test_chain_closed_form(max_depth: int | None) -> None:
    """One action: each simulation extends the chain by one node; G_k = r (1 - g^k) / (1 - g) + g^k v."""
    r, v, g, sims = 0.5, 2.0, 0.9, 10
    model = _constant_model(1, lambda d, a: r, v, lambda d, a: g)
    out = mcts.muzero_policy(_root(1, 1, value=-7.0), model, sims, dirichlet_fraction=0.0, max_depth=max_depth)
    depth_of_sim = [k if max_depth is None else min(k, max_depth) for k in range(1, sims + 1)]
    returns = [r * (1 - g**k) / (1 - g) + g**k * v for k in depth_of_sim]
    # The search sums the returns step by step (G = r + g G), the closed form with powers: a few roundings per step, on
    # numbers below r / (1 - g) + v.
    tolerance = _rounding_tolerance(EPS64, r / (1 - g) + v, 4 * sims)
    np.testing.assert_allclose(out.search_value, [np.mean(returns)], rtol=0.0, atol=tolerance)
    # Q(root, 0) = r + g V(node 1), and node 1 saw the same returns one step shorter: Q equals the search value.
    np.testing.assert_allclose(out.root_q, [[np.mean(returns)]], rtol=0.0, atol=tolerance)
    assert out.max_depth[0] == (sims if max_depth is None else max_depth)
    assert out.visit_counts[0, 0] == sims


def test_two_player_chain_flips_sign() -> None:
    """With discount -1 and zero rewards, the return of the node at depth k seen from the root is (-1)^k v."""
    v, sims = 0.8, 7
    model = _constant_model(1, lambda d, a: 0.0, v, lambda d, a: -1.0)
    out = mcts.muzero_policy(_root(1, 1), model, sims, dirichlet_fraction=0.0)
    expected = np.mean([(-1) ** k * v for k in range(1, sims + 1)])
    # sign flips are exact; the sums of sims terms of size v round sims times
    np.testing.assert_allclose(out.search_value, [expected], rtol=0.0, atol=_rounding_tolerance(EPS64, v, 2 * sims))
    # The child's own value is from the opponent's point of view: the opposite sign of the root's Q.
    child = out.tree.children[0, 0, 0]
    child_value = out.tree.value_sum[0, child] / out.tree.visits[0, child]
    assert out.root_q[0, 0] == -child_value  # 0 + (-1) V(child): the same division, an exact sign flip


def test_two_player_game_prefers_the_maximin_move() -> None:
    """P1 picks a, P2 picks b, P1 gets z[a, b]. Rewards are from the mover's view, discount -1 between players."""
    z = np.array([[1.0, -1.0], [0.2, 0.3]])  # a=0 has the best outcome but P2 refutes it; a=1 guarantees >= 0.2

    def recurrent_fn(embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
        # embedding: [depth, first action]
        depth = embedding[:, 0] + 1
        first = np.where(depth == 1, action, embedding[:, 1])
        reward = np.where(depth == 2, -z[first, action], 0.0)  # P2's own outcome on its move
        discount = np.where(depth == 1, -1.0, 0.0)  # the game ends after P2's move
        out = mcts.RecurrentFnOutput(reward, discount, np.zeros((len(action), 2)), np.zeros(len(action)))
        return out, np.stack([depth, first], axis=1)

    root = mcts.RootFnOutput(np.zeros((1, 2)), np.zeros(1), np.zeros((1, 2), np.int64))
    out = mcts.muzero_policy(root, recurrent_fn, 200, dirichlet_fraction=0.0, temperature=0.0)
    assert out.action[0] == 1
    assert out.visit_counts[0, 1] > out.visit_counts[0, 0]
    assert out.root_q[0, 0] < 0.0 < out.root_q[0, 1]
    assert 0.0 < out.search_value[0] <= 0.3


# ---------------------------------------------------------------------------------------------------------------------
# Dirichlet noise, batching, calls
# ---------------------------------------------------------------------------------------------------------------------


def test_dirichlet_noise() -> None:
    model = HashModel(5, 0.9)
    root = model.root(3, seed=4)
    invalid = np.array([[False, True, False, False, True], [False] * 5, [True, True, True, False, True]])
    plain = mcts.muzero_policy(root, model, 40, invalid_actions=invalid, dirichlet_fraction=0.0)
    differs = False
    for seed in range(10):
        noisy = mcts.muzero_policy(root, model, 40, invalid_actions=invalid, rng=np.random.default_rng(seed))
        again = mcts.muzero_policy(root, model, 40, invalid_actions=invalid, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(noisy.visit_counts, again.visit_counts)
        np.testing.assert_array_equal(noisy.root_prior, again.root_prior)
        np.testing.assert_array_equal(noisy.action, again.action)
        differs |= not np.array_equal(noisy.visit_counts, plain.visit_counts)
        assert np.all(noisy.root_prior[invalid] == 0.0)
        assert np.all(noisy.visit_counts[invalid] == 0)
        np.testing.assert_allclose(noisy.root_prior.sum(axis=1), 1.0)
        # the only legal action of root 2 keeps prior 1: (1 - f) 1 + f 1, two roundings
        assert abs(noisy.root_prior[2, 3] - 1.0) <= _rounding_tolerance(EPS64, 1.0, 2)
    assert differs
    # fraction 0 is the noiseless search whatever the rng
    off = mcts.muzero_policy(root, model, 40, invalid_actions=invalid, dirichlet_fraction=0.0, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(off.visit_counts, plain.visit_counts)
    np.testing.assert_array_equal(off.root_prior, plain.root_prior)


def test_dirichlet_noise_moments() -> None:
    """Noise = P - (1 - f) softmax over the legal actions, divided by f, is Dir(alpha) on the legal actions."""
    batch_size, alpha, fraction = 4000, 0.3, 0.25
    invalid = np.zeros((batch_size, 4), bool)
    invalid[:, 2] = True
    root = mcts.RootFnOutput(np.zeros((batch_size, 4)), np.zeros(batch_size), np.zeros((batch_size, 1)))

    def recurrent_fn(embedding: np.ndarray, action: np.ndarray) -> tuple[mcts.RecurrentFnOutput, np.ndarray]:
        zeros = np.zeros(len(action))
        return mcts.RecurrentFnOutput(zeros, zeros, np.zeros((len(action), 4)), zeros), embedding

    out = mcts.muzero_policy(
        root, recurrent_fn, 1, invalid_actions=invalid, dirichlet_alpha=alpha, dirichlet_fraction=fraction,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    noise = (out.root_prior[:, [0, 1, 3]] - (1 - fraction) / 3) / fraction
    # recovering the noise from the prior: a few roundings of numbers <= 1, magnified by 1 / fraction
    recovery = _rounding_tolerance(EPS64, 1.0 / fraction, 8)
    np.testing.assert_allclose(noise.sum(axis=1), 1.0, rtol=0.0, atol=3 * recovery)
    assert np.all(noise >= -recovery)
    n = 3
    mean, var = 1 / n, (1 / n) * (1 - 1 / n) / (n * alpha + 1)  # symmetric Dirichlet moments
    np.testing.assert_allclose(noise.mean(axis=0), mean, atol=5 * math.sqrt(var / batch_size))
    np.testing.assert_allclose(noise.var(axis=0), var, rtol=0.1)


def test_batched_equals_one_by_one() -> None:
    model = HashModel(3, "mixed")
    root = model.root(6, seed=11)
    invalid = _random_invalid(np.random.default_rng(0), 6, 3)
    batched = mcts.muzero_policy(root, model, 20, invalid_actions=invalid, dirichlet_fraction=0.0, temperature=0.0)
    for b in range(6):
        single_root = mcts.RootFnOutput(*(x[b : b + 1] for x in root))
        single = mcts.muzero_policy(
            single_root, model, 20, invalid_actions=invalid[b : b + 1], dirichlet_fraction=0.0, temperature=0.0
        )
        np.testing.assert_array_equal(single.visit_counts[0], batched.visit_counts[b])
        np.testing.assert_array_equal(single.action[0], batched.action[b])
        assert single.search_value[0] == batched.search_value[b]
        np.testing.assert_array_equal(single.root_q[0], batched.root_q[b])
        np.testing.assert_array_equal(single.tree.visits[0], batched.tree.visits[b])


@pytest.mark.parametrize("batch_size", [1, 4])
def test_one_batched_call_per_simulation(batch_size: int) -> None:
    model = HashModel(3, 1.0)
    mcts.muzero_policy(model.root(batch_size, 0), model, 17)
    assert model.calls == [batch_size] * 17
    torch_model = TorchMLP(2)
    calls: list[int] = []

    def counting(embedding: torch.Tensor, action: torch.Tensor) -> Any:
        calls.append(len(action))
        assert embedding.shape == (batch_size, 6)
        return torch_model(embedding, action)

    mcts.muzero_policy(torch_model.root(batch_size, 0), counting, 9, max_depth=2)
    assert calls == [batch_size] * 9


def test_embedding_store_and_tree_structure() -> None:
    model = HashModel(3, 0.9)
    root = model.root(2, seed=2)
    out = mcts.muzero_policy(root, model, 15, dirichlet_fraction=0.0)
    tree = out.tree
    for b in range(2):
        for node in range(1, 16):
            parent, action = tree.parents[b, node], tree.action_from_parent[b, node]
            assert tree.children[b, parent, action] == node
            assert tree.depth[b, node] == tree.depth[b, parent] + 1
            _, expected = model(tree.embeddings[b, parent][None], np.array([action], dtype=np.int64))
            np.testing.assert_array_equal(tree.embeddings[b, node], expected[0])
            # a node's visits = 1 (its own evaluation) + its children's visits
            kids = tree.children[b, node][tree.children[b, node] >= 0]
            assert tree.visits[b, node] == 1 + tree.visits[b, kids].sum()


def test_docstring_example_runs() -> None:
    """The module docstring's standalone example runs and gives what its comments say."""
    doc = mcts.__doc__ or ""
    example = doc.split("Example (a tiny MLP model used as ``recurrent_fn``)::")[1]
    code = "\n".join(line[4:] for line in example.splitlines() if line.startswith("    ") or not line.strip())
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    result = namespace["result"]
    assert result.action.shape == (4,) and result.action.dtype == np.int64
    np.testing.assert_array_equal(result.visit_counts.sum(axis=1), 16)


def test_timings() -> None:
    model = HashModel(3, 0.9)
    timings = mcts.SearchTimings()
    mcts.muzero_policy(model.root(2, 0), model, 5, timings=timings)
    mcts.muzero_policy(model.root(2, 0), model, 5, timings=timings)
    assert timings.searches == 2 and timings.simulations == 10
    assert 0.0 < timings.network_s < timings.total_s
    assert 0.0 < timings.kernel_s < timings.total_s
    assert 0.0 < timings.bookkeeping_fraction < 1.0
    timings.reset()
    assert timings.total_s == 0.0 and timings.searches == 0


# ---------------------------------------------------------------------------------------------------------------------
# Action selection
# ---------------------------------------------------------------------------------------------------------------------


def test_select_action_temperature_zero() -> None:
    counts = np.array([[3, 7, 7, 0], [5, 1, 5, 5], [0, 0, 9, 1]])
    np.testing.assert_array_equal(mcts.select_action(counts, 0.0), [1, 0, 2])
    prior = np.array([[0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.5, 0.2], [0.3, 0.3, 0.2, 0.2]])
    np.testing.assert_array_equal(mcts.select_action(counts, 0.0, prior=prior), [2, 2, 2])
    invalid = np.array([[False, True, False, False], [True, False, True, False], [False, False, True, False]])
    np.testing.assert_array_equal(mcts.select_action(counts, 0.0, invalid_actions=invalid), [2, 3, 3])
    weights = mcts.temperature_weights(counts, 0.0, invalid)
    np.testing.assert_array_equal(weights, np.eye(4)[[2, 3, 3]])


def test_select_action_distribution() -> None:
    draws = 40_000
    counts = np.tile([10, 0, 30, 20], (draws, 1))
    invalid = np.tile([False, False, False, True], (draws, 1))
    rng = np.random.default_rng(0)
    for temperature, expected in [(1.0, [0.25, 0.0, 0.75]), (0.5, [0.1, 0.0, 0.9]), (2.0, None)]:
        if expected is None:
            w = np.sqrt([10.0, 0.0, 30.0])
            expected = list(w / w.sum())
        actions = mcts.select_action(counts, temperature, rng, invalid_actions=invalid)
        freq = np.bincount(actions, minlength=4) / draws
        assert freq[3] == 0.0 and freq[1] == 0.0
        sigma = np.sqrt(np.array(expected) * (1 - np.array(expected)) / draws)
        np.testing.assert_allclose(freq[:3], expected, atol=float(5 * sigma.max()) + 1e-12)
        np.testing.assert_allclose(mcts.temperature_weights(counts[:1], temperature, invalid[:1])[0, :3], expected)


def test_select_action_small_temperature_and_edge_cases() -> None:
    rng = np.random.default_rng(1)
    counts = np.tile([40, 41, 3], (500, 1))
    assert np.all(mcts.select_action(counts, 1e-3, rng) == 1)  # 41^1000 / 40^1000 overflows without log space
    tied = np.tile([5, 9, 9], (4000, 1))
    freq = np.bincount(mcts.select_action(tied, 1e-3, rng), minlength=3) / 4000
    np.testing.assert_allclose(freq, [0.0, 0.5, 0.5], atol=0.04)  # 5 sigma: sqrt(0.5 * 0.5 / 4000) = 0.0079
    # legal actions without visits: uniform over the legal ones
    weights = mcts.temperature_weights(np.array([[0, 0, 4]]), 1.0, np.array([[False, False, True]]))
    np.testing.assert_allclose(weights, [[0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="temperature"):
        mcts.select_action(counts, -1.0, rng)
    with pytest.raises(ValueError, match="shape"):
        mcts.select_action(np.array([1, 2]), 1.0, rng)
    with pytest.raises(ValueError, match="no legal action"):
        mcts.select_action(np.array([[1, 2]]), 1.0, rng, invalid_actions=np.array([[True, True]]))


def test_search_action_follows_weights_and_legality() -> None:
    model = HashModel(4, 0.9)
    root = model.root(300, seed=5)
    invalid = _random_invalid(np.random.default_rng(2), 300, 4)
    out = mcts.muzero_policy(root, model, 10, invalid_actions=invalid, rng=np.random.default_rng(0))
    assert np.all(~invalid[np.arange(300), out.action])
    assert np.all(out.action_weights[np.arange(300), out.action] > 0)
    np.testing.assert_allclose(out.action_weights, out.visit_probs)  # temperature 1
    np.testing.assert_allclose(out.visit_probs, out.visit_counts / 10)
    greedy = mcts.muzero_policy(root, model, 10, invalid_actions=invalid, temperature=0.0, rng=np.random.default_rng(0))
    expected = mcts.select_action(greedy.visit_counts, 0.0, invalid_actions=invalid, prior=greedy.root_prior)
    np.testing.assert_array_equal(greedy.action, expected)
    assert np.all(greedy.visit_counts[np.arange(300), greedy.action] == greedy.visit_counts.max(axis=1))


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------------


def _bad_output(field: str, value: Any) -> Any:
    model = HashModel(3, 1.0)

    def recurrent_fn(embedding: np.ndarray, action: np.ndarray) -> Any:
        out, nxt = model(embedding, action)
        if field == "embedding":
            return out, value(nxt)
        return out._replace(**{field: value(getattr(out, field))}), nxt

    return recurrent_fn


@pytest.mark.parametrize("name", ["prior_logits", "value", "reward", "discount"])
def test_non_finite_network_outputs_raise(name: str) -> None:
    root = HashModel(3, 1.0).root(2, 0)

    def poison(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[1] = np.nan if name != "reward" else np.inf
        return x

    with pytest.raises(ValueError, match=f"non-finite {name}"):
        mcts.muzero_policy(root, _bad_output(name, poison), 3)


@pytest.mark.parametrize("pb_c_init", [-1e-9, -1.25, np.nan, np.inf, -np.inf])
def test_pb_c_init_must_be_finite_and_non_negative(pb_c_init: float) -> None:
    """c1 < 0 would make the exploration term negative at small visit counts (pUCT assumes c1 >= 0); non-finite c1 makes
    every score non-finite."""
    model = HashModel(3, 1.0)
    with pytest.raises(ValueError, match="pb_c_init must be a finite number >= 0"):
        mcts.muzero_policy(model.root(2, 0), model, 3, pb_c_init=pb_c_init)
    mcts.muzero_policy(model.root(2, 0), model, 3, pb_c_init=0.0)  # c1 = 0 is allowed: the log term stays >= 0


@pytest.mark.parametrize("pb_c_base", [0.0, -1.0, np.nan, np.inf])
def test_pb_c_base_must_be_finite_and_positive(pb_c_base: float) -> None:
    model = HashModel(3, 1.0)
    with pytest.raises(ValueError, match="pb_c_base must be a finite number > 0"):
        mcts.muzero_policy(model.root(2, 0), model, 3, pb_c_base=pb_c_base)


def test_bad_inputs_raise() -> None:
    model = HashModel(3, 1.0)
    root = model.root(2, 0)
    for sims in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match="num_simulations"):
            mcts.muzero_policy(root, model, sims)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_depth"):
        mcts.muzero_policy(root, model, 3, max_depth=0)
    with pytest.raises(ValueError, match="prior_logits"):
        mcts.muzero_policy(root._replace(prior_logits=np.zeros(3)), model, 3)
    with pytest.raises(ValueError, match=r"root\.value"):
        mcts.muzero_policy(root._replace(value=np.zeros(3)), model, 3)
    with pytest.raises(ValueError, match="embedding"):
        mcts.muzero_policy(root._replace(embedding=np.zeros((3, 1))), model, 3)
    with pytest.raises(ValueError, match="invalid_actions"):
        mcts.muzero_policy(root, model, 3, invalid_actions=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"roots \[1\] have no legal action"):
        mcts.muzero_policy(root, model, 3, invalid_actions=np.array([[False, True, True], [True, True, True]]))
    nan_logits = root.prior_logits.copy()
    nan_logits[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        mcts.muzero_policy(root._replace(prior_logits=nan_logits), model, 3)
    # -inf logits on illegal actions are a common masking convention and allowed
    masked = root.prior_logits.copy()
    masked[0, 1] = -np.inf
    invalid = np.array([[False, True, False], [False, False, False]])
    out = mcts.muzero_policy(root._replace(prior_logits=masked), model, 3, invalid_actions=invalid)
    assert out.visit_counts[0, 1] == 0
    with pytest.raises(ValueError, match=r"root\.value"):
        mcts.muzero_policy(root._replace(value=np.array([0.0, np.inf])), model, 3)
    with pytest.raises(ValueError, match="dirichlet_fraction"):
        mcts.muzero_policy(root, model, 3, dirichlet_fraction=1.5)
    with pytest.raises(ValueError, match="dirichlet_alpha"):
        mcts.muzero_policy(root, model, 3, dirichlet_alpha=0.0)
    with pytest.raises(ValueError, match="temperature"):
        mcts.muzero_policy(root, model, 3, temperature=-0.5)
    with pytest.raises(ValueError, match="pb_c"):
        mcts.muzero_policy(root, model, 3, pb_c_base=0.0)
    with pytest.raises(ValueError, match=r"value of shape \(2, 1\)"):
        mcts.muzero_policy(root, _bad_output("value", lambda x: x[:, None]), 3)
    with pytest.raises(ValueError, match=r"prior_logits of shape \(2, 2\)"):
        mcts.muzero_policy(root, _bad_output("prior_logits", lambda x: x[:, :2]), 3)
    with pytest.raises(ValueError, match="an embedding of shape"):
        mcts.muzero_policy(root, _bad_output("embedding", lambda x: np.concatenate([x, x], axis=1)), 3)


# ---------------------------------------------------------------------------------------------------------------------
# The search benchmark's tree shapes and models (benchmarks/bench_mcts.py)
# ---------------------------------------------------------------------------------------------------------------------


def test_bench_tree_shape_matches_search_tree() -> None:
    """The benchmark's depths from parent indices (used for both searches' trees) equal our tree's own depths."""
    from benchmarks import bench_mcts

    # hand-made: root 0; 1, 3 under the root; 2 under 1; node 4 never created (parent -1)
    parents = np.array([[-1, 0, 1, 0, -1]])
    np.testing.assert_array_equal(bench_mcts.tree_depths(parents), [[0, 1, 2, 1, 0]])
    created = np.array([[True, True, True, True, False]])
    shape = bench_mcts.tree_shape(parents, created, np.array([[0, 2, 1]]))
    assert shape == {"max_depth": 2.0, "mean_depth": 4.0 / 3.0, "root_children": 2.0}
    model = HashModel(3, 0.9)
    out = mcts.muzero_policy(model.root(6, seed=1), model, 30, max_depth=4)
    tree = out.tree
    np.testing.assert_array_equal(bench_mcts.tree_depths(tree.parents), tree.depth)
    shape = bench_mcts.tree_shape(tree.parents, tree.visits > 0, tree.child_visits[:, 0])
    assert shape["max_depth"] == out.max_depth.mean()
    created = tree.visits[:, 1:] > 0  # simulations stopped by the depth limit create no node
    assert not created.all()
    assert shape["mean_depth"] == tree.depth[:, 1:][created].mean()
    assert shape["root_children"] == (out.visit_counts > 0).sum(axis=1).mean()


@pytest.mark.parametrize("name", ["headline", "chain"])
def test_bench_models_match_their_definition(name: str) -> None:
    """The torch and jax versions of each benchmark model compute the numpy definition (float32 rounding only)."""
    pytest.importorskip("mctx")
    from benchmarks import bench_mcts

    spec = bench_mcts.MODELS[name]
    for num_actions in bench_mcts.NUM_ACTIONS:
        assert bench_mcts.check_same_model(num_actions, spec) <= bench_mcts.MODEL_TOLERANCE
    weights = bench_mcts.make_weights(18, spec)
    embedding = bench_mcts.make_roots(8, weights, spec)["embedding"]
    if spec.hidden == "minmax":  # the paper's scaling: every hidden state spans [0, 1]
        np.testing.assert_array_equal(embedding.min(axis=1), 0.0)
        np.testing.assert_array_equal(embedding.max(axis=1), 1.0)
