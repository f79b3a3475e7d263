"""Tests of the benchmark harness: the side-by-side runner, the results file and ``make bench``'s driver."""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common, run_all


def test_run_pairs_alternates_sides_and_skips_warmup() -> None:
    calls: list[str] = []
    values = {"ours": iter([99.0, 2.0, 4.0, 6.0]), "peer": iter([99.0, 1.0, 1.0, 4.0])}

    def side(name: str) -> Callable[[], float]:
        def run() -> float:
            calls.append(name)
            return next(values[name])

        return run

    pair = common.Pair("rate", side("ours"), side("peer"), "steps/s")
    (result,) = common.run_pairs([pair], repeats=3, warmup=1, verbose=False)
    # warm-up (ours, peer), then repeats in the order ours-peer, peer-ours, ours-peer
    assert calls == ["ours", "peer", "ours", "peer", "peer", "ours", "ours", "peer"]
    assert result.ours == [2.0, 4.0, 6.0] and result.peer == [1.0, 1.0, 4.0]
    assert result.ours_median == 4.0 and result.peer_median == 1.0
    assert result.ratio == pytest.approx(2.0)  # median of the per-repeat ratios 2, 4, 1.5
    table = common.markdown_table([result])
    assert "| rate | sb3-frontier | 4 (2-6) steps/s | peer | 1 (1-4) steps/s | 2.000 |" in table


def test_pair_without_peer() -> None:
    (result,) = common.run_pairs([common.Pair("x", lambda: 3.0, None, "s")], repeats=3, warmup=0, verbose=False)
    assert result.peer_median is None and result.ratio is None
    assert "| - | - |" in common.markdown_table([result])


def test_update_results_section_replaces_only_its_own(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    common.update_results_section("a", "## A\n\nfirst", results)
    common.update_results_section("b", "## B\n\nsecond", results)
    common.update_results_section("a", "## A\n\nthird", results)
    text = results.read_text()
    assert text.startswith("# Benchmark results\n")
    assert "third" in text and "first" not in text and "second" in text
    assert text.count("<!-- bench:a -->") == 1 and text.index("<!-- bench:a -->") < text.index("<!-- bench:b -->")


@pytest.mark.parametrize("name", run_all.BENCHMARKS)
def test_run_all_names_real_benchmarks(name: str) -> None:
    assert callable(importlib.import_module(f"benchmarks.{name}").main)


def test_run_all_runs_each_and_reports_failures(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[str] = []

    def fake_call(command: list[str]) -> int:
        ran.append(command[-1])
        return 3 if command[-1] == "benchmarks.bench_mcts" else 0

    monkeypatch.setattr(run_all.subprocess, "call", fake_call)
    assert run_all.main(["--only", "bench_wrappers", "bench_mcts"]) == 1
    assert ran == ["benchmarks.bench_wrappers", "benchmarks.bench_mcts"]
    assert "failed: bench_mcts" in capsys.readouterr().err
    ran.clear()
    assert run_all.main([]) == 1 and len(ran) == len(run_all.BENCHMARKS)


def test_reached_and_stayed_is_the_crossing_that_lasts() -> None:
    curve = [(1, 1.0, 100.0), (2, 2.0, 480.0), (3, 3.0, 300.0), (4, 4.0, 476.0), (5, 5.0, 500.0)]
    assert common.first_crossing(curve, 475) == (2, 2.0)
    assert common.reached_and_stayed(curve, 475) == (4, 4.0)
    assert common.reached_and_stayed([*curve, (6, 6.0, 474.0)], 475) is None  # lost at the end: not reached
    assert common.reached_and_stayed([], 475) is None and common.first_crossing([], 475) is None


def test_stayed_median_counts_a_seed_that_never_stayed_as_beyond_the_budget() -> None:
    rng = np.random.default_rng(0)
    never = 1e18  # brute force: a seed that never stayed is a number beyond every budget
    for _ in range(300):
        n = int(rng.integers(1, 8))
        values = [None if rng.random() < 0.4 else float(rng.integers(1, 100)) * 1000 for _ in range(n)]
        brute = statistics.median([never if v is None else v for v in values])
        got = common.stayed_median(values)
        if brute < never / 2:
            assert got == brute
        else:
            assert got is None and common.stayed_median_range(values, ",.0f") is None
    assert common.stayed_median_range([37000.0, None, 49000.0, 38000.0, 37000.0], ",.0f") == ("38,000 (37,000-never)", 38000)
    assert common.stayed_median_range([3.0, 1.0, 2.0], ".0f") == ("2 (1-3)", 2.0)
    runs = [{"stayed_steps": s, "stayed_seconds": None if s is None else s / 1000} for s in (4000, None, 2000)]
    assert common.stayed_cells(runs) == ("4,000 (2,000-never) | 4 (2-never)", (4000, 4.0))
    assert common.stayed_cells(runs[1:]) == ("not on most seeds | not on most seeds", None)
    assert common.stayed_median_range([3.0, None, None], ".0f") is None


def test_evaluation_curve_shares_the_observation_statistics() -> None:
    """An evaluation env under VecNormalize is evaluated with the training env's statistics, at each evaluation."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("CartPole-v1", seed=1), training=False, norm_reward=False)
    curve = common.EvaluationCurve(eval_env, eval_every=64, n_episodes=1)
    PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1).learn(128, callback=curve.make())
    assert [steps for steps, _, _ in curve.curve] == [64, 128]
    np.testing.assert_array_equal(eval_env.obs_rms.mean, env.obs_rms.mean)


def test_evaluation_curve_summary_reads_its_curve() -> None:
    curve = common.EvaluationCurve(eval_env=None, eval_every=1)
    assert curve.summary(475)["final"] is None and curve.summary(475)["stayed_steps"] is None
    curve.curve = [(1, 1.0, 100.0), (2, 2.0, 480.0), (3, 3.0, 300.0), (4, 4.0, 476.0), (5, 5.5, 500.0)]
    summary = curve.summary(475)
    assert (summary["stayed_steps"], summary["stayed_seconds"], summary["first_steps"]) == (4, 4.0, 2)
    assert (summary["final"], summary["train_seconds"]) == (500.0, 5.5) and summary["curve"] is curve.curve


def test_memory_benchmark_variant_overrides_r2d2_and_keeps_the_headline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--r2d2-kwargs``/``--r2d2-budget`` change R2D2's zoo entry (policy_kwargs key by key) and its budget; the
    variant goes to its own JSON and leaves the headline section of results.md alone."""
    bench_memory = importlib.import_module("benchmarks.bench_memory")
    model, _, budget = bench_memory.build(
        "cartpole-novel",
        "r2d2",
        0,
        {"burn_in": 4, "learning_rate": "lin_3e-3", "policy_kwargs": {"lstm_hidden_size": 32}},
        20_000,
    )
    assert (model.burn_in, budget, model.learning_rate(1.0), model.learning_rate(0.5)) == (4, 20_000, 3e-3, 1.5e-3)
    assert model.policy.lstm.hidden_size == 32 and model.policy.optimizer.defaults["eps"] == 1e-5  # the entry's eps kept
    plain, _, plain_budget = bench_memory.build("cartpole-novel", "r2d2", 0)
    assert (plain.burn_in, plain.policy.lstm.hidden_size, plain_budget, plain.learning_rate(1.0)) == (20, 64, 50_000, 2e-3)

    monkeypatch.setattr(bench_memory, "OUT_DIR", tmp_path)

    def no_update(*args: object) -> None:
        raise AssertionError("a variant must not replace the headline")

    monkeypatch.setattr(bench_memory, "update_results_section", no_update)
    args = ["--seeds", "1", "--algos", "r2d2", "--eval-every", "200", "--r2d2-budget", "400"]
    bench_memory.main([*args, "--r2d2-kwargs", '{"learning_starts": 200, "buffer_size": 1000}'])
    assert (tmp_path / "memory_cartpole-novel_variant.json").exists()
    assert not (tmp_path / "memory_cartpole-novel.json").exists()
    assert "| r2d2 | 0/1 |" in capsys.readouterr().out

    # --seed-list alone makes a variant: the given seeds, the variant JSON, the headline left alone.
    (tmp_path / "memory_cartpole-novel_variant.json").unlink()
    seen: list[int] = []

    def fake_run(task: str, algo: str, seed: int, *rest: object) -> dict[str, object]:
        seen.append(seed)
        run = {"stayed_steps": None, "stayed_seconds": None, "first_steps": None, "final": 10.0, "train_seconds": 1.0}
        return {"algo": algo, "seed": seed, "budget": 400, **run, "curve": []}

    monkeypatch.setattr(bench_memory, "run_one", fake_run)
    bench_memory.main(["--seed-list", "3", "5", "--algos", "r2d2"])
    assert seen == [3, 5] and (tmp_path / "memory_cartpole-novel_variant.json").exists()
    assert "seed 3: never" in capsys.readouterr().out and not (tmp_path / "memory_cartpole-novel.json").exists()


def test_bench_cartpole_overrides_and_the_stayed_by_table() -> None:
    bench_cartpole = importlib.import_module("benchmarks.bench_cartpole")
    assert bench_cartpole.parse_overrides(["gradient_steps=3", "learning_rate=1e-3", "search=muzero"]) == {
        "gradient_steps": 3,
        "learning_rate": 1e-3,
        "search": "muzero",
    }
    for bad in (["gradient_steps"], ["=3"], ["two words=1"]):
        with pytest.raises(SystemExit):
            bench_cartpole.parse_overrides(bad)
    runs = [{"algo": "gumbel", "budget": 8000, "stayed_steps": steps} for steps in (4000, 6000, None, 8000, None)] + [
        {"algo": "ppo", "budget": 100_000, "stayed_steps": 20_000}
    ]
    lines = bench_cartpole.stayed_by_table(runs, ["gumbel", "ppo"])
    assert lines[0].startswith("| algorithm | by 4,000 | by 6,000 | by 8,000 |")
    assert lines[2] == "| gumbel | 1/5 | 2/5 | 3/5 | 8,000 |"  # median of 4000, 6000, 8000, beyond, beyond
    assert len(lines) == 3  # PPO is not ours: no row
    assert bench_cartpole.median_beyond_budget([None, None, 5000]) == "beyond the budget"
