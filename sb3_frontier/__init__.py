"""sb3-frontier: R2D2, PopArt-IMPALA and MuZero for Stable-Baselines3, and the wrappers they rely on."""

from sb3_frontier.algorithms.muzero import MuZero
from sb3_frontier.version import __version__

__all__ = ["MuZero", "__version__"]
