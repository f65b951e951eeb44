"""Every streaming metric against scikit-learn (or a direct NumPy formula) on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from tujie_core.metrics import CalibrationBins, classification_metrics, curve_metrics, regression_metrics

RANKING_ATOL = 3e-3  # binned ROC-AUC/PR-AUC (1,001 thresholds) against the exact value


def feed(collection, preds: torch.Tensor, target: torch.Tensor, batch: int = 37) -> dict[str, float]:
    """Update batch by batch (as the trainer does), then compute."""
    for i in range(0, len(target), batch):
        collection.update(preds[i : i + batch], target[i : i + batch])
    return {k: float(v) for k, v in collection.compute().items()}


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def test_binary_metrics_match_sklearn(rng: torch.Generator) -> None:
    target = torch.randint(0, 2, (500,), generator=rng)
    probs = torch.sigmoid(torch.randn(500, generator=rng) + 1.2 * target)
    ours = feed(classification_metrics("binary", 2), probs, target)
    y, p, hard = target.numpy(), probs.numpy(), (probs >= 0.5).long().numpy()
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, hard), abs=1e-6)
    assert ours["precision"] == pytest.approx(skm.precision_score(y, hard), abs=1e-6)
    assert ours["recall"] == pytest.approx(skm.recall_score(y, hard), abs=1e-6)
    assert ours["f1"] == pytest.approx(skm.f1_score(y, hard), abs=1e-6)
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=RANKING_ATOL)
    assert ours["pr_auc"] == pytest.approx(skm.average_precision_score(y, p), abs=RANKING_ATOL)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_multiclass_metrics_match_sklearn(rng: torch.Generator, average: str) -> None:
    target = torch.randint(0, 5, (600,), generator=rng)
    logits = torch.randn(600, 5, generator=rng) + 1.5 * torch.nn.functional.one_hot(target, 5)
    probs = logits.softmax(1)
    ours = feed(classification_metrics("multiclass", 5), probs, target)
    y, hard, p = target.numpy(), probs.argmax(1).numpy(), probs.numpy()
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, hard), abs=1e-6)
    assert ours[f"precision_{average}"] == pytest.approx(skm.precision_score(y, hard, average=average), abs=1e-6)
    assert ours[f"recall_{average}"] == pytest.approx(skm.recall_score(y, hard, average=average), abs=1e-6)
    assert ours[f"f1_{average}"] == pytest.approx(skm.f1_score(y, hard, average=average), abs=1e-6)
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=RANKING_ATOL)
    assert ours["pr_auc"] == pytest.approx(
        skm.average_precision_score(np.eye(5)[y], p, average="macro"), abs=RANKING_ATOL
    )


def test_multilabel_metrics_match_sklearn(rng: torch.Generator) -> None:
    target = torch.randint(0, 2, (400, 4), generator=rng)
    probs = torch.sigmoid(torch.randn(400, 4, generator=rng) + 1.5 * target)
    ours = feed(classification_metrics("multilabel", 4), probs, target)
    y, hard, p = target.numpy(), (probs >= 0.5).long().numpy(), probs.numpy()
    for average in ("macro", "micro", "weighted"):
        assert ours[f"f1_{average}"] == pytest.approx(skm.f1_score(y, hard, average=average), abs=1e-6)
    assert ours["accuracy"] == pytest.approx((y == hard).mean(), abs=1e-6)  # per-label (Hamming) accuracy
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"), abs=RANKING_ATOL)
    assert ours["pr_auc"] == pytest.approx(skm.average_precision_score(y, p, average="macro"), abs=RANKING_ATOL)


def test_regression_metrics_match_sklearn(rng: torch.Generator) -> None:
    target = torch.randn(300, generator=rng)
    preds = target + 0.3 * torch.randn(300, generator=rng)
    ours = feed(regression_metrics(), preds, target)
    y, p = target.numpy(), preds.numpy()
    assert ours["mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-5)
    assert ours["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-5)
    assert ours["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-5)
    assert ours["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-5)


def numpy_ece(confidence: np.ndarray, outcome: np.ndarray, n_bins: int = 15) -> float:
    edges = np.linspace(0, 1, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = index == b
        if mask.any():
            ece += mask.mean() * abs(outcome[mask].mean() - confidence[mask].mean())
    return ece


def test_calibration_matches_reference_implementations(rng: torch.Generator) -> None:
    target = torch.randint(0, 2, (700,), generator=rng)
    probs = torch.sigmoid(2 * torch.randn(700, generator=rng) + target)
    ours = _ece(probs, target, "binary")
    assert ours == pytest.approx(float(BinaryCalibrationError(n_bins=15)(probs, target)), abs=1e-6)
    assert ours == pytest.approx(numpy_ece(probs.numpy(), target.numpy()), abs=1e-6)

    target = torch.randint(0, 4, (700,), generator=rng)
    probs = (torch.randn(700, 4, generator=rng) * 2).softmax(1)
    ours = _ece(probs, target, "multiclass")
    assert ours == pytest.approx(float(MulticlassCalibrationError(4, n_bins=15)(probs, target)), abs=1e-6)
    top, pred = probs.max(1)
    assert ours == pytest.approx(numpy_ece(top.numpy(), (pred == target).numpy().astype(float)), abs=1e-6)


def _ece(probs: torch.Tensor, target: torch.Tensor, kind: str) -> float:
    metric = CalibrationBins(kind)
    for i in range(0, len(target), 50):
        metric.update(probs[i : i + 50], target[i : i + 50])
    return float(metric.compute())


def test_curves_and_confusion_matrix_match_sklearn(rng: torch.Generator) -> None:
    target = torch.randint(0, 3, (300,), generator=rng)
    probs = (torch.randn(300, 3, generator=rng) + 2 * torch.nn.functional.one_hot(target, 3)).softmax(1)
    curves = curve_metrics("multiclass", 3)
    for metric in curves.values():
        metric.update(probs, target)
    confusion = curves["confusion"].compute().numpy()
    np.testing.assert_array_equal(confusion, skm.confusion_matrix(target.numpy(), probs.argmax(1).numpy()))
    fpr, tpr, _ = curves["roc"].compute()
    area = [abs(np.trapezoid(tpr[c].numpy(), fpr[c].numpy())) for c in range(3)]  # binned curves run high→low
    expected = [skm.roc_auc_score(target.numpy() == c, probs[:, c].numpy()) for c in range(3)]
    np.testing.assert_allclose(area, expected, atol=RANKING_ATOL)
    bins = curves["calibration"].bins()
    assert int(bins["count"].sum()) == 300


def test_metric_memory_does_not_grow_with_data(rng: torch.Generator) -> None:
    collection = classification_metrics("multiclass", 4)
    sizes = []
    for _ in range(3):
        target = torch.randint(0, 4, (1000,), generator=rng)
        collection.update(torch.rand(1000, 4, generator=rng).softmax(1), target)
        sizes.append(
            sum(t.numel() for m in collection.values() for t in m.metric_state.values() if isinstance(t, torch.Tensor))
        )
        assert all(not isinstance(v, list) for m in collection.values() for v in m.metric_state.values())
    assert sizes[0] == sizes[-1]


def test_r2_of_a_single_value_is_nan_instead_of_an_error() -> None:
    import math

    from tujie_core.metrics import regression_metrics

    metrics = regression_metrics()
    metrics.update(torch.tensor([1.0]), torch.tensor([2.0]))
    values = metrics.compute()
    assert math.isnan(values["r2"].item()) and values["mse"].item() == 1.0
    metrics.update(torch.tensor([3.0]), torch.tensor([3.0]))
    assert metrics.compute()["r2"].item() == pytest.approx(1 - 1 / 0.5)
