"""The rl-zoo3 bridge: registration, default configs, train then enjoy end to end, our wrappers from a YAML, multi-task ids."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml

from sb3_frontier.zoo import available_algorithms, config_path, register_algorithms
from sb3_frontier.zoo.cli import main, with_default_config

CONFIG = yaml.safe_load(config_path("muzero").read_text())


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "sb3_frontier.zoo", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_register_algorithms_adds_ours_to_rl_zoo3():
    from rl_zoo3.utils import ALGOS

    ours = register_algorithms()
    assert "muzero" in ours and ALGOS["muzero"] is ours["muzero"]
    assert set(ours) == set(available_algorithms())
    assert ALGOS["ppo"].__name__ == "PPO"  # rl-zoo3's own are untouched


def test_default_config_only_for_our_algorithms():
    args = with_default_config(["--algo", "muzero", "--env", "CartPole-v1"], ["muzero"])
    assert args[-2:] == ["--conf-file", str(config_path("muzero"))]
    assert with_default_config(["--algo=muzero"], ["muzero"])[-1] == str(config_path("muzero"))
    mine = ["--algo", "muzero", "-conf", "mine.yml"]
    assert with_default_config(mine, ["muzero"]) == mine
    assert with_default_config(["--algo", "ppo"], ["muzero"]) == ["--algo", "ppo"]
    with pytest.raises(FileNotFoundError):
        config_path("no-such-algo")


def test_cli_usage_and_unknown_command(capsys):
    assert main([]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["fly"]) == 2


def test_train_enjoy_and_record_video_muzero(tmp_path):
    common = ["--algo", "muzero", "--env", "CartPole-v1", "-f", str(tmp_path / "logs"), "--seed", "0"]
    params = ["-params", "learning_starts:40", "num_simulations:4", "batch_size:16", "n_envs:2"]
    run_cli("train", *common, "-n", "120", "--eval-freq", "-1", *params, cwd=tmp_path)
    saved = tmp_path / "logs" / "muzero" / "CartPole-v1_1"
    assert (saved / "CartPole-v1.zip").is_file()
    saved_config = yaml.load((saved / "CartPole-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert dict(saved_config)["num_simulations"] == 4  # our yml was read, then overridden
    run_cli("enjoy", *common, "-n", "60", "--no-render", "--deterministic", cwd=tmp_path)
    run_cli("record-video", *common, "-n", "30", "-o", str(tmp_path / "videos"), cwd=tmp_path)
    assert list((tmp_path / "videos").glob("*.mp4"))


def test_our_wrapper_from_a_zoo_yaml(tmp_path):
    conf = tmp_path / "ppo_lifeloss.yml"
    conf.write_text(
        yaml.safe_dump(
            {
                "atari": {
                    "policy": "CnnPolicy",
                    "n_timesteps": 64,
                    "n_envs": 1,
                    "n_steps": 32,
                    "batch_size": 32,
                    "n_epochs": 1,
                    "frame_stack": 4,
                    "env_wrapper": [
                        {"stable_baselines3.common.atari_wrappers.AtariWrapper": {"terminal_on_life_loss": False}},
                        {"sb3_frontier.wrappers.LifeLoss": {"mode": "roll"}},
                    ],
                }
            }
        )
    )
    args = ["--algo", "ppo", "--env", "BreakoutNoFrameskip-v4", "-f", str(tmp_path / "logs"), "--eval-freq", "-1"]
    run_cli("train", *args, "-conf", str(conf), "--seed", "0", cwd=tmp_path)
    saved = tmp_path / "logs" / "ppo" / "BreakoutNoFrameskip-v4_1" / "BreakoutNoFrameskip-v4" / "config.yml"
    assert "sb3_frontier.wrappers.LifeLoss" in saved.read_text()


@pytest.mark.parametrize("env_id", sorted(CONFIG))
def test_every_config_entry_runs(env_id, tmp_path):
    """Each entry of our muzero.yml builds its env and model and collects a few steps through the zoo."""
    zoo_env = {"atari": "ALE/Pong-v5"}.get(env_id, env_id)
    if zoo_env == "LunarLander-v3":
        pytest.importorskip("Box2D")
    args = ["--algo", "muzero", "--env", zoo_env, "-f", str(tmp_path / "logs"), "--eval-freq", "-1", "--seed", "0"]
    run_cli("train", *args, "-n", "16", "-params", "num_simulations:2", "n_envs:2", cwd=tmp_path)


def test_read_hyperparams_converts_zoo_entries():
    from sb3_frontier.zoo import read_hyperparams

    n_envs, n_timesteps, kwargs = read_hyperparams("muzero", "CartPole-v1")
    assert n_envs == CONFIG["CartPole-v1"]["n_envs"] and n_timesteps == int(CONFIG["CartPole-v1"]["n_timesteps"])
    assert kwargs["policy"] == "MlpPolicy" and isinstance(kwargs["policy_kwargs"], dict)
    n_envs, _, ppo = read_hyperparams("ppo", "CartPole-v1")  # rl-zoo3's own file: lin_ schedules become callables
    assert n_envs == 8 and callable(ppo["learning_rate"]) and ppo["learning_rate"](1.0) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="env_wrapper"):
        read_hyperparams("muzero", "atari")
    _, _, a2c = read_hyperparams("a2c", "atari", allow=("env_wrapper", "frame_stack"))  # rl-zoo3's names in its kwargs
    assert a2c["policy_kwargs"]["optimizer_class"].__name__ == "RMSpropTFLike"
    with pytest.raises(ValueError, match="normalize"):
        read_hyperparams("r2d2", "LunarLanderNoVel-v3")
    _, _, r2d2 = read_hyperparams("r2d2", "LunarLanderNoVel-v3", allow=("normalize", "vec_env_wrapper"))
    assert r2d2["vec_env_wrapper"] == "sb3_frontier.wrappers.VecPreviousActionReward" and "norm_obs" in r2d2["normalize"]


def test_optuna_sampler_gives_valid_muzero_arguments():
    optuna = pytest.importorskip("optuna")
    from rl_zoo3 import hyperparams_opt

    from sb3_frontier import MuZero
    from sb3_frontier.zoo.samplers import sample_muzero_params

    register_algorithms()
    assert hyperparams_opt.HYPERPARAMS_SAMPLER["muzero"] is sample_muzero_params
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        kwargs = hyperparams_opt.HYPERPARAMS_SAMPLER["muzero"](trial, 2, 1, {})
        assert 0.97 <= kwargs["gamma"] <= 0.999 and kwargs["batch_size"] in (64, 128, 256, 512)
        MuZero("MlpPolicy", "CartPole-v1", **kwargs)  # every sampled set is accepted
        assert hyperparams_opt.HYPERPARAMS_CONVERTER["muzero"](trial.params) == kwargs


def test_zoo_evaluation_passes_action_masks_to_our_algorithms(tmp_path):
    """rl-zoo3's EvalCallback, replaced for our algorithms, plays only legal moves on an env with action_masks()."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_frontier import MuZero
    from sb3_frontier.zoo.callbacks import MaskAwareEvalCallback
    from tests.test_muzero import SMALL, MaskedEnv

    model = MuZero("MlpPolicy", DummyVecEnv([MaskedEnv]), seed=0, **SMALL).learn(60)
    eval_env = DummyVecEnv([lambda: Monitor(MaskedEnv(legal=(0, 2)))])  # raises on any other action
    callback = MaskAwareEvalCallback(eval_env, eval_freq=20, n_eval_episodes=2, log_path=str(tmp_path), verbose=0)
    assert callback.use_masking
    model.learn(40, callback=callback, reset_num_timesteps=False)
    assert callback.evaluations_results and all(r == [12.0, 12.0] for r in callback.evaluations_results)
    plain = MaskAwareEvalCallback(DummyVecEnv([lambda: Monitor(gym.make("CartPole-v1"))]), eval_freq=10)
    assert not plain.use_masking


def test_zoo_train_on_tictactoe_evaluates_with_masks(tmp_path):
    args = ["--algo", "muzero", "--env", "sb3_frontier/TicTacToe-v0", "-f", str(tmp_path / "logs"), "--seed", "0"]
    params = ["-params", "num_simulations:2", "n_envs:2", "learning_starts:8", "batch_size:8"]
    result = run_cli("train", *args, "-n", "64", "--eval-freq", "32", "--eval-episodes", "4", *params, cwd=tmp_path)
    evaluations = next((tmp_path / "logs").rglob("evaluations.npz"))
    assert evaluations.is_file(), result.stdout[-2000:]


R2D2_CONFIG = yaml.safe_load(config_path("r2d2").read_text())


@pytest.mark.parametrize("env_id", sorted(R2D2_CONFIG))
def test_every_r2d2_config_entry_runs(env_id, tmp_path):
    """Each entry of our r2d2.yml builds its env (with the previous action and reward) and model, acts and learns."""
    zoo_env = {"atari": "ALE/Pong-v5"}.get(env_id, env_id)
    if "LunarLander" in zoo_env:
        pytest.importorskip("Box2D")
    if zoo_env.startswith("MinAtar"):
        pytest.importorskip("minatar")
    args = ["--algo", "r2d2", "--env", zoo_env, "-f", str(tmp_path / "logs"), "--eval-freq", "-1", "--seed", "0"]
    params = ["-params", "n_envs:2", "learning_starts:8", "batch_size:2", "buffer_size:2000", "train_freq:8"]
    run_cli("train", *args, "-n", "24", *params, cwd=tmp_path)


def test_r2d2_train_evaluate_and_enjoy_through_the_zoo(tmp_path):
    """The zoo's evaluation and enjoy envs get the previous action and reward too (vec_env_wrapper), and VecNormalize."""
    common = ["--algo", "r2d2", "--env", "CartPoleNoVel-v1", "-f", str(tmp_path / "logs"), "--seed", "0"]
    params = ["-params", "n_envs:2", "learning_starts:20", "batch_size:4"]
    run_cli("train", *common, "-n", "200", "--eval-freq", "50", "--eval-episodes", "2", *params, cwd=tmp_path)
    assert next((tmp_path / "logs").rglob("evaluations.npz")).is_file()
    run_cli("enjoy", *common, "-n", "50", "--no-render", "--deterministic", cwd=tmp_path)


POPART_IMPALA_CONFIG = yaml.safe_load(config_path("popart_impala").read_text())
MULTITASK_ID = "sb3_frontier/MinAtarMultiTask-v0"


def load_popart_impala(run: Path, env_id: str) -> Any:
    from sb3_frontier.algorithms.popart_impala import PopArtIMPALA

    return PopArtIMPALA.load(run / f"{env_id.replace('/', '-')}.zip", device="cpu")


@pytest.mark.parametrize("env_id", sorted(POPART_IMPALA_CONFIG))
def test_every_popart_impala_config_entry_runs(env_id, tmp_path):
    """Each entry of our popart_impala.yml builds its env and model, acts and learns through the zoo."""
    zoo_env = {"atari": "ALE/Pong-v5"}.get(env_id, env_id)
    if "MinAtar" in zoo_env:
        pytest.importorskip("minatar")
    n_envs = 3 if zoo_env == MULTITASK_ID else 2  # the multi-task entry needs one env per game at least
    args = ["--algo", "popart_impala", "--env", zoo_env, "-f", str(tmp_path / "logs"), "--eval-freq", "-1", "--seed", "0"]
    params = ["-params", f"n_envs:{n_envs}", f"batch_size:{n_envs}", "unroll_length:4", "runner:'in-process'"]
    run_cli("train", *args, "-n", str(8 * n_envs), *params, cwd=tmp_path)
    model = load_popart_impala(tmp_path / "logs" / "popart_impala" / f"{zoo_env.replace('/', '-')}_1", zoo_env)
    assert model._n_updates == 2  # two batches of one 4-step unroll per env
    assert model.n_tasks == (3 if zoo_env == MULTITASK_ID else 1)
    expected_policy = POPART_IMPALA_CONFIG[env_id]["policy"]
    assert type(model.policy).__name__ == {"MlpPolicy": "PopArtIMPALAPolicy"}.get(expected_policy, expected_policy)
    if env_id == "atari":
        assert model.observation_space.shape == (4, 84, 84)  # 84x84 grey frames, 4 stacked, channel first
        assert model.policy_kwargs["torso"] == "nature"


def test_popart_impala_trains_evaluates_and_enjoys_the_multitask_entry(tmp_path):
    """Through the zoo, the multi-task entry trains on every game (one task id, one PopArt statistic per game)."""
    pytest.importorskip("minatar")
    from sb3_frontier.envs import MINATAR_MULTITASK_ENVS

    common = ["--algo", "popart_impala", "--env", MULTITASK_ID, "-f", str(tmp_path / "logs"), "--seed", "0"]
    params = ["-params", "n_envs:3", "batch_size:3", "unroll_length:4"]  # the entry's runner: an actor process
    run_cli("train", *common, "-n", "60", "--eval-freq", "24", "--eval-episodes", "3", *params, cwd=tmp_path)
    run = tmp_path / "logs" / "popart_impala" / "sb3_frontier-MinAtarMultiTask-v0_1"
    model = load_popart_impala(run, MULTITASK_ID)
    assert model.n_tasks == 3
    assert (model.policy.value_net.mu != 0).all()  # every task's statistics were updated: its game was played
    monitors = sorted(run.glob("*.monitor.csv"))
    games = [json.loads(path.read_text().splitlines()[0][1:])["env_id"] for path in monitors]
    assert games == list(MINATAR_MULTITASK_ENVS[MULTITASK_ID])  # rank k played game k
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["results"].shape[1] == 3
    run_cli("enjoy", *common, "-n", "30", "--no-render", "--env-kwargs", "task:2", cwd=tmp_path)


@pytest.fixture
def multitask_manager(tmp_path):
    """rl-zoo3's experiment manager for the multi-task id, with the multi-task VecEnvs installed."""
    pytest.importorskip("minatar")
    from rl_zoo3.exp_manager import ExperimentManager

    from sb3_frontier.envs import register_envs
    from sb3_frontier.zoo.multitask import use_multitask_envs

    register_envs()
    use_multitask_envs()
    use_multitask_envs()  # installing twice wraps once
    return ExperimentManager(argparse.Namespace(), "popart_impala", MULTITASK_ID, str(tmp_path), seed=3)


def test_zoo_builds_the_multitask_vec_envs(multitask_manager, tmp_path):
    """Training envs split evenly over the games, the evaluation env one per game, then rl-zoo3's own wrappers."""
    from rl_zoo3 import exp_manager
    from rl_zoo3.exp_manager import ExperimentManager
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from sb3_frontier.wrappers import task_ids

    multitask_manager.frame_stack = 2
    train_env = multitask_manager.create_envs(6)
    assert isinstance(train_env, VecFrameStack) and train_env.observation_space.shape == (10, 10, 12)
    assert task_ids(train_env).tolist() == [0, 0, 1, 1, 2, 2]
    # rl-zoo3's seeding: rank r is seeded with seed + r (rank 2 is the first Space Invaders env)
    single = gym.make("MinAtar/SpaceInvaders-v1", use_minimal_action_set=False)
    np.testing.assert_array_equal(train_env.reset()[2][..., 6:12], single.reset(seed=3 + 2)[0])
    assert task_ids(multitask_manager.create_envs(1, eval_env=True)).tolist() == [0, 1, 2]
    assert task_ids(multitask_manager.create_envs(4, eval_env=True)).tolist() == [0, 0, 1, 1, 2, 2]
    assert exp_manager.make_vec_env is make_vec_env  # replaced only during the call
    plain = ExperimentManager(argparse.Namespace(), "ppo", "CartPole-v1", str(tmp_path), seed=3)
    cartpoles = plain.create_envs(2)
    assert cartpoles.num_envs == 2 and task_ids(cartpoles) is None


def test_zoo_refuses_a_multitask_n_envs_that_does_not_split_over_the_games(multitask_manager):
    with pytest.raises(ValueError, match="n_envs must be a multiple of 3, got n_envs=4"):
        multitask_manager.create_envs(4)
    with pytest.raises(ValueError, match="n_envs must be a multiple of 3, got n_envs=2"):
        multitask_manager.create_envs(2)
    multitask_manager.env_kwargs = {"task": 1}
    with pytest.raises(ValueError, match="selects one game"):
        multitask_manager.create_envs(3)
