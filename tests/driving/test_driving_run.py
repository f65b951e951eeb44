"""Agents as a kind of run on tujie_core's run layer: ``tujie train`` and ``tujie driving`` verbs, a run folder
with a comparison report, resume after a kill, ``tujie tune`` with pruning on the validation return, one-line
errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from tujie_core import Callback, load_config, train_from_config
from tujie_driving import Agent

SHORT = {"name": "highway-fast", "config": {"duration": 10, "vehicles_count": 10}}


def write_config(folder: Path, agent: dict, steps: int = 400, **extra) -> Path:
    raw = {
        "kind": "driving",
        "name": "drive",
        "output_dir": str(folder / "runs"),
        "scenario": SHORT,
        "agent": agent,
        "steps": steps,
        "evaluation": {"every": 200, "episodes": 1, "test_episodes": 2, "render": False},
        "baselines": ["idm"],
        "progress": False,
        **extra,
    }
    path = folder / "drive.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_dqn_run_writes_a_run_folder_with_the_comparison(tujie, tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {"name": "dqn", "learning_starts": 50},
        evaluation={"every": 200, "episodes": 1, "test_episodes": 2, "render": True},
    )
    done = tujie("train", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs" / "drive").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["kind"] == "driving" and summary["steps"] == 400 and summary["rounds"] == 2
    assert {"test/return", "test/crash_rate", "val/return"} <= set(summary["metrics"])
    report = (run_dir / "report.md").read_text()
    assert "| dqn | 2 |" in report and "| idm | 2 |" in report and "episode.gif" in report
    assert (run_dir / "episode.gif").stat().st_size > 1000
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert [e["seed"] for e in evaluation["idm"]["episodes"]] == [20_000, 20_001]  # same seeds as the agent
    assert Agent.load(run_dir).steps == summary["kept_steps"] in (200, 400)  # the best validation round's agent


class Rounds(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_train_epoch_end(self, loop, metrics) -> None:
        self.seen.append((loop.state.epoch, loop.state.step))


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"name": "dqn", "learning_starts": 50}, steps=600)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "tujie"), "train", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    runs = tmp_path / "runs" / "drive"
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(runs.glob("*/checkpoints/last.ckpt")) if runs.is_dir() else []
            if found and torch.load(found[0], weights_only=True)["agent"]["steps"] >= 200:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "training ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    (run_dir,) = runs.iterdir()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    done_steps = saved["agent"]["steps"]
    assert done_steps in (200, 400)
    assert saved["agent"]["replay"]["pos"] == done_steps - 1  # SB3 stores a step's transition after its callback
    rounds = Rounds()
    result = train_from_config(load_config(path), resume=run_dir, callbacks=[rounds])
    assert result.run_dir == run_dir
    assert rounds.seen[0] == (done_steps // 200 + 1, done_steps + 200)  # continued, not restarted
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 600 and summary["rounds"] == 3


@pytest.mark.parametrize(
    ("agent", "key", "low", "high"),
    [
        ({"name": "qlearning"}, "alpha", 0.05, 0.5),
        ({"name": "dqn", "learning_starts": 50}, "learning_rate", 1e-4, 1e-3),
    ],
)
def test_agents_are_tuned_with_pruning_on_validation_return(tujie, tmp_path: Path, agent, key, low, high) -> None:
    space = {f"agent.{key}": {"type": "float", "low": low, "high": high, "log": True}}
    path = write_config(tmp_path, agent, tune={"space": space, "trials": 2, "pruner": {"name": "none"}})
    done = tujie("tune", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tune_dir = tmp_path / "runs" / "drive" / "tune"
    study = optuna.load_study(study_name="drive", storage=f"sqlite:///{tune_dir / 'study.db'}")
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1, 2]] * 2  # val/return at each round
    assert low <= load_config(tune_dir / "best.yaml").agent.params[key] <= high


def test_driving_verbs_evaluate_and_render(tujie, tmp_path: Path) -> None:
    done = tujie(
        "driving",
        "evaluate",
        "idm",
        "random",
        "--episodes",
        "2",
        "--scenario",
        "merge",
        "--json",
        "out.json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "| idm | 2 |" in done.stdout and "merge-v1" in done.stdout
    assert set(json.loads((tmp_path / "out.json").read_text())) == {"idm", "random"}
    done = tujie("driving", "render", "idm", "--output", "ep.gif", "--scenario", "roundabout", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ep.gif").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["driving", "train", "--scenario", "highwy"], "did you mean 'highway'"),
        (["driving", "train", "--agent", "dqm"], "'dqm' is not in the agents registry"),
        (["driving", "train", "--set", "agent.gama=0.9"], "agent.gama"),
        (["driving", "train", "--set", "scenario.config.lanes=2"], "scenario.config.lanes"),
        (["driving", "train", "--set", "steps=0"], "steps"),
        (["driving", "evaluate", "missing-run"], "missing-run: not a saved agent"),
        (["driving", "evaluate", "idm", "--episodes", "0"], "episodes"),
    ],
)
def test_bad_input_exits_2_with_one_line(tujie, tmp_path: Path, args: list[str], message: str) -> None:
    done = tujie(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    "name",
    [
        "dqn_highway_fast",
        "dqn_attention_highway_fast",
        "ensemble_highway_fast",
        "ppo_highway_fast",
        "qlearning_highway_fast",
    ],
)
def test_the_bundled_configs_parse_and_build_their_agents(name: str) -> None:
    from tujie_driving import bundled_config
    from tujie_driving.agents import create_agent

    config = load_config(bundled_config(name))
    agent = create_agent(config.agent.name, config.scenario.build(), config.seed, **config.agent.params)
    assert config.kind == "driving" and agent.name == config.agent.name
