"""MuZero with Reanalyze (Schrittwieser et al. 2020) following Stable-Baselines3's ``learn``/``predict`` API.

The loop reads like the paper's pseudocode: the self-play actor searches all envs of the VecEnv together every step
and plays an action from the search (:mod:`~sb3_frontier.algorithms.muzero.collection`); finished game segments go to
a prioritized replay (:mod:`~sb3_frontier.algorithms.muzero.replay`); each update samples K-step unrolls, optionally
refreshes their policy targets with a new search (Reanalyze) and their value bootstraps with a target network, and
minimises the categorical value/reward and policy cross-entropies (:mod:`~sb3_frontier.algorithms.muzero.losses`).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor

from sb3_frontier.algorithms.muzero import mcts
from sb3_frontier.algorithms.muzero.collection import SelfPlayActor, SelfPlayActorFactory
from sb3_frontier.algorithms.muzero.losses import muzero_loss
from sb3_frontier.algorithms.muzero.planning import Planner, SearchSettings, check_temperature
from sb3_frontier.algorithms.muzero.reanalyze import (
    ReanalyzePipeline,
    ReanalyzeWorkerFactory,
    apply_reanalyzed,
    check_reanalyze_workers,
    fresh_policy_targets,
    reanalyze_request,
)
from sb3_frontier.algorithms.muzero.replay import MuZeroBatch, MuZeroReplayBuffer
from sb3_frontier.common.observations import Obs, obs_batch_size
from sb3_frontier.common.precision import check_training_precision
from sb3_frontier.common.replay_algorithm import ReplayAlgorithm, check_integer
from sb3_frontier.common.runners import ActorStep, RayWorkerPool, VecEnvCopy
from sb3_frontier.common.sharded_gradient import ShardedGradient
from sb3_frontier.policies.muzero import CnnPolicy, MlpPolicy, MultiInputPolicy, MuZeroPolicy

SelfMuZero = TypeVar("SelfMuZero", bound="MuZero")


def paper_temperature(progress_remaining: float) -> float:
    """
    The paper's visit-count temperature schedule (Appendix G), as a fraction of training: 1.0 for the first half,
    0.5 for the next quarter, 0.25 for the last quarter.

    :param progress_remaining: SB3's progress, from 1 (start) to 0 (end)
    :return: the temperature
    """
    done = 1.0 - progress_remaining
    if done < 0.5:
        return 1.0
    if done < 0.75:
        return 0.5
    return 0.25


#: MuZero Reanalyze (Appendix H): fresh policy targets for 80% of the samples, value targets bootstrapped from a
#: target network with n = 5, and the value loss weighted by 0.25.
REANALYZE_PRESET: dict[str, Any] = dict(
    reanalyze_fraction=0.8,
    value_bootstrap="target",
    td_steps=5,
    value_loss_coef=0.25,
)

#: Value bounds of board games (win +1, loss -1), the pseudocode's ``KnownBounds`` for the search's Q normalisation.
BOARD_GAME_BOUNDS = (-1.0, 1.0)


class MuZero(ReplayAlgorithm):
    """
    MuZero: planning with a learned model (Schrittwieser et al. 2020), with MuZero Reanalyze and Gumbel MuZero.

    Paper defaults: K=5 unroll steps, n=10 bootstrap steps, gamma=0.997, 50 simulations, pUCT c1=1.25 and c2=19652,
    root Dirichlet noise alpha=0.25 with fraction 0.25, 601-bin value and reward supports over h-transformed scalars,
    priority exponent 1 and importance exponent 1, the 1.0/0.5/0.25 temperature schedule, L2 regularisation 1e-4
    (the optimizer's ``weight_decay``). Batch size, learning rate and buffer size default to CPU-sized values
    (the paper: 1024, SGD 0.05, 1M sequences). ``MuZero(policy, env, **REANALYZE_PRESET)`` gives MuZero Reanalyze;
    ``search="gumbel"`` Gumbel MuZero (Danihelka et al. 2022: Sequential Halving at the root, trained towards the
    improved policy ``softmax(logits + sigma(completed Q))``; few simulations suffice).

    Episodes: ``terminated`` ends bootstrapping, ``truncated`` does not (the value of the final observation is
    bootstrapped); a life lost under :class:`~sb3_frontier.wrappers.LifeLoss` ("roll") stops bootstrapping at that
    step. Legal actions are read from the env's ``action_masks()`` (sb3-contrib's convention) or
    ``info["action_mask"]`` (True = legal) and respected by the search at the root (the paper masks only there)
    and in the policy targets; ``predict`` takes them as ``action_masks`` (evaluate with sb3-contrib's maskable
    ``evaluate_policy`` / ``MaskableEvalCallback``, which pass them).

    ``learn()`` without ``total_timesteps`` trains for :attr:`default_total_timesteps` (100,000) environment steps.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a :class:`MuZeroPolicy` subclass
    :param env: environment (id, gymnasium env or VecEnv) with a Discrete action space
    :param learning_rate: learning rate (constant or schedule)
    :param buffer_size: replay capacity in positions
    :param learning_starts: environment steps collected before training starts
    :param batch_size: unrolls per gradient step
    :param num_simulations: simulations per search
    :param unroll_steps: K, steps the dynamics are unrolled in training
    :param td_steps: n of the bootstrapped value targets
    :param gamma: discount
    :param train_freq: collection between training phases: ``n`` VecEnv steps, ``(n, "step")`` or ``(n, "episode")``
    :param gradient_steps: gradient steps per training phase (-1: one per VecEnv step collected)
    :param search: ``"muzero"`` (pUCT with Dirichlet noise, the paper) or ``"gumbel"`` (Gumbel MuZero)
    :param temperature: visit-count temperature of acting (``"muzero"``), a constant or a schedule of SB3's progress
        remaining
    :param temperature_moves: if set, only the first ``temperature_moves`` moves of each episode are drawn with the
        temperature and the later ones take the most visited action (the paper's board-game schedule: 30 moves for
        Go and chess); ``None`` applies the temperature to every move (the paper's Atari setting)
    :param dirichlet_alpha: root noise concentration
    :param dirichlet_fraction: root noise weight (0: no noise)
    :param pb_c_init: pUCT c1 (>= 0)
    :param pb_c_base: pUCT c2 (> 0)
    :param unvisited_value: Q of unvisited children in pUCT: ``"parent"`` (the parent's value, as mctx and
        EfficientZero) or ``"zero"`` (the paper's pseudocode, which makes searches of few simulations follow the
        first child they visit; see :func:`~sb3_frontier.algorithms.muzero.mcts.muzero_policy`)
    :param known_bounds: known (min, max) of the values for the search's Q normalisation (the pseudocode's
        ``KnownBounds``); ``"auto"``: (-1, 1) for two-player games, none otherwise
    :param max_num_considered_actions: root actions Gumbel MuZero's Sequential Halving considers
    :param value_scale: Gumbel MuZero's sigma scale of completed Q-values
    :param maxvisit_init: Gumbel MuZero's sigma visit offset
    :param priority_exponent: alpha of prioritized replay (0: uniform)
    :param importance_exponent: beta of the importance-sampling weights (0: none)
    :param reanalyze_fraction: fraction of each batch whose policy targets are recomputed by a fresh search with the
        latest network (also written back into the replay: the stored game's targets are refreshed)
    :param reanalyze_workers: Ray workers that run Reanalyze's searches on batches sampled ahead while the learner
        trains (needs Ray, any ``runner``; :mod:`~sb3_frontier.algorithms.muzero.reanalyze`); 0: the learner searches
        before each gradient step
    :param reanalyze_kwargs: options of the workers: ``batches_ahead`` (2 per worker), ``num_cpus_per_worker`` (1),
        ``torch_threads`` (1), ``max_restarts`` (10), ``start_timeout``, ``ray_address``, ``ray_init_kwargs`` (see
        :class:`~sb3_frontier.common.runners.RayWorkerPool`)
    :param value_bootstrap: ``"search"`` bootstraps value targets from the search values stored at acting time;
        ``"target"`` from a target network's value of the bootstrap observation (MuZero Reanalyze)
    :param target_update_interval: gradient steps between copies of the network into the target network
    :param value_loss_coef: weight of the value loss (0.25 in MuZero Reanalyze)
    :param reward_loss_coef: weight of the reward loss
    :param policy_loss_coef: weight of the policy loss
    :param max_grad_norm: gradient clipping norm (> 0), or None for none
    :param gradient_threads: threads a gradient step runs on, each the forward and backward pass of its shard of the
        batch (:class:`~sb3_frontier.common.sharded_gradient.ShardedGradient`; the shards' gradients are summed in a
        fixed order, the batch's gradient up to float rounding). On a CPU set it to the cores the learner may use,
        with one torch thread (``torch.set_num_threads(1)``): shards scale where torch's intra-op threads do not
    :param training_precision: ``"float32"``, or ``"bfloat16"``: the training unroll's forward pass runs under
        ``torch.autocast`` in bfloat16, the loss, gradients, parameters and optimizer in float32
        (:mod:`~sb3_frontier.common.precision`). Faster on hardware with native bfloat16 (a CPU with AVX512-BF16 or
        AMX, a recent GPU; elsewhere a warning says it is emulated); the search and the value bootstrap stay float32.
        For convolutional networks where training dominates (Atari); a small MLP gains little and its rounded hidden
        state can cost learning (CartPole: 3 of 5 seeds stayed at 475 against 5 of 5, benchmarks/results.md)
    :param segment_length: sampleable positions per stored segment of a long game
    :param two_player: board-game mode: self-play of both sides, value targets are the final outcome for the
        player to move, rewards are zero and the search flips perspective every ply (needs ``gamma=1``)
    :param runner: where the self-play actors run: ``"in-process"`` (the learner steps its VecEnv, acting and
        learning alternate), ``"processes"`` (actor processes with their own env copies and a CPU copy of the network,
        acting while the learner trains; parameters reach them after every update phase) or ``"ray"`` (the same actors
        as Ray actors, on this machine or a cluster)
    :param runner_kwargs: options of the runner (``"processes"``: ``n_actors``, ``sync_every``,
        ``start_method``, ``torch_threads``; see :class:`~sb3_frontier.common.runners.ProcessRunner`; ``"ray"``: see
        :class:`~sb3_frontier.common.runners.RayRunner`)
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: tensorboard log directory
    :param policy_kwargs: keyword arguments of the policy (network sizes, supports, optimizer)
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: random seed
    :param device: torch device
    :param _init_setup_model: build the networks now
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    #: Environment steps of ``learn()`` called without ``total_timesteps``.
    default_total_timesteps: ClassVar[int] = 100_000
    policy: MuZeroPolicy
    replay_buffer: MuZeroReplayBuffer | None

    def __init__(
        self,
        policy: str | type[MuZeroPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        learning_starts: int = 1_000,
        batch_size: int = 256,
        num_simulations: int = 50,
        unroll_steps: int = 5,
        td_steps: int = 10,
        gamma: float = 0.997,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        search: str = "muzero",
        temperature: float | Schedule = paper_temperature,
        temperature_moves: int | None = None,
        dirichlet_alpha: float = 0.25,
        dirichlet_fraction: float = 0.25,
        pb_c_init: float = 1.25,
        pb_c_base: float = 19652.0,
        unvisited_value: str = "parent",
        known_bounds: tuple[float, float] | str | None = "auto",
        max_num_considered_actions: int = 16,
        value_scale: float = 0.1,
        maxvisit_init: float = 50.0,
        priority_exponent: float = 1.0,
        importance_exponent: float = 1.0,
        reanalyze_fraction: float = 0.0,
        reanalyze_workers: int = 0,
        reanalyze_kwargs: dict[str, Any] | None = None,
        value_bootstrap: str = "search",
        target_update_interval: int = 100,
        value_loss_coef: float = 1.0,
        reward_loss_coef: float = 1.0,
        policy_loss_coef: float = 1.0,
        max_grad_norm: float | None = 5.0,
        gradient_threads: int = 1,
        training_precision: str = "float32",
        segment_length: int = 200,
        two_player: bool = False,
        runner: str = "in-process",
        runner_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        self.unroll_steps = check_integer("unroll_steps", unroll_steps, 1)
        self.td_steps = check_integer("td_steps", td_steps, 1)
        self.target_update_interval = check_integer("target_update_interval", target_update_interval, 1)
        self.segment_length = check_integer("segment_length", segment_length, 1)
        self.gradient_threads = check_integer("gradient_threads", gradient_threads, 1)
        check_training_precision(training_precision)
        self.training_precision = training_precision
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if two_player and gamma != 1.0:
            raise ValueError(f"two_player=True trains on undiscounted final outcomes: it needs gamma=1.0, got gamma={gamma}")
        if not 0.0 <= reanalyze_fraction <= 1.0:
            raise ValueError(f"reanalyze_fraction must lie in [0, 1], got {reanalyze_fraction}")
        self.reanalyze_workers = check_integer("reanalyze_workers", reanalyze_workers, 0)
        self.reanalyze_kwargs = check_reanalyze_workers(self.reanalyze_workers, reanalyze_fraction, reanalyze_kwargs)
        if temperature_moves is not None:
            check_integer("temperature_moves", temperature_moves, 0)
        if not callable(temperature):
            check_temperature(temperature)
        if value_bootstrap not in ("search", "target"):
            raise ValueError(f"value_bootstrap must be 'search' or 'target', got {value_bootstrap!r}")
        if priority_exponent < 0 or importance_exponent < 0:
            raise ValueError("priority_exponent and importance_exponent must be >= 0")
        if min(value_loss_coef, reward_loss_coef, policy_loss_coef) < 0:
            raise ValueError("Loss coefficients must be >= 0")
        if max_grad_norm is not None and not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ValueError(
                f"max_grad_norm must be a positive number (the largest gradient norm), or None for no clipping; "
                f"got {max_grad_norm}"
            )
        if buffer_size < segment_length + unroll_steps + td_steps + 1:
            raise ValueError(
                f"buffer_size={buffer_size} cannot hold one segment of {segment_length} positions plus its look-ahead "
                f"of K + n = {unroll_steps + td_steps}"
            )
        if known_bounds == "auto":
            known_bounds = BOARD_GAME_BOUNDS if two_player else None
        elif isinstance(known_bounds, str):
            raise ValueError(f"known_bounds must be 'auto', None or (min, max), got {known_bounds!r}")
        # Validated here, where the user set them, not at the first search.
        self.search_settings = SearchSettings(
            num_simulations=num_simulations,
            discount=-gamma if two_player else gamma,
            search=search,
            dirichlet_alpha=dirichlet_alpha,
            dirichlet_fraction=dirichlet_fraction,
            pb_c_init=pb_c_init,
            pb_c_base=pb_c_base,
            unvisited_value=unvisited_value,
            known_bounds=None if known_bounds is None else (float(known_bounds[0]), float(known_bounds[1])),
            max_num_considered_actions=max_num_considered_actions,
            value_scale=value_scale,
            maxvisit_init=maxvisit_init,
        )
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            runner=runner,
            runner_kwargs=runner_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            supported_action_spaces=(spaces.Discrete,),
        )
        self.num_simulations = num_simulations
        self.gamma = gamma
        self.search_algorithm = search
        self.temperature = temperature
        self.temperature_moves = temperature_moves
        self.priority_exponent = priority_exponent
        self.importance_exponent = importance_exponent
        self.reanalyze_fraction = reanalyze_fraction
        self.value_bootstrap = value_bootstrap
        self.value_loss_coef = value_loss_coef
        self.reward_loss_coef = reward_loss_coef
        self.policy_loss_coef = policy_loss_coef
        self.max_grad_norm = max_grad_norm
        self.two_player = two_player
        self._warned: set[str] = set()
        self._rng: np.random.Generator | None = None
        self._reanalyze_pipeline: ReanalyzePipeline | None = None
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------------------------ set-up
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self._rng is None:  # a loaded model keeps the generator state it was saved with
            self._rng = np.random.default_rng(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self.target_policy = copy.deepcopy(self.policy)
        self.target_policy.set_training_mode(False)
        for param in self.target_policy.parameters():
            param.requires_grad_(False)
        self.n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
        self.replay_buffer = MuZeroReplayBuffer(
            self.buffer_size,
            self.observation_space,
            self.n_actions,
            unroll_steps=self.unroll_steps,
            td_steps=self.td_steps,
            gamma=self.gamma,
            priority_exponent=self.priority_exponent,
            two_player=self.two_player,
        )
        self.planner = Planner(self.policy, self.search_settings, self._rng)
        self._autocast_dtype = check_training_precision(self.training_precision, self.device)
        self._gradient: ShardedGradient[tuple[dict[str, th.Tensor], np.ndarray]] = ShardedGradient(
            list(self.policy.parameters()), self.gradient_threads
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "planner", "_warned", "_reanalyze_pipeline", "_gradient", "_autocast_dtype"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "target_policy"], []

    def _check_replay_buffer(self, buffer: Any) -> None:
        if not isinstance(buffer, MuZeroReplayBuffer):
            raise TypeError(f"Expected a MuZeroReplayBuffer, got {type(buffer).__name__}")
        assert self.replay_buffer is not None
        expected, got = self.replay_buffer.settings(), buffer.settings()
        differ = [f"{key}: model {expected[key]!r}, replay {got[key]!r}" for key in expected if expected[key] != got[key]]
        if differ:
            raise ValueError(
                "This replay buffer was filled for another model (its stored targets and observations would not fit): "
                + "; ".join(differ)
            )

    # ------------------------------------------------------------------------------------------------------ acting
    def _actor_settings(self) -> dict[str, Any]:
        return {
            "segment_length": self.segment_length,
            "lookahead": self.unroll_steps + self.td_steps,
            "temperature": self.temperature,
            "temperature_moves": self.temperature_moves,
            "two_player": self.two_player,
        }

    def _make_actor(self) -> SelfPlayActor:
        assert self.env is not None
        return SelfPlayActor(self.env, self.planner, **self._actor_settings())

    def _actor_factory(self, env: VecEnvCopy) -> SelfPlayActorFactory:
        return SelfPlayActorFactory(env, self.policy, self.search_settings, **self._actor_settings())

    def _store(self, step: ActorStep) -> None:
        assert self.replay_buffer is not None
        for segment in step.items:
            self.replay_buffer.add(segment)
            self._warn_if_clipped("reward", self.policy.reward_support, segment.rewards)

    def _record_logs(self) -> None:
        if self.search_algorithm == "muzero":
            temperature = self.temperature
            if callable(temperature):
                temperature = temperature(self._current_progress_remaining)
            self.logger.record("search/temperature", float(temperature))

    def _warn_if_clipped(self, what: str, support: Any, values: np.ndarray) -> None:
        if what in self._warned or values.size == 0:
            return
        fraction = support.fraction_clipped(values)
        if fraction > 0:
            self._warned.add(what)
            warnings.warn(
                f"{100 * fraction:.2g}% of the {what} targets fall outside the {what} support "
                f"[{support.vmin}, {support.vmax}] (after h) and are clamped: enlarge policy_kwargs['{what}_support']"
            )

    def search(
        self,
        observations: np.ndarray | dict[str, np.ndarray] | th.Tensor | dict[str, th.Tensor],
        legal: np.ndarray | None = None,
        noise: bool = False,
        temperature: float = 1.0,
    ) -> mcts.SearchOutput:
        """
        Search a batch of observations with the current network.

        :param observations: [B, *obs_shape] (or a dict of such arrays), numpy or torch
        :param legal: [B, A] legal actions (True = legal), or None for all legal
        :param noise: explore at the root (acting, Reanalyze) or not (evaluation)
        :param temperature: visit-count temperature of the returned actions (0: most visited)
        :return: the search output (actions, visit counts, search values, ...)
        """
        return self.planner.search(observations, legal, noise=noise, temperature=temperature)

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Search the observations (no exploration noise) and act: the most visited action when ``deterministic``,
        otherwise an action drawn in proportion to the visit counts (Gumbel MuZero: its Sequential Halving choice,
        with Gumbel noise unless ``deterministic``).

        :param observation: one observation or a batch
        :param state: unused (MuZero's representation is feed-forward), returned as is
        :param episode_start: unused
        :param deterministic: take the most visited action
        :param action_masks: legal actions (True = legal), [A] or [B, A] (sb3-contrib's maskable ``evaluate_policy``
            and ``MaskableEvalCallback`` pass the env's ``action_masks()``)
        :return: actions and ``state``
        """
        self.policy.set_training_mode(False)
        obs, vectorized = self.policy.obs_to_tensor(observation)
        legal = None
        if action_masks is not None:
            legal = np.asarray(action_masks, dtype=bool).reshape(obs_batch_size(obs), self.n_actions)
        out = self.planner.search(
            obs,
            legal,
            noise=not deterministic and self.search_algorithm == "gumbel",
            temperature=0.0 if deterministic else 1.0,
        )
        actions = out.action
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, state

    # ------------------------------------------------------------------------------------------------------ learning
    def learn(
        self: SelfMuZero,
        total_timesteps: int | None = None,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MuZero",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMuZero:
        """
        Self-play and train for ``total_timesteps`` environment steps (summed over the envs).

        :param total_timesteps: environment steps to collect (``None``: :attr:`default_total_timesteps`)
        :param callback: SB3 callback(s), called after every VecEnv step
        :param log_interval: episodes between log dumps
        :param tb_log_name: tensorboard run name
        :param reset_num_timesteps: start counting (and the games) afresh; False resumes the games in progress
        :param progress_bar: show a progress bar
        :return: the trained model
        """
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _bootstrap_values(self, batch: MuZeroBatch, observations: Obs | None = None) -> np.ndarray | None:
        """
        Target-network values of the bootstrap observations (None: use the stored search values).

        :param batch: the batch
        :param observations: its bootstrap observations (``bootstrap_indices >= 0``), read when it was sampled
            (default: read from the replay now)
        """
        if self.value_bootstrap != "target":
            return None
        assert self.replay_buffer is not None
        values = np.zeros(batch.bootstrap_indices.shape, dtype=np.float32)
        has = batch.bootstrap_indices >= 0
        if has.any():
            obs = self.replay_buffer.observations_at(batch.bootstrap_indices[has]) if observations is None else observations
            with th.no_grad():
                _, _, value_logits = self.target_policy.initial_inference(obs_as_tensor(obs, self.device))
                values[has] = self.policy.value_support.decode_logits(value_logits).cpu().numpy()
        return values

    def _reanalyze(self, batch: MuZeroBatch) -> int:
        """
        Fresh policy targets (a new search with the latest network) for the first fraction of the batch, in place and
        in the replay.

        :return: positions whose stored targets were refreshed
        """
        assert self.replay_buffer is not None
        request = reanalyze_request(batch, self.reanalyze_fraction, self.replay_buffer)
        if request is None:
            return 0
        self.policy.set_training_mode(False)
        targets = fresh_policy_targets(self.planner, request.observations, request.legal)
        self.policy.set_training_mode(True)
        return apply_reanalyzed(batch, request, targets, self.replay_buffer)

    def _reanalyze_workers_pipeline(self) -> ReanalyzePipeline:
        """The Ray workers' pipeline of batches (built at the first gradient step of a ``learn``)."""
        if self._reanalyze_pipeline is None:
            assert self.replay_buffer is not None
            options = dict(self.reanalyze_kwargs)
            batches_ahead = options.pop("batches_ahead", 2)
            pool = RayWorkerPool(
                ReanalyzeWorkerFactory(self.policy, self.search_settings, self.seed),
                self.reanalyze_workers,
                self._actor_parameters(),
                name="Reanalyze worker",
                option="reanalyze_kwargs['start_timeout']",
                **options,
            )
            self._reanalyze_pipeline = ReanalyzePipeline(
                pool,
                self.replay_buffer,
                self.reanalyze_fraction,
                batches_ahead,
                keep_bootstrap_observations=self.value_bootstrap == "target",
            )
        return self._reanalyze_pipeline

    def _close_runner(self) -> None:
        """Stop the actors and the Reanalyze workers (``learn()`` returned, raised or was interrupted)."""
        try:
            super()._close_runner()
        finally:
            if self._reanalyze_pipeline is not None:
                self._reanalyze_pipeline.close()
                self._reanalyze_pipeline = None

    def _shard_loss(
        self, batch: MuZeroBatch, value_targets: np.ndarray, shard: slice
    ) -> tuple[th.Tensor, tuple[dict[str, th.Tensor], np.ndarray]]:
        """The loss of the unrolls ``shard`` of ``batch``, its parts (detached) and the network's root values."""
        losses, root_values = muzero_loss(
            self.policy,
            batch.shard(shard),
            value_targets[shard],
            self.value_loss_coef,
            self.reward_loss_coef,
            self.policy_loss_coef,
            self._autocast_dtype,
        )
        return losses["loss"], ({key: value.detach() for key, value in losses.items()}, root_values)

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """
        Gradient steps on sampled K-step unrolls (the paper's ``update_weights``).

        :param gradient_steps: number of steps
        :param batch_size: unrolls per step
        """
        assert self.replay_buffer is not None and self._rng is not None
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        logs: dict[str, list[float]] = {}
        for _ in range(gradient_steps):
            bootstrap_observations = None
            if self.reanalyze_workers > 0:
                prepared = self._reanalyze_workers_pipeline().next(
                    batch_size, self._rng, self.importance_exponent, self._actor_parameters(), self._n_updates
                )
                batch, bootstrap_observations = prepared.batch, prepared.bootstrap_observations
                logs.setdefault("reanalyze_policy_lag", []).append(prepared.policy_lag)
                logs.setdefault("reanalyze_refreshed", []).append(prepared.refreshed)
            else:
                batch = self.replay_buffer.sample(batch_size, self._rng, self.importance_exponent)
                if self.reanalyze_fraction > 0:
                    logs.setdefault("reanalyze_refreshed", []).append(self._reanalyze(batch))
            value_targets = batch.value_targets(self._bootstrap_values(batch, bootstrap_observations))
            self._warn_if_clipped("value", self.policy.value_support, value_targets[batch.value_mask])
            self.policy.optimizer.zero_grad()
            n_samples = len(batch.indices)
            loss, shards = self._gradient(n_samples, functools.partial(self._shard_loss, batch, value_targets))
            # Each shard's mean loss parts, weighted by its share of the batch: the batch's means.
            losses = {
                key: th.stack([len(values) / n_samples * parts[key] for parts, values in shards]).sum()
                for key in shards[0][0]
                if key != "loss"
            }
            losses = {"loss": loss, **losses}
            root_values = np.concatenate([values for _, values in shards])
            if not th.isfinite(loss):
                parts = {k: float(v) for k, v in losses.items()}
                raise RuntimeError(f"MuZero loss is not finite: {parts} (check rewards, supports and learning rate)")
            if self.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            errors = np.abs(root_values - value_targets[:, 0])
            self.replay_buffer.update_priorities(batch.indices, errors)
            self._n_updates += 1
            if self._n_updates % self.target_update_interval == 0:
                self.target_policy.load_state_dict(self.policy.state_dict())
            for key, value in losses.items():
                logs.setdefault(key, []).append(value.item())
            logs.setdefault("priority_mean", []).append(float(errors.mean()))
            logs.setdefault("importance_weight_mean", []).append(float(batch.weights.mean()))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))
        self.logger.record("train/replay_positions", len(self.replay_buffer))
        if self._reanalyze_pipeline is not None:
            self.logger.record("train/reanalyze_restarts", self._reanalyze_pipeline.pool.restarts)


__all__ = ["BOARD_GAME_BOUNDS", "REANALYZE_PRESET", "MuZero", "paper_temperature"]
