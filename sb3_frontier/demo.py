"""``make demo``: train MuZero on CartPole-v1 with our zoo config and print its deterministic evaluation.

python -m sb3_frontier.demo [--steps N] [--seed 0]

Trains for the zoo entry's budget (``n_timesteps`` of ``CartPole-v1`` in ``sb3_frontier/zoo_configs/muzero.yml``)
unless ``--steps`` says otherwise, then plays 10 deterministic evaluation episodes on fresh environments. CartPole-v1
is solved at an evaluation mean of 475 (episodes last at most 500 steps).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_frontier import MuZero
from sb3_frontier.zoo import read_hyperparams

ENV_ID = "CartPole-v1"
#: CartPole-v1's reward threshold (gymnasium's ``spec.reward_threshold``).
SOLVED = 475.0


def main(argv: Sequence[str] | None = None) -> float:
    """
    Train, evaluate (10 deterministic episodes) and print the result.

    :param argv: command-line arguments
    :return: the mean evaluation return
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="environment steps of training (default: the zoo budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    th.set_num_threads(1)  # small networks and the search run fastest on one thread

    n_envs, budget, kwargs = read_hyperparams("muzero", ENV_ID)
    steps = budget if args.steps is None else args.steps
    print(f"Training MuZero on {ENV_ID} for {steps:,} environment steps ({n_envs} envs, seed {args.seed})...")
    model = MuZero(env=make_vec_env(ENV_ID, n_envs=n_envs, seed=args.seed), seed=args.seed, **kwargs)
    start = time.perf_counter()
    model.learn(steps, progress_bar=not args.no_progress)
    seconds = time.perf_counter() - start
    eval_env = make_vec_env(ENV_ID, n_envs=10, seed=args.seed + 10_000)
    rewards, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True, return_episode_rewards=True)
    mean, std = float(np.mean(rewards)), float(np.std(rewards))
    verdict = "solved" if mean >= SOLVED else f"not solved (CartPole-v1 is solved at {SOLVED:.0f})"
    search = "Gumbel MuZero's" if model.search_algorithm == "gumbel" else "MuZero's"
    print(
        f"MuZero ({search} search, {model.num_simulations} simulations) on {ENV_ID}: evaluation return {mean:.1f} "
        f"+/- {std:.1f} (10 deterministic episodes, maximum 500): "
        f"{verdict}; trained for {model.num_timesteps:,} environment steps and {model._n_updates:,} updates in "
        f"{seconds:.0f} s"
    )
    return mean


if __name__ == "__main__":
    main()
