"""MuZero's planner: the search settings, validated once, and the network calls that feed the search.

A :class:`Planner` turns a batch of observations into a :class:`~sb3_frontier.algorithms.muzero.mcts.SearchOutput`
with a MuZero network: the initial inference gives the roots, the recurrent inference is the search's model. The
self-play actor, Reanalyze and ``MuZero.predict`` all search through one, so that they search alike.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor

from sb3_frontier.algorithms.muzero import mcts
from sb3_frontier.common.observations import non_finite_keys
from sb3_frontier.policies.muzero import MuZeroPolicy

#: The search algorithms ``search=`` selects.
SEARCHES = ("muzero", "gumbel")


@dataclass(frozen=True)
class SearchSettings:
    """
    What every search of a model uses (checked once, where the user set it).

    :param num_simulations: simulations per search
    :param discount: discount of the search's edges (``-gamma`` for two-player games: values flip every ply)
    :param search: ``"muzero"`` (pUCT, the paper) or ``"gumbel"`` (Gumbel MuZero, Danihelka et al. 2022)
    :param dirichlet_alpha: root noise concentration (``"muzero"``)
    :param dirichlet_fraction: root noise weight (``"muzero"``; 0: none)
    :param pb_c_init: pUCT c1 (``"muzero"``)
    :param pb_c_base: pUCT c2 (``"muzero"``)
    :param unvisited_value: Q of unvisited children in pUCT, ``"parent"`` or ``"zero"`` (``"muzero"``)
    :param known_bounds: known (min, max) of values for the Q normalisation (board games: (-1, 1)), or None
    :param max_num_considered_actions: root actions Sequential Halving considers (``"gumbel"``)
    :param value_scale: sigma's scale of completed Q-values (``"gumbel"``)
    :param maxvisit_init: sigma's visit offset (``"gumbel"``)
    """

    num_simulations: int = 50
    discount: float = 0.997
    search: str = "muzero"
    dirichlet_alpha: float = 0.25
    dirichlet_fraction: float = 0.25
    pb_c_init: float = 1.25
    pb_c_base: float = 19652.0
    unvisited_value: str = "parent"
    known_bounds: tuple[float, float] | None = None
    max_num_considered_actions: int = 16
    value_scale: float = 0.1
    maxvisit_init: float = 50.0

    def __post_init__(self) -> None:
        if isinstance(self.num_simulations, bool) or not isinstance(self.num_simulations, int | np.integer):
            raise ValueError(f"num_simulations must be an integer >= 1, got {self.num_simulations!r}")
        if self.num_simulations < 1:
            raise ValueError(f"num_simulations must be an integer >= 1, got {self.num_simulations!r}")
        if not math.isfinite(self.discount) or abs(self.discount) > 1:
            raise ValueError(f"the search's discount must lie in [-1, 1], got {self.discount}")
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
        if not (math.isfinite(self.dirichlet_alpha) and self.dirichlet_alpha > 0):
            raise ValueError(f"dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
        if not 0.0 <= self.dirichlet_fraction <= 1.0:
            raise ValueError(f"dirichlet_fraction must lie in [0, 1], got {self.dirichlet_fraction}")
        if not (math.isfinite(self.pb_c_init) and self.pb_c_init >= 0):
            raise ValueError(f"pb_c_init (pUCT c1) must be finite and >= 0, got {self.pb_c_init}")
        if not (math.isfinite(self.pb_c_base) and self.pb_c_base > 0):
            raise ValueError(f"pb_c_base (pUCT c2) must be finite and > 0, got {self.pb_c_base}")
        if self.unvisited_value not in ("parent", "zero"):
            raise ValueError(f"unvisited_value must be 'parent' or 'zero', got {self.unvisited_value!r}")
        if self.known_bounds is not None:
            low, high = self.known_bounds
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"known_bounds must be finite (min, max) with min < max, got {self.known_bounds}")
        if isinstance(self.max_num_considered_actions, bool) or self.max_num_considered_actions < 1:
            raise ValueError(f"max_num_considered_actions must be >= 1, got {self.max_num_considered_actions!r}")
        if not (math.isfinite(self.value_scale) and self.value_scale >= 0):
            raise ValueError(f"value_scale must be finite and >= 0, got {self.value_scale}")
        if not (math.isfinite(self.maxvisit_init) and self.maxvisit_init >= 0):
            raise ValueError(f"maxvisit_init must be finite and >= 0, got {self.maxvisit_init}")


def check_temperature(temperature: float) -> float:
    """
    Validate an acting temperature.

    :param temperature: T >= 0 (0: the most visited action)
    :return: T as a float
    """
    if isinstance(temperature, bool) or not isinstance(temperature, int | float | np.number):
        raise ValueError(f"temperature must be a number >= 0 or a schedule, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    return float(temperature)


def cpu_copy(policy: MuZeroPolicy) -> MuZeroPolicy:
    """A CPU copy of the network for searching in another process (no optimizer, evaluation mode)."""
    network = copy.deepcopy(policy).to("cpu")
    network.optimizer = None  # type: ignore[assignment]  # copies do not train
    network.set_training_mode(False)
    return network


class Planner:
    """
    Searches batches of observations with a MuZero network.

    :param policy: the network (representation, dynamics, prediction and their supports)
    :param settings: the search settings
    :param rng: random generator of the root noise and of the action draws
    :param timings: accumulators every search adds its time split to (network, kernels; for profiling), or None
    """

    def __init__(
        self,
        policy: MuZeroPolicy,
        settings: SearchSettings,
        rng: np.random.Generator,
        timings: mcts.SearchTimings | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings
        self.rng = rng
        self.timings = timings

    def _recurrent_fn(self, hidden: th.Tensor, actions: th.Tensor) -> tuple[mcts.RecurrentFnOutput, th.Tensor]:
        next_hidden, reward_logits, policy_logits, value_logits = self.policy.recurrent_inference(hidden, actions)
        out = mcts.RecurrentFnOutput(
            reward=self.policy.reward_support.decode_logits(reward_logits),
            discount=th.full((hidden.shape[0],), self.settings.discount, device=hidden.device),
            prior_logits=policy_logits,
            value=self.policy.value_support.decode_logits(value_logits),
        )
        return out, next_hidden

    def _as_tensor(self, observations: Any) -> Any:
        bad = non_finite_keys(observations)
        if bad:
            raise ValueError(f"The observations hold NaN or infinite numbers (in {', '.join(bad)}): check the environment")
        if isinstance(observations, th.Tensor) or (
            isinstance(observations, dict) and all(isinstance(v, th.Tensor) for v in observations.values())
        ):
            return observations
        return obs_as_tensor(observations, self.policy.device)

    def values(self, observations: Any) -> np.ndarray:
        """
        The network's value of each observation (no search).

        :param observations: [B, *obs_shape] (or a dict), numpy or torch
        :return: [B] values
        """
        with th.inference_mode():
            _, _, value_logits = self.policy.initial_inference(self._as_tensor(observations))
            return self.policy.value_support.decode_logits(value_logits).cpu().numpy()

    def search(
        self, observations: Any, legal: np.ndarray | None = None, noise: bool = False, temperature: float = 1.0
    ) -> mcts.SearchOutput:
        """
        Search a batch of observations.

        :param observations: [B, *obs_shape] (or a dict of such arrays), numpy or torch
        :param legal: [B, A] legal actions (True = legal), or None for all legal
        :param noise: explore at the root (Dirichlet noise; Gumbel noise for ``"gumbel"``) or not (evaluation)
        :param temperature: visit-count temperature of the returned action (``"muzero"``; 0: most visited)
        :return: the search output (action, visit counts, search values, policy target, ...); its tensors (the tree's
            embeddings) are inference tensors: the search runs under ``torch.inference_mode()``, which skips autograd's
            bookkeeping of every small network call
        """
        settings = self.settings
        with th.inference_mode():
            hidden, policy_logits, value_logits = self.policy.initial_inference(self._as_tensor(observations))
            root = mcts.RootFnOutput(
                prior_logits=policy_logits, value=self.policy.value_support.decode_logits(value_logits), embedding=hidden
            )
            invalid = None if legal is None else ~legal
            if settings.search == "gumbel":
                return mcts.gumbel_muzero_policy(
                    root,
                    self._recurrent_fn,
                    settings.num_simulations,
                    invalid_actions=invalid,
                    max_num_considered_actions=settings.max_num_considered_actions,
                    gumbel_scale=1.0 if noise else 0.0,
                    value_scale=settings.value_scale,
                    maxvisit_init=settings.maxvisit_init,
                    rng=self.rng,
                    timings=self.timings,
                )
            return mcts.muzero_policy(
                root,
                self._recurrent_fn,
                settings.num_simulations,
                invalid_actions=invalid,
                dirichlet_alpha=settings.dirichlet_alpha,
                dirichlet_fraction=settings.dirichlet_fraction if noise else 0.0,
                pb_c_init=settings.pb_c_init,
                pb_c_base=settings.pb_c_base,
                temperature=temperature,
                rng=self.rng,
                unvisited_value=settings.unvisited_value,
                timings=self.timings,
                known_bounds=settings.known_bounds,
            )

    def policy_target(self, out: mcts.SearchOutput) -> np.ndarray:
        """
        The policy target a search gives: the visit distribution (MuZero) or the improved policy
        ``softmax(logits + sigma(completed Q))`` (Gumbel MuZero).

        :param out: a search output
        :return: [B, A] float32 probabilities
        """
        target = out.action_weights if self.settings.search == "gumbel" else out.visit_probs
        return np.asarray(target, dtype=np.float32)


__all__ = ["SEARCHES", "Planner", "SearchSettings", "check_temperature", "cpu_copy"]
