"""Life-loss signal for games with lives (Atari): flag the step, and optionally end the episode there."""

from __future__ import annotations

from typing import Any, Literal, SupportsFloat

import gymnasium as gym
from gymnasium.core import ActType, ObsType

LifeLossMode = Literal["roll", "reset"]
_MODES: tuple[str, ...] = ("roll", "reset")


class LifeLoss(gym.Wrapper[ObsType, ActType, ObsType, ActType], gym.utils.RecordConstructorArgs):
    """
    Mark every step on which the agent loses a life with ``info["life_loss"] = True``.

    The lives count is read from ``info["lives"]`` (ALE reports it in every ``step``/``reset`` info, and any
    env that reports lives the same way works too); when an info has no ``"lives"`` key the wrapper falls
    back to ``env.unwrapped.ale.lives()``. An env that reports neither raises a ``ValueError`` at the first
    ``reset`` (or ``step``). A life is lost whenever the count decreases, the last life at game over
    included; a bonus life (the count going up) only updates the count. After every ``step``,
    ``info["life_loss"]`` is present and is ``True`` or ``False``.

    Two modes:

    - ``"roll"`` (default): the episode goes on through a lost life; ``terminated``/``truncated`` are those of
      the wrapped env and only the flag marks the step. Our algorithms (R2D2, PopArt-IMPALA, MuZero) honour
      the flag: they stop bootstrapping at a life-loss step (the n-step / V-trace / value target is cut there
      as at a termination) but keep the recurrent state running, since the game itself goes on. This is the
      life-loss "roll" ablation of the R2D2 paper (Kapturowski et al. 2019, Sec. 4 and Appendix).
    - ``"reset"``: SB3's ``EpisodicLifeEnv`` semantics. A life-loss step returns ``terminated=True``; the next
      plain ``reset()`` does not reset the game but continues it: it takes one no-op step (action ``0``) to
      leave the lost-life state and returns that observation and info (the reward of that step is not
      returned, as in SB3; if that no-op step itself ends the game, the game is really reset). The game is
      really reset after a real game over (the wrapped env's own ``terminated``/``truncated``, exposed as
      :attr:`was_real_done`), and by any ``reset`` given a ``seed`` or ``options``, which are passed on: a
      seeded reset starts a new game, so that ``reset(seed=s)`` always gives the same first observation
      (gymnasium's determinism contract, checked by its ``check_env``), whatever the previous episode did.
      SB3's VecEnvs pass the seed only to the first reset, so training continues games as intended. As in
      SB3, the loss of the last life ends the episode only through the wrapped env's own termination: some
      games (Qbert) stay at 0 lives for a few frames before game over, and those frames are not split into
      an episode of their own (the step is still flagged).

    The wrapper records its constructor arguments (``gymnasium.utils.RecordConstructorArgs``), so that
    ``env.spec`` lists it and ``gym.make(env.spec)`` rebuilds the same stack.

    Put ``Monitor`` inside this wrapper, as SB3's ``make_vec_env`` does with ``wrapper_class``, so that the
    episode statistics it reports are those of whole games in both modes. Do not stack it with SB3's
    ``EpisodicLifeEnv`` (use ``AtariWrapper(env, terminal_on_life_loss=False)``).

    Example::

        import ale_py
        import gymnasium as gym
        from stable_baselines3.common.env_util import make_vec_env

        from sb3_frontier.wrappers import LifeLoss

        gym.register_envs(ale_py)
        vec_env = make_vec_env("ALE/Breakout-v5", n_envs=4, wrapper_class=LifeLoss, wrapper_kwargs=dict(mode="roll"))
        obs = vec_env.reset()
        obs, rewards, dones, infos = vec_env.step([vec_env.action_space.sample() for _ in range(4)])
        life_losses = [info["life_loss"] for info in infos]  # stop bootstrapping there, keep the LSTM state

    :param env: Environment to wrap; it must report lives in ``info["lives"]`` or through ``unwrapped.ale.lives()``
    :param mode: ``"roll"`` to only flag the step, ``"reset"`` to also end the episode there (without
        resetting the game)
    """

    def __init__(self, env: gym.Env[ObsType, ActType], mode: LifeLossMode = "roll") -> None:
        if mode not in _MODES:
            raise ValueError(f"LifeLoss mode must be one of {_MODES}, got {mode!r}")
        gym.utils.RecordConstructorArgs.__init__(self, mode=mode)
        gym.Wrapper.__init__(self, env)
        self.mode: LifeLossMode = mode
        # lives count after the last step/reset; None until the first reset
        self.lives: int | None = None
        # False only between a step that is not a real game over (the wrapped env's own terminated/truncated)
        # and the next reset, i.e. when a plain reset() continues the game, as in SB3's EpisodicLifeEnv
        self.was_real_done = True

    def _read_lives(self, info: dict[str, Any]) -> int:
        """
        Current lives count: ``info["lives"]``, else ``env.unwrapped.ale.lives()``.

        :param info: The info dict the wrapped env just returned
        :return: The number of lives left
        """
        if "lives" in info:
            return int(info["lives"])
        ale = getattr(self.env.unwrapped, "ale", None)
        lives_fn = getattr(ale, "lives", None)
        if callable(lives_fn):
            return int(lives_fn())
        raise ValueError(
            f"LifeLoss needs an env that reports lives, but {self.env.unwrapped!r} reports no lives: "
            "its info has no 'lives' key and it has no `unwrapped.ale.lives()`."
        )

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """
        Step the wrapped env and flag a lost life (and, in ``"reset"`` mode, end the episode there).

        :param action: Action to take
        :return: ``obs, reward, terminated, truncated, info`` with ``info["life_loss"]`` set
        """
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.was_real_done = bool(terminated or truncated)
        lives = self._read_lives(info)
        life_loss = self.lives is not None and lives < self.lives
        if self.mode == "reset" and life_loss and lives > 0:
            # Losing the last life ends the episode through the wrapped env's own termination only
            # (some games stay at 0 lives for a few frames before game over; see the class docstring).
            terminated = True
        self.lives = lives
        info["life_loss"] = life_loss
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        """
        Reset the game, or in ``"reset"`` mode after a lost life (not a game over) continue it with a no-op step.

        A ``seed`` or ``options`` always resets the game (and is passed on), in both modes.

        :param seed: Seed passed to the wrapped env's ``reset``; a seeded reset starts a new game
        :param options: Options passed to the wrapped env's ``reset``; a reset with options starts a new game
        :return: ``obs, info`` of the first step of the new episode
        """
        if self.mode == "roll" or self.was_real_done or seed is not None or options is not None:
            obs, info = self.env.reset(seed=seed, options=options)
            self.was_real_done = True  # a fresh game: there is no lost life to continue from
        else:
            # no-op step to leave the lost-life state; it may itself end the game
            obs, _, terminated, truncated, info = self.env.step(0)  # type: ignore[arg-type]
            if terminated or truncated:
                obs, info = self.env.reset()
                self.was_real_done = True
        self.lives = self._read_lives(info)
        return obs, info
