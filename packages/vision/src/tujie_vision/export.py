"""ONNX export of a trained classifier or detector, with a parity check and CPU latency beside PyTorch's.

>>> export_run("runs/digits-cnn/20261203-140000").describe()                      # doctest: +SKIP
'model.onnx: max |ONNX − PyTorch| 2.4e-07; CPU latency 0.41 ms ONNX vs 0.93 ms PyTorch (0.44×)'

A classifier (a supervised image run) goes through core's ``export_onnx``; a detector (a ``kind: detection`` run)
through ultralytics' exporter (no graph simplifier, which would be installed at run time). Both are then run on
the same random inputs by PyTorch and by ONNX Runtime: the largest absolute difference of the raw outputs must stay
under ``atol``, and the median time of ``repeats`` batch-1 forward passes is measured for each, with the same
number of CPU threads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from tujie_core import DataError
from tujie_core.compress import OnnxModule, export_onnx, onnx_parity


@dataclass
class ExportResult:
    """Where the ONNX file went, how far it is from PyTorch, and both latencies (ms, batch 1, CPU)."""

    path: Path
    max_abs_diff: float
    torch_ms: float
    onnx_ms: float
    input_shape: tuple[int, ...]

    @property
    def ratio(self) -> float:
        return self.onnx_ms / self.torch_ms if self.torch_ms > 0 else float("nan")

    def describe(self) -> str:
        return (
            f"{self.path.name}: max |ONNX − PyTorch| {self.max_abs_diff:.2g}; CPU latency {self.onnx_ms:.2f} ms ONNX "
            f"vs {self.torch_ms:.2f} ms PyTorch ({self.ratio:.2f}×) at input {self.input_shape}"
        )


def median_ms(fn: Callable[[], object], repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _first(output: object) -> Tensor:
    return output[0] if isinstance(output, tuple | list) else output  # type: ignore[return-value]


def compare(model: nn.Module, path: Path, shape: tuple[int, ...], atol: float, repeats: int) -> ExportResult:
    """Parity on 4 random inputs and batch-1 latency of ``model`` against the ONNX file at ``path``."""
    model = model.eval()
    generator = torch.Generator().manual_seed(0)
    onnx = OnnxModule(path)
    with torch.inference_mode():
        diffs = []
        for _ in range(4):
            x = torch.rand(1, *shape, generator=generator)
            diffs.append(float((_first(model(x)) - _first(onnx(x))).abs().max()))
        example = torch.rand(1, *shape, generator=generator)
        torch_ms = median_ms(lambda: model(example), repeats)
        onnx_ms = median_ms(lambda: onnx(example), repeats)
    diff = max(diffs)
    if diff > atol:
        raise ValueError(f"{path}: ONNX output differs from PyTorch by {diff:.3g}, more than atol={atol:g}")
    return ExportResult(path, diff, torch_ms, onnx_ms, shape)


def export_classifier(run_dir: Path, output: Path | None, atol: float, repeats: int) -> ExportResult:
    from tujie_vision.classifier import ImageClassifier

    classifier = ImageClassifier.load(run_dir)
    shape = classifier.input_shape
    path = output or run_dir / "model" / "model.onnx"
    export_onnx(classifier.model, torch.zeros(1, *shape), path)
    onnx_parity(classifier.model, path, torch.zeros(2, *shape), atol=atol)  # the dynamic batch axis works too
    return compare(classifier.model, path, shape, atol, repeats)


def export_detector(run_dir: Path, output: Path | None, atol: float, repeats: int, imgsz: int | None) -> ExportResult:
    from tujie_vision.detection import WEIGHTS, ultralytics

    weights = run_dir / WEIGHTS / "best.pt"
    if not weights.is_file():
        raise DataError(f"{run_dir}: no {WEIGHTS / 'best.pt'} to export")
    size = imgsz or int(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["imgsz"])
    yolo = ultralytics().YOLO(str(weights))  # a checkpoint this project wrote (pickle: see tujie_vision.detection)
    written = Path(yolo.export(format="onnx", imgsz=size, simplify=False, dynamic=False, device="cpu"))
    path = Path(output) if output is not None else written
    if path != written:
        path.parent.mkdir(parents=True, exist_ok=True)
        written.replace(path)
    model = ultralytics().YOLO(str(weights)).model.float().fuse(verbose=False).eval()  # as ultralytics predicts
    return compare(model, path, (3, size, size), atol, repeats)


def export_run(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    atol: float = 1e-3,
    repeats: int = 50,
    imgsz: int | None = None,
) -> ExportResult:
    """Export a classification or detection run folder's model to ONNX; see the module doc."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise DataError(f"{run_dir}: not a run folder (no config.yaml)")
    kind = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("kind", "supervised")
    out = Path(output) if output is not None else None
    if kind == "detection":
        return export_detector(run_dir, out, atol, repeats, imgsz)
    if kind == "supervised":
        return export_classifier(run_dir, out, atol, repeats)
    raise DataError(f"{run_dir}: a run of kind '{kind}'; export takes image classification and detection runs")
