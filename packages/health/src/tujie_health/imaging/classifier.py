"""A trained medical image classifier (a run on ``medical_images``): probabilities at the run's decision threshold,
metrics on a MedMNIST file, streamed predictions with rejects, and a saliency overlay for one image.

>>> classifier = MedicalImageClassifier.load("runs/lesions-cnn/RUN")                            # doctest: +SKIP
>>> classifier.evaluate("breastmnist.npz").metrics["eval/roc_auc"]                              # doctest: +SKIP
>>> classifier.explain(image).save("why.png")                                                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from tujie_core import ClassificationTask, DataError, Evaluation, Trainer
from tujie_core.inference import InferenceSummary, Rejected, file_fingerprint, module_fingerprint, predict_stream
from tujie_core.progress import Mode
from tujie_core.run import load_run
from tujie_health.imaging.classify import Images, image_tensor, label_matrix, read_npz
from tujie_health.imaging.saliency import Method, overlay, saliency


class MedicalImageClassifier:
    """The network, task (with its decision threshold) and class names of a ``medical_images`` run."""

    def __init__(self, task: ClassificationTask, class_names: list[str], input_shape: tuple[int, ...]) -> None:
        self.task, self.class_names, self.input_shape = task, class_names, input_shape
        self.task.model.eval()

    @property
    def model(self) -> torch.nn.Module:
        return self.task.model

    @classmethod
    def load(cls, run_dir: str | Path) -> MedicalImageClassifier:
        run = load_run(run_dir)
        if run.config.data.name != "medical_images" or not isinstance(run.task, ClassificationTask):
            raise DataError(f"{run_dir}: not a medical image classification run")
        return cls(run.task, run.splits.info.class_names, tuple(run.splits.info.input_shape))

    def images(self, path: str | Path, split: str = "test") -> tuple[Tensor, np.ndarray | None]:
        """A MedMNIST file's ``<split>_images`` (or ``images``) as model inputs, with labels when it has them."""
        path = Path(path)
        arrays = read_npz(path)
        if f"{split}_images" not in arrays:
            raise DataError(f"{path}: no {split}_images")
        images = arrays[f"{split}_images"]
        size = self.input_shape[1] if tuple(images.shape[1:3]) != self.input_shape[1:] else None
        x = image_tensor(images, size)
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(f"{path}: images of shape {tuple(x.shape[1:])}; the model takes {self.input_shape}")
        labels = arrays.get(f"{split}_labels")
        return x, None if labels is None else label_matrix(labels, path, split)

    @torch.no_grad()
    def probabilities(self, batch: Tensor) -> Tensor:
        """Per image: the positive class's probability (binary) or every class's."""
        return self.task.predictions(self.model(batch.float()))

    def evaluate(self, path: str | Path, split: str = "test") -> Evaluation:
        """ROC-AUC, sensitivity (recall), specificity, calibration… on a labelled split, at the stored threshold."""
        x, y = self.images(path, split)
        if y is None:
            raise DataError(f"{path}: no {split}_labels to evaluate against")
        target = torch.as_tensor(y[:, 0] if self.task.kind != "multilabel" else y)
        target = target.float() if self.task.kind in ("binary", "multilabel") else target.long()
        loader = DataLoader(Images(x, target), batch_size=256)
        return Trainer(accelerator="cpu", progress="none").evaluate(self.task, loader, "eval")

    def predict_file(
        self, path: str | Path, output: str | Path, *, split: str = "test", resume: bool = True, progress: Mode = "none"
    ) -> InferenceSummary:
        """Probabilities for every image of a MedMNIST file's split into a CSV (``index``, ``label``,
        ``p_<class>``) on core's streaming engine; an image that is not finite goes to the rejects file."""
        x, _ = self.images(path, split)

        def prepare(records: list[Tensor]) -> list[Any]:
            return [r if torch.isfinite(r).all() else Rejected("image has NaN or infinite values") for r in records]

        def predict(items: list[Tensor]) -> list[list[Any]]:
            probs = self.probabilities(torch.stack(items))
            rows = []
            for p in probs:
                if self.task.kind == "binary":
                    values = [1 - float(p), float(p)]
                    label = self.class_names[int(float(p) > self.task.decision_threshold)]
                else:
                    values = [float(v) for v in p]
                    label = self.class_names[int(np.argmax(values))]
                rows.append([label, *(f"{v:.6f}" for v in values)])
            return rows

        return predict_stream(
            lambda: enumerate(x),
            predict,
            output,
            header=["label", *(f"p_{n}" for n in self.class_names)],
            prepare=prepare,
            id_column="index",
            job={"input": file_fingerprint(path), "split": split, "model": module_fingerprint(self.model)},
            resume=resume,
            progress=progress,
        )

    def explain(self, image: Tensor, method: Method = "gradcam", scale: int = 8) -> Image.Image:
        """A saliency overlay (Grad-CAM or occlusion) for the predicted class of one ``(C, H, W)`` image."""
        return overlay(image, saliency(self.model, image, method=method), scale=scale)
