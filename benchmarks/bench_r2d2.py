"""R2D2's throughput: the learner, the whole loop in-process versus actor processes, Atari end to end, replay memory.

    python -m benchmarks.bench_r2d2 [--repeats 3] [--atari-steps 5000] [--threads 1] [--skip-atari] [--skip-learner]

1. Learner updates/s at batch 64 of 120-step sequences (80 trained after a burn-in of 40): ``"MlpLstmPolicy"`` on
   CartPoleNoVel-v1 (64 LSTM units) and ``"CnnLstmPolicy"`` on ALE/Pong-v5 (Nature CNN, 512 LSTM units: the paper's
   network), on a replay filled by the actors. No peer: the number sizes what one CPU learner consumes.
2. Environment steps/s of the whole loop (acting, replay, learning) with the actors in one actor process
   (``runner="processes"``) beside the same settings in-process, on CartPoleNoVel-v1 (the zoo entry) and on Pong
   (``CnnLstmPolicy``, 4 envs, one update of 16 sequences of 40 + 20 steps every 100 VecEnv steps). Goal: >= 1.5x.
3. ``R2D2("CnnLstmPolicy", Pong with the paper's preprocessing).learn(N)`` end to end beside sb3-contrib's QR-DQN
   (``CnnPolicy``) on the same envs and preprocessing (84x84 grey frames, 4 stacked, no reward clipping, no episode
   end on a lost life), both learning from the first quarter of the budget.
4. Replay memory: bytes per stored observation of the Atari replay (each observation stored once), the total for 1M
   observations, and the resident memory measured while filling a replay.
"""

from __future__ import annotations

import argparse
import functools
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)
import torch as th
from sb3_contrib import QRDQN
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.bench_atari import paper_atari_env
from benchmarks.common import Pair, run_pairs, write_outputs
from sb3_frontier import R2D2
from sb3_frontier.algorithms.r2d2.replay import SequenceReplay
from sb3_frontier.zoo import read_hyperparams

PONG_RUNNER = dict(
    learning_starts=1_000,
    batch_size=16,
    sequence_length=40,
    burn_in=20,
    overlap=20,
    buffer_size=20_000,
    train_freq=100,
    gradient_steps=1,
)


def learner_rate(policy: str, updates: int) -> Callable[[], float]:
    """Updates/s of ``train`` at batch 64 of 80 + 40-step sequences on a replay the actors filled."""
    if policy == "MlpLstmPolicy":
        env = make_vec_env("CartPoleNoVel-v1", n_envs=8, seed=0)
    else:
        env = paper_atari_env(n_envs=4, screen_size=84)
    model = R2D2(policy, env, learning_starts=10**9, buffer_size=20_000, seed=0)
    model.learn(600)  # acting only: fills the replay
    assert len(model.replay_buffer) > 0

    def measure() -> float:
        start = time.perf_counter()
        model.train(updates, 64)
        return updates / (time.perf_counter() - start)

    return measure


def loop_rate(make: Callable[[str], R2D2], steps: int, runner: str) -> Callable[[], float]:
    def measure() -> float:
        model = make(runner)
        start = time.perf_counter()
        model.learn(steps)
        rate = model.num_timesteps / (time.perf_counter() - start)
        assert model._n_updates > 0
        model.env.close()
        return rate

    return measure


def make_cartpole(runner: str) -> R2D2:
    n_envs, _, kwargs = read_hyperparams("r2d2", "CartPoleNoVel-v1", allow=("normalize", "vec_env_wrapper"))
    for key in ("normalize", "vec_env_wrapper"):  # throughput only: R2D2 adds the previous action and reward itself
        kwargs.pop(key, None)
    runner_kwargs = {"n_actors": 1} if runner == "processes" else None
    return R2D2(
        env=make_vec_env("CartPoleNoVel-v1", n_envs=n_envs, seed=0),
        runner=runner,
        runner_kwargs=runner_kwargs,
        seed=0,
        **kwargs,
    )


def make_pong(runner: str, train_freq: int = PONG_RUNNER["train_freq"]) -> R2D2:
    runner_kwargs = {"n_actors": 1} if runner == "processes" else None
    return R2D2(
        "CnnLstmPolicy",
        paper_atari_env(n_envs=4, screen_size=84),
        runner=runner,
        runner_kwargs=runner_kwargs,
        seed=0,
        **{**PONG_RUNNER, "train_freq": train_freq},
    )


def atari_rate(steps: int, algo: str) -> Callable[[], float]:
    def measure() -> float:
        env = paper_atari_env(n_envs=4, screen_size=84)
        if algo == "r2d2":
            model: Any = R2D2("CnnLstmPolicy", env, seed=0, **{**PONG_RUNNER, "learning_starts": steps // 4})
        else:
            model = QRDQN("CnnPolicy", env, learning_starts=steps // 4, buffer_size=20_000, batch_size=32, seed=0)
        start = time.perf_counter()
        model.learn(steps)
        rate = model.num_timesteps / (time.perf_counter() - start)
        env.close()
        return rate

    return measure


def replay_memory(observations: int = 20_000) -> dict[str, Any]:
    """Bytes per observation of the Atari replay, and the resident memory its filling adds (Linux ru_maxrss, KiB)."""
    env = paper_atari_env(n_envs=1, screen_size=84)
    model = R2D2("CnnLstmPolicy", env, learning_starts=10**9, buffer_size=200, seed=0)
    space = model.observation_space
    # 1M observations do not fit this machine's memory: the arrays grow linearly with the capacity, so 100 x the
    # arrays of a 10,000-observation replay (same sequence layout) is the 1M figure.
    tenth_of_percent = SequenceReplay(10_000, space, sequence_slots=120, hidden_size=512, stride=40)
    per_observation = sum(int(np.prod(sub.shape)) * np.dtype(sub.dtype).itemsize for sub in space.spaces.values())  # type: ignore[union-attr]
    small = SequenceReplay(observations, space, sequence_slots=120, hidden_size=512, stride=40)
    obs = model.get_env().reset()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch = 500
    for start in range(0, observations, batch):
        ids = np.arange(start + 1, start + batch + 1)
        small.add_observations(0, ids, {k: np.repeat(v, batch, axis=0) + 1 for k, v in obs.items()})
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    env.close()
    return {
        "observation_bytes": per_observation,
        "replay_1M_bytes": 100 * tenth_of_percent.nbytes(),
        "filled_observations": observations,
        "filled_rss_growth_bytes": grown_kib * 1024,
        "filled_nbytes": small.nbytes(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--atari-steps", type=int, default=5000)
    parser.add_argument("--loop-steps", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-atari", action="store_true")
    parser.add_argument("--skip-learner", action="store_true", help="skip the learner and replay-memory section")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)

    if not args.skip_learner:
        learner_section(args)
    runner_and_atari_sections(args)


def learner_section(args: argparse.Namespace) -> None:
    memory = replay_memory()
    learner = run_pairs(
        [
            Pair("learner, MlpLstmPolicy (CartPoleNoVel)", learner_rate("MlpLstmPolicy", 20), None, "updates/s"),
            Pair("learner, CnnLstmPolicy (Pong, paper network)", learner_rate("CnnLstmPolicy", 2), None, "updates/s"),
        ],
        repeats=args.repeats,
        warmup=0,
    )
    gib = memory["replay_1M_bytes"] / 2**30
    write_outputs(
        "bench_r2d2_learner",
        "R2D2 learner: updates/s at batch 64 of 120-step sequences, and replay memory",
        learner,
        notes=(
            f"One torch thread per process ({args.threads}). Each update: burn-in of 40 steps (no gradient) for the online "
            "and the target network, 80 trained steps plus the bootstrap observation, n = 5 double-Q transformed targets, "
            "Adam. Replay memory (Atari, 84x84 frames, 4 stacked, each observation stored once with the one-hot previous "
            f"action and the previous reward): {memory['observation_bytes']:,} bytes per observation; a replay of 1M "
            f"observations (with its sequences of 120 slots, overlap 40) takes {gib:.2f} GiB (100 x "
            "`SequenceReplay.nbytes()` of a 10,000-observation replay: every array grows linearly with the capacity); "
            f"filling a replay with {memory['filled_observations']:,} observations grew the "
            f"process's peak resident memory by {memory['filled_rss_growth_bytes'] / 2**20:.0f} MiB against "
            f"{memory['filled_nbytes'] / 2**20:.0f} MiB of arrays."
        ),
        extra={"memory": memory},
        plot=False,
    )


def runner_and_atari_sections(args: argparse.Namespace) -> None:
    long_steps = 4 * args.loop_steps
    settings: tuple[tuple[str, Callable[[str], R2D2], int], ...] = (
        ("CartPoleNoVel-v1 zoo entry", make_cartpole, args.loop_steps),
        ("ALE/Pong-v5, CnnLstmPolicy", make_pong, args.loop_steps),
        ("ALE/Pong-v5, CnnLstmPolicy, train_freq=200", functools.partial(make_pong, train_freq=200), args.loop_steps),
        # in-process, acting and learning take about as long as each other; learning_starts is 1/16 of the budget
        (
            f"ALE/Pong-v5, CnnLstmPolicy, train_freq=175, learn({long_steps})",
            functools.partial(make_pong, train_freq=175),
            long_steps,
        ),
    )
    loops = run_pairs(
        [
            Pair(
                name,
                loop_rate(make, steps, "processes"),
                loop_rate(make, steps, "in-process"),
                "env steps/s",
                ours_label="actor process",
                peer_label="in-process",
            )
            for name, make, steps in settings
        ],
        repeats=args.repeats,
        warmup=0,
    )
    write_outputs(
        "bench_r2d2_runners",
        "R2D2: whole-loop environment steps/s, an actor process versus in-process",
        loops,
        notes=(
            f"`learn({args.loop_steps})` (unless the row says otherwise) from scratch, timed as a whole (actor start-up "
            "included). The actor process steps "
            "its own copy of the envs with a CPU copy of the network, reading the parameters every 400 of its steps, "
            "while the learner trains on the other core. Pong settings: "
            + ", ".join(f"`{k}={v}`" for k, v in PONG_RUNNER.items())
            + " (an update every 400 env steps; train_freq 200: every 800; 175: every 700), 4 envs. The first "
            f"{PONG_RUNNER['learning_starts']:,} steps only act, on both sides."
        ),
    )
    if not args.skip_atari:
        atari = run_pairs(
            [
                Pair(
                    f"ALE/Pong-v5, learn({args.atari_steps})",
                    atari_rate(args.atari_steps, "r2d2"),
                    atari_rate(args.atari_steps, "qrdqn"),
                    "env steps/s",
                    ours_label="R2D2 CnnLstmPolicy",
                    peer_label="QR-DQN CnnPolicy",
                )
            ],
            repeats=args.repeats,
            warmup=0,
        )
        write_outputs(
            "bench_r2d2_atari",
            "R2D2 on Atari end to end: environment steps/s beside QR-DQN",
            atari,
            notes=(
                "Same envs and preprocessing for both (84x84 grey frames, 4 stacked, no reward clipping, no episode end on a "
                "lost life, ALE v5 sticky actions), 4 envs, learning from the first quarter of the budget. R2D2: "
                + ", ".join(f"`{k}={v}`" for k, v in PONG_RUNNER.items() if k != "learning_starts")
                + " (in-process); QR-DQN: sb3-contrib's defaults for the rest (train_freq 4, batch 32). Different work per "
                "environment step: the ratio says what each costs on these CPUs, not which learns more per step."
            ),
        )


if __name__ == "__main__":
    main()
