"""Shared benchmark runner: ours and a peer side by side, alternating, reported as ratios.

Every benchmark script builds a list of :class:`Pair` (one measured quantity, ours and the peer's),
calls :func:`run_pairs`, then :func:`write_outputs` which writes ``benchmarks/out/<name>.json`` (every raw
number), ``benchmarks/out/<name>.png`` (bars with the repeat range) and the script's section of
``benchmarks/results.md`` (see BENCHMARKS.md in the design notes: median of >= 3 repeats, ratio ours/peer).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
RESULTS_MD = BENCH_DIR / "results.md"


@dataclass
class Pair:
    """
    One quantity measured for ours and for a peer on the same work.

    :param name: row label, e.g. ``"Breakout steps/s, roll"``
    :param ours: runs our side once and returns the measured value
    :param peer: runs the peer once and returns the measured value (``None`` for rows without a peer)
    :param unit: unit of the value, e.g. ``"steps/s"``
    :param higher_is_better: whether a larger value is better (throughput) or worse (time)
    :param ours_label: what "ours" is in this row
    :param peer_label: what the peer is in this row
    """

    name: str
    ours: Callable[[], float]
    peer: Callable[[], float] | None
    unit: str
    higher_is_better: bool = True
    ours_label: str = "sb3-frontier"
    peer_label: str = "peer"


@dataclass
class PairResult:
    """Raw and summarised numbers of one :class:`Pair`."""

    name: str
    unit: str
    higher_is_better: bool
    ours_label: str
    peer_label: str
    ours: list[float] = field(default_factory=list)
    peer: list[float] = field(default_factory=list)

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def peer_median(self) -> float | None:
        return statistics.median(self.peer) if self.peer else None

    @property
    def ratio(self) -> float | None:
        """Median over repeats of ours/peer, each repeat's pair measured back to back."""
        if not self.peer:
            return None
        return statistics.median(o / p for o, p in zip(self.ours, self.peer, strict=True))

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ours_median": self.ours_median,
            "peer_median": self.peer_median,
            "ratio_ours_over_peer": self.ratio,
        }


def run_pairs(pairs: Sequence[Pair], repeats: int = 3, warmup: int = 1, verbose: bool = True) -> list[PairResult]:
    """
    Measure every pair ``repeats`` times, alternating ours and the peer (the order flips every repeat).

    :param pairs: what to measure
    :param repeats: measured repeats per side (>= 3 for reported numbers)
    :param warmup: unmeasured runs per side first (compilation, caches)
    :param verbose: print each measurement
    :return: one result per pair
    """
    results = []
    for pair in pairs:
        result = PairResult(pair.name, pair.unit, pair.higher_is_better, pair.ours_label, pair.peer_label)
        for _ in range(warmup):
            pair.ours()
            if pair.peer is not None:
                pair.peer()
        for repeat in range(repeats):
            sides: list[tuple[str, Callable[[], float]]] = [("ours", pair.ours)]
            if pair.peer is not None:
                sides.append(("peer", pair.peer))
            if repeat % 2 == 1:
                sides.reverse()
            for side, fn in sides:
                value = float(fn())
                getattr(result, side).append(value)
                if verbose:
                    print(f"  {pair.name} [{side}] repeat {repeat}: {value:.4g} {pair.unit}", flush=True)
        results.append(result)
    return results


def timed_rate(work: Callable[[], int]) -> float:
    """
    Run ``work`` once and return its rate: the count it returns divided by the wall-clock seconds it took.

    :param work: does the work and returns how many items (steps, decisions) it processed
    :return: items per second
    """
    start = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - start)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def markdown_table(results: Sequence[PairResult]) -> str:
    """
    A markdown table: medians, range over repeats and the ratio ours/peer.

    :param results: measured pairs
    :return: the table
    """
    lines = [
        "| measure | ours | ours median (min-max) | peer | peer median (min-max) | ratio ours/peer |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ours = f"{_fmt(r.ours_median)} ({_fmt(min(r.ours))}-{_fmt(max(r.ours))}) {r.unit}"
        peer = f"{_fmt(r.peer_median)} ({_fmt(min(r.peer))}-{_fmt(max(r.peer))}) {r.unit}" if r.peer else "-"
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
        lines.append(f"| {r.name} | {r.ours_label} | {ours} | {r.peer_label} | {peer} | {ratio} |")
    return "\n".join(lines)


def bar_plot(results: Sequence[PairResult], path: Path, title: str) -> None:
    """
    Grouped bars (ours, peer) of the medians with min-max error bars, one group per pair.

    :param results: measured pairs (all in comparable units)
    :param path: PNG to write
    :param title: plot title
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(results))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(results)), 4.0))
    for offset, side in ((-width / 2, "ours"), (width / 2, "peer")):
        values = [getattr(r, side) for r in results]
        medians = [statistics.median(v) if v else 0.0 for v in values]
        low = [m - min(v) if v else 0.0 for m, v in zip(medians, values, strict=True)]
        high = [max(v) - m if v else 0.0 for m, v in zip(medians, values, strict=True)]
        label = results[0].ours_label if side == "ours" else "peer"
        ax.bar(x + offset, medians, width, yerr=[low, high], capsize=3, label=label)
    ax.set_xticks(x, [r.name for r in results], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(results[0].unit if results else "")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment_info() -> dict[str, Any]:
    """Machine and library versions, stored beside every raw result."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
    }
    try:
        import os

        info["cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass
    return info


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """
    The command that ran a benchmark, for results.md.

    :param module: module name, e.g. ``"benchmarks.bench_cartpole"``
    :param argv: the arguments given to ``main`` (``None``: the process's own)
    :return: ``python -m <module> <args>``
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return f"python -m {module}" + (" " + shlex.join(args) if args else "")


def update_results_section(name: str, body: str, results_md: Path = RESULTS_MD) -> None:
    """
    Replace (or append) the section ``name`` of ``benchmarks/results.md``, delimited by HTML comments.

    :param name: section key, usually the script name
    :param body: markdown of the section (heading included)
    :param results_md: the results file
    """
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    results_md.write_text(text)


def write_outputs(
    name: str,
    title: str,
    results: Sequence[PairResult],
    notes: str = "",
    extra: dict[str, Any] | None = None,
    plot: bool = True,
) -> str:
    """
    Write ``out/<name>.json``, ``out/<name>.png`` and the ``name`` section of results.md.

    :param name: benchmark name (file stem and results.md section key)
    :param title: section heading and plot title
    :param results: measured pairs
    :param notes: markdown paragraph under the table (what was measured, settings)
    :param extra: more raw data for the JSON
    :param plot: draw the bar plot
    :return: the markdown section written
    """
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    command = command_line(f"benchmarks.{Path(sys.argv[0]).stem}")
    info = environment_info()
    payload = {"name": name, "command": command, "environment": info, "results": [r.summary() for r in results]}
    if extra:
        payload.update(extra)
    (OUT_DIR / f"{name}.json").write_text(json.dumps(payload, indent=2))
    if plot and results:
        bar_plot(results, OUT_DIR / f"{name}.png", title)
    section = (
        f"## {title}\n\n"
        f"Command: `{command}` — {info['date']}, {info.get('cpus', '?')} CPUs, torch {info['torch']}. "
        f"Raw numbers: `benchmarks/out/{name}.json`; plot: `benchmarks/out/{name}.png`.\n\n"
        f"{markdown_table(results)}\n\n{notes}".rstrip()
    )
    update_results_section(name, section)
    return section


def median_range(values: Sequence[float], fmt: str) -> str:
    """``"median (min-max)"`` of ``values``, each formatted with ``fmt``."""
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def stayed_median(values: Sequence[float | None]) -> float | None:
    """
    Median over seeds where ``None`` is a seed that did not reach (and stay) within the budget: such a seed counts as
    beyond every reached value (a censored sample), so the median exists while more than half the seeds reached.

    :param values: one value per seed, None for a seed that never reached
    :return: the median, or None if half the seeds or more never reached
    """
    reached = [v for v in values if v is not None]
    if len(reached) <= len(values) // 2:
        return None
    return statistics.median([*reached, *[math.inf] * (len(values) - len(reached))])


def stayed_median_range(values: Sequence[float | None], fmt: str) -> tuple[str, float] | None:
    """
    :func:`stayed_median` as the cell ``"median (min-max)"``, the range ending in ``never`` when some seed never
    reached, with the median itself.

    :param values: one value per seed, None for a seed that never reached
    :param fmt: format of each number
    :return: ``(cell, median)``, or None where the median does not exist
    """
    median = stayed_median(values)
    if median is None:
        return None
    reached = [v for v in values if v is not None]
    top = format(max(reached), fmt) if len(reached) == len(values) else "never"
    return f"{format(median, fmt)} ({format(min(reached), fmt)}-{top})", median


STAYED_MEDIAN_NOTE = (
    "A seed that never stayed counts as beyond the budget: the median exists while more than half the seeds stayed, "
    "and its range then ends in never."
)


def stayed_cells(runs: Sequence[dict[str, Any]]) -> tuple[str, tuple[float, float] | None]:
    """
    The table cells ``"env steps | training s"`` of the reached-and-stayed headline over one algorithm's seeds
    (:func:`stayed_median_range`), and the two medians (None where they do not exist).

    :param runs: one dict per seed with ``stayed_steps`` and ``stayed_seconds`` (None: never stayed)
    """
    steps = stayed_median_range([r["stayed_steps"] for r in runs], ",.0f")
    secs = stayed_median_range([r["stayed_seconds"] for r in runs], ".0f")
    if steps is None or secs is None:
        return "not on most seeds | not on most seeds", None
    return f"{steps[0]} | {secs[0]}", (steps[1], secs[1])


def reached_and_stayed(curve: Sequence[tuple[int, float, float]], threshold: float) -> tuple[int, float] | None:
    """
    BENCHMARKS.md's headline: the first evaluation at or above ``threshold`` after which every later evaluation up to
    the budget stays at or above it.

    :param curve: ``(env steps, training seconds, mean return)`` per evaluation, in order
    :param threshold: the return to reach
    :return: ``(env steps, training seconds)`` of that evaluation, or None if the last evaluation is below it
    """
    reached = None
    for steps, seconds, mean in curve:
        if mean >= threshold:
            reached = reached or (steps, seconds)
        else:
            reached = None
    return reached


def first_crossing(curve: Sequence[tuple[int, float, float]], threshold: float) -> tuple[int, float] | None:
    """
    The first evaluation at or above ``threshold`` (reported beside :func:`reached_and_stayed`).

    :param curve: ``(env steps, training seconds, mean return)`` per evaluation, in order
    :param threshold: the return to reach
    :return: ``(env steps, training seconds)``, or None if never reached
    """
    return next(((steps, seconds) for steps, seconds, mean in curve if mean >= threshold), None)


class EvaluationCurve:
    """
    Evaluates the model every ``eval_every`` environment steps (deterministic, mean over ``n_episodes``) for the whole
    budget, recording ``(env steps, training seconds, mean return)``; evaluation time is excluded from the training
    wall-clock. Training is never stopped early: read :meth:`reached_and_stayed`, :meth:`first_crossing` and
    :attr:`final` afterwards.

    Use :meth:`make` to get the SB3 callback.

    :param eval_env: evaluation VecEnv
    :param eval_every: environment steps between evaluations
    :param n_episodes: evaluation episodes
    """

    def __init__(self, eval_env: Any, eval_every: int, n_episodes: int = 10):
        self.eval_env = eval_env
        self.eval_every = eval_every
        self.n_episodes = n_episodes
        self.curve: list[tuple[int, float, float]] = []  # (env steps, training seconds, mean return)

    @property
    def final(self) -> float | None:
        """The last evaluation's mean return."""
        return self.curve[-1][2] if self.curve else None

    def reached_and_stayed(self, threshold: float) -> tuple[int, float] | None:
        """See :func:`reached_and_stayed`."""
        return reached_and_stayed(self.curve, threshold)

    def first_crossing(self, threshold: float) -> tuple[int, float] | None:
        """See :func:`first_crossing`."""
        return first_crossing(self.curve, threshold)

    def summary(self, threshold: float) -> dict[str, Any]:
        """
        What a benchmark records of one run: reached-and-stayed and first crossing (env steps, training seconds), the
        final evaluation, the training seconds of the whole budget and the curve itself.

        :param threshold: the return to reach
        """
        stayed, first = self.reached_and_stayed(threshold), self.first_crossing(threshold)
        return {
            "stayed_steps": stayed[0] if stayed else None,
            "stayed_seconds": stayed[1] if stayed else None,
            "first_steps": first[0] if first else None,
            "final": self.final,
            "train_seconds": self.curve[-1][1] if self.curve else None,
            "curve": self.curve,
        }

    def make(self) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.vec_env import sync_envs_normalization

        outer = self

        class _Callback(BaseCallback):
            def _on_training_start(self) -> None:
                self.next_eval = outer.eval_every
                self.eval_seconds = 0.0
                self.start = time.perf_counter()

            def _evaluate(self) -> None:
                eval_start = time.perf_counter()
                sync_envs_normalization(self.training_env, outer.eval_env)  # VecNormalize statistics, if any
                mean, _ = evaluate_policy(self.model, outer.eval_env, n_eval_episodes=outer.n_episodes, deterministic=True)
                train_seconds = eval_start - self.start - self.eval_seconds
                self.eval_seconds += time.perf_counter() - eval_start
                outer.curve.append((self.num_timesteps, train_seconds, float(mean)))

            def _on_step(self) -> bool:
                if self.num_timesteps >= self.next_eval:
                    self.next_eval += outer.eval_every
                    self._evaluate()
                return True

            def _on_training_end(self) -> None:
                if not outer.curve or outer.curve[-1][0] != self.num_timesteps:
                    self._evaluate()  # the model at the end of the budget, the one a user keeps

        return _Callback()
