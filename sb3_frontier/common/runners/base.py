"""The runner interface: actors (algorithm code) stepping environments, runners (transport and lifecycle) around them.

An **actor** is what one actor does with its envs and a copy of the network: MuZero's self-play actor searches and
yields game segments with their search statistics, R2D2's yields sequences with initial priorities, IMPALA's unrolls
with behaviour log-probs. An actor knows nothing of the backend that runs it.

A **runner** is transport and lifecycle only: it starts its actors, hands them parameters with a version, gathers
what they produce, and shuts them down when learning returns, raises or is interrupted. A runner knows nothing of
the algorithm it serves. The learner's loop reads the same whichever backend runs the actors:

    runner.reset()                                 # new episodes everywhere (actor processes start)
    while learning:
        runner.sync(parameters, version, progress) # after each update phase (None when the actors share the network)
        for step in runner.step():                 # one VecEnv step of some actor(s)
            replay.add(step.items); callback.on_step()
    runner.close()
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th

from sb3_frontier.common.denormals import set_denormals_flushed


@dataclass
class ActorStep:
    """
    What one VecEnv step of one actor produced.

    :param items: what goes into the learner's storage (segments, sequences, unrolls), possibly none
    :param rewards: ``[n_envs]`` rewards of the step
    :param dones: ``[n_envs]`` episode ends (terminated or truncated)
    :param infos: the envs' infos (episode statistics under ``"episode"`` when wrapped in ``Monitor``)
    :param new_obs: the observations after the step (given by backends that share memory with the learner)
    :param actor: index of the actor
    :param policy_version: version of the parameters that acted
    :param stats: per-step diagnostics of the actor (e.g. search statistics), averaged in the logs
    :param env_statistics: the ``VecNormalize`` statistics of the actor's own envs, sent now and then by actors that
        step copies of the learner's VecEnv (:mod:`~sb3_frontier.common.runners.normalization`)
    """

    items: list[Any]
    rewards: np.ndarray
    dones: np.ndarray
    infos: list[dict[str, Any]]
    new_obs: Any = None
    actor: int = 0
    policy_version: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    env_statistics: Any = None

    @property
    def n_env_steps(self) -> int:
        """Environment steps taken (one per env)."""
        return int(self.dones.shape[0])


class Actor(ABC):
    """
    Algorithm code that steps its environments with a copy of the network (or, in-process, the learner's own).

    :param n_envs: number of environments the actor steps together
    """

    n_envs: int
    #: version of the parameters the actor acts with, and the learner's progress (see :meth:`sync`)
    policy_version: int = 0
    progress_remaining: float = 1.0
    #: the network that :meth:`sync` loads parameters into (an actor process's own copy)
    network: th.nn.Module | None = None
    #: the VecEnv the actor steps (an actor process's own copy: its ``VecNormalize`` statistics go to the learner)
    env: Any = None

    @abstractmethod
    def reset(self, observations: Any | None = None) -> None:
        """
        Start new episodes in every env and forget partial ones.

        :param observations: the envs' first observations when the caller has just reset them (the in-process
            backend shares the learner's VecEnv, which SB3's ``_setup_learn`` resets); ``None`` resets them here
        """

    @abstractmethod
    def step(self) -> ActorStep:
        """One step of every env the actor holds."""

    def sync(self, parameters: dict[str, Any] | None, version: int, progress_remaining: float) -> None:
        """
        Take new parameters (``None``: the actor already shares the learner's network) and the learner's progress.

        :param parameters: a state dict of the network, or ``None``
        :param version: number of the learner's update that produced them
        :param progress_remaining: SB3's progress, from 1 (start) to 0 (end), for schedules on the acting side
        """
        if parameters is not None:
            if self.network is None:
                raise RuntimeError(f"{type(self).__name__} was given parameters but has no network to load them into")
            self.network.load_state_dict(parameters)
        self.policy_version = version
        self.progress_remaining = progress_remaining

    def close(self) -> None:  # noqa: B027 - optional hook: actors that own nothing release nothing
        """Release what the actor holds (its envs, when it owns them)."""


#: Builds actor ``i`` (picklable for the backends that build actors in other processes).
ActorFactory = Callable[[int], Actor]


class Worker(ABC):
    """
    Algorithm code that answers the learner's requests with a copy of the network, holding no episode: MuZero's
    Reanalyze worker re-searches stored positions. A worker pool (:class:`~sb3_frontier.common.runners.RayWorkerPool`)
    runs several and hands them the learner's parameters.
    """

    #: the network that :meth:`load` loads parameters into
    network: th.nn.Module

    def load(self, parameters: dict[str, Any]) -> None:
        """
        Take the learner's parameters.

        :param parameters: a state dict of the network
        """
        self.network.load_state_dict(parameters)

    @abstractmethod
    def __call__(self, request: Any) -> Any:
        """Answer one request (with the parameters loaded last)."""


#: Builds worker ``i`` (picklable: a pool builds its workers in other processes).
WorkerFactory = Callable[[int], Worker]


class Runner(ABC):
    """Transport and lifecycle of actors; the same interface for every backend."""

    n_actors: int
    #: whether the actors act with the learner's own network (then :meth:`sync` needs no parameters)
    shares_learner_network: bool = True

    @abstractmethod
    def reset(self, observations: Any | None = None) -> None:
        """Start new episodes in every actor's envs (see :meth:`Actor.reset`)."""

    @abstractmethod
    def step(self) -> list[ActorStep]:
        """Gather the next VecEnv steps the actors produced (at least one)."""

    @abstractmethod
    def sync(self, parameters: dict[str, Any] | None, version: int, progress_remaining: float) -> None:
        """Hand the actors new parameters (see :meth:`Actor.sync`)."""

    @abstractmethod
    def close(self) -> None:
        """Stop every actor; safe to call more than once."""

    @property
    @abstractmethod
    def env_steps_per_step(self) -> int:
        """Environment steps that one actor step takes (its number of envs)."""


def start_actor_process(torch_threads: int) -> None:
    """
    What every actor or worker process does first: run at ``torch_threads`` torch threads, flush denormal floats as
    the learner does (:mod:`sb3_frontier.common.denormals`), and draw its own torch seed (forked processes would
    otherwise share the learner's stream).
    """
    th.set_num_threads(torch_threads)
    set_denormals_flushed(True)
    th.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))


__all__ = ["Actor", "ActorFactory", "ActorStep", "Runner", "Worker", "WorkerFactory", "start_actor_process"]
