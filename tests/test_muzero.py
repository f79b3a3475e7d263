"""MuZero: SB3 contract (learn/predict/save/load, callbacks, logging), episodes, masks and bad input."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_frontier import MuZero
from sb3_frontier.algorithms.muzero import REANALYZE_PRESET
from sb3_frontier.algorithms.muzero.losses import muzero_loss
from sb3_frontier.algorithms.muzero.reanalyze import apply_reanalyzed, reanalyze_request
from sb3_frontier.algorithms.muzero.replay import GameSegment, MuZeroReplayBuffer
from sb3_frontier.envs import register_envs
from sb3_frontier.policies.torsos import min_max_scale, scale_gradient
from tests.muzero_helpers import cartpole_muzero, small_model

th.set_num_threads(1)
register_envs()

SMALL = dict(
    learning_starts=32,
    batch_size=16,
    num_simulations=4,
    buffer_size=2_000,
    segment_length=20,
    policy_kwargs=dict(hidden_dim=16, net_arch=[32], value_support=(-10, 10, 21), reward_support=(-3, 3, 7)),
)


class MaskedEnv(gym.Env):
    """Actions 0..3; only ``legal`` ones are allowed (others raise). Reward 1 per step, 12 steps long."""

    def __init__(self, legal=(1, 3)):
        self.observation_space = spaces.Box(0, 1, (3,), np.float32)
        self.action_space = spaces.Discrete(4)
        self.mask = np.zeros(4, bool)
        self.mask[list(legal)] = True
        self.t = 0

    def _info(self):
        return {"action_mask": self.mask.copy()}

    def action_masks(self):
        return self.mask.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), self._info()

    def step(self, action):
        if not self.mask[action]:
            raise AssertionError(f"illegal action {action}")
        self.t += 1
        return np.full(3, self.t / 12, np.float32), 1.0, self.t >= 12, False, self._info()


class MethodMaskedEnv(MaskedEnv):
    """Legal actions only through ``action_masks()`` (sb3-contrib's convention), none in the infos."""

    def _info(self):
        return {}


class NaNRewardEnv(MaskedEnv):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float("nan"), terminated, truncated, info


class LivesEnv(gym.Env):
    """A 3-life game of 9 steps: a life is lost every 3 steps (LifeLoss 'roll' semantics via info)."""

    observation_space = spaces.Box(0, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        life_loss = self.t % 3 == 0
        return np.array([self.t / 9, 0], np.float32), 1.0, self.t >= 9, False, {"life_loss": life_loss}


@pytest.mark.parametrize(
    "policy,env_id",
    [("MlpPolicy", "CartPole-v1"), ("CnnPolicy", "MinAtar/Breakout-v1"), ("MultiInputPolicy", None)],
)
def test_learn_predict_all_policies(policy, env_id):
    env = DummyVecEnv([lambda: SimpleMultiObsEnv(random_start=False)]) if env_id is None else make_vec_env(env_id, n_envs=2)
    kwargs = dict(SMALL)
    if policy == "CnnPolicy":
        kwargs["policy_kwargs"] = dict(channels=8, n_blocks=1, head_channels=4, head_hidden=[16])
    model = MuZero(policy, env, seed=0, **kwargs).learn(100)
    assert model.num_timesteps >= 100
    assert model._n_updates > 0
    obs = env.reset()
    actions, state = model.predict(obs, deterministic=True)
    assert actions.shape == (env.num_envs,) and state is None
    assert env.action_space.contains(int(actions[0]))
    single = {k: v[0] for k, v in obs.items()} if isinstance(obs, dict) else obs[0]
    action, _ = model.predict(single, deterministic=True)
    assert np.ndim(action) == 0 and int(action) == int(actions[0])


def test_deterministic_predict_is_reproducible_and_survives_save_load(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL).learn(80)
    obs = env.reset()
    first, _ = model.predict(obs, deterministic=True)
    again, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, again)
    model.save(tmp_path / "muzero")
    loaded = MuZero.load(tmp_path / "muzero", env=env)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], first)
    without_env = MuZero.load(tmp_path / "muzero")  # as rl-zoo3's enjoy loads it
    np.testing.assert_array_equal(without_env.predict(obs, deterministic=True)[0], first)
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, loaded.policy.state_dict()[key])
    for key, value in model.target_policy.state_dict().items():
        assert th.equal(value, loaded.target_policy.state_dict()[key])
    assert loaded.replay_buffer is not None and len(loaded.replay_buffer) == 0  # replay is not in the zip
    # the replay buffer has its own file
    model.save_replay_buffer(tmp_path / "replay.pkl")
    loaded.load_replay_buffer(tmp_path / "replay.pkl")
    assert len(loaded.replay_buffer) == len(model.replay_buffer) > 0
    np.testing.assert_array_equal(loaded.replay_buffer.rewards, model.replay_buffer.rewards)
    loaded.learn(40, reset_num_timesteps=False)  # training goes on from the loaded replay
    assert loaded.num_timesteps >= 120


def test_resume_keeps_counting_and_games_in_progress():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL)
    model.learn(60)
    steps, written = model.num_timesteps, model.replay_buffer.n_written
    held = [len(b) for b in model.runner.actor.builders]
    model.learn(60, reset_num_timesteps=False)
    assert model.num_timesteps == steps + 60
    # positions of games in progress were kept (nothing was dropped at the second learn call)
    total_positions = model.replay_buffer.n_written + sum(len(b) for b in model.runner.actor.builders)
    assert total_positions >= written + sum(held) + 60


def test_callbacks_progress_bar_and_tensorboard(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    eval_cb = EvalCallback(eval_env, eval_freq=40, n_eval_episodes=2, log_path=str(tmp_path / "eval"), verbose=0)
    ckpt_cb = CheckpointCallback(save_freq=40, save_path=str(tmp_path / "ckpt"), name_prefix="mz")
    model = MuZero("MlpPolicy", env, seed=0, tensorboard_log=str(tmp_path / "tb"), **SMALL)
    model.learn(120, callback=[eval_cb, ckpt_cb], progress_bar=True, log_interval=1)
    assert len(eval_cb.evaluations_results) >= 1
    assert any(name.endswith(".zip") for name in os.listdir(tmp_path / "ckpt"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "tb" / os.listdir(tmp_path / "tb")[0]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/value_loss", "train/reward_loss", "train/policy_loss", "train/priority_mean", "search/search_value"):
        assert tag in tags, tags


@pytest.mark.parametrize("env_class", [MaskedEnv, MethodMaskedEnv])
def test_masks_are_respected_in_collection_prediction_and_evaluation(env_class):
    from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy

    env = DummyVecEnv([env_class, env_class])
    model = MuZero("MlpPolicy", env, seed=0, **SMALL)
    model.learn(100)  # the env raises on an illegal action
    replay = model.replay_buffer
    stored = replay.actions[: replay.n_written]
    assert set(np.unique(stored[stored >= 0])) <= {1, 3}
    policies = replay.policies[: replay.n_written]
    assert np.all(policies[:, [0, 2]] == 0)
    # Evaluation on an env whose legal actions are the ones training never allowed: only the masks can find them.
    eval_env = DummyVecEnv([lambda: Monitor(env_class(legal=(0, 2)))])
    mean, _ = maskable_evaluate_policy(model, eval_env, n_eval_episodes=2, deterministic=True)
    assert mean == pytest.approx(12.0)
    with pytest.raises(AssertionError, match="illegal action"):  # without masks the trained prior plays 1 or 3
        evaluate_policy(model, eval_env, n_eval_episodes=2, deterministic=True)
    actions, _ = model.predict(np.zeros((5, 3), np.float32), action_masks=np.tile([True, False, True, False], (5, 1)))
    assert set(actions.tolist()) <= {0, 2}


def test_life_loss_and_truncation_reach_the_replay():
    env = DummyVecEnv([LivesEnv])
    model = MuZero("MlpPolicy", env, seed=0, **SMALL)
    model.learn(27)  # three whole games
    replay = model.replay_buffer
    n = replay.n_written
    steps = np.rint(replay.observations[:n, 0] * 9).astype(int)
    for slot, t in enumerate(steps):
        if t == 9:  # terminal observation
            continue
        next_loss = (t // 3 + 1) * 3  # a life is lost on the steps ending at 3, 6, 9
        # rewards up to the life loss, then no bootstrap: the life loss cuts the value target ("roll")
        assert replay.bootstrap_index[slot] == -1
        assert replay.value_prefix[slot] == pytest.approx(sum(model.gamma**i for i in range(next_loss - t)))

    trunc_env = make_vec_env("CartPole-v1", n_envs=1, seed=0, env_kwargs=dict(max_episode_steps=7))
    model = MuZero("MlpPolicy", trunc_env, seed=0, **SMALL)
    model.learn(35)
    replay = model.replay_buffer
    n = replay.n_written
    finals = np.flatnonzero(replay.actions[:n] < 0)  # final observations of finished games
    assert len(finals) >= 3
    for slot in finals:  # the pole does not fall within 7 steps: every game is truncated by the time limit
        assert not replay.segment_terminal[slot]
        assert replay.bootstrap_index[slot - 1] == slot  # the last step bootstraps from the final observation
        assert replay.bootstrap_discount[slot - 1] == pytest.approx(model.gamma)
        assert not replay.value_valid[slot]


def test_reanalyzed_targets_refresh_only_positions_still_stored():
    replay = MuZeroReplayBuffer(30, spaces.Box(-1, 1, (2,)), n_actions=3, unroll_steps=2, td_steps=2)

    def game(length: int, policy: float) -> GameSegment:
        policies = np.full((length, 3), policy, dtype=np.float32)
        actions = np.ones(length, dtype=np.int64)
        actions[-1] = -1
        return GameSegment(
            observations=np.zeros((length, 2), np.float32),
            actions=actions,
            rewards=np.zeros(length, np.float32),
            root_values=np.zeros(length, np.float32),
            policies=policies,
            legal=np.ones((length, 3), bool),
            stops=np.zeros(length, bool),
            terminal=True,
            n_starts=length,
        )

    replay.add(game(20, 1 / 3))
    batch = replay.sample(10, np.random.default_rng(0))
    request = reanalyze_request(batch, 0.5, replay)
    assert request is not None and request.rows == 5
    replay.add(game(20, 0.5))  # overwrites positions 0-9 of the first game with a new game
    targets = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (len(request.positions), 1))
    refreshed = apply_reanalyzed(batch, request, targets, replay)
    live = request.positions >= 10
    assert refreshed == live.sum()
    np.testing.assert_array_equal(batch.policies[:5][request.mask], targets)  # the batch takes them all
    np.testing.assert_array_equal(replay.policies[request.positions[live] % 30], targets[live])
    assert np.all(replay.policies[request.positions[~live] % 30] == 0.5)  # the new game keeps its own
    with pytest.raises(ValueError, match="shape"):
        apply_reanalyzed(batch, request, targets[:, :2], replay)


def test_reanalyze_re_searches_policy_targets_and_bootstraps_from_the_target_network():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    preset = {**REANALYZE_PRESET, "dirichlet_fraction": 0.0}  # no root noise: a fresh search is reproducible
    model = MuZero("MlpPolicy", env, seed=0, **SMALL, **preset)
    assert model.reanalyze_fraction == 0.8 and model.value_bootstrap == "target" and model.td_steps == 5
    model.learn(80)
    assert model._n_updates > 0
    batch = model.replay_buffer.sample(10, np.random.default_rng(3))
    batch.policies[batch.policy_mask] = -1.0  # no search gives this: what a new search writes shows
    stored = batch.policies.copy()
    model._reanalyze(batch)
    n = round(0.8 * 10)
    head = batch.policy_mask[:n]
    fresh = model.planner.policy_target(
        model.planner.search(model.replay_buffer.observations_at(batch.positions[:n][head]), batch.legal[:n][head])
    )
    np.testing.assert_array_equal(batch.policies[:n][head], fresh)  # the head's targets come from a new search
    np.testing.assert_array_equal(batch.policies[n:], stored[n:])  # the tail keeps the stored targets
    # ... and the stored game's targets are refreshed with them
    np.testing.assert_array_equal(model.replay_buffer.policies[batch.positions[:n][head] % model.buffer_size], fresh)
    # Value bootstraps come from the target network, not from the stored search values: make its value a constant.
    with th.no_grad():
        for param in model.target_policy.value_head.parameters():
            param.zero_()
        support = model.policy.value_support
        model.target_policy.value_head.bias[:] = th.as_tensor(support.encode(np.array([2.5]))[0]).log().clamp(min=-1e4)
    z = batch.value_targets(model._bootstrap_values(batch))
    has = batch.bootstrap_indices >= 0
    assert has.any()
    # float32 decode: the expectation over atoms of size <= vmax is exact to a few eps32 * vmax, and h^-1 stretches it
    # by its slope 2 sqrt(|v| + 1) + O(eps) at v = 2.5; the float32 sum prefix + discount * v adds an ulp of |z|.
    eps32 = float(np.finfo(np.float32).eps)
    tol = 8 * eps32 * support.vmax * 2 * np.sqrt(2.5 + 1) + 4 * eps32 * np.abs(z[has]).max()
    np.testing.assert_allclose(z[has], batch.value_prefix[has] + batch.bootstrap_discount[has] * 2.5, rtol=0, atol=tol)
    assert not np.allclose(batch.value_targets()[has], z[has])


def test_two_player_self_play_on_tictactoe():
    env = make_vec_env("sb3_frontier/TicTacToe-v0", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, two_player=True, gamma=1.0, **SMALL)
    model.learn(60)
    replay = model.replay_buffer
    written = replay.n_written
    assert written > 0
    # value targets are final outcomes (+-1 or 0, never bootstrapped); reward targets are zero (the outcome is in the
    # values, so the search's r + discount * V does not count a win twice)
    targets = replay.value_prefix[:written]
    assert set(np.unique(targets)) <= {-1.0, 0.0, 1.0}
    assert np.any(targets != 0)
    assert np.all(replay.bootstrap_index[:written] == -1)
    assert np.all(replay.rewards[:written] == 0)
    # the terminal position's target is the loss of the player to move there: minus the last mover's result
    finals = np.flatnonzero(replay.actions[:written] < 0)
    assert np.all(targets[finals] == -targets[finals - 1])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="Discrete"):
        MuZero("MlpPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match="unroll_steps"):
        MuZero("MlpPolicy", "CartPole-v1", unroll_steps=0)
    with pytest.raises(ValueError, match="td_steps"):
        MuZero("MlpPolicy", "CartPole-v1", td_steps=0)
    with pytest.raises(ValueError, match="3-D"):
        MuZero("CnnPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="Dict"):
        MuZero("MultiInputPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="reanalyze_fraction"):
        MuZero("MlpPolicy", "CartPole-v1", reanalyze_fraction=1.5)
    with pytest.raises(ValueError, match="buffer_size"):
        MuZero("MlpPolicy", "CartPole-v1", buffer_size=50, segment_length=200)
    model = MuZero("MlpPolicy", DummyVecEnv([NaNRewardEnv]), **SMALL)
    with pytest.raises(ValueError, match="non-finite rewards"):
        model.learn(10)


def test_support_too_small_warns():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    kwargs = dict(SMALL)
    kwargs["policy_kwargs"] = dict(hidden_dim=16, net_arch=[32], value_support=(-1, 1, 5), reward_support=(-0.2, 0.2, 5))
    model = MuZero("MlpPolicy", env, seed=0, **kwargs)
    with pytest.warns(UserWarning, match="support"):
        model.learn(80)


def test_scale_gradient_and_min_max_scaling():
    x = th.randn(4, 3, requires_grad=True)
    scale_gradient(x, 0.5).sum().backward()
    assert th.allclose(x.grad, th.full_like(x, 0.5))
    h = th.randn(5, 2, 3, 3) * th.arange(1, 6).view(5, 1, 1, 1)
    scaled = min_max_scale(h)
    flat = scaled.flatten(1)
    assert th.all(flat.min(1).values == 0)  # (low - low) / (...) is exactly 0
    # the maximum is range / (range + eps) with eps = 1e-5 guarding constant states: 1 - eps / range, up to rounding
    value_range = (h.flatten(1).max(1).values - h.flatten(1).min(1).values).double()
    expected = (value_range / (value_range + 1e-5)).float()
    th.testing.assert_close(flat.max(1).values, expected, rtol=4 * th.finfo(th.float32).eps, atol=0)
    # per sample, never across the batch: a sample's scaling ignores the others
    assert th.allclose(min_max_scale(h[2:3]), scaled[2:3])


def test_loss_matches_a_per_sample_reference():
    """The vectorised loss equals a plain loop over samples and unroll steps written from the paper's Eq. 1."""
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL).learn(80)
    batch = model.replay_buffer.sample(6, np.random.default_rng(0), importance_exponent=1.0)
    z = batch.value_targets()
    losses, _ = muzero_loss(model.policy, batch, z)
    policy = model.policy
    k_steps = model.unroll_steps
    total = 0.0
    with th.no_grad():
        for b in range(6):
            obs = th.as_tensor(batch.observations[b : b + 1], device=model.device)
            hidden, p_logits, v_logits = policy.initial_inference(obs)
            sample = 0.0
            for k in range(k_steps + 1):
                if k > 0:
                    action = th.as_tensor(batch.actions[b : b + 1, k - 1], device=model.device)
                    hidden, r_logits, p_logits, v_logits = policy.recurrent_inference(hidden, action)
                scale = 1.0 if k == 0 else 1.0 / k_steps
                if batch.value_mask[b, k]:
                    target = policy.value_support.encode(np.array([z[b, k]]))
                    sample += scale * -(th.as_tensor(target, device=model.device) * th.log_softmax(v_logits, -1)).sum().item()
                if k > 0 and batch.reward_mask[b, k]:
                    target = policy.reward_support.encode(np.array([batch.rewards[b, k]]))
                    sample += scale * -(th.as_tensor(target, device=model.device) * th.log_softmax(r_logits, -1)).sum().item()
                if batch.policy_mask[b, k]:
                    target = th.as_tensor(batch.policies[b, k], device=model.device)
                    sample += scale * -(target * th.log_softmax(p_logits, -1)).sum().item()
            total += batch.weights[b] * sample
    # float32 sums of the same terms in another order: each of the ~6 x (K+1) x bins products rounds once
    n_terms = 6 * (k_steps + 1) * (policy.value_support.n_bins + policy.reward_support.n_bins + model.n_actions)
    assert losses["loss"].item() == pytest.approx(total / 6, rel=n_terms * float(np.finfo(np.float32).eps))


def test_non_finite_loss_raises_and_l2_is_on_by_default():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL)
    assert model.policy.optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-4)
    model.learn(60)
    with th.no_grad():
        next(model.policy.value_head.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="not finite"):
        model.train(1, batch_size=8)


def test_temperature_moves_plays_greedily_after_the_opening():
    """Board-game schedule: moves after ``temperature_moves`` take the most visited action."""
    env = DummyVecEnv([lambda: MaskedEnv(legal=(0, 1, 2, 3)) for _ in range(2)])
    kwargs = {**SMALL, "learning_starts": 10_000}  # acting only
    model = MuZero("MlpPolicy", env, seed=0, temperature=5.0, temperature_moves=3, **kwargs)
    model.learn(240)
    replay = model.replay_buffer
    n = replay.n_written
    steps = np.rint(replay.observations[:n, 0] * 12).astype(int)
    taken = replay.actions[:n]
    visits = replay.policies[:n]
    most_visited = visits == visits.max(axis=1, keepdims=True)
    is_greedy = most_visited[np.arange(n), np.maximum(taken, 0)]
    moves = taken >= 0
    assert np.all(is_greedy[moves & (steps >= 3)])
    assert not np.all(is_greedy[moves & (steps < 3)])  # a high temperature explores in the opening
    with pytest.raises(ValueError, match="temperature_moves"):
        MuZero("MlpPolicy", env, temperature_moves=-1)


class CountingEnv(gym.Env):
    """Observations encode (env id, step): ``[id, t / 100]``; episodes of 15 steps."""

    observation_space = spaces.Box(0, 10, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, env_id=1):
        self.env_id = env_id

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([self.env_id, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.env_id, self.t / 100], np.float32), 1.0, self.t >= 15, False, {}


def test_set_env_then_resume_starts_new_games():
    """After set_env, learn(reset_num_timesteps=False) must not append the new env's episodes to the old games."""
    model = MuZero("MlpPolicy", DummyVecEnv([lambda: CountingEnv(1)]), seed=0, **{**SMALL, "learning_starts": 10_000})
    model.learn(7)  # a game in progress, no segment written yet
    assert model.replay_buffer.n_written == 0
    model.set_env(DummyVecEnv([lambda: CountingEnv(2)]))
    model.learn(40, reset_num_timesteps=False)
    replay = model.replay_buffer
    written = replay.observations[: replay.n_written]
    assert replay.n_written > 0 and np.all(written[:, 0] == 2)  # every stored position comes from the new env
    # each stored game starts at step 0 and counts up one by one
    steps = np.rint(written[:, 1] * 100).astype(int)
    starts = np.flatnonzero(steps == 0)
    assert starts[0] == 0 and np.all(np.diff(steps)[np.diff(steps) != -15] == 1)


def test_collection_searches_in_eval_mode_and_rollout_callbacks_fire():
    from stable_baselines3.common.callbacks import BaseCallback

    class Recorder(BaseCallback):
        def __init__(self):
            super().__init__()
            self.events = []

        def _on_rollout_start(self):
            self.events.append("start")

        def _on_rollout_end(self):
            self.events.append("end")

        def _on_step(self):
            return True

    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL)
    modes = []
    search = model.planner.search

    def recording_search(*args, **kwargs):
        modes.append(model.policy.training)
        return search(*args, **kwargs)

    model.planner.search = recording_search
    recorder = Recorder()
    model.learn(80, callback=recorder)
    assert model._n_updates > 0 and len(modes) >= 40
    assert not any(modes)  # the network acts in evaluation mode, also after train() switched it to training
    assert recorder.events[:4] == ["start", "end", "start", "end"] and len(recorder.events) == 2 * 40


def test_train_freq_in_episodes_and_gradient_steps():
    model = MuZero(
        "MlpPolicy",
        DummyVecEnv([lambda: CountingEnv(1)]),
        seed=0,
        train_freq=(1, "episode"),
        **{**SMALL, "learning_starts": 0},
    )
    model.learn(45)  # three episodes of 15 steps: one training phase after each
    assert model._n_updates == 3
    with pytest.raises(ValueError, match="unit"):
        MuZero("MlpPolicy", "CartPole-v1", train_freq=(1, "hour"))
    with pytest.raises(ValueError, match="gradient_steps"):
        MuZero("MlpPolicy", "CartPole-v1", gradient_steps=0)


def test_dynamics_gradient_is_halved_after_each_recurrent_step_as_in_the_pseudocode():
    """The representation gets the first recurrent step's gradient whole; later steps reach it halved per step."""
    from sb3_frontier.algorithms.muzero import losses as losses_module

    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, unroll_steps=3, **SMALL).learn(80)
    batch = model.replay_buffer.sample(8, np.random.default_rng(0))
    policy = model.policy
    obs = th.as_tensor(batch.observations)
    actions = th.as_tensor(batch.actions)

    def gradient_on_root_hidden(step: int, scales: list[float]) -> th.Tensor:
        """d(sum of step `step`'s value logits)/d(root hidden state), scaling the hidden state by scales[k] before k."""
        hidden = policy.representation(obs).detach().requires_grad_(True)
        state = hidden
        for k in range(step):
            state = scale_gradient(state, scales[k])
            state, _, _, value_logits = policy.recurrent_inference(state, actions[:, k])
        value_logits.sum().backward()
        return hidden.grad

    # Our unroll, from a root hidden state we hold (the representation's output made a leaf).
    for step in (1, 2, 3):
        root = policy.representation(obs).detach().requires_grad_(True)
        representation = policy.representation
        policy.representation = lambda _obs, root=root: root
        try:
            _, value_logits, _ = losses_module.unroll(policy, batch)
        finally:
            policy.representation = representation
        value_logits[:, step].sum().backward()
        reference = gradient_on_root_hidden(step, [1.0] + [0.5] * (step - 1))
        th.testing.assert_close(root.grad, reference)
        wrong = gradient_on_root_hidden(step, [0.5] * step)  # scaling before every dynamics call, the first included
        assert not th.allclose(wrong, reference)


@pytest.mark.parametrize("policy_name", ["MlpPolicy", "CnnPolicy"])
def test_unroll_batches_the_prediction_and_matches_step_by_step_inference(policy_name: str):
    """The unroll's one prediction call on the K+1 stacked hidden states gives the outputs and gradients of the
    pseudocode's loop (initial_inference, then recurrent_inference and the gradient halving per step)."""
    from sb3_frontier.algorithms.muzero import losses as losses_module

    model = small_model(policy_name, seed=0)
    policy = model.policy
    batch = model.replay_buffer.sample(8, np.random.default_rng(0))
    obs = obs_as_tensor(batch.observations, policy.device)
    actions = th.as_tensor(batch.actions)
    params = [param for param in policy.parameters() if param.requires_grad]

    def outputs_and_gradient(logits: tuple[th.Tensor, th.Tensor, th.Tensor]) -> tuple[list[th.Tensor], list[th.Tensor]]:
        # a loss that weighs every output and step differently, so that a swapped step or sample changes the gradient
        scalar = th.zeros(())
        for index, part in enumerate(logits):
            bins = th.randn(part.shape[-1], generator=th.Generator().manual_seed(index))
            scalar = scalar + ((part * bins).sum(-1) * th.arange(1.0, part.shape[1] + 1)).sum()
        policy.zero_grad()
        scalar.backward()
        return [part.detach() for part in logits], [param.grad.clone() for param in params]

    hidden, policy_logits, value_logits = policy.initial_inference(obs)
    all_policy, all_value, all_reward = [policy_logits], [value_logits], []
    for k in range(actions.shape[1]):
        hidden, reward_logits, policy_logits, value_logits = policy.recurrent_inference(hidden, actions[:, k])
        hidden = scale_gradient(hidden, losses_module.DYNAMICS_GRADIENT_SCALE)
        all_policy.append(policy_logits)
        all_value.append(value_logits)
        all_reward.append(reward_logits)
    reference = outputs_and_gradient((th.stack(all_policy, 1), th.stack(all_value, 1), th.stack(all_reward, 1)))
    batched = outputs_and_gradient(losses_module.unroll(policy, batch))
    # the same products per sample, summed in another order by larger convolutions and matrix products: float32
    # rounding of sums of a few hundred terms of order 1
    tolerance = 256 * float(np.finfo(np.float32).eps)
    for ours, theirs in zip(batched[0] + batched[1], reference[0] + reference[1], strict=True):
        th.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance * float(theirs.abs().max()))


def test_two_player_needs_gamma_one_and_uses_known_bounds():
    with pytest.raises(ValueError, match=r"gamma=1\.0"):
        MuZero("MlpPolicy", "sb3_frontier/TicTacToe-v0", two_player=True, gamma=0.99)
    model = MuZero("MlpPolicy", "sb3_frontier/TicTacToe-v0", two_player=True, gamma=1.0)
    assert model.search_settings.known_bounds == (-1.0, 1.0) and model.search_settings.discount == -1.0
    assert MuZero("MlpPolicy", "CartPole-v1").search_settings.known_bounds is None


def test_optimizer_kwargs_merge_with_the_default_weight_decay():
    model = MuZero("MlpPolicy", "CartPole-v1", policy_kwargs=dict(optimizer_kwargs=dict(eps=1e-5)))
    group = model.policy.optimizer.param_groups[0]
    assert group["weight_decay"] == pytest.approx(1e-4) and group["eps"] == pytest.approx(1e-5)
    model = MuZero("MlpPolicy", "CartPole-v1", policy_kwargs=dict(optimizer_kwargs=dict(weight_decay=0.0)))
    assert model.policy.optimizer.param_groups[0]["weight_decay"] == 0.0


def test_noise_generator_continues_after_save_and_load(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL).learn(40)
    model.save(tmp_path / "model.zip")
    loaded = MuZero.load(tmp_path / "model.zip", env=env)
    expected = model._rng.random(4)
    np.testing.assert_array_equal(loaded._rng.random(4), expected)
    assert not np.array_equal(np.random.default_rng(0).random(4), expected)  # not restarted from the seed
    assert loaded.planner.rng is loaded._rng


def test_learn_without_arguments_runs_the_default_budget():
    model = MuZero("MlpPolicy", DummyVecEnv([lambda: CountingEnv(1)]), **SMALL)
    assert MuZero.default_total_timesteps == 100_000
    model.default_total_timesteps = 30  # the mechanism; the documented budget is the class attribute
    model.learn()
    assert model.num_timesteps == 30


class NaNObsEnv(CountingEnv):
    def step(self, action):
        _, reward, terminated, truncated, info = super().step(action)
        return np.array([np.nan, 0], np.float32), reward, terminated, truncated, info


def test_bad_hyperparameters_and_inputs_get_clear_errors(tmp_path):
    for kwargs, match in (
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(pb_c_init=-0.5), "pb_c_init"),
        (dict(pb_c_base=0.0), "pb_c_base"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(num_simulations=0), "num_simulations"),
        (dict(search="beam"), "search"),
        (dict(known_bounds=(1.0, -1.0)), "known_bounds"),
    ):
        with pytest.raises(ValueError, match=match):
            MuZero("MlpPolicy", "CartPole-v1", **kwargs)
    model = MuZero("MlpPolicy", DummyVecEnv([NaNObsEnv]), **SMALL)
    with pytest.raises(ValueError, match="observations hold NaN"):
        model.learn(10)


def test_load_replay_buffer_must_fit_the_model(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL).learn(40)
    model.save_replay_buffer(tmp_path / "replay.pkl")
    for kwargs, match in ((dict(unroll_steps=3), "unroll_steps"), (dict(td_steps=4), "td_steps"), (dict(gamma=0.9), "gamma")):
        other = MuZero("MlpPolicy", env, **{**SMALL, **kwargs})
        with pytest.raises(ValueError, match=match):
            other.load_replay_buffer(tmp_path / "replay.pkl")
    other = MuZero("MlpPolicy", DummyVecEnv([lambda: CountingEnv(1)]), **SMALL)
    with pytest.raises(ValueError, match="observation_space"):
        other.load_replay_buffer(tmp_path / "replay.pkl")
    same = MuZero("MlpPolicy", env, **SMALL)
    same.load_replay_buffer(tmp_path / "replay.pkl")
    assert same.replay_buffer.n_written == model.replay_buffer.n_written
    same.learn(20, reset_num_timesteps=False)


def test_gumbel_search_acts_by_sequential_halving_and_stores_the_improved_policy():
    env = DummyVecEnv([lambda: CountingEnv(1)])
    model = MuZero("MlpPolicy", env, seed=0, search="gumbel", **{**SMALL, "learning_starts": 10_000})
    outputs = []
    search = model.planner.search

    def recording_search(*args, **kwargs):
        out = search(*args, **kwargs)
        outputs.append(out)
        return out

    model.planner.search = recording_search
    model.learn(16)  # one game of 15 moves and the first move of the next
    replay = model.replay_buffer
    stored = replay.policies[: replay.n_written - 1]  # the final observation has no search
    acted = replay.actions[: replay.n_written - 1]
    np.testing.assert_array_equal(stored, np.stack([o.action_weights[0] for o in outputs[:15]]).astype(np.float32))
    np.testing.assert_array_equal(acted, [o.action[0] for o in outputs[:15]])
    visit_probs = np.stack([o.visit_probs[0] for o in outputs[:15]])
    assert not np.allclose(stored, visit_probs)  # the improved policy, not the visit distribution


def test_gradient_threads_give_the_whole_batch_gradient_and_train():
    """A gradient step on shards in two threads is the batch's gradient up to float32 rounding, and trains."""
    import functools

    from sb3_frontier.common.sharded_gradient import ShardedGradient

    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, gradient_threads=2, **SMALL).learn(80)
    assert model._n_updates > 0 and all(p.grad is not None for p in model.policy.parameters())
    batch = model.replay_buffer.sample(16, np.random.default_rng(1))
    targets = batch.value_targets()
    params = list(model.policy.parameters())
    shard_loss = functools.partial(model._shard_loss, batch, targets)
    whole_loss, _ = ShardedGradient(params, 1)(16, shard_loss)
    whole = [p.grad.clone() for p in params]
    split_loss, shards = model._gradient(16, shard_loss)
    assert [len(values) for _, values in shards] == [8, 8]
    # float32: each gradient element sums per-sample terms in another order, an error of a few eps32 of the largest
    # term; 1e3 * eps32 of the gradient's largest entry bounds that with room, and a wrong shard weighting (e.g.
    # summing shard means instead of weighting them) is off by 2x.
    eps = float(np.finfo(np.float32).eps)
    th.testing.assert_close(split_loss, whole_loss, rtol=1e3 * eps, atol=0)
    for p, g in zip(params, whole, strict=True):
        th.testing.assert_close(p.grad, g, rtol=0, atol=1e3 * eps * max(g.abs().max().item(), 1e-12))
    with pytest.raises(ValueError, match="gradient_threads"):
        MuZero("MlpPolicy", "CartPole-v1", gradient_threads=0)


def test_cnn_kernels_are_channels_last_on_the_cpu_through_copies_and_loading(tmp_path):
    """The residual CNN's kernels match its channels-last activations (no per-call kernel copy), stay so through
    deepcopy, ``.to("cpu")`` and save/load, and give the network's outputs of the default layout."""
    import copy

    model = small_model("CnnPolicy", seed=0)
    policy = model.policy
    kernels = [param for param in policy.parameters() if param.dim() == 4]
    assert kernels and all(k.is_contiguous(memory_format=th.channels_last) for k in kernels)
    obs = obs_as_tensor(model.replay_buffer.sample(8, np.random.default_rng(0)).observations, policy.device)
    with th.no_grad():
        channels_last_out = policy.initial_inference(obs)
        plain = copy.deepcopy(policy)
        for param in plain.parameters():
            if param.dim() == 4:
                param.data = param.data.contiguous()
        default_out = plain.initial_inference(obs)
    for ours, theirs in zip(channels_last_out, default_out, strict=True):
        # the same convolutions, oneDNN's other kernel order: float32 rounding of sums of a few hundred terms
        tolerance = 256 * float(np.finfo(np.float32).eps)
        th.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance * float(theirs.abs().max()))
    moved = plain.to("cpu")  # every move re-lays the kernels for the device they land on
    assert all(k.is_contiguous(memory_format=th.channels_last) for k in moved.parameters() if k.dim() == 4)
    model.save(tmp_path / "cnn")
    loaded = MuZero.load(tmp_path / "cnn", device="cpu")
    assert all(k.is_contiguous(memory_format=th.channels_last) for k in loaded.policy.parameters() if k.dim() == 4)
    for ours, theirs in zip(policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        assert th.equal(ours, theirs)


@pytest.mark.parametrize("search", ["gumbel", "muzero"])
def test_deterministic_evaluation_during_training_leaves_training_unchanged(search: str) -> None:
    """``predict(deterministic=True)`` draws nothing from the generator acting uses (EvalCallback evaluates between
    collection steps): a run evaluated every 50 steps ends with the same parameters as a run never evaluated."""
    from stable_baselines3.common.callbacks import BaseCallback

    probe = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.n_calls % 50 == 0:
                self.model.predict(probe, deterministic=True)
            return True

    def train(callback: Any) -> dict[str, th.Tensor]:
        model = cartpole_muzero(search=search, learning_starts=100, batch_size=16, gradient_steps=1)
        model.learn(400, callback=callback)
        return {k: v.clone() for k, v in model.policy.state_dict().items()}

    plain, evaluated = train(None), train(Evaluate())
    for name, value in plain.items():
        assert th.equal(value, evaluated[name]), name
