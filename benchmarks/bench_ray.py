"""The Ray backend beside the local-process one: whole-loop throughput and transport cost, on this machine.

    python -m benchmarks.bench_ray [--repeats 3] [--r2d2-steps 4000] [--impala-steps 12288] [--muzero-steps 4000]
                                   [--transport-steps 200]

1. Environment steps/s of ``learn(N)`` from a new model, ``runner="ray"`` beside ``runner="processes"``, the same
   actor count (one actor stepping the envs while the learner trains on the other core) and settings:
   R2D2 ``CnnLstmPolicy`` on Pong (bench_r2d2's runner settings, 4 envs) and PopArt-IMPALA ``CnnPolicy`` with the
   Nature CNN on Pong (bench_popart_impala's throughput settings, 8 envs). The local Ray instance is started once
   before the timings (as a cluster would be); actor start-up is inside both sides' timings. Goal: Ray within 20%.
2. MuZero Reanalyze (``REANALYZE_PRESET`` on the zoo's CartPole-v1 entry: Gumbel search at 8 simulations, 8 envs, batch
   256, two updates per VecEnv step): learner updates/s of ``learn(N)`` with one Reanalyze worker on Ray beside
   Reanalyze in the learner (self-play in-process on both sides), the same updates on the same samples' sizes.
3. Transport: milliseconds per actor step handed to the learner, for an actor that does nothing but hand over a
   precomputed step the size of an R2D2 Pong step (4 stacked 84x84 frames per env, 4 envs) and of a PopArt-IMPALA
   unroll (20 steps of 8 envs of such frames), through each backend, with no learner in the way.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray.cloudpickle
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from benchmarks.bench_atari import paper_atari_env
from benchmarks.bench_r2d2 import PONG_RUNNER, loop_rate
from benchmarks.common import Pair, run_pairs, write_outputs
from sb3_frontier import R2D2, MuZero, PopArtIMPALA
from sb3_frontier.algorithms.muzero import REANALYZE_PRESET
from sb3_frontier.common.runners import Actor, ActorStep, ProcessRunner, RayRunner, VecEnvCopy
from sb3_frontier.common.runners.ray_runner import ensure_ray
from sb3_frontier.zoo import read_hyperparams

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the transport actors travel by value

#: Bytes of one actor step: R2D2 on Pong (4 envs, 4 stacked 84x84 frames, once each) and an IMPALA unroll (20 x 8).
FRAME = 84 * 84 * 4
PAYLOADS = {"R2D2 Pong step (4 envs)": 4 * FRAME, "PopArt-IMPALA Pong unroll (20 steps x 8 envs)": 20 * 8 * FRAME}


def make_r2d2(runner: str) -> R2D2:
    env = paper_atari_env(n_envs=4, screen_size=84)
    return R2D2("CnnLstmPolicy", env, runner=runner, runner_kwargs={"n_actors": 1}, seed=0, **PONG_RUNNER)


def make_impala(runner: str) -> PopArtIMPALA:
    env = paper_atari_env(n_envs=8, screen_size=84)
    return PopArtIMPALA(
        "CnnPolicy", env, policy_kwargs={"torso": "nature"}, runner=runner, runner_kwargs={"n_actors": 1}, seed=0
    )


def reanalyze_rate(steps: int, workers: int) -> Callable[[], float]:
    """Learner updates/s of MuZero Reanalyze on CartPole with ``workers`` Ray workers (0: in the learner)."""

    def measure() -> float:
        n_envs, _, kwargs = read_hyperparams("muzero", "CartPole-v1")
        extra = {"reanalyze_workers": workers} if workers else {}
        env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
        model = MuZero(env=env, seed=0, **{**kwargs, **REANALYZE_PRESET, **extra})
        start = time.perf_counter()
        model.learn(steps)
        rate = model._n_updates / (time.perf_counter() - start)
        assert model._n_updates > 0
        return rate

    return measure


class PayloadActor(Actor):
    """Hands over the same precomputed step again and again (the transport alone)."""

    def __init__(self, env: VecEnv, nbytes: int) -> None:
        self.n_envs = env.num_envs
        self.network = th.nn.Linear(1, 1)
        self.payload = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        self.zeros = np.zeros(self.n_envs)

    def reset(self, observations: Any | None = None) -> None:
        pass

    def step(self) -> ActorStep:
        return ActorStep([self.payload], self.zeros, self.zeros.astype(bool), [{}] * self.n_envs)


class PayloadFactory:
    def __init__(self, env: VecEnvCopy, nbytes: int) -> None:
        self.env, self.nbytes = env, nbytes

    def __call__(self, index: int) -> PayloadActor:
        return PayloadActor(self.env.build(index), self.nbytes)


def transport_ms(nbytes: int, steps: int, runner: str) -> Callable[[], float]:
    """Milliseconds per step the learner receives, after the actor's first step (start-up excluded)."""

    def measure() -> float:
        factory = PayloadFactory(VecEnvCopy(make_vec_env("CartPole-v1", n_envs=1), 0), nbytes)
        parameters = th.nn.Linear(1, 1).state_dict()
        backend = RayRunner if runner == "ray" else ProcessRunner
        instance = backend(factory, 1, parameters, 1, sync_every=10**9)
        try:
            instance.reset()
            instance.step()
            start = time.perf_counter()
            received = 0
            while received < steps:
                received += len(instance.step())
            return 1e3 * (time.perf_counter() - start) / received
        finally:
            instance.close()

    return measure


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--r2d2-steps", type=int, default=4000)
    parser.add_argument("--impala-steps", type=int, default=12_288)
    parser.add_argument("--muzero-steps", type=int, default=4000)
    parser.add_argument("--transport-steps", type=int, default=200)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    start = time.perf_counter()
    ensure_ray()
    ray_start = time.perf_counter() - start
    loops = run_pairs(
        [
            Pair(
                f"R2D2 CnnLstmPolicy, Pong, 4 envs, learn({args.r2d2_steps:,})",
                loop_rate(make_r2d2, args.r2d2_steps, "ray"),
                loop_rate(make_r2d2, args.r2d2_steps, "processes"),
                "env steps/s",
                ours_label="runner='ray' (1 actor)",
                peer_label="runner='processes' (1 actor)",
            ),
            Pair(
                f"PopArt-IMPALA CnnPolicy, Pong, 8 envs, learn({args.impala_steps:,})",
                loop_rate(make_impala, args.impala_steps, "ray"),
                loop_rate(make_impala, args.impala_steps, "processes"),
                "env steps/s",
                ours_label="runner='ray' (1 actor)",
                peer_label="runner='processes' (1 actor)",
            ),
            Pair(
                f"MuZero Reanalyze, CartPole-v1 zoo entry, learn({args.muzero_steps:,})",
                reanalyze_rate(args.muzero_steps, 1),
                reanalyze_rate(args.muzero_steps, 0),
                "learner updates/s",
                ours_label="1 Reanalyze worker on Ray",
                peer_label="Reanalyze in the learner",
            ),
        ]
        + [
            Pair(
                f"transport of one {name}, {nbytes / 2**20:.2f} MiB",
                transport_ms(nbytes, args.transport_steps, "ray"),
                transport_ms(nbytes, args.transport_steps, "processes"),
                "ms per step",
                higher_is_better=False,
                ours_label="runner='ray'",
                peer_label="runner='processes'",
            )
            for name, nbytes in PAYLOADS.items()
        ],
        repeats=args.repeats,
        warmup=0,
    )
    print(
        write_outputs(
            "bench_ray",
            "Ray actors beside actor processes on this machine",
            loops,
            notes=(
                "Whole loop: `learn(N)` from a new model, timed as a whole (actor start-up and the first acting-only "
                "steps included), one actor stepping the envs with a CPU copy of the network while the learner trains, "
                "one torch thread per process. R2D2: "
                + ", ".join(f"`{k}={v}`" for k, v in PONG_RUNNER.items())
                + "; PopArt-IMPALA: its defaults with `policy_kwargs=dict(torso='nature')`. Ray: a local instance "
                f"(started once before the timings, in {ray_start:.1f} s), parameters through its object store, "
                "requests of 8 steps (R2D2) or one unroll (PopArt-IMPALA), 16 in flight. MuZero Reanalyze: 80% of each "
                "batch of 256 re-searched (~1,200 searches per update), the worker 2 batches ahead, updates/s over the "
                "whole `learn` (the acting-only steps before `learning_starts` included). Transport: an actor that hands "
                f"over a precomputed uint8 array, {args.transport_steps} steps after the first, no learner; the time "
                "per step the learner receives (serialising, copying and unpickling included)."
            ),
        )
    )


if __name__ == "__main__":
    main()
