"""``make demo``'s entry point runs and reports an evaluation return."""

from __future__ import annotations

from sb3_frontier.demo import main


def test_demo_runs_on_a_tiny_budget(capsys):
    mean = main(["--steps", "64", "--no-progress"])
    out = capsys.readouterr().out
    assert "evaluation return" in out and f"{mean:.1f}" in out
    assert 8.0 <= mean <= 500.0  # CartPole episodes last 8 to 500 steps
