"""A memory task: recall a cue seen at the start of the episode after a delay of blank steps.

At step 0 the observation shows one of ``n_cues`` cues (one-hot); for the next ``delay`` steps it shows nothing; at
the last step a query flag is raised and the action must name the cue: +1 if it does, -1 otherwise (the actions
before the query do nothing). A policy without memory scores 0 on average at best (a guess); one that remembers
the cue across the delay scores 1. Episodes have ``delay + 2`` steps and end by termination.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueMemory(gym.Env[np.ndarray, np.int64]):
    """
    Recall the cue after ``delay`` blank steps (see the module docstring).

    Observation: ``[n_cues + 1]`` float32, the one-hot cue at step 0, the query flag at the last step, zeros between.

    :param delay: blank steps between the cue and the query
    :param n_cues: number of cues (and actions)
    :param render_mode: None, ``"ansi"`` (the step and the observation as text) or ``"rgb_array"`` (the observation
        as a row of white / black squares)
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, delay: int = 30, n_cues: int = 2, render_mode: str | None = None) -> None:
        if delay < 0 or n_cues < 2:
            raise ValueError(f"CueMemory needs delay >= 0 and n_cues >= 2, got delay={delay}, n_cues={n_cues}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.delay = int(delay)
        self.n_cues = int(n_cues)
        self.observation_space = spaces.Box(0.0, 1.0, (self.n_cues + 1,), np.float32)
        self.action_space = spaces.Discrete(self.n_cues)
        self._cue = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.n_cues + 1, dtype=np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        elif self._t == self.delay + 1:
            obs[self.n_cues] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.n_cues))
        self._t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._t > self.delay + 1:
            raise RuntimeError("step() after the episode ended: reset() first")
        query = self._t == self.delay + 1
        reward = (1.0 if int(action) == self._cue else -1.0) if query else 0.0
        self._t += 1
        return self._obs(), reward, query, False, {}

    def render(self) -> np.ndarray | str | None:
        """The current observation: text (``"ansi"``) or a row of 16x16 squares, white where it is 1 (``"rgb_array"``)."""
        if self.render_mode == "ansi":
            return f"step {self._t}: " + " ".join(str(int(x)) for x in self._obs()) + "\n"
        if self.render_mode != "rgb_array":
            return None
        row = (self._obs() * 255).astype(np.uint8)
        return np.repeat(np.repeat(row[None, :, None], 16, axis=0), 16, axis=1).repeat(3, axis=2)
