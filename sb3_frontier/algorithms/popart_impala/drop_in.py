"""PopArt value normalisation for SB3's PPO and A2C: swap one class, drop ``VecNormalize(norm_reward=True)``.

:class:`PopArtPPO` and :class:`PopArtA2C` are SB3's algorithms whose value head is our
:class:`~sb3_frontier.wrappers.popart.PopArt` (van Hasselt et al. 2016; Hessel et al. 2018) instead of
``nn.Linear(latent_dim_vf, 1)``. The head computes the normalised value n(x) = w . x + b and the unnormalised value
v(x) = sigma n(x) + mu. Everything else is SB3's.

Specification (one rollout, then :meth:`train`):

- Rollouts, the bootstrap at truncation (``rewards += gamma v(terminal_obs)``), GAE and the returns use v(x), so the
  buffer's values, returns G and advantages A are in the environment's reward units. ``policy.forward``,
  ``policy.evaluate_actions`` and ``policy.predict_values`` all return v(x), as SB3 expects of them.
- Statistics: every gradient step is preceded by ART then POP on the unnormalised returns G of its own minibatch, as in
  van Hasselt et al. (2016, Algorithm 1: update the statistics with the target Y_t, rescale w and b, then take the SGD
  step) and Hessel et al. (2018, one update per learner batch, before the loss). POP keeps v(x) unchanged for every
  x, so the update does not move the policy's baseline. A2C takes one step per rollout on the whole rollout, so each
  return enters the moving averages once; PPO takes ``n_epochs`` passes over the rollout, so each return enters them
  ``n_epochs`` times (the averages adapt ``n_epochs`` times faster per collected sample).
- Value loss: mean((n(x) - (G - mu) / sigma)^2), in normalised units with the statistics just updated. The logged
  ``train/value_loss`` is this normalised loss, so it no longer grows with the reward scale.
- Value clipping (PPO's ``clip_range_vf = eps``) is done in normalised units: with the old prediction expressed in the
  current statistics, n_old = (v_old - mu) / sigma, the loss uses n_old + clip(n(x) - n_old, -eps, eps). SB3's clipping
  in reward units depends on the reward scale; this one does not.
- Policy-gradient advantages: A / sigma, Hessel et al.'s (r + gamma v(x') - mu) / sigma - n(x) with GAE in place of
  the one-step error. For A2C (``normalize_advantage=False`` by default) this division is what makes the policy
  gradient independent of the reward scale. SB3's per-minibatch standardisation (``normalize_advantage=True``, PPO's
  default) is applied afterwards when asked for; it cancels the division by sigma (up to its 1e-8), and the update is
  then scale-free either way.
- Logging: every SB3 key, plus ``train/popart_mu`` and ``train/popart_sigma`` after the last update of the call.

Hence, from the same weights and statistics (mu, nu, sigma) scaled to (c mu, c^2 nu, c sigma), rewards scaled by c > 0
give the same policy and normalised-value updates and values scaled by c (up to float32 rounding), as long as sigma
stays inside PopArt's bounds [1e-4, 1e6].

The statistics ``mu``, ``nu``, ``sigma`` are buffers of ``policy.value_net``: ``save``/``load`` keep them. Use the
algorithms with unnormalised rewards; ``VecNormalize(norm_obs=True, norm_reward=False)`` is fine.

>>> import gymnasium as gym
>>> from sb3_frontier.algorithms.popart_impala.drop_in import PopArtPPO
>>> env = gym.wrappers.TransformReward(gym.make("CartPole-v1"), lambda r: 1000.0 * r)
>>> model = PopArtPPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0).learn(64)
>>> float(model.policy.value_net.sigma[0]) > 1.0  # the statistics followed the returns (in the thousands)
True
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_frontier.wrappers.popart import PopArt

SelfPopArtPPO = TypeVar("SelfPopArtPPO", bound="PopArtPPO")
SelfPopArtA2C = TypeVar("SelfPopArtA2C", bound="PopArtA2C")


def check_popart_beta(popart_beta: float) -> float:
    """
    Validate PopArt's step size.

    :param popart_beta: step size of the moving averages of the returns' first and second moments
    :return: ``popart_beta`` as a float
    :raises ValueError: unless ``popart_beta`` is a real number with 0 < popart_beta <= 1
    """
    if isinstance(popart_beta, bool) or not isinstance(popart_beta, (int, float, np.floating, np.integer)):
        raise ValueError(f"popart_beta must be a real number in (0, 1], got {popart_beta!r}")
    if not 0.0 < float(popart_beta) <= 1.0:  # also rejects NaN
        raise ValueError(f"popart_beta must satisfy 0 < popart_beta <= 1, got {popart_beta!r}")
    return float(popart_beta)


class PopArtActorCriticPolicy(ActorCriticPolicy):
    """
    SB3's actor-critic policy with a :class:`~sb3_frontier.wrappers.popart.PopArt` value head (one task).

    ``value_net`` is ``PopArt(latent_dim_vf, n_tasks=1, beta=popart_beta)``, initialised with the weights SB3 gives its
    linear value head (orthogonal with gain 1 and zero bias when ``ortho_init``). :meth:`forward`,
    :meth:`evaluate_actions` and :meth:`predict_values` return the unnormalised value sigma n(x) + mu, shape
    ``[batch, 1]``; :meth:`evaluate_actions_normalized` returns n(x) for the value loss.

    >>> import gymnasium as gym
    >>> import torch as th
    >>> env = gym.make("CartPole-v1")
    >>> policy = PopArtActorCriticPolicy(env.observation_space, env.action_space, lambda _: 3e-4)
    >>> obs = th.zeros(2, 4)
    >>> n, _, _ = policy.evaluate_actions_normalized(obs, th.zeros(2))
    >>> head = policy.value_net
    >>> th.allclose(policy.predict_values(obs), head.sigma.float() * n + head.mu.float())
    True

    :param args: ActorCriticPolicy's arguments
    :param popart_beta: step size of PopArt's moving averages (Hessel et al. 2018 use 3e-4)
    :param kwargs: ActorCriticPolicy's keyword arguments
    """

    value_net: PopArt  # type: ignore[assignment]

    def __init__(self, *args: Any, popart_beta: float = 3e-4, **kwargs: Any) -> None:
        self.popart_beta = check_popart_beta(popart_beta)  # before super().__init__, which calls _build
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "popart_beta": self.popart_beta}

    def _build(self, lr_schedule: Schedule) -> None:
        """
        Build SB3's networks, replace the linear value head by a PopArt head with its initial weights, and rebuild the
        optimizer over the new parameters.

        :param lr_schedule: learning rate schedule, ``lr_schedule(1)`` is the initial learning rate
        """
        super()._build(lr_schedule)
        linear: Any = self.value_net  # SB3's nn.Linear(latent_dim_vf, 1), already initialised
        head = PopArt(self.mlp_extractor.latent_dim_vf, n_tasks=1, beta=self.popart_beta)
        with th.no_grad():
            head.weight.copy_(linear.weight)
            head.bias.copy_(linear.bias)
        self.value_net = head
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _latents(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: observations
        :return: (latent_pi, latent_vf), the actor's and the critic's latent codes
        """
        features = self.extract_features(obs)
        if self.share_features_extractor:
            return self.mlp_extractor(features)
        pi_features, vf_features = features
        return self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Actions, unnormalised values and log-probabilities, as SB3's rollout collection expects.

        :param obs: observations
        :param deterministic: whether to take the distribution's mode instead of sampling
        :return: (actions, values sigma n(x) + mu [batch, 1], log_prob [batch])
        """
        latent_pi, latent_vf = self._latents(obs)
        _, values = self.value_net(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        return actions, values, log_prob

    def evaluate_actions_normalized(
        self, obs: PyTorchObs, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """
        Normalised values n(x), log-probabilities and entropies, for the losses.

        :param obs: observations
        :param actions: actions taken
        :return: (normalised values [batch, 1], log_prob [batch], entropy [batch] or None)
        """
        latent_pi, latent_vf = self._latents(obs)
        distribution = self._get_action_dist_from_latent(latent_pi)
        normalized, _ = self.value_net(latent_vf)
        return normalized, distribution.log_prob(actions), distribution.entropy()

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """
        Unnormalised values, log-probabilities and entropies, as SB3's ``evaluate_actions``.

        :param obs: observations
        :param actions: actions taken
        :return: (values sigma n(x) + mu [batch, 1], log_prob [batch], entropy [batch] or None)
        """
        normalized, log_prob, entropy = self.evaluate_actions_normalized(obs, actions)
        return self.value_net.unnormalize(normalized), log_prob, entropy

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """
        Unnormalised values sigma n(x) + mu, used by SB3 for the truncation bootstrap and the last GAE value.

        :param obs: observations
        :return: values, [batch, 1]
        """
        features = BasePolicy.extract_features(self, obs, self.vf_features_extractor)
        _, values = self.value_net(self.mlp_extractor.forward_critic(features))
        return values


class PopArtActorCriticCnnPolicy(PopArtActorCriticPolicy, ActorCriticCnnPolicy):
    """
    :class:`PopArtActorCriticPolicy` with SB3's CNN defaults (``NatureCNN`` features extractor).

    :param args: ActorCriticCnnPolicy's arguments
    :param popart_beta: step size of PopArt's moving averages (Hessel et al. 2018 use 3e-4)
    :param kwargs: ActorCriticCnnPolicy's keyword arguments
    """


class PopArtMultiInputActorCriticPolicy(PopArtActorCriticPolicy, MultiInputActorCriticPolicy):
    """
    :class:`PopArtActorCriticPolicy` with SB3's dict-observation defaults (``CombinedExtractor``).

    :param args: MultiInputActorCriticPolicy's arguments
    :param popart_beta: step size of PopArt's moving averages (Hessel et al. 2018 use 3e-4)
    :param kwargs: MultiInputActorCriticPolicy's keyword arguments
    """


class _PopArtValueNormalization:
    """What both algorithms add to their SB3 base: the ``popart_beta`` argument, the policy check, and the per-step
    ART+POP update with the normalised targets and scaled advantages it yields (SB3 computes the losses inline in
    ``train``, so each class restates its loop around these)."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": PopArtActorCriticPolicy,
        "CnnPolicy": PopArtActorCriticCnnPolicy,
        "MultiInputPolicy": PopArtMultiInputActorCriticPolicy,
    }
    policy: PopArtActorCriticPolicy
    policy_class: type[BasePolicy]
    policy_kwargs: dict[str, Any]
    popart_beta: float

    def __init__(self, *args: Any, popart_beta: float = 3e-4, **kwargs: Any) -> None:
        self.popart_beta = check_popart_beta(popart_beta)
        if "popart_beta" in (kwargs.get("policy_kwargs") or {}):
            raise ValueError("pass popart_beta to the algorithm, not in policy_kwargs")
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, PopArtActorCriticPolicy)):
            raise TypeError(f"the policy must be a PopArtActorCriticPolicy (or subclass), got {self.policy_class!r}")
        self.policy_kwargs = {**self.policy_kwargs, "popart_beta": self.popart_beta}  # also after load
        super()._setup_model()  # type: ignore[misc]

    def _popart_step(self, returns: th.Tensor, advantages: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        ART then POP on a batch's returns, then its normalised returns and advantages in the new statistics.

        Call it before the forward pass of the loss: the update rewrites the head's weights in place.

        :param returns: unnormalised returns G, [batch]
        :param advantages: unnormalised advantages A, [batch]
        :return: ((G - mu) / sigma, A / sigma), each [batch]
        """
        head = self.policy.value_net
        head.update(returns)
        scaled = (advantages.double() / head.sigma.to(advantages.device)).to(advantages.dtype)
        return head.normalize(returns), scaled

    def _popart_batch(
        self, rollout_data: Any, normalize_advantage: bool
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        One batch of the rollout through ART+POP and the policy: what both SB3 losses are built from.

        :param rollout_data: SB3's ``RolloutBufferSamples``
        :param normalize_advantage: standardise the (sigma-scaled) advantages over the batch, as SB3 does
        :return: normalised returns, advantages, normalised values n(x), log-probs, entropy term of the loss, each
            [batch] but the last (a scalar: minus the mean entropy, or the mean log-prob when it has no closed form)
        """
        actions = rollout_data.actions
        if isinstance(self.action_space, spaces.Discrete):  # type: ignore[attr-defined]
            actions = actions.long().flatten()
        returns, advantages = self._popart_step(rollout_data.returns, rollout_data.advantages)
        values, log_prob, entropy = self.policy.evaluate_actions_normalized(rollout_data.observations, actions)
        if normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        return returns, advantages, values.flatten(), log_prob, entropy_loss

    def _gradient_step(self, loss: th.Tensor) -> None:
        """Backward, SB3's global gradient-norm clip, optimiser step."""
        self.policy.optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)  # type: ignore[attr-defined]
        self.policy.optimizer.step()

    def _record_popart(self) -> None:
        """Log the statistics of the value head."""
        head = self.policy.value_net
        logger: Any = self.logger  # type: ignore[attr-defined]
        logger.record("train/popart_mu", float(head.mu[0]))
        logger.record("train/popart_sigma", float(head.sigma[0]))


class PopArtPPO(_PopArtValueNormalization, PPO):
    """
    SB3's PPO with a PopArt value head: value targets and advantages normalised by PopArt's statistics instead of
    ``VecNormalize`` reward normalisation (module docstring: when the statistics move, the value loss, the advantages
    and ``clip_range_vf`` in normalised units).

    >>> import gymnasium as gym
    >>> env = gym.wrappers.TransformReward(gym.make("CartPole-v1"), lambda r: 1000.0 * r)  # no VecNormalize
    >>> model = PopArtPPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, popart_beta=3e-4, seed=0)
    >>> model = model.learn(total_timesteps=64)
    >>> action, _ = model.predict(env.observation_space.sample(), deterministic=True)

    :param args: PPO's arguments (``"MlpPolicy"``, ``"CnnPolicy"`` and ``"MultiInputPolicy"`` are the PopArt policies)
    :param popart_beta: step size of PopArt's moving averages, applied once per return (Hessel et al. 2018 use 3e-4)
    :param kwargs: PPO's keyword arguments
    """

    policy: PopArtActorCriticPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = _PopArtValueNormalization.policy_aliases

    def train(self) -> None:
        """
        PPO's update (SB3's loop), with ART+POP on each minibatch's returns before its loss. When ``target_kl`` stops
        an epoch, the last minibatch has updated the statistics without a gradient step (which POP makes harmless).
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []

        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                normalize = self.normalize_advantage and len(rollout_data.advantages) > 1
                returns, advantages, values, log_prob, entropy_loss = self._popart_batch(rollout_data, normalize)

                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    values_pred = values
                else:
                    # clip in normalised units, around the old prediction in the current statistics
                    old_values = self.policy.value_net.normalize(rollout_data.old_values)
                    values_pred = old_values + th.clamp(values - old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(returns, values_pred)
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self._gradient_step(loss)

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        self._record_popart()

    def learn(
        self: SelfPopArtPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PopArtPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPopArtPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


class PopArtA2C(_PopArtValueNormalization, A2C):
    """
    SB3's A2C with a PopArt value head: value targets normalised by PopArt's statistics and advantages divided by
    sigma, instead of ``VecNormalize`` reward normalisation; the one gradient step per rollout is preceded by ART+POP
    on the rollout's returns (module docstring).

    >>> import gymnasium as gym
    >>> env = gym.wrappers.TransformReward(gym.make("CartPole-v1"), lambda r: 1000.0 * r)  # no VecNormalize
    >>> model = PopArtA2C("MlpPolicy", env, n_steps=8, seed=0).learn(total_timesteps=32)
    >>> values = model.policy.predict_values(model.policy.obs_to_tensor(env.observation_space.sample())[0])

    :param args: A2C's arguments (``"MlpPolicy"``, ``"CnnPolicy"`` and ``"MultiInputPolicy"`` are the PopArt policies)
    :param popart_beta: step size of PopArt's moving averages, applied once per return (Hessel et al. 2018 use 3e-4)
    :param kwargs: A2C's keyword arguments
    """

    policy: PopArtActorCriticPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = _PopArtValueNormalization.policy_aliases

    def train(self) -> None:
        """
        A2C's update (SB3's loop: one gradient step on the whole rollout), with ART+POP on the rollout's returns
        before the loss.
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        for rollout_data in self.rollout_buffer.get(batch_size=None):
            returns, advantages, values, log_prob, entropy_loss = self._popart_batch(rollout_data, self.normalize_advantage)
            policy_loss = -(advantages * log_prob).mean()
            value_loss = F.mse_loss(returns, values)
            loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
            self._gradient_step(loss)

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        self._n_updates += 1
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self._record_popart()

    def learn(
        self: SelfPopArtA2C,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "PopArtA2C",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPopArtA2C:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


__all__ = [
    "PopArtA2C",
    "PopArtActorCriticCnnPolicy",
    "PopArtActorCriticPolicy",
    "PopArtMultiInputActorCriticPolicy",
    "PopArtPPO",
    "check_popart_beta",
]
