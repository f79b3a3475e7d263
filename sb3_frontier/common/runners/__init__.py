"""Runners: actors stepping environments (algorithm code) behind one interface per backend (transport)."""

from sb3_frontier.common.runners.base import Actor, ActorFactory, ActorStep, Runner
from sb3_frontier.common.runners.in_process import InProcessRunner
from sb3_frontier.common.runners.processes import ActorError, ProcessRunner, SharedParameters, VecEnvCopy

#: Backends available for ``runner=`` (``"ray"`` joins as it lands).
RUNNERS = ("in-process", "processes")

__all__ = [
    "RUNNERS",
    "Actor",
    "ActorError",
    "ActorFactory",
    "ActorStep",
    "InProcessRunner",
    "ProcessRunner",
    "Runner",
    "SharedParameters",
    "VecEnvCopy",
]
