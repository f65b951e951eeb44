"""Seeded highway-env scenarios: one factory for single, vectorised and rendering environments.

>>> env = make_env(Scenario("highway-fast", {"vehicles_density": 1.5}), seed=0)  # doctest: +SKIP
>>> venv = make_vec_env(Scenario("merge"), n_envs=2, seed=0)  # SubprocVecEnv, one process per core  # doctest: +SKIP

A :class:`Scenario` names a highway-env environment (short name or full id) and changes its config; keys the
environment does not have are refused with the list of those it has. Every scenario drives with highway-env's
discrete meta-actions (faster, slower, idle, lane changes where the road has lanes), so every agent can drive
every scenario. Rendering is headless: pygame's offscreen surface gives real ``H × W × 3`` frames with no display
(``SDL_VIDEODRIVER=dummy`` would give blank ones, so it is removed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tujie_core import ConfigError
from tujie_core.registry import suggest

# short name → highway-env id (the newest version with discrete meta-actions)
SCENARIOS: dict[str, str] = {
    "highway-fast": "highway-fast-v0",
    "highway": "highway-v0",
    "merge": "merge-v1",
    "roundabout": "roundabout-v1",
    "intersection": "intersection-v2",
    "two-way": "two-way-v0",
    "u-turn": "u-turn-v1",
    "exit": "exit-v1",
}
OBSERVATIONS: dict[str, dict[str, Any]] = {
    "kinematics": {"type": "Kinematics"},  # the scenario's own features and vehicle count
    "grayscale": {  # stacked top-down grayscale frames, for a CNN policy
        "type": "GrayscaleObservation",
        "observation_shape": (128, 64),
        "stack_size": 4,
        "weights": [0.2989, 0.5870, 0.1140],
        "scaling": 1.75,
    },
}


@dataclass
class Scenario:
    """A highway-env scenario: ``name`` (a key of :data:`SCENARIOS` or a registered id), ``config`` overrides
    (``vehicles_density``, ``lanes_count``, ``duration``…) and the observation (:data:`OBSERVATIONS` key)."""

    name: str = "highway-fast"
    config: dict[str, Any] = field(default_factory=dict)
    observation: str = "kinematics"

    @property
    def env_id(self) -> str:
        return env_id(self.name)


def env_id(name: str) -> str:
    """``merge`` → ``merge-v1``; a full registered id passes through. Unknown names raise ConfigError."""
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the environments)

    if name in SCENARIOS:
        return SCENARIOS[name]
    if name in gym.registry and name.split("-v")[0] in {v.split("-v")[0] for v in SCENARIOS.values()}:
        return name
    raise ConfigError(f"scenario: no scenario '{name}'{suggest(name, list(SCENARIOS))} (one of {', '.join(SCENARIOS)})")


def headless() -> None:
    """Environment variables for offscreen pygame rendering on a machine with no display or sound."""
    if os.environ.get("SDL_VIDEODRIVER") == "dummy":
        os.environ.pop("SDL_VIDEODRIVER")  # "dummy" renders blank frames
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    if "XDG_RUNTIME_DIR" not in os.environ:  # SDL prints an error line without one
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="tujie-sdl-")


def env_config(scenario: Scenario) -> dict[str, Any]:
    """The config handed to highway-env: the scenario's overrides, checked against the environment's keys, plus the
    observation."""
    if scenario.observation not in OBSERVATIONS:
        raise ConfigError(
            f"scenario.observation: '{scenario.observation}'{suggest(scenario.observation, list(OBSERVATIONS))} "
            f"is not one of {', '.join(OBSERVATIONS)}"
        )
    known = default_settings(scenario.name)
    for key in scenario.config:
        if key not in known:
            raise ConfigError(
                f"scenario.config.{key}: {scenario.name} has no such setting{suggest(key, sorted(known))}"
            )
    config = dict(scenario.config)
    if scenario.observation != "kinematics":  # kinematics: the scenario's own features (or config.observation)
        if "observation" in config:
            raise ConfigError("scenario.config.observation: set either it or scenario.observation, not both")
        config["observation"] = OBSERVATIONS[scenario.observation]
    return config


def default_settings(name: str) -> dict[str, Any]:
    """A scenario's highway-env settings and their defaults (what ``Scenario.config`` may change)."""
    import importlib

    import gymnasium as gym

    entry_point = gym.registry[env_id(name)].entry_point
    if isinstance(entry_point, str):
        module, _, name = entry_point.partition(":")
        entry_point = getattr(importlib.import_module(module), name)
    return entry_point.default_config()


def make_env(scenario: Scenario | str = "highway-fast", seed: int | None = None, render: bool = False) -> Any:
    """One environment; ``render``: ``render()`` returns RGB frames. ``seed`` seeds the first reset and the
    action space."""
    import gymnasium as gym

    scenario = Scenario(scenario) if isinstance(scenario, str) else scenario
    headless()
    config = env_config(scenario)
    try:
        env = gym.make(env_id(scenario.name), render_mode="rgb_array" if render else None, config=config)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"scenario {scenario.name}: {exc}") from None
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _factory(scenario: Scenario, render: bool) -> Callable[[], Any]:
    def build() -> Any:
        from stable_baselines3.common.monitor import Monitor

        return Monitor(make_env(scenario, render=render))

    return build


def default_envs() -> int:
    """One environment per core the process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_vec_env(
    scenario: Scenario | str = "highway-fast", n_envs: int | None = None, seed: int = 0, subprocess: bool | None = None
) -> Any:
    """``n_envs`` environments (default: one per core) in worker processes (SB3 ``SubprocVecEnv``; forkserver) or,
    for one environment or ``subprocess=False``, in this process (``DummyVecEnv``). Environment ``i`` is seeded
    ``seed + i``."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    scenario = Scenario(scenario) if isinstance(scenario, str) else scenario
    env_config(scenario)  # a bad scenario fails here, not in a worker
    n_envs = n_envs or default_envs()
    factories = [_factory(scenario, False) for _ in range(n_envs)]
    use_processes = n_envs > 1 if subprocess is None else subprocess
    venv = SubprocVecEnv(factories, start_method="forkserver") if use_processes else DummyVecEnv(factories)
    venv.seed(seed)
    return venv


def meta_action_index(env: Any, name: str) -> int | None:
    """The index of a meta-action (``FASTER``, ``LANE_LEFT``…) in the environment's action space, or None when the
    scenario lacks it (an intersection has no lane changes)."""
    action_type = env.unwrapped.action_type
    return getattr(action_type, "actions_indexes", {}).get(name)


def is_blank(frame: np.ndarray) -> bool:
    """A frame with (almost) no variation: what a dummy video driver renders."""
    return float(np.asarray(frame, dtype=np.float32).std()) < 1.0
