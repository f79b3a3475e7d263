"""MuZero's training loss (Schrittwieser et al. 2020, Eq. 1 and the pseudocode's ``update_weights``), a pure function.

    l = sum_{k=0..K} w_k [ c_v CE(z_{t+k}, v_k) + c_r CE(u_{t+k}, r_k) (k >= 1) + c_p CE(pi_{t+k}, p_k) ]

with ``w_0 = 1`` and ``w_k = 1/K`` for the unrolled steps, categorical cross-entropies against the two-hot targets of
the value and reward supports, and the gradient flowing back into the hidden state halved *after* every recurrent
step (the pseudocode's ``scale_gradient(hidden_state, 0.5)`` follows ``recurrent_inference``, so the representation
gets the first step's gradient whole). Masked steps (past a game's end, or without a search) contribute nothing;
each sample is weighted by its importance weight. L2 regularisation is the optimizer's weight decay.

With ``autocast_dtype=th.bfloat16`` the unroll runs under autocast (:mod:`sb3_frontier.common.precision`) and its logits
are cast back to float32 before the log-softmaxes and cross-entropies: over a 601-bin support, bfloat16's 8-bit
significand would round the log-probabilities of the bins near the target.
"""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor
from torch.nn import functional as F

from sb3_frontier.algorithms.muzero.replay import MuZeroBatch
from sb3_frontier.common.precision import autocast
from sb3_frontier.policies.muzero import MuZeroPolicy
from sb3_frontier.policies.torsos import scale_gradient

#: Gradient scale of the hidden state between recurrent steps (the paper's Appendix G).
DYNAMICS_GRADIENT_SCALE = 0.5


def unroll(policy: MuZeroPolicy, batch: MuZeroBatch) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    Unroll the network K steps from the batch's observations along its actions.

    The dynamics function runs step by step (each hidden state is the previous one's successor); the prediction
    function, which reads each hidden state alone, runs once on the K+1 states stacked into one batch: the same
    outputs and gradients as K+1 calls of batch B (the networks hold no batch statistics), in K+1 times fewer
    prediction calls, each with larger convolutions.

    :param policy: the network
    :param batch: the sampled unrolls
    :return: policy logits ``[B, K+1, A]``, value logits ``[B, K+1, value bins]``, reward logits
        ``[B, K, reward bins]``
    """
    device = policy.device
    actions = th.as_tensor(batch.actions, device=device)
    n_samples, k_steps = actions.shape
    hidden = policy.representation(obs_as_tensor(batch.observations, device))
    states, all_reward = [hidden], []
    for k in range(k_steps):
        hidden, reward_logits = policy.dynamics(hidden, actions[:, k])
        states.append(hidden)  # the prediction heads read the state unscaled (the pseudocode's order)
        all_reward.append(reward_logits)
        hidden = scale_gradient(hidden, DYNAMICS_GRADIENT_SCALE)
    policy_logits, value_logits = policy.prediction(th.cat(states))  # [(K+1) * B, ...], step-major

    def per_sample(logits: th.Tensor) -> th.Tensor:
        return logits.view(k_steps + 1, n_samples, -1).transpose(0, 1)

    return per_sample(policy_logits), per_sample(value_logits), th.stack(all_reward, dim=1)


def muzero_loss(
    policy: MuZeroPolicy,
    batch: MuZeroBatch,
    value_targets: np.ndarray,
    value_coef: float = 1.0,
    reward_coef: float = 1.0,
    policy_coef: float = 1.0,
    autocast_dtype: th.dtype | None = None,
) -> tuple[dict[str, th.Tensor], np.ndarray]:
    """
    MuZero's loss on a batch of K-step unrolls.

    :param policy: the network
    :param batch: the unrolls (observations, actions, reward and policy targets, masks, importance weights)
    :param value_targets: ``[B, K+1]`` value targets z
    :param value_coef: weight of the value loss (0.25 in MuZero Reanalyze)
    :param reward_coef: weight of the reward loss
    :param policy_coef: weight of the policy loss
    :param autocast_dtype: dtype of the unroll's forward pass under autocast (``th.bfloat16``), None for float32
    :return: the loss and its parts (``loss``, ``value_loss``, ``reward_loss``, ``policy_loss``), and the network's
        root values ``[B]`` (scalars, for the priorities)
    """
    device = policy.device
    with autocast(device, autocast_dtype):
        logits = unroll(policy, batch)
    policy_logits, value_logits, reward_logits = (part.float() for part in logits)
    k_steps = reward_logits.shape[1]
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
    loss = value_coef * value_loss + reward_coef * reward_loss + policy_coef * policy_loss
    root_values = policy.value_support.decode_logits(value_logits[:, 0].detach()).cpu().numpy()
    return {"loss": loss, "value_loss": value_loss, "reward_loss": reward_loss, "policy_loss": policy_loss}, root_values


__all__ = ["DYNAMICS_GRADIENT_SCALE", "muzero_loss", "unroll"]
