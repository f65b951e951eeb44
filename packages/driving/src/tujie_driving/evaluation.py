"""The evaluation harness: seeded episodes → return with a 95 % confidence interval, crash rate, speed, distance,
lane changes; one comparison table across agents on the same seeds; episodes rendered to GIF.

>>> result = evaluate(agent, Scenario("highway-fast"), episodes=100, seed=10_000)  # doctest: +SKIP
>>> print(comparison_table({"dqn": result, "idm": evaluate(idm, ...)}))  # doctest: +SKIP

Episode ``i`` resets its environment with seed ``seed + i``, so two agents evaluated with the same ``seed`` meet
the same traffic. A crash is highway-env's ``info["crashed"]`` at the episode's end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tujie_core import ConfigError
from tujie_driving.agents import Agent
from tujie_driving.scenarios import Scenario, make_env


@dataclass
class Episode:
    """One episode: its seed, return, length, whether it ended in a crash, mean speed (m/s), distance driven (m),
    lane changes, fallback steps (safety-wrapped agents) and, when asked, its frames and per-step trace."""

    seed: int
    ret: float
    length: int
    crashed: bool
    speed: float
    distance: float
    lane_changes: int
    fallbacks: int = 0
    frames: list[np.ndarray] = field(default_factory=list, repr=False)
    trace: list[dict[str, float]] = field(default_factory=list, repr=False)


@dataclass
class Evaluation:
    """Episodes of one agent and their summary (:meth:`summary`)."""

    agent: str
    scenario: str
    episodes: list[Episode]

    def summary(self) -> dict[str, float]:
        returns = np.array([e.ret for e in self.episodes], dtype=np.float64)
        n = len(returns)
        ci = _t95(n) * returns.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        return {
            "episodes": float(n),
            "return": float(returns.mean()),
            "return_ci95": float(ci),
            "crash_rate": float(np.mean([e.crashed for e in self.episodes])),
            "length": float(np.mean([e.length for e in self.episodes])),
            "speed": float(np.mean([e.speed for e in self.episodes])),
            "distance": float(np.mean([e.distance for e in self.episodes])),
            "lane_changes": float(np.mean([e.lane_changes for e in self.episodes])),
            "fallback_rate": float(
                sum(e.fallbacks for e in self.episodes) / max(sum(e.length for e in self.episodes), 1)
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        keep = ("seed", "ret", "length", "crashed", "speed", "distance", "lane_changes", "fallbacks")
        return {
            "agent": self.agent,
            "scenario": self.scenario,
            "summary": self.summary(),
            "episodes": [{k: v for k, v in asdict(e).items() if k in keep} for e in self.episodes],
        }


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def run_episode(agent: Agent, env: Any, seed: int, render: bool = False) -> Episode:
    """Drive one episode from ``env.reset(seed=seed)``; ``render``: keep every frame (``env`` made with
    ``render=True``)."""
    obs, info = env.reset(seed=seed)
    agent.reset(env)
    ego = env.unwrapped.vehicle
    frames = [np.asarray(env.render(), dtype=np.uint8)] if render else []
    trace: list[dict[str, float]] = []
    total, speeds, distance, lane_changes, fallbacks, steps = 0.0, [], 0.0, 0, 0, 0
    position, lane = np.array(ego.position, dtype=np.float64), ego.lane_index
    done = False
    while not done:
        action = agent.act(obs, env)
        decision = getattr(agent, "last_decision", None)
        if decision is not None:
            trace.append({"step": float(steps), "action": float(action), **decision})
            fallbacks += int(decision.get("fallback", 0.0) > 0)
        obs, reward, terminated, truncated, info = env.step(action)
        ego = env.unwrapped.vehicle
        total += float(reward)
        steps += 1
        speeds.append(float(info.get("speed", ego.speed)))
        new_position = np.array(ego.position, dtype=np.float64)
        distance += float(np.linalg.norm(new_position - position))
        position = new_position
        if ego.lane_index[:2] == lane[:2] and ego.lane_index[2] != lane[2]:
            lane_changes += 1
        lane = ego.lane_index
        if render:
            frames.append(np.asarray(env.render(), dtype=np.uint8))
        done = terminated or truncated
    return Episode(
        seed=seed,
        ret=total,
        length=steps,
        crashed=bool(info.get("crashed", False)),
        speed=float(np.mean(speeds)) if speeds else 0.0,
        distance=distance,
        lane_changes=lane_changes,
        fallbacks=fallbacks,
        frames=frames,
        trace=trace,
    )


def check_compatible(agent: Agent, env: Any) -> None:
    """Raise ConfigError when the agent was trained on other observation or action spaces."""
    from tujie_driving.agents import SB3Agent

    if isinstance(agent, SB3Agent):
        expected, got = agent.model.observation_space.shape, env.observation_space.shape
        if expected != got:
            raise ConfigError(f"scenario: the agent observes {expected}, this scenario gives {got}")
        if agent.model.action_space.n != env.action_space.n:
            raise ConfigError(
                f"scenario: the agent has {agent.model.action_space.n} actions, this scenario {env.action_space.n}"
            )


def evaluate(
    agent: Agent,
    scenario: Scenario | str | None = None,
    episodes: int = 100,
    seed: int = 10_000,
    progress: bool = False,
    env: Any = None,
) -> Evaluation:
    """``episodes`` seeded episodes (seeds ``seed``, ``seed + 1``, …) of ``agent`` in ``scenario`` (default: the
    one it was trained in). ``env``: an environment to drive instead (a perception wrapper)."""
    if episodes < 1:
        raise ConfigError(f"episodes: at least 1, got {episodes}")
    scenario = agent.scenario if scenario is None else scenario
    scenario = Scenario(scenario) if isinstance(scenario, str) else scenario
    env = make_env(scenario) if env is None else env
    check_compatible(agent, env)
    seeds = range(seed, seed + episodes)
    if progress:
        from tqdm import tqdm

        seeds = tqdm(seeds, desc=f"evaluate {agent.name}", unit="episode")
    try:
        return Evaluation(agent.name, scenario.name, [run_episode(agent, env, s) for s in seeds])
    finally:
        env.close()


COLUMNS = (
    ("return", "mean return ± 95 % CI"),
    ("crash_rate", "crash rate"),
    ("speed", "speed (m/s)"),
    ("distance", "distance (m)"),
    ("lane_changes", "lane changes"),
    ("length", "length (steps)"),
)


def comparison_table(results: Mapping[str, Evaluation]) -> str:
    """A markdown table, one row per agent, on the episodes each was evaluated on."""
    lines = ["| agent | episodes | " + " | ".join(title for _, title in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 2) + "|")
    for name, result in results.items():
        s = result.summary()
        cells = [
            f"{s['return']:.2f} ± {s['return_ci95']:.2f}",
            f"{s['crash_rate']:.1%}",
            f"{s['speed']:.1f}",
            f"{s['distance']:.0f}",
            f"{s['lane_changes']:.1f}",
            f"{s['length']:.1f}",
        ]
        lines.append(f"| {name} | {int(s['episodes'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_episode(agent: Agent, scenario: Scenario | str | None = None, seed: int = 10_000) -> Episode:
    """One episode with every frame (``H × W × 3`` uint8) and, for safety-wrapped agents, the per-step trace."""
    scenario = agent.scenario if scenario is None else scenario
    env = make_env(Scenario(scenario) if isinstance(scenario, str) else scenario, render=True)
    check_compatible(agent, env)
    try:
        return run_episode(agent, env, seed, render=True)
    finally:
        env.close()


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: int = 5) -> Path:
    """Write frames as an animated GIF (looping)."""
    from PIL import Image

    if not frames:
        raise ConfigError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
