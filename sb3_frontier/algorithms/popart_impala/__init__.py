"""PopArt-IMPALA: IMPALA with V-trace and PopArt value normalisation, and PopArt drop-ins for SB3's PPO and A2C."""

from sb3_frontier.algorithms.popart_impala.drop_in import PopArtA2C, PopArtPPO
from sb3_frontier.algorithms.popart_impala.popart_impala import PopArtIMPALA
from sb3_frontier.algorithms.popart_impala.vtrace import VTraceReturns, vtrace

__all__ = ["PopArtA2C", "PopArtIMPALA", "PopArtPPO", "VTraceReturns", "vtrace"]
