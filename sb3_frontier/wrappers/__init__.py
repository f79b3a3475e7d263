"""Environment-side wrappers and value transforms, usable in any SB3 project without our algorithms.

- :class:`ValueRescaling`: the invertible value transform h (Pohlen et al. 2018) used by R2D2 and MuZero
- :class:`CategoricalSupport`: two-hot categorical representation of scalars (MuZero's value and reward heads)
- :class:`LifeLoss`: flags lost lives (``info["life_loss"]``), ``"roll"`` or ``"reset"`` mode
- :class:`SequenceStacker`: fixed-length overlapping sequences for recurrent replay (R2D2) and unrolls (IMPALA)
- :class:`VecPreviousActionReward`: the previous action and reward in the observation (R2D2's and IMPALA's LSTM inputs)
- :class:`PopArt`: a value head with adaptive target normalisation that preserves its outputs
- multi-task (several games in one VecEnv, Hessel et al. 2018): :class:`PadObservation` and :class:`PadActions` (a
  game in the common spaces of all games), :class:`TaskId` (an env's task), :func:`make_multitask_vec_env` (all of
  them for a list of env ids), :func:`task_ids` and :func:`count_tasks` (the tasks of a VecEnv's envs)
"""

from sb3_frontier.wrappers.life_loss import LifeLoss
from sb3_frontier.wrappers.multitask import PadActions, PadObservation, TaskId, count_tasks, make_multitask_vec_env, task_ids
from sb3_frontier.wrappers.popart import PopArt
from sb3_frontier.wrappers.previous_action_reward import VecPreviousActionReward
from sb3_frontier.wrappers.sequence import SequenceStacker
from sb3_frontier.wrappers.value_transforms import CategoricalSupport, ValueRescaling

__all__ = [
    "CategoricalSupport",
    "LifeLoss",
    "PadActions",
    "PadObservation",
    "PopArt",
    "SequenceStacker",
    "TaskId",
    "ValueRescaling",
    "VecPreviousActionReward",
    "count_tasks",
    "make_multitask_vec_env",
    "task_ids",
]
