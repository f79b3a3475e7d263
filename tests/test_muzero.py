"""MuZero: SB3 contract (learn/predict/save/load, callbacks, logging), episodes, masks and bad input."""

from __future__ import annotations

import os

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
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_frontier import MuZero
from sb3_frontier.algorithms.muzero import REANALYZE_PRESET
from sb3_frontier.envs import register_envs
from sb3_frontier.policies.torsos import min_max_scale, scale_gradient

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

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), self._info()

    def step(self, action):
        if not self.mask[action]:
            raise AssertionError(f"illegal action {action}")
        self.t += 1
        return np.full(3, self.t / 12, np.float32), 1.0, self.t >= 12, False, self._info()


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
    held = [len(b) for b in model._builders]
    model.learn(60, reset_num_timesteps=False)
    assert model.num_timesteps == steps + 60
    # positions of games in progress were kept (nothing was dropped at the second learn call)
    total_positions = model.replay_buffer.n_written + sum(len(b) for b in model._builders)
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


def test_evaluate_policy_and_masks_are_respected():
    env = DummyVecEnv([MaskedEnv, MaskedEnv])
    model = MuZero("MlpPolicy", env, seed=0, **SMALL)
    model.learn(100)  # MaskedEnv raises on an illegal action
    replay = model.replay_buffer
    stored = replay.actions[: replay.n_written]
    assert set(np.unique(stored[stored >= 0])) <= {1, 3}
    policies = replay.policies[: replay.n_written]
    assert np.all(policies[:, [0, 2]] == 0)
    mean, _ = evaluate_policy(model, DummyVecEnv([lambda: Monitor(MaskedEnv(legal=(0, 1, 2, 3)))]), n_eval_episodes=2)
    assert mean == pytest.approx(12.0)
    actions, _ = model.predict(np.zeros((5, 3), np.float32), action_masks=np.tile([False, True, False, True], (5, 1)))
    assert set(actions.tolist()) <= {1, 3}


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


def test_reanalyze_preset_trains():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL, **REANALYZE_PRESET)
    assert model.reanalyze_fraction == 0.8 and model.value_bootstrap == "target" and model.td_steps == 5
    model.learn(80)
    assert model._n_updates > 0


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
    assert th.allclose(flat.min(1).values, th.zeros(5), atol=1e-6)
    assert th.allclose(flat.max(1).values, th.ones(5), atol=1e-4)
    # per sample, never across the batch: a sample's scaling ignores the others
    assert th.allclose(min_max_scale(h[2:3]), scaled[2:3])


def test_loss_matches_a_per_sample_reference():
    """The vectorised loss equals a plain loop over samples and unroll steps written from the paper's Eq. 1."""
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = MuZero("MlpPolicy", env, seed=0, **SMALL).learn(80)
    batch = model.replay_buffer.sample(6, np.random.default_rng(0), importance_exponent=1.0)
    z = batch.value_targets()
    losses, _ = model._losses(batch, z)
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
    assert losses["loss"].item() == pytest.approx(total / 6, rel=1e-4)


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
