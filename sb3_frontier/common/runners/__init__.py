"""Runners: actors stepping environments (algorithm code) behind one interface per backend (transport)."""

from sb3_frontier.common.runners.base import Actor, ActorFactory, ActorStep, Runner
from sb3_frontier.common.runners.in_process import InProcessRunner

#: Backends available for ``runner=`` (``"processes"`` and ``"ray"`` join as they land).
RUNNERS = ("in-process",)

__all__ = ["RUNNERS", "Actor", "ActorFactory", "ActorStep", "InProcessRunner", "Runner"]
