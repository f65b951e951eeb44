"""Hyperparameter search: samplers, pruning, tune() on a shared sqlite study, resume and clear config errors."""

from __future__ import annotations

import csv
import itertools
import os
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tujie_core import ClassificationTask, ConfigError, RunConfig, SupervisedRun, Trainer, create_model, load_config
from tujie_core import tune as tune_module
from tujie_core.config import ComponentSpec
from tujie_core.runs import train_from_config
from tujie_core.tune import (
    PRUNERS,
    SAMPLERS,
    PruningCallback,
    apply_params,
    create_pruner,
    create_sampler,
    optimize,
    parse_space,
    tune,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE: dict[str, Any] = {
    "name": "tiny",
    "data": {"name": "digits", "batch_size": 128},
    "model": {"name": "mlp", "hidden": [16], "dropout": 0.0},
    "optimizer": {"name": "adamw", "lr": 0.01},
    "trainer": {"max_epochs": 2, "monitor": "val/accuracy", "mode": "max", "progress": "none", "accelerator": "cpu"},
}
LR_SPACE = {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}


def run_config(tmp_path: Path, **tune_section: Any) -> RunConfig:
    tune_section.setdefault("space", LR_SPACE)
    return RunConfig.model_validate(BASE | {"output_dir": str(tmp_path / "runs"), "tune": tune_section})


def stored_trials(result: tune_module.TuneResult) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=result.study_name, storage=result.storage).get_trials()


# ---- generic search ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sampler", "trials", "tolerance"), [("tpe", 60, 0.15), ("random", 120, 1.0), ("cmaes", 60, 0.05)]
)
def test_optimize_finds_the_minimum_of_a_quadratic(sampler: str, trials: int, tolerance: float) -> None:
    space = {"x": {"type": "float", "low": -5, "high": 5}, "y": {"type": "float", "low": -5, "high": 5}}
    params, value = optimize(lambda p: (p["x"] - 2) ** 2 + (p["y"] + 1) ** 2, space, trials, sampler=sampler)
    assert value == pytest.approx((params["x"] - 2) ** 2 + (params["y"] + 1) ** 2)
    assert value < tolerance
    assert abs(params["x"] - 2) < 1.0 and abs(params["y"] + 1) < 1.0


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_optimize_picks_the_best_categorical_choice_including_list_values(sampler: str) -> None:
    space = {
        "act": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]},
        "hidden": {"type": "categorical", "choices": [[8], [64, 32], [16]]},
        "x": {"type": "float", "low": 0, "high": 1},
    }
    cost = {"relu": 1.0, "gelu": 0.0, "tanh": 2.0}
    seen: list[Any] = []

    def objective(p: dict[str, Any]) -> float:
        seen.append(p["hidden"])
        return cost[p["act"]] + (0.0 if p["hidden"] == [64, 32] else 1.0) + 0.1 * p["x"]

    params, value = optimize(objective, space, 40, sampler=sampler, seed=1)
    assert params["act"] == "gelu"
    assert params["hidden"] == [64, 32]  # decoded back to the list, not Optuna's JSON string
    assert all(isinstance(h, list) for h in seen)
    assert value == pytest.approx(0.1 * params["x"])


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    space = {"x": {"type": "float", "low": 0, "high": 1}}

    def draws(seed: int) -> list[float]:
        seen: list[float] = []
        optimize(lambda p: seen.append(p["x"]) or p["x"], space, 5, sampler="random", seed=seed)
        return seen

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_every_sampler_and_pruner_name_constructs() -> None:
    space = parse_space({"x": {"type": "float", "low": 0, "high": 1, "step": 0.25}})
    expected = {
        "grid": optuna.samplers.GridSampler,
        "random": optuna.samplers.RandomSampler,
        "tpe": optuna.samplers.TPESampler,
        "gp": optuna.samplers.GPSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }
    assert set(SAMPLERS.names()) == set(expected)
    for name, cls in expected.items():
        assert isinstance(create_sampler(name, space, seed=0), cls)
    pruners = {
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
    }
    assert set(PRUNERS.names()) == set(pruners)
    for name, cls in pruners.items():
        assert isinstance(create_pruner(name), cls)
    median = create_pruner(ComponentSpec(name="median", n_startup_trials=2, n_warmup_steps=3))
    assert (median._n_startup_trials, median._n_warmup_steps) == (2, 3)
    assert isinstance(create_pruner(None), optuna.pruners.NopPruner)


def test_gp_sampler_runs_offline() -> None:
    space = {"x": {"type": "float", "low": -3, "high": 3}}
    params, value = optimize(lambda p: (p["x"] - 1) ** 2, space, 14, sampler="gp")
    assert value < 0.05 and abs(params["x"] - 1) < 0.25


def test_grid_sampler_enumerates_the_whole_grid() -> None:
    space = {
        "n": {"type": "int", "low": 1, "high": 5, "step": 2},
        "c": {"type": "categorical", "choices": ["a", "b"]},
        "f": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.5},
    }
    seen: list[tuple[Any, ...]] = []
    params, value = optimize(
        lambda p: seen.append((p["n"], p["c"], p["f"])) or p["n"] + p["f"], space, 18, "maximize", "grid"
    )
    assert sorted(seen) == sorted(itertools.product([1, 3, 5], ["a", "b"], [0.0, 0.5, 1.0]))
    assert value == 6.0 and params["n"] == 5 and params["f"] == 1.0


def test_bad_sampler_names_and_options_are_clear_config_errors() -> None:
    space = parse_space(LR_SPACE)
    with pytest.raises(
        ConfigError, match=r"tune\.sampler\.name: 'tpee' is not in the samplers registry \(did you mean 'tpe'\?\)"
    ):
        create_sampler("tpee", space)
    with pytest.raises(
        ConfigError, match=r"tune\.sampler\.n_startup: unknown key \(did you mean 'n_startup_trials'\?\)"
    ):
        create_sampler(ComponentSpec(name="tpe", n_startup=3), space)
    with pytest.raises(ConfigError, match=r"tune\.pruner\.name: 'medain' is not in the pruners registry"):
        create_pruner("medain")
    with pytest.raises(ConfigError, match=r"tune\.space\.optimizer\.lr: the grid sampler needs 'step'"):
        create_sampler("grid", space)


def test_apply_params_sets_dotted_keys_on_a_copy_and_names_a_bad_path() -> None:
    raw = {"model": {"name": "mlp", "hidden": [8]}, "trainer": {"max_epochs": 3}}
    out = apply_params(raw, {"model.hidden": [64, 32], "trainer.max_epochs": 5, "scheduler.warmup_steps": 4})
    assert out == {
        "model": {"name": "mlp", "hidden": [64, 32]},
        "trainer": {"max_epochs": 5},
        "scheduler": {"warmup_steps": 4},
    }
    assert raw == {"model": {"name": "mlp", "hidden": [8]}, "trainer": {"max_epochs": 3}}
    with pytest.raises(ConfigError, match=r"model\.hidden\.width: cannot set it, 'model\.hidden' is not a mapping"):
        apply_params(raw, {"model.hidden.width": 3})


# ---- pruning -----------------------------------------------------------------------------------------------------
class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_pruning_callback_reports_and_raises_trial_pruned(blob_loaders) -> None:
    train, val = blob_loaders
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    model = create_model("mlp", input_shape=(4,), num_outputs=3, hidden=[8])
    task = ClassificationTask(model, num_classes=3)
    callback = PruningCallback(trial, "val/accuracy")
    trainer = Trainer(max_epochs=5, progress="none", accelerator="cpu", callbacks=[callback])
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1: val/accuracy="):
        trainer.fit(task, train, val)
    assert trainer.state.epoch == 1 and callback.pruned_epoch == 1
    assert task.model is model  # the Trainer restored the raw model on the way out
    study.tell(trial, state=TrialState.PRUNED)
    (frozen,) = study.get_trials()
    assert frozen.state is TrialState.PRUNED
    assert list(frozen.intermediate_values) == [1]
    assert frozen.intermediate_values[1] == pytest.approx(trainer.state.history[0]["val/accuracy"])
    # the task is usable afterwards: a fresh trainer trains it
    Trainer(max_epochs=1, progress="none", accelerator="cpu").fit(task, train, val)


def test_pruning_callback_names_a_missing_metric(blob_loaders) -> None:
    train, val = blob_loaders
    trial = optuna.create_study().ask()
    task = ClassificationTask(create_model("mlp", input_shape=(4,), num_outputs=3, hidden=[8]), num_classes=3)
    trainer = Trainer(max_epochs=2, progress="none", accelerator="cpu", callbacks=[PruningCallback(trial, "val/acc")])
    with pytest.raises(ConfigError, match=r"tune\.metric: 'val/acc' is not among the epoch's metrics: .*val/accuracy"):
        trainer.fit(task, train, val)


# ---- tune() --------------------------------------------------------------------------------------------------------
def test_two_workers_share_one_study_and_finish_exactly_n_trials(tmp_path: Path) -> None:
    space = LR_SPACE | {"model.dropout": {"type": "float", "low": 0.0, "high": 0.3}}
    config = run_config(tmp_path, space=space, pruner={"name": "none"}, sampler={"name": "tpe", "n_startup_trials": 3})
    result = tune(config, trials=4, workers=2)

    tune_dir = tmp_path / "runs" / "tiny" / "tune"
    assert result.output_dir == tune_dir
    assert result.storage == f"sqlite:///{(tune_dir / 'study.db').resolve()}"
    assert (result.n_complete, result.n_pruned, result.n_failed) == (4, 0, 0)
    trials = stored_trials(result)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state is TrialState.COMPLETE for t in trials)
    params = [(t.params["optimizer.lr"], t.params["model.dropout"]) for t in trials]
    assert len(set(params)) == 4
    pids = {t.user_attrs["worker_pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # two spawned worker processes, two trials each
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == tune_dir / "trials" / f"{t.number:04d}"
        assert (run_dir / "summary.json").is_file()
        assert t.value == t.user_attrs["metrics"]["val/accuracy"]
        assert "test/accuracy" in t.user_attrs["metrics"]
    best = max(trials, key=lambda t: t.value)
    assert result.best_value == best.value
    assert result.best_params == best.params

    with (tune_dir / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["number"] for r in sorted(rows, key=lambda r: int(r["number"]))] == ["0", "1", "2", "3"]
    assert set(rows[0]) == {"number", "state", "value", "optimizer.lr", "model.dropout", "duration_s", "run_dir"}
    for name in ("history.png", "importance.png"):
        assert (tune_dir / name).stat().st_size > 1000, name
    report = (tune_dir / "tune.md").read_text()
    assert f"Best value: **{result.best_value:.6g}** (trial {best.number})" in report
    assert "4 complete" in report and "![optimisation history](history.png)" in report

    best_config = load_config(result.best_config)
    assert best_config.tune is None
    assert "tune" not in yaml.safe_load(result.best_config.read_text())
    assert best_config.optimizer.params["lr"] == pytest.approx(best.params["optimizer.lr"])
    assert best_config.model.params["dropout"] == pytest.approx(best.params["model.dropout"])
    assert best_config.trainer.progress == "none"  # the user's own setting, not forced by the tuner
    rerun = train_from_config(best_config, run_dir=tmp_path / "best-run")
    assert rerun.metrics["val/accuracy"] == pytest.approx(result.best_value, abs=0.02)


def test_rerun_resumes_the_study_and_runs_only_the_missing_trials(tmp_path: Path, monkeypatch) -> None:
    config = run_config(tmp_path, pruner=None, trials=2)
    first = tune(config)
    assert first.n_complete == 2

    # A worker killed with kill -9 leaves its trial RUNNING: once its heartbeat is stale it is marked failed,
    # and it neither blocks nor counts.
    monkeypatch.setattr(tune_module, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune_module, "GRACE_S", 1)
    storage = tune_module._storage(first.storage)
    with pytest.warns(UserWarning, match="Heartbeat of storage"):
        zombie = optuna.load_study(study_name=first.study_name, storage=storage).ask()
    storage.record_heartbeat(zombie._trial_id)
    time.sleep(2.1)

    second = tune(config, trials=3)
    trials = stored_trials(second)
    states = {t.number: t.state for t in trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE, 2: TrialState.FAIL, 3: TrialState.COMPLETE}
    assert (second.n_complete, second.n_failed) == (3, 1)
    assert len({t.params["optimizer.lr"] for t in trials if t.state is TrialState.COMPLETE}) == 3

    third = tune(config, trials=3)  # target already reached: nothing runs
    assert len(stored_trials(third)) == 4
    rows = list(csv.DictReader((second.output_dir / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert not (second.output_dir / "importance.png").exists()  # one parameter: no importances
    assert "only one parameter is searched" in (second.output_dir / "tune.md").read_text()


def test_a_bad_value_fails_its_trial_not_the_study(tmp_path: Path) -> None:
    space = {"data.batch_size": {"type": "categorical", "choices": [0, 64]}}
    config = run_config(tmp_path, space=space, sampler={"name": "grid"}, pruner=None)
    config.trainer.max_epochs = 1
    result = tune(config, trials=2)
    assert (result.n_complete, result.n_failed) == (1, 1)
    assert result.best_params == {"data.batch_size": 64}
    (failed,) = [t for t in stored_trials(result) if t.state is TrialState.FAIL]
    assert "data.batch_size: Input should be greater than or equal to 1" in failed.user_attrs["error"]
    assert "data.batch_size: Input should be greater than or equal to 1" in (result.output_dir / "tune.md").read_text()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"optimizer.nope": {"type": "float", "low": 0, "high": 1}},
            r"tune\.space\.optimizer\.nope: unknown key 'nope' for optimizer 'adamw'",
        ),
        (
            {"trainer.max_epoch": {"type": "int", "low": 1, "high": 3}},
            r"tune\.space\.trainer\.max_epoch: unknown key .*did you mean 'max_epochs'",
        ),
        (
            {"modle.dropout": {"type": "float", "low": 0, "high": 1}},
            r"tune\.space\.modle\.dropout: unknown section 'modle' \(did you mean 'model'\?\)",
        ),
        (
            {"task.label_smoothing": {"type": "float", "low": 0, "high": 0.2}},
            r"tune\.space\.task\.label_smoothing: the config has no 'task' section",
        ),
        (
            {"model.input_shape": {"type": "int", "low": 1, "high": 4}},
            r"tune\.space\.model\.input_shape: set by the run itself",
        ),
        (
            {"model.hidden.width": {"type": "int", "low": 1, "high": 4}},
            r"tune\.space\.model\.hidden\.width: cannot set it, 'model\.hidden' is not a mapping",
        ),
        (
            {"callbacks.patience": {"type": "int", "low": 1, "high": 4}},
            r"tune\.space\.callbacks\.patience: cannot set it, 'callbacks' is not a mapping",
        ),
    ],
)
def test_a_bad_key_in_the_search_space_fails_fast(tmp_path: Path, space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(run_config(tmp_path, space=space))
    assert not (tmp_path / "runs" / "tiny" / "tune" / "trials").exists()


@pytest.mark.parametrize(
    ("key", "choices"),
    [("trainer.devices", [1, 2]), ("trainer.num_nodes", [1, 2]), ("trainer.strategy", ["auto", "ddp"])],
)
def test_the_process_layout_cannot_be_searched(tmp_path: Path, key: str, choices: list) -> None:
    space = parse_space({key: {"type": "categorical", "choices": choices}})
    with pytest.raises(ConfigError, match=rf"tune\.space\.{key}: cannot change from trial to trial"):
        SupervisedRun().check_space(run_config(tmp_path), space)


def test_bad_tune_sections_fail_before_any_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tune\.sampler\.name: 'tpee' is not in the samplers registry"):
        tune(run_config(tmp_path, sampler={"name": "tpee"}))
    with pytest.raises(ConfigError, match=r"tune\.pruner\.n_warmup: unknown key"):
        tune(run_config(tmp_path, pruner={"name": "median", "n_warmup": 2}))
    with pytest.raises(
        ConfigError,
        match=r"tune\.metric: the objective must be a validation metric \(val/\.\.\.\), got 'test/accuracy'",
    ):
        tune(run_config(tmp_path, metric="test/accuracy"))
    two_devices = run_config(tmp_path)
    two_devices.trainer.devices = 2
    with pytest.raises(ConfigError, match=r"trainer\.devices: each trial trains in one process"):
        tune(two_devices)
    with pytest.raises(ConfigError, match=r"tune: the config has no 'tune' section"):
        tune(RunConfig.model_validate(BASE))
    assert not (tmp_path / "runs").exists()


def test_a_metric_that_is_never_logged_stops_the_study(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tune\.metric: 'val/acc' is not among the epoch's metrics: .*val/accuracy"):
        tune(run_config(tmp_path, metric="val/acc", trials=3))
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'runs/tiny/tune/study.db'}").trials
    assert [t.state for t in trials] == [TrialState.FAIL]  # stopped after the first trial


@pytest.mark.parametrize(
    ("tune_section", "message"),
    [
        ({"space": {}}, r"tune: Value error, empty search space: add at least one parameter under tune\.space"),
        (
            {"space": {"optimizer.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
            r"tune\.space\.optimizer\.lr: Value error, a log-scale parameter needs low > 0, got 0",
        ),
        (
            {"space": {"model.hidden": {"type": "categorical", "choices": []}}},
            r"tune\.space\.model\.hidden: Value error, a categorical parameter needs a non-empty 'choices' list",
        ),
        ({"space": LR_SPACE, "direction": "up"}, r"tune\.direction: Input should be 'minimize' or 'maximize'"),
    ],
)
def test_load_config_rejects_a_bad_tune_section(tmp_path: Path, tune_section: dict, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE | {"tune": tune_section}))
    with pytest.raises(ConfigError, match=rf"run\.yaml: {message}"):
        load_config(path)


def test_the_shipped_digits_tune_config_loads_and_its_space_checks() -> None:
    path = Path(tune_module.__file__).parent / "configs" / "digits_tune.yaml"
    config = load_config(path)
    assert config.tune is not None
    assert set(config.tune.space) == {"optimizer.lr", "model.dropout", "model.hidden"}
    assert (config.tune.metric, config.tune.direction, config.tune.trials) == ("val/accuracy", "maximize", 12)
    SupervisedRun().check_space(config, parse_space(config.tune.space))
    create_sampler(config.tune.sampler, parse_space(config.tune.space), seed=0)
