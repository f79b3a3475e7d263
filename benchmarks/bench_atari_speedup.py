"""MuZero's Atari loop against an earlier commit of the library: the same ``learn(N)`` on the same machine, each run in
a fresh process, the two sides alternating.

The earlier code is checked out with ``git worktree`` beside this tree and put first on the child process's
``sys.path`` (the benchmark's own env construction, ``bench_atari.paper_atari_env``, is the same for both sides).
Every run: ``MuZero("CnnPolicy", Pong-v5 with the paper's preprocessing, learning_starts=N/4, batch_size=64,
num_simulations=50, buffer_size=20_000, seed=0)``, one torch thread per Python thread (``OMP_NUM_THREADS=1``); the
current side adds the options of its row (``runner``, ``gradient_threads``, ``training_precision``).

    python -m benchmarks.bench_atari_speedup [--commit b885fd4] [--steps 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import Pair, run_pairs, write_outputs

REPO = Path(__file__).resolve().parent.parent

#: The current side's rows: label and the MuZero options they add.
ROWS: dict[str, dict[str, Any]] = {
    "runner='processes', bfloat16 training": {"runner": "processes", "training_precision": "bfloat16"},
    "runner='processes'": {"runner": "processes"},
    "in-process, gradient_threads=2, bfloat16 training": {"gradient_threads": 2, "training_precision": "bfloat16"},
}


def child(tree: str | None, steps: int, n_envs: int, options: dict[str, Any]) -> dict[str, Any]:
    """One ``learn(steps)`` in this process, with the library of ``tree`` (None: this tree); its env steps/s."""
    if tree is not None:
        sys.path.insert(0, tree)  # before the first import of sb3_frontier; ``benchmarks`` is this tree's already
    import torch as th

    import sb3_frontier
    from benchmarks.bench_atari import paper_atari_env

    th.set_num_threads(1)
    env = paper_atari_env(n_envs=n_envs)
    model = sb3_frontier.MuZero(
        "CnnPolicy",
        env,
        learning_starts=steps // 4,
        batch_size=64,
        num_simulations=50,
        buffer_size=20_000,
        seed=0,
        device="cpu",
        **options,
    )
    start = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - start
    env.close()
    assert model._n_updates > 0
    return {
        "library": str(Path(sb3_frontier.__file__).resolve().parent),
        "env_steps_per_s": model.num_timesteps / seconds,
        "seconds": seconds,
        "gradient_steps": int(model._n_updates),
    }


def fresh_process_rate(
    tree: str | None, steps: int, n_envs: int, options: dict[str, Any], gradient_steps: set[int]
) -> Callable[[], float]:
    """A measure that runs :func:`child` in a new Python process and returns its env steps/s; each run's gradient
    step count goes into ``gradient_steps`` (the sides of a row must do the same work)."""

    def measure() -> float:
        command = [sys.executable, "-m", "benchmarks.bench_atari_speedup", "--child", json.dumps(options)]
        command += ["--steps", str(steps), "--n-envs", str(n_envs)] + (["--tree", tree] if tree else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        done = subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        expected = str(Path(tree, "sb3_frontier").resolve()) if tree else str(REPO / "sb3_frontier")
        if result["library"] != expected:
            raise RuntimeError(f"the run imported {result['library']}, not {expected}")
        gradient_steps.add(int(result["gradient_steps"]))
        if len(gradient_steps) > 1:
            raise RuntimeError(f"the two sides of a row took different numbers of gradient steps: {sorted(gradient_steps)}")
        return float(result["env_steps_per_s"])

    return measure


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", default="b885fd4", help="the earlier code (MuZero before its second pass)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="the current side's rows")
    parser.add_argument("--name", default="bench_atari_speedup", help="results.md section / output file stem")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.tree, args.steps, args.n_envs, json.loads(args.child))))
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.commit], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix=f"sb3-frontier-{commit}-") as parent:
        tree = str(Path(parent, commit))
        subprocess.run(["git", "worktree", "add", "--detach", tree, commit], cwd=REPO, check=True, capture_output=True)
        gradient_steps: dict[str, set[int]] = {row: set() for row in args.rows}
        try:
            pairs = [
                Pair(
                    f"MuZero, 50 simulations, {row}: Pong-v5 learn({args.steps}), {args.n_envs} envs, cpu",
                    fresh_process_rate(None, args.steps, args.n_envs, ROWS[row], gradient_steps[row]),
                    fresh_process_rate(tree, args.steps, args.n_envs, {}, gradient_steps[row]),
                    "env steps/s",
                    ours_label=f"current, {row}",
                    peer_label=f"{commit}, in-process",
                )
                for row in args.rows
            ]
            results = run_pairs(pairs, repeats=args.repeats, warmup=0)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=REPO, check=False, capture_output=True)
    notes = (
        f"The whole training loop of {args.steps} environment steps (learning from step {args.steps // 4}, batches of "
        f"64 five-step unrolls, one gradient step per VecEnv step once the replay holds a finished segment), each run "
        f"in a fresh process with one torch thread per Python thread, the current code beside that of {commit} "
        "(checked out with `git worktree`); each row measures both sides again, alternating, and both took "
        + ", ".join(f"{steps:,}" for steps in sorted(set().union(*gradient_steps.values())))
        + " gradient steps per run. bfloat16 training: "
        "`training_precision='bfloat16'` (the training unroll under `torch.autocast`, loss and optimizer in float32); "
        "it pays on a CPU with native bfloat16 instructions (this one's flags: "
        f"{cpu_bf16_flags() or 'none'})."
    )
    title = f"MuZero on Atari against {commit} (Pong-v5, paper preprocessing), cpu"
    print(write_outputs(args.name, title, results, notes))


def cpu_bf16_flags() -> str:
    """The CPU's bfloat16 feature flags (from /proc/cpuinfo; empty where there is none)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    return ", ".join(sorted({flag for flag in flags.split() if "bf16" in flag or flag.startswith("amx")}))


if __name__ == "__main__":
    main()
