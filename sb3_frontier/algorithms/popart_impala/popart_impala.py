"""PopArt-IMPALA: IMPALA's V-trace actor-learner (Espeholt et al. 2018) with PopArt value normalisation (Hessel et al.
2018), single- or multi-task.

Actors step their envs with a (possibly stale) copy of the policy and hand over unrolls of ``unroll_length`` steps
with the behaviour log-probabilities; the learner batches ``batch_size`` unrolls first in first out, corrects the
off-policy gap with V-trace, and takes one RMSProp step per batch. With PopArt, the value head predicts normalised
values ``n(x)`` per task; V-trace runs on unnormalised values ``sigma n(x) + mu``; each batch's V-trace targets
update the task statistics (ART, output-preserving: POP) before its gradient step; the value loss compares
normalised targets with ``n(x)`` and the policy-gradient advantages are divided by the task's sigma, so that
neither the value loss nor the policy gradient depends on the scale of a task's rewards.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import LinearSchedule, obs_as_tensor
from torch.distributions import Categorical

from sb3_frontier.algorithms.popart_impala.actor import IMPALAActor, IMPALAActorFactory
from sb3_frontier.algorithms.popart_impala.unrolls import Unroll, UnrollQueue
from sb3_frontier.algorithms.popart_impala.vtrace import VTraceReturns, vtrace
from sb3_frontier.common.observations import obs_map
from sb3_frontier.common.replay_algorithm import ReplayAlgorithm, check_integer
from sb3_frontier.common.runners import ActorStep, VecEnvCopy
from sb3_frontier.policies.popart_impala import (
    CnnLstmPolicy,
    CnnPolicy,
    MlpLstmPolicy,
    MlpPolicy,
    MultiInputPolicy,
    PopArtIMPALAPolicy,
)
from sb3_frontier.wrappers.multitask import task_ids as env_task_ids

SelfPopArtIMPALA = TypeVar("SelfPopArtIMPALA", bound="PopArtIMPALA")


class PopArtIMPALA(ReplayAlgorithm):
    """
    PopArt-IMPALA (Espeholt et al. 2018; Hessel et al. 2018), with the papers' settings as defaults: unrolls of 20
    steps, batches of 32 unrolls, gamma 0.99, V-trace with rho_bar = c_bar = 1, baseline cost 0.5, entropy cost 0.01,
    RMSProp (decay 0.99, epsilon 0.01) with a learning rate decaying linearly to 0, global gradient-norm clipping at
    40, PopArt step size 3e-4. Losses are summed over the batch's steps, as in the paper.

    Acting: ``runner="processes"`` (the default) runs the actors in processes of this machine, so that env
    stepping and inference overlap learning; ``runner="in-process"`` alternates acting and learning in one process
    (deterministic, for tests and debugging). Actors pull parameters at the start of each unroll; the lag between
    the acting and the learner's parameters is corrected by V-trace and logged (``train/policy_lag_*``); with
    ``max_policy_lag`` older unrolls are dropped (counted in ``train/dropped_unrolls``).

    Multi-task: an env whose sub-envs carry task ids (:func:`~sb3_frontier.wrappers.multitask.make_multitask_vec_env`)
    gets one value output and one set of PopArt statistics per task; the policy is shared. Per-task returns are logged
    as ``rollout/task_<k>_ep_rew_mean`` and the statistics as ``train/popart_mu_<k>`` / ``train/popart_sigma_<k>``.

    ``LifeLoss(mode="roll")`` is honoured (``info["life_loss"]``: no bootstrap across a lost life); termination cuts
    the return; truncation (time limits) bootstraps from the value of the final observation.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"`` (IMPALA's residual torso; ``policy_kwargs=dict(torso="nature")``
        for the Nature CNN), ``"MultiInputPolicy"``, ``"CnnLstmPolicy"`` (the paper's Atari agent, 256 LSTM units) or
        ``"MlpLstmPolicy"``
    :param env: environment (id, gymnasium env or VecEnv)
    :param learning_rate: learning rate (constant or schedule); decays linearly from 6e-4 to 0 by default
    :param unroll_length: steps per unroll (T)
    :param batch_size: unrolls per learner step
    :param gamma: discount
    :param rho_bar: V-trace's clip of the importance weights in the value targets (None: no clipping)
    :param c_bar: V-trace's clip of the trace coefficients (None: no clipping)
    :param pg_rho_bar: clip of the importance weights of the policy gradient (None: no clipping)
    :param vtrace_lambda: V-trace's lambda
    :param baseline_cost: weight of the value loss
    :param entropy_cost: weight of the entropy bonus
    :param max_grad_norm: global gradient-norm clip (None: no clipping)
    :param popart: normalise values with PopArt; False gives plain IMPALA (the value head's statistics stay 0 and 1)
    :param popart_beta: PopArt's step size, per target element
    :param n_tasks: number of tasks (None: from the env's task ids, 1 without them)
    :param max_policy_lag: drop unrolls acted more than this many learner steps ago (None: keep every unroll)
    :param max_queued_unrolls: unrolls the learner's queue holds at most (None: ``8 * batch_size``)
    :param runner: ``"processes"``, ``"in-process"`` or ``"ray"`` (Ray actors, on this machine or a cluster)
    :param runner_kwargs: options of the runner (see :class:`~sb3_frontier.common.replay_algorithm.ReplayAlgorithm`);
        the actors pull parameters every ``unroll_length`` steps unless ``sync_every`` says otherwise (Ray actors
        answer one unroll per request, ``max_in_flight`` requests queued each)
    :param policy_kwargs: keyword arguments of the policy
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: tensorboard log directory
    :param verbose: 0 none, 1 info, 2 debug
    :param device: torch device of the learner
    :param seed: random seed
    :param _init_setup_model: build the networks now
    """

    #: Environment steps of ``learn()`` without ``total_timesteps``.
    default_total_timesteps: ClassVar[int] = 1_000_000

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
        "MlpLstmPolicy": MlpLstmPolicy,
        "CnnLstmPolicy": CnnLstmPolicy,
    }
    policy: PopArtIMPALAPolicy
    replay_buffer: UnrollQueue | None

    def __init__(
        self,
        policy: str | type[PopArtIMPALAPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = LinearSchedule(6e-4, 0.0, 1.0),  # noqa: B008 - immutable
        unroll_length: int = 20,
        batch_size: int = 32,
        gamma: float = 0.99,
        rho_bar: float | None = 1.0,
        c_bar: float | None = 1.0,
        pg_rho_bar: float | None = 1.0,
        vtrace_lambda: float = 1.0,
        baseline_cost: float = 0.5,
        entropy_cost: float = 0.01,
        max_grad_norm: float | None = 40.0,
        popart: bool = True,
        popart_beta: float = 3e-4,
        n_tasks: int | None = None,
        max_policy_lag: int | None = None,
        max_queued_unrolls: int | None = None,
        runner: str = "processes",
        runner_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        device: th.device | str = "auto",
        seed: int | None = None,
        _init_setup_model: bool = True,
    ) -> None:
        self.unroll_length = check_integer("unroll_length", unroll_length, 1)
        check_integer("batch_size", batch_size, 1)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma!r}")
        for name, value in (("rho_bar", rho_bar), ("c_bar", c_bar), ("pg_rho_bar", pg_rho_bar)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None for no clipping), got {value!r}")
        if not 0.0 <= vtrace_lambda <= 1.0:
            raise ValueError(f"vtrace_lambda must lie in [0, 1], got {vtrace_lambda!r}")
        for name, value in (("baseline_cost", baseline_cost), ("entropy_cost", entropy_cost)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 (or None), got {max_grad_norm!r}")
        if not 0.0 < popart_beta <= 1.0:
            raise ValueError(f"popart_beta must satisfy 0 < popart_beta <= 1, got {popart_beta!r}")
        if n_tasks is not None:
            check_integer("n_tasks", n_tasks, 1)
        if max_policy_lag is not None:
            check_integer("max_policy_lag", max_policy_lag, 0)
        self.gamma = float(gamma)
        self.rho_bar, self.c_bar, self.pg_rho_bar = rho_bar, c_bar, pg_rho_bar
        self.vtrace_lambda = float(vtrace_lambda)
        self.baseline_cost = float(baseline_cost)
        self.entropy_cost = float(entropy_cost)
        self.max_grad_norm = max_grad_norm
        self.popart = bool(popart)
        self.popart_beta = float(popart_beta)
        self.n_tasks = n_tasks
        self.max_policy_lag = max_policy_lag
        self.max_queued_unrolls = check_integer(
            "max_queued_unrolls", 8 * batch_size if max_queued_unrolls is None else max_queued_unrolls, batch_size
        )
        runner_kwargs = dict(runner_kwargs or {})
        if runner in ("processes", "ray"):
            runner_kwargs.setdefault("sync_every", self.unroll_length)  # new parameters at the start of each unroll
        if runner == "ray":
            runner_kwargs.setdefault("steps_per_request", self.unroll_length)  # one unroll per request
            runner_kwargs.setdefault("max_in_flight", max(2, 128 // self.unroll_length))  # ~128 steps ahead at most
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            buffer_size=self.max_queued_unrolls,
            learning_starts=0,
            batch_size=batch_size,
            train_freq=self.unroll_length,
            gradient_steps=1,
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
        self._lag_stats: list[float] = []
        self._dropped_lagging = 0
        self._cached_task_ids: np.ndarray | None = None
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------------------------ setup
    def _env_task_ids(self) -> np.ndarray:
        """``[n_envs]`` task of each env (zeros for a single-task env), checked against ``n_tasks``."""
        assert self.env is not None
        ids = env_task_ids(self.env)
        if ids is None:
            if self.n_tasks is not None and self.n_tasks > 1:
                raise ValueError(
                    f"n_tasks={self.n_tasks} but the env's sub-envs carry no task ids: build the env with "
                    "sb3_frontier.wrappers.multitask.make_multitask_vec_env (or wrap each env in TaskId)"
                )
            return np.zeros(self.env.num_envs, dtype=np.int64)
        if ids.min() < 0:
            raise ValueError(f"task ids must be >= 0, got {ids.tolist()}")
        n_tasks = self.policy.n_tasks if getattr(self, "policy", None) is not None else self.n_tasks
        if n_tasks is not None and ids.max() >= n_tasks:
            raise ValueError(f"The env's task ids {sorted(set(ids.tolist()))} do not fit n_tasks={n_tasks}")
        return ids

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        ids = self._env_task_ids() if self.env is not None else None  # checks them against n_tasks
        if self.n_tasks is None:
            self.n_tasks = 1 if ids is None else int(ids.max()) + 1  # saved with the model: it loads without the env
        n_tasks = self.n_tasks
        policy_kwargs = {"n_tasks": n_tasks, "popart_beta": self.popart_beta, **self.policy_kwargs}
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self.replay_buffer = UnrollQueue(self.max_queued_unrolls)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_lag_stats", "_cached_task_ids"]

    def _check_replay_buffer(self, buffer: Any) -> None:
        if not isinstance(buffer, UnrollQueue):
            raise TypeError(f"Expected an UnrollQueue, got {type(buffer).__name__}")

    # ------------------------------------------------------------------------------------------------------ acting
    def _make_actor(self) -> IMPALAActor:
        assert self.env is not None
        return IMPALAActor(self.env, self.policy, self.unroll_length, self._env_task_ids())

    def _actor_factory(self, env: VecEnvCopy) -> IMPALAActorFactory:
        return IMPALAActorFactory(env, self.policy, self.unroll_length, self._env_task_ids())

    def _store(self, step: ActorStep) -> None:
        assert self.replay_buffer is not None
        for unroll in step.items:
            self.replay_buffer.add(unroll)
        if self.policy.n_tasks > 1:
            tasks = self._task_ids_cache()
            for env, info in enumerate(step.infos):
                episode = info.get("episode")
                if episode is not None:
                    key = f"rollout/task_{int(tasks[env])}_ep_rew_mean"
                    total, count = self._actor_stats.get(key, (0.0, 0))
                    self._actor_stats[key] = (total + float(episode["r"]), count + 1)

    def _task_ids_cache(self) -> np.ndarray:
        if self._cached_task_ids is None:
            self._cached_task_ids = self._env_task_ids()
        return self._cached_task_ids

    def _replay_ready(self) -> bool:
        return self.replay_buffer is not None and len(self.replay_buffer) >= self.batch_size

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        super().set_env(env, force_reset=force_reset)
        self._cached_task_ids = None
        if self.replay_buffer is not None:
            self.replay_buffer.clear()

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, Any]:
        if reset_num_timesteps and self.replay_buffer is not None:
            self.replay_buffer.clear()  # unrolls of a previous run do not belong to this one
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    # ----------------------------------------------------------------------------------------------------- predict
    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Act; with an LSTM the recurrent state follows sb3-contrib's ``RecurrentPPO``: ``(h, c)``, each of shape
        ``(1, n_envs, lstm_hidden_size)`` (``None`` at the start), zeroed where ``episode_start`` is True.

        :param observation: one observation or a batch
        :param state: the state returned by the previous call (LSTM policies), or None
        :param episode_start: ``[n_envs]`` episode starts (as ``evaluate_policy`` passes them)
        :param deterministic: the most probable action instead of a sample
        :return: actions and the next state (None for feed-forward policies)
        """
        if not self.policy.recurrent:
            return self.policy.predict(observation, state, episode_start, deterministic)
        self.policy.set_training_mode(False)
        obs, vectorized = self.policy.obs_to_tensor(observation)
        n_envs = int(next(iter(obs.values())).shape[0]) if isinstance(obs, dict) else int(obs.shape[0])
        starts = np.zeros(n_envs, dtype=bool) if episode_start is None else np.asarray(episode_start, dtype=bool)
        with th.no_grad():
            actions, _, new_state = self.policy.act(
                obs,
                self.policy.state_to_tensors(state, n_envs),
                th.as_tensor(starts.reshape(n_envs), device=self.device),
                deterministic=deterministic,
            )
        out = actions.cpu().numpy()
        if not vectorized:
            out = out.squeeze(axis=0)
        return out, self.policy.state_to_numpy(new_state)

    # ------------------------------------------------------------------------------------------------------ learning
    def learn(
        self: SelfPopArtIMPALA,
        total_timesteps: int | None = None,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "PopArtIMPALA",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPopArtIMPALA:
        """
        Act and learn for ``total_timesteps`` environment steps (``None``: :attr:`default_total_timesteps`,
        1,000,000); see :meth:`ReplayAlgorithm.learn`.
        """
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _final_values(self, batch: Unroll, obs: Any) -> th.Tensor | None:
        """
        ``[T, B]`` unnormalised values of the observations that truncated episodes ended on (zero elsewhere), under
        the current parameters; None when nothing was truncated.

        Without an LSTM the final observations are evaluated directly. With one, the value of a final observation
        depends on the state after its episode's last step: the episode's column is re-run from the unroll's state
        up to that step, with the final observation in place of the next one.
        """
        if batch.final_index.shape[0] == 0:
            return None
        assert batch.final_observations is not None
        t_index = th.as_tensor(batch.final_index[:, 0], device=self.device)
        b_index = th.as_tensor(batch.final_index[:, 1], device=self.device)
        finals = obs_as_tensor(batch.final_observations, self.device)  # type: ignore[arg-type]
        task = th.as_tensor(batch.task_ids, device=self.device)[b_index]
        out = th.zeros(batch.length, batch.n_envs, device=self.device)
        if not self.policy.recurrent:
            features = self.policy.core_inputs(finals)
            _, values = self.policy.value_net(features, task)
            out[t_index, b_index] = values.float()
            return out
        starts = th.as_tensor(batch.episode_starts, device=self.device)
        state = tuple(th.as_tensor(s, device=self.device) for s in batch.state)
        for k, (t, b) in enumerate(batch.final_index.tolist()):
            column = obs_map(
                lambda past, final, t=t, b=b, k=k: th.cat([past[: t + 1, b], final[k : k + 1]]).unsqueeze(1), obs, finals
            )  # [t + 2, 1, ...]: the episode's steps in this unroll, then its final observation
            resets = th.cat([starts[: t + 1, b], th.zeros(1, dtype=th.bool, device=self.device)]).unsqueeze(1)
            features, _ = self.policy.core_unroll(column, (state[0][b : b + 1], state[1][b : b + 1]), resets)
            _, value = self.policy.value_net(features[-1, 0], task[k])
            out[t, b] = value.float()
        return out

    def _unroll_features(self, batch: Unroll) -> tuple[Any, th.Tensor, th.Tensor]:
        """Observations as tensors ``[T + 1, B, ...]``, core features ``[T + 1, B, F]`` and task ids ``[T + 1, B]``."""
        device = self.device
        obs = obs_as_tensor(batch.observations, device)  # type: ignore[arg-type]
        resets = th.as_tensor(batch.episode_starts, device=device)
        state = (th.as_tensor(batch.state[0], device=device), th.as_tensor(batch.state[1], device=device))
        features, _ = self.policy.core_unroll(obs, state, resets)
        tasks = th.as_tensor(batch.task_ids, device=device).expand(batch.length + 1, -1)
        return obs, features, tasks

    def vtrace_targets(
        self,
        batch: Unroll,
        unrolled: tuple[Any, th.Tensor, th.Tensor] | None = None,
        target_log_probs: th.Tensor | None = None,
    ) -> VTraceReturns:
        """
        V-trace targets ``v_s`` and policy-gradient advantages of a batch, in unnormalised units, under the current
        parameters: discounts are ``gamma`` except 0 after a termination or a lost life; a truncated step
        bootstraps from the value of its final observation (:meth:`_final_values`); row ``T`` bootstraps the rest.

        :param batch: the unrolls
        :param unrolled: :meth:`_unroll_features` of the batch, if already computed
        :param target_log_probs: ``[T, B]`` log pi(a_t | x_t) of the current policy, if already computed
        """
        device = self.device
        length = batch.length
        with th.no_grad():
            obs, features, tasks = self._unroll_features(batch) if unrolled is None else unrolled
            features = features.detach()
            if target_log_probs is None:
                logits = self.policy.action_net(features[:length])
                target_log_probs = Categorical(logits=logits).log_prob(th.as_tensor(batch.actions, device=device))
            _, values = self.policy.value_net(features, tasks)  # [T + 1, B] unnormalised
            if not bool(th.isfinite(values).all() and th.isfinite(target_log_probs).all()):
                self._diverged("the network's values or log-probabilities are not finite")
            final_values = self._final_values(batch, obs)
            stop = th.as_tensor(batch.terminated | batch.life_loss, device=device)
            return vtrace(
                th.as_tensor(batch.behaviour_log_probs, device=device),
                target_log_probs.detach(),
                th.as_tensor(batch.rewards, device=device),
                self.gamma * (~stop).float(),
                values[:length].float(),
                values[length].float(),
                rho_bar=self.rho_bar,
                c_bar=self.c_bar,
                pg_rho_bar=self.pg_rho_bar,
                lam=self.vtrace_lambda,
                truncated=None if final_values is None else th.as_tensor(batch.truncated, device=device),
                final_values=final_values,
            )

    def impala_loss(self, batch: Unroll) -> tuple[th.Tensor, dict[str, float]]:
        """
        The loss of one batch of unrolls; PopArt's statistics are updated here (ART, then POP), between the V-trace
        targets and the differentiated value forward.

        :return: the loss (summed over the batch's steps, as in the paper) and diagnostics (per step)
        """
        length = batch.length
        unrolled = self._unroll_features(batch)
        _, features, tasks = unrolled
        distribution = Categorical(logits=self.policy.action_net(features[:length]))  # [T, B, A]
        target_log_probs = distribution.log_prob(th.as_tensor(batch.actions, device=self.device))  # [T, B]
        returns = self.vtrace_targets(batch, unrolled, target_log_probs)
        task_ids = tasks[:length]
        with th.no_grad():
            if self.popart:
                self.policy.value_net.update(returns.vs, task_ids)  # outputs unchanged; new w, b, mu, sigma
            sigma = self.policy.value_net.sigma.float()[task_ids]
            normalized_targets = self.policy.value_net.normalize(returns.vs, task_ids)
            advantages = returns.pg_advantages / sigma  # (r + gamma v_{s+1} - mu) / sigma - n(x_s)
        normalized, _ = self.policy.value_net(features[:length], task_ids)  # with the updated head
        policy_loss = -(target_log_probs * advantages).sum()
        baseline_loss = 0.5 * (normalized_targets - normalized).pow(2).sum()
        entropy = distribution.entropy().sum()
        loss = policy_loss + self.baseline_cost * baseline_loss - self.entropy_cost * entropy
        n = float(length * batch.n_envs)
        behaviour = th.as_tensor(batch.behaviour_log_probs, device=self.device)
        logs = {
            "train/policy_loss": float(policy_loss.detach()) / n,
            "train/value_loss": float(baseline_loss.detach()) / n,
            "train/entropy": float(entropy.detach()) / n,
            "train/loss": float(loss.detach()) / n,
            "train/vtrace_target_mean": float(returns.vs.mean()),
            "train/importance_ratio_mean": float(th.exp(target_log_probs.detach() - behaviour).mean()),
        }
        return loss, logs

    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        """
        One learner step per ``batch_size`` queued unrolls, until fewer are queued (``gradient_steps`` is unused:
        every collected step is learned from once).

        :param gradient_steps: unused (the queue decides)
        :param batch_size: unrolls per learner step
        """
        assert self.replay_buffer is not None
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        logs: dict[str, list[float]] = {}
        while len(self.replay_buffer) >= batch_size:
            batch = self.replay_buffer.pop(batch_size)
            lag = self._n_updates - int(batch.policy_versions.min())
            if self.max_policy_lag is not None and lag > self.max_policy_lag:
                self._dropped_lagging += batch.n_envs
                continue
            self._lag_stats.append(float(lag))
            loss, batch_logs = self.impala_loss(batch)
            if not bool(th.isfinite(loss)):
                self._diverged(f"the loss is {float(loss)} ({', '.join(f'{k}={v:.4g}' for k, v in batch_logs.items())})")
            self.policy.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                batch_logs["train/grad_norm"] = float(grad_norm)
            self.policy.optimizer.step()
            self._n_updates += 1
            for key, value in batch_logs.items():
                logs.setdefault(key, []).append(value)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():
            self.logger.record(key, float(np.mean(values)))
        if self._lag_stats:
            self.logger.record("train/policy_lag_mean", float(np.mean(self._lag_stats)))
            self.logger.record("train/policy_lag_max", float(np.max(self._lag_stats)))
        dropped = self.replay_buffer.dropped + self._dropped_lagging
        if dropped:
            self.logger.record("train/dropped_unrolls", dropped)
        value_net = self.policy.value_net
        for task in range(self.policy.n_tasks):
            suffix = f"_{task}" if self.policy.n_tasks > 1 else ""
            self.logger.record(f"train/popart_mu{suffix}", float(value_net.mu[task]))
            self.logger.record(f"train/popart_sigma{suffix}", float(value_net.sigma[task]))

    def _diverged(self, what: str) -> NoReturn:
        raise ValueError(
            f"PopArt-IMPALA's loss diverged at update {self._n_updates}: {what}. Lower the learning rate, check the "
            "rewards' scale (popart=True normalises values), or clip the gradients (max_grad_norm)"
        )

    def _record_logs(self) -> None:
        self._lag_stats = []  # the lags since the last dump were recorded by train()


__all__ = ["PopArtIMPALA"]
