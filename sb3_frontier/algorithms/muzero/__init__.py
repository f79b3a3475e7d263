"""MuZero (Schrittwieser et al. 2020) with Reanalyze, and its batched search :mod:`~sb3_frontier.algorithms.muzero.mcts`."""

from sb3_frontier.algorithms.muzero import mcts
from sb3_frontier.algorithms.muzero.muzero import REANALYZE_PRESET, MuZero, paper_temperature
from sb3_frontier.policies.muzero import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["REANALYZE_PRESET", "CnnPolicy", "MlpPolicy", "MuZero", "MultiInputPolicy", "mcts", "paper_temperature"]
