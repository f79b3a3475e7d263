"""The replay-algorithm base: SB3's off-policy learn loop with actors behind a runner (MuZero, R2D2).

The loop reads like SB3's ``OffPolicyAlgorithm``: collect ``train_freq`` VecEnv steps (or episodes) with the actors
in evaluation mode, then take ``gradient_steps`` gradient steps in training mode, until ``total_timesteps``
environment steps. What differs is where the steps come from: a :class:`~sb3_frontier.common.runners.Runner`, whose
actors (algorithm code: :meth:`ReplayAlgorithm._make_actor`) hand back what goes into the replay
(:meth:`ReplayAlgorithm._store`). Callbacks fire as in SB3: ``on_training_start``, ``on_rollout_start``, ``on_step``
once per VecEnv step (returning False stops learning), ``on_rollout_end``, ``on_training_end``.

Episodes restart (and the actors forget partial ones) whenever the env is reset: a first ``learn``, a ``learn`` with
``reset_num_timesteps=True``, or after :meth:`set_env`; ``learn(..., reset_num_timesteps=False)`` on the same env
continues the episodes in progress (in-process; actor processes start new episodes at every ``learn``).

``runner="processes"`` runs the actors in processes of this machine (:class:`~sb3_frontier.common.runners.ProcessRunner`),
each stepping its own copy of the env with a CPU copy of the network (:meth:`ReplayAlgorithm._actor_factory`), so that
acting overlaps learning; the learner's loop is the same, and its parameters reach the actors after each update phase.
``runner="ray"`` runs the same actors as Ray actors, on this machine or over a Ray cluster
(:class:`~sb3_frontier.common.runners.RayRunner`).
"""

from __future__ import annotations

import io
import pathlib
import time
from abc import abstractmethod
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutReturn, Schedule, TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import safe_mean, should_collect_more_steps

from sb3_frontier.common.checks import check_integer
from sb3_frontier.common.denormals import flush_denormals
from sb3_frontier.common.runners import (
    RUNNERS,
    Actor,
    ActorFactory,
    ActorStep,
    InProcessRunner,
    ProcessRunner,
    RayRunner,
    Runner,
    VecEnvCopy,
)
from sb3_frontier.common.runners.normalization import (
    Statistics,
    load_normalization_statistics,
    normalization_statistics,
    pool_statistics,
)
from sb3_frontier.common.runners.processes import DEFAULT_MAX_PENDING
from sb3_frontier.common.runners.ray_runner import DEFAULT_MAX_IN_FLIGHT, DEFAULT_STEPS_PER_REQUEST

SelfReplayAlgorithm = TypeVar("SelfReplayAlgorithm", bound="ReplayAlgorithm")


def convert_train_freq(train_freq: int | tuple[int, str] | TrainFreq) -> TrainFreq:
    """
    SB3's ``train_freq`` forms, validated: ``n`` (VecEnv steps), ``(n, "step")`` or ``(n, "episode")``, ``n >= 1``.

    :param train_freq: the user's value
    :return: a ``TrainFreq``
    """
    if isinstance(train_freq, TrainFreq):
        frequency, unit = train_freq
    elif isinstance(train_freq, tuple):
        if len(train_freq) != 2:
            raise ValueError(f"train_freq must be n or (n, 'step' | 'episode'), got {train_freq!r}")
        frequency, unit_name = train_freq
        try:
            unit = TrainFrequencyUnit(unit_name)
        except ValueError:
            raise ValueError(f"The unit of train_freq must be 'step' or 'episode', got {unit_name!r}") from None
    else:
        frequency, unit = train_freq, TrainFrequencyUnit.STEP
    if isinstance(frequency, bool) or not isinstance(frequency, int | np.integer) or frequency < 1:
        raise ValueError(f"train_freq must count at least one step or episode (an integer >= 1), got {frequency!r}")
    return TrainFreq(int(frequency), unit)


#: The options ``runner_kwargs`` may hold, per runner.
_RUNNER_OPTIONS: dict[str, set[str]] = {
    "in-process": set(),
    "processes": {"n_actors", "sync_every", "max_pending", "start_method", "torch_threads"},
    "ray": {
        "n_actors",
        "sync_every",
        "steps_per_request",
        "max_in_flight",
        "ray_address",
        "num_cpus_per_actor",
        "torch_threads",
        "max_restarts",
        "start_timeout",
        "ray_init_kwargs",
    },
}

#: Runners whose actors hold their own env copy and network (``n_actors`` of them).
ACTOR_RUNNERS = ("processes", "ray")


class ReplayAlgorithm(BaseAlgorithm):
    """
    Base of algorithms that learn from a replay filled by actors.

    Subclasses provide :meth:`_make_actor` (what an actor does), :meth:`_store` (how its output enters the replay),
    :meth:`train` and :meth:`_check_replay_buffer`, and build ``self.replay_buffer`` in ``_setup_model``.

    :param policy: policy class or alias
    :param env: environment (id, gymnasium env or VecEnv)
    :param learning_rate: learning rate (constant or schedule)
    :param buffer_size: replay capacity
    :param learning_starts: environment steps collected before the first update
    :param batch_size: samples per gradient step
    :param train_freq: collection between update phases: ``n`` VecEnv steps, ``(n, "step")`` or ``(n, "episode")``
    :param gradient_steps: gradient steps per update phase (``-1``: as many as VecEnv steps were collected)
    :param runner: where the actors run: ``"in-process"`` (the learner steps its own VecEnv), ``"processes"``
        (actor processes, each with its own copy of the VecEnv) or ``"ray"`` (Ray actors, each with its own copy)
    :param runner_kwargs: options of the runner; for ``"processes"``: ``n_actors`` (1), ``sync_every`` (actor steps
        between parameter reads), ``max_pending`` (steps an actor may run ahead; default: ``train_freq``'s VecEnv
        steps, at least 128), ``start_method``, ``torch_threads`` (see
        :class:`~sb3_frontier.common.runners.ProcessRunner`); for ``"ray"``: ``n_actors``, ``sync_every``,
        ``ray_address`` (None: a local instance; ``"auto"``: the cluster of ``ray start``), ``num_cpus_per_actor``,
        ``steps_per_request``, ``max_in_flight`` (default: enough requests for ``train_freq``'s VecEnv steps, at least
        16), ``torch_threads``, ``max_restarts``, ``start_timeout``, ``ray_init_kwargs`` (see
        :class:`~sb3_frontier.common.runners.RayRunner`)
    :param policy_kwargs: keyword arguments of the policy
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: tensorboard log directory
    :param verbose: 0 none, 1 info, 2 debug
    :param device: torch device
    :param seed: random seed
    :param supported_action_spaces: action spaces the algorithm accepts
    """

    #: Environment steps of ``learn()`` called without ``total_timesteps`` (subclasses document their own).
    default_total_timesteps: ClassVar[int] = 100_000

    policy: BasePolicy
    replay_buffer: Any

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule,
        buffer_size: int,
        learning_starts: int,
        batch_size: int,
        train_freq: int | tuple[int, str],
        gradient_steps: int,
        runner: str = "in-process",
        runner_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        device: th.device | str = "auto",
        seed: int | None = None,
        supported_action_spaces: tuple[type[spaces.Space], ...] | None = None,
    ) -> None:
        self.buffer_size = check_integer("buffer_size", buffer_size, 1)
        self.learning_starts = check_integer("learning_starts", learning_starts, 0)
        self.batch_size = check_integer("batch_size", batch_size, 1)
        self.train_freq = convert_train_freq(train_freq)
        if (
            isinstance(gradient_steps, bool)
            or not isinstance(gradient_steps, int | np.integer)
            or not (gradient_steps >= 1 or gradient_steps == -1)
        ):
            raise ValueError(f"gradient_steps must be an integer >= 1, or -1 (one per VecEnv step), got {gradient_steps!r}")
        self.gradient_steps = int(gradient_steps)
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
        self.runner_kind = runner
        self.runner_kwargs = dict(runner_kwargs or {})
        unknown = self.runner_kwargs.keys() - _RUNNER_OPTIONS.get(runner, set())
        if unknown:
            raise ValueError(
                f"Unknown runner_kwargs for runner={runner!r}: {sorted(unknown)} "
                f"(known: {sorted(_RUNNER_OPTIONS.get(runner, set()))})"
            )
        if "n_actors" in self.runner_kwargs:
            check_integer("runner_kwargs['n_actors']", self.runner_kwargs["n_actors"], 1)
        try:
            super().__init__(
                policy=policy,
                env=env,
                learning_rate=learning_rate,
                policy_kwargs=policy_kwargs,
                stats_window_size=stats_window_size,
                tensorboard_log=tensorboard_log,
                verbose=verbose,
                device=device,
                support_multi_env=True,
                seed=seed,
                supported_action_spaces=supported_action_spaces,
            )
        except AssertionError as error:  # SB3 asserts the action space: a user error, reported as one
            if "action space" in str(error):
                raise ValueError(str(error)) from None
            raise
        self.replay_buffer = None
        self.runner: Runner | None = None
        self._n_updates = 0
        self._actor_stats: dict[str, tuple[float, int]] = {}  # running (sum, count) since the last log dump
        self._last_dump_episode = 0
        # VecNormalize statistics when the actor processes started, and each actor's latest (runners.normalization)
        self._env_statistics_base: Statistics | None = None
        self._actor_env_statistics: dict[int, Statistics] = {}

    # ------------------------------------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _make_actor(self) -> Actor:
        """The in-process actor: algorithm code stepping ``self.env`` with ``self.policy``."""

    def _actor_factory(self, env: VecEnvCopy) -> ActorFactory:
        """
        A picklable factory of the actors that run in processes, each with its own env copy and a CPU copy of the
        network (:attr:`Actor.network`, which receives the parameters of :meth:`_actor_parameters`).

        :param env: the env each actor builds its copy from (``env.build(i)``)
        """
        raise NotImplementedError(f"{type(self).__name__} has no actors that run in processes")

    def _actor_parameters(self) -> dict[str, th.Tensor]:
        """What actor processes load into their network after each update phase (the policy's state dict)."""
        return self.policy.state_dict()

    @abstractmethod
    def _store(self, step: ActorStep) -> None:
        """Put what an actor step produced into the replay."""

    @abstractmethod
    def train(self, gradient_steps: int, batch_size: int) -> None:
        """
        Gradient steps on replayed samples.

        :param gradient_steps: number of steps
        :param batch_size: samples per step
        """

    @abstractmethod
    def _check_replay_buffer(self, buffer: Any) -> None:
        """Raise a ValueError naming what differs when ``buffer`` does not fit this model (spaces, targets)."""

    def _replay_ready(self) -> bool:
        """Whether the replay can be sampled (something was stored)."""
        return self.replay_buffer is not None and len(self.replay_buffer) > 0

    def _record_logs(self) -> None:
        """Record algorithm-specific values before each log dump (nothing by default)."""

    # ------------------------------------------------------------------------------------------------- save / load
    def _excluded_save_params(self) -> list[str]:
        excluded = ["replay_buffer", "runner", "_actor_stats", "_env_statistics_base", "_actor_env_statistics"]
        return [*super()._excluded_save_params(), *excluded]

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Save the replay buffer as a pickle file.

        :param path: where to save it
        """
        assert self.replay_buffer is not None, "The replay buffer is not defined"
        save_to_pkl(path, self.replay_buffer, self.verbose)

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Load a replay buffer saved with :meth:`save_replay_buffer`; it must fit this model (spaces, targets).

        :param path: the pickle file
        """
        buffer = load_from_pkl(path, self.verbose)
        self._check_replay_buffer(buffer)
        self.replay_buffer = buffer

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """
        Change the training env; the actors are rebuilt on it at the next ``learn`` and start new episodes.

        :param env: the new env
        :param force_reset: as in SB3 (the env is reset at the next ``learn`` either way for the new actors)
        """
        super().set_env(env, force_reset=force_reset)
        self._close_runner()
        self.runner = None

    # ------------------------------------------------------------------------------------------------------ runner
    def _make_runner(self) -> Runner:
        if self.runner_kind == "in-process":
            return InProcessRunner(self._make_actor())
        assert self.runner_kind in ACTOR_RUNNERS and self.env is not None
        options = dict(self.runner_kwargs)
        n_actors = options.pop("n_actors", 1)
        self._default_run_ahead(options)
        runner_class: type[ProcessRunner] | type[RayRunner] = ProcessRunner if self.runner_kind == "processes" else RayRunner
        return runner_class(
            self._actor_factory(VecEnvCopy(self.env, self.seed)),
            n_actors,
            self._actor_parameters(),
            n_envs=self.env.num_envs,
            **options,
        )

    def _default_run_ahead(self, options: dict[str, Any]) -> None:
        """
        Let an actor run at least one update phase (``train_freq`` VecEnv steps) ahead of the learner unless
        ``options`` bound it: while the learner trains, the actors produce the next phase's steps, and an actor that
        waits on a full queue before the phase is complete idles its core (on Pong with one update every 175 VecEnv
        steps, the runner's default 128 steps cost 15% of the whole loop's speed). Smaller bounds stay available
        (``runner_kwargs``) where the policy lag must be shorter.
        """
        if self.train_freq.unit != TrainFrequencyUnit.STEP:
            return  # episodes: no step count to size by
        phase = int(self.train_freq.frequency)
        if self.runner_kind == "processes":
            options.setdefault("max_pending", max(DEFAULT_MAX_PENDING, phase))
        else:
            per_request = int(options.get("steps_per_request", DEFAULT_STEPS_PER_REQUEST))
            options.setdefault("max_in_flight", max(DEFAULT_MAX_IN_FLIGHT, -(-phase // max(per_request, 1))))

    @property
    def n_actors(self) -> int:
        """Actors that step environments: 1 in-process, ``runner_kwargs["n_actors"]`` (default 1) otherwise."""
        return int(self.runner_kwargs.get("n_actors", 1)) if self.runner_kind in ACTOR_RUNNERS else 1

    def _close_runner(self) -> None:
        if self.runner is not None:
            self.runner.close()

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        env_reset = reset_num_timesteps or self._last_obs is None  # SB3's _setup_learn resets the env then
        total_timesteps, callback = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        if self.runner is None:
            self.runner = self._make_runner()
            if not env_reset:  # new actors hold no episode in progress: they start from a reset env
                assert self.env is not None
                self._last_obs = self.env.reset()  # type: ignore[assignment]
                env_reset = True
        if env_reset or not self.runner.shares_learner_network:  # actor processes start at every learn()
            self.runner.reset(self._last_obs)
        if not self.runner.shares_learner_network:  # the actors' envs start as copies of the learner's
            assert self.env is not None
            self._env_statistics_base = normalization_statistics(self.env)
            self._actor_env_statistics = {}
        self._last_dump_episode = self._episode_num
        return total_timesteps, callback

    # ------------------------------------------------------------------------------------------------------ learning
    def learn(
        self: SelfReplayAlgorithm,
        total_timesteps: int | None = None,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfReplayAlgorithm:
        """
        Collect with the actors and train, for ``total_timesteps`` environment steps (summed over the envs).

        Runs with denormal floats flushed to zero (see :mod:`sb3_frontier.common.denormals`: training makes them, and
        each one costs a slow path on the CPU) and restores the caller's mode on return.

        :param total_timesteps: environment steps to collect (``None``: the class's ``default_total_timesteps``)
        :param callback: SB3 callback(s), ``on_step`` after every VecEnv step
        :param log_interval: episodes between log dumps
        :param tb_log_name: tensorboard run name
        :param reset_num_timesteps: start counting (and the episodes) afresh; False continues where the last call
            stopped
        :param progress_bar: show a progress bar
        :return: the trained model
        """
        if total_timesteps is None:
            total_timesteps = self.default_total_timesteps
        check_integer("total_timesteps", total_timesteps, 1)
        with flush_denormals():
            total_timesteps, callback = self._setup_learn(
                total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
            )
            callback.on_training_start(locals(), globals())
            assert self.env is not None and self.runner is not None
            try:
                while self.num_timesteps < total_timesteps:
                    rollout = self.collect_rollouts(callback, log_interval, total_timesteps)
                    if not rollout.continue_training:
                        break
                    if self.num_timesteps > self.learning_starts and self._replay_ready():
                        # As SB3: -1 takes one gradient step per VecEnv step collected.
                        steps = self.gradient_steps
                        if steps < 0:
                            steps = rollout.episode_timesteps // self.env.num_envs
                        if steps > 0:
                            self.train(steps, self.batch_size)
            finally:
                self._close_runner()
            callback.on_training_end()
        return self

    def collect_rollouts(self, callback: BaseCallback, log_interval: int | None, total_timesteps: int) -> RolloutReturn:
        """
        Collect ``train_freq`` VecEnv steps or episodes with the actors (networks in evaluation mode).

        :param callback: called after every VecEnv step
        :param log_interval: episodes between log dumps (None: never)
        :param total_timesteps: stop early once this many environment steps were taken
        :return: environment steps and episodes collected, and whether training should go on
        """
        assert self.runner is not None
        self.policy.set_training_mode(False)
        parameters = None if self.runner.shares_learner_network else self._actor_parameters()
        self.runner.sync(parameters, self._n_updates, self._current_progress_remaining)
        callback.on_rollout_start()
        n_steps = n_episodes = env_steps = 0
        continue_training = True
        while continue_training and should_collect_more_steps(self.train_freq, n_steps, n_episodes):
            for step in self.runner.step():
                self._process_step(step)
                env_steps += step.n_env_steps
                n_steps += 1
                finished = int(np.sum(step.dones))
                n_episodes += finished
                callback.update_locals(
                    {"infos": step.infos, "dones": step.dones, "rewards": step.rewards, "new_obs": step.new_obs}
                )
                if not callback.on_step():
                    continue_training = False
                    break
                if log_interval is not None and self._episode_num - self._last_dump_episode >= log_interval:
                    self._last_dump_episode = self._episode_num
                    self.dump_logs()
            if self.num_timesteps >= total_timesteps:
                break
        callback.on_rollout_end()
        return RolloutReturn(env_steps, n_episodes, continue_training)

    def _process_step(self, step: ActorStep) -> None:
        """Count, check and store one actor step."""
        rewards = np.asarray(step.rewards, dtype=np.float64)
        if not np.all(np.isfinite(rewards)):
            raise ValueError(f"The environment returned non-finite rewards: {rewards}")
        self.num_timesteps += step.n_env_steps
        self._episode_num += int(np.sum(step.dones))
        self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
        self._update_info_buffer(step.infos, step.dones)
        for key, value in step.stats.items():
            total, count = self._actor_stats.get(key, (0.0, 0))
            self._actor_stats[key] = (total + float(value), count + 1)
        if step.new_obs is not None:
            self._last_obs = step.new_obs
            self._last_episode_starts = step.dones
        if step.env_statistics is not None and self._env_statistics_base is not None:
            # An actor's own VecNormalize: the learner's takes what all the actors have seen (for evaluation, saving)
            assert self.env is not None
            self._actor_env_statistics[step.actor] = step.env_statistics
            statistics = pool_statistics(self._env_statistics_base, list(self._actor_env_statistics.values()))
            load_normalization_statistics(self.env, statistics)
        self._store(step)

    def dump_logs(self) -> None:
        """Write the rollout, actor and time statistics to the logger and dump it."""
        assert self.ep_info_buffer is not None
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / elapsed)
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0 and len(self.ep_info_buffer[0]) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        for key, (total, count) in self._actor_stats.items():
            self.logger.record(key, total / max(count, 1))
        self._actor_stats = {}
        self._record_logs()
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)


__all__ = ["ReplayAlgorithm", "check_integer", "convert_train_freq"]
