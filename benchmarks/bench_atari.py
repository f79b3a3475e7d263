"""MuZero on Atari end to end: ``MuZero("CnnPolicy", ALE/Pong-v5 with the paper's preprocessing).learn(N)``.

Paper preprocessing (Schrittwieser et al. 2020, Appendix F): no reward clipping (values and rewards go through h
and categorical supports instead), no episode end on a lost life, 96x96 grey frames, 4 stacked; ALE v5's sticky
actions are kept. Reports environment steps per second of the whole loop (search, acting, replay, training) beside
SB3's DQN on the same env and preprocessing (``CnnPolicy``, its default training frequency), as context, for MuZero
(50 simulations, the paper's) and Gumbel MuZero (16 simulations); then each with its self-play in an actor process
(``runner="processes"``: acting overlaps learning on the second core) beside the same settings in-process. One more
``learn(N)`` of each, with timers around its phases, gives the profile: where the time goes (search network calls and
bookkeeping, env stepping, training's sampling, bootstrap, Reanalyze, forward, backward and optimizer).

    python -m benchmarks.bench_atari [--steps 2000] [--repeats 3] [--threads 1] [--device auto] [--no-profile]
        [--gradient-threads 2 [--gradient-threads-only]]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import ale_py
import gymnasium as gym
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack, VecTransposeImage

from benchmarks.common import Pair, run_pairs, write_outputs
from sb3_frontier import MuZero
from sb3_frontier.algorithms.muzero import mcts
from sb3_frontier.algorithms.muzero import muzero as muzero_module

gym.register_envs(ale_py)


@dataclass(frozen=True)
class Variant:
    """
    One MuZero configuration of the benchmark.

    :param label: its name in the tables
    :param search: ``"muzero"`` or ``"gumbel"``
    :param num_simulations: simulations per search
    :param runner: ``"in-process"`` (acting and learning alternate) or ``"processes"`` (an actor process acts while
        the learner trains)
    :param gradient_threads: threads of a gradient step (MuZero's ``gradient_threads``: shards of the batch)
    """

    label: str
    search: str
    num_simulations: int
    runner: str = "in-process"
    gradient_threads: int = 1


def paper_atari_env(
    env_id: str = "ALE/Pong-v5",
    n_envs: int = 4,
    seed: int = 0,
    screen_size: int = 96,
    vec_env_cls: type[DummyVecEnv | SubprocVecEnv] = DummyVecEnv,
) -> VecEnv:
    """
    ALE env with the papers' preprocessing: grey frames (MuZero: 96x96, R2D2 and IMPALA: 84x84), 4 stacked, no reward
    clipping, no life-loss episode ends; ``vec_env_cls`` steps the envs in this process or in subprocesses.
    """
    env = make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=dict(frameskip=1),  # AtariWrapper skips 4 frames (max-pooled) itself
        wrapper_class=AtariWrapper,
        wrapper_kwargs=dict(clip_reward=False, terminal_on_life_loss=False, screen_size=screen_size),
        vec_env_cls=vec_env_cls,
    )
    return VecTransposeImage(VecFrameStack(env, n_stack=4))


def make_muzero(env: VecEnv, steps: int, device: str, variant: Variant) -> MuZero:
    """The benchmark's MuZero: learning from a quarter of the budget, batches of 64 unrolls, a 20,000-position replay."""
    return MuZero(
        "CnnPolicy",
        env,
        learning_starts=steps // 4,
        batch_size=64,
        num_simulations=variant.num_simulations,
        search=variant.search,
        buffer_size=20_000,
        runner=variant.runner,
        gradient_threads=variant.gradient_threads,
        device=device,
        seed=0,
    )


def muzero_rate(steps: int, n_envs: int, device: str, variant: Variant) -> Callable[[], float]:
    def measure() -> float:
        env = paper_atari_env(n_envs=n_envs)
        model = make_muzero(env, steps, device, variant)
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


class PhaseTimer:
    """
    Wall-clock and CPU time (the process's, all threads) of nested phases, measured by wrapping the callables that run
    them. A phase is keyed by its path, e.g. ``"actor/search/network"``: the same callable nested under another phase
    is another key. For profiling runs only: :meth:`restore` removes every wrapper.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[str] = []
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """
        Time every call of ``owner.attr`` (an instance's method, a class's function or a module's function) as ``name``.

        :param owner: the object, class or module holding the callable
        :param attr: its attribute name
        :param name: the phase's name (the last part of its path)
        """
        had_own = attr in vars(owner)
        original = vars(owner)[attr] if had_own else None
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(name)
            key = "/".join(self._stack)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[key] += time.perf_counter() - wall
                self.cpu[key] += time.process_time() - cpu
                self.calls[key] += 1
                self._stack.pop()

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original) if had_own else delattr(owner, attr))

    def restore(self) -> None:
        """Remove every wrapper (last in, first out)."""
        while self._undo:
            self._undo.pop()()

    def inclusive(self, *paths: str, clock: str = "cpu") -> float:
        """Time of the phases (summed), children included."""
        times = self.cpu if clock == "cpu" else self.wall
        return sum(times.get(path, 0.0) for path in paths)

    def exclusive(self, path: str, clock: str = "cpu") -> float:
        """Time of a phase less that of its timed children."""
        times = self.cpu if clock == "cpu" else self.wall
        depth = path.count("/") + 1
        children = sum(t for key, t in times.items() if key.startswith(path + "/") and key.count("/") == depth)
        return times.get(path, 0.0) - children


#: Rows of the profile: (group, phase, how to read it off a PhaseTimer).
PROFILE_ROWS: tuple[tuple[str, str, Callable[[PhaseTimer, str], float]], ...] = (
    (
        "search",
        "initial inference of the roots (network, value to scalar)",
        lambda t, c: t.inclusive("actor/search/initial_inference", "actor/search/decode", clock=c),
    ),
    ("search", "recurrent inference (network)", lambda t, c: t.inclusive("actor/search/recurrent_fn/network", clock=c)),
    (
        "search",
        "value and reward logits to scalars (softmax, expectation, h^-1)",
        lambda t, c: t.inclusive("actor/search/recurrent_fn/decode", clock=c) + t.exclusive("actor/search/recurrent_fn", c),
    ),
    (
        "search",
        "tree: numba kernels, set-up, outputs to numpy",
        lambda t, c: t.exclusive("actor/search", c),
    ),
    ("collection", "env stepping (ALE, frame preprocessing)", lambda t, c: t.inclusive("actor/env.step", clock=c)),
    (
        "collection",
        "actor bookkeeping (segments, legal actions, policy targets)",
        lambda t, c: t.exclusive("actor", c) + t.inclusive("actor/values", clock=c),
    ),
    ("collection", "replay writes", lambda t, c: t.inclusive("store", clock=c)),
    ("training", "sampling", lambda t, c: t.inclusive("train/sample", clock=c)),
    ("training", "target-network bootstrap", lambda t, c: t.inclusive("train/bootstrap", clock=c)),
    ("training", "Reanalyze (fresh searches)", lambda t, c: t.inclusive("train/reanalyze", clock=c)),
    ("training", "forward (representation, K-step unroll, losses)", lambda t, c: t.inclusive("train/loss", clock=c)),
    ("training", "backward", lambda t, c: t.inclusive("train/backward", clock=c)),
    ("training", "gradient clipping and optimizer step", lambda t, c: t.inclusive("train/clip", "train/optimizer", clock=c)),
    (
        "training",
        "priorities, targets, logs",
        lambda t, c: t.exclusive("train", c) + t.inclusive("train/priorities", clock=c),
    ),
)


def profile_learn(steps: int, n_envs: int, device: str, variant: Variant) -> dict[str, Any]:
    """
    One ``learn(steps)`` of the benchmark's model with timers around its phases.

    :return: per profile row its CPU and wall seconds, the whole run's, the search kernels' wall seconds (all
        searches) and the number of gradient steps
    """
    env = paper_atari_env(n_envs=n_envs)
    model = make_muzero(env, steps, device, variant)
    timer = PhaseTimer()
    search_timings = mcts.SearchTimings()
    model.planner.timings = search_timings
    make_actor = model._make_actor

    def timed_actor() -> Any:
        actor = make_actor()
        timer.wrap(actor, "step", "actor")
        return actor

    model._make_actor = timed_actor  # type: ignore[method-assign]
    policy, planner, replay = model.policy, model.planner, model.replay_buffer
    assert replay is not None
    for owner, attr, name in (
        (model.env, "step", "env.step"),
        (planner, "search", "search"),
        (planner, "values", "values"),
        (planner, "_recurrent_fn", "recurrent_fn"),
        (policy, "initial_inference", "initial_inference"),
        (policy, "recurrent_inference", "network"),
        (policy.value_support, "decode_logits", "decode"),
        (policy.reward_support, "decode_logits", "decode"),
        (model, "_store", "store"),
        (model, "train", "train"),
        (replay, "sample", "sample"),
        (replay, "update_priorities", "priorities"),
        (model, "_bootstrap_values", "bootstrap"),
        (model, "_reanalyze", "reanalyze"),
        (muzero_module, "muzero_loss", "loss"),
        (th.Tensor, "backward", "backward"),
        (th.nn.utils, "clip_grad_norm_", "clip"),
        (policy.optimizer, "step", "optimizer"),
    ):
        timer.wrap(owner, attr, name)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        model.learn(steps)
    finally:
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        timer.restore()
        env.close()
    rows = [
        {"group": group, "phase": phase, "cpu_s": read(timer, "cpu"), "wall_s": read(timer, "wall")}
        for group, phase, read in PROFILE_ROWS
    ]
    timed = ("actor", "store", "train")
    rows.append(
        {
            "group": "other",
            "phase": "learn loop, callbacks, logs",
            "cpu_s": cpu - timer.inclusive(*timed),
            "wall_s": wall - timer.inclusive(*timed, clock="wall"),
        }
    )
    return {
        "variant": variant.label,
        "env_steps": model.num_timesteps,
        "gradient_steps": model._n_updates,
        "searches": search_timings.searches,
        "cpu_s": cpu,
        "wall_s": wall,
        "env_steps_per_s": model.num_timesteps / wall,
        "search_kernels_wall_s": search_timings.kernel_s,
        "rows": rows,
    }


def profile_table(profiles: Sequence[dict[str, Any]]) -> str:
    """
    Markdown table of profiles side by side: per phase, the CPU seconds and their share of the run's (on a shared
    machine the wall-clock of short phases soaks up the waits for a core, so only the totals give it).

    :param profiles: outputs of :func:`profile_learn`
    :return: the table
    """
    header = "| group | phase | " + " | ".join(f"{p['variant']}: CPU s (share)" for p in profiles) + " |"
    lines = [header, "|---|---|" + "---:|" * len(profiles)]
    for i, row in enumerate(profiles[0]["rows"]):
        cells = [f"{p['rows'][i]['cpu_s']:.1f} ({100 * p['rows'][i]['cpu_s'] / p['cpu_s']:.0f}%)" for p in profiles]
        lines.append(f"| {row['group']} | {row['phase']} | " + " | ".join(cells) + " |")
    lines.append("| total | CPU s | " + " | ".join(f"**{p['cpu_s']:.1f}**" for p in profiles) + " |")
    lines.append("| total | wall s | " + " | ".join(f"{p['wall_s']:.1f}" for p in profiles) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--simulations", type=int, default=50, help="simulations of MuZero's search")
    parser.add_argument("--gumbel-simulations", type=int, default=16, help="simulations of Gumbel MuZero (0: no row)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled runs")
    parser.add_argument("--no-processes", action="store_true", help="skip the actor-process rows")
    parser.add_argument("--processes-only", action="store_true", help="only the actor-process rows (no DQN, no profile)")
    parser.add_argument(
        "--gradient-threads",
        type=int,
        default=0,
        help="add rows of MuZero(gradient_threads=N) beside gradient_threads=1, both in-process (0: none)",
    )
    parser.add_argument("--gradient-threads-only", action="store_true", help="only the --gradient-threads rows")
    parser.add_argument("--name", default="bench_atari", help="results.md section / output file stem")
    args = parser.parse_args(argv)
    if args.gradient_threads_only:
        if args.gradient_threads < 2:
            parser.error("--gradient-threads-only needs --gradient-threads N with N >= 2")
        args.processes_only = args.no_processes = True
    if args.threads > 0:
        th.set_num_threads(args.threads)
    device = ("cuda" if th.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    variants = [Variant(f"MuZero, {args.simulations} simulations", "muzero", args.simulations)]
    if args.gumbel_simulations > 0:
        variants.append(Variant(f"Gumbel MuZero, {args.gumbel_simulations} simulations", "gumbel", args.gumbel_simulations))
    if args.processes_only:
        args.no_profile = True
    pairs = [
        Pair(
            f"{variant.label}: Pong-v5 learn({args.steps}), {args.n_envs} envs, {device}",
            muzero_rate(args.steps, args.n_envs, device, variant),
            dqn_rate(args.steps, args.n_envs, device),
            "env steps/s",
            ours_label="sb3-frontier MuZero CnnPolicy",
            peer_label="SB3 DQN CnnPolicy",
        )
        for variant in variants
        if not args.processes_only
    ]
    if not args.no_processes:
        pairs += [
            Pair(
                f"{variant.label}: actor process vs in-process, Pong-v5 learn({args.steps}), {args.n_envs} envs, {device}",
                muzero_rate(args.steps, args.n_envs, device, replace(variant, runner="processes")),
                muzero_rate(args.steps, args.n_envs, device, variant),
                "env steps/s",
                ours_label="MuZero, runner='processes' (1 actor)",
                peer_label="MuZero, runner='in-process'",
            )
            for variant in variants
        ]
    if args.gradient_threads > 1:
        pairs += [
            Pair(
                f"{variant.label}: gradient_threads={args.gradient_threads} vs 1, Pong-v5 learn({args.steps}), "
                f"{args.n_envs} envs, {device}",
                muzero_rate(args.steps, args.n_envs, device, replace(variant, gradient_threads=args.gradient_threads)),
                muzero_rate(args.steps, args.n_envs, device, variant),
                "env steps/s",
                ours_label=f"MuZero, gradient_threads={args.gradient_threads}",
                peer_label="MuZero, gradient_threads=1",
            )
            for variant in variants
        ]
    results = run_pairs(pairs, repeats=args.repeats, warmup=0)
    notes = (
        f"Whole training loop, {args.steps} environment steps, learning from step {args.steps // 4}; MuZero searches "
        f"every step of every env (batch of {args.n_envs} roots) and trains with batches of 64 five-step unrolls, one "
        "gradient step per VecEnv step once the replay holds a finished segment. "
        + (
            ""
            if args.processes_only
            else "DQN is SB3's with batch 32 and its default train_freq=4 (measured again beside each MuZero row); the "
            "ratio to DQN says how much the search costs against a model-free learner, not a defect. "
        )
        + f"Device: {device}; torch threads: {th.get_num_threads()}. "
        + (
            ""
            if args.no_processes
            else "The actor-process rows run the same settings (the same gradient steps per environment step) with the "
            "self-play in one actor process that acts with parameters synced after every update phase (policy lag "
            "bounded by what its pipe holds) while the learner trains."
        )
        + (
            ""
            if args.gradient_threads < 2
            else f" The gradient_threads rows split each gradient step's batch of 64 into {args.gradient_threads} "
            "shards, each shard's forward and backward pass in its own thread at the torch thread count above, and sum "
            "the shards' gradients in a fixed order (the batch's gradient up to float rounding); acting is unchanged."
        )
    )
    profiles = []
    if not args.no_profile:
        profiles = [profile_learn(args.steps, args.n_envs, device, variant) for variant in variants]
        notes += (
            f"\n\n**Where the time goes** in one more `learn({args.steps})` of each, timed phase by phase in process "
            "CPU seconds (the other jobs of a shared machine delay a run more than they add to its CPU time). Search "
            "rows are the acting searches; Reanalyze's own searches fall in its row.\n\n"
            + profile_table(profiles)
            + "\n\n"
            + "; ".join(
                f"{p['variant']}: {p['gradient_steps']} gradient steps, {p['searches']} searches (numba kernels "
                f"{p['search_kernels_wall_s']:.1f} s wall of the tree row), {p['env_steps_per_s']:.1f} env steps/s in "
                "the profiled run (timers included)"
                for p in profiles
            )
            + "."
        )
    title = f"MuZero on Atari (Pong-v5, paper preprocessing), {device}"
    print(write_outputs(args.name, title, results, notes, extra={"profiles": profiles}))


if __name__ == "__main__":
    main()
