"""Our environments are registered with gymnasium when ``sb3_frontier`` is imported, and only they are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OWN_IDS = ("sb3_frontier/TicTacToe-v0", "sb3_frontier/TicTacToeVsRandom-v0", "sb3_frontier/TicTacToeVsMinimax-v0")


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter from the repository root; return its stdout (fail on an error)."""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_registers_our_envs() -> None:
    out = run_fresh(
        "import sb3_frontier, gymnasium as gym\n"
        f"for env_id in {OWN_IDS!r}:\n"
        "    env = gym.make(env_id)\n"
        "    obs, info = env.reset(seed=0)\n"
        "    print(type(env.unwrapped).__name__, obs.shape == (2, 3, 3), info['action_mask'].shape == (9,))\n"
    )
    assert out.splitlines() == [
        "TicTacToeEnv True True",
        "TicTacToeVsOpponent True True",
        "TicTacToeVsOpponent True True",
    ]


def test_import_is_cheap() -> None:
    """Registering imports neither the games (entry points are strings) nor MinAtar (registered on request only)."""
    out = run_fresh(
        "import sys, gymnasium as gym\n"
        "import sb3_frontier\n"
        "print(all(i in gym.registry for i in " + repr(OWN_IDS) + "))\n"
        "print('sb3_frontier.envs.tictactoe' in sys.modules, 'minatar' in sys.modules)\n"
        "print(any(i.startswith('MinAtar/') for i in gym.registry), 'sb3_frontier/MinAtarMultiTask-v0' in gym.registry)\n"
    )
    assert out.split() == ["True", "False", "False", "False", "False"]


def test_register_envs_adds_minatar_and_keeps_ours() -> None:
    pytest.importorskip("minatar")
    out = run_fresh(
        "import gymnasium as gym\n"
        "from sb3_frontier.envs import register_envs\n"
        "ids = register_envs()\n"
        "assert register_envs() == ids\n"  # idempotent
        "print(sum(i.startswith('MinAtar/') for i in ids) > 0, all(i in ids for i in " + repr(OWN_IDS) + "))\n"
        "print('sb3_frontier/MinAtarMultiTask-v0' in ids, 'sb3_frontier.envs.multitask' in __import__('sys').modules)\n"
    )
    assert out.split() == ["True", "True", "True", "False"]  # the multi-task id too, its entry point not yet imported
