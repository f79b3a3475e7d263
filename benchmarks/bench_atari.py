"""MuZero on Atari end to end: ``MuZero("CnnPolicy", ALE/Pong-v5 with the paper's preprocessing).learn(N)``.

Paper preprocessing (Schrittwieser et al. 2020, Appendix F): no reward clipping (values and rewards go through h
and categorical supports instead), no episode end on a lost life, 96x96 grey frames, 4 stacked; ALE v5's sticky
actions are kept. Reports environment steps per second of the whole loop (search, acting, replay, training) beside
SB3's DQN on the same env and preprocessing (``CnnPolicy``, its default training frequency), as context.

    python -m benchmarks.bench_atari [--steps 2000] [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import ale_py
import gymnasium as gym
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecTransposeImage

from benchmarks.common import Pair, run_pairs, write_outputs
from sb3_frontier import MuZero

gym.register_envs(ale_py)


def paper_atari_env(env_id: str = "ALE/Pong-v5", n_envs: int = 4, seed: int = 0) -> VecEnv:
    """ALE env with MuZero's preprocessing: 96x96, 4 frames, no reward clipping, no life-loss episode ends."""
    env = make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=dict(frameskip=1),  # AtariWrapper skips 4 frames (max-pooled) itself
        wrapper_class=AtariWrapper,
        wrapper_kwargs=dict(clip_reward=False, terminal_on_life_loss=False, screen_size=96),
    )
    return VecTransposeImage(VecFrameStack(env, n_stack=4))


def muzero_rate(steps: int, n_envs: int, device: str, num_simulations: int) -> Callable[[], float]:
    def measure() -> float:
        env = paper_atari_env(n_envs=n_envs)
        model = MuZero(
            "CnnPolicy",
            env,
            learning_starts=steps // 4,
            batch_size=64,
            num_simulations=num_simulations,
            buffer_size=20_000,
            device=device,
            seed=0,
        )
        start = time.perf_counter()
        model.learn(steps)
        rate = model.num_timesteps / (time.perf_counter() - start)
        assert model._n_updates > 0
        env.close()
        return rate

    return measure


def dqn_rate(steps: int, n_envs: int, device: str) -> Callable[[], float]:
    def measure() -> float:
        env = paper_atari_env(n_envs=n_envs)
        model = DQN("CnnPolicy", env, learning_starts=steps // 4, buffer_size=20_000, batch_size=32, device=device, seed=0)
        start = time.perf_counter()
        model.learn(steps)
        rate = model.num_timesteps / (time.perf_counter() - start)
        env.close()
        return rate

    return measure


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--simulations", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--name", default="bench_atari", help="results.md section / output file stem")
    args = parser.parse_args(argv)
    if args.threads > 0:
        th.set_num_threads(args.threads)
    device = ("cuda" if th.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pairs = [
        Pair(
            f"Pong-v5 learn({args.steps}), {args.n_envs} envs, {device}",
            muzero_rate(args.steps, args.n_envs, device, args.simulations),
            dqn_rate(args.steps, args.n_envs, device),
            "env steps/s",
            ours_label=f"MuZero CnnPolicy, {args.simulations} simulations",
            peer_label="SB3 DQN CnnPolicy",
        )
    ]
    results = run_pairs(pairs, repeats=args.repeats, warmup=0)
    notes = (
        f"Whole training loop, {args.steps} environment steps, learning from step {args.steps // 4}; MuZero searches "
        f"every step of every env ({args.simulations} simulations, batch of {args.n_envs} roots) and trains with batches "
        f"of 64 five-step unrolls; DQN is SB3's with batch 32 and its default train_freq=4. Device: {device}; "
        f"torch threads: {th.get_num_threads()}. The ratio says how much the search costs against a model-free learner, "
        "not a defect."
    )
    print(write_outputs(args.name, f"MuZero on Atari (Pong-v5, paper preprocessing), {device}", results, notes))


if __name__ == "__main__":
    main()
