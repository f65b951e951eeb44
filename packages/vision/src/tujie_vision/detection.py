"""Object detection with ultralytics YOLO as a kind of run (``kind: detection``) on core's run layer.

>>> result = train_from_config(load_config("vehicles.yaml"))         # doctest: +SKIP
>>> YoloDetector.load(result.run_dir).detect(frame)                  # doctest: +SKIP
[Detection(box=(12.0, 40.5, 39.0, 51.0), label='vehicle', score=0.93)]

Ultralytics keeps its own training loop; this kind runs it inside a tujie run folder (``ultralytics/`` holds its
weights and ``results.csv``), turns each epoch's validation into ``val/*`` metrics for the run layer's callbacks
(checkpointing, early stopping, Optuna pruning), keeps ``checkpoints/last.ckpt`` for ``--resume`` and writes the
shared ``summary.json`` and ``report.md``. The default data is generated driving scenes (:mod:`tujie_vision.scenes`).

Offline: models are built from yaml (``yolo11n.yaml``: ultralytics' bundled architecture files or your own), never
downloaded; ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL=false`` are set before ultralytics is imported, plots (which
fetch a font) are off and AMP is off unless asked (its check downloads a model).

Security: ultralytics checkpoints (``.pt``) are pickles, and loading one runs code. This kind loads only the
checkpoints its own runs wrote (to resume, evaluate, predict and export) and a ``.pt`` that you name yourself as
``model`` (to fine-tune): never a file from someone you do not trust.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import ConfigDict, Field

from tujie_core import (
    RUN_KINDS,
    BaseRunConfig,
    ConfigError,
    DataError,
    RunContext,
    RunKind,
    RunOutput,
    TrainState,
)
from tujie_core.checkpoint import atomic_write_bytes
from tujie_core.config import Strict
from tujie_core.inference import InferenceSummary, module_fingerprint
from tujie_core.progress import Mode
from tujie_core.protocols import Detection
from tujie_vision.data import UNREADABLE, opened, read_image

for _key, _value in {"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false", "YOLO_VERBOSE": "false"}.items():
    os.environ.setdefault(_key, _value)

METRICS = {  # ultralytics' names → the run's
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
    "val/box_loss": "box_loss",
    "val/cls_loss": "cls_loss",
    "val/dfl_loss": "dfl_loss",
}
WEIGHTS = Path("ultralytics") / "weights"


def ultralytics() -> Any:
    """The ``ultralytics`` module, imported with the offline settings above."""
    import ultralytics as module

    return module


class SceneData(Strict):
    """Generated driving scenes (the default data): see :func:`tujie_vision.scenes.make_driving_data`."""

    scenario: str = "highway-fast"
    frames: int = Field(200, ge=1)
    val_frames: int = Field(50, ge=1)
    seed: int = 0
    width: int = Field(400, ge=32)
    height: int = Field(200, ge=32)
    vehicles_density: float = Field(1.5, gt=0)


class DetectionData(Strict):
    """A YOLO ``data.yaml`` (``path``, ``train``, ``val``, optional ``test``, ``names``), or generated scenes."""

    yaml: Path | None = None
    generate: SceneData = SceneData()


class DetectionRunConfig(BaseRunConfig):
    """A YOLO training run. ``options``: any other ultralytics training argument (``mosaic``, ``degrees``,
    ``fliplr``…); the keys this config owns (data, epochs, device, folders) cannot be set there."""

    kind: Literal["detection"] = "detection"
    data: DetectionData = DetectionData()
    model: str = Field("yolo11n.yaml", description="architecture yaml (bundled or a file), or a .pt you trust")
    epochs: int = Field(30, ge=1)
    imgsz: int = Field(416, ge=32)
    batch: int = Field(16, ge=1)
    device: str = Field("auto", description="auto (CUDA when present), cpu, or a CUDA index such as 0")
    workers: int = Field(0, ge=0)
    optimizer: str = "auto"
    lr0: float = Field(0.01, gt=0)
    patience: int = Field(100, ge=1)
    amp: bool = False
    plots: bool = False
    seed_value: int = Field(0, alias="seed")
    monitor_metric: str = Field("val/mAP50-95", alias="monitor")
    options: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, serialize_by_alias=True)

    @property
    def monitor(self) -> str:
        return self.monitor_metric

    @property
    def mode(self) -> Literal["min", "max"]:
        return "min" if self.monitor_metric.endswith("loss") else "max"

    @property
    def seed(self) -> int:
        return self.seed_value


OWNED = {
    "data",
    "epochs",
    "imgsz",
    "batch",
    "device",
    "workers",
    "optimizer",
    "lr0",
    "patience",
    "amp",
    "plots",
    "seed",
    "project",
    "name",
    "exist_ok",
    "resume",
    "val",
    "model",
    "save_dir",
    "verbose",
}


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    return device


def data_yaml(config: DetectionRunConfig, run_dir: Path) -> Path:
    """The data.yaml to train on: the configured one (checked) or scenes generated into the run folder."""
    if config.data.yaml is None:
        from tujie_vision.scenes import make_driving_data

        spec = config.data.generate
        return make_driving_data(
            run_dir / "data",
            scenario=spec.scenario,
            frames_count=spec.frames,
            val_frames=spec.val_frames,
            seed=spec.seed,
            width=spec.width,
            height=spec.height,
            vehicles_density=spec.vehicles_density,
        )
    return check_data_yaml(config.data.yaml)


def check_data_yaml(path: Path) -> Path:
    """A YOLO data.yaml whose splits exist and hold readable images with well-formed labels; DataError naming the
    file (and line) otherwise, before ultralytics sees the data (it would skip bad images with a warning, or fail
    with its own traceback). Paths resolve as ultralytics resolves them; its tolerances apply (coordinates within
    [-0.01, 1.01]). A dataset already checked in this process, unchanged since, is not read again (tuning trials)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data.yaml")
    try:
        data = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict) or "train" not in data or "names" not in data:
        raise DataError(f"{path}: a YOLO data.yaml needs 'train', 'val' and 'names'")
    names = data["names"]
    if not isinstance(names, list | dict) or not names:
        raise DataError(f"{path}: names: a list of class names (or a mapping id → name), got {names!r}")
    root = Path(data["path"]) if data.get("path") else path.parent  # ultralytics: a relative path from the cwd
    if not root.is_dir():
        raise DataError(f"{path}: path: {root} is not a folder (a relative path is taken from the working directory)")
    ultralytics()  # the offline settings first
    from ultralytics.data.utils import IMG_FORMATS

    formats = {f".{suffix}" for suffix in IMG_FORMATS}
    splits = [
        (key, _split_images(path, key, (root / str(source)).resolve(), formats))
        for key in ("train", "val", "test")
        for source in _as_list(data.get(key))
    ]
    signature = hash(tuple(_stat(f) for _, images in splits for image in images for f in (image, _label_of(image))))
    if _CHECKED.get(path.resolve()) == signature:
        return path
    for _, images in splits:
        for image in images:
            _check_image(image)
            _check_labels(_label_of(image), len(names))
    _CHECKED[path.resolve()] = signature
    return path


_CHECKED: dict[Path, int] = {}  # data.yaml → the signature of the files it was last found good with


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        info = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path), info.st_size, info.st_mtime_ns


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some Windows tools write, is fine
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _as_list(value: Any) -> list[Any]:
    return [] if not value else list(value) if isinstance(value, list | tuple) else [value]


def _split_images(data_file: Path, key: str, source: Path, formats: set[str]) -> list[Path]:
    """A split's images (ultralytics' image formats): a folder, searched recursively, or a text file with one image
    path a line (relative to the file's folder)."""
    if not source.exists():
        raise DataError(f"{data_file}: {key}: {source} does not exist")
    if source.is_dir():
        images = sorted(p for p in source.rglob("*") if p.suffix.lower() in formats and p.is_file())
    else:
        lines = [line.strip() for line in _read_text(source).splitlines() if line.strip()]
        images = [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]
        images = [p for p in images if p.suffix.lower() in formats]
    if not images:
        raise DataError(f"{data_file}: {key}: {source} holds no images ({', '.join(sorted(formats))})")
    return images


def _check_image(image: Path) -> None:
    """Readable, and not truncated: PIL's verify (chunk checksums for PNG); a JPEG without its end marker is decoded
    whole and refused only if that fails (bytes after the marker are harmless, as ultralytics finds)."""
    with opened(image) as handle:
        try:
            handle.verify()
        except UNREADABLE as exc:
            raise DataError(f"{image}: cannot read image ({str(exc).splitlines()[0] or type(exc).__name__})") from None
        jpeg = handle.format == "JPEG"
    if jpeg:
        with image.open("rb") as raw:
            raw.seek(-2, os.SEEK_END)
            ends_well = raw.read() == b"\xff\xd9"
        if not ends_well:
            read_image(image, 3)  # DataError naming the file when the data is really cut short


def _label_of(image: Path) -> Path:
    """YOLO's rule (ultralytics' ``img2label_paths``): the last ``images`` folder of the path becomes ``labels``,
    the suffix ``.txt``."""
    parts = list(image.parts)
    if "images" in parts:
        parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
    return Path(*parts).with_suffix(".txt")


def _check_labels(labels: Path, classes: int) -> None:
    """Each line ``class x_center y_center width height`` (or ``class x1 y1 x2 y2 …``, a polygon) with a class id
    in ``[0, classes)`` and coordinates normalised, within ultralytics' 1 % tolerance; no file is an image without
    objects."""
    if not labels.is_file():
        return
    for number, line in enumerate(_read_text(labels).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{labels}: line {number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"{where}: not numbers ({line.strip()!r})") from None
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
            raise DataError(f"{where}: expected 'class x_center y_center width height' (or a polygon), got {line!r}")
        if not values[0].is_integer() or not 0 <= values[0] < classes:
            raise DataError(f"{where}: class {fields[0]} outside 0..{classes - 1} (the names in data.yaml)")
        if not all(-0.01 <= v <= 1.01 for v in values[1:]):
            raise DataError(f"{where}: coordinates must be normalised to [0, 1], got {' '.join(fields[1:])}")


class _Loop:
    """Ultralytics' trainer as seen by core callbacks (``tujie_core.Loop``)."""

    def __init__(self, run_dir: Path) -> None:
        self.state, self.should_stop, self.run_dir = TrainState(), False, run_dir

    def save_checkpoint(self, path: str | Path) -> None:
        last = self.run_dir / WEIGHTS / "last.pt"
        if last.is_file():
            atomic_write_bytes(Path(path), last.read_bytes())


@RUN_KINDS.register("detection")
class DetectionRun(RunKind):
    """YOLO training on a YOLO-format dataset through ultralytics' own trainer; see the module doc."""

    config_model = DetectionRunConfig
    takes_plugins = False  # ultralytics' loop cannot be wrapped (DP-SGD needs per-sample gradients)

    def check(self, config: DetectionRunConfig) -> None:  # type: ignore[override]
        super().check(config)
        clash = sorted(set(config.options) & OWNED)
        if clash:
            raise ConfigError(f"options.{clash[0]}: set it as the config's own key, not in options")
        unknown = sorted(set(config.options) - _train_args())
        if unknown:
            raise ConfigError(f"options.{unknown[0]}: not an ultralytics training argument")
        if config.monitor_metric.removeprefix("val/") not in METRICS.values():
            raise ConfigError(f"monitor: one of {', '.join('val/' + m for m in METRICS.values())}")

    def trial_overrides(self) -> dict[str, Any]:
        return {}

    def train(self, config: DetectionRunConfig, context: RunContext) -> RunOutput:  # type: ignore[override]
        from tujie_core import ModelCheckpoint

        YOLO = ultralytics().YOLO
        run_dir = context.open()
        loop = _Loop(run_dir)
        checkpoint = ModelCheckpoint(run_dir / "checkpoints", config.monitor, config.mode)
        callbacks = [checkpoint, *context.callbacks()]  # checkpoint first: a failing callback cannot lose the epoch
        last = run_dir / WEIGHTS / "last.pt"
        if context.resume is not None:
            if not last.is_file():
                raise ConfigError(f"{run_dir}: nothing to resume (no {WEIGHTS / 'last.pt'})")
            model, data = YOLO(str(last)), data_yaml_of(run_dir)
            train_args: dict[str, Any] = {"resume": True}
            loop.state.history = _history(run_dir)
            loop.state.epoch = len(loop.state.history)
        else:
            data = data_yaml(config, run_dir)
            model = _model(YOLO, config.model)
            train_args = {
                **config.options,
                "data": str(data),
                "epochs": config.epochs,
                "imgsz": config.imgsz,
                "batch": config.batch,
                "device": resolve_device(config.device),
                "workers": config.workers,
                "optimizer": config.optimizer,
                "lr0": config.lr0,
                "patience": config.patience,
                "amp": config.amp,
                "plots": config.plots,
                "seed": config.seed,
                "deterministic": True,
                "project": str(run_dir.absolute()),  # ultralytics puts a relative one under its own runs folder
                "name": "ultralytics",
                "exist_ok": True,
                "val": True,
                "verbose": False,
            }

        def on_epoch(trainer: Any) -> None:
            if trainer.epoch >= trainer.epochs or "val/box_loss" not in trainer.metrics:
                return  # final_eval re-validating best.pt: the run's result, not an epoch
            metrics = {f"val/{METRICS[k]}": float(v) for k, v in trainer.metrics.items() if k in METRICS}
            loop.state.epoch = trainer.epoch + 1
            loop.state.history.append({"epoch": loop.state.epoch, **metrics})
            for callback in callbacks:
                callback.on_train_epoch_end(loop, metrics)
            trainer.stop = trainer.stop or loop.should_stop

        model.add_callback("on_fit_epoch_end", on_epoch)
        model.train(**train_args)
        best = run_dir / WEIGHTS / "best.pt"
        metrics = evaluate_weights(best if best.is_file() else last, data, "val", config.imgsz)
        if _has_split(data, "test"):
            metrics |= evaluate_weights(best if best.is_file() else last, data, "test", config.imgsz)
        names = _names(data)
        header = (
            f"Model: `{config.model}` (ultralytics YOLO), image size {config.imgsz}, {loop.state.epoch} epochs. "
            f"Data: `{data}` ({len(names)} classes: {', '.join(names[:8])}). Metrics of `best.pt` "
            "(the best epoch by ultralytics' fitness, 0.1·mAP50 + 0.9·mAP50-95)."
        )
        return RunOutput(
            metrics,
            title=f"Detection run: {config.name}",
            header=header,
            history=loop.state.history,
            class_names=names,
            summary={"epochs": loop.state.epoch, "weights": str(best), "data": str(data)},
            model=YoloDetector.load(run_dir),
        )


def _train_args() -> set[str]:
    from ultralytics.cfg import get_cfg

    return set(vars(get_cfg()))


def _model(YOLO: Any, name: str) -> Any:
    """A model from an architecture yaml (bundled or a file) or a ``.pt`` checkpoint the user names."""
    path = Path(name)
    if path.suffix == ".pt":
        if not path.is_file():
            raise ConfigError(f"model: {path}: no such file (weights are never downloaded)")
        return YOLO(str(path))
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"model: expected an architecture .yaml (e.g. yolo11n.yaml) or a .pt file, got '{name}'")
    try:
        return YOLO(name)
    except (FileNotFoundError, KeyError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"model: cannot build '{name}' ({str(exc).splitlines()[0]})") from None


def data_yaml_of(run_dir: Path) -> Path:
    summary = run_dir / "summary.json"
    if summary.is_file():
        return Path(json.loads(summary.read_text(encoding="utf-8"))["data"])
    args = run_dir / "ultralytics" / "args.yaml"
    return Path(yaml.safe_load(args.read_text(encoding="utf-8"))["data"])


def _history(run_dir: Path) -> list[dict[str, float]]:
    results = run_dir / "ultralytics" / "results.csv"
    if not results.is_file():
        return []
    rows = list(csv.DictReader(results.open(encoding="utf-8")))
    return [
        {"epoch": int(float(r["epoch"])), **{f"val/{v}": float(r[k]) for k, v in METRICS.items() if k in r}}
        for r in rows
    ]


def _names(data: Path) -> list[str]:
    names = yaml.safe_load(Path(data).read_text(encoding="utf-8"))["names"]
    return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def _has_split(data: Path, split: str) -> bool:
    return bool(yaml.safe_load(Path(data).read_text(encoding="utf-8")).get(split))


def evaluate_weights(weights: Path, data: Path, split: str, imgsz: int, device: str = "auto") -> dict[str, float]:
    """``{split}/precision``, ``recall``, ``mAP50``, ``mAP50-95`` of a checkpoint this project wrote."""
    model = ultralytics().YOLO(str(weights))
    result = model.val(
        data=str(data),
        split=split,
        imgsz=imgsz,
        device=resolve_device(device),
        plots=False,
        verbose=False,
        workers=0,
        project=str((weights.parent.parent / "val").absolute()),
        name=split,
        exist_ok=True,
    )
    return {f"{split}/{METRICS[k]}": float(v) for k, v in result.results_dict.items() if k in METRICS}


# ---- inference ---------------------------------------------------------------------------------------------------
class YoloDetector:
    """A trained detector (a run's ``best.pt``) behind core's detector protocol: ``detect(frame) → detections``."""

    def __init__(self, model: Any, class_names: Sequence[str], imgsz: int, conf: float = 0.25, device: str = "auto"):
        self.model, self.class_names, self.imgsz, self.conf = model, list(class_names), imgsz, conf
        self.device = resolve_device(device)

    @classmethod
    def load(cls, run_dir: str | Path, conf: float = 0.25, device: str = "auto") -> YoloDetector:
        """The best weights of a detection run folder this project wrote (a pickle: see the module doc)."""
        run_dir = Path(run_dir)
        weights = next((p for p in (run_dir / WEIGHTS / "best.pt", run_dir / WEIGHTS / "last.pt") if p.is_file()), None)
        if weights is None:
            raise DataError(f"{run_dir}: not a detection run folder (no {WEIGHTS / 'best.pt'})")
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        model = ultralytics().YOLO(str(weights))
        names = model.names
        return cls(model, [names[k] for k in sorted(names)], int(config.get("imgsz", 416)), conf, device)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Objects in one RGB frame ``(H, W, 3)`` uint8."""
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        for frame in frames:
            if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
                shape = getattr(frame, "shape", type(frame).__name__)
                raise DataError(f"a frame must be an RGB array (H, W, 3), got {shape}")
        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]  # ultralytics reads arrays as OpenCV BGR
        results = self.model.predict(bgr, imgsz=self.imgsz, conf=self.conf, device=self.device, verbose=False)
        return [self._detections(r) for r in results]

    def _detections(self, result: Any) -> list[Detection]:
        boxes = result.boxes
        xyxy, cls, conf = boxes.xyxy.cpu().numpy(), boxes.cls.cpu().numpy(), boxes.conf.cpu().numpy()
        return [
            Detection(tuple(float(v) for v in box), self.class_names[int(c)], float(s))  # type: ignore[arg-type]
            for box, c, s in zip(xyxy, cls, conf, strict=True)
        ]


def predict_files(
    detector: YoloDetector,
    inputs: str | Path,
    output: str | Path,
    *,
    chunk_size: int = 64,
    workers: int | None = None,
    resume: bool = True,
    progress: Mode = "none",
) -> InferenceSummary:
    """Detect objects in every image under ``inputs`` (as :meth:`ImageClassifier.predict_files` reads them) into a
    CSV with one row per image: ``file``, ``count`` and ``boxes`` (JSON ``[[x1, y1, x2, y2, label, score], …]``);
    unreadable files go to ``<output>.rejects.csv`` with the reason, every good one is predicted, and a rerun
    after an interruption resumes."""
    from tujie_vision.classifier import stream_images

    def load(record: Any) -> np.ndarray:
        return np.asarray(read_image(record, 3) if isinstance(record, Path) else record.convert("RGB"))

    def predict(frames: list[np.ndarray]) -> list[list[Any]]:
        rows = []
        for found in detector.detect_batch(frames):
            boxes = [[*(round(v, 1) for v in d.box), d.label, round(d.score, 4)] for d in found]
            rows.append([len(found), json.dumps(boxes)])
        return rows

    return stream_images(
        inputs,
        output,
        load=load,
        predict=predict,
        header=["count", "boxes"],
        job={"model": module_fingerprint(detector.model.model), "options": [detector.conf, detector.imgsz]},
        chunk_size=chunk_size,
        workers=workers,
        resume=resume,
        progress=progress,
    )
