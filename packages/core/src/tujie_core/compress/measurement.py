"""Measurement of a model variant (size, CPU latency, metric) and the comparison table of variants."""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tujie_core.compress.onnx import OnnxModule


@dataclass
class CompressionRow:
    """One model variant: its size, speed and quality."""

    method: str
    details: str
    parameters: int
    nonzero: int
    size_mb: float
    latency_b1_ms: float
    latency_b32_ms: float
    metric_name: str
    metric: float | None
    throughput: float | None = None  # items/s over a whole evaluation set, when the caller measures it
    throughput_unit: str = "items/s"


def measure(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float] | None,
    example: Tensor,
    *,
    name: str,
    details: str = "",
    metric_name: str = "accuracy",
    repeats: int = 50,
    warmup: int = 5,
) -> CompressionRow:
    """Size, CPU latency and ``evaluate(model)`` of ``model`` (in eval mode; its train/eval mode is restored).

    ``example`` is one input batch of size 1; latency is the median of ``repeats`` timed forward passes under
    ``torch.inference_mode`` after ``warmup`` passes, at batch 1 and at batch 32 (the example repeated), with the
    current ``torch.get_num_threads()`` (an :class:`OnnxModule` uses the same count by default).
    Meant for CPU models (GPU timing would need synchronisation).
    ``parameters``/``nonzero`` count learned weights (pruning masks applied; packed int8 weights included; ONNX
    initializers for an :class:`OnnxModule`); ``size_mb`` is the ``torch.save``'d state dict, or the ONNX file.
    """
    if example.shape[0] != 1:
        raise ValueError(f"example must be one sample with batch dimension 1, got shape {tuple(example.shape)}")
    was_training = model.training
    model.eval()
    try:
        parameters, nonzero = _weight_counts(model)
        batch32 = example.repeat(32, *([1] * (example.ndim - 1)))
        return CompressionRow(
            method=name,
            details=details,
            parameters=parameters,
            nonzero=nonzero,
            size_mb=_size_bytes(model) / 1e6,
            latency_b1_ms=_latency_ms(model, example, repeats, warmup),
            latency_b32_ms=_latency_ms(model, batch32, repeats, warmup),
            metric_name=metric_name,
            metric=None if evaluate is None else float(evaluate(model)),
        )
    finally:
        model.train(was_training)


def compression_table(rows: list[CompressionRow], baseline: CompressionRow | None = None) -> str:
    """Markdown table with ratios against ``baseline`` (default: the first row).

    ``size ×`` is how many times smaller, ``b1 ×``/``b32 ×`` how many times faster, ``Δ`` the metric change in
    points (×100, for metrics in [0, 1] such as accuracy); two throughput columns when every row has one.
    """
    base = baseline or rows[0]
    metric = base.metric_name
    rate = base.throughput is not None and all(row.throughput for row in rows)
    unit = f" {base.throughput_unit} | {base.throughput_unit} × |" if rate else ""
    lines = [
        "| method | details | params | nonzero | size MB | size × | b1 ms | b1 × | b32 ms | b32 × "
        f"| {metric} | Δ pts |{unit}",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if rate else ""),
    ]
    for row in rows:
        score = "–" if row.metric is None else f"{row.metric:.4f}"
        delta = "–" if row.metric is None or base.metric is None else f"{100 * (row.metric - base.metric):+.2f}"
        cells = [
            row.method,
            row.details.replace("|", "\\|"),
            f"{row.parameters:,}",
            f"{row.nonzero:,}",
            f"{row.size_mb:.3f}",
            f"{base.size_mb / row.size_mb:.2f}",
            f"{row.latency_b1_ms:.3f}",
            f"{base.latency_b1_ms / row.latency_b1_ms:.2f}",
            f"{row.latency_b32_ms:.3f}",
            f"{base.latency_b32_ms / row.latency_b32_ms:.2f}",
            score,
            delta,
        ]
        if rate:
            cells += [f"{row.throughput:.1f}", f"{row.throughput / base.throughput:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_to_json(rows: list[CompressionRow]) -> str:
    """The rows as a JSON list of objects (field names as in :class:`CompressionRow`)."""
    return json.dumps([asdict(row) for row in rows], indent=2)


def _weight_tensors(module: nn.Module) -> Iterator[Tensor]:
    if isinstance(module, OnnxModule):
        yield from module.initializers()
        return
    if callable(getattr(module, "_weight_bias", None)):  # quantized modules keep weights in packed params
        yield from _tensors_in(module._weight_bias())
        return
    for name, param in module.named_parameters(recurse=False):
        mask = getattr(module, name.removesuffix("_orig") + "_mask", None) if name.endswith("_orig") else None
        yield param if mask is None else param * mask
    for child in module.children():
        yield from _weight_tensors(child)


def _tensors_in(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value.dequantize() if value.is_quantized else value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _tensors_in(item)


def _weight_counts(model: nn.Module) -> tuple[int, int]:
    total = nonzero = 0
    with torch.no_grad():
        for tensor in _weight_tensors(model):
            total += tensor.numel()
            nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def _size_bytes(model: nn.Module) -> int:
    if isinstance(model, OnnxModule):
        return model.path.stat().st_size
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _latency_ms(model: nn.Module, inputs: Tensor, repeats: int, warmup: int) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
