"""Segmentation as a core task: Dice + cross-entropy loss, sliding-window inference on whole volumes, Dice and
95th-percentile Hausdorff distance as torchmetrics-style metrics (update / compute / reset) over MONAI's functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.metrics import compute_dice, compute_hausdorff_distance
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from tujie_core import DataError, Task
from tujie_core.tasks import SpecLike


def one_hot_masks(preds: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class probabilities ``(B, C, ...)`` and a label map ``(B, 1, ...)`` → one-hot masks of the argmax and
    of the label."""
    predicted = F.one_hot(preds.argmax(1), num_classes).movedim(-1, 1)
    truth = F.one_hot(target[:, 0].long(), num_classes).movedim(-1, 1)
    return predicted, truth


class _PerCaseMean(Metric):
    """Mean over cases and foreground classes of a per-case score, skipping the undefined ones (a class absent
    from both prediction and label gives NaN for Dice; an empty mask gives inf/NaN for distances)."""

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def score(self, predicted: Tensor, truth: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        predicted, truth = one_hot_masks(preds, target, self.num_classes)
        values = self.score(predicted, truth).double()
        defined = torch.isfinite(values)
        self.total += values[defined].sum()
        self.count += defined.sum()

    def compute(self) -> Tensor:
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


class Dice(_PerCaseMean):
    """Mean Dice over cases and foreground classes (``monai.metrics.compute_dice``, background excluded); a
    class missing from both label and prediction is skipped, as ``DiceMetric(ignore_empty=True)``."""

    higher_is_better = True

    def score(self, predicted: Tensor, truth: Tensor) -> Tensor:
        return compute_dice(predicted, truth, include_background=False, ignore_empty=True)


class Hausdorff95(_PerCaseMean):
    """Mean 95th-percentile Hausdorff distance (voxels) over cases and foreground classes
    (``monai.metrics.compute_hausdorff_distance``); cases with an empty mask are skipped."""

    higher_is_better = False

    def score(self, predicted: Tensor, truth: Tensor) -> Tensor:
        with warnings.catch_warnings():  # MONAI 1.6 warns about its own deprecated internal argument
            warnings.simplefilter("ignore", FutureWarning)
            return compute_hausdorff_distance(predicted, truth, include_background=False, percentile=95)


class SegmentationTask(Task):
    """Voxel-wise classification of ``(B, C, *spatial)`` images into ``num_classes`` (background included).

    Loss: ``lambda_dice · Dice + lambda_ce · CE`` on softmax outputs (MONAI's ``DiceCELoss``), with one loss per
    case (per-sample clipping for DP-SGD can use them). Evaluation and prediction run the network over the
    whole volume in ``roi_size`` windows (``sliding_window_inference``, ``overlap``, Gaussian blending by
    default); ``roi_size`` defaults to the training patch. Predictions are class probabilities per voxel.
    Metrics: ``dice`` (every evaluation) and ``hd95`` (validation and test only; it costs a distance transform).
    """

    kind = "segmentation"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        input_shape: Sequence[int] | None = None,
        roi_size: list[int] | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        blend: str = "gaussian",
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        optimizer: SpecLike = None,
        scheduler: SpecLike = None,
        input_key: str = "image",
        target_key: str = "label",
    ) -> None:
        super().__init__(model, optimizer, scheduler, input_key=input_key, target_key=target_key)
        if num_classes < 2:
            raise ValueError(f"segmentation needs num_classes ≥ 2 (background included), got {num_classes}")
        self.num_classes = num_classes
        self.roi_size = list(roi_size) if roi_size else (list(input_shape[1:]) if input_shape else None)
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.blend = blend
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.dice_loss = DiceLoss(to_onehot_y=True, softmax=True, reduction="none")

    def infer(self, inputs: Tensor) -> Tensor:
        if self.roi_size is None or list(inputs.shape[2:]) == self.roi_size:
            return self.forward(inputs)
        return sliding_window_inference(
            inputs, self.roi_size, self.sw_batch_size, self.forward, overlap=self.overlap, mode=self.blend
        )

    def _check(self, outputs: Tensor, target: Tensor) -> None:
        if outputs.shape[1] != self.num_classes:
            raise DataError(f"the model gives {outputs.shape[1]} channels for {self.num_classes} classes")
        if target.ndim != outputs.ndim or target.shape[1] != 1 or target.shape[2:] != outputs.shape[2:]:
            raise DataError(f"label shape {tuple(target.shape)} does not fit outputs {tuple(outputs.shape)}")

    def sample_losses(self, outputs: Tensor, target: Tensor) -> Tensor:
        self._check(outputs, target)
        dice = self.dice_loss(outputs.float(), target).flatten(1).mean(1)
        ce = F.cross_entropy(outputs.float(), target[:, 0].long(), reduction="none").flatten(1).mean(1)
        return self.lambda_dice * dice + self.lambda_ce * ce

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return self.sample_losses(outputs, target).mean()

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.float().softmax(1)

    def metrics(self, stage: str = "eval") -> MetricCollection:
        metrics: dict[str, Metric] = {"dice": Dice(self.num_classes)}
        if stage != "train":
            metrics["hd95"] = Hausdorff95(self.num_classes)
        return MetricCollection(metrics)
