"""MuZero's two-player mode on tic-tac-toe: win rate against a random and a perfect (minimax) opponent after a short
self-play run, beside sb3-contrib's MaskablePPO trained for the same number of moves against the random opponent.

    python -m benchmarks.bench_tictactoe [--steps 30000] [--seeds 3] [--games 200]

MuZero learns by self-play only (``two_player=True``: both sides, final-outcome value targets, the search flipping
perspective each ply) with ``sb3_frontier/zoo_configs/muzero.yml``; it never sees the opponents before the test.
Both agents act deterministically with legal-move masks; sides alternate every game.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.common import OUT_DIR, command_line, environment_info, update_results_section
from sb3_frontier import MuZero
from sb3_frontier.envs import register_envs
from sb3_frontier.envs.tictactoe import play_match
from sb3_frontier.zoo import read_hyperparams

SELF_PLAY = "sb3_frontier/TicTacToe-v0"
VS_RANDOM = "sb3_frontier/TicTacToeVsRandom-v0"


def train_muzero(steps: int, seed: int) -> Callable[[np.ndarray, np.ndarray], int]:
    n_envs, _, kwargs = read_hyperparams("muzero", SELF_PLAY)
    model = MuZero(env=make_vec_env(SELF_PLAY, n_envs=n_envs, seed=seed), seed=seed, **kwargs).learn(steps)

    def act(obs: np.ndarray, mask: np.ndarray) -> int:
        return int(model.predict(obs, deterministic=True, action_masks=mask)[0])

    return act


def train_maskable_ppo(steps: int, seed: int) -> Callable[[np.ndarray, np.ndarray], int]:
    model = MaskablePPO("MlpPolicy", make_vec_env(VS_RANDOM, n_envs=8, seed=seed), seed=seed, n_steps=256).learn(steps)

    def act(obs: np.ndarray, mask: np.ndarray) -> int:
        return int(model.predict(obs, deterministic=True, action_masks=mask)[0])

    return act


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30_000, help="moves of training (self-play moves for MuZero)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--games", type=int, default=200)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    register_envs()
    trainers = {"MuZero (self-play)": train_muzero, "MaskablePPO (vs random)": train_maskable_ppo}
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for name, train in trainers.items():
            start = time.perf_counter()
            agent = train(args.steps, seed)
            seconds = time.perf_counter() - start
            for opponent in ("random", "minimax"):
                result = play_match(agent, opponent, args.games, seed=1000 + seed)
                runs.append({"agent": name, "seed": seed, "opponent": opponent, "train_seconds": seconds, **result})
                print(
                    f"{name} seed {seed} vs {opponent}: {result['wins']}W {result['draws']}D {result['losses']}L", flush=True
                )

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = environment_info()
    (OUT_DIR / "tictactoe.json").write_text(json.dumps({"environment": info, "runs": runs}, indent=2))
    lines = [
        "| agent | opponent | win rate, median (range) | draw rate | loss rate | illegal moves | training s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in trainers:
        for opponent in ("random", "minimax"):
            mine = [r for r in runs if r["agent"] == name and r["opponent"] == opponent]
            wins = [r["win_rate"] for r in mine]
            draws = statistics.median(r["draw_rate"] for r in mine)
            losses = statistics.median(r["loss_rate"] for r in mine)
            seconds = statistics.median(r["train_seconds"] for r in mine)
            lines.append(
                f"| {name} | {opponent} | {statistics.median(wins):.3f} ({min(wins):.3f}-{max(wins):.3f}) | {draws:.3f} "
                f"| {losses:.3f} | {sum(r['illegal_moves'] for r in mine)} | {seconds:.0f} |"
            )
    command = command_line("benchmarks.bench_tictactoe", argv)
    section = (
        f"## Board game: tic-tac-toe after {args.steps:,} training moves\n\n"
        f"Command: `{command}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, one torch thread. "
        "Raw numbers: `benchmarks/out/tictactoe.json`.\n\n" + "\n".join(lines) + "\n\n"
        f"{args.seeds} seeds, {args.games} games per opponent with sides alternating, deterministic play with legal-move "
        "masks. Against the perfect player a draw is the best possible result. MuZero trains by self-play only; "
        "MaskablePPO (sb3-contrib, default hyperparameters, `n_steps=256`) trains against the random opponent."
    )
    update_results_section("bench_tictactoe", section)
    print(section)


if __name__ == "__main__":
    main()
