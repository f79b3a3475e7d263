"""``make demo``: train MuZero on CartPole-v1 (our zoo config) on a small budget and print its evaluation return.

python -m sb3_frontier.demo [--steps 12000] [--seed 0]
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


def main(argv: Sequence[str] | None = None) -> float:
    """
    Train, evaluate (10 deterministic episodes) and print the result.

    :param argv: command-line arguments
    :return: the mean evaluation return
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12_000, help="environment steps of training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    th.set_num_threads(1)  # small networks and the search run fastest on one thread

    n_envs, _, kwargs = read_hyperparams("muzero", ENV_ID)
    print(f"Training MuZero on {ENV_ID} for {args.steps:,} environment steps ({n_envs} envs, seed {args.seed})...")
    model = MuZero(env=make_vec_env(ENV_ID, n_envs=n_envs, seed=args.seed), seed=args.seed, **kwargs)
    start = time.perf_counter()
    model.learn(args.steps, progress_bar=not args.no_progress)
    seconds = time.perf_counter() - start
    eval_env = make_vec_env(ENV_ID, n_envs=10, seed=args.seed + 10_000)
    rewards, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True, return_episode_rewards=True)
    mean, std = float(np.mean(rewards)), float(np.std(rewards))
    print(
        f"MuZero on {ENV_ID}: evaluation return {mean:.1f} +/- {std:.1f} (10 deterministic episodes, maximum 500) "
        f"after {model.num_timesteps:,} environment steps and {model._n_updates:,} updates in {seconds:.0f} s"
    )
    return mean


if __name__ == "__main__":
    main()
