"""A kind of run with a loop of its own plugs into the run layer: ``tujie train``, run folders, exact resume,
``tujie tune`` with pruning callbacks, and the shared report, with no code of its own for any of them."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import optuna
import pytest
import torch
import yaml

from tujie_core import (
    RUN_KINDS,
    BaseRunConfig,
    Callback,
    ConfigError,
    ModelCheckpoint,
    RunContext,
    RunKind,
    RunOutput,
    TrainState,
    load_config,
    train_from_config,
)
from tujie_core.checkpoint import atomic_write_bytes


class DescentConfig(BaseRunConfig):
    """Noisy gradient descent on (x - target)², a stand-in for an RL algorithm's ``learn``."""

    kind: Literal["toy_descent"] = "toy_descent"
    rounds: int = 4
    steps: int = 10
    lr: float = 0.05
    target: float = 3.0
    noise: float = 0.1
    seed_value: int = 0

    @property
    def monitor(self) -> str:
        return "val/distance"

    @property
    def mode(self) -> Literal["min", "max"]:
        return "min"

    @property
    def seed(self) -> int:
        return self.seed_value


class DescentLoop:
    """Satisfies tujie_core.Loop, so ModelCheckpoint and the tuner's pruning callback work on it."""

    def __init__(self) -> None:
        self.state, self.should_stop, self.x = TrainState(), False, torch.zeros(())

    def save_checkpoint(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        torch.save({"x": self.x, "state": asdict(self.state), "rng": torch.get_rng_state()}, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


@RUN_KINDS.register("toy_descent")
class DescentRun(RunKind):
    config_model = DescentConfig
    takes_plugins = False

    def train(self, config: DescentConfig, context: RunContext) -> RunOutput:  # type: ignore[override]
        run_dir = context.open()
        loop = DescentLoop()
        callbacks = [*context.callbacks(), ModelCheckpoint(run_dir / "checkpoints", config.monitor, config.mode)]
        if context.resume is not None:
            saved = torch.load(context.resume, weights_only=True)
            loop.x, loop.state = saved["x"], TrainState(**saved["state"])
            torch.set_rng_state(saved["rng"])
        while loop.state.epoch < config.rounds and not loop.should_stop:
            for _ in range(config.steps):
                loop.x = loop.x - config.lr * 2 * (loop.x - config.target) + config.noise * torch.randn(())
                loop.state.step += 1
            loop.state.epoch += 1
            metrics = {"val/distance": float((loop.x - config.target).abs())}
            loop.state.history.append({"epoch": loop.state.epoch, **metrics})
            for callback in callbacks:
                callback.on_train_epoch_end(loop, metrics)
        final = {"val/distance": float((loop.x - config.target).abs())}
        return RunOutput(
            final,
            title=f"Descent: {config.name}",
            history=loop.state.history,
            summary={"rounds": loop.state.epoch, "x": float(loop.x)},
            model=float(loop.x),
        )


def write_config(folder: Path, **extra) -> Path:
    raw = {"kind": "toy_descent", "name": "descent", "output_dir": str(folder / "runs"), **extra}
    path = folder / "descent.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_custom_kind_trains_through_the_cli_into_a_run_folder(tujie, tmp_path: Path) -> None:
    proc = tujie("train", str(write_config(tmp_path)), "--set", "rounds=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "val/distance" in proc.stdout
    (run_dir,) = (tmp_path / "runs" / "descent").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["kind"] == "toy_descent" and summary["rounds"] == 3
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert "| distance |" in (run_dir / "report.md").read_text()
    assert load_config(run_dir / "config.yaml").rounds == 3  # the resolved config, re-loadable


class EpochRecorder(Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_end(self, loop, metrics) -> None:
        self.epochs.append(loop.state.epoch)


def test_a_custom_kind_resumes_exactly(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    straight = train_from_config(load_config(path, ["rounds=4"]))
    first = train_from_config(load_config(path, ["rounds=2"]))
    recorder = EpochRecorder()
    resumed = train_from_config(load_config(path, ["rounds=4"]), resume=first.run_dir, callbacks=[recorder])
    assert resumed.run_dir == first.run_dir
    assert recorder.epochs == [3, 4]  # continued after round 2, not started over
    assert resumed.model == straight.model  # same noise draws after the resume: bit-identical


def test_a_custom_kind_is_tuned_with_pruning_callbacks(tujie, tmp_path: Path) -> None:
    space = {"lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True}}
    path = write_config(tmp_path, tune={"space": space, "trials": 4, "pruner": {"name": "none"}})
    proc = tujie("tune", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    tune_dir = tmp_path / "runs" / "descent" / "tune"
    best = load_config(tune_dir / "best.yaml")
    assert isinstance(best, DescentConfig) and best.lr > 0.01  # tiny steps never get near the target
    assert len(list((tune_dir / "trials").iterdir())) == 4
    study = optuna.load_study(study_name="descent", storage=f"sqlite:///{tune_dir / 'study.db'}")
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1, 2, 3, 4]] * 4  # the pruning callback reported


def test_a_kind_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    path = write_config(tmp_path, plugins=[{"name": "anything"}])
    with pytest.raises(ConfigError, match=r"toy_descent.*take no plugins"):
        load_config(path)
    with pytest.raises(ConfigError, match="cross-validation is not available for runs of kind 'toy_descent'"):
        from tujie_core.evaluate import cross_validate

        cross_validate(load_config(write_config(tmp_path)), 3)


def test_an_unknown_kind_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: supervisd\n")
    with pytest.raises(ConfigError, match=r"kind: 'supervisd' is not in the runs registry \(did you mean 'supervised'"):
        load_config(path)
