"""Reinforcement learning as a kind of run (``kind: driving``): ``tujie train``, run folders, resume after a kill,
``tujie tune`` with pruning on evaluation return, and a report, through tujie_core's run layer.

An agent learns in its scenario; every ``evaluation.every`` environment steps it drives ``evaluation.episodes``
seeded validation episodes (an "epoch" for core callbacks: early stopping, the tuner's pruner) and the checkpoint
is written: the networks, the optimizer, the replay buffer, SB3's counters and every random generator, loadable
with ``torch.load(weights_only=True)``. A resumed run continues from that checkpoint's step; the episode that was
in progress at the kill starts over with a fresh seed. The agent with the best validation return is kept, then
evaluated on ``evaluation.test_episodes`` test seeds beside the ``baselines`` on the same seeds.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field

from tujie_core import (
    RUN_KINDS,
    BaseRunConfig,
    ConfigError,
    ModelCheckpoint,
    RunContext,
    RunKind,
    RunOutput,
    TrainState,
)
from tujie_core.checkpoint import atomic_write_bytes
from tujie_core.config import ComponentSpec, Strict
from tujie_core.registry import validate_kwargs
from tujie_driving.agents import AGENTS, Agent, SB3Agent, create_agent, init_parameters
from tujie_driving.evaluation import Evaluation, comparison_table, evaluate, render_episode, save_gif
from tujie_driving.scenarios import Scenario, env_config

TEST_SEED = 20_000  # test episodes never share a seed with validation ones (evaluation.seed, default 10 000)


class ScenarioSpec(Strict):
    """``name``: highway-fast, highway, merge, roundabout, intersection, two-way, u-turn, exit (or a highway-env
    id); ``config``: highway-env settings (``vehicles_density``, ``lanes_count``…); ``observation``: kinematics or
    grayscale."""

    name: str = "highway-fast"
    config: dict[str, Any] = Field(default_factory=dict)
    observation: str = "kinematics"

    def build(self) -> Scenario:
        return Scenario(self.name, dict(self.config), self.observation)


class EvaluationSpec(Strict):
    """Validation every ``every`` steps on ``episodes`` episodes from seed ``seed``; the final test on
    ``test_episodes`` episodes from seed ``test_seed``; ``render``: a GIF of one test episode in the run folder;
    ``scenario``: evaluate in another scenario than the training one (train on a shaped reward, judge on the
    official one; judge in denser traffic)."""

    every: int = Field(2_000, ge=1)
    episodes: int = Field(10, ge=1)
    seed: int = 10_000
    test_episodes: int = Field(100, ge=0)
    test_seed: int = TEST_SEED
    render: bool = True
    scenario: ScenarioSpec | None = None  # where validation and test episodes run (default: the training scenario)


class DrivingRunConfig(BaseRunConfig):
    """An agent (``agent``: a registered agent and its options) learning in a scenario for ``steps`` steps."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, serialize_by_alias=True)

    kind: Literal["driving"] = "driving"
    scenario: ScenarioSpec = ScenarioSpec()
    agent: ComponentSpec = ComponentSpec(name="dqn")
    steps: int = Field(20_000, ge=1)
    evaluation: EvaluationSpec = EvaluationSpec()
    baselines: list[str] = Field(default_factory=lambda: ["idm", "random"])
    progress: bool = True
    seed_value: int = Field(0, alias="seed")

    @property
    def monitor(self) -> str:
        return "val/return"

    @property
    def mode(self) -> Literal["min", "max"]:
        return "max"

    @property
    def seed(self) -> int:
        return self.seed_value


def check_agent(name: str, options: dict[str, Any], where: str = "agent") -> None:
    """Raise ConfigError naming the key when ``options`` cannot build agent ``name``."""
    cls = AGENTS.get(name)
    validate_kwargs(cls, options, where=where, skip=("scenario", "seed"))
    if issubclass(cls, SB3Agent):
        known = init_parameters(cls) | init_parameters(cls.algorithm_class())
        for key in options:
            if key not in known or key in ("env", "policy_kwargs", "scenario"):
                raise ConfigError(f"{where}.{key}: not an option of {name} (stable-baselines3 {cls.algorithm})")


class _AgentLoop:
    """The agent's learning as core callbacks see it (``tujie_core.Loop``)."""

    def __init__(self, agent: Agent, callbacks: list[Any]) -> None:
        self.agent, self.callbacks = agent, callbacks
        self.state, self.should_stop = TrainState(), False

    def save_checkpoint(self, path: str | Path) -> None:
        self.state.step = self.agent.steps
        buffer = io.BytesIO()
        torch.save(
            {
                "agent": self.agent.state_dict(),
                "state": asdict(self.state),
                "callbacks": {c.state_key: c.state_dict() for c in self.callbacks},
            },
            buffer,
        )
        atomic_write_bytes(Path(path), buffer.getvalue())

    def load_checkpoint(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.agent.load_state_dict(saved["agent"])
        self.state = TrainState(**saved["state"])
        for callback in self.callbacks:
            if callback.state_key in saved["callbacks"]:
                callback.load_state_dict(saved["callbacks"][callback.state_key])


def _describe(scenario: Scenario) -> str:
    return f"`{scenario.env_id}` ({json.dumps(scenario.config) if scenario.config else 'default settings'})"


def _metrics(prefix: str, result: Evaluation) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in result.summary().items() if k != "episodes"}


@RUN_KINDS.register("driving")
class DrivingRun(RunKind):
    """An agent learning to drive; see the module doc."""

    config_model = DrivingRunConfig
    takes_plugins = False  # SB3's learn() owns its loop (DP-SGD applies to the supervised trajectory predictors)

    def check(self, config: DrivingRunConfig) -> None:  # type: ignore[override]
        super().check(config)
        env_config(config.scenario.build())
        if config.evaluation.scenario is not None:
            env_config(config.evaluation.scenario.build())
        check_agent(config.agent.name, config.agent.params)
        for i, name in enumerate(config.baselines):
            if AGENTS.get(name).learns:
                raise ConfigError(f"baselines.{i}: '{name}' learns; baselines are agents that need no training")

    def trial_overrides(self) -> dict[str, Any]:
        return {"progress": False, "evaluation.render": False}

    def train(self, config: DrivingRunConfig, context: RunContext) -> RunOutput:  # type: ignore[override]
        scenario = config.scenario.build()
        judged = scenario if config.evaluation.scenario is None else config.evaluation.scenario.build()
        agent = create_agent(config.agent.name, scenario, config.seed, **config.agent.params)
        run_dir = context.open()
        checkpoint = ModelCheckpoint(run_dir / "checkpoints", config.monitor, config.mode)
        callbacks = [*context.callbacks(), checkpoint]  # checkpoint last: it saves what the others changed
        loop = _AgentLoop(agent, callbacks)
        if context.resume is not None:
            loop.load_checkpoint(context.resume)
        ev = config.evaluation

        def on_round() -> bool:
            result = evaluate(agent, judged, ev.episodes, ev.seed)
            loop.state.epoch += 1
            loop.state.step = agent.steps
            metrics = _metrics("val", result)
            loop.state.history.append({"epoch": loop.state.epoch, "step": agent.steps, **metrics})
            for callback in callbacks:
                callback.on_train_epoch_end(loop, metrics)
            return not loop.should_stop

        start = time.perf_counter()
        if agent.learns and not loop.should_stop:
            agent.learn(config.steps, every=ev.every, on_round=on_round, progress=config.progress)
            if not loop.state.history or loop.state.history[-1]["step"] < agent.steps:
                on_round()  # the last steps since the last round count too
        learned = time.perf_counter() - start
        trained = agent.steps
        if agent.learns and checkpoint.best_path.is_file():  # keep the agent with the best validation return
            agent.load_state_dict(torch.load(checkpoint.best_path, map_location="cpu", weights_only=True)["agent"])
        calibrate = getattr(agent, "calibrate", None)
        if calibrate is not None and agent.options.get("threshold") is None:
            calibrate(ev.episodes, ev.seed)  # the fallback threshold, from validation episodes of the training scenario
        agent.save(run_dir / "agent")
        kept, agent.steps = agent.steps, trained
        output = self._finish(config, agent, judged, run_dir, loop, checkpoint)
        output.summary["kept_steps"] = kept  # the kept agent's steps (the best validation round)
        output.summary["learn_seconds"] = learned  # this process's learning and validation time (not a resumed one's)
        return output

    def _finish(
        self,
        config: DrivingRunConfig,
        agent: Agent,
        scenario: Scenario,
        run_dir: Path,
        loop: _AgentLoop,
        checkpoint: ModelCheckpoint,
    ) -> RunOutput:
        ev = config.evaluation
        metrics: dict[str, float] = {}
        sections: list[str] = []
        results: dict[str, Evaluation] = {}
        if ev.test_episodes:
            results[agent.name] = evaluate(agent, scenario, ev.test_episodes, ev.test_seed, progress=config.progress)
            for name in config.baselines:
                baseline = create_agent(name, scenario, config.seed)
                results[name] = evaluate(baseline, scenario, ev.test_episodes, ev.test_seed)
            metrics = _metrics("test", results[agent.name])
            (run_dir / "evaluation.json").write_text(
                json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2), encoding="utf-8"
            )
            sections.append(
                f"## Test episodes\n\n{ev.test_episodes} episodes, seeds {ev.test_seed}–"
                f"{ev.test_seed + ev.test_episodes - 1}, every agent on the same seeds.\n\n"
                f"{comparison_table(results)}\n"
            )
        if checkpoint.best_epoch is not None:
            sections.append(f"## Validation\n\n{checkpoint.report_section(loop)}\n")
            best = next(h for h in loop.state.history if h["epoch"] == checkpoint.best_epoch)
            metrics |= {k: v for k, v in best.items() if k.startswith("val/")}
        if ev.render:
            episode = render_episode(agent, scenario, ev.test_seed)
            save_gif(episode.frames, run_dir / "episode.gif")
            sections.append(f"![an episode (seed {ev.test_seed})](episode.gif)\n")
        header = (
            f"Agent `{agent.name}` ({json.dumps(config.agent.params) if config.agent.params else 'defaults'}) trained "
            f"in {_describe(agent.scenario)} for {agent.steps} environment steps, seed {config.seed}; evaluated in "
            f"{_describe(scenario)}."
        )
        return RunOutput(
            metrics,
            title=f"Driving run: {config.name}",
            header=header,
            history=loop.state.history,
            sections=sections,
            summary={"steps": agent.steps, "rounds": loop.state.epoch, "agent": str(run_dir / "agent")},
            model=agent,
            details={"evaluations": results},
        )
