"""MuZero with Reanalyze (Schrittwieser et al. 2020) following Stable-Baselines3's ``learn``/``predict`` API.

The loop reads like the paper's pseudocode: every environment step searches all envs of the VecEnv together
(``mcts.muzero_policy``, one network call per simulation for the whole batch) and plays an action drawn from the
visit counts; finished game segments go to a prioritized replay; each update samples K-step unrolls, optionally
refreshes their policy targets with a new search (Reanalyze) and their value bootstraps with a target network, and
minimises the categorical value/reward and policy cross-entropies.
"""

from __future__ import annotations

import copy
import io
import pathlib
import time
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor, safe_mean
from torch.nn import functional as F

from sb3_frontier.algorithms.muzero import mcts
from sb3_frontier.algorithms.muzero.replay import MuZeroBatch, MuZeroReplayBuffer, SegmentBuilder
from sb3_frontier.policies.muzero import CnnPolicy, MlpPolicy, MultiInputPolicy, MuZeroPolicy
from sb3_frontier.policies.torsos import scale_gradient

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


def _obs_index(obs: np.ndarray | dict[str, np.ndarray], index: int) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


class MuZero(BaseAlgorithm):
    """
    MuZero: planning with a learned model (Schrittwieser et al. 2020), with MuZero Reanalyze.

    Paper defaults: K=5 unroll steps, n=10 bootstrap steps, gamma=0.997, 50 simulations, pUCT c1=1.25 and c2=19652,
    root Dirichlet noise alpha=0.25 with fraction 0.25, 601-bin value and reward supports over h-transformed scalars,
    priority exponent 1 and importance exponent 1, the 1.0/0.5/0.25 temperature schedule, L2 regularisation 1e-4
    (the optimizer's ``weight_decay``). Batch size, learning rate and buffer size default to CPU-sized values
    (the paper: 1024, SGD 0.05, 1M sequences). ``MuZero(policy, env, **REANALYZE_PRESET)`` gives MuZero Reanalyze.

    Episodes: ``terminated`` ends bootstrapping, ``truncated`` does not (the value of the final observation is
    bootstrapped); a life lost under :class:`~sb3_frontier.wrappers.LifeLoss` ("roll") stops bootstrapping at that
    step. Legal actions are read from ``info["action_mask"]`` (True = legal) and respected by the search at the
    root (the paper masks only there) and in the policy targets.

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
    :param train_freq: VecEnv steps between training phases
    :param gradient_steps: gradient steps per training phase
    :param temperature: visit-count temperature of acting, a constant or a schedule of SB3's progress remaining
    :param temperature_moves: if set, only the first ``temperature_moves`` moves of each episode are drawn with the
        temperature and the later ones take the most visited action (the paper's board-game schedule: 30 moves for
        Go and chess); ``None`` applies the temperature to every move (the paper's Atari setting)
    :param dirichlet_alpha: root noise concentration
    :param dirichlet_fraction: root noise weight (0: no noise)
    :param pb_c_init: pUCT c1
    :param pb_c_base: pUCT c2
    :param unvisited_value: Q of unvisited children in pUCT: ``"parent"`` (the parent's value, as mctx and
        EfficientZero) or ``"zero"`` (the paper's pseudocode, which makes searches of few simulations follow the
        first child they visit; see :func:`~sb3_frontier.algorithms.muzero.mcts.muzero_policy`)
    :param priority_exponent: alpha of prioritized replay (0: uniform)
    :param importance_exponent: beta of the importance-sampling weights (0: none)
    :param reanalyze_fraction: fraction of each batch whose policy targets are recomputed by a fresh search with the
        latest network
    :param value_bootstrap: ``"search"`` bootstraps value targets from the search values stored at acting time;
        ``"target"`` from a target network's value of the bootstrap observation (MuZero Reanalyze)
    :param target_update_interval: gradient steps between copies of the network into the target network
    :param value_loss_coef: weight of the value loss (0.25 in MuZero Reanalyze)
    :param reward_loss_coef: weight of the reward loss
    :param policy_loss_coef: weight of the policy loss
    :param max_grad_norm: gradient clipping (None: none)
    :param segment_length: sampleable positions per stored segment of a long game
    :param two_player: board-game mode: self-play of both sides, value targets are the final outcome for the
        player to move, rewards are zero and the search flips perspective every ply (discount ``-gamma``)
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
    policy: MuZeroPolicy
    replay_buffer: MuZeroReplayBuffer | None

    def __init__(
        self,
        policy: str | type[MuZeroPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        learning_starts: int = 1_000,
        batch_size: int = 256,
        num_simulations: int = 50,
        unroll_steps: int = 5,
        td_steps: int = 10,
        gamma: float = 0.997,
        train_freq: int = 1,
        gradient_steps: int = 1,
        temperature: float | Schedule = paper_temperature,
        temperature_moves: int | None = None,
        dirichlet_alpha: float = 0.25,
        dirichlet_fraction: float = 0.25,
        pb_c_init: float = 1.25,
        pb_c_base: float = 19652.0,
        unvisited_value: str = "parent",
        priority_exponent: float = 1.0,
        importance_exponent: float = 1.0,
        reanalyze_fraction: float = 0.0,
        value_bootstrap: str = "search",
        target_update_interval: int = 100,
        value_loss_coef: float = 1.0,
        reward_loss_coef: float = 1.0,
        policy_loss_coef: float = 1.0,
        max_grad_norm: float | None = 5.0,
        segment_length: int = 200,
        two_player: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        self._check_hyperparameters(
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            num_simulations=num_simulations,
            unroll_steps=unroll_steps,
            td_steps=td_steps,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            target_update_interval=target_update_interval,
            segment_length=segment_length,
        )
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if not 0.0 <= reanalyze_fraction <= 1.0:
            raise ValueError(f"reanalyze_fraction must lie in [0, 1], got {reanalyze_fraction}")
        if unvisited_value not in ("parent", "zero"):
            raise ValueError(f"unvisited_value must be 'parent' or 'zero', got {unvisited_value!r}")
        if temperature_moves is not None and temperature_moves < 0:
            raise ValueError(f"temperature_moves must be None or >= 0, got {temperature_moves}")
        if value_bootstrap not in ("search", "target"):
            raise ValueError(f"value_bootstrap must be 'search' or 'target', got {value_bootstrap!r}")
        if not 0.0 <= dirichlet_fraction <= 1.0 or dirichlet_alpha <= 0:
            raise ValueError(
                f"Need dirichlet_alpha > 0 and dirichlet_fraction in [0, 1], got {dirichlet_alpha}, {dirichlet_fraction}"
            )
        if priority_exponent < 0 or importance_exponent < 0:
            raise ValueError("priority_exponent and importance_exponent must be >= 0")
        if min(value_loss_coef, reward_loss_coef, policy_loss_coef) < 0:
            raise ValueError("Loss coefficients must be >= 0")
        if buffer_size < segment_length + unroll_steps + td_steps + 1:
            raise ValueError(
                f"buffer_size={buffer_size} cannot hold one segment of {segment_length} positions plus its look-ahead "
                f"of K + n = {unroll_steps + td_steps}"
            )
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
        )
        if env is not None and not isinstance(self.action_space, spaces.Discrete):  # (load() sets the spaces later)
            raise ValueError(f"MuZero needs a Discrete action space (it searches over actions), got {self.action_space}")
        self.buffer_size = buffer_size
        self.learning_starts = learning_starts
        self.batch_size = batch_size
        self.num_simulations = num_simulations
        self.unroll_steps = unroll_steps
        self.td_steps = td_steps
        self.gamma = gamma
        self.train_freq = train_freq
        self.gradient_steps = gradient_steps
        self.temperature = temperature
        self.temperature_moves = temperature_moves
        self.dirichlet_alpha = dirichlet_alpha
        self.dirichlet_fraction = dirichlet_fraction
        self.pb_c_init = pb_c_init
        self.pb_c_base = pb_c_base
        self.unvisited_value = unvisited_value
        self.priority_exponent = priority_exponent
        self.importance_exponent = importance_exponent
        self.reanalyze_fraction = reanalyze_fraction
        self.value_bootstrap = value_bootstrap
        self.target_update_interval = target_update_interval
        self.value_loss_coef = value_loss_coef
        self.reward_loss_coef = reward_loss_coef
        self.policy_loss_coef = policy_loss_coef
        self.max_grad_norm = max_grad_norm
        self.segment_length = segment_length
        self.two_player = two_player
        self.replay_buffer = None
        self._builders: list[SegmentBuilder] | None = None
        self._episode_moves: np.ndarray | None = None
        self._legal: np.ndarray | None = None
        self._warned: set[str] = set()
        self._n_updates = 0
        self._search_stats: dict[str, tuple[float, int]] = {}  # running (sum, count) since the last log dump
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _check_hyperparameters(**values: int) -> None:
        for name, value in values.items():
            minimum = 0 if name == "learning_starts" else 1
            if not isinstance(value, int | np.integer) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

    # ------------------------------------------------------------------------------------------------------ set-up
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if not isinstance(self.action_space, spaces.Discrete):
            raise ValueError(f"MuZero needs a Discrete action space, got {self.action_space}")
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self.target_policy = copy.deepcopy(self.policy)
        self.target_policy.set_training_mode(False)
        for param in self.target_policy.parameters():
            param.requires_grad_(False)
        self.n_actions = int(self.action_space.n)
        self.replay_buffer = MuZeroReplayBuffer(
            self.buffer_size,
            self.observation_space,
            self.n_actions,
            unroll_steps=self.unroll_steps,
            td_steps=self.td_steps,
            gamma=self.gamma,
            priority_exponent=self.priority_exponent,
        )
        self._rng = np.random.default_rng(self.seed)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "replay_buffer", "_builders", "_legal", "_search_stats", "_episode_moves"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "target_policy"], []

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Save the replay buffer as a pickle file.

        :param path: where to save it
        """
        assert self.replay_buffer is not None, "The replay buffer is not defined"
        save_to_pkl(path, self.replay_buffer, self.verbose)

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Load a replay buffer saved with :meth:`save_replay_buffer`.

        :param path: the pickle file
        """
        buffer = load_from_pkl(path, self.verbose)
        if not isinstance(buffer, MuZeroReplayBuffer):
            raise TypeError(f"Expected a MuZeroReplayBuffer, got {type(buffer)}")
        self.replay_buffer = buffer

    # ------------------------------------------------------------------------------------------------------ search
    def _recurrent_fn(self, hidden: th.Tensor, actions: th.Tensor) -> tuple[mcts.RecurrentFnOutput, th.Tensor]:
        next_hidden, reward_logits, policy_logits, value_logits = self.policy.recurrent_inference(hidden, actions)
        discount = -self.gamma if self.two_player else self.gamma
        out = mcts.RecurrentFnOutput(
            reward=self.policy.reward_support.decode_logits(reward_logits),
            discount=th.full((hidden.shape[0],), discount, device=hidden.device),
            prior_logits=policy_logits,
            value=self.policy.value_support.decode_logits(value_logits),
        )
        return out, next_hidden

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
        :param noise: add root Dirichlet noise (acting, Reanalyze) or not (evaluation)
        :param temperature: visit-count temperature of the returned actions (0: most visited)
        :return: the search output (actions, visit counts, search values, ...)
        """
        if isinstance(observations, th.Tensor) or (
            isinstance(observations, dict) and all(isinstance(v, th.Tensor) for v in observations.values())
        ):
            obs_tensor: Any = observations
        else:
            obs_tensor = obs_as_tensor(observations, self.device)  # type: ignore[arg-type]
        with th.no_grad():
            hidden, policy_logits, value_logits = self.policy.initial_inference(obs_tensor)
            root = mcts.RootFnOutput(
                prior_logits=policy_logits, value=self.policy.value_support.decode_logits(value_logits), embedding=hidden
            )
            return mcts.muzero_policy(
                root,
                self._recurrent_fn,
                self.num_simulations,
                invalid_actions=None if legal is None else ~legal,
                dirichlet_alpha=self.dirichlet_alpha,
                dirichlet_fraction=self.dirichlet_fraction if noise else 0.0,
                pb_c_init=self.pb_c_init,
                pb_c_base=self.pb_c_base,
                temperature=temperature,
                rng=self._rng,
                unvisited_value=self.unvisited_value,
            )

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
        otherwise an action drawn in proportion to the visit counts.

        :param observation: one observation or a batch
        :param state: unused (MuZero's representation is feed-forward), returned as is
        :param episode_start: unused
        :param deterministic: take the most visited action
        :param action_masks: legal actions (True = legal), [A] or [B, A]
        :return: actions and ``state``
        """
        self.policy.set_training_mode(False)
        obs, vectorized = self.policy.obs_to_tensor(observation)
        batch = next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]
        legal = None
        if action_masks is not None:
            legal = np.asarray(action_masks, dtype=bool).reshape(batch, self.n_actions)
        out = self.search(obs, legal, noise=False, temperature=0.0 if deterministic else 1.0)
        actions = out.action
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, state

    # ---------------------------------------------------------------------------------------------------- collection
    def _current_temperature(self) -> float:
        if callable(self.temperature):
            return float(self.temperature(self._current_progress_remaining))
        return float(self.temperature)

    def _legal_from_infos(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> np.ndarray:
        """[n_envs, A] legal actions of the current observations (after auto-resets: from the reset infos)."""
        assert self.env is not None
        legal = np.ones((self.env.num_envs, self.n_actions), dtype=bool)
        reset_infos = getattr(self.env, "reset_infos", None)
        for i, info in enumerate(infos):
            if dones is not None and dones[i]:
                info = reset_infos[i] if reset_infos is not None and i < len(reset_infos) else {}
            mask = info.get("action_mask")
            if mask is not None:
                legal[i] = np.asarray(mask, dtype=bool)
        if not legal.any(axis=1).all():
            raise ValueError("An environment reported an action_mask with no legal action")
        return legal

    def _init_collection(self) -> None:
        assert self.env is not None
        lookahead = self.unroll_steps + self.td_steps
        self._builders = [
            SegmentBuilder(self.segment_length, lookahead, self.n_actions, two_player=self.two_player)
            for _ in range(self.env.num_envs)
        ]
        reset_infos = getattr(self.env, "reset_infos", [{} for _ in range(self.env.num_envs)])
        self._legal = self._legal_from_infos(list(reset_infos))
        self._episode_moves = np.zeros(self.env.num_envs, dtype=np.int64)

    def _add_segment(self, segment: Any) -> None:
        if segment is None:
            return
        assert self.replay_buffer is not None
        self.replay_buffer.add(segment)
        self._warn_if_clipped("reward", self.policy.reward_support, segment.rewards)

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

    def _final_values(self, observations: list[Any]) -> np.ndarray:
        """Network values of final observations of truncated games (bootstrapped: truncation is not termination)."""
        if not observations:
            return np.zeros(0)
        if isinstance(observations[0], dict):
            batch: Any = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
        else:
            batch = np.stack(observations)
        with th.no_grad():
            _, _, value_logits = self.policy.initial_inference(obs_as_tensor(batch, self.device))
            return self.policy.value_support.decode_logits(value_logits).cpu().numpy()

    def collect_step(self, callback: BaseCallback) -> bool:
        """
        One step of all envs: search, act, store the positions, cut finished segments into the replay.

        :param callback: SB3 callback (``on_step`` is called once per VecEnv step)
        :return: whether training should continue
        """
        assert self.env is not None and self._builders is not None and self._legal is not None
        assert self._last_obs is not None and self._episode_moves is not None
        out = self.search(self._last_obs, self._legal, noise=True, temperature=self._current_temperature())
        actions = out.action
        if self.temperature_moves is not None:
            greedy = self._episode_moves >= self.temperature_moves
            if greedy.any():
                actions = actions.copy()
                actions[greedy] = mcts.select_action(
                    out.visit_counts[greedy], 0.0, invalid_actions=~self._legal[greedy], prior=out.root_prior[greedy]
                )
        new_obs, rewards, dones, infos = self.env.step(actions)
        rewards = np.asarray(rewards, dtype=np.float64)
        if not np.all(np.isfinite(rewards)):
            raise ValueError(f"The environment returned non-finite rewards: {rewards}")
        self.num_timesteps += self.env.num_envs
        self._update_info_buffer(infos, dones)
        self._episode_num += int(np.sum(dones))
        self._record_search(out)

        truncated_envs: list[int] = []
        for i, builder in enumerate(self._builders):
            info = infos[i]
            truncated = bool(dones[i]) and bool(info.get("TimeLimit.truncated", False))
            terminated = bool(dones[i]) and not truncated
            stop = terminated or bool(info.get("life_loss", False))
            self._add_segment(
                builder.append(
                    _obs_index(self._last_obs, i),
                    int(actions[i]),
                    float(rewards[i]),
                    stop,
                    float(out.search_value[i]),
                    out.visit_probs[i].astype(np.float32),
                    self._legal[i],
                )
            )
            if terminated:
                self._add_segment(builder.finish(info["terminal_observation"], terminal=True, final_value=0.0))
            elif truncated:
                truncated_envs.append(i)
        if truncated_envs:
            finals = [infos[i]["terminal_observation"] for i in truncated_envs]
            for i, final, value in zip(truncated_envs, finals, self._final_values(finals), strict=True):
                self._add_segment(self._builders[i].finish(final, False, float(value)))

        self._legal = self._legal_from_infos(infos, dones)
        self._episode_moves = np.where(dones, 0, self._episode_moves + 1)
        self._last_obs = new_obs  # type: ignore[assignment]
        self._last_episode_starts = dones
        callback.update_locals(locals())
        return callback.on_step()

    def _record_search(self, out: mcts.SearchOutput) -> None:
        probs = np.clip(out.visit_probs, 1e-12, 1.0)
        for key, value in (
            ("search_value", out.search_value.mean()),
            ("visit_entropy", -(out.visit_probs * np.log(probs)).sum(axis=1).mean()),
            ("max_depth", out.max_depth.mean()),
        ):
            total, count = self._search_stats.get(key, (0.0, 0))
            self._search_stats[key] = (total + float(value), count + 1)

    # ------------------------------------------------------------------------------------------------------ learning
    def learn(
        self: SelfMuZero,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MuZero",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMuZero:
        """
        Self-play and train for ``total_timesteps`` environment steps (summed over the envs).

        :param total_timesteps: environment steps to collect
        :param callback: SB3 callback(s), called after every VecEnv step
        :param log_interval: episodes between log dumps
        :param tb_log_name: tensorboard run name
        :param reset_num_timesteps: start counting (and the env) afresh; False resumes where the last call stopped
        :param progress_bar: show a progress bar
        :return: the trained model
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        assert self.env is not None
        if reset_num_timesteps or self._builders is None or len(self._builders) != self.env.num_envs:
            self._init_collection()
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        steps = 0
        last_dump = self._episode_num
        while self.num_timesteps < total_timesteps:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if not self.collect_step(callback):
                break
            steps += 1
            ready = (
                self.num_timesteps >= self.learning_starts and self.replay_buffer is not None and len(self.replay_buffer) > 0
            )
            if ready and steps % self.train_freq == 0:
                self.train(self.gradient_steps, self.batch_size)
            if log_interval is not None and self._episode_num - last_dump >= log_interval:
                last_dump = self._episode_num
                self.dump_logs()
        callback.on_training_end()
        return self

    def dump_logs(self) -> None:
        """Write the rollout, search and time statistics to the logger and dump it."""
        assert self.ep_info_buffer is not None
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / elapsed)
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0 and len(self.ep_info_buffer[0]) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        for key, (total, count) in self._search_stats.items():
            self.logger.record(f"search/{key}", total / max(count, 1))
        self._search_stats = {}
        self.logger.record("search/temperature", self._current_temperature())
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def _bootstrap_values(self, batch: MuZeroBatch) -> np.ndarray | None:
        """Target-network values of the bootstrap observations (None: use the stored search values)."""
        if self.value_bootstrap != "target":
            return None
        assert self.replay_buffer is not None
        values = np.zeros(batch.bootstrap_indices.shape, dtype=np.float32)
        has = batch.bootstrap_indices >= 0
        if has.any():
            obs = self.replay_buffer.observations_at(batch.bootstrap_indices[has])
            with th.no_grad():
                _, _, value_logits = self.target_policy.initial_inference(obs_as_tensor(obs, self.device))
                values[has] = self.policy.value_support.decode_logits(value_logits).cpu().numpy()
        return values

    def _reanalyze(self, batch: MuZeroBatch) -> None:
        """Fresh policy targets (a new search with the latest network) for the first fraction of the batch, in place."""
        n = round(self.reanalyze_fraction * batch.indices.shape[0])
        if n == 0:
            return
        assert self.replay_buffer is not None
        mask = batch.policy_mask[:n]
        if not mask.any():
            return
        positions = batch.positions[:n][mask]
        out = self.search(self.replay_buffer.observations_at(positions), batch.legal[:n][mask], noise=True)
        head = batch.policies[:n]
        head[mask] = out.visit_probs.astype(np.float32)

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """
        Gradient steps on sampled K-step unrolls (the paper's ``update_weights``).

        :param gradient_steps: number of steps
        :param batch_size: unrolls per step
        """
        assert self.replay_buffer is not None
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        logs: dict[str, list[float]] = {}
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, self._rng, self.importance_exponent, self.two_player)
            if self.reanalyze_fraction > 0:
                self.policy.set_training_mode(False)
                self._reanalyze(batch)
                self.policy.set_training_mode(True)
            value_targets = batch.value_targets(self._bootstrap_values(batch))
            self._warn_if_clipped("value", self.policy.value_support, value_targets[batch.value_mask])
            losses, root_values = self._losses(batch, value_targets)
            loss = losses["loss"]
            if not th.isfinite(loss):
                parts = {k: v.item() for k, v in losses.items()}
                raise RuntimeError(f"MuZero loss is not finite: {parts} (check rewards, supports and learning rate)")
            self.policy.optimizer.zero_grad()
            loss.backward()
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

    def _losses(self, batch: MuZeroBatch, value_targets: np.ndarray) -> tuple[dict[str, th.Tensor], np.ndarray]:
        """
        MuZero's loss (the paper's Eq. 1): value, reward and policy cross-entropies over the K+1 unroll steps, the
        unrolled steps scaled by 1/K, the gradient into the dynamics' hidden state halved, importance-weighted.

        :return: the loss parts and the network's root values (scalars, for the priorities)
        """
        device = self.device
        policy = self.policy
        k_steps = self.unroll_steps
        obs = obs_as_tensor(batch.observations, device)
        actions = th.as_tensor(batch.actions, device=device)
        hidden, policy_logits, value_logits = policy.initial_inference(obs)
        all_policy, all_value, all_reward = [policy_logits], [value_logits], []
        for k in range(k_steps):
            hidden = scale_gradient(hidden, 0.5)
            hidden, reward_logits, policy_logits, value_logits = policy.recurrent_inference(hidden, actions[:, k])
            all_policy.append(policy_logits)
            all_value.append(value_logits)
            all_reward.append(reward_logits)
        policy_logits = th.stack(all_policy, dim=1)  # [B, K+1, A]
        value_logits = th.stack(all_value, dim=1)  # [B, K+1, bins]
        reward_logits = th.stack(all_reward, dim=1)  # [B, K, reward bins]

        value_probs = policy.value_support.encode(th.as_tensor(value_targets, device=device, dtype=th.float32))
        reward_probs = policy.reward_support.encode(th.as_tensor(batch.rewards[:, 1:], device=device))
        value_ce = -(value_probs * F.log_softmax(value_logits, dim=-1)).sum(-1)  # [B, K+1]
        reward_ce = -(reward_probs * F.log_softmax(reward_logits, dim=-1)).sum(-1)  # [B, K]
        policy_ce = -(th.as_tensor(batch.policies, device=device) * F.log_softmax(policy_logits, dim=-1)).sum(-1)

        step_scale = th.full((k_steps + 1,), 1.0 / k_steps, device=device)
        step_scale[0] = 1.0
        value_mask = th.as_tensor(batch.value_mask, device=device, dtype=th.float32) * step_scale
        reward_mask = th.as_tensor(batch.reward_mask[:, 1:], device=device, dtype=th.float32) * step_scale[1:]
        policy_mask = th.as_tensor(batch.policy_mask, device=device, dtype=th.float32) * step_scale
        weights = th.as_tensor(batch.weights, device=device)
        value_loss = ((value_ce * value_mask).sum(1) * weights).mean()
        reward_loss = ((reward_ce * reward_mask).sum(1) * weights).mean()
        policy_loss = ((policy_ce * policy_mask).sum(1) * weights).mean()
        loss = self.value_loss_coef * value_loss + self.reward_loss_coef * reward_loss + self.policy_loss_coef * policy_loss
        root_values = policy.value_support.decode_logits(value_logits[:, 0].detach()).cpu().numpy()
        losses = {"loss": loss, "value_loss": value_loss, "reward_loss": reward_loss, "policy_loss": policy_loss}
        return losses, root_values


__all__ = ["REANALYZE_PRESET", "MuZero", "paper_temperature"]
