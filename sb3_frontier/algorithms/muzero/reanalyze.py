"""MuZero Reanalyze (Schrittwieser et al. 2020, Appendix H): fresh policy targets from a new search of stored positions.

The head (``reanalyze_fraction``) of every sampled batch is searched again with the latest network; the search's
policy target replaces the one stored at acting time, in the batch and in the replay, where the position is still
stored (the stored game's targets are refreshed, so later samples of it read the newer search too).

Where the searches run:

- **in the learner** (``reanalyze_workers=0``): before each gradient step, on the batch it is about to train on;
- **on Ray workers** (``reanalyze_workers=N``, :class:`ReanalyzePipeline`): batches are sampled a few updates ahead
  and their heads searched by ``N`` :class:`ReanalyzeWorker` Ray actors, each with a CPU copy of the network loaded
  with the learner's latest parameters, while the learner trains on earlier batches. A batch is trained on once its
  searches are back; the updates between its parameters and its gradient step are logged (``reanalyze/policy_lag``).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

from sb3_frontier.algorithms.muzero.planning import Planner, SearchSettings, cpu_copy
from sb3_frontier.algorithms.muzero.replay import MuZeroBatch, MuZeroReplayBuffer
from sb3_frontier.common.checks import check_integer
from sb3_frontier.common.observations import Obs, obs_map
from sb3_frontier.common.runners import RayWorkerPool, Worker
from sb3_frontier.common.runners.ray_runner import import_ray
from sb3_frontier.policies.muzero import MuZeroPolicy

#: The options ``reanalyze_kwargs`` may hold (see :class:`~sb3_frontier.common.runners.RayWorkerPool`);
#: ``batches_ahead``: batches each worker holds in flight (default 2).
REANALYZE_OPTIONS = frozenset(
    {
        "batches_ahead",
        "num_cpus_per_worker",
        "torch_threads",
        "max_restarts",
        "start_timeout",
        "ray_address",
        "ray_init_kwargs",
    }
)


def check_reanalyze_workers(workers: int, fraction: float, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    Check the Reanalyze workers' settings (before anything starts).

    :param workers: ``reanalyze_workers``
    :param fraction: ``reanalyze_fraction``
    :param options: ``reanalyze_kwargs``
    :return: the options as a dict
    """
    options = dict(options or {})
    unknown = options.keys() - REANALYZE_OPTIONS
    if unknown:
        raise ValueError(f"Unknown reanalyze_kwargs: {sorted(unknown)} (known: {sorted(REANALYZE_OPTIONS)})")
    if workers == 0:
        if options:
            raise ValueError("reanalyze_kwargs configure Reanalyze workers: set reanalyze_workers >= 1")
        return options
    if fraction == 0:
        raise ValueError("reanalyze_workers run Reanalyze's searches: set reanalyze_fraction > 0 (e.g. **REANALYZE_PRESET)")
    check_integer("reanalyze_kwargs['batches_ahead']", options.get("batches_ahead", 2), 1)
    import_ray()  # fail here, at construction, when Ray is missing
    return options


@dataclass
class ReanalyzeRequest:
    """
    The positions of a batch's head that a fresh search re-targets.

    :param rows: the head's rows of the batch (its first ``rows`` unrolls)
    :param mask: ``[rows, K+1]`` the unrolled states re-searched (those with a stored policy target)
    :param positions: ``[M]`` their absolute replay positions (``M = mask.sum()``)
    :param observations: ``[M, *obs_shape]`` their observations
    :param legal: ``[M, A]`` their legal actions
    """

    rows: int
    mask: np.ndarray
    positions: np.ndarray
    observations: Obs
    legal: np.ndarray


def reanalyze_request(batch: MuZeroBatch, fraction: float, replay: MuZeroReplayBuffer) -> ReanalyzeRequest | None:
    """
    What a fresh search must cover in ``batch``: the policy targets of its first ``round(fraction * B)`` unrolls.

    :param batch: a sampled batch
    :param fraction: the reanalysed fraction
    :param replay: the replay it was sampled from (read at once: the observations are copied)
    :return: the request, or None when nothing is to be searched
    """
    rows = round(fraction * batch.indices.shape[0])
    if rows == 0:
        return None
    mask = batch.policy_mask[:rows]
    if not mask.any():
        return None
    positions = batch.positions[:rows][mask]
    return ReanalyzeRequest(rows, mask, positions, replay.observations_at(positions), batch.legal[:rows][mask])


def apply_reanalyzed(batch: MuZeroBatch, request: ReanalyzeRequest, targets: np.ndarray, replay: MuZeroReplayBuffer) -> int:
    """
    Put fresh policy targets into the batch and into the replay where their positions are still stored.

    :param batch: the batch of the request (changed in place)
    :param request: the request
    :param targets: ``[M, A]`` the fresh search's policy targets
    :param replay: the replay (a position overwritten since the batch was sampled keeps its new game's target)
    :return: positions refreshed in the replay
    """
    targets = np.asarray(targets, dtype=np.float32)
    if targets.shape != (request.positions.shape[0], replay.n_actions):
        expected = (request.positions.shape[0], replay.n_actions)
        raise ValueError(f"Expected policy targets of shape {expected} (positions, actions), got {targets.shape}")
    head = batch.policies[: request.rows]
    head[request.mask] = targets
    live = replay.ring.is_live(request.positions)
    replay.policies[replay.ring.slots(request.positions[live])] = targets[live]
    return int(live.sum())


def fresh_policy_targets(planner: Planner, observations: Obs, legal: np.ndarray) -> np.ndarray:
    """
    Reanalyze's search: the policy targets of a new search (root noise on, as at acting time) of the observations.

    :param planner: searches with the network to reanalyse with (in evaluation mode)
    :param observations: ``[M, *obs_shape]``
    :param legal: ``[M, A]``
    :return: ``[M, A]`` float32
    """
    return planner.policy_target(planner.search(observations, legal, noise=True))


class ReanalyzeWorker(Worker):
    """
    Answers ``(observations, legal)`` with :func:`fresh_policy_targets` of its own network.

    :param planner: its planner (a CPU copy of the network, its own random generator)
    """

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.network = planner.policy

    def __call__(self, request: tuple[Obs, np.ndarray]) -> np.ndarray:
        observations, legal = request
        # Ray hands arrays over read-only (shared with its object store); torch wants writable ones.
        return fresh_policy_targets(self.planner, obs_map(np.array, observations), legal)


class ReanalyzeWorkerFactory:
    """
    Builds Reanalyze workers in their Ray actors: each with a CPU copy of the network and its own random generator.

    :param policy: the learner's network (copied to the CPU here)
    :param settings: the search settings
    :param seed: the model's seed (worker ``i`` draws its root noise from ``(seed, i)``), or None
    """

    def __init__(self, policy: MuZeroPolicy, settings: SearchSettings, seed: int | None = None) -> None:
        self.policy = cpu_copy(policy)
        self.settings = settings
        self.seed = seed

    def __call__(self, index: int) -> ReanalyzeWorker:
        seed = None if self.seed is None else [self.seed, index]
        return ReanalyzeWorker(Planner(self.policy, self.settings, np.random.default_rng(seed)))


@dataclass
class ReanalyzedBatch:
    """
    A batch whose head carries fresh policy targets.

    :param batch: the batch
    :param bootstrap_observations: the observations at its bootstrap positions that hold one (``bootstrap_indices >=
        0``), read when it was sampled (the replay may have overwritten them since), or None when not needed
    :param policy_lag: updates between the parameters that searched it and now
    :param refreshed: positions whose stored targets were refreshed
    """

    batch: MuZeroBatch
    bootstrap_observations: Obs | None
    policy_lag: int
    refreshed: int


class ReanalyzePipeline:
    """
    Batches sampled ahead, their Reanalyze searches running on a :class:`~sb3_frontier.common.runners.RayWorkerPool`
    while the learner trains on earlier ones.

    :param pool: the workers (started by the pipeline's first :meth:`next`)
    :param replay: the learner's replay
    :param fraction: the reanalysed fraction of each batch
    :param batches_ahead: batches in flight per worker
    :param keep_bootstrap_observations: read the bootstrap observations when sampling (for a target-network bootstrap)
    """

    def __init__(
        self,
        pool: RayWorkerPool,
        replay: MuZeroReplayBuffer,
        fraction: float,
        batches_ahead: int = 2,
        keep_bootstrap_observations: bool = False,
    ) -> None:
        self.pool = pool
        self.replay = replay
        self.fraction = fraction
        self.depth = batches_ahead * pool.n_workers
        self.keep_bootstrap_observations = keep_bootstrap_observations
        self._pending: collections.deque[tuple[MuZeroBatch, ReanalyzeRequest | None, int, int, Obs | None]] = (
            collections.deque()
        )

    def next(
        self,
        batch_size: int,
        rng: np.random.Generator,
        importance_exponent: float,
        parameters: dict[str, th.Tensor],
        version: int,
    ) -> ReanalyzedBatch:
        """
        Sample new batches up to the pipeline's depth (searched with ``parameters``) and return the oldest once its
        searches are back.

        :param batch_size: B
        :param rng: the learner's random generator (sampling)
        :param importance_exponent: beta of the importance weights
        :param parameters: the learner's state dict now
        :param version: its version (the update count)
        :return: the oldest batch, its head re-targeted
        """
        if not self.pool.running:
            self.pool.start()
        self.pool.sync(parameters, version)
        while len(self._pending) < self.depth:
            batch = self.replay.sample(batch_size, rng, importance_exponent)
            request = reanalyze_request(batch, self.fraction, self.replay)
            ticket = -1 if request is None else self.pool.submit((request.observations, request.legal))
            bootstrap = None
            if self.keep_bootstrap_observations:
                bootstrap = self.replay.observations_at(batch.bootstrap_indices[batch.bootstrap_indices >= 0])
            self._pending.append((batch, request, ticket, version, bootstrap))
        batch, request, ticket, searched_with, bootstrap = self._pending.popleft()
        refreshed = 0
        if request is not None:
            refreshed = apply_reanalyzed(batch, request, self.pool.result(ticket), self.replay)
        return ReanalyzedBatch(batch, bootstrap, version - searched_with, refreshed)

    def close(self) -> None:
        """Stop the workers and forget the batches in flight (samples only: nothing is lost)."""
        self._pending.clear()
        self.pool.close()


__all__ = [
    "REANALYZE_OPTIONS",
    "ReanalyzePipeline",
    "ReanalyzeRequest",
    "ReanalyzeWorker",
    "ReanalyzeWorkerFactory",
    "ReanalyzedBatch",
    "apply_reanalyzed",
    "check_reanalyze_workers",
    "fresh_policy_targets",
    "reanalyze_request",
]
