"""Sample efficiency on CartPole-v1: environment steps and wall-clock until the deterministic evaluation mean
(10 episodes) reaches 475 **and stays there** to the end of the budget (BENCHMARKS.md), for Gumbel MuZero (our zoo
config: 8 simulations) and MuZero (the same config with MuZero's own search at 25 simulations) beside SB3's PPO and
DQN with rl-zoo3's tuned hyperparameters, in the same process, seeds run one after the other with the algorithm order rotated.

    python -m benchmarks.bench_cartpole [--seeds 5] [--first-seed 0] [--eval-every 1000] [--algos muzero gumbel ppo dqn]
        [--jobs 1] [--set KEY=VALUE ...]

``--set`` overrides arguments of our algorithms' entry (e.g. ``--set gradient_steps=3 --algos gumbel``, values read
as Python literals), for trying a change on many seeds; name such a run with ``--name``.

Every run trains for its whole budget (its zoo ``n_timesteps``; MuZero: ``--muzero-budget``) and is evaluated every
``--eval-every`` steps and at the end; the first crossing and the final evaluation are reported beside the headline.
Evaluation time is not counted in the wall-clock. All runs use one torch thread; ``--jobs 2`` runs two at a time in
worker processes (one per core: each run's wall-clock is its own).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import multiprocessing as mp
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch as th
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.common import OUT_DIR, EvaluationCurve, command_line, environment_info, median_range, update_results_section
from sb3_frontier import MuZero
from sb3_frontier.zoo import read_hyperparams

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
#: name -> (zoo algorithm, class, arguments over the zoo entry)
ALGOS: dict[str, tuple[str, type, dict[str, Any]]] = {
    "muzero": ("muzero", MuZero, {"search": "muzero", "num_simulations": 25}),
    "gumbel": ("muzero", MuZero, {}),
    "gumbel-bf16": ("muzero", MuZero, {"training_precision": "bfloat16"}),
    "ppo": ("ppo", PPO, {}),
    "dqn": ("dqn", DQN, {}),
}
OURS = ("muzero", "gumbel", "gumbel-bf16")


def run_one(name: str, seed: int, eval_every: int, budget: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one algorithm on one seed for its budget (``extra``: arguments over its entry and overrides); return the
    evaluation curve and its summary."""
    algo, cls, overrides = ALGOS[name]
    overrides = {**overrides, **(extra or {})}
    n_envs, n_timesteps, kwargs = read_hyperparams(algo, ENV_ID)
    budget = n_timesteps if budget is None else budget
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(ENV_ID, n_envs=10, seed=seed + 10_000)
    model = cls(env=env, seed=seed, verbose=0, **{**kwargs, **overrides})
    tracker = EvaluationCurve(eval_env, eval_every)
    model.learn(budget, callback=tracker.make())
    summary = tracker.summary(THRESHOLD)
    print(
        f"{name} seed {seed}: stayed from {summary['stayed_steps']}, first at {summary['first_steps']}, "
        f"final {tracker.final}; {tracker.curve}",
        flush=True,
    )
    return {"algo": name, "seed": seed, "budget": budget, **summary}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as keyword arguments, each value a Python literal (a bare word stays a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _run_task(task: tuple[str, int, int, int | None, dict[str, Any]]) -> dict[str, Any]:
    th.set_num_threads(1)
    return run_one(*task)


def summarize(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    mine = [r for r in runs if r["algo"] == name]
    stayed = [r for r in mine if r["stayed_steps"] is not None]
    out: dict[str, Any] = {"algo": name, "runs": len(mine), "stayed": len(stayed), "budget": mine[0]["budget"]}
    out["finals"] = [r["final"] for r in mine]
    out["train_seconds"] = [r["train_seconds"] for r in mine]
    firsts = [r["first_steps"] for r in mine if r["first_steps"] is not None]
    out["first_steps"] = firsts
    if len(stayed) == len(mine):
        out["stayed_steps"] = [r["stayed_steps"] for r in mine]
        out["stayed_seconds"] = [r["stayed_seconds"] for r in mine]
    return out


def plot(runs: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"muzero": "tab:red", "gumbel": "tab:purple", "gumbel-bf16": "tab:pink", "ppo": "tab:blue", "dqn": "tab:green"}
    for run in runs:
        if run["curve"]:
            steps, _, returns = zip(*run["curve"], strict=True)
            label = run["algo"] if run["seed"] == min(r["seed"] for r in runs if r["algo"] == run["algo"]) else None
            ax.plot(steps, returns, color=colours.get(run["algo"]), alpha=0.7, label=label)
    ax.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return (10 episodes)")
    ax.set_title(f"{ENV_ID}: one line per seed")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summaries: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| algorithm | reached 475 and stayed | env steps, median (range) | training s to it, median (range) "
        "| first crossing, env steps median | final evaluation, median (range) | training s, whole budget | budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if "stayed_steps" in s:
            steps = median_range(s["stayed_steps"], ",.0f")
            secs = median_range(s["stayed_seconds"], ".0f")
        else:
            steps = secs = "not on every seed"
        first = f"{statistics.median(s['first_steps']):,.0f}" if s["first_steps"] else "never"
        lines.append(
            f"| {s['algo']} | {s['stayed']}/{s['runs']} | {steps} | {secs} | {first} ({len(s['first_steps'])}/{s['runs']}) "
            f"| {median_range(s['finals'], '.1f')} | {median_range(s['train_seconds'], '.0f')} | {s['budget']:,} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="arguments over our entries")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=sorted(ALGOS))
    parser.add_argument("--muzero-budget", type=int, default=None, help="MuZero's step budget (default: its zoo config)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (worker processes, one torch thread each)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the plot and results.md from the JSON")
    parser.add_argument("--name", default="bench_cartpole", help="results.md section (and output file stem)")
    args = parser.parse_args(argv)
    if args.report_only:
        report(args.name)
        return
    th.set_num_threads(1)
    tasks = []
    extra = parse_overrides(args.set)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        order = args.algos[seed % len(args.algos) :] + args.algos[: seed % len(args.algos)]
        tasks += [
            (name, seed, args.eval_every, args.muzero_budget if name in OURS else None, extra if name in OURS else {})
            for name in order
        ]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("fork")) as pool:
            runs = list(pool.map(_run_task, tasks))
    else:
        runs = [run_one(*task) for task in tasks]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = environment_info()
    command = command_line("benchmarks.bench_cartpole", argv)
    (OUT_DIR / f"{output_stem(args.name)}.json").write_text(
        json.dumps(
            {
                "environment": info,
                "command": command,
                "threshold": THRESHOLD,
                "eval_every": args.eval_every,
                "jobs": args.jobs,
                "overrides": extra,
                "runs": runs,
            },
            indent=2,
        )
    )
    report(args.name)


def seed_table(runs: list[dict[str, Any]], algos: list[str]) -> list[str]:
    """One row per algorithm, one column per seed: reached and stayed from (steps, training s), or the final return."""
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| algorithm | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for name in algos:
        cells = []
        for seed in seeds:
            run = next(r for r in runs if r["algo"] == name and r["seed"] == seed)
            if run["stayed_steps"] is not None:
                cells.append(f"{run['stayed_steps']:,} ({run['stayed_seconds']:.0f} s)")
            else:
                cells.append(f"never (final {run['final']:.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def median_beyond_budget(stayed: list[int | None]) -> str:
    """The median of the steps at which the runs reached and stayed, a run that never stayed counting as beyond the
    budget (so the median is a number only while more than half the runs stayed)."""
    ordered = sorted((math.inf if steps is None else steps) for steps in stayed)
    middle = statistics.median(ordered)
    return "beyond the budget" if math.isinf(middle) else f"{middle:,.0f}"


def stayed_by_table(runs: list[dict[str, Any]], algos: list[str]) -> list[str]:
    """Per algorithm, the runs that had reached 475 and stayed there by each number of environment steps (ours: every
    2,000 steps up to the budget), and the median with a run that never stayed counted beyond the budget."""
    ours = [name for name in algos if name in OURS]
    if not ours:
        return []
    budget = max(r["budget"] for r in runs if r["algo"] in ours)
    marks = list(range(4000, budget + 1, 2000))
    lines = [
        "| algorithm | " + " | ".join(f"by {m:,}" for m in marks) + " | median (never: beyond the budget) |",
        "|---" * (len(marks) + 2) + "|",
    ]
    for name in ours:
        stayed = [r["stayed_steps"] for r in runs if r["algo"] == name]
        counts = [sum(steps is not None and steps <= m for steps in stayed) for m in marks]
        lines.append(
            f"| {name} | " + " | ".join(f"{c}/{len(stayed)}" for c in counts) + f" | {median_beyond_budget(stayed)} |"
        )
    return lines


def output_stem(name: str) -> str:
    """The file stem of a run's JSON and plot under ``benchmarks/out``."""
    return "cartpole_sample_efficiency" if name == "bench_cartpole" else name


def report(name: str = "bench_cartpole") -> None:
    """Write the plot and the results.md section ``name`` from ``benchmarks/out/<stem>.json``."""
    stem = output_stem(name)
    data = json.loads((OUT_DIR / f"{stem}.json").read_text())
    info, runs, command, jobs = data["environment"], data["runs"], data["command"], data["jobs"]
    algos = list(dict.fromkeys(r["algo"] for r in runs))
    summaries = [summarize(runs, name) for name in algos]
    stayed_by = stayed_by_table(runs, algos)
    plot(runs, OUT_DIR / f"{stem}.png")
    ratios = []
    for ours in (s for s in summaries if s["algo"] in OURS and "stayed_steps" in s):
        for peer in (s for s in summaries if s["algo"] not in OURS and "stayed_steps" in s):
            steps = statistics.median(ours["stayed_steps"]) / statistics.median(peer["stayed_steps"])
            seconds = statistics.median(ours["stayed_seconds"]) / statistics.median(peer["stayed_seconds"])
            ratios.append(f"{ours['algo']}/{peer['algo']}: steps {steps:.2f}, wall-clock {seconds:.2f}")
    both = [
        (g, m)
        for g in runs
        for m in runs
        if g["algo"] == "gumbel" and m["algo"] == "muzero" and g["seed"] == m["seed"]
        if g["stayed_steps"] is not None and m["stayed_steps"] is not None
    ]
    if both:
        ratios.append(
            f"gumbel/muzero on the {len(both)} seeds where both stayed (per seed): steps "
            + ", ".join(f"{g['stayed_steps'] / m['stayed_steps']:.2f}" for g, m in both)
            + "; wall-clock "
            + ", ".join(f"{g['stayed_seconds'] / m['stayed_seconds']:.2f}" for g, m in both)
        )
    section = (
        f"## Sample efficiency on {ENV_ID}: reached {THRESHOLD:.0f} and stayed there\n\n"
        f"Command: `{command}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, one torch thread. "
        f"Raw curves: `benchmarks/out/{stem}.json`; plot: `benchmarks/out/{stem}.png`.\n\n"
        + "\n".join(table(summaries))
        + "\n\nPer seed, reached 475 and stayed from (environment steps, training seconds to it):\n\n"
        + "\n".join(seed_table(runs, algos))
        + "\n\n"
        + (
            "Runs that had reached 475 and stayed there by each number of environment steps:\n\n"
            + "\n".join(stayed_by)
            + "\n\n"
            if stayed_by
            else ""
        )
        + ("Ratios of medians, reached and stayed (lower is better): " + "; ".join(ratios) + ".\n\n" if ratios else "")
        + f"{len({r['seed'] for r in runs})} seeds; every run trains for its whole budget, evaluated every "
        f"{data['eval_every']} environment steps and at the end (10 episodes, deterministic). Headline: the first "
        "evaluation at or above 475 after which every later one stays there. gumbel: the `CartPole-v1` entry of "
        "`sb3_frontier/zoo_configs/muzero.yml` (Gumbel MuZero, 8 simulations); muzero: the same entry with "
        + ", ".join(f"`{key}={value!r}`" for key, value in ALGOS["muzero"][2].items())
        + "; gumbel-bf16: the gumbel entry with `training_precision='bfloat16'`"
        + "; PPO and DQN: rl-zoo3's tuned `ppo.yml`/`dqn.yml`. Evaluation time is excluded from the wall-clock"
        + (f"; {jobs} runs at a time, each in its own process on its own core." if jobs > 1 else ".")
    )
    update_results_section(name, section)
    print(section)


if __name__ == "__main__":
    main()
