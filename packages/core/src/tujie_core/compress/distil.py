"""Knowledge distillation: a classification task that trains a student against a frozen teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tujie_core.errors import ConfigError
from tujie_core.pretrained import CONFIG_NAME, load_pretrained
from tujie_core.tasks import TASKS, ClassificationTask, SpecLike, StepOutput


class DistillationTask(ClassificationTask):
    """Train ``model`` (the student) to match a frozen ``teacher`` and the labels (Hinton et al., 2015):

    ``loss = α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α)·CE(student, label)``

    Binary and multi-label outputs (sigmoid) use the Bernoulli KL per logit. Predictions and metrics are the
    student's, as in :class:`ClassificationTask`; the Trainer trains and checkpoints only the student. The teacher
    is frozen in place (eval mode, ``requires_grad=False``), runs without gradients (in full precision), and is
    moved to the student's device on first use.
    """

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        num_classes: int,
        *,
        temperature: float = 4.0,
        alpha: float = 0.5,
        mode: Literal["binary", "multiclass", "multilabel"] = "multiclass",
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        optimizer: SpecLike = None,
        scheduler: SpecLike = None,
        input_key: str | None = "inputs",
        target_key: str = "target",
    ) -> None:
        super().__init__(
            model,
            num_classes,
            mode=mode,
            class_weights=class_weights,
            label_smoothing=label_smoothing,
            optimizer=optimizer,
            scheduler=scheduler,
            input_key=input_key,
            target_key=target_key,
        )
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha
        self.teacher = teacher.eval().requires_grad_(False)

    def step(self, batch: Any, with_predictions: bool = True, sample_losses: bool = False) -> StepOutput:
        inputs, target = self.unpack(batch)  # no per-sample losses (not asked for: distillation is not private)
        outputs = self.outputs(inputs)
        loss = (1 - self.alpha) * self.loss(outputs, target)
        if self.alpha > 0:
            loss = loss + self.alpha * self.distillation_loss(outputs, self._teacher_outputs(inputs, outputs.device))
        preds = self.predictions(outputs.detach()) if with_predictions else outputs.detach()
        return StepOutput(loss, preds, self.metric_target(target, outputs) if with_predictions else target, len(target))

    def distillation_loss(self, student: Tensor, teacher: Tensor) -> Tensor:
        """``T²·KL(teacher ‖ student)`` of temperature-softened outputs, summed over classes, mean over the batch."""
        t = self.temperature
        if self.kind != "multiclass":  # one logit z per label ≡ two-class logits (0, z)
            student, teacher = (torch.stack([torch.zeros_like(z), z], dim=-1) for z in (student, teacher))
        log_student = F.log_softmax(student.float() / t, dim=-1)
        log_teacher = F.log_softmax(teacher.float() / t, dim=-1)
        return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t

    @torch.no_grad()
    def _teacher_outputs(self, inputs: Any, device: torch.device) -> Tensor:
        param = next(self.teacher.parameters(), None)
        if param is not None and param.device != device:
            self.teacher.to(device)
        return self.call(self.teacher, inputs)


@TASKS.register("distillation")
def distillation_task(
    model: nn.Module,
    teacher: str,
    num_classes: int,
    mode: Literal["binary", "multiclass", "multilabel"] = "multiclass",
    temperature: float = 4.0,
    alpha: float = 0.5,
    class_weights: list[float] | None = None,
    label_smoothing: float = 0.0,
    optimizer: SpecLike = None,
    scheduler: SpecLike = None,
) -> DistillationTask:
    """``task: {name: distillation, teacher: RUN_DIR}``: train the run's model against a trained teacher.

    ``teacher`` is a finished tujie run folder (or its ``model/`` folder: safetensors, no pickle). The student may be
    any architecture that takes the same inputs, as DeiT trains a ViT against a CNN (Touvron et al., 2021); the run
    saves the student only, and rebuilding the run's task later needs the teacher folder again.
    """
    folder = Path(teacher).expanduser()
    folder = folder / "model" if (folder / "model" / CONFIG_NAME).is_file() else folder
    if not (folder / CONFIG_NAME).is_file():
        raise ConfigError(f"task.teacher: {teacher} is not a finished run folder or a model folder")
    teacher_model, _ = load_pretrained(folder)
    return DistillationTask(
        model,
        teacher_model,
        num_classes,
        temperature=temperature,
        alpha=alpha,
        mode=mode,
        class_weights=class_weights,
        label_smoothing=label_smoothing,
        optimizer=optimizer,
        scheduler=scheduler,
    )
