"""Tests for the LifeLoss wrapper: exact flag/termination indices on a scripted game, then real ALE games."""

from __future__ import annotations

from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import make_vec_env

from sb3_frontier.wrappers.life_loss import LifeLoss

gym.register_envs(ale_py)

FIRE = 1


class FakeAle:
    """Stand-in for ``ale_py.ALEInterface``: only ``lives()``."""

    def __init__(self, env: ScriptedLivesEnv) -> None:
        self.env = env

    def lives(self) -> int:
        return self.env.lives


class ScriptedLivesEnv(gym.Env[np.ndarray, int]):
    """
    A game whose lives change at known steps (counted from 1 after each reset of the game).

    The observation is ``[game index, step within the game]``; every step gives reward 1.
    """

    def __init__(
        self,
        n_lives: int,
        loss_steps: tuple[int, ...],
        end_step: int,
        bonus_steps: tuple[int, ...] = (),
        truncate: bool = False,
        lives_in_info: bool = True,
        with_ale: bool = False,
    ) -> None:
        self.observation_space = gym.spaces.Box(0, 10_000, shape=(2,), dtype=np.int64)
        self.action_space = gym.spaces.Discrete(3)
        self.n_lives, self.loss_steps, self.bonus_steps = n_lives, loss_steps, bonus_steps
        self.end_step, self.truncate, self.lives_in_info = end_step, truncate, lives_in_info
        if with_ale:
            self.ale = FakeAle(self)
        self.reset_calls = 0
        self.reset_seeds: list[int | None] = []
        self.actions: list[int] = []
        self.lives = n_lives
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.reset_calls, self.t], dtype=np.int64)

    def _info(self) -> dict[str, Any]:
        return {"lives": self.lives} if self.lives_in_info else {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.reset_calls += 1
        self.reset_seeds.append(seed)
        self.lives, self.t = self.n_lives, 0
        return self._obs(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.t < self.end_step, "stepped a finished game"
        self.actions.append(int(action))
        self.t += 1
        self.lives -= self.loss_steps.count(self.t)
        self.lives += self.bonus_steps.count(self.t)
        over = self.t == self.end_step
        terminated, truncated = (False, over) if self.truncate else (over, False)
        return self._obs(), 1.0, terminated, truncated, self._info()


def random_action(rng: np.random.Generator, n_actions: int) -> int:
    """FIRE often so that the ball is launched, otherwise uniform."""
    return FIRE if rng.random() < 0.3 else int(rng.integers(n_actions))


# ---------------------------------------------------------------------------------------------------------------------
# Scripted game: exact indices
# ---------------------------------------------------------------------------------------------------------------------


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        LifeLoss(ScriptedLivesEnv(3, (3, 5, 8), 8), mode="episodic")  # type: ignore[arg-type]


@pytest.mark.parametrize("lives_in_info, with_ale", [(True, False), (False, True), (True, True)])
def test_roll_flags_exact_steps(lives_in_info: bool, with_ale: bool) -> None:
    inner = ScriptedLivesEnv(3, loss_steps=(3, 5, 8), end_step=8, lives_in_info=lives_in_info, with_ale=with_ale)
    env = LifeLoss(inner, mode="roll")
    env.reset(seed=7)
    assert inner.reset_calls == 1 and inner.reset_seeds == [7]
    flags, terms = [], []
    for _ in range(8):
        _, _, terminated, truncated, info = env.step(2)
        assert ("lives" in info) == lives_in_info
        flags.append(info["life_loss"])
        terms.append(terminated)
        assert not truncated
    # 1-based steps 3, 5 and 8 lose a life; only the real game over at 8 terminates
    assert [i + 1 for i, f in enumerate(flags) if f] == [3, 5, 8]
    assert [i + 1 for i, t in enumerate(terms) if t] == [8]
    assert all(isinstance(f, bool) for f in flags)
    assert env.was_real_done
    env.reset()
    assert inner.reset_calls == 2  # roll mode always resets the game
    assert inner.actions == [2] * 8  # no hidden no-op steps


def test_info_lives_take_precedence_over_ale() -> None:
    inner = ScriptedLivesEnv(3, loss_steps=(3, 5, 8), end_step=8, with_ale=True)
    inner.ale.lives = lambda: 99  # type: ignore[method-assign]  # would never flag a loss if it were read
    env = LifeLoss(inner, mode="roll")
    env.reset()
    flags = [env.step(0)[4]["life_loss"] for _ in range(8)]
    assert [i + 1 for i, f in enumerate(flags) if f] == [3, 5, 8]


def test_no_lives_reported_raises() -> None:
    env = LifeLoss(ScriptedLivesEnv(3, (3, 5, 8), 8, lives_in_info=False, with_ale=False))
    with pytest.raises(ValueError, match="reports no lives"):
        env.reset()


def test_bonus_life_is_not_a_loss() -> None:
    env = LifeLoss(ScriptedLivesEnv(2, loss_steps=(3, 6, 9), bonus_steps=(4,), end_step=9), mode="roll")
    env.reset()
    flags = [env.step(0)[4]["life_loss"] for _ in range(9)]
    assert [i + 1 for i, f in enumerate(flags) if f] == [3, 6, 9]


@pytest.mark.parametrize("lives_in_info, with_ale", [(True, False), (False, True)])
def test_reset_mode_continues_game(lives_in_info: bool, with_ale: bool) -> None:
    inner = ScriptedLivesEnv(3, loss_steps=(3, 5, 8), end_step=8, lives_in_info=lives_in_info, with_ale=with_ale)
    env = LifeLoss(inner, mode="reset")
    obs, _ = env.reset(seed=3)
    assert obs.tolist() == [1, 0] and inner.reset_calls == 1

    # episode 1: game steps 1..3, life lost at 3
    results = [env.step(2) for _ in range(3)]
    assert [r[2] for r in results] == [False, False, True]
    assert [r[4]["life_loss"] for r in results] == [False, False, True]
    assert not env.was_real_done

    # a plain reset continues the same game with one no-op step (game step 4), nothing is reset
    obs, _ = env.reset()
    assert obs.tolist() == [1, 4]
    assert inner.reset_calls == 1 and inner.actions == [2, 2, 2, 0]

    # episode 2: game step 5 loses a life
    obs, _, terminated, truncated, info = env.step(2)
    assert obs.tolist() == [1, 5] and terminated and not truncated and info["life_loss"]
    obs, _ = env.reset()
    assert obs.tolist() == [1, 6] and inner.reset_calls == 1

    # episode 3: game steps 7, 8; the last life goes at 8 with the real game over
    r7, r8 = env.step(2), env.step(2)
    assert (r7[2], r7[4]["life_loss"]) == (False, False)
    assert (r8[2], r8[4]["life_loss"]) == (True, True)
    assert env.was_real_done

    obs, _ = env.reset(seed=5)
    assert obs.tolist() == [2, 0]
    assert inner.reset_calls == 2 and inner.reset_seeds == [3, 5]
    assert inner.actions == [2, 2, 2, 0, 2, 0, 2, 2]


@pytest.mark.parametrize("truncate", [False, True])
def test_reset_mode_noop_step_ending_game_resets(truncate: bool) -> None:
    # a life is lost at step 3 (1 life left) and the game ends at step 4 whatever the action: the no-op ends it
    inner = ScriptedLivesEnv(2, loss_steps=(3,), end_step=4, truncate=truncate)
    env = LifeLoss(inner, mode="reset")
    env.reset()
    results = [env.step(1) for _ in range(3)]
    assert results[-1][2] and results[-1][4]["life_loss"] and not env.was_real_done
    obs, info = env.reset()
    assert inner.actions == [1, 1, 1, 0]
    assert inner.reset_calls == 2 and obs.tolist() == [2, 0]
    assert info["lives"] == 2 and env.lives == 2
    # the new game is tracked from its reset: the next loss is flagged and terminates
    results = [env.step(1) for _ in range(3)]
    assert [r[4]["life_loss"] for r in results] == [False, False, True]
    assert [r[2] for r in results] == [False, False, True]


def test_reset_mode_truncation_is_a_real_end() -> None:
    inner = ScriptedLivesEnv(3, loss_steps=(3, 5, 8), end_step=2, truncate=True)
    env = LifeLoss(inner, mode="reset")
    env.reset()
    env.step(0)
    _, _, terminated, truncated, info = env.step(0)
    assert truncated and not terminated and not info["life_loss"] and env.was_real_done
    obs, _ = env.reset()
    assert inner.reset_calls == 2 and obs.tolist() == [2, 0] and inner.actions == [0, 0]


def test_reset_mode_zero_lives_before_game_over() -> None:
    # Qbert-like: the count reaches 0 at step 5 but the game only ends at step 7
    inner = ScriptedLivesEnv(2, loss_steps=(3, 5), end_step=7)
    env = LifeLoss(inner, mode="reset")
    env.reset()
    flags, terms = [], []
    for _ in range(3):
        _, _, terminated, _, info = env.step(0)
        flags.append(info["life_loss"])
        terms.append(terminated)
    assert flags == [False, False, True] and terms == [False, False, True]
    env.reset()  # continues: game step 4
    for _ in range(3):  # game steps 5, 6, 7
        _, _, terminated, _, info = env.step(0)
        flags.append(info["life_loss"])
        terms.append(terminated)
    # the last life is flagged at 5; the episode ends with the game at 7, not in between
    assert flags[3:] == [True, False, False] and terms[3:] == [False, False, True]
    assert env.was_real_done and inner.reset_calls == 1
    env.reset()
    assert inner.reset_calls == 2


@pytest.mark.parametrize("reset_kwargs", [{"seed": 123}, {"options": {"difficulty": 1}}, {"seed": 0, "options": {}}])
def test_reset_mode_seeded_reset_starts_a_new_game(reset_kwargs: dict[str, Any]) -> None:
    """A reset with a seed or options resets the game even right after a lost life, and passes them on."""
    inner = ScriptedLivesEnv(3, loss_steps=(3, 5, 8), end_step=8)
    env = LifeLoss(inner, mode="reset")
    env.reset(seed=123)
    for _ in range(3):
        _, _, terminated, _, info = env.step(2)
    assert terminated and info["life_loss"] and not env.was_real_done
    obs, info = env.reset(**reset_kwargs)
    assert inner.reset_calls == 2 and inner.actions == [2, 2, 2]  # no no-op step: a new game
    assert obs.tolist() == [2, 0] and info["lives"] == 3 and env.lives == 3
    assert inner.reset_seeds == [123, reset_kwargs.get("seed")]
    # the new game is tracked from its reset; a plain reset right after it resets again (nothing to continue)
    env.reset()
    assert inner.reset_calls == 3 and inner.actions == [2, 2, 2]
    results = [env.step(1) for _ in range(3)]
    assert [r[4]["life_loss"] for r in results] == [False, False, True]
    assert [r[2] for r in results] == [False, False, True]


def test_reset_mode_seeded_reset_is_deterministic_on_breakout() -> None:
    """reset(seed=s) gives the same observation whether or not a life was just lost (gymnasium's contract)."""
    env = LifeLoss(gym.make("ALE/Breakout-v5"), mode="reset")
    first_obs, _ = env.reset(seed=11)
    rng = np.random.default_rng(5)
    terminated = False
    while not terminated:
        _, _, terminated, truncated, info = env.step(random_action(rng, 4))
        assert not truncated
    assert info["life_loss"] and not env.was_real_done and info["lives"] == 4
    obs, info = env.reset(seed=11)
    np.testing.assert_array_equal(obs, first_obs)
    assert info["lives"] == 5


@pytest.mark.parametrize("mode", ["roll", "reset"])
def test_spec_records_the_wrapper(mode: str) -> None:
    env = LifeLoss(gym.make("ALE/Breakout-v5"), mode=mode)  # type: ignore[arg-type]
    assert env.spec is not None
    wrapper_spec = env.spec.additional_wrappers[-1]
    assert wrapper_spec.entry_point == "sb3_frontier.wrappers.life_loss:LifeLoss"
    assert wrapper_spec.kwargs == {"mode": mode}
    remade = gym.make(env.spec)
    assert isinstance(remade, LifeLoss) and remade.mode == mode
    assert remade.spec is not None and remade.spec.additional_wrappers == env.spec.additional_wrappers
    remade.close()
    env.close()


def test_double_reset_after_real_reset_resets_again() -> None:
    inner = ScriptedLivesEnv(3, loss_steps=(3, 5, 8), end_step=8)
    env = LifeLoss(inner, mode="reset")
    env.reset()
    env.reset()
    assert inner.reset_calls == 2 and inner.actions == []


# ---------------------------------------------------------------------------------------------------------------------
# Real ALE games
# ---------------------------------------------------------------------------------------------------------------------


class CountResets(gym.Wrapper):
    """Count the resets that reach the game."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.resets = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.resets += 1
        return self.env.reset(**kwargs)


def test_breakout_roll_one_game_five_flags() -> None:
    inner = gym.make("ALE/Breakout-v5")
    env = LifeLoss(inner, mode="roll")
    ale = inner.unwrapped.ale  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    for game in range(2):
        env.reset(seed=game)
        assert ale.lives() == 5
        flag_steps, loss_steps, done, t = [], [], False, 0
        prev = ale.lives()
        while not done:
            _, _, terminated, truncated, info = env.step(random_action(rng, 4))
            done = terminated or truncated
            t += 1
            if info["life_loss"]:
                flag_steps.append(t)
            if ale.lives() < prev:  # independent reading of the emulator
                loss_steps.append(t)
            prev = ale.lives()
        assert terminated and not truncated
        assert len(flag_steps) == 5 and flag_steps == loss_steps
        assert flag_steps[-1] == t  # the last life goes with the game over


def test_breakout_reset_five_episodes_per_game() -> None:
    counter = CountResets(gym.make("ALE/Breakout-v5"))
    env = LifeLoss(counter, mode="reset")
    rng = np.random.default_rng(1)
    n_games = 2
    episodes_per_game = []
    env.reset(seed=0)
    for game in range(n_games):
        assert counter.resets == game + 1
        n_episodes = 0
        start_lives = []
        while True:
            start_lives.append(env.unwrapped.ale.lives())  # type: ignore[attr-defined]
            while True:
                _, _, terminated, truncated, info = env.step(random_action(rng, 4))
                assert not truncated
                if terminated:
                    break
                assert not info["life_loss"]
            assert info["life_loss"]  # every episode ends with a lost life
            n_episodes += 1
            if env.was_real_done:
                break
            env.reset()
            assert counter.resets == game + 1  # lost life: the game is continued, not reset
        assert start_lives == [5, 4, 3, 2, 1]
        episodes_per_game.append(n_episodes)
        env.reset()
    assert episodes_per_game == [5] * n_games
    assert counter.resets == n_games + 1


def test_life_loss_over_sb3_atari_wrapper() -> None:
    env = LifeLoss(AtariWrapper(gym.make("BreakoutNoFrameskip-v4"), terminal_on_life_loss=False), mode="roll")
    rng = np.random.default_rng(2)
    env.reset(seed=0)
    n_flags, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(random_action(rng, 4))
        n_flags += info["life_loss"]
        done = terminated or truncated
    assert n_flags == 5


@pytest.mark.parametrize("mode", ["roll", "reset"])
def test_make_vec_env_monitor_reports_whole_games(mode: str) -> None:
    vec_env = make_vec_env("ALE/Breakout-v5", n_envs=1, seed=0, wrapper_class=LifeLoss, wrapper_kwargs=dict(mode=mode))
    rng = np.random.default_rng(3)
    vec_env.reset()
    n_games = 2
    games = 0
    ret, length, dones, flags = 0.0, 0, 0, 0
    while games < n_games:
        _, rewards, done, infos = vec_env.step(np.array([random_action(rng, 4)]))
        info = infos[0]
        ret += float(rewards[0])
        length += 1
        dones += int(done[0])
        flags += info["life_loss"]
        if "episode" in info:
            games += 1
            assert done[0] and info["life_loss"]
            assert flags == 5  # Monitor reports only at the real game over
            assert info["episode"]["r"] == pytest.approx(ret)
            if mode == "roll":
                assert dones == 1 and info["episode"]["l"] == length
            else:
                # one done per life; Monitor also counts the no-op step taken at each of the 4 continuations
                assert dones == 5 and info["episode"]["l"] == length + 4
            ret, length, dones, flags = 0.0, 0, 0, 0
        else:
            assert not (mode == "roll" and done[0])
    vec_env.close()


@pytest.mark.parametrize("mode", ["roll", "reset"])
def test_pong_never_flags(mode: str) -> None:
    counter = CountResets(gym.make("ALE/Pong-v5"))
    env = LifeLoss(counter, mode=mode)  # type: ignore[arg-type]
    rng = np.random.default_rng(4)
    _, info = env.reset(seed=0)
    assert info["lives"] == 0
    t, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(int(rng.integers(6)))
        t += 1
        assert info["life_loss"] is False and info["lives"] == 0
        done = terminated or truncated
    assert terminated and t > 100 and env.was_real_done
    env.reset()
    assert counter.resets == 2
