"""R2D2 (Kapturowski et al. 2019), and its transformed Bellman target as drop-ins for SB3's DQN and sb3-contrib's QR-DQN."""

from sb3_frontier.algorithms.r2d2.actor import epsilon_ladder
from sb3_frontier.algorithms.r2d2.r2d2 import R2D2
from sb3_frontier.algorithms.r2d2.rescaled import RescaledDQN, RescaledQRDQN

__all__ = ["R2D2", "RescaledDQN", "RescaledQRDQN", "epsilon_ladder"]
