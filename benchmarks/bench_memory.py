"""Tasks that need memory: R2D2 beside sb3-contrib's RecurrentPPO and a memoryless value learner, side by side.

    python -m benchmarks.bench_memory [--task cartpole-novel | cue-memory] [--seeds 3] [--algos r2d2 recurrentppo qrdqn]
        [--jobs 2] [--r2d2-kwargs JSON] [--r2d2-budget N] [--seed-list S ...]

- ``cartpole-novel``: CartPoleNoVel-v1 (rl-zoo3's CartPole without the velocities: memory needed). Headline:
  environment steps and training seconds until the deterministic evaluation mean (10 episodes) reaches 475 **and
  stays there** to the end of the budget (BENCHMARKS.md). R2D2: the ``CartPoleNoVel-v1`` entry of
  ``sb3_frontier/zoo_configs/r2d2.yml``; RecurrentPPO: rl-zoo3's tuned ``ppo_lstm.yml`` entry (with its VecNormalize:
  observations and rewards normalised in training, the evaluation env sharing the observation statistics);
  QR-DQN: rl-zoo3's ``qrdqn.yml`` CartPole-v1 entry (no memory) on the same env.
- ``cue-memory``: ``sb3_frontier/CueMemory-v0`` (recall a cue after 30 blank steps, return +1 or -1). Headline:
  reached 0.9 and stayed (deterministic evaluation over 50 episodes); a memoryless policy scores 0 at best.
  R2D2: the ``sb3_frontier/CueMemory-v0`` entry of our r2d2.yml; RecurrentPPO: rl-zoo3's CartPoleNoVel-v1 settings
  without normalisation; DQN: SB3's DQN with rl-zoo3's CartPole-v1 settings.

Every run trains for its whole budget (its zoo entry's ``n_timesteps``: R2D2's in our r2d2.yml, RecurrentPPO's
100,000 in ppo_lstm.yml, QR-DQN's and DQN's 50,000 for CartPole-v1) and is evaluated every ``--eval-every`` steps;
evaluation time is excluded from the training wall-clock. One torch thread per run; ``--jobs 2`` runs two at a time
(one per core).

A variant of R2D2's entry (tuning): ``--r2d2-kwargs '{"burn_in": 20}'`` overrides entries of the zoo entry (a
``policy_kwargs`` dict key by key), ``--r2d2-budget 40000`` its budget (the learning-rate schedule then spans the
shorter budget), ``--seed-list 4 5 7`` runs those seeds only. A variant is reported on stdout and in
``benchmarks/out/memory_<task>_variant.json``; it does not replace the headline in results.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)
import torch as th
from sb3_contrib import QRDQN, RecurrentPPO
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from benchmarks.common import (
    OUT_DIR,
    STAYED_MEDIAN_NOTE,
    EvaluationCurve,
    command_line,
    environment_info,
    median_range,
    stayed_cells,
    update_results_section,
)
from sb3_frontier import R2D2
from sb3_frontier.wrappers import VecPreviousActionReward
from sb3_frontier.zoo import read_hyperparams

#: task -> env id, threshold, evaluation episodes (each algorithm trains for its zoo entry's budget)
TASKS: dict[str, dict[str, Any]] = {
    "cartpole-novel": {"env": "CartPoleNoVel-v1", "threshold": 475.0, "episodes": 10},
    "cue-memory": {"env": "sb3_frontier/CueMemory-v0", "threshold": 0.9, "episodes": 50},
}
OURS = ("r2d2",)


def r2d2_variant(kwargs: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """R2D2's zoo keyword arguments with ``overrides`` applied (``policy_kwargs`` merged key by key, schedules such as
    ``"lin_2e-3"`` converted as in the zoo)."""
    if not overrides:
        return kwargs
    from rl_zoo3.exp_manager import ExperimentManager

    overrides = ExperimentManager._preprocess_schedules(dict(overrides))
    merged = {**kwargs}
    if "policy_kwargs" in overrides:
        merged["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **overrides.pop("policy_kwargs")}
    merged.update(overrides)
    return merged


def build(
    task: str, algo: str, seed: int, r2d2_kwargs: dict[str, Any] | None = None, r2d2_budget: int | None = None
) -> tuple[Any, Any, int]:
    """The model, its evaluation env and its budget (R2D2's zoo entry changed by ``r2d2_kwargs``/``r2d2_budget``)."""
    env_id = TASKS[task]["env"]
    if algo == "r2d2":
        n_envs, budget, kwargs = read_hyperparams("r2d2", env_id, allow=("normalize", "vec_env_wrapper"))
        kwargs = r2d2_variant(kwargs, r2d2_kwargs)
        budget = budget if r2d2_budget is None else r2d2_budget
        kwargs.pop("vec_env_wrapper", None)  # VecPreviousActionReward, added below
        normalize = kwargs.pop("normalize", None)
        # The zoo's order: the previous action and reward are added first, then VecNormalize (when the entry asks).
        env = VecPreviousActionReward(make_vec_env(env_id, n_envs=n_envs, seed=seed))
        eval_env = VecPreviousActionReward(make_vec_env(env_id, n_envs=10, seed=seed + 10_000))
        if normalize:
            options = eval(normalize) if isinstance(normalize, str) else {}
            env = VecNormalize(env, gamma=kwargs["gamma"], **options)
            eval_env = VecNormalize(eval_env, training=False, gamma=kwargs["gamma"], **{**options, "norm_reward": False})
        return R2D2(env=env, seed=seed, **kwargs), eval_env, budget
    if algo == "recurrentppo":
        n_envs, budget, kwargs = read_hyperparams("ppo_lstm", "CartPoleNoVel-v1", allow=("normalize",))
        normalize = kwargs.pop("normalize")
        env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
        eval_env = make_vec_env(env_id, n_envs=10, seed=seed + 10_000)
        if task == "cartpole-novel" and normalize:  # the zoo entry normalises observations and rewards
            env = VecNormalize(env, gamma=kwargs["gamma"])
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False, gamma=kwargs["gamma"])
        return RecurrentPPO(env=env, seed=seed, **kwargs), eval_env, budget
    cls = QRDQN if algo == "qrdqn" else DQN
    n_envs, budget, kwargs = read_hyperparams(algo, "CartPole-v1")
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(env_id, n_envs=10, seed=seed + 10_000)
    return cls(env=env, seed=seed, **kwargs), eval_env, budget


def run_one(
    task: str,
    algo: str,
    seed: int,
    eval_every: int,
    r2d2_kwargs: dict[str, Any] | None = None,
    r2d2_budget: int | None = None,
) -> dict[str, Any]:
    th.set_num_threads(1)
    model, eval_env, budget = build(task, algo, seed, r2d2_kwargs, r2d2_budget)
    curve = EvaluationCurve(eval_env, eval_every, TASKS[task]["episodes"])
    model.learn(budget, callback=curve.make())
    summary = curve.summary(TASKS[task]["threshold"])
    print(
        f"{task} {algo} seed {seed}: stayed from {summary['stayed_steps']}, first {summary['first_steps']}, "
        f"final {curve.final:.2f}",
        flush=True,
    )
    return {"algo": algo, "seed": seed, "budget": budget, **summary}


def _task(args: tuple[Any, ...]) -> dict[str, Any]:
    return run_one(*args)


def _json_name(task: str, variant: bool) -> str:
    return f"memory_{task}_variant.json" if variant else f"memory_{task}.json"


def report(task: str, variant: bool = False) -> str:
    data = json.loads((OUT_DIR / _json_name(task, variant)).read_text())
    runs, info, spec = data["runs"], data["environment"], TASKS[task]
    algos = list(dict.fromkeys(r["algo"] for r in runs))
    lines = [
        f"| algorithm | reached {spec['threshold']:g} and stayed | env steps, median (range) | training s to it, median "
        "(range) | final evaluation, median (range) | training s, whole budget | budget |",
        "|---|---|---|---|---|---|---|",
    ]
    medians: dict[str, tuple[float, float]] = {}
    for algo in algos:
        mine = [r for r in runs if r["algo"] == algo]
        stayed = [r for r in mine if r["stayed_steps"] is not None]
        cells, stayed_medians = stayed_cells(mine)
        if stayed_medians is not None:
            medians[algo] = stayed_medians
        finals = median_range([r["final"] for r in mine], ".2f")
        train = median_range([r["train_seconds"] for r in mine], ".0f")
        lines.append(f"| {algo} | {len(stayed)}/{len(mine)} | {cells} | {finals} | {train} | {mine[0]['budget']:,} |")
    ratios = [
        f"{ours}/{peer}: steps {medians[ours][0] / medians[peer][0]:.2f}, wall-clock {medians[ours][1] / medians[peer][1]:.2f}"
        for ours in OURS
        if ours in medians
        for peer in medians
        if peer not in OURS
    ]
    per_seed = []
    for algo in algos:
        cells = []
        for r in sorted((r for r in runs if r["algo"] == algo), key=lambda r: r["seed"]):
            if r["stayed_steps"] is not None:
                cells.append(f"seed {r['seed']}: {r['stayed_steps']:,} ({r['stayed_seconds']:.0f} s)")
            else:
                cells.append(f"seed {r['seed']}: never (final {r['final']:.2f})")
        per_seed.append(f"- {algo}: " + "; ".join(cells))
    section = (
        f"## Memory: {spec['env']}, reached {spec['threshold']:g} and stayed there\n\n"
        f"Command: `{data['command']}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, one torch "
        f"thread per run, {data['jobs']} run(s) at a time. Raw curves: `benchmarks/out/{_json_name(task, variant)}`.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(per_seed)
        + "\n\n"
        + ("Ratios of medians (lower is better): " + "; ".join(ratios) + ".\n\n" if ratios else "")
        + f"Deterministic evaluation every {data['eval_every']:,} environment steps ({spec['episodes']} episodes) and at "
        "the end; headline: the first evaluation at or above the threshold after which every later one stays there "
        f"(BENCHMARKS.md). {STAYED_MEDIAN_NOTE} Configurations: see the module docstring of "
        "`benchmarks/bench_memory.py`."
    )
    if not variant:
        update_results_section(f"bench_memory_{task}", section)
    return section


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole-novel", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--seed-list", type=int, nargs="+", default=None, help="these seeds instead of 0 .. --seeds - 1 (variants only)"
    )
    parser.add_argument(
        "--algos", nargs="+", default=["r2d2", "recurrentppo", "qrdqn"], choices=["r2d2", "recurrentppo", "qrdqn", "dqn"]
    )
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--r2d2-kwargs", type=json.loads, default=None, help="JSON dict overriding R2D2's zoo entry")
    parser.add_argument("--r2d2-budget", type=int, default=None, help="R2D2's budget instead of its zoo entry's")
    args = parser.parse_args(argv)
    variant = bool(args.r2d2_kwargs) or args.r2d2_budget is not None or args.seed_list is not None
    seeds = range(args.seeds) if args.seed_list is None else args.seed_list
    if not args.report_only:
        tasks = [
            (args.task, algo, seed, args.eval_every, args.r2d2_kwargs, args.r2d2_budget)
            for seed in seeds
            for algo in args.algos
        ]
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("fork")) as pool:
                runs = list(pool.map(_task, tasks))
        else:
            runs = [run_one(*task) for task in tasks]
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": environment_info(),
            "command": command_line("benchmarks.bench_memory", argv),
            "eval_every": args.eval_every,
            "jobs": args.jobs,
            "runs": runs,
        }
        (OUT_DIR / _json_name(args.task, variant)).write_text(json.dumps(payload, indent=2))
    print(report(args.task, variant))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
