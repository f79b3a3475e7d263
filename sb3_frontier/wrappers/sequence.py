"""Fixed-length overlapping sequences with burn-in, cut from the step stream of a VecEnv (R2D2's recurrent replay)."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from sb3_frontier.common.observations import obs_leaves, obs_map
from sb3_frontier.common.vec_steps import real_next_obs

# An observation is an array or a (possibly nested) dict of arrays, as gymnasium's Box / Dict spaces give.
ObsTree: TypeAlias = "np.ndarray | dict[str, ObsTree]"


def _tree_structure(tree: Any) -> Any:
    """Return the key structure of a dict of arrays (``None`` for an array leaf)."""
    if isinstance(tree, Mapping):
        return {key: _tree_structure(tree[key]) for key in tree}
    return None


def _check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """Raise a ValueError naming the field when ``shape`` is not ``expected`` (``[n_envs, ...]``)."""
    if tuple(shape) == expected:
        return
    if tuple(shape[:1]) != expected[:1]:
        raise ValueError(f"{name} has shape {tuple(shape)}: expected n_envs={expected[0]} (as in the first call) on axis 0")
    raise ValueError(f"{name} has shape {tuple(shape)}, expected {expected} (as in the first call)")


@dataclass
class Sequence:
    """
    One fixed-length sequence of one env's episode: a burn-in prefix followed by a training window.

    With ``T = burn_in + length`` slots, slot ``i`` holds episode step ``start_step + i``; slots ``[0, burn_in)``
    are the burn-in prefix and slots ``[burn_in, T)`` the training window. Slots outside the episode (before its
    first step or after its last one) are zero padding with ``mask[i] = False``. ``observations[i + 1]`` is the
    next observation of every valid slot ``i`` (the terminal observation after an episode's last step, the
    bootstrap observation after a window that the episode outlives).

    :param observations: ``[T + 1, *obs_shape]`` (a dict of such arrays for dict observations)
    :param actions: ``[T, *action_shape]``
    :param rewards: ``[T]`` float32
    :param terminated: ``[T]`` bool, the step ended the episode in a terminal state
    :param truncated: ``[T]`` bool, the step ended the episode by a time limit (not a terminal state)
    :param mask: ``[T]`` bool, ``True`` on real steps, ``False`` on padding
    :param state: recurrent state before the first valid slot, one per-env slice (env axis removed) per element
    :param extras: per-step fields given to :meth:`SequenceStacker.add`, each ``[T, ...]``
    :param env_index: index of the env in the VecEnv
    :param start_step: episode step index of slot 0 (negative when the burn-in prefix starts before the episode)
    :param episode_id: per-stacker running counter, unique per episode
    """

    observations: ObsTree
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    mask: np.ndarray
    state: tuple[np.ndarray, ...]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    env_index: int = 0
    start_step: int = 0
    episode_id: int = 0


class SequenceStacker:
    """
    Turn the per-step stream of an auto-resetting VecEnv into R2D2's fixed-length overlapping sequences.

    R2D2 (Kapturowski et al. 2019, Sec. 3) replays sequences of ``m = 80`` steps, adjacent sequences of an episode
    overlapping by 40 steps, each preceded by a burn-in prefix of ``l = 40`` steps and stored with the recurrent
    state before its first step. Training windows start at episode steps ``k * stride`` with
    ``stride = length - overlap`` (``k = 0, 1, ...``); a sequence's slot ``i`` holds episode step
    ``k * stride - burn_in + i``. Sequences never cross an episode boundary: steps outside the episode are zero
    padding with ``mask = False`` (so a burn-in never reaches into the previous episode, and episodes shorter
    than ``burn_in`` or ``length`` are kept whole). A window is emitted as soon as it is complete or the episode
    ends inside it; windows after the first one that reaches the episode's last step are not emitted (they
    would only repeat steps already covered), so every step of every episode lies in some training window.

    The recurrent state stored with a sequence is the one the caller passed with its first valid step, i.e.
    the state *before* that step's observation was processed (storing the state after it leaks the future).
    For the first step of an episode it is whatever the caller passed: reset your state at episode starts
    (sb3-contrib's networks reset it internally from ``episode_start``; a learner can do the same for
    sequences with ``start_step + argmax(mask) == 0``).

    History is kept in preallocated ring buffers ``[n_envs, burn_in + length + 1, ...]`` written with one
    vectorised assignment per field per :meth:`add`; Python work per call only concerns the envs that complete
    a window or end an episode.

    Example with an SB3 VecEnv and sb3-contrib's ``RecurrentPPO`` (LSTM states ``(n_layers, n_envs, hidden)``;
    ``split_step`` is :func:`sb3_frontier.common.vec_steps.split_step`)::

        stacker = SequenceStacker(length=80, overlap=40, burn_in=40, state_env_axis=1)
        obs, episode_start = vec_env.reset(), np.ones(vec_env.num_envs, dtype=bool)
        state = (np.zeros((n_layers, vec_env.num_envs, hidden), np.float32),) * 2
        for _ in range(n_steps):
            state_before = tuple(s * (1.0 - episode_start)[None, :, None] for s in state)  # reset at episode starts
            actions, state = model.predict(obs, state=state, episode_start=episode_start)
            new_obs, rewards, dones, infos = vec_env.step(actions)
            ends = split_step(dones, infos)  # terminated / truncated / life loss
            next_obs = SequenceStacker.real_next_obs(new_obs, dones, infos)
            for seq in stacker.add(obs, actions, rewards, ends.terminated, ends.truncated, next_obs, state_before):
                replay.add(seq)
            obs, episode_start = new_obs, dones

    :param length: number of steps ``m`` of a training window (paper: 80)
    :param overlap: number of steps shared by adjacent windows of an episode (paper: 40); ``0 <= overlap < length``
    :param burn_in: number of steps ``l`` of the burn-in prefix before each window (paper: 40; 0 for none)
    :param state_env_axis: axis of the env dimension in each recurrent-state array given to :meth:`add`
        (0 by default; 1 for sb3-contrib's LSTM states ``(n_layers, n_envs, hidden)``)
    """

    def __init__(self, length: int = 80, overlap: int = 40, burn_in: int = 40, state_env_axis: int = 0) -> None:
        if int(length) != length or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if int(overlap) != overlap or not 0 <= overlap < length:
            raise ValueError(f"overlap must be an integer with 0 <= overlap < length (= {length}), got {overlap!r}")
        if int(burn_in) != burn_in or burn_in < 0:
            raise ValueError(f"burn_in must be an integer >= 0, got {burn_in!r}")
        if int(state_env_axis) != state_env_axis:
            raise ValueError(f"state_env_axis must be an integer, got {state_env_axis!r}")
        self.length = int(length)
        self.overlap = int(overlap)
        self.burn_in = int(burn_in)
        self.stride = self.length - self.overlap
        self.state_env_axis = int(state_env_axis)
        # Slots of one emitted sequence. The rings hold the last `seq_len` steps of each env plus the next
        # observation of the latest one: enough, since a window is emitted when its last step is added.
        self.seq_len = self.burn_in + self.length
        self.capacity = self.seq_len + 1
        self.n_envs: int | None = None
        self._reset_storage()

    # ------------------------------------------------------------------------------------------------------------
    # Storage
    # ------------------------------------------------------------------------------------------------------------

    def _reset_storage(self) -> None:
        """Forget every buffer (the next :meth:`add` allocates them again)."""
        self.n_envs = None
        self._global_step = 0  # number of add() calls so far (all envs step together)
        self._next_episode_id = 0
        self._episode_start: np.ndarray = np.zeros(0, dtype=np.int64)  # [n_envs] global step of each episode's step 0
        self._episode_id: np.ndarray = np.zeros(0, dtype=np.int64)  # [n_envs]
        # Observation ring [n_envs, capacity, *obs_shape] (tree): the slot of global step g holds the observation
        # before step g, written as the next observation of step g - 1 (or as the first observation of an episode).
        self._obs: Any = None
        self._episode_starting: np.ndarray = np.zeros(0, dtype=bool)  # [n_envs] the next add starts an episode
        self._actions: np.ndarray | None = None  # [n_envs, capacity, *action_shape]
        self._rewards: np.ndarray | None = None  # [n_envs, capacity]
        self._terminated: np.ndarray | None = None  # [n_envs, capacity]
        self._truncated: np.ndarray | None = None  # [n_envs, capacity]
        self._states: tuple[np.ndarray, ...] = ()  # each [n_envs, capacity, *state_shape]
        self._extras: dict[str, np.ndarray] = {}  # each [n_envs, capacity, ...]
        self._obs_structure: Any = None

    def _allocate(
        self,
        observations: Any,
        actions: np.ndarray,
        state: tuple[np.ndarray, ...],
        extras: dict[str, np.ndarray],
    ) -> None:
        """Allocate the ring buffers from the shapes and dtypes of the first step."""
        n_envs = self._infer_n_envs(observations)
        self.n_envs = n_envs
        cap = self.capacity
        self._obs_structure = _tree_structure(observations)
        self._obs = obs_map(lambda x: np.zeros((n_envs, cap, *x.shape[1:]), dtype=x.dtype), observations)
        self._actions = np.zeros((n_envs, cap, *actions.shape[1:]), dtype=actions.dtype)
        self._rewards = np.zeros((n_envs, cap), dtype=np.float32)
        self._terminated = np.zeros((n_envs, cap), dtype=bool)
        self._truncated = np.zeros((n_envs, cap), dtype=bool)
        self._states = tuple(np.zeros((n_envs, cap, *s.shape[1:]), dtype=s.dtype) for s in state)
        self._extras = {key: np.zeros((n_envs, cap, *x.shape[1:]), dtype=x.dtype) for key, x in extras.items()}
        self._global_step = 0
        self._episode_start = np.zeros(n_envs, dtype=np.int64)
        self._episode_starting = np.ones(n_envs, dtype=bool)
        self._episode_id = np.arange(self._next_episode_id, self._next_episode_id + n_envs, dtype=np.int64)
        self._next_episode_id += n_envs

    @staticmethod
    def _infer_n_envs(observations: Any) -> int:
        leaves = obs_leaves(observations)
        if not leaves:
            raise ValueError("observations must be an array or a non-empty dict of arrays")
        shape = np.shape(leaves[0][1])
        if len(shape) == 0:
            raise ValueError("observations must have a leading env axis [n_envs, *obs_shape]")
        return int(shape[0])

    def _state_tuple(self, state: Any) -> tuple[np.ndarray, ...]:
        """Normalise ``state`` to a tuple of arrays with the env axis first."""
        if state is None:
            return ()
        if isinstance(state, np.ndarray):
            state = (state,)
        if not isinstance(state, (tuple, list)):
            raise ValueError(f"state must be a tuple of arrays (or None), got {type(state).__name__}")
        out = []
        for j, s in enumerate(state):
            s = np.asarray(s)
            if not -s.ndim <= self.state_env_axis < s.ndim:
                raise ValueError(f"state[{j}] has shape {s.shape}, which has no axis {self.state_env_axis} (state_env_axis)")
            out.append(np.moveaxis(s, self.state_env_axis, 0))
        return tuple(out)

    def _check_step(
        self,
        observations: Any,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_observations: Any,
        state: tuple[np.ndarray, ...],
        extras: dict[str, np.ndarray],
    ) -> None:
        """Check that one step matches the shapes seen at the first step (raise ValueError otherwise)."""
        n = self.n_envs
        assert n is not None and self._actions is not None
        for name, obs in (("observations", observations), ("next_observations", next_observations)):
            if _tree_structure(obs) != self._obs_structure:
                raise ValueError(f"{name} do not have the structure (array / dict keys) of the first observations")
            for (path, leaf), (_, ring) in zip(obs_leaves(obs), obs_leaves(self._obs), strict=True):
                _check_shape(f"{name}{path}", np.shape(leaf), (n, *ring.shape[2:]))
        _check_shape("actions", actions.shape, (n, *self._actions.shape[2:]))
        _check_shape("rewards", rewards.shape, (n,))
        _check_shape("terminated", terminated.shape, (n,))
        _check_shape("truncated", truncated.shape, (n,))
        if len(state) != len(self._states):
            raise ValueError(f"state has {len(state)} arrays, expected {len(self._states)} (first call)")
        for j, (s, ring) in enumerate(zip(state, self._states, strict=True)):
            _check_shape(f"state[{j}] (env axis {self.state_env_axis} moved first)", s.shape, (n, *ring.shape[2:]))
        if set(extras) != set(self._extras):
            raise ValueError(f"extras have keys {sorted(extras)}, expected {sorted(self._extras)} (first call)")
        for key, x in extras.items():
            _check_shape(f"extras[{key!r}]", x.shape, (n, *self._extras[key].shape[2:]))

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------

    def add(
        self,
        observations: ObsTree,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_observations: ObsTree,
        state: tuple[np.ndarray, ...] | None,
        **extras: np.ndarray,
    ) -> list[Sequence]:
        """
        Add one VecEnv step of all envs and return the sequences it completes.

        :param observations: observations before the step, ``[n_envs, *obs_shape]`` (or a dict of such arrays). Only
            the envs that start an episode are read: within an episode a step's observation is the previous step's
            ``next_observations`` (the same array in a consistent stream), so each add writes observations once
        :param actions: actions taken, ``[n_envs, *action_shape]``
        :param rewards: rewards received, ``[n_envs]``
        :param terminated: whether the step ended the episode in a terminal state, ``[n_envs]``
        :param truncated: whether the step ended the episode by a time limit, ``[n_envs]``
        :param next_observations: the real next observations of the same episodes, ``[n_envs, *obs_shape]``: the
            terminal observation where the episode ended (see :meth:`real_next_obs`)
        :param state: recurrent state before the step, a tuple of arrays with the env axis at ``state_env_axis``
            (``None`` or ``()`` for a model without state)
        :param extras: further per-step fields, arrays with the env axis first (behaviour log-probs, previous
            action, policy version, ...)
        :return: the sequences completed by this step (a window whose last step was added, or the pending window
            of an episode that ended), possibly empty
        """
        actions_arr = np.asarray(actions)
        rewards_arr = np.asarray(rewards, dtype=np.float32)
        terminated_arr = np.asarray(terminated, dtype=bool)
        truncated_arr = np.asarray(truncated, dtype=bool)
        state_tuple = self._state_tuple(state)
        extras_arr = {key: np.asarray(x) for key, x in extras.items()}
        if self.n_envs is None:
            self._allocate(observations, actions_arr, state_tuple, extras_arr)
        self._check_step(
            observations, actions_arr, rewards_arr, terminated_arr, truncated_arr, next_observations, state_tuple, extras_arr
        )
        assert self._actions is not None and self._rewards is not None
        assert self._terminated is not None and self._truncated is not None

        # One vectorised write per field into the rings. Observations: the first observation of the envs that
        # start an episode, then every env's next observation (the observation of its next step, or the
        # terminal one, overwritten by the next episode's first observation at the next add).
        g = self._global_step
        pos = g % self.capacity
        next_pos = (g + 1) % self.capacity
        starting = self._episode_starting
        all_starting = bool(starting.all())
        for (_, ring), (_, leaf), (_, next_leaf) in zip(
            obs_leaves(self._obs), obs_leaves(observations), obs_leaves(next_observations), strict=True
        ):
            if all_starting:
                ring[:, pos] = leaf
            elif starting.any():
                ring[starting, pos] = np.asarray(leaf)[starting]
            ring[:, next_pos] = next_leaf
        self._actions[:, pos] = actions_arr
        self._rewards[:, pos] = rewards_arr
        self._terminated[:, pos] = terminated_arr
        self._truncated[:, pos] = truncated_arr
        for ring_s, s in zip(self._states, state_tuple, strict=True):
            ring_s[:, pos] = s
        for key, x in extras_arr.items():
            self._extras[key][:, pos] = x

        # Episode step t just added, per env; windows end at steps k * stride + length - 1.
        t = g - self._episode_start  # [n_envs]
        done = terminated_arr | truncated_arr
        since_first_end = t - (self.length - 1)
        completed = (since_first_end >= 0) & (since_first_end % self.stride == 0)
        sequences: list[Sequence] = []
        for env in np.flatnonzero(completed | done):
            t_env = int(t[env])
            if completed[env]:
                t0 = t_env - self.length + 1
            else:
                # The episode ended inside a pending window: the first window not completed yet covers its end,
                # and later windows would repeat it.
                t0 = self._first_pending_window(t_env)
            sequences.append(self._emit(int(env), t0, t_env))

        # Episodes that ended: the env's next step starts a new episode.
        self._episode_starting = done
        n_done = int(done.sum())
        if n_done:
            self._episode_start[done] = g + 1
            self._episode_id[done] = np.arange(self._next_episode_id, self._next_episode_id + n_done)
            self._next_episode_id += n_done
        self._global_step = g + 1
        return sequences

    def flush(self) -> list[Sequence]:
        """
        Emit the pending windows of all ongoing episodes as if the episodes were cut here, then forget them.

        The tail of each pending window is padding; the next observation of the last step added is kept as its
        bootstrap observation; no step is marked terminated or truncated. The next :meth:`add` starts new
        episodes in every env.

        :return: the pending sequences, at most one per env
        """
        if self.n_envs is None:
            return []
        g = self._global_step
        t_last = g - 1 - self._episode_start  # [n_envs], -1 where the episode has no step yet
        since_first_end = t_last - (self.length - 1)
        just_completed = (since_first_end >= 0) & (since_first_end % self.stride == 0)
        has_steps = t_last >= 0
        sequences = [
            self._emit(int(env), self._first_pending_window(int(t_last[env])), int(t_last[env]))
            for env in np.flatnonzero(has_steps & ~just_completed)
        ]
        n_new = int(has_steps.sum())
        self._episode_start[:] = g
        self._episode_starting[:] = True
        self._episode_id[has_steps] = np.arange(self._next_episode_id, self._next_episode_id + n_new)
        self._next_episode_id += n_new
        return sequences

    @staticmethod
    def real_next_obs(new_obs: ObsTree, dones: np.ndarray, infos: SequenceABC[dict[str, Any]]) -> ObsTree:
        """
        Return the real next observations of a VecEnv step: ``new_obs`` with ``infos[i]["terminal_observation"]``
        substituted where ``dones[i]`` (an SB3 VecEnv has already reset those envs); see
        :func:`sb3_frontier.common.vec_steps.real_next_obs`. ``new_obs`` is not modified.

        :param new_obs: observations returned by ``VecEnv.step``, ``[n_envs, *obs_shape]`` or a dict of such arrays
        :param dones: done flags returned by ``VecEnv.step``, ``[n_envs]``
        :param infos: infos returned by ``VecEnv.step``
        :return: a copy of ``new_obs`` holding the terminal observations of the envs that are done
        """
        return real_next_obs(new_obs, dones, infos)

    # ------------------------------------------------------------------------------------------------------------
    # Emission
    # ------------------------------------------------------------------------------------------------------------

    def _first_pending_window(self, t_last: int) -> int:
        """Start of the first window not yet complete when episode step ``t_last`` is the latest one."""
        since_first_end = t_last - (self.length - 1)
        k = 0 if since_first_end < 0 else since_first_end // self.stride + 1
        return k * self.stride

    def _emit(self, env: int, t0: int, t_last: int) -> Sequence:
        """Copy out the sequence of env ``env`` whose window starts at episode step ``t0``; ``t_last`` is the latest step."""
        assert self._actions is not None and self._rewards is not None
        assert self._terminated is not None and self._truncated is not None
        T = self.seq_len
        start_step = t0 - self.burn_in
        first = max(0, start_step)
        last = min(t_last, t0 + self.length - 1)
        n_valid = last - first + 1
        a = first - start_step  # slot of the first valid step
        p0 = (int(self._episode_start[env]) + first) % self.capacity  # ring position of the first valid step
        cap = self.capacity

        def window(ring: np.ndarray, n_slots: int, n_copy: int) -> np.ndarray:
            # Slots [a, a + n_copy) from the ring positions p0, p0 + 1, ... (mod capacity); zero padding elsewhere.
            out = np.empty((n_slots, *ring.shape[2:]), dtype=ring.dtype)
            out[:a] = 0
            n_head = min(n_copy, cap - p0)
            out[a : a + n_head] = ring[env, p0 : p0 + n_head]
            out[a + n_head : a + n_copy] = ring[env, : n_copy - n_head]
            out[a + n_copy :] = 0
            return out

        mask = np.zeros(T, dtype=bool)
        mask[a : a + n_valid] = True
        return Sequence(
            # The observations of the valid steps and the next observation of the last one.
            observations=obs_map(lambda ring: window(ring, T + 1, n_valid + 1), self._obs),
            actions=window(self._actions, T, n_valid),
            rewards=window(self._rewards, T, n_valid),
            terminated=window(self._terminated, T, n_valid),
            truncated=window(self._truncated, T, n_valid),
            mask=mask,
            state=tuple(ring_s[env, p0].copy() for ring_s in self._states),
            extras={key: window(ring, T, n_valid) for key, ring in self._extras.items()},
            env_index=env,
            start_step=start_step,
            episode_id=int(self._episode_id[env]),
        )


def stack_sequences(seqs: list[Sequence]) -> dict[str, Any]:
    """
    Stack sequences batch-major for a learner.

    :param seqs: sequences of the same stacker configuration (same ``T`` and shapes)
    :return: a dict with ``observations`` ``[B, T + 1, ...]`` (a dict of such arrays for dict observations),
        ``actions`` ``[B, T, ...]``, ``rewards``, ``terminated``, ``truncated``, ``mask`` ``[B, T]``, ``state`` (a
        tuple: each element stacked on a new axis 0, ``[B, *state_shape]``), ``extras`` (a dict of ``[B, T, ...]``),
        ``env_index``, ``start_step``, ``episode_id`` ``[B]`` int64
    """
    if len(seqs) == 0:
        raise ValueError("stack_sequences needs at least one sequence")
    shapes = {s.mask.shape for s in seqs}
    if len(shapes) != 1:
        raise ValueError(f"sequences have different lengths T: {sorted(shapes)}; stack sequences of one stacker only")
    n_state = {len(s.state) for s in seqs}
    extra_keys = {tuple(sorted(s.extras)) for s in seqs}
    if len(n_state) != 1 or len(extra_keys) != 1:
        raise ValueError("sequences have different state arity or extras keys; stack sequences of one stacker only")
    first = seqs[0]
    return {
        "observations": obs_map(lambda *xs: np.stack(xs), first.observations, *(s.observations for s in seqs[1:])),
        "actions": np.stack([s.actions for s in seqs]),
        "rewards": np.stack([s.rewards for s in seqs]),
        "terminated": np.stack([s.terminated for s in seqs]),
        "truncated": np.stack([s.truncated for s in seqs]),
        "mask": np.stack([s.mask for s in seqs]),
        "state": tuple(np.stack([s.state[j] for s in seqs]) for j in range(len(first.state))),
        "extras": {key: np.stack([s.extras[key] for s in seqs]) for key in first.extras},
        "env_index": np.array([s.env_index for s in seqs], dtype=np.int64),
        "start_step": np.array([s.start_step for s in seqs], dtype=np.int64),
        "episode_id": np.array([s.episode_id for s in seqs], dtype=np.int64),
    }
