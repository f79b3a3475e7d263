"""R2D2: targets against brute force, stored states, burn-in without gradient, priorities, actors, SB3 tooling."""

from __future__ import annotations

import os
import signal
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_frontier import R2D2
from sb3_frontier.algorithms.r2d2 import epsilon_ladder
from sb3_frontier.algorithms.r2d2.replay import SequenceReplay
from sb3_frontier.algorithms.r2d2.targets import sequence_priorities, window_bootstrap
from sb3_frontier.common.runners import ActorError
from sb3_frontier.policies.recurrent import lstm_unroll
from sb3_frontier.wrappers import ValueRescaling, VecPreviousActionReward

SMALL = dict(
    sequence_length=8,
    burn_in=4,
    overlap=4,
    n_step=3,
    gamma=0.9,
    batch_size=8,
    buffer_size=2_000,
    learning_starts=0,
    train_freq=4,
    target_update_interval=5,
    policy_kwargs=dict(lstm_hidden_size=16, net_arch=[16], dueling_hidden_size=16),
)


class EveryKLives(gym.Wrapper):
    """Flags a lost life every ``k`` steps (LifeLoss "roll" semantics: the episode goes on)."""

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        self.k = k
        self.t = 0

    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        info = dict(info, life_loss=self.t % self.k == 0)
        return obs, float(reward) * (1 + self.t % 3), terminated, truncated, info


def mixed_env(seed: int = 0) -> DummyVecEnv:
    """CartPole copies ending by termination, by a short time limit (truncation) and with lost lives."""
    fns = [
        lambda: gym.make("CartPole-v1"),
        lambda: gym.make("CartPole-v1", max_episode_steps=11),
        lambda: EveryKLives(gym.make("CartPole-v1", max_episode_steps=30), k=7),
    ]
    env = DummyVecEnv([lambda f=f: Monitor(f()) for f in fns])
    env.seed(seed)
    return env


def filled_model(**kwargs) -> R2D2:
    """A model whose replay holds sequences collected by its (untrained) network."""
    settings = {**SMALL, "learning_starts": 10_000, **kwargs}
    model = R2D2("MlpLstmPolicy", mixed_env(), seed=0, **settings)
    model.learn(600)
    assert model._n_updates == 0
    return model


# ------------------------------------------------------------------------------------------------------ targets
def brute_force_targets(rewards, terminated, life_loss, mask, gamma, n, values):
    """y_t before h, one step at a time: stop at a termination / lost life, bootstrap at the window or episode end."""
    length, batch = rewards.shape
    out = np.full((length, batch), np.nan)
    for b in range(batch):
        for t in range(length):
            if not mask[t, b]:
                continue
            total, discount, boot = 0.0, 1.0, None
            for k in range(n):
                j = t + k
                if j == length or not mask[j, b]:
                    boot = j  # the window's last state, or the episode's final observation
                    break
                total += discount * rewards[j, b]
                if terminated[j, b] or life_loss[j, b]:
                    discount = 0.0
                    break
                discount *= gamma
            else:
                boot = t + n
            if boot is None:
                boot = 0  # no bootstrap (discount is 0)
            out[t, b] = total + discount * values[boot, b]
    return out


def test_window_bootstrap_matches_brute_force():
    rng = np.random.default_rng(0)
    length, batch, n, gamma = 9, 40, 4, 0.9
    rewards = rng.normal(size=(length, batch))
    terminated = np.zeros((length, batch), bool)
    life_loss = rng.random((length, batch)) < 0.1
    mask = np.ones((length, batch), bool)
    for b in range(batch):
        end = rng.integers(1, length + 1)  # the episode's last real step + 1
        mask[end:, b] = False
        if end < length and rng.random() < 0.5:
            terminated[end - 1, b] = True  # otherwise the episode was truncated there, or goes on
    values = rng.normal(size=(length + 1, batch))
    prefix, discount, index = window_bootstrap(rewards, terminated, life_loss, mask, gamma, n)
    ours = prefix + discount * np.take_along_axis(values, index, axis=0)
    expected = brute_force_targets(rewards, terminated, life_loss, mask, gamma, n, values)
    np.testing.assert_allclose(ours[mask], expected[mask], rtol=1e-12, atol=1e-12)


def test_learner_targets_match_step_by_step_brute_force():
    """The learner's TD errors equal h(G) - Q computed one step at a time with double Q, for a real batch."""
    model = filled_model()
    with th.no_grad():  # a target network that differs from the online one, so that double Q matters
        for param in model.target_policy.parameters():
            param.add_(0.3 * th.randn_like(param))
    batch = model.replay_buffer.sample(16, np.random.default_rng(1))
    assert batch.truncated.any() and batch.terminated.any() and batch.life_loss.any()
    _, delta, _ = model.sequence_loss(batch)

    def stepwise(policy):
        obs = {k: th.as_tensor(v) for k, v in batch.observations.items()}
        state = (th.as_tensor(batch.state[0]), th.as_tensor(batch.state[1]))
        resets = batch.resets()
        qs = []
        with th.no_grad():
            for t in range(resets.shape[0]):
                q, state = policy.step({k: v[t] for k, v in obs.items()}, state, th.as_tensor(resets[t]))
                qs.append(q.double().numpy())
        return np.stack(qs)  # [T + 1, B, A]

    b = model.burn_in
    q_online, q_target = stepwise(model.policy)[b:], stepwise(model.target_policy)[b:]
    greedy = q_online.argmax(axis=2)
    h = ValueRescaling(1e-3)
    values = h.inverse(np.take_along_axis(q_target, greedy[..., None], axis=2)[..., 0])
    window = slice(b, None)
    returns = brute_force_targets(
        batch.rewards[window],
        batch.terminated[window],
        batch.life_loss[window],
        batch.mask[window],
        model.gamma,
        model.n_step,
        values,
    )
    q_taken = np.take_along_axis(q_online[:-1], batch.actions[window][..., None], axis=2)[..., 0]
    expected = np.where(batch.mask[window], h.transform(returns) - q_taken, 0.0)
    # float32 networks: the batched and the stepped LSTM round differently, about T * eps32 relative to |Q| ~ 1.
    np.testing.assert_allclose(delta, expected, atol=64 * np.finfo(np.float32).eps * (1 + np.abs(expected).max()))


def test_priorities_mix_max_and_mean_over_real_steps():
    errors = np.array([[1.0, 0.5], [3.0, 100.0], [2.0, 100.0]])
    mask = np.array([[True, True], [True, False], [True, False]])
    got = sequence_priorities(errors, mask, eta=0.9)
    np.testing.assert_allclose(got, [0.9 * 3.0 + 0.1 * 2.0, 0.5])  # padding (100) is ignored


def test_epsilon_ladder():
    eps = epsilon_ladder(8)
    np.testing.assert_allclose(eps, 0.4 ** (1 + 7 * np.arange(8) / 7))
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4**8)
    assert epsilon_ladder(1).tolist() == [0.4]
    model = R2D2("MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=4), **SMALL)
    np.testing.assert_allclose(model._epsilons(), epsilon_ladder(4))


# ------------------------------------------------------------------------------------------------- recurrent state
def test_stored_state_is_the_one_before_the_first_step():
    """Unrolling a sequence's stored state over its burn-in gives the actor's state before the first training step."""
    model = filled_model()
    replay = model.replay_buffer
    batch = replay.sample(64, np.random.default_rng(0))
    obs = {k: th.as_tensor(v[: model.burn_in]) for k, v in batch.observations.items()}
    with th.no_grad():
        _, (h, _) = model.policy.unroll(
            obs, (th.as_tensor(batch.state[0]), th.as_tensor(batch.state[1])), th.as_tensor(batch.resets()[: model.burn_in])
        )
    h[batch.resets()[model.burn_in]] = 0.0  # an episode starting at the first training step starts from zero
    np.testing.assert_allclose(h.numpy(), batch.window_state[0], atol=1e-5)
    starting = batch.start_step < 0  # the burn-in starts before the episode: the stored state is the zero state
    assert starting.any() and not starting.all()
    assert np.all(batch.state[0][starting] == 0)
    assert np.abs(batch.state[0][~starting]).max() > 0


def test_no_gradient_reaches_the_burn_in():
    model = filled_model()
    batch = model.replay_buffer.sample(8, np.random.default_rng(0))
    calls = []
    hook = model.policy.lstm.register_forward_hook(lambda m, i, o: calls.append((i[0].shape[0], th.is_grad_enabled())))
    loss, _, _ = model.sequence_loss(batch)
    hook.remove()
    burn_in_steps = sum(steps for steps, grad in calls if not grad)
    trained_steps = sum(steps for steps, grad in calls if grad)
    assert burn_in_steps >= model.burn_in and trained_steps == model.sequence_length + 1
    # The burn-in's observations do not reach the loss's gradient: changing them moves the loss, not its graph.
    loss.backward()
    assert all(p.grad is not None for p in model.policy.lstm.parameters())


def test_lstm_unroll_resets_match_stepping():
    lstm = th.nn.LSTM(3, 5)
    x = th.randn(7, 4, 3)
    state = (th.randn(4, 5), th.randn(4, 5))
    resets = th.zeros(7, 4, dtype=th.bool)
    resets[0, 1] = resets[3, 2] = resets[3, 0] = resets[5, 3] = True
    out, (h, c) = lstm_unroll(lstm, x, state, resets)
    hs, cs = state
    for t in range(7):
        keep = (~resets[t]).float()[:, None]
        o, (hs_, cs_) = lstm(x[t : t + 1], ((hs * keep)[None], (cs * keep)[None]))
        hs, cs = hs_[0], cs_[0]
        th.testing.assert_close(out[t], o[0])
    th.testing.assert_close(h, hs)
    th.testing.assert_close(c, cs)


def test_lstm_unroll_single_step_matches_the_lstm_with_its_gradient():
    # One step (acting) takes torch.lstm_cell with the LSTM's parameters: the same values and parameter gradients.
    th.manual_seed(0)
    lstm = th.nn.LSTM(6, 8)
    x = th.randn(1, 3, 6)
    state = (th.randn(3, 8), th.randn(3, 8))
    for resets in (None, th.tensor([[True, False, False]])):
        out, (h, c) = lstm_unroll(lstm, x, state, resets)
        keep = th.ones(3, 1) if resets is None else (~resets[0]).float()[:, None]
        ref, (h_ref, c_ref) = lstm(x, ((state[0] * keep)[None], (state[1] * keep)[None]))
        th.testing.assert_close(out, ref)
        th.testing.assert_close((h, c), (h_ref[0], c_ref[0]))
        grads = th.autograd.grad((out.sum() + c.sum()), list(lstm.parameters()))
        grads_ref = th.autograd.grad((ref.sum() + c_ref.sum()), list(lstm.parameters()))
        for grad, grad_ref in zip(grads, grads_ref, strict=True):
            th.testing.assert_close(grad, grad_ref)


# ------------------------------------------------------------------------------------------------------- replay
def test_replay_stores_each_observation_once_and_keeps_uint8():
    space = spaces.Dict(
        {
            "observation": spaces.Box(0, 255, (4, 4), np.uint8),
            "prev_action": spaces.Box(0, 1, (2,), np.float32),
            "prev_reward": spaces.Box(-1, 1, (1,)),
        }
    )
    replay = SequenceReplay(100, space, sequence_slots=6, hidden_size=3, stride=2)
    assert replay.observations["observation"].dtype == np.uint8
    model = filled_model()
    # one entry per observation: every step's next observation plus the initial ones, not one per sequence slot
    episodes = model._episode_num
    assert model.replay_buffer.n_observations == model.num_timesteps + model.env.num_envs + episodes
    slots = model.burn_in + model.sequence_length + 1
    assert len(model.replay_buffer) * slots > 2 * model.replay_buffer.n_observations  # sequences overlap


def test_overwritten_observations_are_never_sampled():
    model = filled_model(buffer_size=60)
    replay = model.replay_buffer
    first_live = replay.n_observations - replay.capacity
    for seed in range(20):
        batch = replay.sample(8, np.random.default_rng(seed))
        slots = replay.ring.slots(batch.indices)
        assert np.all(replay.oldest[slots] >= first_live)


def test_non_finite_priorities_do_not_break_the_sampler():
    model = filled_model()
    replay = model.replay_buffer
    batch = replay.sample(4, np.random.default_rng(0))
    replay.update_priorities(batch.indices, np.array([np.nan, np.inf, 1.0, 2.0]))
    assert replay.non_finite_priorities == 2
    replay.sample(16, np.random.default_rng(1))


# ------------------------------------------------------------------------------------------------- SB3 tooling
def test_predict_state_follows_recurrent_ppo_conventions():
    env = make_vec_env("CartPole-v1", n_envs=3, seed=0)
    model = R2D2("MlpLstmPolicy", env, **SMALL)
    ppo = RecurrentPPO("MlpLstmPolicy", make_vec_env("CartPole-v1", n_envs=3), policy_kwargs=dict(lstm_hidden_size=16))
    obs = model.get_env().reset()
    actions, state = model.predict(obs, deterministic=True)
    _, ppo_state = ppo.predict(ppo.get_env().reset(), deterministic=True)
    assert [s.shape for s in state] == [s.shape for s in ppo_state] == [(1, 3, 16)] * 2
    assert actions.shape == (3,)
    # episode_start zeroes the state: same as starting from None
    _, state2 = model.predict(obs, state=state, episode_start=np.zeros(3, bool), deterministic=True)
    assert not np.allclose(state2[0], state[0])
    fresh, fresh_state = model.predict(obs, state=state, episode_start=np.ones(3, bool), deterministic=True)
    np.testing.assert_array_equal(fresh, actions)
    np.testing.assert_allclose(fresh_state[0], state[0], atol=1e-6)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=3)
    assert mean > 0


def test_plain_observations_need_the_wrapper_unless_the_policy_ignores_them():
    model = R2D2("MlpLstmPolicy", "CartPole-v1", **SMALL)
    plain = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="VecPreviousActionReward"):
        model.predict(plain)
    blind = R2D2("MlpLstmPolicy", "CartPole-v1", **{**SMALL, "policy_kwargs": {"previous_action_reward": False}})
    action, _ = blind.predict(plain)
    assert action.shape == ()
    evaluate_policy(blind, make_vec_env("CartPole-v1"), n_eval_episodes=2)


def test_previous_action_reward_wrapper():
    env = VecPreviousActionReward(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    obs = env.reset()
    assert obs["prev_action"].sum() == 0 and obs["prev_reward"].sum() == 0
    obs, rewards, dones, infos = env.step(np.array([1, 0]))
    np.testing.assert_array_equal(obs["prev_action"], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(obs["prev_reward"][:, 0], rewards)
    for _ in range(200):
        obs, rewards, dones, infos = env.step(np.array([1, 1]))
        for i in np.flatnonzero(dones):
            assert obs["prev_action"][i].sum() == 0  # a new episode starts with nothing before it
            final = infos[i]["terminal_observation"]
            np.testing.assert_array_equal(final["prev_action"], [0, 1])
            assert final["prev_reward"][0] == rewards[i]


def test_save_load_replay_and_resume(tmp_path):
    model = filled_model()
    model.learning_starts = 0
    model.learn(100, reset_num_timesteps=False)
    model.save(tmp_path / "r2d2")
    model.save_replay_buffer(tmp_path / "replay")
    loaded = R2D2.load(tmp_path / "r2d2", env=mixed_env())
    obs = model.get_env().reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    loaded.load_replay_buffer(tmp_path / "replay")
    assert len(loaded.replay_buffer) == len(model.replay_buffer)
    n = loaded.num_timesteps
    loaded.learn(50, reset_num_timesteps=False)
    assert loaded.num_timesteps >= n + 50 and loaded._n_updates > model._n_updates


def test_callbacks_and_default_budget(tmp_path):
    assert R2D2.default_total_timesteps == 200_000
    model = R2D2("MlpLstmPolicy", "CartPole-v1", **SMALL)
    eval_env = VecPreviousActionReward(make_vec_env("CartPole-v1"))
    callbacks = [
        EvalCallback(eval_env, eval_freq=100, n_eval_episodes=2, log_path=str(tmp_path)),
        CheckpointCallback(save_freq=150, save_path=str(tmp_path)),
    ]
    model.learn(300, callback=callbacks, progress_bar=False)
    assert (tmp_path / "evaluations.npz").exists()
    assert any(p.name.endswith(".zip") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(overlap=8), "overlap"),
        (dict(buffer_size=10), "buffer_size"),
        (dict(sequence_length=0), "sequence_length"),
        (dict(exploration=[0.1, 2.0]), "Epsilons"),
        (dict(runner_kwargs={"bogus": 1}), "runner_kwargs"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R2D2("MlpLstmPolicy", "CartPole-v1", **{**SMALL, **kwargs})


def test_continuous_actions_are_rejected():
    with pytest.raises(ValueError, match="action space"):
        R2D2("MlpLstmPolicy", "Pendulum-v1", **SMALL)


def test_nan_rewards_are_reported():
    class NaNReward(gym.Wrapper):
        def step(self, action):
            obs, _, terminated, truncated, info = self.env.step(action)
            return obs, float("nan"), terminated, truncated, info

    model = R2D2("MlpLstmPolicy", NaNReward(gym.make("CartPole-v1")), **SMALL)
    with pytest.raises(ValueError, match="non-finite rewards"):
        model.learn(10)


# ----------------------------------------------------------------------------------------------- actor processes
def test_actor_processes_learn_and_leave_nothing_behind():
    model = R2D2(
        "MlpLstmPolicy",
        make_vec_env("CartPole-v1", n_envs=2),
        runner="processes",
        runner_kwargs={"n_actors": 2},
        seed=0,
        **SMALL,
    )
    np.testing.assert_allclose(model._epsilons(), epsilon_ladder(4))
    model.learn(400)
    assert model._n_updates > 0 and len(model.replay_buffer) > 0
    assert not model.runner.running


@pytest.mark.parametrize(
    "train_freq, runner_kwargs, expected",
    [(4, {}, 128), (300, {}, 300), (300, {"max_pending": 16}, 16), ((300, "episode"), {}, 128)],
)
def test_actor_processes_run_one_update_phase_ahead(train_freq: Any, runner_kwargs: dict, expected: int) -> None:
    """An actor may run a whole train_freq ahead (or the runner's default, if more) unless runner_kwargs bound it."""
    model = R2D2(
        "MlpLstmPolicy", "CartPole-v1", runner="processes", runner_kwargs=runner_kwargs, **{**SMALL, "train_freq": train_freq}
    )
    runner = model._make_runner()
    assert runner.max_pending == expected and not runner.running
    assert model.runner_kwargs.get("max_pending") == runner_kwargs.get("max_pending")  # the user's options as given


@pytest.mark.parametrize(
    "train_freq, runner_kwargs, expected", [(4, {}, 16), (300, {}, 38), (300, {"steps_per_request": 100}, 16)]
)
def test_ray_actors_run_one_update_phase_ahead(train_freq: int, runner_kwargs: dict, expected: int) -> None:
    model = R2D2(
        "MlpLstmPolicy", "CartPole-v1", runner="ray", runner_kwargs=runner_kwargs, **{**SMALL, "train_freq": train_freq}
    )
    runner = model._make_runner()
    assert runner.max_in_flight == expected  # ceil(300 / 8) = 38 requests of 8 steps


def test_killed_actor_process_is_reported():
    model = R2D2("MlpLstmPolicy", "CartPole-v1", runner="processes", runner_kwargs={"n_actors": 2}, **SMALL)

    class KillOne(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 50:
                os.kill(self.model.runner.pids[0], signal.SIGKILL)
            return True

    with pytest.raises(ActorError, match="Actor process 0"):
        model.learn(100_000, callback=KillOne())
    assert not model.runner.running


def test_cue_memory_env_rewards_recall_only():
    env = gym.make("sb3_frontier/CueMemory-v0", delay=3)
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        cue = int(obs[:2].argmax())
        assert obs[:2].sum() == 1 and obs[2] == 0
        for _ in range(3):
            obs, reward, terminated, _, _ = env.step(1 - cue)  # actions before the query do nothing
            assert reward == 0 and not terminated and not obs.any()
        obs, reward, terminated, _, _ = env.step(0)
        assert obs[2] == 1 and reward == 0 and not terminated  # the query
        _, reward, terminated, _, _ = env.step(seed % 2)
        assert terminated and reward == (1.0 if seed % 2 == cue else -1.0)


def test_diagnostics_are_logged():
    model = filled_model(diagnostics_interval=1)
    model.train(2, 8)
    logged = model.logger.name_to_value
    for key in (
        "train/loss",
        "train/priority_mean",
        "train/priority_max",
        "train/delta_q_first",
        "train/delta_q_last",
        "train/updates_per_s",
        "train/replay_ratio",
        "train/importance_weight_mean",
    ):
        assert key in logged, key
    assert np.isfinite(logged["train/delta_q_first"]) and logged["train/delta_q_first"] >= 0
    # the staleness is zero when the stored window state is the one the current network would compute: the network
    # has not changed since acting, so the first step's discrepancy is float rounding only
    assert logged["train/delta_q_first"] < 1e-3


def test_loaded_model_keeps_its_value_rescaling(tmp_path):
    model = R2D2("MlpLstmPolicy", "CartPole-v1", value_rescaling_eps=0.05, **SMALL)
    model.save(tmp_path / "eps")
    loaded = R2D2.load(tmp_path / "eps")
    assert loaded.rescaling.eps == 0.05


def test_non_finite_loss_is_reported():
    model = filled_model()
    with th.no_grad():
        next(model.policy.value_stream.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="not finite"):
        model.train(1, 8)


def test_new_sequences_enter_with_the_actor_priority_or_the_maximum():
    actor = filled_model()
    highest = filled_model(initial_priority="max")
    tree_a, tree_m = actor.replay_buffer.ring.tree, highest.replay_buffer.ring.tree
    slots = np.arange(len(actor.replay_buffer))
    values_a, values_m = tree_a.get(slots), tree_m.get(slots)
    assert np.unique(values_a).size > 10  # estimates differ per sequence
    np.testing.assert_allclose(values_m, 1.0, rtol=1e-12)  # all at the maximum, which stays 1 (its start)
    assert highest.replay_buffer.non_finite_priorities == 0


def test_tensorboard_and_progress_bar(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("tqdm")
    pytest.importorskip("rich")
    model = R2D2("MlpLstmPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), **SMALL)
    model.learn(64, progress_bar=True, log_interval=1)
    assert list(tmp_path.rglob("events.out.tfevents.*"))


def test_gradient_threads_give_the_whole_batch_gradient_errors_and_diagnostics():
    """An update on shards of the sequences in threads: the batch's gradient up to float32 rounding, the same TD
    errors (so the same priorities) and diagnostics; then it trains."""
    import functools

    from sb3_frontier.common.sharded_gradient import ShardedGradient

    model = filled_model(gradient_threads=3, diagnostics_interval=1)
    batch = model.replay_buffer.sample(8, np.random.default_rng(0))
    params = list(model.policy.parameters())
    shard_loss = functools.partial(model._shard_loss, batch)
    whole_loss, ((whole_delta, whole_diagnostics, _),) = ShardedGradient(params, 1)(8, shard_loss)
    whole = [p.grad.clone() for p in params]
    split_loss, shards = model._gradient(8, shard_loss)
    assert [delta.shape[1] for delta, _, _ in shards] == [3, 3, 2]
    # float32: 1e3 eps32 of the largest gradient entry bounds another order of summation with room; weighting the
    # shards wrongly (e.g. equal weights for 3, 3 and 2 sequences) is off by far more.
    eps = float(np.finfo(np.float32).eps)
    th.testing.assert_close(split_loss, whole_loss, rtol=1e3 * eps, atol=0)
    for p, g in zip(params, whole, strict=True):
        th.testing.assert_close(p.grad, g, rtol=0, atol=1e3 * eps * max(g.abs().max().item(), 1e-12))
    split_delta = np.concatenate([d for d, _, _ in shards], axis=1)
    np.testing.assert_allclose(split_delta, whole_delta, rtol=0, atol=1e2 * eps * max(np.abs(whole_delta).max(), 1.0))
    from sb3_frontier.algorithms.r2d2.r2d2 import _combine_diagnostics

    combined = _combine_diagnostics(shards)
    assert set(combined) == set(whole_diagnostics) >= {"q_mean", "delta_q_first", "delta_q_last"}
    for key, value in whole_diagnostics.items():
        assert combined[key] == pytest.approx(value, rel=1e-5, abs=1e-6)
    model.learning_starts = 0
    model.learn(40, reset_num_timesteps=False)
    assert model._n_updates > 0
    with pytest.raises(ValueError, match="gradient_threads"):
        R2D2("MlpLstmPolicy", mixed_env(), gradient_threads=0)
