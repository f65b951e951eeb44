"""Tasks: how a batch becomes a loss, predictions and metrics, and how the optimizer is built.

A task owns the model; the :class:`~tujie_core.trainer.Trainer` owns the loop. Subclass :class:`Task` and override
:meth:`Task.unpack`, :meth:`Task.loss` or :meth:`Task.predictions` for anything the ready tasks do not cover.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric, MetricCollection

from tujie_core.config import ComponentSpec
from tujie_core.errors import DataError
from tujie_core.metrics import DEFAULT_THRESHOLDS, IGNORE, classification_metrics, curve_metrics, regression_metrics
from tujie_core.optim import OPTIMIZERS, SCHEDULERS, Schedule, build_optimizer
from tujie_core.registry import Registry

TASKS: Registry = Registry("tasks")

SpecLike = ComponentSpec | dict[str, Any] | None


@dataclass
class StepOutput:
    """What one batch produced: a differentiable mean loss, detached predictions for metrics, the number of
    items (samples, tokens, voxels, boxes) the loss is averaged over and, when asked for, one loss per sample whose
    mean is ``loss`` (per-sample gradient clipping needs them: Opacus' ghost clipping)."""

    loss: Tensor
    preds: Tensor
    target: Any
    num_items: int
    sample_losses: Tensor | None = None


def batch_length(obj: Any) -> int:
    """Samples in a batch part: a tensor's first dimension, a PyG batch's ``num_graphs``, a sequence's length, or
    the length of a mapping's first value."""
    if isinstance(obj, Tensor):
        return int(obj.shape[0]) if obj.ndim else 1
    graphs = getattr(obj, "num_graphs", None)
    if isinstance(graphs, int):
        return graphs
    if isinstance(obj, Mapping) and obj:
        return batch_length(next(iter(obj.values())))
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        return len(obj)
    raise DataError(f"cannot count the samples in a batch part of type {type(obj).__name__}; override Task.num_items")


def _spec(spec: SpecLike, default: dict[str, Any] | None) -> ComponentSpec | None:
    if spec is None:
        return ComponentSpec(**default) if default else None
    return spec if isinstance(spec, ComponentSpec) else ComponentSpec(**spec)


class Task:
    """Base task: how a batch becomes inputs, target, loss and predictions; optimizer and schedule from registry
    specs.

    Batches may be ``(inputs, target)`` tuples, ``(inputs,)`` or bare tensors (unlabelled), mappings (MONAI or
    Hugging Face style; ``input_key``/``target_key`` name the entries, ``input_key=None`` passes every entry but the
    target to the model as keyword arguments) or any other object, such as a PyG ``Batch``, which goes to the model
    whole, its ``target_key`` attribute (or ``y``) being the target.
    """

    kind: str = "custom"

    def __init__(
        self,
        model: nn.Module,
        optimizer: SpecLike = None,
        scheduler: SpecLike = None,
        *,
        input_key: str | None = "inputs",
        target_key: str = "target",
    ) -> None:
        self.model = model
        self.optimizer_spec = _spec(optimizer, {"name": "adamw", "lr": 1e-3})
        self.scheduler_spec = _spec(scheduler, None)
        self.input_key = input_key
        self.target_key = target_key
        self.lr_scales: dict[str, float] = {}  # parameter name → multiple of the learning rate (default 1)

    # ---- batch → outputs -------------------------------------------------------------------------------------
    def unpack(self, batch: Any) -> tuple[Any, Any]:
        """Split a batch into model inputs and target (``None`` for an unlabelled batch)."""
        if isinstance(batch, Mapping):
            if self.input_key is None:
                return {k: v for k, v in batch.items() if k != self.target_key}, batch.get(self.target_key)
            if self.input_key not in batch:
                raise DataError(
                    f"batch has no '{self.input_key}' entry (keys: {', '.join(map(str, batch))}); "
                    "set the task's input_key and target_key"
                )
            return batch[self.input_key], batch.get(self.target_key)
        if isinstance(batch, Tensor):
            return batch, None
        if isinstance(batch, tuple | list):
            return batch[0], batch[1] if len(batch) > 1 else None
        return batch, getattr(batch, self.target_key, getattr(batch, "y", None))

    def num_items(self, batch: Any) -> int:
        """How many items the batch's mean loss averages over: samples by default. Override for losses averaged
        over tokens, voxels or boxes, so gradient accumulation and multi-process averaging weight them exactly."""
        inputs, target = self.unpack(batch)
        return batch_length(target if target is not None else inputs)

    def forward(self, inputs: Any) -> Tensor:
        return self.call(self.model, inputs)

    def call(self, model: nn.Module, inputs: Any) -> Tensor:
        """``model`` on a batch's inputs: a mapping's entries as keyword arguments when ``input_key`` is None, else
        the inputs as one argument (a teacher or a reference model is called as the task's own model)."""
        if isinstance(inputs, Mapping) and self.input_key is None:
            return model(**inputs)
        return model(inputs)

    def infer(self, inputs: Any) -> Tensor:
        """The forward pass of evaluation and prediction (the model in eval mode): :meth:`forward` by default;
        override it for inference that differs from training, such as sliding windows over whole volumes."""
        return self.forward(inputs)

    def outputs(self, inputs: Any) -> Tensor:
        """:meth:`forward` while the model trains, :meth:`infer` while it is evaluated."""
        return self.forward(inputs) if self.model.training else self.infer(inputs)

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def sample_losses(self, outputs: Tensor, target: Tensor) -> Tensor | None:
        """One loss per sample whose mean is :meth:`loss`; None (the default) when the task has no such split."""
        return None

    def predictions(self, outputs: Tensor) -> Tensor:
        """Model outputs → what metrics and ``predict`` see (probabilities or values)."""
        return outputs

    def step(self, batch: Any, with_predictions: bool = True, sample_losses: bool = False) -> StepOutput:
        """Loss of one batch; ``with_predictions=False`` skips the predictions when no metric needs them;
        ``sample_losses=True`` adds :meth:`sample_losses` (None when the task has none)."""
        inputs, target = self.unpack(batch)
        if target is None:
            raise DataError("a training or evaluation batch has no target; unlabelled batches can only be predicted")
        outputs = self.outputs(inputs)
        loss = self.loss(outputs, target)
        preds = self.predictions(outputs.detach()) if with_predictions else outputs.detach()
        per_sample = self.sample_losses(outputs, target) if sample_losses else None
        return StepOutput(loss, preds, target, self.num_items(batch), per_sample)

    def predict_step(self, batch: Any) -> Tensor:
        """Predictions for a batch, labelled or not."""
        return self.predictions(self.infer(self.unpack(batch)[0]))

    # ---- metrics ----------------------------------------------------------------------------------------------
    def metrics(self, stage: str = "eval") -> MetricCollection:
        """Scalar metrics updated with ``(preds, target)`` of every batch; ``stage="train"`` may be cheaper."""
        return MetricCollection({})

    def curves(self) -> dict[str, Metric]:
        """Curve-shaped evaluation results for the report (ROC, confusion matrix, ...)."""
        return {}

    # ---- optimisation -------------------------------------------------------------------------------------------
    def configure_optimizers(self, total_steps: int) -> tuple[Optimizer, Schedule | None]:
        """Optimizer from ``optimizer_spec``; with weight decay, none on biases and norm weights (1-D parameters);
        a parameter named in ``lr_scales`` learns at that multiple of the learning rate (transfer learning)."""
        spec = self.optimizer_spec
        defaults = inspect.signature(OPTIMIZERS.get(spec.name)).parameters
        decays = bool(spec.params.get("weight_decay", getattr(defaults.get("weight_decay"), "default", 0)))
        base_lr = spec.params.get("lr", getattr(defaults.get("lr"), "default", None))
        groups: dict[tuple[bool, float], list[Tensor]] = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                key = (decays and param.ndim <= 1, self.lr_scales.get(name, 1.0))
                groups.setdefault(key, []).append(param)
        params: list[Any] = []
        for (no_decay, scale), tensors in groups.items():
            group: dict[str, Any] = {"params": tensors}
            if no_decay:
                group["weight_decay"] = 0.0
            if scale != 1.0:
                if not isinstance(base_lr, int | float):
                    raise ValueError(f"optimizer {spec.name}: set lr to scale it per parameter")
                group["lr"] = base_lr * scale
            params.append(group)
        if len(params) == 1 and len(params[0]) == 1:
            params = params[0]["params"]
        optimizer = build_optimizer(spec.name, params, **spec.params)
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
        input_key: str | None = "inputs",
        target_key: str = "target",
    ) -> None:
        super().__init__(model, optimizer, scheduler, input_key=input_key, target_key=target_key)
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
        if self.kind != "multiclass" and has_missing(target):
            return masked_mean(self._criterion(outputs, target.nan_to_num(), "none"), ~torch.isnan(target))
        return self._criterion(outputs, target, "mean")

    def sample_losses(self, outputs: Tensor, target: Tensor) -> Tensor | None:
        if self.kind == "multiclass" and self.class_weights is not None:
            return None  # a class-weighted mean is not the mean of per-sample losses
        if self.kind != "multiclass" and has_missing(target):
            losses = self._criterion(outputs, target.nan_to_num(), "none")
            return masked_sample_means(losses, ~torch.isnan(target))
        losses = self._criterion(outputs, target, "none")
        return losses.reshape(len(losses), -1).mean(1)  # multi-label: the mean over labels, as the loss

    def _criterion(self, outputs: Tensor, target: Tensor, reduction: str) -> Tensor:
        weights = None if self.class_weights is None else self.class_weights.to(outputs.device)
        if self.kind == "multiclass":
            target = target.float() if is_soft(target, outputs) else target.long()  # soft: mixup/cutmix
            return F.cross_entropy(
                outputs, target, weight=weights, label_smoothing=self.label_smoothing, reduction=reduction
            )
        if self.kind == "binary":
            pos_weight = None if weights is None else weights[1] / weights[0]
            return F.binary_cross_entropy_with_logits(
                outputs.reshape(-1), target.reshape(-1).float(), pos_weight=pos_weight, reduction=reduction
            )
        return F.binary_cross_entropy_with_logits(outputs, target.float(), pos_weight=weights, reduction=reduction)

    def predictions(self, outputs: Tensor) -> Tensor:
        if self.kind == "multiclass":
            return outputs.float().softmax(dim=-1)
        probs = outputs.float().sigmoid()
        return probs.reshape(-1) if self.kind == "binary" else probs

    def step(self, batch: Any, with_predictions: bool = True, sample_losses: bool = False) -> StepOutput:
        out = super().step(batch, with_predictions, sample_losses)
        if with_predictions:
            out.target = self.metric_target(out.target, out.preds)
        return out

    def metric_target(self, target: Tensor, outputs: Tensor) -> Tensor:
        """Class indices for the metrics: the dominant class of a mixup/cutmix target, a missing (NaN) label as
        ``IGNORE`` (left out of every metric), else the target as is."""
        if self.kind == "multiclass":
            return target.argmax(-1) if is_soft(target, outputs) else target.long()
        target = target.reshape(outputs.shape)
        return target.nan_to_num(IGNORE).long() if target.is_floating_point() else target.long()

    # binned ranking metrics and calibration cost a bincount over thresholds × classes per batch: evaluation only
    EVAL_ONLY = ("roc_auc", "pr_auc", "ece")

    def metrics(self, stage: str = "eval") -> MetricCollection:
        collection = classification_metrics(self.kind, self.num_classes, self.thresholds, self.decision_threshold)
        if stage == "train":
            collection = MetricCollection({k: m for k, m in collection.items() if k not in self.EVAL_ONLY})
        return collection

    def curves(self) -> dict[str, Metric]:
        return curve_metrics(self.kind, self.num_classes, self.thresholds, self.decision_threshold)


def has_missing(target: Any) -> bool:
    """A float target with NaN entries: labels or values not measured for some samples (assay data)."""
    return isinstance(target, Tensor) and target.is_floating_point() and bool(torch.isnan(target).any())


def masked_mean(losses: Tensor, mask: Tensor) -> Tensor:
    """The mean of per-entry ``losses`` over the measured entries (0, with a gradient path, when there are none)."""
    mask = mask.reshape(losses.shape)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def masked_sample_means(losses: Tensor, mask: Tensor) -> Tensor:
    """One loss per sample: the mean over its measured entries."""
    mask = mask.reshape(len(losses), -1)
    return (losses.reshape(len(losses), -1) * mask).sum(1) / mask.sum(1).clamp(min=1)


def is_soft(target: Tensor, outputs: Tensor) -> bool:
    """A class-probability target (one row per sample, as mixup and cutmix make) rather than class indices."""
    return target.is_floating_point() and target.ndim == outputs.ndim and target.shape == outputs.shape


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
        input_key: str | None = "inputs",
        target_key: str = "target",
    ) -> None:
        super().__init__(model, optimizer, scheduler, input_key=input_key, target_key=target_key)
        self.loss_fn = self.LOSSES[loss]

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        outputs, target = outputs.reshape(target.shape), target.float()
        if has_missing(target):
            return masked_mean(self.loss_fn(outputs, target.nan_to_num(), reduction="none"), ~torch.isnan(target))
        return self.loss_fn(outputs, target)

    def sample_losses(self, outputs: Tensor, target: Tensor) -> Tensor | None:
        target = target.float()
        losses = self.loss_fn(outputs.reshape(target.shape), target.nan_to_num(), reduction="none")
        return masked_sample_means(losses, ~torch.isnan(target))

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.float().squeeze(-1) if outputs.ndim > 1 and outputs.shape[-1] == 1 else outputs.float()

    def step(self, batch: Any, with_predictions: bool = True, sample_losses: bool = False) -> StepOutput:
        """As :meth:`Task.step`; with several targets or missing (NaN) ones the metrics see every measured value
        as one flat series."""
        out = super().step(batch, with_predictions, sample_losses)
        if not with_predictions:
            return out
        target = out.target.float()
        if (target.ndim > 1 and target.shape[-1] > 1) or has_missing(target):
            keep = ~torch.isnan(target)
            out.preds, out.target = out.preds.reshape(target.shape)[keep], target[keep]
        elif target.ndim > 1:
            out.target = target.reshape(out.preds.shape)
        return out

    def metrics(self, stage: str = "eval") -> MetricCollection:
        return regression_metrics()
