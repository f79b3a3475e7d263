"""PopArt-IMPALA beside plain IMPALA, SB3's PPO and A2C: reward-scale invariance, CartPole, Atari throughput, multi-task.

    python -m benchmarks.bench_popart_impala scales [--seeds 3] [--scales 0.001 1 1000] [--jobs 2]
    python -m benchmarks.bench_popart_impala throughput [--steps 12288] [--repeats 3] [--threads 1 2]
    python -m benchmarks.bench_popart_impala multitask [--steps-per-task 300000] [--seeds 3] [--jobs 2]
    python -m benchmarks.bench_popart_impala          # all three sections with their defaults (make bench)

- ``scales``: CartPole-v1 with every reward multiplied by 1e-3, 1 and 1e3 (gymnasium's ``TransformReward``, inside
  SB3's ``Monitor``: episode statistics and evaluations stay in unscaled units), several seeds each, for
  PopArt-IMPALA (the ``CartPole-v1`` entry of ``sb3_frontier/zoo_configs/popart_impala.yml``), the same entry with
  ``popart=False`` (plain IMPALA) and SB3's PPO with rl-zoo3's tuned ``CartPole-v1`` entry (which normalises
  nothing). Every run trains for its whole budget (its entry's ``n_timesteps``) and is evaluated every
  ``--eval-every`` steps on the unscaled env (deterministic, 10 episodes). Headline: reached 475 and stayed
  (BENCHMARKS.md), the final evaluation per scale, and the spread of PopArt-IMPALA's final returns across scales.
  The scale-1 rows are also the CartPole comparison with PPO (environment steps and training seconds to 475).
- ``throughput``: environment steps per second of the whole training loop (acting, transport, learning) on
  ALE/Pong-v5 with 8 envs, 84x84 grey frames stacked 4, the same Nature CNN torso on every side: PopArt-IMPALA with
  its defaults (unrolls of 20, batches of 32, actor process) beside PPO and A2C with rl-zoo3's Atari settings at 8
  envs, each with a ``DummyVecEnv`` and a ``SubprocVecEnv``. The algorithms take turns within each repeat.
- ``multitask``: one PopArt-IMPALA model on three MinAtar games at once (``make_multitask_vec_env``: observations
  padded to the most channels, MinAtar's six shared actions, one PopArt head output and statistics per game) beside
  one single-task model per game, at equal frames per game (so equal total frames); final deterministic evaluation
  per game.

One torch thread per learning run; ``--jobs 2`` runs two at a time (one per core). Evaluation time is excluded from
the training wall-clock.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import operator
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium.wrappers import TimeLimit, TransformReward
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from benchmarks.bench_atari import paper_atari_env
from benchmarks.common import (
    OUT_DIR,
    STAYED_MEDIAN_NOTE,
    EvaluationCurve,
    PairResult,
    command_line,
    environment_info,
    median_range,
    stayed_cells,
    update_results_section,
    write_outputs,
)
from sb3_frontier import PopArtIMPALA
from sb3_frontier.envs import MINATAR_MULTITASK_ENVS, register_envs
from sb3_frontier.wrappers.multitask import make_multitask_vec_env
from sb3_frontier.zoo import read_hyperparams

CARTPOLE = "CartPole-v1"
THRESHOLD = 475.0
#: name -> (zoo algorithm, arguments over its zoo entry)
SCALE_ALGOS: dict[str, tuple[str, dict[str, Any]]] = {
    "popart_impala": ("popart_impala", {}),
    "impala": ("popart_impala", {"popart": False}),
    "ppo": ("ppo", {}),
}
MULTITASK_ID = "sb3_frontier/MinAtarMultiTask-v0"
MINATAR_GAMES = MINATAR_MULTITASK_ENVS[MULTITASK_ID]


# ---------------------------------------------------------------------------------------------------- reward scales
def scaled_cartpole(n_envs: int, seed: int, scale: float) -> Any:
    """CartPole-v1 whose agent sees rewards times ``scale``; ``Monitor`` (inside the scaling) records unscaled returns."""
    return make_vec_env(
        CARTPOLE,
        n_envs=n_envs,
        seed=seed,
        wrapper_class=TransformReward,
        wrapper_kwargs={"func": functools.partial(operator.mul, scale)},
    )


def run_scale(name: str, scale: float, seed: int, eval_every: int) -> dict[str, Any]:
    """Train one algorithm on one seed at one reward scale for its zoo budget; the unscaled evaluation curve."""
    th.set_num_threads(1)
    algo, overrides = SCALE_ALGOS[name]
    n_envs, budget, kwargs = read_hyperparams(algo, CARTPOLE)
    env = scaled_cartpole(n_envs, seed, scale)
    eval_env = make_vec_env(CARTPOLE, n_envs=10, seed=seed + 10_000)
    cls = PPO if algo == "ppo" else PopArtIMPALA
    model = cls(env=env, seed=seed, **{**kwargs, **overrides})
    curve = EvaluationCurve(eval_env, eval_every)
    model.learn(budget, callback=curve.make())
    summary = curve.summary(THRESHOLD)
    print(f"{name} x{scale:g} seed {seed}: stayed from {summary['stayed_steps']}, final {curve.final:.1f}", flush=True)
    return {"algo": name, "scale": scale, "seed": seed, "budget": budget, **summary}


def _run_scale(task: tuple[str, float, int, int]) -> dict[str, Any]:
    return run_scale(*task)


def scales_main(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    tasks = [
        (name, scale, seed, args.eval_every) for seed in range(args.seeds) for scale in args.scales for name in args.algos
    ]
    runs = _map(_run_scale, tasks, args.jobs)
    payload = {
        "environment": environment_info(),
        "command": command_line("benchmarks.bench_popart_impala", argv),
        "eval_every": args.eval_every,
        "jobs": args.jobs,
        "runs": runs,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "popart_impala_scales.json").write_text(json.dumps(payload, indent=2))
    print(scales_report())


def _cell(runs: list[dict[str, Any]]) -> str:
    stayed = [r for r in runs if r["stayed_steps"] is not None]
    if len(stayed) < len(runs):
        return f"{len(stayed)}/{len(runs)}"
    return f"{len(stayed)}/{len(runs)}, {median_range([r['stayed_steps'] for r in runs], ',.0f')}"


def scales_report() -> str:
    """The plot and the results.md sections (reward scales; CartPole beside PPO) from the scales JSON."""
    data = json.loads((OUT_DIR / "popart_impala_scales.json").read_text())
    runs, info = data["runs"], data["environment"]
    algos = list(dict.fromkeys(r["algo"] for r in runs))
    scales = sorted({r["scale"] for r in runs})
    plot_scales(runs, algos, scales)

    def pick(algo: str, scale: float) -> list[dict[str, Any]]:
        return sorted((r for r in runs if r["algo"] == algo and r["scale"] == scale), key=lambda r: r["seed"])

    lines = [
        "| algorithm | reward scale | reached 475 and stayed: seeds, env steps median (range) | final evaluation, "
        "median (range) | finals per seed | training s, whole budget | budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo in algos:
        for scale in scales:
            mine = pick(algo, scale)
            if not mine:
                continue
            finals = [r["final"] for r in mine]
            lines.append(
                f"| {algo} | {scale:g} | {_cell(mine)} | {median_range(finals, '.1f')} | "
                + ", ".join(f"{f:.1f}" for f in finals)
                + f" | {median_range([r['train_seconds'] for r in mine], '.0f')} | {mine[0]['budget']:,} |"
            )
    spread = []
    for algo in algos:
        medians = [statistics.median(r["final"] for r in pick(algo, s)) for s in scales if pick(algo, s)]
        if len(medians) > 1 and max(medians) > 0:
            spread.append(f"{algo} {(max(medians) - min(medians)) / max(medians):.1%}")
    section = (
        "## PopArt-IMPALA: reward-scale invariance on CartPole-v1\n\n"
        f"Command: `{data['command']}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, one torch "
        f"thread per run, {data['jobs']} run(s) at a time. Raw curves: `benchmarks/out/popart_impala_scales.json`; plot: "
        "`benchmarks/out/popart_impala_scales.png`.\n\n"
        + "\n".join(lines)
        + "\n\nSpread of the median final evaluation across the reward scales, (max - min) / max: "
        + "; ".join(spread)
        + ".\n\n"
        f"Rewards multiplied by the scale inside the training env only; evaluation (every {data['eval_every']:,} steps and "
        "at the end, 10 deterministic episodes) on the unscaled env. popart_impala: our `CartPole-v1` entry (in-process "
        "runner); impala: the same with `popart=False`; ppo: rl-zoo3's `ppo.yml` entry (no normalisation). Headline: the "
        "first evaluation at or above 475 after which every later one stays there (BENCHMARKS.md)."
    )
    update_results_section("bench_popart_impala_scales", section)
    return section + "\n\n" + cartpole_report(runs, info, data)


def cartpole_report(runs: list[dict[str, Any]], info: dict[str, Any], data: dict[str, Any]) -> str:
    """PopArt-IMPALA beside PPO (rl-zoo3) on CartPole-v1 at reward scale 1: steps and training seconds to 475."""
    unscaled = [r for r in runs if r["scale"] == 1.0]
    lines = [
        "| algorithm | reached 475 and stayed | env steps, median (range) | training s to it, median (range) | first "
        "crossing, env steps median | final evaluation, median (range) | training s, whole budget |",
        "|---|---|---|---|---|---|---|",
    ]
    medians: dict[str, tuple[float, float]] = {}
    for algo in dict.fromkeys(r["algo"] for r in unscaled):
        mine = [r for r in unscaled if r["algo"] == algo]
        stayed = [r for r in mine if r["stayed_steps"] is not None]
        cells, stayed_medians = stayed_cells(mine)
        if stayed_medians is not None:
            medians[algo] = stayed_medians
        firsts = [r["first_steps"] for r in mine if r["first_steps"] is not None]
        first = f"{statistics.median(firsts):,.0f} ({len(firsts)}/{len(mine)})" if firsts else "never"
        lines.append(
            f"| {algo} | {len(stayed)}/{len(mine)} | {cells} | {first} | {median_range([r['final'] for r in mine], '.1f')} "
            f"| {median_range([r['train_seconds'] for r in mine], '.0f')} |"
        )
    ratios = [
        f"{ours}/ppo: steps {medians[ours][0] / medians['ppo'][0]:.2f}, wall-clock {medians[ours][1] / medians['ppo'][1]:.2f}"
        for ours in ("popart_impala", "impala")
        if ours in medians and "ppo" in medians
    ]
    section = (
        "## PopArt-IMPALA on CartPole-v1 beside PPO: reached 475 and stayed\n\n"
        f"The reward-scale-1 runs of `{data['command']}` ({info['date']}; see the section above for the settings).\n\n"
        + "\n".join(lines)
        + f"\n\n{STAYED_MEDIAN_NOTE}"
        + (" Ratios of medians (lower is better): " + "; ".join(ratios) + "." if ratios else "")
    )
    update_results_section("bench_popart_impala_cartpole", section)
    return section


def plot_scales(runs: list[dict[str, Any]], algos: list[str], scales: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(algos), figsize=(4.5 * len(algos), 3.8), sharey=True, squeeze=False)
    colours = dict(zip(scales, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False))
    for ax, algo in zip(axes[0], algos, strict=True):
        for scale in scales:
            for k, run in enumerate(r for r in runs if r["algo"] == algo and r["scale"] == scale):
                steps, _, returns = zip(*run["curve"], strict=True)
                ax.plot(steps, returns, color=colours.get(scale), alpha=0.7, label=f"x{scale:g}" if k == 0 else None)
        ax.axhline(THRESHOLD, color="grey", linestyle="--", linewidth=1)
        ax.set_title(algo)
        ax.set_xlabel("environment steps")
        ax.legend(title="reward scale")
    axes[0][0].set_ylabel("evaluation return, unscaled (10 episodes)")
    fig.suptitle("CartPole-v1 with scaled rewards: one line per seed")
    fig.tight_layout()
    fig.savefig(OUT_DIR / "popart_impala_scales.png", dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------- throughput
def throughput_model(algo: str, vec_env_cls: type[DummyVecEnv | SubprocVecEnv]) -> Any:
    """A model on Pong with 8 envs (the envs stepped by ``vec_env_cls``) and the Nature CNN torso."""
    env = paper_atari_env(n_envs=8, screen_size=84, vec_env_cls=vec_env_cls)
    if algo == "popart_impala":
        return PopArtIMPALA("CnnPolicy", env, policy_kwargs={"torso": "nature"}, seed=0)
    cls = PPO if algo == "ppo" else A2C
    _, _, kwargs = read_hyperparams(algo, "atari", allow=("env_wrapper", "frame_stack"))
    for key in ("env_wrapper", "frame_stack"):
        kwargs.pop(key, None)  # applied by paper_atari_env
    return cls(env=env, seed=0, **kwargs)  # rl-zoo3's CnnPolicy: the Nature CNN


def throughput_rate(algo: str, vec_env_cls: type[DummyVecEnv | SubprocVecEnv], steps: int) -> float:
    """Environment steps per second of one ``learn(steps)`` from a new model (start-up included)."""
    model = throughput_model(algo, vec_env_cls)
    start = time.perf_counter()
    model.learn(steps)
    rate = model.num_timesteps / (time.perf_counter() - start)
    model.env.close()
    return rate


def throughput_main(args: argparse.Namespace) -> None:
    vec_envs = {"DummyVecEnv": DummyVecEnv, "SubprocVecEnv": SubprocVecEnv}
    configs = [("popart_impala", "DummyVecEnv", threads) for threads in args.threads]
    configs += [(algo, name, threads) for algo in ("ppo", "a2c") for name in vec_envs for threads in args.threads]
    rates: dict[tuple[str, str, int], list[float]] = {config: [] for config in configs}
    for repeat in range(args.repeats):
        order = configs[repeat % len(configs) :] + configs[: repeat % len(configs)]
        for algo, name, threads in order:
            th.set_num_threads(threads)
            rate = throughput_rate(algo, vec_envs[name], args.steps)
            rates[algo, name, threads].append(rate)
            print(f"  repeat {repeat}: {algo} {name} {threads} thread(s) {rate:.1f} env steps/s", flush=True)

    def best(algo: str, name: str) -> tuple[int, list[float]]:
        """The thread count with the highest median rate, and its rates."""
        threads = max(args.threads, key=lambda n: statistics.median(rates[algo, name, n]))
        return threads, rates[algo, name, threads]

    ours_threads, ours = best("popart_impala", "DummyVecEnv")
    results = []
    for algo in ("ppo", "a2c"):
        for name in vec_envs:
            peer_threads, peer = best(algo, name)
            results.append(
                PairResult(
                    f"Pong, 8 envs, learn({args.steps:,})",
                    "env steps/s",
                    True,
                    f"PopArt-IMPALA (actor process, {ours_threads} learner thread(s))",
                    f"{algo.upper()} ({name}, {peer_threads} thread(s))",
                    ours=list(ours),
                    peer=list(peer),
                )
            )
    every = "; ".join(
        f"{algo} {name} {threads} thread(s): {statistics.median(values):.0f}"
        for (algo, name, threads), values in rates.items()
    )
    notes = (
        f"Each value: environment steps per second of one `learn({args.steps:,})` from a new model (network set-up "
        "excluded, actor start-up and every update included), "
        f"{args.repeats} repeats with the {len(configs)} configurations taking turns (the order rotates each repeat). "
        f"Every side ran with torch threads {' and '.join(map(str, args.threads))}; each row shows the side's faster "
        f"setting (medians of all: {every}). Env: ALE/Pong-v5, AtariWrapper (84x84 grey, 4-frame skip with "
        "max-pooling, no reward clipping, no life-loss ends), 4 stacked frames, 8 envs. PopArt-IMPALA: its defaults "
        "(unrolls of 20, batches of 32 unrolls, RMSProp, one actor process stepping the 8 envs while the learner "
        "trains) with `policy_kwargs=dict(torso='nature')`; PPO and A2C: rl-zoo3's `atari` entries (PPO: n_steps 128, "
        "4 epochs of minibatches of 256; A2C: n_steps 5, RMSprop) at 8 envs, their `CnnPolicy` (the Nature CNN). "
        "The ratio pairs each repeat's PopArt-IMPALA run with the peer's run of the same repeat."
    )
    print(
        write_outputs(
            "bench_popart_impala_throughput",
            "PopArt-IMPALA throughput on Pong beside PPO and A2C",
            results,
            notes,
            extra={"rates": {f"{a} {n} {t}": v for (a, n, t), v in rates.items()}, "steps": args.steps},
        )
    )


# -------------------------------------------------------------------------------------------------------- multi-task
def minatar_eval_env(game: str, seed: int, multitask: bool) -> Any:
    """
    Ten envs of one game for evaluation, as its model sees it: the game itself for a single-task model, the game in the
    multi-task set's common spaces (``sb3_frontier/MinAtarMultiTask-v0``) for the multi-task one; episodes capped at
    10,000 steps (MinAtar's games have no time limit of their own).
    """
    limit = {"wrapper_class": TimeLimit, "wrapper_kwargs": {"max_episode_steps": 10_000}}
    if multitask:
        env_kwargs = {"task": MINATAR_GAMES.index(game)}
        return make_vec_env(MULTITASK_ID, n_envs=10, seed=seed + 10_000, env_kwargs=env_kwargs, **limit)  # type: ignore[arg-type]
    return make_vec_env(game, n_envs=10, seed=seed + 10_000, **limit)  # type: ignore[arg-type]


def run_minatar(games: tuple[str, ...], steps_per_task: int, seed: int, evaluations: int) -> dict[str, Any]:
    """
    Train one model on ``games`` (one game: single-task, its zoo entry; several: the multi-task zoo entry) for
    ``steps_per_task`` frames per game; evaluate each game ``evaluations`` times along the way (10 episodes each).
    """
    th.set_num_threads(1)
    register_envs()
    multitask = len(games) > 1
    n_envs, _, kwargs = read_hyperparams("popart_impala", MULTITASK_ID if multitask else games[0])
    if multitask:
        env = make_multitask_vec_env(games, n_envs_per_task=n_envs // len(games), seed=seed)
    else:
        env = make_vec_env(games[0], n_envs=n_envs, seed=seed)
    budget = steps_per_task * len(games)
    # One core per run: ``--jobs`` runs side by side, each acting and learning in its own process.
    kwargs["runner"] = "in-process"
    model = PopArtIMPALA(env=env, seed=seed, **kwargs)
    curves = {game: EvaluationCurve(minatar_eval_env(game, seed, multitask), budget // evaluations) for game in games}
    start = time.perf_counter()
    model.learn(budget, callback=CallbackList([curve.make() for curve in curves.values()]))
    seconds = time.perf_counter() - start
    for game, curve in curves.items():
        print(f"{'multi-task' if multitask else 'single-task'} {game}: {curve.curve}", flush=True)
    return {
        "model": "multi-task" if multitask else "single-task",
        "games": list(games),
        "n_envs": n_envs,
        "budget": budget,
        "seconds_with_evaluation": seconds,
        "curves": {game: curve.curve for game, curve in curves.items()},
    }


def _run_minatar(task: tuple[tuple[str, ...], int, int, int]) -> dict[str, Any]:
    return run_minatar(*task)


def multitask_main(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    seeds = range(args.seed, args.seed + args.seeds)
    tasks = [(MINATAR_GAMES, args.steps_per_task, seed, args.evaluations) for seed in seeds]
    tasks += [((game,), args.steps_per_task, seed, args.evaluations) for seed in seeds for game in MINATAR_GAMES]
    runs = _map(_run_minatar, tasks, args.jobs)
    for run, (_, _, seed, _) in zip(runs, tasks, strict=True):
        run["seed"] = seed
    payload = {
        "environment": environment_info(),
        "command": command_line("benchmarks.bench_popart_impala", argv),
        "steps_per_task": args.steps_per_task,
        "seeds": list(seeds),
        "jobs": args.jobs,
        "runs": runs,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "popart_impala_multitask.json").write_text(json.dumps(payload, indent=2))
    print(multitask_report())


def multitask_report() -> str:
    """The plot and the results.md section from the multi-task JSON."""
    data = json.loads((OUT_DIR / "popart_impala_multitask.json").read_text())
    runs, info = data["runs"], data["environment"]
    multi = [r for r in runs if r["model"] == "multi-task"]
    single = {game: [r for r in runs if r["games"] == [game]] for game in multi[0]["games"]}

    def finals(game: str, group: list[dict[str, Any]]) -> list[float]:
        return [r["curves"][game][-1][2] for r in group]

    lines = [
        "| game | multi-task model: final evaluation, median (range) | single-task models: final, median (range) "
        "| medians, multi / single | finals per seed, multi; single |",
        "|---|---|---|---|---|",
    ]
    for game, group in single.items():
        m, s = finals(game, multi), finals(game, group)
        ratio = f"{statistics.median(m) / statistics.median(s):.2f}" if statistics.median(s) > 0 else "-"
        per_seed = ", ".join(f"{v:.1f}" for v in m) + "; " + ", ".join(f"{v:.1f}" for v in s)
        lines.append(f"| {game} | {median_range(m, '.2f')} | {median_range(s, '.2f')} | {ratio} | {per_seed} |")
    plot_multitask(multi, single)
    seconds_single = [r["seconds_with_evaluation"] for group in single.values() for r in group]
    section = (
        "## PopArt-IMPALA multi-task on three MinAtar games beside one model per game\n\n"
        f"Command: `{data['command']}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, one torch "
        f"thread per run (in-process runner), {data['jobs']} run(s) at a time. Raw curves: "
        "`benchmarks/out/popart_impala_multitask.json`; plot: `benchmarks/out/popart_impala_multitask.png`.\n\n"
        + "\n".join(lines)
        + f"\n\nEqual frames per game: {data['steps_per_task']:,} for each single-task model, "
        f"{multi[0]['budget']:,} for the multi-task model ({len(multi[0]['games'])} games at once); seeds "
        f"{', '.join(map(str, data['seeds']))}. Multi-task: the `sb3_frontier/MinAtarMultiTask-v0` entry of "
        f"`sb3_frontier/zoo_configs/popart_impala.yml` ({multi[0]['n_envs']} envs, one value output and one set of "
        "PopArt statistics per game, boards padded to the most channels, MinAtar's six shared actions); single-task: "
        "each game's own entry ("
        + ", ".join(f"{group[0]['n_envs']} envs" for group in single.values())
        + ", the game's minimal action set). Evaluation: 10 deterministic episodes (capped at 10,000 steps) of each "
        "game, several times along the way and at the end. Wall-clock with evaluation, median: multi-task "
        f"{statistics.median(r['seconds_with_evaluation'] for r in multi):.0f} s; single-task "
        f"{statistics.median(seconds_single):.0f} s."
    )
    update_results_section("bench_popart_impala_multitask", section)
    return section


def plot_multitask(multi: list[dict[str, Any]], single: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(single), figsize=(4.5 * len(single), 3.8), squeeze=False)
    for ax, (game, group) in zip(axes[0], single.items(), strict=True):
        for label, runs, colour in (("multi-task", multi, "tab:purple"), ("single-task", group, "tab:blue")):
            for i, run in enumerate(runs):
                steps, _, returns = zip(*run["curves"][game], strict=True)
                per_game = [step / len(run["games"]) for step in steps]  # frames of this game
                ax.plot(per_game, returns, color=colour, marker="o", alpha=0.7, label=label if i == 0 else None)
        ax.set_title(game)
        ax.set_xlabel("frames of this game")
        ax.legend()
    axes[0][0].set_ylabel("evaluation return (10 episodes)")
    fig.tight_layout()
    fig.savefig(OUT_DIR / "popart_impala_multitask.png", dpi=110)
    plt.close(fig)


def _map(fn: Callable[[Any], dict[str, Any]], tasks: list[Any], jobs: int) -> list[dict[str, Any]]:
    """``fn`` over ``tasks``, ``jobs`` at a time in forked worker processes (in this process for one job)."""
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(fn, tasks))
    return [fn(task) for task in tasks]


# -------------------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="section")
    scales = sub.add_parser("scales", help="reward-scale invariance and CartPole beside PPO")
    scales.add_argument("--seeds", type=int, default=3)
    scales.add_argument("--scales", type=float, nargs="+", default=[0.001, 1.0, 1000.0])
    scales.add_argument("--algos", nargs="+", default=list(SCALE_ALGOS), choices=list(SCALE_ALGOS))
    scales.add_argument("--eval-every", type=int, default=5000)
    scales.add_argument("--jobs", type=int, default=1)
    scales.add_argument("--report-only", action="store_true")
    throughput = sub.add_parser("throughput", help="Pong env steps/s beside PPO and A2C")
    throughput.add_argument("--steps", type=int, default=12_288)
    throughput.add_argument("--repeats", type=int, default=3)
    throughput.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to try per side")
    multitask = sub.add_parser("multitask", help="three MinAtar games: one model beside one per game")
    multitask.add_argument("--steps-per-task", type=int, default=300_000)
    multitask.add_argument("--seeds", type=int, default=3)
    multitask.add_argument("--seed", type=int, default=0, help="the first seed")
    multitask.add_argument("--evaluations", type=int, default=5)
    multitask.add_argument("--jobs", type=int, default=1)
    multitask.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if args.section is None:  # every section with its defaults (``make bench``)
        for section in ("scales", "throughput", "multitask"):
            main([section])
        return
    if args.section == "scales":
        print(scales_report()) if args.report_only else scales_main(args, argv)
    elif args.section == "throughput":
        throughput_main(args)
    else:
        print(multitask_report()) if args.report_only else multitask_main(args, argv)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    gym.logger.min_level = 40
    main()
