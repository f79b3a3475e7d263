"""R2D2: Recurrent Replay Distributed DQN (Kapturowski et al. 2019) following Stable-Baselines3's API.

Actors (:mod:`~sb3_frontier.algorithms.r2d2.actor`) act epsilon-greedily with a recurrent dueling Q-network and cut
their experience into overlapping sequences that enter a prioritized replay with the recurrent state before their
first step (:mod:`~sb3_frontier.algorithms.r2d2.replay`). The learner replays the state, runs the burn-in under
``no_grad`` for the online and the target network, and minimises the squared error to n-step double-Q targets
through the transformed Bellman operator (:mod:`~sb3_frontier.algorithms.r2d2.targets`); sequence priorities mix
the maximum and the mean absolute TD error.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_frontier.algorithms.r2d2.actor import R2D2Actor, R2D2ActorFactory, epsilon_ladder
from sb3_frontier.algorithms.r2d2.replay import SequenceBatch, SequenceReplay
from sb3_frontier.algorithms.r2d2.targets import sequence_priorities, window_bootstrap
from sb3_frontier.common.replay_algorithm import ReplayAlgorithm, check_integer
from sb3_frontier.common.runners import ActorStep, VecEnvCopy
from sb3_frontier.common.sharded_gradient import ShardedGradient
from sb3_frontier.policies.r2d2 import CnnPolicy, MlpPolicy, MultiInputPolicy, R2D2Policy
from sb3_frontier.wrappers.previous_action_reward import (
    OBSERVATION,
    PREV_ACTION,
    PREV_REWARD,
    VecPreviousActionReward,
    has_previous_action_reward,
)
from sb3_frontier.wrappers.value_transforms import ValueRescaling

SelfR2D2 = TypeVar("SelfR2D2", bound="R2D2")


def _combine_diagnostics(shards: list[tuple[np.ndarray, dict[str, float], float]]) -> dict[str, float]:
    """The batch's diagnostics from its shards': ``q_mean`` (a mean over real steps) weighted by the shards' real
    steps, the per-sequence means (ΔQ) by their sequences."""
    sizes = np.array([delta.shape[1] for delta, _, _ in shards], dtype=np.float64)
    steps = np.array([n for _, _, n in shards], dtype=np.float64)
    combined = {}
    for key in shards[0][1]:
        weights = steps if key == "q_mean" else sizes
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(shards), 1.0 / len(shards))
        combined[key] = float(sum(w * diagnostics[key] for w, (_, diagnostics, _) in zip(weights, shards, strict=True)))
    return combined


class R2D2(ReplayAlgorithm):
    """
    R2D2: recurrent experience replay in distributed reinforcement learning (Kapturowski et al. 2019).

    The paper's Table 2 as defaults: sequences of 80 steps overlapping by 40 with a burn-in of 40, n = 5 double-Q
    targets through ``h(x) = sign(x)(sqrt(|x| + 1) - 1) + 1e-3 x``, gamma 0.997, Adam (lr 1e-4, eps 1e-3), batch 64,
    target network copied every 2500 updates, priority exponent 0.9 with eta 0.9, importance-sampling exponent 0.6
    (0 turns it off), epsilons ``0.4^(1 + 7 i / (N - 1))`` over the ``N`` envs of all actors. Replay capacity,
    learning start and the update rate are CPU-sized (the paper: 1M sequences, 256 actors).

    The env is wrapped in :class:`~sb3_frontier.wrappers.VecPreviousActionReward`, which gives the LSTM the previous
    action and reward through the observation: wrap evaluation envs the same way (``model.get_env()`` is), or build
    the policy with ``policy_kwargs=dict(previous_action_reward=False)`` to act on plain observations.

    Episodes: ``terminated`` ends bootstrapping, ``truncated`` does not; a life lost under
    :class:`~sb3_frontier.wrappers.LifeLoss` (``"roll"``) stops bootstrapping and keeps the recurrent state.

    ``learn()`` without ``total_timesteps`` trains for :attr:`default_total_timesteps` (200,000) environment steps.

    :param policy: ``"MlpLstmPolicy"``, ``"CnnLstmPolicy"``, ``"MultiInputLstmPolicy"`` (or the same without ``Lstm``),
        or an :class:`~sb3_frontier.policies.r2d2.R2D2Policy` subclass
    :param env: environment (id, gymnasium env or VecEnv) with a Discrete action space
    :param learning_rate: Adam's learning rate (constant or schedule)
    :param buffer_size: replay capacity in observations (each stored once)
    :param learning_starts: environment steps collected before the first update
    :param batch_size: sequences per update
    :param sequence_length: training steps per sequence (m)
    :param burn_in: steps before each sequence that only set up the recurrent state (l)
    :param overlap: steps shared by adjacent sequences of an episode
    :param n_step: n of the targets
    :param gamma: discount
    :param train_freq: collection between update phases: ``n`` VecEnv steps, ``(n, "step")`` or ``(n, "episode")``
    :param gradient_steps: updates per phase (-1: one per VecEnv step collected)
    :param target_update_interval: updates between copies of the online network into the target network
    :param priority_exponent: alpha of the prioritized sampling (0: uniform)
    :param importance_exponent: beta of the importance weights (0: no importance weighting)
    :param priority_eta: eta of the priority mix ``eta max|delta| + (1 - eta) mean|delta|``
    :param initial_priority: priority of new sequences: ``"actor"`` (the actor's estimate from its own Q-values, the
        paper's) or ``"max"`` (the largest priority so far, as prioritized replay without actor priorities)
    :param value_rescaling_eps: epsilon of h
    :param exploration: the actors' epsilons: ``"ladder"`` (the paper's), one float for all envs, or a sequence of
        ``n_actors * n_envs`` floats
    :param eval_epsilon: the epsilon of ``predict(..., deterministic=False)``
    :param max_grad_norm: gradient clipping norm, or None (the paper does not clip)
    :param gradient_threads: threads an update runs on, each the forward and backward pass of its shard of the
        sequences (:class:`~sb3_frontier.common.sharded_gradient.ShardedGradient`: the batch's gradient up to float
        rounding); on a CPU, the cores the learner may use, with one torch thread
    :param runner: ``"in-process"``, ``"processes"`` (actor processes) or ``"ray"`` (Ray actors, on this machine or a
        cluster); actors read the parameters every ``sync_every=400`` of their steps unless ``runner_kwargs`` says
        otherwise, and the epsilon ladder spans every env of every actor
    :param runner_kwargs: options of the runner (see :class:`~sb3_frontier.common.ReplayAlgorithm`)
    :param diagnostics_interval: updates between two measurements of the recurrent-state staleness (ΔQ)
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: tensorboard log directory
    :param policy_kwargs: keyword arguments of the policy (torso, LSTM and dueling sizes, ...)
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: random seed
    :param device: torch device
    :param _init_setup_model: build the networks now
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpLstmPolicy": MlpPolicy,
        "CnnLstmPolicy": CnnPolicy,
        "MultiInputLstmPolicy": MultiInputPolicy,
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    #: Environment steps of ``learn()`` called without ``total_timesteps``.
    default_total_timesteps: ClassVar[int] = 200_000
    #: Actor steps between two parameter reads of actor processes (the paper's 400).
    default_sync_every: ClassVar[int] = 400
    policy: R2D2Policy
    replay_buffer: SequenceReplay | None

    def __init__(
        self,
        policy: str | type[R2D2Policy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 100_000,
        learning_starts: int = 5_000,
        batch_size: int = 64,
        sequence_length: int = 80,
        burn_in: int = 40,
        overlap: int = 40,
        n_step: int = 5,
        gamma: float = 0.997,
        train_freq: int | tuple[int, str] = 40,
        gradient_steps: int = 1,
        target_update_interval: int = 2500,
        priority_exponent: float = 0.9,
        importance_exponent: float = 0.6,
        priority_eta: float = 0.9,
        initial_priority: str = "actor",
        value_rescaling_eps: float = 1e-3,
        exploration: str | float | list[float] = "ladder",
        eval_epsilon: float = 0.01,
        max_grad_norm: float | None = None,
        gradient_threads: int = 1,
        runner: str = "in-process",
        runner_kwargs: dict[str, Any] | None = None,
        diagnostics_interval: int = 10,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        self.sequence_length = check_integer("sequence_length", sequence_length, 1)
        self.burn_in = check_integer("burn_in", burn_in, 0)
        self.overlap = check_integer("overlap", overlap, 0)
        if self.overlap >= self.sequence_length:
            raise ValueError(
                f"overlap ({overlap}) must be smaller than sequence_length ({sequence_length}): adjacent sequences "
                "would start at the same step"
            )
        self.n_step = check_integer("n_step", n_step, 1)
        self.target_update_interval = check_integer("target_update_interval", target_update_interval, 1)
        self.diagnostics_interval = check_integer("diagnostics_interval", diagnostics_interval, 1)
        if buffer_size < self.burn_in + self.sequence_length + 1:
            raise ValueError(
                f"buffer_size={buffer_size} observations cannot hold one sequence of burn_in + sequence_length + 1 = "
                f"{self.burn_in + self.sequence_length + 1} observations"
            )
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if not 0.0 <= priority_eta <= 1.0:
            raise ValueError(f"priority_eta must lie in [0, 1], got {priority_eta}")
        if priority_exponent < 0 or importance_exponent < 0:
            raise ValueError("priority_exponent and importance_exponent must be >= 0")
        if initial_priority not in ("actor", "max"):
            raise ValueError(f"initial_priority must be 'actor' or 'max', got {initial_priority!r}")
        if not 0.0 <= eval_epsilon <= 1.0:
            raise ValueError(f"eval_epsilon must lie in [0, 1], got {eval_epsilon}")
        self.gradient_threads = check_integer("gradient_threads", gradient_threads, 1)
        if max_grad_norm is not None and not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number or None, got {max_grad_norm}")
        if isinstance(exploration, str) and exploration != "ladder":
            raise ValueError(f"exploration must be 'ladder', an epsilon or a list of epsilons, got {exploration!r}")
        if not isinstance(exploration, str):
            values = np.atleast_1d(np.asarray(exploration, dtype=np.float64))
            if not np.all((values >= 0) & (values <= 1)):
                raise ValueError(f"Epsilons must lie in [0, 1], got {exploration}")
        runner_kwargs = dict(runner_kwargs or {})
        if runner in ("processes", "ray"):
            runner_kwargs.setdefault("sync_every", self.default_sync_every)
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
        self.gamma = gamma
        self.priority_exponent = priority_exponent
        self.importance_exponent = importance_exponent
        self.priority_eta = priority_eta
        self.initial_priority = initial_priority
        self.value_rescaling_eps = value_rescaling_eps
        self.exploration = exploration
        self.eval_epsilon = eval_epsilon
        self.max_grad_norm = max_grad_norm
        self._rng: np.random.Generator | None = None
        self._train_time = 0.0
        self._train_updates = 0
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------------------------ set-up
    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """SB3's wrapping, then the previous action and reward into the observations (see the class docstring)."""
        vec_env = BaseAlgorithm._wrap_env(env, verbose, monitor_wrapper)
        if isinstance(vec_env.action_space, spaces.Discrete) and not has_previous_action_reward(vec_env.observation_space):
            vec_env = VecPreviousActionReward(vec_env)
        return vec_env

    def _setup_model(self) -> None:
        self.rescaling = ValueRescaling(self.value_rescaling_eps)  # here, so that a loaded model gets its own eps
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
        self.replay_buffer = SequenceReplay(
            self.buffer_size,
            self.observation_space,
            sequence_slots=self.burn_in + self.sequence_length,
            hidden_size=self.policy.lstm_hidden_size,
            stride=self.sequence_length - self.overlap,
            priority_exponent=self.priority_exponent,
        )
        self._gradient: ShardedGradient[tuple[np.ndarray, dict[str, float], float]] = ShardedGradient(
            list(self.policy.parameters()), self.gradient_threads
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "rescaling", "_gradient"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "target_policy"], []

    def _check_replay_buffer(self, buffer: Any) -> None:
        if not isinstance(buffer, SequenceReplay):
            raise TypeError(f"Expected a SequenceReplay, got {type(buffer).__name__}")
        assert self.replay_buffer is not None
        expected, got = self.replay_buffer.settings(), buffer.settings()
        differ = [f"{key}: model {expected[key]!r}, replay {got[key]!r}" for key in expected if expected[key] != got[key]]
        if differ:
            raise ValueError("This replay buffer was filled for another model: " + "; ".join(differ))

    # ------------------------------------------------------------------------------------------------------ acting
    def _n_acting_envs(self) -> int:
        assert self.env is not None
        return self.n_actors * self.env.num_envs

    def _epsilons(self) -> np.ndarray:
        """Epsilons of all envs of all actors."""
        n = self._n_acting_envs()
        if isinstance(self.exploration, str):
            return epsilon_ladder(n)
        values = np.atleast_1d(np.asarray(self.exploration, dtype=np.float64))
        if values.size == 1:
            return np.full(n, float(values[0]))
        if values.size != n:
            raise ValueError(f"exploration lists {values.size} epsilons for {n} acting envs")
        return values

    def _actor_settings(self) -> dict[str, Any]:
        return {
            "length": self.sequence_length,
            "overlap": self.overlap,
            "burn_in": self.burn_in,
            "gamma": self.gamma,
            "n_step": self.n_step,
            "rescaling": self.rescaling,
            "eta": self.priority_eta,
        }

    def _make_actor(self) -> R2D2Actor:
        assert self.env is not None and self._rng is not None
        return R2D2Actor(self.env, self.policy, self._epsilons(), rng=self._rng, **self._actor_settings())

    def _actor_factory(self, env: VecEnvCopy) -> R2D2ActorFactory:
        return R2D2ActorFactory(env, self.policy, self._epsilons(), **self._actor_settings())

    def _store(self, step: ActorStep) -> None:
        assert self.replay_buffer is not None
        for chunk in step.items:
            self.replay_buffer.add_observations(step.actor, chunk.ids, chunk.observations)
            sequences = chunk.sequences
            if self.initial_priority == "max":  # no estimate: the replay gives the current maximum
                sequences = [{**seq, "priority": np.nan} for seq in sequences]
            self.replay_buffer.add_sequences(step.actor, sequences, count_non_finite=self.initial_priority == "actor")
        for info in step.infos:
            episode = info.get("episode")
            if episode is not None:
                key = f"actors/actor_{step.actor}_ep_rew_mean"
                total, count = self._actor_stats.get(key, (0.0, 0))
                self._actor_stats[key] = (total + float(episode["r"]), count + 1)

    def _record_logs(self) -> None:
        assert self.replay_buffer is not None
        self.logger.record("replay/sequences", len(self.replay_buffer))
        if self.replay_buffer.non_finite_priorities:
            self.logger.record("replay/non_finite_priorities", self.replay_buffer.non_finite_priorities)

    # ----------------------------------------------------------------------------------------------------- predict
    def _complete_observation(self, observation: Any) -> Any:
        """Observations without the previous action and reward: zeros, if the policy does not read them."""
        if has_previous_action_reward_obs(observation):
            return observation
        if self.policy.previous_action_reward:
            raise ValueError(
                "R2D2's policy reads the previous action and reward from the observation ('prev_action', "
                "'prev_reward'): wrap the env in sb3_frontier.wrappers.VecPreviousActionReward (as model.get_env() is), "
                "or train with policy_kwargs=dict(previous_action_reward=False)"
            )
        base = dict(observation) if isinstance(observation, dict) else {OBSERVATION: observation}
        leaf = np.asarray(next(iter(base.values())))
        space = self.observation_space[OBSERVATION] if OBSERVATION in base else None  # type: ignore[index]
        vectorized = space is None or leaf.ndim > len(space.shape)  # type: ignore[union-attr]
        lead = leaf.shape[:1] if vectorized else ()
        n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
        return {
            **base,
            PREV_ACTION: np.zeros((*lead, n_actions), dtype=np.float32),
            PREV_REWARD: np.zeros((*lead, 1), dtype=np.float32),
        }

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """
        Act with the recurrent state, as sb3-contrib's ``RecurrentPPO`` does: ``state`` is ``(h, c)``, each of
        shape ``(1, n_envs, lstm_hidden_size)`` (``None`` at the start), zeroed where ``episode_start`` is True.

        :param observation: one observation or a batch (with ``"prev_action"`` / ``"prev_reward"``)
        :param state: the state returned by the previous call, or None
        :param episode_start: ``[n_envs]`` episode starts (as ``evaluate_policy`` passes them)
        :param deterministic: the greedy action; otherwise epsilon-greedy with ``eval_epsilon``
        :return: actions and the next state
        """
        self.policy.set_training_mode(False)
        obs, vectorized = self.policy.obs_to_tensor(self._complete_observation(observation))
        n_envs = int(next(iter(obs.values())).shape[0]) if isinstance(obs, dict) else int(obs.shape[0])
        hidden = self.policy.lstm_hidden_size
        if state is None:
            state = (np.zeros((1, n_envs, hidden), np.float32), np.zeros((1, n_envs, hidden), np.float32))
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        device = self.device
        with th.no_grad():
            q, (h, c) = self.policy.step(
                obs,
                (th.as_tensor(state[0][0], device=device), th.as_tensor(state[1][0], device=device)),
                th.as_tensor(np.asarray(episode_start, dtype=bool).reshape(n_envs), device=device),
            )
        actions = q.argmax(dim=1).cpu().numpy()
        if not deterministic and self.eval_epsilon > 0:
            assert self._rng is not None
            explore = self._rng.random(n_envs) < self.eval_epsilon
            actions = np.where(explore, self._rng.integers(q.shape[1], size=n_envs), actions)
        new_state = (h.cpu().numpy()[None], c.cpu().numpy()[None])
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, new_state

    # ------------------------------------------------------------------------------------------------------ learning
    def learn(
        self: SelfR2D2,
        total_timesteps: int | None = None,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "R2D2",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfR2D2:
        """
        Act and learn for ``total_timesteps`` environment steps (summed over the envs).

        :param total_timesteps: environment steps to collect (``None``: :attr:`default_total_timesteps`)
        :param callback: SB3 callback(s), called after every VecEnv step
        :param log_interval: episodes between log dumps
        :param tb_log_name: tensorboard run name
        :param reset_num_timesteps: start counting (and the episodes) afresh; False continues
        :param progress_bar: show a progress bar
        :return: the trained model
        """
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _tensors(self, batch: SequenceBatch) -> dict[str, Any]:
        device = self.device
        return {
            "obs": obs_as_tensor(batch.observations, device),  # type: ignore[arg-type]
            "state": (th.as_tensor(batch.state[0], device=device), th.as_tensor(batch.state[1], device=device)),
            "resets": th.as_tensor(batch.resets(), device=device),
        }

    def sequence_loss(self, batch: SequenceBatch) -> tuple[th.Tensor, np.ndarray, dict[str, float]]:
        """
        The loss of a batch of sequences: burn-in without gradient, n-step double-Q transformed targets.

        :param batch: sampled sequences
        :return: the loss (importance-weighted mean over sequences of the masked mean of ``0.5 delta^2``),
            ``[L, B]`` TD errors (zero on padding) and diagnostics
        """
        t = self._tensors(batch)
        obs, resets, b = t["obs"], t["resets"], self.burn_in

        def window(x: Any, part: slice) -> Any:
            return {k: v[part] for k, v in x.items()} if isinstance(x, dict) else x[part]

        with th.no_grad():
            state_online, state_target = t["state"], t["state"]
            if b > 0:
                _, state_online = self.policy.unroll(window(obs, slice(0, b)), state_online, resets[:b])
                _, state_target = self.target_policy.unroll(window(obs, slice(0, b)), state_target, resets[:b])
            q_target, _ = self.target_policy.unroll(window(obs, slice(b, None)), state_target, resets[b:])
        q_online, _ = self.policy.unroll(window(obs, slice(b, None)), state_online, resets[b:])  # [L + 1, B, A]
        prefix, discount, index = window_bootstrap(
            batch.rewards[b:], batch.terminated[b:], batch.life_loss[b:], batch.mask[b:], self.gamma, self.n_step
        )
        with th.no_grad():
            greedy = q_online.argmax(dim=2, keepdim=True)  # the online network picks, the target network evaluates
            values = self.rescaling.inverse(q_target.gather(2, greedy).squeeze(2).double())  # [L + 1, B]
            index_t = th.as_tensor(index, device=self.device)
            bootstrap = values.gather(0, index_t)
            returns = th.as_tensor(prefix, device=self.device) + th.as_tensor(discount, device=self.device) * bootstrap
            targets = self.rescaling.transform(returns).float()
        actions = th.as_tensor(batch.actions[b:], device=self.device).unsqueeze(2)
        q_taken = q_online[:-1].gather(2, actions).squeeze(2)  # [L, B]
        mask = th.as_tensor(batch.mask[b:], device=self.device).float()
        delta = (targets - q_taken) * mask
        per_sequence = 0.5 * (delta**2).sum(dim=0) / mask.sum(dim=0).clamp(min=1.0)
        weights = th.as_tensor(batch.weights, device=self.device)
        loss = (weights * per_sequence).mean()
        diagnostics = {"q_mean": float((q_taken.detach() * mask).sum() / mask.sum().clamp(min=1.0))}
        if self._n_updates % self.diagnostics_interval == 0:
            diagnostics.update(self._staleness(batch, obs, q_online.detach(), resets))
        return loss, delta.detach().cpu().numpy(), diagnostics

    def _staleness(self, batch: SequenceBatch, obs: Any, q_burned: th.Tensor, resets: th.Tensor) -> dict[str, float]:
        """
        The paper's ΔQ (Sec. 3, Fig. 1): ``||q(stored state) - q(burned-in state)||_2 / |max q(burned-in)|`` at the
        first and the last real training step, the stored state being the actor's state before the first training
        step.
        """
        b = self.burn_in
        device = self.device
        window_state = (th.as_tensor(batch.window_state[0], device=device), th.as_tensor(batch.window_state[1], device=device))
        with th.no_grad():
            part = {k: v[b:] for k, v in obs.items()} if isinstance(obs, dict) else obs[b:]
            q_stored, _ = self.policy.unroll(part, window_state, resets[b:])
        mask = batch.mask[b:]
        last = np.maximum(mask.sum(axis=0) - 1, 0)  # window slots are real from the first up to the episode's end
        columns = np.arange(mask.shape[1])
        out = {}
        for name, rows in (("first", np.zeros_like(last)), ("last", last)):
            stored, burned = q_stored[rows, columns], q_burned[rows, columns]
            scale = burned.abs().max(dim=1).values.clamp(min=1e-6)
            out[f"delta_q_{name}"] = float(((stored - burned).norm(dim=1) / scale).mean())
        return out

    def _shard_loss(self, batch: SequenceBatch, shard: slice) -> tuple[th.Tensor, tuple[np.ndarray, dict[str, float], float]]:
        """The loss of the sequences ``shard`` of ``batch``, their TD errors, diagnostics and real training steps."""
        part = batch.shard(shard)
        loss, delta, diagnostics = self.sequence_loss(part)
        return loss, (delta, diagnostics, float(part.mask[self.burn_in :].sum()))

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """
        Updates on sampled sequences.

        :param gradient_steps: number of updates
        :param batch_size: sequences per update
        """
        assert self.replay_buffer is not None and self._rng is not None
        start = time.perf_counter()
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        logs: dict[str, list[float]] = {}
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, self._rng, self.importance_exponent)
            self.policy.optimizer.zero_grad()
            loss, shards = self._gradient(len(batch.indices), functools.partial(self._shard_loss, batch))
            delta = np.concatenate([shard_delta for shard_delta, _, _ in shards], axis=1)
            diagnostics = _combine_diagnostics(shards)
            if not th.isfinite(loss):
                raise RuntimeError(
                    f"R2D2's loss is not finite ({loss.item()}): check the rewards, the learning rate and value_rescaling_eps"
                )
            if self.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            priorities = sequence_priorities(np.abs(delta), batch.mask[self.burn_in :], self.priority_eta)
            self.replay_buffer.update_priorities(batch.indices, priorities)
            self._n_updates += 1
            if self._n_updates % self.target_update_interval == 0:
                self.target_policy.load_state_dict(self.policy.state_dict())
            logs.setdefault("loss", []).append(loss.item())
            logs.setdefault("priority_mean", []).append(float(np.nanmean(priorities)))
            logs.setdefault("priority_max", []).append(float(np.nanmax(priorities)))
            logs.setdefault("importance_weight_mean", []).append(float(batch.weights.mean()))
            for key, value in diagnostics.items():
                logs.setdefault(key, []).append(value)
        self.policy.set_training_mode(False)
        self._train_time += time.perf_counter() - start
        self._train_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))
        self.logger.record("train/updates_per_s", self._train_updates / max(self._train_time, 1e-9))
        steps_replayed = self._n_updates * batch_size * self.sequence_length
        self.logger.record("train/replay_ratio", steps_replayed / max(self.num_timesteps, 1))


def has_previous_action_reward_obs(observation: Any) -> bool:
    """Whether an observation (batch) carries the previous action and reward."""
    return isinstance(observation, dict) and PREV_ACTION in observation and PREV_REWARD in observation


__all__ = ["R2D2"]
