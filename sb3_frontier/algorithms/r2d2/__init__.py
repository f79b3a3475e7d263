"""R2D2's pieces: the transformed Bellman target as drop-ins for SB3's DQN and sb3-contrib's QR-DQN."""

from sb3_frontier.algorithms.r2d2.rescaled import RescaledDQN, RescaledQRDQN

__all__ = ["RescaledDQN", "RescaledQRDQN"]
