"""Streaming metrics on torchmetrics: ``update()`` per batch, ``compute()`` at the end, ``reset()``.

Nothing here keeps every prediction: ranking metrics (ROC-AUC, PR-AUC) and curves use ``thresholds``
fixed bins (default 1,001, error against the exact value ≈ 1e-3), calibration uses fixed confidence bins,
confusion matrices are running counts. All states sync across processes in distributed runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics import classification as C
from torchmetrics import regression as R

Kind = Literal["binary", "multiclass", "multilabel", "regression"]
DEFAULT_THRESHOLDS = 1001
IGNORE = -1  # a missing binary or multi-label target (a NaN label becomes -1): left out of the metrics


@contextmanager
def counting_mode() -> Iterator[None]:
    """Metric updates with deterministic algorithms off.

    Under ``torch.use_deterministic_algorithms(True)`` torchmetrics replaces ``bincount`` by a one-hot version that
    needs batch × bins memory (hundreds of GB for binned curves). Bin counts are integers, exact in any order, so
    the fast kernel is as reproducible here.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        if enabled:
            torch.use_deterministic_algorithms(True, warn_only=warn_only)


class CalibrationBins(Metric):
    """Reliability bins and expected calibration error (ECE, L1) with constant memory.

    Binary: confidence = predicted probability of the positive class, outcome = the label (as
    ``BinaryCalibrationError``). Multiclass: confidence = top probability, outcome = top class is right.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, kind: Literal["binary", "multiclass"], n_bins: int = 15) -> None:
        super().__init__()
        self.kind = kind
        self.n_bins = n_bins
        self.register_buffer("edges", torch.linspace(0, 1, n_bins + 1), persistent=False)
        for name in ("count", "confidence", "outcome"):
            self.add_state(name, torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.kind == "binary":
            keep = target.reshape(-1) != IGNORE
            confidence, outcome = preds.reshape(-1)[keep].double(), target.reshape(-1)[keep].double()
        else:
            top, predicted = preds.max(dim=1)
            confidence, outcome = top.double(), (predicted == target).double()
        index = (torch.bucketize(confidence, self.edges, right=True) - 1).clamp(0, self.n_bins - 1)
        self.count.index_add_(0, index, torch.ones_like(confidence))
        self.confidence.index_add_(0, index, confidence)
        self.outcome.index_add_(0, index, outcome)

    def compute(self) -> Tensor:
        total = self.count.sum().clamp(min=1)
        used = self.count > 0
        gap = (self.outcome[used] - self.confidence[used]).abs()  # = count × |mean outcome − mean confidence|
        return (gap.sum() / total).float()

    def bins(self) -> dict[str, Tensor]:
        """Per-bin count, mean confidence and mean outcome (NaN for empty bins), for reliability diagrams."""
        count = self.count
        safe = count.clamp(min=1)
        empty = count == 0
        return {
            "edges": self.edges.cpu(),
            "count": count.cpu(),
            "confidence": (self.confidence / safe).masked_fill(empty, float("nan")).cpu(),
            "outcome": (self.outcome / safe).masked_fill(empty, float("nan")).cpu(),
        }


def classification_metrics(
    kind: Literal["binary", "multiclass", "multilabel"],
    num_classes: int,
    thresholds: int | None = DEFAULT_THRESHOLDS,
    decision_threshold: float = 0.5,
) -> MetricCollection:
    """Scalar metrics for probabilities ``preds`` and integer ``target``.

    ``decision_threshold``: probability above which a binary prediction counts as positive.
    """
    if kind == "binary":
        t = decision_threshold
        return MetricCollection(
            {
                "accuracy": C.BinaryAccuracy(threshold=t, ignore_index=IGNORE),
                "precision": C.BinaryPrecision(threshold=t, ignore_index=IGNORE),
                "recall": C.BinaryRecall(threshold=t, ignore_index=IGNORE),
                "f1": C.BinaryF1Score(threshold=t, ignore_index=IGNORE),
                "roc_auc": C.BinaryAUROC(thresholds=thresholds, ignore_index=IGNORE),
                "pr_auc": C.BinaryAveragePrecision(thresholds=thresholds, ignore_index=IGNORE),
                "ece": CalibrationBins("binary"),
            }
        )
    if kind == "multiclass":
        n = num_classes
        metrics: dict[str, Metric] = {"accuracy": C.MulticlassAccuracy(n, average="micro")}
        for average in ("macro", "micro", "weighted"):
            metrics[f"precision_{average}"] = C.MulticlassPrecision(n, average=average)
            metrics[f"recall_{average}"] = C.MulticlassRecall(n, average=average)
            metrics[f"f1_{average}"] = C.MulticlassF1Score(n, average=average)
        metrics["roc_auc"] = C.MulticlassAUROC(n, average="macro", thresholds=thresholds)
        metrics["pr_auc"] = C.MulticlassAveragePrecision(n, average="macro", thresholds=thresholds)
        metrics["ece"] = CalibrationBins("multiclass")
        return MetricCollection(metrics)
    if kind == "multilabel":
        n = num_classes
        metrics = {"accuracy": C.MultilabelAccuracy(n, average="micro", ignore_index=IGNORE)}
        for average in ("macro", "micro", "weighted"):
            metrics[f"f1_{average}"] = C.MultilabelF1Score(n, average=average, ignore_index=IGNORE)
        metrics["precision_macro"] = C.MultilabelPrecision(n, average="macro", ignore_index=IGNORE)
        metrics["recall_macro"] = C.MultilabelRecall(n, average="macro", ignore_index=IGNORE)
        metrics["roc_auc"] = C.MultilabelAUROC(n, average="macro", thresholds=thresholds, ignore_index=IGNORE)
        metrics["pr_auc"] = C.MultilabelAveragePrecision(n, average="macro", thresholds=thresholds, ignore_index=IGNORE)
        return MetricCollection(metrics)
    raise ValueError(f"unknown classification kind '{kind}'")


class R2Score(R.R2Score):
    """torchmetrics' R² that is NaN, instead of an error, on fewer than two values (a tiny validation split)."""

    def compute(self) -> Tensor:
        if int(self.total) < 2:
            return torch.tensor(float("nan"))
        return super().compute()


def regression_metrics() -> MetricCollection:
    return MetricCollection(
        {
            "mse": R.MeanSquaredError(),
            "rmse": R.MeanSquaredError(squared=False),
            "mae": R.MeanAbsoluteError(),
            "r2": R2Score(),
        }
    )


def curve_metrics(
    kind: Kind, num_classes: int, thresholds: int = DEFAULT_THRESHOLDS, decision_threshold: float = 0.5
) -> dict[str, Metric]:
    """Curve-shaped results for the evaluation report (ROC, PR, confusion matrix, reliability)."""
    if kind == "binary":
        return {
            "roc": C.BinaryROC(thresholds=thresholds, ignore_index=IGNORE),
            "pr": C.BinaryPrecisionRecallCurve(thresholds=thresholds, ignore_index=IGNORE),
            "confusion": C.BinaryConfusionMatrix(threshold=decision_threshold, ignore_index=IGNORE),
            "calibration": CalibrationBins("binary"),
        }
    if kind == "multiclass":
        return {
            "roc": C.MulticlassROC(num_classes, thresholds=thresholds),
            "pr": C.MulticlassPrecisionRecallCurve(num_classes, thresholds=thresholds),
            "confusion": C.MulticlassConfusionMatrix(num_classes),
            "calibration": CalibrationBins("multiclass"),
        }
    if kind == "multilabel":
        return {"confusion": C.MultilabelConfusionMatrix(num_classes, ignore_index=IGNORE)}
    return {}
