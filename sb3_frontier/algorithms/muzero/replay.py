"""MuZero's replay: game segments in a flat ring of positions, prioritized sampling, n-step value targets.

A *position* is one observation of a game with what the search said there (root value, visit distribution, legal
actions) and the transition taken from it (action, reward, whether bootstrapping stops there). Games are stored as
contiguous *segments* of positions. Long games are cut into segments that carry ``unroll_steps + td_steps``
positions of look-ahead, so every sampleable position has all it needs for its K-step unroll and n-step targets
inside its own segment.

Targets (Schrittwieser et al. 2020, Appendix G; the pseudocode's ``make_target``):

- value ``z_t = sum_{i<m} gamma^i u_{t+i} + gamma^m v_{t+m}`` with ``m = n`` unless the game ends, a life is lost
  (``LifeLoss`` "roll": bootstrapping stops at that transition) or the segment ends first; ``v`` is the stored search
  value (or, with a target network, its value of the observation at ``t+m``, see :class:`MuZeroBatch`);
  truncation is not termination: the stored value of the final observation is bootstrapped; after a termination
  the value target is 0 (absorbing state); for two-player games ``z_t`` is the final outcome seen by the player to
  move at ``t``;
- reward target of unroll step ``k >= 1``: the reward of the transition ``(s_{t+k-1}, a_{t+k-1})`` (the
  initial inference has none), 0 after a termination;
- policy target: the visit distribution of the search at ``t+k``; no target past the game's end.

Sampling is proportional to ``|v_search - z|^alpha`` (a sum tree: O(log N) per sample, whatever the replay size).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from sb3_frontier.common.observations import Obs, obs_take, obs_write, obs_zeros
from sb3_frontier.common.prioritized_ring import PrioritizedRing
from sb3_frontier.common.returns import n_step_parts
from sb3_frontier.common.sum_tree import SumTree


@dataclass
class GameSegment:
    """
    A contiguous piece of one game, ready for the replay (all arrays have the same first dimension L).

    :param observations: [L, *obs_shape] (or a dict of such arrays)
    :param actions: [L] action taken from each position (-1 where no transition was taken: a final observation)
    :param rewards: [L] reward of that transition
    :param stops: [L] bootstrapping stops after that transition (termination or life loss)
    :param root_values: [L] value of the search at each position (for a final observation: 0 if terminal,
        otherwise the network's value estimate, bootstrapped when the game was truncated)
    :param policies: [L, A] visit distributions of the search (zeros where no search ran)
    :param legal: [L, A] legal actions at each position
    :param n_starts: positions ``[0, n_starts)`` may be sampled as unroll starts (the rest is look-ahead or a final
        observation)
    :param terminal: the last position is a terminal observation
    :param value_targets: [L] fixed value targets (two-player games: the final outcome for the player to move)
    """

    observations: Obs
    actions: np.ndarray
    rewards: np.ndarray
    stops: np.ndarray
    root_values: np.ndarray
    policies: np.ndarray
    legal: np.ndarray
    n_starts: int
    terminal: bool
    value_targets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def has_transition(self) -> np.ndarray:
        """[L] whether a transition was taken from each position."""
        return self.actions >= 0

    @property
    def has_policy(self) -> np.ndarray:
        """[L] whether a search ran at each position."""
        return self.policies.sum(axis=1) > 0


@dataclass
class MuZeroBatch:
    """
    A sampled batch of K-step unrolls (numpy, batch-major; ``K = unroll_steps``).

    Value targets are ``value_prefix + bootstrap_discount * v(bootstrap)``, where ``v(bootstrap)`` is either
    ``bootstrap_values`` (the stored search values) or a target network's value of the observations at
    ``bootstrap_indices`` (read them with :meth:`MuZeroReplayBuffer.observations_at`).

    :param indices: [B] replay positions of the unroll starts (for priority updates)
    :param weights: [B] importance-sampling weights (max-normalised)
    :param observations: [B, *obs_shape] observations at the starts
    :param actions: [B, K] actions fed to the dynamics (uniform random past the game's end)
    :param rewards: [B, K+1] reward targets (column 0 unused), ``reward_mask`` [B, K+1]
    :param value_prefix: [B, K+1] discounted reward sums of the value targets
    :param bootstrap_discount: [B, K+1] ``gamma^m`` of the bootstrap value, 0 without bootstrap
    :param bootstrap_values: [B, K+1] stored search values at the bootstrap positions
    :param bootstrap_indices: [B, K+1] replay positions of the bootstrap observations (-1: none)
    :param value_mask: [B, K+1]
    :param policies: [B, K+1, A] policy targets, ``policy_mask`` [B, K+1]
    :param positions: [B, K+1] replay positions of the unrolled states (-1 past the segment's end)
    :param legal: [B, K+1, A] legal actions there (for Reanalyze's fresh searches)
    """

    indices: np.ndarray
    weights: np.ndarray
    observations: Obs
    actions: np.ndarray
    rewards: np.ndarray
    reward_mask: np.ndarray
    value_prefix: np.ndarray
    bootstrap_discount: np.ndarray
    bootstrap_values: np.ndarray
    bootstrap_indices: np.ndarray
    value_mask: np.ndarray
    policies: np.ndarray
    policy_mask: np.ndarray
    positions: np.ndarray
    legal: np.ndarray

    def shard(self, index: slice) -> MuZeroBatch:
        """The unrolls ``index`` (a slice of the batch; views, no copies)."""
        changes = {
            field.name: getattr(self, field.name)[index] for field in dataclasses.fields(self) if field.name != "observations"
        }
        changes["observations"] = obs_take(self.observations, index)
        return dataclasses.replace(self, **changes)

    def value_targets(self, bootstrap_values: np.ndarray | None = None) -> np.ndarray:
        """
        n-step value targets ``z`` [B, K+1].

        :param bootstrap_values: [B, K+1] values of the bootstrap observations (default: the stored search values)
        :return: the targets (0 where there is no bootstrap and no reward)
        """
        values = self.bootstrap_values if bootstrap_values is None else bootstrap_values
        return self.value_prefix + self.bootstrap_discount * np.where(self.bootstrap_indices >= 0, values, 0.0)


def n_step_targets(
    rewards: np.ndarray, stops: np.ndarray, terminal: bool, td_steps: int, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    The parts of the n-step value target ``z_t = sum_{i<m} gamma^i u_{t+i} + gamma^m v_{t+m}`` of every position of
    a segment (MuZero Appendix G), from the time-major :func:`~sb3_frontier.common.returns.n_step_parts`.

    ``m`` is ``td_steps``, shortened when bootstrapping stops (a termination or a life loss: no bootstrap at all) or
    when the segment ends (bootstrap from its last position, unless that is a terminal observation).

    :param rewards: [L] rewards of the transitions
    :param stops: [L] bootstrapping stops after the transition
    :param terminal: the segment's last position is a terminal observation
    :param td_steps: n
    :param gamma: discount
    :return: prefix [L] (discounted reward sums), discount [L] (``gamma^m`` or 0), bootstrap offsets [L]
        (segment index of the bootstrap position, -1 for none) and valid [L] (a value target exists)
    """
    length = rewards.shape[0]
    # Transitions 0 .. T-1 lead to positions 1 .. T: a segment's last position closes its last usable transition.
    transitions = length - 1
    prefix = np.zeros(length, dtype=np.float64)
    discount = np.zeros(length, dtype=np.float64)
    offsets = np.full(length, -1, dtype=np.int64)
    if transitions > 0:
        step_discounts = gamma * (1.0 - stops[:transitions].astype(np.float64))
        prefix[:transitions], discount[:transitions], boot = n_step_parts(rewards[:transitions], step_discounts, td_steps)
        if terminal:  # the value of a terminal observation is 0
            discount[:transitions] = np.where(boot == length - 1, 0.0, discount[:transitions])
        offsets[:transitions] = np.where(discount[:transitions] > 0, boot, -1)
    valid = np.ones(length, dtype=bool)
    if terminal:  # absorbing: the terminal observation's value target is 0
        discount[length - 1] = 0.0
    else:  # a truncated game's final observation (or a cut segment's last position) has no target of its own
        valid[length - 1] = False
    return prefix, discount, offsets, valid


class MuZeroReplayBuffer:
    """
    Prioritized replay of MuZero game segments in a flat ring of ``buffer_size`` positions
    (:class:`~sb3_frontier.common.prioritized_ring.PrioritizedRing`).

    Positions are addressed by an absolute, ever-increasing index; the ring slot is ``index % buffer_size``. When a
    new segment overwrites the start of an older one, the overwritten positions leave sampling; what is left of the
    older segment stays sampleable (unrolls and targets only read forward, inside their segment).

    :param buffer_size: capacity in positions
    :param observation_space: observation space (Box or Dict)
    :param n_actions: number of actions
    :param unroll_steps: K
    :param td_steps: n of the value targets
    :param gamma: discount
    :param priority_exponent: alpha (0: uniform sampling)
    :param priority_epsilon: added to ``|v - z|`` so that no position becomes unsampleable
    :param two_player: the segments are two-player games (final-outcome value targets)
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        n_actions: int,
        unroll_steps: int = 5,
        td_steps: int = 10,
        gamma: float = 0.997,
        priority_exponent: float = 1.0,
        priority_epsilon: float = 1e-6,
        two_player: bool = False,
    ):
        if unroll_steps < 1 or td_steps < 1:
            raise ValueError(f"unroll_steps (K) and td_steps (n) must be >= 1, got K={unroll_steps}, n={td_steps}")
        self.ring = PrioritizedRing(buffer_size, priority_exponent, priority_epsilon)
        self.buffer_size = self.ring.capacity
        self.observation_space = observation_space
        self.n_actions = int(n_actions)
        self.unroll_steps = int(unroll_steps)
        self.td_steps = int(td_steps)
        self.gamma = float(gamma)
        self.two_player = bool(two_player)
        size = self.buffer_size
        self.observations: Obs = obs_zeros(observation_space, (size,))
        self.actions = np.full(size, -1, dtype=np.int64)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.root_values = np.zeros(size, dtype=np.float32)
        self.policies = np.zeros((size, n_actions), dtype=np.float32)
        self.legal = np.ones((size, n_actions), dtype=bool)
        self.value_prefix = np.zeros(size, dtype=np.float32)
        self.bootstrap_discount = np.zeros(size, dtype=np.float32)
        self.bootstrap_index = np.full(size, -1, dtype=np.int64)  # absolute
        self.value_valid = np.zeros(size, dtype=bool)
        self.segment_end = np.zeros(size, dtype=np.int64)  # absolute, exclusive
        self.segment_terminal = np.zeros(size, dtype=bool)

    @property
    def tree(self) -> SumTree:
        """The sum tree of the sampleable positions' priorities (indexed by slot)."""
        return self.ring.tree

    @property
    def n_written(self) -> int:
        """Absolute index of the next position (positions written so far)."""
        return self.ring.n_written

    def __len__(self) -> int:
        """Number of positions that can be sampled as unroll starts."""
        return len(self.ring)

    def settings(self) -> dict[str, object]:
        """What a model must share with this replay to train on it (spaces and the stored targets' definition)."""
        return {
            "observation_space": self.observation_space,
            "n_actions": self.n_actions,
            "unroll_steps": self.unroll_steps,
            "td_steps": self.td_steps,
            "gamma": self.gamma,
            "two_player": self.two_player,
        }

    # ------------------------------------------------------------------------------------------------------- writing
    def add(self, segment: GameSegment) -> np.ndarray:
        """
        Store a segment and give its start positions their initial priorities ``|v_search - z|^alpha``.

        :param segment: the segment
        :return: [L] absolute indices of its positions
        """
        length = len(segment)
        if length > self.buffer_size:
            raise ValueError(f"A segment of {length} positions does not fit in a replay of {self.buffer_size}")
        if not 0 <= segment.n_starts <= length:
            raise ValueError(f"n_starts={segment.n_starts} must lie in [0, {length}]")
        abs_idx = self.ring.reserve(length)
        start = int(abs_idx[0]) if length > 0 else self.ring.n_written
        slots = self.ring.slots(abs_idx)
        obs_write(self.observations, slots, segment.observations)
        self.actions[slots] = segment.actions
        self.rewards[slots] = segment.rewards
        self.root_values[slots] = segment.root_values
        self.policies[slots] = segment.policies
        self.legal[slots] = segment.legal
        if segment.value_targets is not None:
            prefix = segment.value_targets.astype(np.float64)
            discount = np.zeros(length)
            offsets = np.full(length, -1)
            valid = np.ones(length, dtype=bool)
        else:
            prefix, discount, offsets, valid = n_step_targets(
                segment.rewards, segment.stops, segment.terminal, self.td_steps, self.gamma
            )
        self.value_prefix[slots] = prefix
        self.bootstrap_discount[slots] = discount
        self.bootstrap_index[slots] = np.where(offsets >= 0, start + offsets, -1)
        self.value_valid[slots] = valid
        self.segment_end[slots] = start + length
        self.segment_terminal[slots] = segment.terminal

        n_starts = segment.n_starts
        if n_starts > 0:
            boot_values = np.where(offsets[:n_starts] >= 0, segment.root_values[np.maximum(offsets[:n_starts], 0)], 0.0)
            targets = prefix[:n_starts] + discount[:n_starts] * boot_values
            self.ring.set_priorities(abs_idx[:n_starts], segment.root_values[:n_starts] - targets)
        return abs_idx

    def update_priorities(self, indices: np.ndarray, errors: np.ndarray) -> None:
        """
        New priorities ``(|v - z| + eps)^alpha`` for sampled positions still in the replay.

        :param indices: [B] absolute indices (``MuZeroBatch.indices``)
        :param errors: [B] value errors
        """
        self.ring.update_priorities(indices, errors)

    # ------------------------------------------------------------------------------------------------------ sampling
    def observations_at(self, indices: np.ndarray) -> Obs:
        """
        Observations at absolute positions (any shape of indices; entries < 0 read slot 0 and must be masked).

        :param indices: absolute indices
        :return: [*indices.shape, *obs_shape]
        """
        return obs_take(self.observations, np.maximum(indices, 0) % self.buffer_size)

    def sample(self, batch_size: int, rng: np.random.Generator, importance_exponent: float = 1.0) -> MuZeroBatch:
        """
        Sample unroll starts proportionally to their priorities and assemble their K-step targets.

        Past a termination the unroll continues in an absorbing state: value 0, or, for two-player games, the
        terminal position's outcome with the sign flipping every ply (the search backs values up through the
        absorbing plies with discount -1, so they must agree with the terminal position's value).

        :param batch_size: B
        :param rng: random generator
        :param importance_exponent: beta of the importance-sampling weights (0: all ones)
        :return: the batch
        """
        size, k = self.buffer_size, self.unroll_steps
        starts, weights = self.ring.sample(batch_size, rng, importance_exponent)
        slots = starts % size
        seg_end = self.segment_end[slots][:, None]
        terminal = self.segment_terminal[slots][:, None]
        positions = starts[:, None] + np.arange(k + 1)[None, :]  # [B, K+1]
        inside = positions < seg_end
        pslots = positions % size

        if self.two_player:
            plies_past_end = positions - (seg_end - 1)
            final_outcome = self.value_prefix[(seg_end - 1) % size]
            absorbing = final_outcome * np.where(plies_past_end % 2 == 0, 1.0, -1.0)
        else:
            absorbing = np.zeros(positions.shape)
        value_prefix = np.where(inside, self.value_prefix[pslots], absorbing).astype(np.float32)
        bootstrap_discount = np.where(inside, self.bootstrap_discount[pslots], 0.0).astype(np.float32)
        bootstrap_indices = np.where(inside, self.bootstrap_index[pslots], -1)
        bootstrap_values = self.root_values[np.maximum(bootstrap_indices, 0) % size]
        value_mask = np.where(inside, self.value_valid[pslots], terminal)

        # Rewards of the transitions (s_{t+k-1}, a_{t+k-1}) for k >= 1; actions fed to the dynamics.
        prev = positions[:, :-1]  # [B, K]
        prev_inside = inside[:, :-1]
        prev_actions = self.actions[prev % size]
        has_transition = prev_inside & (prev_actions >= 0)
        actions = np.where(has_transition, prev_actions, rng.integers(self.n_actions, size=prev.shape))
        rewards = np.zeros((batch_size, k + 1), dtype=np.float32)
        rewards[:, 1:] = np.where(has_transition, self.rewards[prev % size], 0.0)
        reward_mask = np.zeros((batch_size, k + 1), dtype=bool)
        reward_mask[:, 1:] = has_transition | terminal  # after a termination: absorbing, reward 0

        policies = np.where(inside[..., None], self.policies[pslots], 0.0).astype(np.float32)
        policy_mask = inside & (policies.sum(axis=-1) > 0)
        return MuZeroBatch(
            indices=starts,
            weights=weights.astype(np.float32),
            observations=obs_take(self.observations, slots),
            actions=actions.astype(np.int64),
            rewards=rewards,
            reward_mask=reward_mask,
            value_prefix=value_prefix,
            bootstrap_discount=bootstrap_discount,
            bootstrap_values=bootstrap_values.astype(np.float32),
            bootstrap_indices=bootstrap_indices,
            value_mask=value_mask,
            policies=policies,
            policy_mask=policy_mask,
            positions=np.where(inside, positions, -1),
            legal=np.where(inside[..., None], self.legal[pslots], True),
        )


def outcome_targets(rewards: np.ndarray, terminal: bool) -> np.ndarray:
    """
    Two-player value targets: the final outcome seen by the player to move at each position.

    The reward of the last transition is the mover's result (+1 win, -1 loss, 0 draw) and players alternate, so
    the position ``j`` plies before the final observation gets ``(-1)^(j+1) u_T``: ``z_{T-1} = u_T`` for the last
    mover, ``z_T = -u_T`` for the player to move at the terminal observation (whose search then sees the loss).

    :param rewards: [L] rewards of a whole game, the last position being the final observation (reward 0)
    :param terminal: whether the game ended (an unfinished game has no outcome yet: all zeros, with a warning)
    :return: [L] value targets
    """
    length = rewards.shape[0]
    if not terminal:
        warnings.warn("A two-player game was truncated before its end: its positions get value target 0")
        return np.zeros(length, dtype=np.float32)
    final = float(rewards[length - 2]) if length >= 2 else 0.0
    plies_to_final = (length - 1) - np.arange(length)  # 0 at the final observation
    return (final * np.where(plies_to_final % 2 == 1, 1.0, -1.0)).astype(np.float32)
