"""Runners: actors stepping environments (algorithm code) behind one interface per backend (transport)."""

from sb3_frontier.common.runners.base import Actor, ActorFactory, ActorStep, Runner, Worker, WorkerFactory
from sb3_frontier.common.runners.in_process import InProcessRunner
from sb3_frontier.common.runners.processes import ActorError, ProcessRunner, SharedParameters, VecEnvCopy
from sb3_frontier.common.runners.ray_runner import RayRunner, RayWorkerPool

#: Backends available for ``runner=``.
RUNNERS = ("in-process", "processes", "ray")

__all__ = [
    "RUNNERS",
    "Actor",
    "ActorError",
    "ActorFactory",
    "ActorStep",
    "InProcessRunner",
    "ProcessRunner",
    "RayRunner",
    "RayWorkerPool",
    "Runner",
    "SharedParameters",
    "VecEnvCopy",
    "Worker",
    "WorkerFactory",
]
