"""SumTree against brute force: numpy sums, minima, cumsum + searchsorted, and sampling frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_frontier.common.sum_tree import SumTree

# importance weights are computed in float64 (relative error ~1e-15) and rounded once to float32, which moves
# them by at most eps / 2 relative: one float32 eps is a bound with margin, on any CPU
F32_CAST_RTOL = float(np.finfo(np.float32).eps)


def brute_find(leaves: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Leaf i with cumsum[i-1] <= m < cumsum[i] (the reference the tree must match)."""
    return np.searchsorted(np.cumsum(leaves), masses, side="right")


def chi2_threshold(dof: int, z: float = 4.75) -> float:
    """Upper quantile of a chi-square with ``dof`` degrees of freedom (Wilson-Hilferty), z=4.75 -> p ~ 1e-6."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z * math.sqrt(a)) ** 3


def chi2_stat(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


# ---------------------------------------------------------------------------------------------------------------
# Construction and bookkeeping


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 7, 8, 100, 1000])
def test_totals_minima_and_len_match_brute_force(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    assert len(tree) == 0 and tree.total() == 0.0 and tree.min() == math.inf
    leaves = np.zeros(capacity)
    seen: set[int] = set()
    for _ in range(20):
        idx = rng.integers(0, capacity, size=rng.integers(1, 2 * capacity + 1))
        prio = np.asarray(rng.exponential(size=idx.shape[0]))
        tree.update(idx, prio)
        for i, p in zip(idx, prio, strict=True):  # sequential reference: last write wins
            leaves[i] = p
        seen.update(idx.tolist())
        assert len(tree) == len(seen)
        np.testing.assert_allclose(tree.total(), leaves.sum(), rtol=1e-12)
        assert tree.min() == leaves[sorted(seen)].min()
        np.testing.assert_array_equal(tree.get(np.arange(capacity)), leaves)


def test_non_power_of_two_capacity_never_returns_padding() -> None:
    tree = SumTree(5)  # 8 leaves internally, 3 of them padding
    tree.update(np.arange(5), np.ones(5))
    assert tree.capacity == 5
    masses = np.linspace(0.0, tree.total(), 1001)
    idx = tree.find(masses)
    assert idx.max() == 4 and idx.min() == 0
    np.testing.assert_array_equal(idx[:-1], brute_find(np.ones(5), masses[:-1]))
    assert tree.sample(4096, np.random.default_rng(0)).max() <= 4
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        tree.update([5], [1.0])


def test_capacity_one() -> None:
    tree = SumTree(1)
    with pytest.raises(ValueError, match="empty"):
        tree.sample(1, np.random.default_rng(0))
    tree.update([0], [3.0])
    assert len(tree) == 1 and tree.total() == 3.0 and tree.min() == 3.0
    np.testing.assert_array_equal(tree.sample(7, np.random.default_rng(0)), np.zeros(7))
    np.testing.assert_array_equal(tree.find([0.0, 1.5, 3.0]), np.zeros(3))
    np.testing.assert_array_equal(tree.importance_weights([0, 0], beta=0.7), np.ones(2, dtype=np.float32))
    tree.update([0], [0.5])
    assert len(tree) == 1 and tree.total() == 0.5 and tree.min() == 0.5


def test_duplicate_indices_last_one_wins() -> None:
    tree = SumTree(8)
    tree.update([3, 1, 3, 3, 1], [5.0, 2.0, 7.0, 4.0, 9.0])
    np.testing.assert_array_equal(tree.get([1, 3]), [9.0, 4.0])
    assert len(tree) == 2
    assert tree.total() == 13.0 and tree.min() == 4.0


def test_min_decreases_and_increases_with_overwrites() -> None:
    tree = SumTree(16)
    tree.update(np.arange(16), np.arange(1.0, 17.0))
    assert tree.min() == 1.0
    tree.update([0], [100.0])  # the old minimum is overwritten: min must move up
    assert tree.min() == 2.0
    tree.update([9], [0.25])
    assert tree.min() == 0.25


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 40),
    batches=st.lists(
        st.lists(
            st.tuples(st.integers(0, 10_000), st.one_of(st.just(0.0), st.floats(0.0, 1e3, allow_nan=False))),
            min_size=0,
            max_size=30,
        ),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_property_random_update_sequences(capacity: int, batches: list[list[tuple[int, float]]], data: st.DataObject) -> None:
    min_priority = 1e-6
    tree = SumTree(capacity, min_priority=min_priority)
    reference: dict[int, float] = {}
    for batch in batches:
        idx = np.array([i % capacity for i, _ in batch], dtype=np.int64)
        prio = np.array([p for _, p in batch], dtype=np.float64)
        tree.update(idx, prio)
        for i, p in zip(idx.tolist(), prio.tolist(), strict=True):
            reference[i] = max(p, min_priority)
    leaves = np.zeros(capacity)
    for i, p in reference.items():
        leaves[i] = p
    assert len(tree) == len(reference)
    np.testing.assert_array_equal(tree.get(np.arange(capacity)), leaves)
    if not reference:
        assert tree.total() == 0.0 and tree.min() == math.inf
        return
    np.testing.assert_allclose(tree.total(), leaves.sum(), rtol=1e-12)
    assert tree.min() == min(reference.values())
    # Prefix-sum search agrees with cumsum + searchsorted away from the float round-off at the boundaries.
    u = np.array(data.draw(st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=20)))
    masses = u * tree.total()
    found = tree.find(masses)
    assert np.all(tree.get(found) > 0.0)
    cum = np.cumsum(leaves)
    expected = brute_find(leaves, masses)
    safe = np.min(np.abs(cum[None, :] - masses[:, None]), axis=1) > 1e-9 * tree.total()
    np.testing.assert_array_equal(found[safe], expected[safe])


# ---------------------------------------------------------------------------------------------------------------
# Prefix search and sampling


def test_find_matches_searchsorted() -> None:
    rng = np.random.default_rng(1)
    capacity = 777
    leaves = rng.exponential(size=capacity)
    leaves[rng.random(capacity) < 0.3] = 0.0  # holes: leaves never set
    set_idx = np.flatnonzero(leaves)
    tree = SumTree(capacity)
    tree.update(set_idx, leaves[set_idx])
    masses = rng.random(5000) * tree.total()
    found = tree.find(masses)
    np.testing.assert_array_equal(found, brute_find(leaves, masses))
    assert np.all(leaves[found] > 0.0)


def test_find_at_the_total_returns_last_set_leaf() -> None:
    tree = SumTree(10)
    tree.update([0, 2, 4], [1.0, 2.0, 3.0])  # leaves 5..9 (and padding 10..15) never set
    np.testing.assert_array_equal(tree.find([0.0, 0.999, 1.0, 2.999, 3.0, 6.0]), [0, 0, 2, 2, 4, 4])
    with pytest.raises(ValueError, match="masses"):
        tree.find([6.0 + 1e-9])
    with pytest.raises(ValueError, match="masses"):
        tree.find([-1e-12])
    with pytest.raises(ValueError, match="masses"):
        tree.find([np.nan])


def test_descent_is_robust_to_round_off() -> None:
    # Huge dynamic range: the tiny leaves are absorbed by float64 sums, so node sums and the masses disagree
    # by round-off; every sample must still be a leaf that was set.
    capacity = 1024
    tree = SumTree(capacity, min_priority=1e-12)
    rng = np.random.default_rng(2)
    set_idx = rng.choice(capacity, size=300, replace=False)
    prio = 10.0 ** rng.uniform(-12, 16, size=300)
    prio[:5] = 0.0
    tree.update(set_idx, prio)
    is_set = np.zeros(capacity, dtype=bool)
    is_set[set_idx] = True
    for stratified in (True, False):
        for _ in range(20):
            assert np.all(is_set[tree.sample(512, rng, stratified=stratified)])
    # Masses right at the total and just below it.
    total = tree.total()
    masses = np.array([total, np.nextafter(total, 0.0), total * (1 - 1e-16), total * (1 - 1e-12)])
    assert np.all(is_set[tree.find(masses)])


def test_descent_never_steps_into_an_empty_subtree() -> None:
    # Found by search: total = fl(fl(p0 + p3) + p4), and the mass just below it, after subtracting the left sum
    # at the root, is not below the right subtree's left child (leaf 4) by round-off. A plain "mass < left ?"
    # descent then steps into leaf 5..7, which were never set.
    tree = SumTree(8)
    tree.update([0, 3, 4], [0.002818231809479667, 0.30754893187165944, 0.5364120853904737])
    total = tree.total()
    np.testing.assert_array_equal(tree.find([total, np.nextafter(total, 0.0)]), [4, 4])


@pytest.mark.parametrize("stratified", [True, False])
def test_sampling_frequencies_match_priorities(stratified: bool) -> None:
    rng = np.random.default_rng(3)
    capacity = 50
    leaves = rng.uniform(0.1, 5.0, size=capacity)
    leaves[[3, 17, 41]] = 0.0  # never set
    set_idx = np.flatnonzero(leaves)
    tree = SumTree(capacity)
    tree.update(set_idx, leaves[set_idx])
    n_batches, batch = 400, 256
    samples = np.concatenate([tree.sample(batch, rng, stratified=stratified) for _ in range(n_batches)])
    counts = np.bincount(samples, minlength=capacity)
    assert counts[[3, 17, 41]].sum() == 0
    probs = leaves[set_idx] / leaves.sum()
    stat = chi2_stat(counts[set_idx].astype(np.float64), probs)
    assert stat < chi2_threshold(len(set_idx) - 1), stat
    # Sanity check that the test has power: the same counts against uniform probabilities must be rejected.
    uniform = np.full(len(set_idx), 1.0 / len(set_idx))
    assert chi2_stat(counts[set_idx].astype(np.float64), uniform) > chi2_threshold(len(set_idx) - 1)


def test_stratified_sampling_hits_each_segment() -> None:
    rng = np.random.default_rng(4)
    capacity = 300
    leaves = rng.exponential(size=capacity)
    tree = SumTree(capacity)
    tree.update(np.arange(capacity), leaves)
    cum = np.cumsum(leaves)
    lo, hi = cum - leaves, cum  # leaf i covers [lo_i, hi_i)
    for batch in (1, 7, 64, 256):
        seg = tree.total() / batch
        for _ in range(10):
            idx = tree.sample(batch, rng, stratified=True)
            k = np.arange(batch)
            # Sample k must come from segment k: its leaf interval overlaps [k * seg, (k + 1) * seg).
            tol = 1e-9 * tree.total()
            assert np.all(lo[idx] <= (k + 1) * seg + tol) and np.all(hi[idx] >= k * seg - tol)
            assert np.all(np.diff(idx) >= 0)  # segments are ordered, so are the leaves


def test_stratified_equal_priorities_give_a_permutation() -> None:
    # With N equal priorities and batch N, each segment is exactly one leaf.
    tree = SumTree(64)
    tree.update(np.arange(64), np.full(64, 0.5))
    idx = tree.sample(64, np.random.default_rng(5), stratified=True)
    np.testing.assert_array_equal(idx, np.arange(64))


def test_unset_leaves_are_never_sampled() -> None:
    tree = SumTree(1000)
    set_idx = np.array([0, 13, 500, 998])
    tree.update(set_idx, [1e-3, 2.0, 1e-3, 5.0])
    rng = np.random.default_rng(6)
    samples = np.concatenate([tree.sample(256, rng, stratified=s) for s in (True, False) for _ in range(50)])
    assert set(np.unique(samples).tolist()) <= set(set_idx.tolist())


def test_zero_priority_is_floored_but_explicit_priorities_dominate() -> None:
    min_priority = 1e-6
    tree = SumTree(8, min_priority=min_priority)
    tree.update(np.arange(8), [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(tree.get([0, 4]), [min_priority, min_priority])
    assert tree.min() == min_priority
    np.testing.assert_allclose(tree.total(), 6.0 + 2 * min_priority, rtol=1e-15)
    rng = np.random.default_rng(7)
    samples = np.concatenate([tree.sample(256, rng, stratified=False) for _ in range(400)])  # 102_400 draws
    counts = np.bincount(samples, minlength=8)
    # Expected count of the two floored leaves together: 102_400 * 2e-6 / 6 ~ 0.03.
    assert counts[[0, 4]].sum() <= 2
    explicit = counts[[1, 2, 3, 5, 6, 7]].astype(np.float64)
    assert chi2_stat(explicit, np.full(6, 1.0 / 6.0)) < chi2_threshold(5)
    # Values below the floor are floored too; values above are stored as given.
    tree.update([1, 2], [1e-9, 2e-6])
    np.testing.assert_array_equal(tree.get([1, 2]), [min_priority, 2e-6])


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -1.0, -1e-300])
def test_bad_priorities_raise_without_modifying_the_tree(bad: float) -> None:
    tree = SumTree(6)
    tree.update(np.arange(4), [1.0, 2.0, 3.0, 4.0])
    before = (tree.get(np.arange(6)), tree.total(), tree.min(), len(tree))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update([1, 4, 5], [10.0, bad, 20.0])  # the good entries of the batch must not be written either
    after = (tree.get(np.arange(6)), tree.total(), tree.min(), len(tree))
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:] == before[1:]


def test_other_bad_inputs_raise() -> None:
    tree = SumTree(4)
    with pytest.raises(ValueError, match="empty"):
        tree.sample(8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        tree.find([0.0])
    with pytest.raises(ValueError, match="empty"):
        tree.importance_weights([0], beta=0.5)
    with pytest.raises(ValueError, match="indices but"):
        tree.update([0, 1], [1.0])
    with pytest.raises(ValueError, match="integers"):
        tree.update([0.5], [1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        tree.update([-1], [1.0])
    with pytest.raises(ValueError, match="total stays finite"):
        tree.update([0], [1e308])
    assert len(tree) == 0 and tree.total() == 0.0
    tree.update([0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="batch_size"):
        tree.sample(0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        tree.sample(4, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="never set"):
        tree.importance_weights([0, 2], beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        tree.importance_weights([0], beta=-0.1)
    with pytest.raises(ValueError, match="normalize"):
        tree.importance_weights([0], beta=0.5, normalize="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)
    with pytest.raises(ValueError, match="min_priority"):
        SumTree(4, min_priority=0.0)
    tree.update([], [])  # an empty batch is a no-op
    assert len(tree) == 2 and tree.total() == 3.0


# ---------------------------------------------------------------------------------------------------------------
# Importance-sampling weights


def test_importance_weights_match_the_formula() -> None:
    rng = np.random.default_rng(8)
    capacity = 200
    tree = SumTree(capacity)
    n_set = 150
    leaves = rng.uniform(0.01, 3.0, size=n_set)
    tree.update(np.arange(n_set), leaves)
    idx = tree.sample(64, rng)
    probs = leaves / leaves.sum()  # P(i), Eq. 1
    for beta in (0.0, 0.4, 0.6, 1.0):
        raw_all = (n_set * probs) ** -beta  # (N P(i))^-beta for every stored item
        # Tree normalization: divide by the largest weight over all stored items.
        expected = raw_all[idx] / raw_all.max()
        w = tree.importance_weights(idx, beta)
        assert w.dtype == np.float32 and w.shape == (64,)
        np.testing.assert_allclose(w, expected, rtol=F32_CAST_RTOL)
        assert w.max() <= 1.0
        # The item of smallest priority gets exactly the max weight 1.
        assert tree.importance_weights([int(np.argmin(leaves))], beta)[0] == 1.0
        # Batch normalization: max over the batch is exactly 1.
        wb = tree.importance_weights(idx, beta, normalize="batch")
        np.testing.assert_allclose(wb, raw_all[idx] / raw_all[idx].max(), rtol=F32_CAST_RTOL)
        assert wb.max() == 1.0
        # Raw weights: N matters, default N = len(tree), or the N passed in.
        np.testing.assert_allclose(tree.importance_weights(idx, beta, normalize=None), raw_all[idx], rtol=F32_CAST_RTOL)
        np.testing.assert_allclose(
            tree.importance_weights(idx, beta, n=1000, normalize=None), (1000 * probs[idx]) ** -beta, rtol=F32_CAST_RTOL
        )
    np.testing.assert_array_equal(tree.importance_weights(idx, 0.0), np.ones(64, dtype=np.float32))
    # Passing N explicitly does not change normalized weights (N cancels).
    np.testing.assert_allclose(
        tree.importance_weights(idx, 0.6, n=10**6), tree.importance_weights(idx, 0.6), rtol=F32_CAST_RTOL
    )


def test_importance_weights_with_floored_item() -> None:
    tree = SumTree(4, min_priority=1e-3)
    tree.update([0, 1, 2], [0.0, 1.0, 4.0])
    # w_max comes from the floored item: w_i = (p_min / p_i)^beta.
    np.testing.assert_allclose(
        tree.importance_weights([0, 1, 2], beta=0.5), [1.0, (1e-3) ** 0.5, (1e-3 / 4.0) ** 0.5], rtol=F32_CAST_RTOL
    )


def test_remove_unsets_leaves() -> None:
    rng = np.random.default_rng(3)
    tree = SumTree(10)
    prio = rng.uniform(0.5, 2.0, size=10)
    tree.update(np.arange(10), prio)
    removed = np.array([0, 3, 4, 9])
    tree.remove(removed)
    tree.remove(np.array([3]))  # removing twice is harmless
    kept = np.setdiff1d(np.arange(10), removed)
    assert len(tree) == kept.size
    assert np.isclose(tree.total(), prio[kept].sum())
    assert np.isclose(tree.min(), prio[kept].min())
    assert np.all(tree.get(removed) == 0.0)
    samples = tree.sample(4096, rng)
    assert not np.isin(samples, removed).any()
    tree.update(np.array([3]), np.array([1.0]))
    assert len(tree) == kept.size + 1
    tree.remove(np.arange(10))
    assert len(tree) == 0 and tree.total() == 0.0
    with pytest.raises(ValueError):
        tree.sample(1, rng)
