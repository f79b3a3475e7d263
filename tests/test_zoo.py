"""The rl-zoo3 bridge: registration, default configs, train then enjoy end to end, our wrappers from a YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
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
    with pytest.raises(ValueError, match="normalize"):
        read_hyperparams("r2d2", "CartPoleNoVel-v1")
    _, _, r2d2 = read_hyperparams("r2d2", "CartPoleNoVel-v1", allow=("normalize", "vec_env_wrapper"))
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
