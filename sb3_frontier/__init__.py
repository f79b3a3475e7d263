"""sb3-frontier: R2D2, PopArt-IMPALA and MuZero for Stable-Baselines3, and the wrappers they rely on."""

from sb3_frontier.algorithms.muzero import MuZero
from sb3_frontier.algorithms.popart_impala import PopArtIMPALA
from sb3_frontier.algorithms.r2d2 import R2D2
from sb3_frontier.envs import register_own_envs
from sb3_frontier.version import __version__

# gymnasium's convention: importing the package makes its environments available to gym.make
register_own_envs()

__all__ = ["R2D2", "MuZero", "PopArtIMPALA", "__version__"]
