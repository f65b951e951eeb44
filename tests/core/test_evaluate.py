"""Model selection: exact threshold choice, stored thresholds, ensembles, k-fold cross-validation, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import BinaryF1Score

from tujie_core import ClassificationTask, ConfigError, DataError, RegressionTask, RunConfig, Trainer
from tujie_core.evaluate import (
    Ensemble,
    ThresholdChoice,
    choose_threshold,
    cross_validate,
    ensemble_runs,
    tune_run_threshold,
)
from tujie_core.run import load_run
from tujie_core.runs import train_from_config


def binary_scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 probabilities, as a model outputs them, with ties (rounded to 3 decimals)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.2, n))))
    return p.round(3).astype(np.float32), y


def at(p: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float, float]:
    pred = p > np.float32(threshold)
    return (
        precision_score(y, pred, zero_division=0),
        recall_score(y, pred),
        f1_score(y, pred),
    )


def operating_points(p: np.ndarray, y: np.ndarray) -> list[tuple[float, tuple[float, float, float]]]:
    """(probability level, its precision/recall/F1 with every probability ≥ the level positive), highest first."""
    return [(level, at(p, y, np.nextafter(level, np.float32(0)))) for level in np.unique(p)[::-1]]


def check_exact(choice: ThresholdChoice, p: np.ndarray, y: np.ndarray) -> None:
    """The threshold is a probability of the data (or below them all), inside (0, 1), and gives what is reported."""
    assert 0 < choice.threshold < 1
    assert np.float32(choice.threshold) in p or choice.threshold < p.min()
    assert (choice.precision, choice.recall, choice.f1) == pytest.approx(at(p, y, choice.threshold), abs=1e-12)


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_recall_target_gives_the_best_precision_reaching_it(target: float) -> None:
    p, y = binary_scores()
    choice = choose_threshold(p, y, "recall", target)
    check_exact(choice, p, y)
    best = max(scores[0] for _, scores in operating_points(p, y) if scores[1] >= target)
    assert choice.recall >= target and choice.precision == pytest.approx(best)


def test_precision_target_gives_the_best_recall_reaching_it() -> None:
    p, y = binary_scores(seed=1)
    choice = choose_threshold(p, y, "precision", 0.9)
    check_exact(choice, p, y)
    best = max(scores[1] for _, scores in operating_points(p, y) if scores[0] >= 0.9)
    assert choice.precision >= 0.9 and choice.recall == pytest.approx(best)


def test_f1_objective_is_the_maximum_over_all_thresholds() -> None:
    p, y = binary_scores(seed=2)
    choice = choose_threshold(p, y, "f1")
    check_exact(choice, p, y)
    assert choice.f1 == pytest.approx(max(scores[2] for _, scores in operating_points(p, y)))


def test_objectives_rank_points_and_break_ties_towards_the_higher_threshold() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32)
    y = np.array([1, 0, 0, 1, 1])
    # recall ≥ 0.6 is reached at 0.6 (precision 0.5) and at 0.5 (precision 0.6): the better precision wins
    choice = choose_threshold(p, y, "recall", 0.6)
    assert (choice.threshold, choice.precision, choice.recall) == (pytest.approx(0.25), 0.6, 1.0)
    # every point has recall 1 and precision ≥ 0.3: the highest threshold keeps the best precision
    choice = choose_threshold(p[:3], y[:3], "precision", 0.3)
    assert choice.threshold == np.float32(0.8) and (choice.precision, choice.recall) == (1.0, 1.0)


def test_threshold_is_exact_in_float32_and_inside_the_unit_interval() -> None:
    # two probabilities that differ in float64 but not in float32, which the model and its metrics use
    p = np.array([0.2, 0.5, 0.5 + 1e-12, 0.9])
    y = np.array([0, 0, 1, 1])
    choice = choose_threshold(p, y, "f1")
    assert choice.threshold == np.float32(0.2) and choice.f1 == pytest.approx(0.8)
    f1 = BinaryF1Score(threshold=choice.threshold)(torch.tensor(p, dtype=torch.float32), torch.tensor(y))
    assert float(f1) == pytest.approx(choice.f1)
    # a probability of exactly 0 cannot be called positive by any threshold in (0, 1)
    choice = choose_threshold(np.array([0.0, 0.4]), np.array([1, 1]), "f1")
    assert choice.threshold == np.float32(0.2) and choice.recall == 0.5
    # calling every sample positive: below the lowest probability, above 0
    choice = choose_threshold(np.array([0.3, 0.6]), np.array([1, 1]), "recall", 1.0)
    assert 0 < choice.threshold < 0.3 and choice.recall == 1.0


def test_threshold_errors_are_clear() -> None:
    p, y = binary_scores()
    with pytest.raises(DataError, match="no threshold reaches precision"):
        choose_threshold(np.full(10, 0.5), np.arange(10) % 2, "precision", 0.99)
    with pytest.raises(DataError, match=r"no threshold reaches recall 1\.0"):
        choose_threshold(np.array([0.0, 0.4]), np.array([1, 1]), "recall", 1.0)
    with pytest.raises(DataError, match="no positive"):
        choose_threshold(p[:5], np.zeros(5), "f1")
    with pytest.raises(ConfigError, match="needs a target"):
        choose_threshold(p, y, "recall")
    with pytest.raises(ConfigError, match="takes no target"):
        choose_threshold(p, y, "f1", 0.5)


def test_decision_threshold_changes_binary_metrics() -> None:
    x = torch.linspace(-1, 1, 20).unsqueeze(1)
    y = (torch.arange(20) >= 5).long()  # positives are x > -0.5
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(4.0), model.bias.zero_()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = Trainer(progress="none", accelerator="cpu")
    default = trainer.validate(ClassificationTask(model, 2, mode="binary"), loader)
    low = trainer.validate(ClassificationTask(model, 2, mode="binary", decision_threshold=0.1), loader)
    assert default["val/recall"] < 1.0
    assert low["val/recall"] == 1.0


def tiny_config(tmp_path: Path, task: dict | None = None, data: str = "breast_cancer", **trainer) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "tiny",
            "output_dir": str(tmp_path / "runs"),
            "data": {"name": data, "batch_size": 64},
            "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
            "task": task,
            "optimizer": {"name": "adamw", "lr": 0.02},
            "trainer": {"max_epochs": 3, "progress": "none", "accelerator": "cpu", **trainer},
        }
    )


def test_tuned_threshold_is_stored_with_the_model_and_reloaded(tmp_path: Path) -> None:
    run = train_from_config(tiny_config(tmp_path))
    choice, metrics = tune_run_threshold(run.run_dir, "recall", 0.99)
    stored = json.loads((run.run_dir / "model" / "config.json").read_text())
    assert stored["decision_threshold"] == pytest.approx(choice.threshold)
    assert metrics["val/recall"] == pytest.approx(choice.recall) and choice.recall >= 0.99
    assert load_run(run.run_dir).task.decision_threshold == pytest.approx(choice.threshold)


def test_run_tools_evaluate_on_one_cpu_whatever_the_run_trained_with(tmp_path: Path, monkeypatch) -> None:
    run_dir = train_from_config(tiny_config(tmp_path, max_epochs=1)).run_dir
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["trainer"] |= {"accelerator": "cuda", "devices": 2, "strategy": "ddp", "precision": "bf16-mixed"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    built = []
    init = Trainer.__init__

    def recording_init(self: Trainer, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        built.append(self.config)

    monkeypatch.setattr(Trainer, "__init__", recording_init)
    ensemble_runs([run_dir, run_dir])
    tune_run_threshold(run_dir)
    assert len(built) == 2
    for c in built:
        assert (c.accelerator, c.devices, c.num_nodes, c.strategy, c.precision) == ("cpu", 1, 1, "auto", "32-true")


def test_ensemble_averages_probabilities_and_votes() -> None:
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(50, 4)
    probs = torch.stack([m(x).softmax(-1) for m in members])
    mean = Ensemble(members, "multiclass", "mean")(x).softmax(-1)
    torch.testing.assert_close(mean, probs.mean(0), rtol=1e-5, atol=1e-6)
    votes = Ensemble(members, "multiclass", "vote")(x).softmax(-1)
    share = torch.nn.functional.one_hot(probs.argmax(-1), 3).float().mean(0)
    torch.testing.assert_close(votes, share, atol=1e-5, rtol=0)
    binary = [nn.Linear(4, 1) for _ in range(2)]
    mean_binary = Ensemble(binary, "binary", "mean")(x).sigmoid()
    torch.testing.assert_close(mean_binary, torch.stack([m(x).sigmoid() for m in binary]).mean(0), atol=1e-5, rtol=0)
    undecided = [nn.Linear(4, 1) for _ in range(2)]
    for m in undecided:
        nn.init.zeros_(m.weight), nn.init.zeros_(m.bias)
    assert float(Ensemble(undecided, "binary", "vote")(x).sigmoid().max()) < 1e-6  # probability 0.5 is no vote
    regression = Ensemble(binary, "regression", "mean")(x)
    torch.testing.assert_close(regression, (binary[0](x) + binary[1](x)) / 2)
    with pytest.raises(ConfigError, match="at least 2"):
        Ensemble(members[:1])
    with pytest.raises(ConfigError, match="needs classes"):
        Ensemble(binary, "regression", "vote")
    assert isinstance(RegressionTask(Ensemble(binary, "regression")).model, Ensemble)


def test_ensemble_of_runs_is_evaluated_like_a_model(tmp_path: Path) -> None:
    runs = [train_from_config(tiny_config(tmp_path, seed=seed)).run_dir for seed in (0, 1)]
    results, task = ensemble_runs(runs, "mean")
    assert list(results)[-1] == "ensemble" and len(results) == 3
    losses = [metrics["test/loss"] for metrics in results.values()]
    # log loss is convex in the probabilities: the averaged model is never worse than the mean of its members
    assert losses[2] <= (losses[0] + losses[1]) / 2 + 1e-6
    assert results["ensemble"]["test/accuracy"] > 0.85
    assert isinstance(task.model, Ensemble)


@pytest.mark.parametrize(
    ("data", "task"),
    [
        ("breast_cancer", {"name": "classification", "class_weights": [1.0, 3.0], "decision_threshold": 0.3}),
        ("diabetes", {"name": "regression", "loss": "mae"}),
    ],
)
def test_the_ensemble_task_keeps_the_first_runs_settings(tmp_path: Path, data: str, task: dict) -> None:
    run_dir = train_from_config(tiny_config(tmp_path, task, data, max_epochs=1)).run_dir
    results, ensemble = ensemble_runs([run_dir, run_dir])
    assert isinstance(ensemble.model, Ensemble) and type(ensemble) is type(load_run(run_dir).task)
    # one model twice is that model: the same loss (class weights, loss function) and decisions (threshold)
    alone = results[f"{run_dir.parent.name}/{run_dir.name}"]
    assert results["ensemble"] == pytest.approx(alone, rel=1e-4, abs=1e-5)


def test_cross_validation_partitions_the_data_and_aggregates(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, max_epochs=2)
    stale = tmp_path / "runs" / "tiny" / "cv" / "fold-1" / "checkpoints" / "epoch-7.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by an earlier run")
    cv = cross_validate(config, folds=3)
    assert not stale.exists()
    assert len(cv.folds) == 3 and len(cv.run_dirs) == 3
    for key in ("val/accuracy", "val/loss", "val/roc_auc"):
        values = np.array([fold[key] for fold in cv.folds])
        assert cv.mean[key] == pytest.approx(values.mean())
        assert cv.std[key] == pytest.approx(values.std(ddof=1))
    assert cv.mean["val/accuracy"] > 0.85
    written = json.loads((tmp_path / "runs" / "tiny" / "cv" / "cv.json").read_text())
    assert written["mean"] == pytest.approx(cv.mean)
    with pytest.raises(ConfigError, match="at least 2"):
        cross_validate(config, folds=1)


def test_evaluate_cli_errors_exit_2(tmp_path: Path, tujie) -> None:
    config = tiny_config(tmp_path, max_epochs=1).model_copy(
        update={"data": RunConfig.model_validate({"data": {"name": "digits"}, "model": {"name": "mlp"}}).data}
    )
    run = train_from_config(config)
    result = tujie("evaluate", "threshold", str(run.run_dir), cwd=tmp_path)
    assert result.returncode == 2 and "binary classification runs only" in result.stderr
    result = tujie("evaluate", "threshold", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2 and "not a finished run folder" in result.stderr
    result = tujie("evaluate", "ensemble", str(run.run_dir), str(run.run_dir), "--method", "median", cwd=tmp_path)
    assert result.returncode == 2 and "--method" in result.stderr
