"""MuZero's self-play: the actor that searches, acts and cuts games into segments for the replay.

:class:`SelfPlayActor` is MuZero's :class:`~sb3_frontier.common.runners.Actor`: every step it searches the current
observations of all its envs together (one batched search), plays an action drawn from the visit counts (or the
search's own choice for Gumbel MuZero), and feeds each env's :class:`SegmentBuilder`, which emits
:class:`~sb3_frontier.algorithms.muzero.replay.GameSegment` objects when a game ends or a long game has filled a
segment. Legal actions are read the way sb3-contrib's MaskablePPO reads them (``action_masks()`` on the env) or,
failing that, from ``info["action_mask"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3.common.vec_env import VecEnv

from sb3_frontier.algorithms.muzero import mcts
from sb3_frontier.algorithms.muzero.planning import Planner, SearchSettings, check_temperature, cpu_copy
from sb3_frontier.algorithms.muzero.replay import GameSegment, outcome_targets
from sb3_frontier.common.observations import Obs, obs_stack, obs_take
from sb3_frontier.common.runners import Actor, ActorStep, VecEnvCopy
from sb3_frontier.common.vec_steps import final_observation, split_step
from sb3_frontier.policies.muzero import MuZeroPolicy


def legal_actions(env: VecEnv, infos: Sequence[dict[str, Any]], n_actions: int) -> np.ndarray:
    """
    Legal actions of the envs' current observations, ``[n_envs, A]`` (True = legal).

    ``action_masks()`` on the env (sb3-contrib's convention) when the env has it, else ``info["action_mask"]`` of
    the latest infos (the reset infos of envs that were just reset), else every action.

    :param env: the VecEnv
    :param infos: the infos of its latest step (after auto-resets, the done envs' reset infos) or reset
    :param n_actions: A
    :return: the mask
    """
    if is_masking_supported(env):
        legal = np.asarray(get_action_masks(env), dtype=bool).reshape(env.num_envs, n_actions)
    else:
        legal = np.ones((env.num_envs, n_actions), dtype=bool)
        for i, info in enumerate(infos):
            mask = info.get("action_mask")
            if mask is not None:
                legal[i] = np.asarray(mask, dtype=bool)
    if not legal.any(axis=1).all():
        raise ValueError("An environment reported an action mask with no legal action")
    return legal


class SegmentBuilder:
    """
    Collects one environment's positions during self-play and cuts them into :class:`GameSegment` objects.

    A segment is emitted when the game ends, or when ``segment_length`` positions plus the look-ahead
    (``unroll_steps + td_steps``) are held; the look-ahead positions then start the next segment.

    :param segment_length: sampleable positions per segment of a long game
    :param lookahead: positions kept after the sampleable ones (K + n)
    :param n_actions: number of actions
    :param two_player: store final-outcome value targets (board games)
    """

    def __init__(self, segment_length: int, lookahead: int, n_actions: int, two_player: bool = False):
        if segment_length < 1:
            raise ValueError(f"segment_length must be >= 1, got {segment_length}")
        self.segment_length = segment_length
        self.lookahead = lookahead
        self.n_actions = n_actions
        self.two_player = two_player
        self.clear()

    def clear(self) -> None:
        """Forget the positions held (a new game starts)."""
        self.observations: list[Obs] = []
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.stops: list[bool] = []
        self.root_values: list[float] = []
        self.policies: list[np.ndarray] = []
        self.legal: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.actions)

    def append(
        self,
        observation: Obs,
        action: int,
        reward: float,
        stop: bool,
        root_value: float,
        policy: np.ndarray,
        legal: np.ndarray,
    ) -> GameSegment | None:
        """
        Add one step of the game (the position and the transition taken from it).

        :return: a segment of a long game when one is complete, else ``None``
        """
        self.observations.append(observation)
        self.actions.append(int(action))
        self.rewards.append(float(reward))
        self.stops.append(bool(stop))
        self.root_values.append(float(root_value))
        self.policies.append(policy)
        self.legal.append(legal)
        if self.two_player or len(self) < self.segment_length + self.lookahead:
            return None
        segment = self._segment(slice(0, len(self)), n_starts=self.segment_length, terminal=False)
        for store in (self.observations, self.actions, self.rewards, self.stops, self.root_values, self.policies, self.legal):
            del store[: self.segment_length]
        return segment

    def finish(self, final_observation: Obs, terminal: bool, final_value: float) -> GameSegment | None:
        """
        End the game: emit what is held plus the final observation, and clear.

        :param final_observation: the observation after the last transition (a terminal one, or where the game was
            truncated)
        :param terminal: the game terminated (value 0 from there) rather than being truncated
        :param final_value: value of the final observation to bootstrap from when truncated (ignored if terminal)
        :return: the segment, or ``None`` when nothing was held
        """
        if len(self) == 0:
            self.clear()
            return None
        self.observations.append(final_observation)
        self.actions.append(-1)
        self.rewards.append(0.0)
        self.stops.append(terminal)
        self.root_values.append(0.0 if terminal else float(final_value))
        self.policies.append(np.zeros(self.n_actions, dtype=np.float32))
        self.legal.append(np.ones(self.n_actions, dtype=bool))
        segment = self._segment(slice(0, len(self)), n_starts=len(self) - 1, terminal=terminal)
        self.clear()
        return segment

    def _segment(self, window: slice, n_starts: int, terminal: bool) -> GameSegment:
        observations = obs_stack(self.observations[window])
        rewards = np.asarray(self.rewards[window], dtype=np.float32)
        value_targets = None
        if self.two_player:  # the outcome goes into the value targets; the reward targets are zero
            value_targets = outcome_targets(rewards, terminal)
            rewards = np.zeros_like(rewards)
        return GameSegment(
            observations=observations,
            actions=np.asarray(self.actions[window], dtype=np.int64),
            rewards=rewards,
            stops=np.asarray(self.stops[window], dtype=bool),
            root_values=np.asarray(self.root_values[window], dtype=np.float32),
            policies=np.stack(self.policies[window]).astype(np.float32),
            legal=np.stack(self.legal[window]).astype(bool),
            n_starts=n_starts,
            terminal=terminal,
            value_targets=value_targets,
        )


class SelfPlayActor(Actor):
    """
    Self-play on a VecEnv: search every env's observation together, act, and cut the games into segments.

    :param env: the VecEnv (the learner's own in the in-process backend)
    :param planner: searches with the network
    :param segment_length: sampleable positions per segment of a long game
    :param lookahead: positions a segment keeps after its sampleable ones (K + n)
    :param temperature: visit-count temperature, a constant or a function of SB3's progress remaining
    :param temperature_moves: moves of each episode drawn with the temperature, the most visited after them
        (None: every move)
    :param two_player: board-game mode (final-outcome value targets)
    """

    def __init__(
        self,
        env: VecEnv,
        planner: Planner,
        segment_length: int,
        lookahead: int,
        temperature: float | Callable[[float], float],
        temperature_moves: int | None = None,
        two_player: bool = False,
    ) -> None:
        self.env = env
        self.n_envs = env.num_envs
        self.planner = planner
        self.n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
        self.temperature = temperature
        self.temperature_moves = temperature_moves
        self.builders = [SegmentBuilder(segment_length, lookahead, self.n_actions, two_player) for _ in range(self.n_envs)]
        self.obs: Obs | None = None
        self.legal = np.ones((self.n_envs, self.n_actions), dtype=bool)
        self.moves = np.zeros(self.n_envs, dtype=np.int64)

    def current_temperature(self) -> float:
        """The acting temperature at the learner's current progress."""
        if callable(self.temperature):
            return check_temperature(self.temperature(self.progress_remaining))
        return check_temperature(self.temperature)

    def reset(self, observations: Any | None = None) -> None:
        self.obs = self.env.reset() if observations is None else observations  # type: ignore[assignment]
        for builder in self.builders:
            builder.clear()
        reset_infos = getattr(self.env, "reset_infos", None) or [{} for _ in range(self.n_envs)]
        self.legal = legal_actions(self.env, reset_infos, self.n_actions)
        self.moves[:] = 0

    def _actions(self, out: mcts.SearchOutput) -> np.ndarray:
        """The search's actions, the most visited one past ``temperature_moves`` moves (board-game schedule)."""
        actions = out.action
        if self.temperature_moves is not None and self.planner.settings.search == "muzero":
            greedy = self.moves >= self.temperature_moves
            if greedy.any():
                actions = actions.copy()
                actions[greedy] = mcts.select_action(
                    out.visit_counts[greedy], 0.0, invalid_actions=~self.legal[greedy], prior=out.root_prior[greedy]
                )
        return actions

    def step(self) -> ActorStep:
        assert self.obs is not None, "reset() the actor before stepping it"
        out = self.planner.search(self.obs, self.legal, noise=True, temperature=self.current_temperature())
        actions = self._actions(out)
        new_obs, rewards, dones, infos = self.env.step(actions)
        ends = split_step(dones, infos)
        targets = self.planner.policy_target(out)
        segments: list[GameSegment | None] = []
        for i, builder in enumerate(self.builders):
            stop = bool(ends.stop[i])
            value = float(out.search_value[i])
            segment = builder.append(
                obs_take(self.obs, i), int(actions[i]), float(rewards[i]), stop, value, targets[i], self.legal[i]
            )
            segments.append(segment)
        for env in np.flatnonzero(ends.terminated).tolist():
            segments.append(self.builders[env].finish(final_observation(infos, env), terminal=True, final_value=0.0))
        truncated = np.flatnonzero(ends.truncated).tolist()
        if truncated:  # truncation is not termination: bootstrap from the final observations' values
            finals = [final_observation(infos, env) for env in truncated]
            for env, final, final_value in zip(truncated, finals, self.planner.values(obs_stack(finals)), strict=True):
                segments.append(self.builders[env].finish(final, terminal=False, final_value=float(final_value)))
        self.legal = legal_actions(self.env, self._current_infos(infos, ends.done), self.n_actions)
        self.moves = np.where(ends.done, 0, self.moves + 1)
        self.obs = new_obs  # type: ignore[assignment]
        return ActorStep(
            items=[segment for segment in segments if segment is not None],
            rewards=rewards,
            dones=dones,
            infos=list(infos),
            new_obs=new_obs,
            policy_version=self.policy_version,
            stats=search_statistics(out),
        )

    def _current_infos(self, infos: Sequence[dict[str, Any]], done: np.ndarray) -> list[dict[str, Any]]:
        """Infos of the envs' current observations: the reset infos of envs that were just reset."""
        reset_infos = getattr(self.env, "reset_infos", None)
        return [
            (reset_infos[i] if reset_infos is not None and i < len(reset_infos) else {}) if done[i] else infos[i]
            for i in range(self.n_envs)
        ]


class SelfPlayActorFactory:
    """
    Builds self-play actors in actor processes: each with its own copy of the env, a CPU copy of the network (loaded
    with the learner's parameters at every sync) and its own random generator.

    :param env: the env copies' source
    :param policy: the learner's network (copied to the CPU here)
    :param settings: the search settings
    :param actor_kwargs: the other arguments of :class:`SelfPlayActor` (segment length, temperature, ...)
    """

    def __init__(self, env: VecEnvCopy, policy: MuZeroPolicy, settings: SearchSettings, **actor_kwargs: Any) -> None:
        self.env = env
        self.policy = cpu_copy(policy)
        self.settings = settings
        self.actor_kwargs = actor_kwargs

    def __call__(self, index: int) -> SelfPlayActor:
        planner = Planner(self.policy, self.settings, np.random.default_rng(self.env.actor_seed(index)))
        actor = SelfPlayActor(self.env.build(index), planner, **self.actor_kwargs)
        actor.network = self.policy
        return actor


def search_statistics(out: mcts.SearchOutput) -> dict[str, float]:
    """
    Diagnostics of a batch of searches (averaged in the logs): search value, visit entropy, tree depth.

    :param out: the search output
    :return: logger keys and values
    """
    probs = np.clip(out.visit_probs, 1e-12, 1.0)
    return {
        "search/search_value": float(out.search_value.mean()),
        "search/visit_entropy": float(-(out.visit_probs * np.log(probs)).sum(axis=1).mean()),
        "search/max_depth": float(out.max_depth.mean()),
    }


__all__ = ["SegmentBuilder", "SelfPlayActor", "SelfPlayActorFactory", "legal_actions", "search_statistics"]
