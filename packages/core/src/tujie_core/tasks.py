"""Tasks: how a batch becomes a loss, predictions and metrics, and how the optimizer is built.

A task owns the model; the :class:`~tujie_core.trainer.Trainer` owns the loop. Subclass :class:`Task` and override
:meth:`Task.unpack`, :meth:`Task.loss` or :meth:`Task.predictions` for anything the ready tasks do not cover.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric, MetricCollection

from tujie_core.config import ComponentSpec
from tujie_core.metrics import DEFAULT_THRESHOLDS, classification_metrics, curve_metrics, regression_metrics
from tujie_core.optim import OPTIMIZERS, SCHEDULERS, Schedule
from tujie_core.registry import Registry

TASKS: Registry = Registry("tasks")

SpecLike = ComponentSpec | dict[str, Any] | None


@dataclass
class StepOutput:
    """What one batch produced: a differentiable mean loss and detached predictions for metrics."""

    loss: Tensor
    preds: Tensor
    target: Tensor
    batch_size: int


def _spec(spec: SpecLike, default: dict[str, Any] | None) -> ComponentSpec | None:
    if spec is None:
        return ComponentSpec(**default) if default else None
    return spec if isinstance(spec, ComponentSpec) else ComponentSpec(**spec)


class Task:
    """Base task: supervised ``(inputs, target)`` batches, optimizer and schedule from registry specs."""

    kind: str = "custom"

    def __init__(self, model: nn.Module, optimizer: SpecLike = None, scheduler: SpecLike = None) -> None:
        self.model = model
        self.optimizer_spec = _spec(optimizer, {"name": "adamw", "lr": 1e-3})
        self.scheduler_spec = _spec(scheduler, None)

    # ---- batch → outputs -------------------------------------------------------------------------------------
    def unpack(self, batch: Any) -> tuple[Any, Tensor]:
        """Split a batch into model inputs and target: ``(x, y)`` tuples or ``{"inputs", "target"}`` dicts."""
        if isinstance(batch, dict):
            return batch["inputs"], batch["target"]
        inputs, target = batch[0], batch[1]
        return inputs, target

    def forward(self, inputs: Any) -> Tensor:
        return self.model(inputs)

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def predictions(self, outputs: Tensor) -> Tensor:
        """Model outputs → what metrics and ``predict`` see (probabilities or values)."""
        return outputs

    def step(self, batch: Any, with_predictions: bool = True) -> StepOutput:
        """Loss of one batch; ``with_predictions=False`` skips the predictions when no metric needs them."""
        inputs, target = self.unpack(batch)
        outputs = self.forward(inputs)
        loss = self.loss(outputs, target)
        preds = self.predictions(outputs.detach()) if with_predictions else outputs.detach()
        return StepOutput(loss, preds, target, int(target.shape[0]))

    def predict_step(self, batch: Any) -> Tensor:
        inputs = self.unpack(batch)[0] if isinstance(batch, dict | tuple | list) else batch
        return self.predictions(self.forward(inputs))

    # ---- metrics ----------------------------------------------------------------------------------------------
    def metrics(self, stage: str = "eval") -> MetricCollection:
        """Scalar metrics updated with ``(preds, target)`` of every batch; ``stage="train"`` may be cheaper."""
        return MetricCollection({})

    def curves(self) -> dict[str, Metric]:
        """Curve-shaped evaluation results for the report (ROC, confusion matrix, ...)."""
        return {}

    # ---- optimisation -------------------------------------------------------------------------------------------
    def configure_optimizers(self, total_steps: int) -> tuple[Optimizer, Schedule | None]:
        """Optimizer from ``optimizer_spec``; with weight decay, none on biases and norm weights (1-D parameters)."""
        spec = self.optimizer_spec
        params: list[Any] = [p for p in self.model.parameters() if p.requires_grad]
        default_decay = inspect.signature(OPTIMIZERS.get(spec.name)).parameters.get("weight_decay")
        if spec.params.get("weight_decay", getattr(default_decay, "default", 0)):
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            params = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        optimizer = OPTIMIZERS.create(spec.name, where="optimizer", runtime={"params": params}, **spec.params)
        if self.scheduler_spec is None:
            return optimizer, None
        sched = self.scheduler_spec
        schedule = SCHEDULERS.create(
            sched.name, where="scheduler", runtime={"optimizer": optimizer, "total_steps": total_steps}, **sched.params
        )
        return optimizer, schedule


@TASKS.register("classification")
class ClassificationTask(Task):
    """Binary (one logit), multi-class (C logits) or multi-label (L logits) classification.

    ``decision_threshold``: probability above which a binary prediction is positive (0.5; tune it for a target
    recall with :func:`tujie_core.evaluate.choose_threshold`).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        mode: Literal["binary", "multiclass", "multilabel"] = "multiclass",
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        thresholds: int = DEFAULT_THRESHOLDS,
        decision_threshold: float = 0.5,
        optimizer: SpecLike = None,
        scheduler: SpecLike = None,
    ) -> None:
        super().__init__(model, optimizer, scheduler)
        if mode == "binary" and num_classes not in (1, 2):
            raise ValueError(f"binary classification has 2 classes, got num_classes={num_classes}")
        if not 0 < decision_threshold < 1:
            raise ValueError(f"decision_threshold must be in (0, 1), got {decision_threshold}")
        self.decision_threshold = decision_threshold
        self.kind = mode
        self.num_classes = 2 if mode == "binary" else num_classes
        self.label_smoothing = label_smoothing
        self.thresholds = thresholds
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        weights = None if self.class_weights is None else self.class_weights.to(outputs.device)
        if self.kind == "multiclass":
            return F.cross_entropy(outputs, target.long(), weight=weights, label_smoothing=self.label_smoothing)
        if self.kind == "binary":
            pos_weight = None if weights is None else weights[1] / weights[0]
            return F.binary_cross_entropy_with_logits(
                outputs.reshape(-1), target.reshape(-1).float(), pos_weight=pos_weight
            )
        return F.binary_cross_entropy_with_logits(outputs, target.float(), pos_weight=weights)

    def predictions(self, outputs: Tensor) -> Tensor:
        if self.kind == "multiclass":
            return outputs.float().softmax(dim=-1)
        probs = outputs.float().sigmoid()
        return probs.reshape(-1) if self.kind == "binary" else probs

    def step(self, batch: Any, with_predictions: bool = True) -> StepOutput:
        out = super().step(batch, with_predictions)
        if with_predictions:
            out.target = out.target.long()
        return out

    # binned ranking metrics and calibration cost a bincount over thresholds × classes per batch: evaluation only
    EVAL_ONLY = ("roc_auc", "pr_auc", "ece")

    def metrics(self, stage: str = "eval") -> MetricCollection:
        collection = classification_metrics(self.kind, self.num_classes, self.thresholds, self.decision_threshold)
        if stage == "train":
            collection = MetricCollection({k: m for k, m in collection.items() if k not in self.EVAL_ONLY})
        return collection

    def curves(self) -> dict[str, Metric]:
        return curve_metrics(self.kind, self.num_classes, self.thresholds, self.decision_threshold)


@TASKS.register("regression")
class RegressionTask(Task):
    """Regression of one or more real targets with MSE, MAE or Huber loss."""

    kind = "regression"
    LOSSES: ClassVar[dict[str, Any]] = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}

    def __init__(
        self,
        model: nn.Module,
        loss: Literal["mse", "mae", "huber"] = "mse",
        optimizer: SpecLike = None,
        scheduler: SpecLike = None,
    ) -> None:
        super().__init__(model, optimizer, scheduler)
        self.loss_fn = self.LOSSES[loss]

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(outputs.reshape(target.shape), target.float())

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.float().squeeze(-1) if outputs.ndim > 1 and outputs.shape[-1] == 1 else outputs.float()

    def metrics(self, stage: str = "eval") -> MetricCollection:
        return regression_metrics()
