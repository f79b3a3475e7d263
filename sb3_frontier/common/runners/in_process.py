"""The in-process backend: one actor stepped by the learner itself, sharing its network (no copies, no transport)."""

from __future__ import annotations

from typing import Any

from sb3_frontier.common.runners.base import Actor, ActorStep, Runner


class InProcessRunner(Runner):
    """
    Runs one actor in the learner's process, each :meth:`step` a VecEnv step of its envs. Collection and learning
    alternate (SB3's off-policy loop); the actor acts with the learner's network, so :meth:`sync` passes no weights.

    :param actor: the actor (built by the algorithm on the learner's VecEnv)
    """

    n_actors = 1

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    def reset(self, observations: Any | None = None) -> None:
        self.actor.reset(observations)

    def step(self) -> list[ActorStep]:
        return [self.actor.step()]

    def sync(self, parameters: dict[str, Any] | None, version: int, progress_remaining: float) -> None:
        self.actor.sync(parameters, version, progress_remaining)

    def close(self) -> None:
        self.actor.close()

    @property
    def env_steps_per_step(self) -> int:
        return self.actor.n_envs


__all__ = ["InProcessRunner"]
