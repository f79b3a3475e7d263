"""
MuZero search speed: decisions per second of our batched search versus mctx's ``muzero_policy`` (JAX, CPU).

Both run 50 simulations on B roots with A actions and the same small MLP model with the same weights:

- recurrent g: ``concat(embedding [64], one_hot(action) [A]) -> 64 (ReLU) -> 64 (tanh) = next embedding``
- heads on an embedding: reward (64 -> 1), value (64 -> 1), policy logits (64 -> A); discount 0.997.

Both implementations write it the same way: ``W1 [e; one_hot(a)]`` as ``W1_e e + W1_a[a]`` (a row lookup instead of
a one-hot product) and the three heads as one ``64 -> A + 2`` layer whose outputs are sliced.

Ours: :func:`sb3_frontier.algorithms.muzero.mcts.muzero_policy`, torch eager with one thread under
``torch.inference_mode``, numba kernels compiled before timing. mctx: the whole ``muzero_policy``
call (model inside ``recurrent_fn``) under ``jax.jit``, compiled before timing, ``block_until_ready``; XLA is asked
for one CPU thread with ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` (set before
jax is imported). Search settings are matched: pb_c_init 1.25, pb_c_base 19652, Dirichlet alpha 0.25 and fraction
0.25, temperature 1. The Q normalisation differs by design: ours min-max normalises over the root's whole tree (the
MuZero pseudocode), mctx's default ``qtransform_by_parent_and_siblings`` over the node and its siblings.

For ours, a separate timed pass (:class:`~sb3_frontier.algorithms.muzero.mcts.SearchTimings`) splits the search
time into the network (inside ``recurrent_fn``) and tree bookkeeping (kernels, embedding gather/store, output
conversion, set-up and action selection).

Run: ``python -m benchmarks.bench_mcts [--repeats 3] [--quick]``; writes ``benchmarks/out/mcts_speed.json`` and
``benchmarks/out/mcts_speed.png`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import OUT_DIR, environment_info, update_results_section

EMBEDDING = 64
HIDDEN = 64
NUM_SIMULATIONS = 50
DISCOUNT = 0.997
#: Search settings passed to both implementations.
SEARCH_SETTINGS: dict[str, float] = dict(
    dirichlet_alpha=0.25, dirichlet_fraction=0.25, pb_c_init=1.25, pb_c_base=19652.0, temperature=1.0
)
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def make_weights(num_actions: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights of the benchmark MLP (shared by both implementations)."""
    rng = np.random.default_rng(seed)

    def dense(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        bound = 1.0 / np.sqrt(n_in)
        return (
            rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32),
            rng.uniform(-bound, bound, n_out).astype(np.float32),
        )

    w = {}
    w["w1"], w["b1"] = dense(EMBEDDING + num_actions, HIDDEN)
    w["w2"], w["b2"] = dense(HIDDEN, EMBEDDING)
    w["wr"], w["br"] = dense(EMBEDDING, 1)
    w["wv"], w["bv"] = dense(EMBEDDING, 1)
    w["wp"], w["bp"] = dense(EMBEDDING, num_actions)
    return w


def make_roots(batch_size: int, weights: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    """Root embeddings (tanh of Gaussians) and the heads' logits and values on them."""
    rng = np.random.default_rng(seed)
    embedding = np.tanh(rng.standard_normal((batch_size, EMBEDDING))).astype(np.float32)
    logits = embedding @ weights["wp"] + weights["bp"]
    value = (embedding @ weights["wv"] + weights["bv"])[:, 0]
    return {"embedding": embedding, "prior_logits": logits.astype(np.float32), "value": value.astype(np.float32)}


# ---------------------------------------------------------------------------------------------------------------------
# Ours (torch + numba)
# ---------------------------------------------------------------------------------------------------------------------


class TorchMLPModel:
    """The benchmark MLP in torch, used as ``recurrent_fn`` of our search."""

    def __init__(self, weights: dict[str, np.ndarray], num_actions: int) -> None:
        import torch

        from sb3_frontier.algorithms.muzero import mcts

        self.output = mcts.RecurrentFnOutput
        t = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
        self.num_actions = num_actions
        self.w1_e = t["w1"][:EMBEDDING].T.contiguous()  # [H, E]
        self.w1_a = t["w1"][EMBEDDING:].contiguous()  # [A, H]: row a = W1 one_hot(a)
        self.b1 = t["b1"]
        self.w2 = t["w2"].T.contiguous()
        self.b2 = t["b2"]
        # the three heads as one layer: rows = policy logits (A), value, reward
        self.w_heads = torch.cat([t["wp"], t["wv"], t["wr"]], dim=1).T.contiguous()  # [A + 2, E]
        self.b_heads = torch.cat([t["bp"], t["bv"], t["br"]])
        self.discounts: dict[int, Any] = {}

    def __call__(self, embedding: Any, action: Any) -> tuple[Any, Any]:
        import torch
        import torch.nn.functional as F

        a = self.num_actions
        h = torch.relu(F.linear(embedding, self.w1_e, self.b1) + self.w1_a[action])
        nxt = torch.tanh(F.linear(h, self.w2, self.b2))
        out = F.linear(nxt, self.w_heads, self.b_heads)
        batch_size = action.shape[0]
        if batch_size not in self.discounts:
            self.discounts[batch_size] = torch.full((batch_size,), DISCOUNT)
        return self.output(out[:, a + 1], self.discounts[batch_size], out[:, :a], out[:, a]), nxt


def make_ours(
    batch_size: int, num_actions: int, seed: int = 0, unvisited: str = "parent"
) -> tuple[Callable[[], None], Callable[[Any], None]]:
    """Return ``run()`` (one batched search) and ``run_timed(timings)`` for one benchmark cell."""
    import torch

    from sb3_frontier.algorithms.muzero import mcts

    weights = make_weights(num_actions, seed)
    roots = make_roots(batch_size, weights, seed + 1)
    model = TorchMLPModel(weights, num_actions)
    root = mcts.RootFnOutput(
        prior_logits=torch.from_numpy(roots["prior_logits"]),
        value=torch.from_numpy(roots["value"]),
        embedding=torch.from_numpy(roots["embedding"]),
    )
    rng = np.random.default_rng(seed)

    def run(timings: Any = None) -> None:
        with torch.inference_mode():
            mcts.muzero_policy(
                root,
                model,
                NUM_SIMULATIONS,
                **SEARCH_SETTINGS,
                rng=rng,
                unvisited_value=unvisited,
                timings=timings,
            )

    return (lambda: run(None)), run


# ---------------------------------------------------------------------------------------------------------------------
# mctx (jax)
# ---------------------------------------------------------------------------------------------------------------------


def jax_params(weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """The benchmark MLP's weights as jax arrays, laid out as :func:`jax_recurrent_fn` uses them."""
    import jax.numpy as jnp

    return {
        "w1_e": jnp.asarray(weights["w1"][:EMBEDDING]),
        "w1_a": jnp.asarray(weights["w1"][EMBEDDING:]),
        "b1": jnp.asarray(weights["b1"]),
        "w2": jnp.asarray(weights["w2"]),
        "b2": jnp.asarray(weights["b2"]),
        "w_heads": jnp.asarray(np.concatenate([weights["wp"], weights["wv"], weights["wr"]], axis=1)),
        "b_heads": jnp.asarray(np.concatenate([weights["bp"], weights["bv"], weights["br"]])),
    }


def jax_recurrent_fn(num_actions: int) -> Callable[..., tuple[Any, Any]]:
    """The benchmark MLP as an mctx ``recurrent_fn(params, rng_key, action, embedding)``."""
    import jax
    import jax.numpy as jnp
    import mctx

    def recurrent_fn(params: Any, rng_key: Any, action: Any, embedding: Any) -> tuple[Any, Any]:
        del rng_key
        h = jax.nn.relu(embedding @ params["w1_e"] + params["w1_a"][action] + params["b1"])
        nxt = jnp.tanh(h @ params["w2"] + params["b2"])
        out = nxt @ params["w_heads"] + params["b_heads"]
        logits, value, reward = out[:, :num_actions], out[:, num_actions], out[:, num_actions + 1]
        discount = jnp.full_like(reward, DISCOUNT)
        return mctx.RecurrentFnOutput(reward=reward, discount=discount, prior_logits=logits, value=value), nxt

    return recurrent_fn


def make_mctx(batch_size: int, num_actions: int, seed: int = 0) -> Callable[[], None]:
    """Return ``run()``: one jitted ``mctx.muzero_policy`` call on the same model and roots."""
    import jax
    import jax.numpy as jnp
    import mctx

    weights = make_weights(num_actions, seed)
    roots = make_roots(batch_size, weights, seed + 1)
    params = jax_params(weights)
    recurrent_fn = jax_recurrent_fn(num_actions)
    root = mctx.RootFnOutput(
        prior_logits=jnp.asarray(roots["prior_logits"]),
        value=jnp.asarray(roots["value"]),
        embedding=jnp.asarray(roots["embedding"]),
    )

    @jax.jit
    def policy(params: Any, key: Any, root: Any) -> Any:
        return mctx.muzero_policy(
            params,
            key,
            root,
            recurrent_fn,
            NUM_SIMULATIONS,
            **SEARCH_SETTINGS,
        )

    state = {"key": jax.random.PRNGKey(seed)}

    def run() -> None:
        state["key"], key = jax.random.split(state["key"])
        out = policy(params, key, root)
        jax.block_until_ready((out.action, out.action_weights))
        # Read the results back to the host, as a caller acting in numpy environments does.
        np.asarray(out.action)

    return run


def check_same_model(num_actions: int) -> float:
    """Max abs difference of the torch and the jax model from the definition (concat, one-hot, three heads)."""
    import torch

    weights = make_weights(num_actions)
    roots = make_roots(8, weights)
    action = np.arange(8) % num_actions
    # definition, in numpy (float64)
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    x = np.concatenate([roots["embedding"], np.eye(num_actions)[action]], axis=1)
    nxt = np.tanh(np.maximum(x @ w["w1"] + w["b1"], 0.0) @ w["w2"] + w["b2"])
    expected = {
        "embedding": nxt,
        "prior_logits": nxt @ w["wp"] + w["bp"],
        "value": (nxt @ w["wv"] + w["bv"])[:, 0],
        "reward": (nxt @ w["wr"] + w["br"])[:, 0],
        "discount": np.full(8, DISCOUNT),
    }
    out_t, nxt_t = TorchMLPModel(weights, num_actions)(torch.from_numpy(roots["embedding"]), torch.from_numpy(action))
    out_j, nxt_j = jax_recurrent_fn(num_actions)(jax_params(weights), None, action, roots["embedding"])
    diff = 0.0
    for name, value in expected.items():
        for out, emb in ((out_t, nxt_t), (out_j, nxt_j)):
            got = emb if name == "embedding" else getattr(out, name)
            diff = max(diff, float(np.abs(np.asarray(got, dtype=np.float64) - value).max()))
    return diff


# ---------------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------------


def time_rate(run: Callable[[], None], batch_size: int, min_seconds: float) -> float:
    """Decisions per second of ``run`` (one search of ``batch_size`` roots), repeated for at least ``min_seconds``."""
    calls = 0
    start = time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * batch_size / elapsed


def bench_cell(batch_size: int, num_actions: int, repeats: int, min_seconds: float, unvisited: str) -> dict[str, Any]:
    """Measure one (B, A) cell: alternating ours / mctx, then ours with timing accumulators on."""
    from sb3_frontier.algorithms.muzero import mcts

    ours, ours_timed = make_ours(batch_size, num_actions, unvisited=unvisited)
    peer = make_mctx(batch_size, num_actions)
    for _ in range(2):  # warm-up: numba kernels (cached), XLA compilation
        ours()
        peer()
    ours_rates, peer_rates = [], []
    for _ in range(repeats):
        ours_rates.append(time_rate(ours, batch_size, min_seconds))
        peer_rates.append(time_rate(peer, batch_size, min_seconds))
    fractions, kernel_fractions = [], []
    for _ in range(repeats):
        timings = mcts.SearchTimings()
        time_rate(lambda t=timings: ours_timed(t), batch_size, min_seconds / 2)
        fractions.append(timings.bookkeeping_fraction)
        kernel_fractions.append(timings.kernel_s / timings.total_s)
    ours_med, peer_med = statistics.median(ours_rates), statistics.median(peer_rates)
    return {
        "batch_size": batch_size,
        "num_actions": num_actions,
        "ours_decisions_per_s": ours_rates,
        "mctx_decisions_per_s": peer_rates,
        "ours_median": ours_med,
        "mctx_median": peer_med,
        "ratio_ours_over_mctx": ours_med / peer_med,
        "ratios_per_repeat": [o / p for o, p in zip(ours_rates, peer_rates, strict=True)],
        "bookkeeping_fraction": fractions,
        "bookkeeping_fraction_median": statistics.median(fractions),
        "kernel_fraction_median": statistics.median(kernel_fractions),
    }


def markdown_table(cells: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| B | A | ours (decisions/s) | mctx (decisions/s) | ours / mctx | ours: bookkeeping share | ours: kernels share |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c['batch_size']} | {c['num_actions']} | {c['ours_median']:,.0f} | {c['mctx_median']:,.0f} "
            f"| {c['ratio_ours_over_mctx']:.2f} | {100 * c['bookkeeping_fraction_median']:.1f}% "
            f"| {100 * c['kernel_fraction_median']:.1f}% |"
        )
    return "\n".join(lines)


def plot(cells: Sequence[dict[str, Any]], path: Path) -> None:
    """Bar chart of decisions/s per cell (median, with the repeat range), ours beside mctx."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"B={c['batch_size']}\nA={c['num_actions']}" for c in cells]
    x = np.arange(len(cells))
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, key, label in [(-0.2, "ours", "sb3-frontier (torch + numba)"), (0.2, "mctx", "mctx (jax.jit)")]:
        values = np.array([c[f"{key}_decisions_per_s"] for c in cells], dtype=float)
        med = np.median(values, axis=1)
        err = np.stack([med - values.min(axis=1), values.max(axis=1) - med])
        ax.bar(x + offset, med, width=0.4, yerr=err, capsize=3, label=label)
    for i, c in enumerate(cells):
        top = max(max(c["ours_decisions_per_s"]), max(c["mctx_decisions_per_s"]))
        ax.text(i, top * 1.05, f"x{c['ratio_ours_over_mctx']:.2f}", ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set_ylabel("decisions / s (log scale)")
    ax.set_title(f"MuZero search, {NUM_SIMULATIONS} simulations, MLP model, 1 CPU thread")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write JSON and PNG to ``benchmarks/out`` and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per cell and implementation (median)")
    parser.add_argument("--quick", action="store_true", help="short repeats (smoke run; numbers are noisier)")
    parser.add_argument("--min-seconds", type=float, default=None, help="length of one timed repeat")
    parser.add_argument(
        "--unvisited", choices=["parent", "zero"], default="parent", help="our unvisited-child Q (MuZero's default: parent)"
    )
    args = parser.parse_args(argv)
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.2 if args.quick else 1.0)

    # One thread for both sides; XLA reads its flags when jax is first imported.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_FLAGS).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import mctx
    import numba
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass

    for num_actions in (2, 18):
        diff = check_same_model(num_actions)
        if diff > 1e-4:
            raise RuntimeError(f"torch and jax models differ by {diff}")

    cells = []
    for batch_size in (16, 256):
        for num_actions in (2, 18):
            cell = bench_cell(batch_size, num_actions, args.repeats, min_seconds, args.unvisited)
            cells.append(cell)
            print(
                f"B={batch_size:4d} A={num_actions:3d}: ours {cell['ours_median']:10.0f}/s  "
                f"mctx {cell['mctx_median']:10.0f}/s  ratio {cell['ratio_ours_over_mctx']:.2f}  "
                f"bookkeeping {100 * cell['bookkeeping_fraction_median']:.1f}%",
                flush=True,
            )

    result = {
        "benchmark": "mcts_speed",
        "command": "python -m benchmarks.bench_mcts " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "num_simulations": NUM_SIMULATIONS,
        "model": f"MLP embedding {EMBEDDING}, g: [e; one_hot(a)] -> {HIDDEN} relu -> {EMBEDDING} tanh; "
        "heads reward/value/policy linear",
        "threads": {"torch": torch.get_num_threads(), "XLA_FLAGS": os.environ["XLA_FLAGS"]},
        "qtransform": {
            "ours": f"min-max over the root's whole tree, unvisited children: {args.unvisited}",
            "mctx": "qtransform_by_parent_and_siblings (muzero_policy default)",
        },
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "numba": numba.__version__,
            "jax": jax.__version__,
            "mctx": getattr(mctx, "__version__", "?"),
        },
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()},
        "repeats": args.repeats,
        "min_seconds_per_repeat": min_seconds,
        "cells": cells,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "mcts_speed.json").write_text(json.dumps(result, indent=2))
    plot(cells, OUT_DIR / "mcts_speed.png")
    print()
    print(markdown_table(cells))
    print()
    print(f"ours: torch {torch.get_num_threads()} thread, numba; mctx: jax.jit, XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    print("Q normalisation: ours min-max over the whole tree; mctx qtransform_by_parent_and_siblings (its default)")
    print(f"wrote {OUT_DIR / 'mcts_speed.json'} and {OUT_DIR / 'mcts_speed.png'}")
    info = environment_info()
    update_results_section(
        "bench_mcts",
        f"## Search speed: decisions/s at {NUM_SIMULATIONS} simulations, ours vs mctx\n\n"
        f"Command: `{result['command'].strip()}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}, "
        f"one thread each (`XLA_FLAGS={XLA_FLAGS}`). Raw numbers: `benchmarks/out/mcts_speed.json`; plot: "
        f"`benchmarks/out/mcts_speed.png`.\n\n{markdown_table(cells)}\n\n"
        f"Median of {args.repeats} alternating repeats. Same MLP on both sides ({result['model']}). Q normalisation: "
        f"ours min-max over the root's tree with unvisited children at `{args.unvisited}`; mctx its default "
        "`qtransform_by_parent_and_siblings`. Bookkeeping share = search time outside the network call "
        "(kernels, set-up, conversions); kernels share = the numba selection/expansion/backup alone.",
    )
    return result


if __name__ == "__main__":
    main()
