"""Sample efficiency on CartPole-v1: environment steps and wall-clock until the deterministic evaluation mean
(10 episodes) reaches 475, for MuZero (our zoo config) beside SB3's PPO and DQN with rl-zoo3's tuned
hyperparameters, in the same process, seeds run one after the other with the algorithm order rotated.

    python -m benchmarks.bench_cartpole [--seeds 3] [--eval-every 1000] [--algos muzero ppo dqn]

Each algorithm trains for at most its zoo ``n_timesteps`` (MuZero: ``--muzero-budget``). Evaluation time is not
counted in the wall-clock. All runs use one torch thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from typing import Any

import torch as th
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.common import OUT_DIR, ThresholdCallback, command_line, environment_info, update_results_section
from sb3_frontier import MuZero
from sb3_frontier.zoo import read_hyperparams

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
CLASSES = {"muzero": MuZero, "ppo": PPO, "dqn": DQN}


def run_one(algo: str, seed: int, eval_every: int, budget: int | None) -> dict[str, Any]:
    """Train one algorithm on one seed until the threshold or its budget; return the evaluation curve."""
    n_envs, n_timesteps, kwargs = read_hyperparams(algo, ENV_ID)
    budget = n_timesteps if budget is None else budget
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(ENV_ID, n_envs=10, seed=seed + 10_000)
    model = CLASSES[algo](env=env, seed=seed, verbose=0, **kwargs)
    tracker = ThresholdCallback(eval_env, THRESHOLD, eval_every)
    model.learn(budget, callback=tracker.make())
    steps, seconds = tracker.reached_at if tracker.reached_at else (None, None)
    print(f"{algo} seed {seed}: reached at {steps} steps, {seconds} s; curve {tracker.curve}", flush=True)
    return {
        "algo": algo,
        "seed": seed,
        "budget": budget,
        "reached_steps": steps,
        "reached_seconds": seconds,
        "curve": tracker.curve,
    }


def summarize(runs: list[dict[str, Any]], algo: str) -> dict[str, Any]:
    mine = [r for r in runs if r["algo"] == algo]
    reached = [r for r in mine if r["reached_steps"] is not None]
    out: dict[str, Any] = {"algo": algo, "runs": len(mine), "reached": len(reached), "budget": mine[0]["budget"]}
    if len(reached) == len(mine):
        steps = [r["reached_steps"] for r in mine]
        seconds = [r["reached_seconds"] for r in mine]
        out.update(
            steps_median=statistics.median(steps),
            steps_range=(min(steps), max(steps)),
            seconds_median=statistics.median(seconds),
            seconds_range=(min(seconds), max(seconds)),
        )
    return out


def plot(runs: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"muzero": "tab:red", "ppo": "tab:blue", "dqn": "tab:green"}
    for run in runs:
        if run["curve"]:
            steps, _, returns = zip(*run["curve"], strict=True)
            label = run["algo"] if run["seed"] == min(r["seed"] for r in runs if r["algo"] == run["algo"]) else None
            ax.plot(steps, returns, color=colours.get(run["algo"]), alpha=0.8, label=label)
    ax.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return (10 episodes)")
    ax.set_title(f"{ENV_ID}: steps to {THRESHOLD:.0f}, one line per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--algos", nargs="+", default=["muzero", "ppo", "dqn"], choices=sorted(CLASSES))
    parser.add_argument("--muzero-budget", type=int, default=None, help="MuZero's step budget (default: its zoo config)")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    runs = []
    for seed in range(args.seeds):
        order = args.algos[seed % len(args.algos) :] + args.algos[: seed % len(args.algos)]
        for algo in order:
            runs.append(run_one(algo, seed, args.eval_every, args.muzero_budget if algo == "muzero" else None))
    summaries = [summarize(runs, algo) for algo in args.algos]

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = environment_info()
    (OUT_DIR / "cartpole_sample_efficiency.json").write_text(
        json.dumps({"environment": info, "threshold": THRESHOLD, "runs": runs, "summaries": summaries}, indent=2)
    )
    plot(runs, OUT_DIR / "cartpole_sample_efficiency.png")

    lines = [
        "| algorithm | reached 475 | env steps, median (range) | training wall-clock s, median (range) | budget |",
        "|---|---|---|---|---|",
    ]
    for s in summaries:
        if "steps_median" in s:
            steps = f"{s['steps_median']:,.0f} ({s['steps_range'][0]:,}-{s['steps_range'][1]:,})"
            secs = f"{s['seconds_median']:.0f} ({s['seconds_range'][0]:.0f}-{s['seconds_range'][1]:.0f})"
        else:
            steps = secs = "not every seed reached it"
        lines.append(f"| {s['algo']} | {s['reached']}/{s['runs']} | {steps} | {secs} | {s['budget']:,} |")
    ratios = []
    mz = next((s for s in summaries if s["algo"] == "muzero"), None)
    for peer in summaries:
        if mz and peer["algo"] != "muzero" and "steps_median" in mz and "steps_median" in peer:
            ratios.append(
                f"MuZero/{peer['algo']}: steps {mz['steps_median'] / peer['steps_median']:.2f}, "
                f"wall-clock {mz['seconds_median'] / peer['seconds_median']:.2f}"
            )
    command = command_line("benchmarks.bench_cartpole", argv)
    section = (
        f"## Sample efficiency on {ENV_ID} (steps to a deterministic evaluation mean of {THRESHOLD:.0f})\n\n"
        f"Command: `{command}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, one torch thread. "
        "Raw curves: `benchmarks/out/cartpole_sample_efficiency.json`; "
        "plot: `benchmarks/out/cartpole_sample_efficiency.png`.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + ("Ratios of medians (lower is better): " + "; ".join(ratios) + ".\n\n" if ratios else "")
        + f"{args.seeds} seeds, evaluation every {args.eval_every} environment steps (10 episodes, deterministic); "
        "MuZero uses `sb3_frontier/zoo_configs/muzero.yml`, PPO and DQN rl-zoo3's tuned `ppo.yml`/`dqn.yml`; "
        "evaluation time is excluded from the wall-clock."
    )
    update_results_section("bench_cartpole", section)
    print(section)


if __name__ == "__main__":
    main()
