"""Overhead of our wrappers on a real ALE environment: steps/s with and without ``LifeLoss``, side by side.

Rows: ``LifeLoss(mode="roll")`` vs the bare env, and ``LifeLoss(mode="reset")`` vs SB3's ``EpisodicLifeEnv``
(the same semantics). Random actions with a fixed seed, episodes reset as they end.

    python -m benchmarks.bench_wrappers [--steps 20000] [--repeats 5] [--env ALE/Breakout-v5]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import ale_py
import gymnasium as gym
import numpy as np
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv

from benchmarks.common import Pair, run_pairs, timed_rate, write_outputs
from sb3_frontier.wrappers.life_loss import LifeLoss

gym.register_envs(ale_py)


def stepping_rate(make: Callable[[], gym.Env], steps: int, seed: int = 0) -> Callable[[], float]:
    """A measurement: steps/s of ``steps`` random-action steps of a fresh env."""

    def measure() -> float:
        env = make()
        env.reset(seed=seed)
        actions = np.random.default_rng(seed).integers(env.action_space.n, size=steps)  # type: ignore[attr-defined]

        def work() -> int:
            for action in actions:
                _, _, terminated, truncated, _ = env.step(int(action))
                if terminated or truncated:
                    env.reset()
            return steps

        rate = timed_rate(work)
        env.close()
        return rate

    return measure


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ALE/Breakout-v5")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 steps, 3 repeats")
    args = parser.parse_args(argv)
    steps, repeats = (2_000, 3) if args.quick else (args.steps, args.repeats)

    def bare() -> gym.Env:
        return gym.make(args.env)

    pairs = [
        Pair(
            f"{args.env} roll",
            stepping_rate(lambda: LifeLoss(bare(), mode="roll"), steps),
            stepping_rate(bare, steps),
            "steps/s",
            ours_label="LifeLoss(roll)",
            peer_label="bare env",
        ),
        Pair(
            f"{args.env} reset",
            stepping_rate(lambda: LifeLoss(bare(), mode="reset"), steps),
            stepping_rate(lambda: EpisodicLifeEnv(bare()), steps),
            "steps/s",
            ours_label="LifeLoss(reset)",
            peer_label="SB3 EpisodicLifeEnv",
        ),
    ]
    results = run_pairs(pairs, repeats=repeats)
    notes = (
        f"{steps:,} random-action steps per measurement, one env, one process; median of {repeats} repeats, "
        "ours and the peer alternating. A ratio of 1 means no measurable overhead."
    )
    print(write_outputs("bench_wrappers", "Wrapper overhead (LifeLoss on ALE)", results, notes))


if __name__ == "__main__":
    main()
