"""
Gymnasium's and SB3's env checkers on every env and gymnasium wrapper we ship.

The checkers run with every warning recorded: a warning that is not listed in ``ALLOWED`` (with the reason
it is not a finding) fails the test, so that what the checkers find gets fixed rather than ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sb3_frontier.wrappers
from sb3_frontier.envs import OWN_ENVS, register_envs
from sb3_frontier.wrappers import LifeLoss

gym.register_envs(ale_py)

#: Warnings that are not findings, and why.
ALLOWED = {
    # checking a wrapper means checking the wrapped stack: the wrapper is the object under test
    "is different from the unwrapped version": "a wrapper is checked",
    # SB3 takes every 3-d Box for an image; our tic-tac-toe observation is a 2-plane 3x3 board, float32 in
    # {0, 1}, channel-first for the convolutional torsos (MuZero's CnnPolicy), not an image to rescale
    "It seems that your observation  is an image": "board planes, not an image",
    "It seems that your observation space  is an image": "board planes, not an image",
    "The minimal resolution for an image": "board planes, not an image",
}

LIVES_GAME_ID = "sb3_frontier_tests/LivesGame-v0"
MINATAR_MULTITASK_ID = "sb3_frontier/MinAtarMultiTask-v0"


class LivesGame(gym.Env[np.ndarray, np.int64]):
    """
    A tiny seeded game with lives: the first step always loses a life, later steps with probability ``p_loss``.

    The observation ``[lives / n_lives, t / 100 (capped), a draw of the env's generator]`` changes with the seed,
    so the checkers' determinism tests see whether a seeded reset really restarts the game.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, n_lives: int = 3, p_loss: float = 0.5) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.n_lives, self.p_loss = n_lives, p_loss
        self.lives, self.t = n_lives, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.lives / self.n_lives, min(self.t / 100, 1.0), self.np_random.random()], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.lives, self.t = self.n_lives, 0
        return self._obs(), {"lives": self.lives}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        if self.t == 1 or self.np_random.random() < self.p_loss:
            self.lives -= 1
        return self._obs(), float(action), self.lives == 0, False, {"lives": self.lives}


if LIVES_GAME_ID not in gym.registry:
    gym.register(LIVES_GAME_ID, entry_point=LivesGame)


def run_checkers(make_env: Callable[[], gym.Env], skip_render_check: bool = False) -> None:
    """Run both checkers on fresh envs; fail on any user warning not in ``ALLOWED``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(make_env(), skip_render_check=skip_render_check)
        sb3_check_env(make_env(), warn=True)
    findings = [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning) and not any(allowed in str(w.message) for allowed in ALLOWED)
    ]
    assert findings == []


def test_our_gym_wrappers_are_those_checked() -> None:
    """
    The gymnasium wrappers we export are LifeLoss (checked below) and the multi-task ones (checked on the multi-task
    id below, and on padded CartPole and MinAtar in tests/test_multitask.py); the other classes of the wrappers
    module are not gymnasium wrappers: a value head and a replay helper.
    """
    exported = {name: getattr(sb3_frontier.wrappers, name) for name in sb3_frontier.wrappers.__all__}
    gym_wrappers = {name for name, obj in exported.items() if isinstance(obj, type) and issubclass(obj, gym.Wrapper)}
    assert gym_wrappers == {"LifeLoss", "PadActions", "PadObservation", "TaskId"}
    assert not issubclass(sb3_frontier.wrappers.PopArt, gym.Env | gym.Wrapper)
    assert not issubclass(sb3_frontier.wrappers.SequenceStacker, gym.Env | gym.Wrapper)


@pytest.mark.parametrize("env_id", list(OWN_ENVS))
@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
def test_our_envs(env_id: str, render_mode: str | None) -> None:
    # gymnasium recommends checking the raw env (gym.make adds its own checker wrappers); its spec comes along
    run_checkers(lambda: gym.make(env_id, render_mode=render_mode).unwrapped)


@pytest.mark.parametrize("mode", ["roll", "reset"])
def test_lifeloss_over_a_game_with_lives(mode: str) -> None:
    # the first step loses a life: in "reset" mode the step-determinism check then needs reset(seed=...) to restart
    # the game, and the spec-based checks need the wrapper to record its arguments
    run_checkers(lambda: LifeLoss(gym.make(LIVES_GAME_ID), mode=mode))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["roll", "reset"])
def test_lifeloss_over_breakout(mode: str) -> None:
    # ALE's "human" render mode opens a window and a sound device: its render modes are ALE's, not ours
    run_checkers(lambda: LifeLoss(gym.make("ALE/Breakout-v5"), mode=mode), skip_render_check=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", [0, 1, 2])
def test_minatar_multitask_env(task: int) -> None:
    # game `task` of the set, padded (Breakout and Asterix have 4 of the 6 channels) and tagged; the render modes are
    # MinAtar's own (float RGB frames, no frame rate), as the ALE's are the ALE's
    pytest.importorskip("minatar")
    register_envs()
    run_checkers(lambda: gym.make(MINATAR_MULTITASK_ID, task=task).unwrapped, skip_render_check=True)
    run_checkers(lambda: gym.make(MINATAR_MULTITASK_ID, task=task), skip_render_check=True)
