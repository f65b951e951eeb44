"""``ImageClassifier``: train a timm architecture or the small CNN on images, then classify new ones.

>>> clf = ImageClassifier.train(data={"path": "data/signs", "image_size": 32}, model="timm/resnet18")  # doctest: +SKIP
>>> clf.predict(["stop.png"])[0].label                                                     # doctest: +SKIP
'14'
>>> ImageClassifier.load("runs/images/20261203-140000").predict_files("new/", "out.csv")  # doctest: +SKIP

Training is a core supervised run (``data: {name: images, ...}``), so checkpoints, exact resume, EMA, reports,
tuning, compression, transfer learning (``transfer: {init: RUN, freeze_epochs: 3}``) and the DP plugin apply as to
any run. A trained classifier is its run folder's ``model/`` (safetensors weights + ``config.json``); loading
never unpickles anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tujie_core import (
    PLUGINS,
    ClassificationTask,
    DataError,
    Evaluation,
    RunConfig,
    RunResult,
    Trainer,
    create_model,
    load_config,
    train_from_config,
    write_report,
)
from tujie_core.inference import InferenceSummary, Rejected, file_fingerprint, module_fingerprint, predict_stream
from tujie_core.progress import Mode
from tujie_vision.data import IMAGE_SUFFIXES, ImageDataset, image_transform, read_image
from tujie_vision.data import _read as read_source

ImageLike = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class Prediction:
    """One image's class (``|``-joined labels for multi-label), its probability and every class's probability."""

    label: str
    score: float
    probabilities: dict[str, float]


class ImageClassifier:
    """A trained image classifier with its preprocessing (resize to the input shape, scale to [-1, 1])."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        class_names: Sequence[str],
        kind: str = "multiclass",
        decision_threshold: float = 0.5,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_shape = tuple(int(v) for v in input_shape)
        self.class_names = list(class_names)
        self.kind = kind
        self.decision_threshold = decision_threshold
        self.task = ClassificationTask(self.model, num_classes=len(self.class_names), mode=kind)  # type: ignore[arg-type]
        self.transform = image_transform(self.input_shape)

    # ---- building -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ImageClassifier:
        """A run folder (or its ``model/`` folder) written by a supervised image run; weights via safetensors."""
        from safetensors.torch import load_file

        path = Path(path)
        model_dir = path / "model" if (path / "model").is_dir() else path
        config_file = model_dir / "config.json"
        if not config_file.is_file():
            raise DataError(f"{path}: not a trained classifier (no model/config.json)")
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        spec = dict(saved["model"])
        if len(spec.get("input_shape", ())) != 3:
            raise DataError(f"{path}: not an image model (input shape {spec.get('input_shape')})")
        model = create_model(spec.pop("name"), **spec)
        run_config = model_dir.parent / "config.yaml"
        if run_config.is_file():  # the architecture the run trained (DP swaps BatchNorm for GroupNorm)
            for plugin in load_config(run_config).plugins:
                model = PLUGINS.create(plugin.name, where="plugins", **plugin.params).prepare_model(model)
        model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
        return cls(
            model,
            spec["input_shape"],
            saved.get("class_names") or [str(i) for i in range(spec["num_outputs"])],
            saved.get("kind", "multiclass"),
            float(saved.get("decision_threshold", 0.5)),
            device,
        )

    @classmethod
    def train(
        cls,
        data: dict[str, Any] | str | Path | None = None,
        model: str | dict[str, Any] = "cnn",
        epochs: int = 10,
        output_dir: str | Path = "runs",
        name: str = "images",
        **sections: Any,
    ) -> ImageClassifier:
        """Train through a core supervised run and load the result (``.result`` holds the run's metrics and folder).

        ``data``: options of the ``images`` dataset (or just its path; default: the digits); ``model``: a registry
        name (``cnn``, ``timm/resnet18``…) or ``{name, **options}``; ``sections``: any other run-config section
        (``optimizer``, ``scheduler``, ``transfer``, ``plugins``, ``trainer``…).
        """
        data_spec = {"path": str(data)} if isinstance(data, str | Path) else dict(data or {})
        trainer = {"max_epochs": epochs, "monitor": "val/accuracy", "mode": "max", **sections.pop("trainer", {})}
        config = RunConfig.model_validate(
            {
                "name": name,
                "output_dir": str(output_dir),
                "data": {"name": "images", **data_spec},
                "model": {"name": model} if isinstance(model, str) else model,
                "trainer": trainer,
                **sections,
            }
        )
        result = train_from_config(config)
        classifier = cls.load(result.run_dir)
        classifier.result = result
        return classifier

    result: RunResult | None = None

    # ---- prediction -----------------------------------------------------------------------------------------
    def preprocess(self, image: ImageLike) -> Tensor:
        """One image (a path, a PIL image or an ``(H, W)``/``(H, W, C)`` uint8 array) → the model's input tensor."""
        channels = self.input_shape[0]
        if isinstance(image, str | Path):
            image = read_image(Path(image), channels)
        elif isinstance(image, np.ndarray):
            image = _array_image(image)
        if not isinstance(image, Image.Image):
            raise DataError(f"expected an image path, a PIL image or a uint8 array, got {type(image).__name__}")
        return self.transform(image.convert("L" if channels == 1 else "RGB"))

    @torch.no_grad()
    def probabilities(self, batch: Tensor) -> Tensor:
        """Class probabilities (binary: of the second class) for a preprocessed batch ``(N, C, H, W)``."""
        return self.task.predictions(self.model(batch.to(self.device))).cpu()

    def predict(self, images: Sequence[ImageLike], batch_size: int = 64) -> list[Prediction]:
        """Predictions for every image, in order; a bad image raises DataError naming it."""
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(image) for image in images[start : start + batch_size]])
            out += [self._prediction(row) for row in self.probabilities(batch)]
        return out

    def _prediction(self, probs: Tensor) -> Prediction:
        names = self.class_names
        if self.kind == "binary":
            positive = float(probs)
            label = names[1] if positive >= self.decision_threshold else names[0]
            return Prediction(
                label,
                positive if label == names[1] else 1 - positive,
                dict(zip(names, [1 - positive, positive], strict=True)),
            )
        values = probs.tolist()
        table = dict(zip(names, values, strict=True))
        if self.kind == "multilabel":
            chosen = [n for n, p in table.items() if p >= self.decision_threshold]
            return Prediction("|".join(chosen), max(values), table)
        best = int(np.argmax(values))
        return Prediction(names[best], values[best], table)

    def predict_files(
        self,
        inputs: str | Path,
        output: str | Path,
        *,
        batch_size: int = 64,
        chunk_size: int = 256,
        workers: int | None = None,
        resume: bool = True,
        progress: Mode = "none",
    ) -> InferenceSummary:
        """Classify every image under ``inputs`` (a folder, searched recursively; a ``.txt`` list of paths, one per
        line; one image; or an ``.npz`` with ``images``/``test_images``) into a CSV (``file``, ``label``,
        ``score``, one ``p_<class>`` column per class), on core's streaming engine: decoding on ``workers`` threads,
        memory flat in the number of images, unreadable files listed with the reason in ``<output>.rejects.csv``
        while every good one is predicted, and a rerun after an interruption resumes where it stopped."""

        def predict(items: list[Tensor]) -> list[list[Any]]:
            rows_out = []
            for start in range(0, len(items), batch_size):
                for probs in self.probabilities(torch.stack(items[start : start + batch_size])):
                    p = self._prediction(probs)
                    rows_out.append([p.label, f"{p.score:.6f}", *(f"{v:.6f}" for v in p.probabilities.values())])
            return rows_out

        return stream_images(
            inputs,
            output,
            load=self.preprocess,
            predict=predict,
            header=["label", "score", *(f"p_{n}" for n in self.class_names)],
            job={
                "model": module_fingerprint(self.model),
                "classes": self.class_names,
                "options": [batch_size, self.decision_threshold, list(self.input_shape)],
            },
            chunk_size=chunk_size,
            workers=workers,
            resume=resume,
            progress=progress,
        )

    # ---- evaluation -----------------------------------------------------------------------------------------
    def evaluate(
        self,
        data: str | Path,
        *,
        path_column: str = "path",
        label_column: str = "label",
        root: str | Path | None = None,
        delimiter: str | None = None,
        batch_size: int = 128,
        output_dir: str | Path | None = None,
    ) -> Evaluation:
        """Metrics on labelled images (a folder of class folders, a CSV of path,label rows or an ``.npz``; every
        image, whatever splits the source has); ``output_dir``: also a report with plots there."""
        source = read_source(Path(data), path_column, label_column, Path(root) if root else None, delimiter, None)
        index = {name: i for i, name in enumerate(self.class_names)}
        if source.multilabel:
            targets = source.labels
        else:
            unknown = sorted(set(map(str, source.labels)) - set(index))
            if unknown:
                raise DataError(f"{data}: labels {', '.join(unknown[:5])} are not classes of this model")
            targets = np.array([index[str(v)] for v in source.labels], dtype=np.int64)
        images = source.images
        if isinstance(images, np.ndarray):
            images = [_array_image(a) for a in images]  # type: ignore[assignment]
        dataset = _PreprocessedDataset(self, images, targets)
        trainer = Trainer(progress="none", accelerator=self.device.type)
        evaluation = trainer.evaluate(self.task, DataLoader(dataset, batch_size=batch_size), "test")
        if output_dir is not None:
            write_report(
                output_dir,
                title=f"Evaluation on {data}",
                evaluations={"test": evaluation},
                class_names=self.class_names,
                header=f"{len(dataset)} images.",
            )
        return evaluation


class _PreprocessedDataset(ImageDataset):
    def __init__(self, classifier: ImageClassifier, images: Sequence[Any], targets: np.ndarray) -> None:
        super().__init__(list(images), targets, classifier.input_shape[0], classifier.transform)
        self.classifier = classifier

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        target = self.targets[index]
        dtype = torch.float32 if np.ndim(target) else torch.long
        return self.classifier.preprocess(self.images[index]), torch.as_tensor(target, dtype=dtype)


def stream_images(
    inputs: str | Path,
    output: str | Path,
    *,
    load: Callable[[Any], Any],
    predict: Callable[[list[Any]], list[list[Any]]],
    header: list[str],
    job: dict[str, Any],
    chunk_size: int,
    workers: int | None,
    resume: bool,
    progress: Mode,
) -> InferenceSummary:
    """Core's streaming engine over the images under ``inputs`` (see :func:`input_rows`): ``load`` turns one record
    (a path or a PIL image) into a model input on the worker threads, a DataError making that file a reject;
    ``predict`` turns a chunk of inputs into output rows. ``job`` (with the input's identity) decides resuming."""
    inputs = Path(inputs)
    input_rows(inputs)  # a missing input fails now, not in a worker

    def prepare(records: list[Any]) -> list[Any]:
        prepared: list[Any] = []
        for record in records:
            try:
                prepared.append(load(record))
            except DataError as exc:
                prepared.append(Rejected(str(exc).removeprefix(f"{record}: ")))
        return prepared

    identity = file_fingerprint(inputs) if inputs.is_file() else {"folder": str(inputs.resolve())}
    return predict_stream(
        lambda: input_rows(inputs),
        predict,
        output,
        header=header,
        prepare=prepare,
        id_column="file",
        chunk_size=chunk_size,
        workers=workers,
        resume=resume,
        job={"input": identity, **job},
        progress=progress,
    )


def _array_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise DataError(f"an image array must be (H, W) or (H, W, 1|3|4), got shape {array.shape}")
    if array.dtype != np.uint8:
        scale = 255.0 if array.size and float(array.max()) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    return Image.fromarray(array)


def input_rows(inputs: Path) -> Iterator[tuple[str, Any]]:
    """``(row id, record)`` pairs: file paths (reported relative to a folder) or npz rows (their index)."""
    if inputs.is_dir():
        files = sorted(p for p in inputs.rglob("*") if p.is_file() and not p.name.startswith("."))
        return ((str(p.relative_to(inputs)), _checked_suffix(p)) for p in files)
    if not inputs.is_file():
        raise DataError(f"{inputs}: no such file or folder")
    suffix = inputs.suffix.lower()
    if suffix == ".txt":
        lines = [line.strip() for line in inputs.read_text(encoding="utf-8").splitlines()]
        paths = [Path(line) if Path(line).is_absolute() else inputs.parent / line for line in lines if line]
        return ((str(p), _checked_suffix(p)) for p in paths)
    if suffix == ".npz":
        with np.load(inputs, allow_pickle=False) as archive:
            key = next((k for k in ("images", "test_images") if k in archive.files), None)
            if key is None:
                raise DataError(f"{inputs}: no 'images' or 'test_images' array")
            array = archive[key]
        return ((f"{key}[{i}]", _array_or_rejected(a)) for i, a in enumerate(array))
    if suffix in IMAGE_SUFFIXES:
        return iter([(inputs.name, inputs)])
    raise DataError(f"{inputs}: expected a folder, a .txt list of image paths, an .npz or an image file")


def _checked_suffix(path: Path) -> Path | Rejected:
    return (
        path if path.suffix.lower() in IMAGE_SUFFIXES else Rejected(f"not an image file ({path.suffix or 'no suffix'})")
    )


def _array_or_rejected(array: np.ndarray) -> Image.Image | Rejected:
    try:
        return _array_image(array)
    except DataError as exc:
        return Rejected(str(exc))
