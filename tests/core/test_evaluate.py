"""Model selection: exact threshold choice, stored thresholds, ensembles, k-fold cross-validation, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tujie_core import ClassificationTask, ConfigError, DataError, RegressionTask, RunConfig, Trainer
from tujie_core.evaluate import Ensemble, choose_threshold, cross_validate, ensemble_runs, tune_run_threshold
from tujie_core.run import load_run, train_from_config


def binary_scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.2, n))))
    return p, y


def at(p: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float, float]:
    pred = p > threshold
    return (
        precision_score(y, pred, zero_division=0),
        recall_score(y, pred),
        f1_score(y, pred),
    )


@pytest.mark.parametrize("target", [0.8, 0.95, 1.0])
def test_recall_target_gives_the_highest_threshold_reaching_it(target: float) -> None:
    p, y = binary_scores()
    choice = choose_threshold(p, y, "recall", target)
    precision, recall, f1 = at(p, y, choice.threshold)
    assert (choice.precision, choice.recall, choice.f1) == pytest.approx((precision, recall, f1))
    assert recall >= target
    # any higher cut-off (the next distinct probability up) loses the recall target
    higher = np.unique(p[p > choice.threshold])
    assert at(p, y, higher[0])[1] < target if higher.size else True


def test_precision_target_gives_the_best_recall_reaching_it() -> None:
    p, y = binary_scores(seed=1)
    choice = choose_threshold(p, y, "precision", 0.9)
    precision, recall, _ = at(p, y, choice.threshold)
    assert precision >= 0.9 and recall == pytest.approx(choice.recall)
    best = max(at(p, y, t)[1] for t in np.unique(p) if at(p, y, t)[0] >= 0.9)
    assert recall == pytest.approx(best)


def test_f1_objective_is_the_maximum_over_all_thresholds() -> None:
    p, y = binary_scores(seed=2)
    choice = choose_threshold(p, y, "f1")
    brute = max(at(p, y, t - 1e-9)[2] for t in np.unique(p))
    assert choice.f1 == pytest.approx(brute)
    assert at(p, y, choice.threshold)[2] == pytest.approx(brute)


def test_threshold_errors_are_clear() -> None:
    p, y = binary_scores()
    with pytest.raises(DataError, match="no threshold reaches precision"):
        choose_threshold(np.full(10, 0.5), np.arange(10) % 2, "precision", 0.99)
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


def tiny_config(tmp_path: Path, **trainer) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "tiny",
            "output_dir": str(tmp_path / "runs"),
            "data": {"name": "breast_cancer", "batch_size": 64},
            "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
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


def test_cross_validation_partitions_the_data_and_aggregates(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, max_epochs=2)
    cv = cross_validate(config, folds=3)
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
