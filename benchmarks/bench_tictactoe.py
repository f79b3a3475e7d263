"""MuZero's two-player mode on tic-tac-toe: win, draw and loss rates against a random and a perfect (minimax) opponent
after self-play training with the tuned ``sb3_frontier/TicTacToe-v0`` entry of ``sb3_frontier/zoo_configs/muzero.yml``,
beside sb3-contrib's MaskablePPO trained for the same number of moves against the random opponent.

    python -m benchmarks.bench_tictactoe [--steps N] [--seeds 3] [--games 200]

``--steps`` defaults to the entry's ``n_timesteps``. MuZero learns by self-play only (``two_player=True``: both sides,
final-outcome value targets, the search flipping perspective each ply); it never sees the opponents before the test.
Both agents act deterministically with legal-move masks (MuZero: the most visited action of a search without
exploration noise); sides alternate every game. The goal: against the perfect player draws >= 95% (a draw is the best
possible result), against the random player wins >= 90%, medians over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
import yaml
from sb3_contrib import MaskablePPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.common import OUT_DIR, command_line, environment_info, update_results_section
from sb3_frontier import MuZero
from sb3_frontier.envs import register_envs
from sb3_frontier.envs.tictactoe import play_match
from sb3_frontier.zoo import config_path, read_hyperparams

SELF_PLAY = "sb3_frontier/TicTacToe-v0"
VS_RANDOM = "sb3_frontier/TicTacToeVsRandom-v0"
OPPONENTS = ("random", "minimax")
#: The goal: median draw rate against the perfect player and median win rate against the random player.
GOAL = {"minimax": ("draw_rate", 0.95), "random": ("win_rate", 0.90)}
#: ... within 20 minutes of training on the benchmark machine (2 CPU cores).
TIME_BUDGET_S = 1200
MUZERO = "MuZero (self-play)"
PPO = "MaskablePPO (vs random)"


def train_muzero(steps: int, seed: int) -> BaseAlgorithm:
    """MuZero with the zoo entry's hyperparameters, trained by self-play for ``steps`` moves (both sides')."""
    n_envs, _, kwargs = read_hyperparams("muzero", SELF_PLAY)
    return MuZero(env=make_vec_env(SELF_PLAY, n_envs=n_envs, seed=seed), seed=seed, **kwargs).learn(steps)


def train_maskable_ppo(steps: int, seed: int) -> BaseAlgorithm:
    """The peer: MaskablePPO (sb3-contrib defaults, ``n_steps=256``) trained against the random opponent."""
    return MaskablePPO("MlpPolicy", make_vec_env(VS_RANDOM, n_envs=8, seed=seed), seed=seed, n_steps=256).learn(steps)


def player(model: BaseAlgorithm) -> Callable[[np.ndarray, np.ndarray], int]:
    """The model as a tic-tac-toe player: deterministic, with the legal-move mask."""

    def act(obs: np.ndarray, mask: np.ndarray) -> int:
        return int(model.predict(obs, deterministic=True, action_masks=mask)[0])  # type: ignore[call-arg]

    return act


def spread(values: Sequence[float], fmt: str = ".3f") -> str:
    """``median (min-max)`` of a list of numbers."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def summary_table(runs: Sequence[dict[str, Any]], agents: Sequence[str]) -> list[str]:
    """One row per agent and opponent: rates, illegal moves, moves and training seconds, median (range) over seeds."""
    lines = [
        "| agent | opponent | win rate | draw rate | loss rate | illegal moves | training moves | training s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in agents:
        for opponent in OPPONENTS:
            mine = [r for r in runs if r["agent"] == name and r["opponent"] == opponent]
            rates = [spread([r[key] for r in mine]) for key in ("win_rate", "draw_rate", "loss_rate")]
            lines.append(
                f"| {name} | {opponent} | {' | '.join(rates)} | {sum(r['illegal_moves'] for r in mine)} "
                f"| {spread([r['moves'] for r in mine], ',.0f')} | {spread([r['train_seconds'] for r in mine], '.0f')} |"
            )
    return lines


def seed_table(runs: Sequence[dict[str, Any]], agents: Sequence[str]) -> list[str]:
    """One row per agent and seed: moves, training seconds, wins/draws/losses against each opponent."""
    lines = [
        "| agent | seed | training moves | training s | vs random W/D/L | vs minimax W/D/L |",
        "|---|---|---|---|---|---|",
    ]
    for name in agents:
        for seed in sorted({r["seed"] for r in runs if r["agent"] == name}):
            mine = {r["opponent"]: r for r in runs if r["agent"] == name and r["seed"] == seed}
            first = mine[OPPONENTS[0]]
            counts = [f"{mine[o]['wins']}/{mine[o]['draws']}/{mine[o]['losses']}" for o in OPPONENTS]
            lines.append(f"| {name} | {seed} | {first['moves']:,} | {first['train_seconds']:.0f} | {' | '.join(counts)} |")
    return lines


def goal_met(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """MuZero's medians and longest training against the goal."""
    verdict: dict[str, Any] = {}
    for opponent, (key, threshold) in GOAL.items():
        median = statistics.median(r[key] for r in runs if r["agent"] == MUZERO and r["opponent"] == opponent)
        verdict[opponent] = {"rate": key, "median": median, "threshold": threshold, "met": median >= threshold}
    verdict["train_seconds_max"] = max(r["train_seconds"] for r in runs if r["agent"] == MUZERO)
    in_time = verdict["train_seconds_max"] <= TIME_BUDGET_S
    verdict["met"] = in_time and all(verdict[opponent]["met"] for opponent in GOAL)
    return verdict


def bar_plot(runs: Sequence[dict[str, Any]], agents: Sequence[str], path: Any) -> None:
    """Stacked win/draw/loss bars (means over the seeds, so that each bar sums to 1) per agent and opponent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: list[str] = []
    parts: dict[str, list[float]] = {"win_rate": [], "draw_rate": [], "loss_rate": []}
    for name in agents:
        for opponent in OPPONENTS:
            mine = [r for r in runs if r["agent"] == name and r["opponent"] == opponent]
            labels.append(f"{name}\nvs {opponent}")
            for key in parts:
                parts[key].append(statistics.fmean(r[key] for r in mine))
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = np.zeros(len(labels))
    for key, colour in zip(parts, ("tab:green", "tab:grey", "tab:red"), strict=True):
        ax.bar(labels, parts[key], bottom=bottom, color=colour, label=key.replace("_rate", ""))
        bottom += np.asarray(parts[key])
    ax.set_ylabel("share of games (mean over seeds)")
    ax.set_title("Tic-tac-toe: deterministic play against random and perfect opponents")
    ax.legend(loc="lower right")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def results_section(
    command: str,
    info: dict[str, Any],
    entry: dict[str, Any],
    runs: Sequence[dict[str, Any]],
    steps: int,
    seeds: int,
    games: int,
) -> str:
    """
    The benchmark's section of results.md.

    :param command: the command that ran the benchmark
    :param info: :func:`~benchmarks.common.environment_info`
    :param entry: MuZero's zoo entry as written in the file
    :param runs: one record per agent, seed and opponent
    :param steps: training moves asked for
    :param seeds: number of seeds
    :param games: games per opponent
    :return: the markdown, heading included
    """
    agents = [MUZERO, PPO]
    verdict = goal_met(runs)
    loads = [x for r in runs for x in r["load_average_1min"]]
    status = "met" if verdict["met"] else "not met"
    settings = ", ".join(f"`{key}: {value}`" for key, value in entry.items() if key not in ("policy", "n_timesteps"))
    return "\n".join(
        [
            f"## Board game: tic-tac-toe after {steps:,} training moves",
            "",
            f"Command: `{command}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, one torch "
            f"thread; 1-minute load average {min(loads):.1f}-{max(loads):.1f} during training (a shared machine: times "
            "are longer than on a quiet one). Raw numbers: `benchmarks/out/tictactoe.json`; plot: "
            "`benchmarks/out/tictactoe.png`.",
            "",
            "Median (range) over the seeds:",
            "",
            *summary_table(runs, agents),
            "",
            "Per seed (wins/draws/losses out of the games played against each opponent):",
            "",
            *seed_table(runs, agents),
            "",
            f"Goal (medians: draws >= {GOAL['minimax'][1]:.2f} against minimax, wins >= {GOAL['random'][1]:.2f} against "
            f"random, within {TIME_BUDGET_S:,} s of training): **{status}** (draws {verdict['minimax']['median']:.3f}, "
            f"wins {verdict['random']['median']:.3f}, longest training {verdict['train_seconds_max']:.0f} s).",
            "",
            f"{seeds} seeds, {games} games per opponent with sides alternating, deterministic play with legal-move "
            "masks; the perfect player breaks ties among optimal moves at random (seeded). Against it a draw is the best "
            "possible result; against the random player a perfect player wins about 95.5% (99.5% moving first, 91.6% "
            "second). MuZero trains by self-play only with the `sb3_frontier/TicTacToe-v0` entry of "
            "`sb3_frontier/zoo_configs/muzero.yml` (its moves count both sides); MaskablePPO (sb3-contrib, default "
            "hyperparameters, `n_steps=256`) trains against the random opponent for the same number of moves (its own).",
            "",
            f"MuZero's entry: {settings}.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="training moves (default: the zoo entry's n_timesteps)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--games", type=int, default=200, help="games per opponent")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    register_envs()
    steps = args.steps if args.steps is not None else read_hyperparams("muzero", SELF_PLAY)[1]
    trainers = {MUZERO: train_muzero, PPO: train_maskable_ppo}
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for name, train in trainers.items():
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            model = train(steps, seed)
            seconds = time.perf_counter() - start
            load_after = os.getloadavg()[0]
            act = player(model)
            for opponent in OPPONENTS:
                result = play_match(act, opponent, args.games, seed=1000 + seed)
                runs.append(
                    {
                        "agent": name,
                        "seed": seed,
                        "opponent": opponent,
                        "moves": int(model.num_timesteps),
                        "train_seconds": seconds,
                        "load_average_1min": [load_before, load_after],
                        **result,
                    }
                )
                print(
                    f"{name} seed {seed}: {model.num_timesteps} moves, {seconds:.0f} s; vs {opponent}: "
                    f"{result['wins']}W {result['draws']}D {result['losses']}L",
                    flush=True,
                )

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = environment_info()
    entry = dict(yaml.safe_load(config_path("muzero").read_text())[SELF_PLAY])  # as written in the file
    verdict = goal_met(runs)
    (OUT_DIR / "tictactoe.json").write_text(
        json.dumps({"environment": info, "muzero_config": entry, "goal": verdict, "runs": runs}, indent=2)
    )
    bar_plot(runs, list(trainers), OUT_DIR / "tictactoe.png")
    command = command_line("benchmarks.bench_tictactoe", argv)
    section = results_section(command, info, entry, runs, steps, args.seeds, args.games)
    update_results_section("bench_tictactoe", section)
    print(section)


if __name__ == "__main__":
    main()
