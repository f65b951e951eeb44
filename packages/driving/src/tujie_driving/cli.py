"""``tujie driving``: train agents in highway-env scenarios, evaluate them against baselines on the same seeds,
render episodes, and predict surrounding vehicles' trajectories.

Registered through the ``tujie.cli`` entry point; user errors print one line and exit 2 (core's ``main``).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from tujie_core.cli import metrics_table
from tujie_driving import bundled_config

app = typer.Typer(
    help="Driving: RL control, baselines, uncertainty fallback, trajectory prediction.", no_args_is_help=True
)
console = Console()


@app.command()
def train(
    config: Path | None = typer.Argument(None, help="run config (YAML); default: DQN on highway-fast (20 k steps)"),
    agent: str | None = typer.Option(None, help="dqn, ppo, dqn-ensemble, qlearning (agent.name)"),
    scenario: str | None = typer.Option(None, help="highway-fast, highway, merge, roundabout, intersection…"),
    steps: int | None = typer.Option(None, help="environment steps to learn for"),
    resume: Path | None = typer.Option(None, help="a run folder to continue"),
    overrides: list[str] = typer.Option([], "--set", "-s", help="override a config key: agent.gamma=0.9"),
) -> None:
    """Train an agent (or a trajectory predictor, from its config) and write a run folder with a report."""
    from tujie_core import load_config, train_from_config

    if config is None:
        saved = resume / "config.yaml" if resume is not None else None
        config = saved if saved is not None and saved.is_file() else bundled_config("dqn_highway_fast")
    extra = []
    if agent is not None:  # a new agent section: the config's options belong to its own agent
        extra.append(f"agent={{name: '{agent}'}}")
    if scenario is not None:  # the config's settings belong to its own scenario
        extra.append(f"scenario={{name: '{scenario}'}}")
    if steps is not None:
        extra.append(f"steps={steps}")
    run_config = load_config(config, [*extra, *overrides])
    if (agent or scenario) and resume is None and not any(o.startswith("name=") for o in overrides):
        run_config.name = f"{run_config.agent.name}-{run_config.scenario.name}"
    result = train_from_config(run_config, resume=resume)
    console.print(metrics_table("metrics", [(k, f"{v:.4f}") for k, v in result.metrics.items()], ("metric", "value")))
    console.print(f"run folder: {result.run_dir}\nreport: {result.report}")


@app.command()
def evaluate(
    agents: list[str] = typer.Argument(..., help="run folders or saved agents, or baseline names (idm, random)"),
    scenario: str | None = typer.Option(None, help="scenario (default: the first agent's)"),
    density: float | None = typer.Option(None, help="vehicles_density of the scenario (denser: unseen traffic)"),
    episodes: int = typer.Option(100, help="seeded episodes per agent"),
    seed: int = typer.Option(20_000, help="seed of the first episode"),
    fallback: str | None = typer.Option(None, help="dqn-ensemble agents: idm, SLOWER, IDLE or none"),
    detector: str | None = typer.Option(None, help="oracle or NAME:RUN_DIR (yolo:runs/…): agents see through it"),
    json_path: Path | None = typer.Option(None, "--json", help="write every episode and summary here"),
) -> None:
    """Drive seeded episodes with each agent on the same seeds and print the comparison table."""
    from tujie_driving.agents import AGENTS, Agent, create_agent
    from tujie_driving.evaluation import comparison_table
    from tujie_driving.evaluation import evaluate as run_evaluation
    from tujie_driving.perception import PerceivedKinematics
    from tujie_driving.scenarios import Scenario, make_env

    loaded = {name: Agent.load(name) for name in agents if name not in AGENTS}
    base = next(iter(loaded.values())).scenario if loaded else Scenario()
    chosen = Scenario(
        scenario or base.name, dict(base.config) if scenario in (None, base.name) else {}, base.observation
    )
    if density is not None:
        chosen.config["vehicles_density"] = density
    results = {}
    for name in agents:
        agent = loaded.get(name) or create_agent(name, chosen)
        if fallback is not None and hasattr(agent, "with_fallback"):
            agent.with_fallback(fallback)
        label = f"{agent.name} ({name})" if name in loaded else name
        env = None if detector is None else PerceivedKinematics(make_env(chosen, render=True), detector)
        results[label] = run_evaluation(agent, chosen, episodes, seed, progress=True, env=env)
    console.print(f"{chosen.env_id} {json.dumps(chosen.config) if chosen.config else ''}")
    console.print(comparison_table(results), markup=False)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2), encoding="utf-8")


@app.command()
def render(
    agent: str = typer.Argument(..., help="a run folder or saved agent, or a baseline name (idm, random)"),
    output: Path = typer.Option(Path("episode.gif"), help="GIF to write"),
    scenario: str | None = typer.Option(None, help="scenario (default: the agent's)"),
    seed: int = typer.Option(20_000, help="episode seed"),
    fps: int = typer.Option(5, help="frames per second of the GIF"),
) -> None:
    """Drive one episode and write it as an animated GIF."""
    from tujie_driving.agents import AGENTS, Agent, create_agent
    from tujie_driving.evaluation import render_episode, save_gif
    from tujie_driving.scenarios import Scenario

    driver = create_agent(agent, Scenario(scenario or "highway-fast")) if agent in AGENTS else Agent.load(agent)
    episode = render_episode(driver, scenario, seed)
    save_gif(episode.frames, output, fps)
    outcome = "crashed" if episode.crashed else "no crash"
    console.print(f"{output}: {len(episode.frames)} frames, return {episode.ret:.2f}, {outcome}")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="a trajectory-predictor run folder (tujie driving train … predict_lstm.yaml)"),
    data: Path = typer.Argument(..., help="trajectories: a CSV (episode,vehicle,t,x,y,vx,vy) or a saved .npz"),
    output: Path = typer.Option(Path("predictions.csv"), help="CSV of predicted future positions"),
) -> None:
    """Predict every vehicle's next seconds from its recent track; print ADE/FDE against constant velocity."""
    from tujie_driving.prediction import predict_file

    result = predict_file(run, data, output)
    rows = [(k, f"{v:.3f}") for k, v in result.metrics.items()]
    console.print(metrics_table(f"{data}", rows, ("metric", "value")))
    console.print(f"predictions: {output} ({result.rows} rows)")
    for warning in result.warnings:
        console.print(f"warning: {warning}", markup=False, style="yellow")
