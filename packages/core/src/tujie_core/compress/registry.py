"""The compressor registry for the CLI: each technique by name, called by :func:`compress` with a context."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tujie_core.compress._util import TrainFn, _copy, _train
from tujie_core.compress.lowrank import _low_rank
from tujie_core.compress.onnx import OnnxModule, export_onnx, onnx_parity
from tujie_core.compress.pruning import make_permanent, prune
from tujie_core.compress.quantize import quantize_aware, quantize_dynamic, quantize_static
from tujie_core.errors import ConfigError, TujieError
from tujie_core.registry import Registry

COMPRESSORS: Registry = Registry("compressors")


@dataclass
class CompressionContext:
    """What a compressor may need besides the model; its options are keyword arguments of :func:`compress`.

    ``example``: one input batch of size 1 (tracing, export). ``calibration``: input batches for static int8.
    ``fine_tune``: trains a model (see :data:`TrainFn`); used after pruning and low-rank when given, required by
    ``qat``. ``distil``: ``(teacher, **options)`` → trained student (e.g. a :class:`DistillationTask` fitted by
    the Trainer), required by ``distil``. ``workdir``: where file-based variants (ONNX) are written.
    """

    example: Tensor
    calibration: Iterable[Any] = ()
    fine_tune: TrainFn | None = None
    distil: Callable[..., nn.Module] | None = None
    workdir: Path | None = None


def compress(name: str, model: nn.Module, context: CompressionContext, **options: Any) -> tuple[nn.Module, str]:
    """Apply the registered technique ``name``: ``(new model, one-line description)``.

    ``options`` are checked against the technique's keyword arguments (ConfigError naming ``compress.<name>.key``).
    """
    try:
        return COMPRESSORS.create(
            name, where=f"compress.{name}", runtime={"model": model, "context": context}, **options
        )
    except TujieError:
        raise
    except ValueError as exc:  # a technique's own check (amount outside [0, 1), ...) is a user error here
        raise ConfigError(f"compress.{name}: {exc}") from None


def _need(value: Any, what: str, name: str) -> Any:
    if not value:
        raise ConfigError(f"compress.{name}: needs {what} in the CompressionContext")
    return value


def _fine_tuned(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, str]:
    if context.fine_tune is None:
        return model, ""
    return _train(context.fine_tune, model), ", fine-tuned"


@COMPRESSORS.register("prune")
def _prune_entry(
    model: nn.Module, context: CompressionContext, amount: float = 0.5, scope: Literal["global", "layer"] = "global"
) -> tuple[nn.Module, str]:
    """Unstructured L1 pruning; with ``context.fine_tune``, fine-tuned with the masks attached."""
    pruned = prune(model, amount, scope=scope, permanent=context.fine_tune is None)
    pruned, tuned = _fine_tuned(pruned, context)
    if tuned:
        pruned = make_permanent(pruned)
    return pruned, f"L1 unstructured, {scope}, {amount:.0%} of Linear/Conv weights zeroed{tuned}"


@COMPRESSORS.register("prune-structured")
def _prune_structured_entry(
    model: nn.Module, context: CompressionContext, amount: float = 0.3
) -> tuple[nn.Module, str]:
    """Structured channel pruning, then ``context.fine_tune`` if given."""
    pruned, tuned = _fine_tuned(prune(model, amount, structured=True), context)
    return pruned, f"lowest-L2 channels, {amount:.0%} of each traceable layer's outputs removed{tuned}"


@COMPRESSORS.register("lowrank")
def _low_rank_entry(
    model: nn.Module, context: CompressionContext, rank: int | None = None, energy: float | None = None
) -> tuple[nn.Module, str]:
    """SVD factorisation of the Linear layers (default ``energy=0.9``), then ``context.fine_tune`` if given;
    a model with no layer worth factorising comes back unchanged, without fine-tuning."""
    energy = 0.9 if rank is None and energy is None else energy
    factorised, ranks = _low_rank(model, rank, energy)
    how = f"rank {rank}" if rank is not None else f"energy {energy}"
    if not ranks:
        return factorised, f"SVD {how}: no Linear layer where factorising saves parameters; unchanged, not fine-tuned"
    factorised, tuned = _fine_tuned(factorised, context)
    chosen = ", ".join(f"{name} {r}/{full}" for name, (r, full) in ranks.items())
    return factorised, f"SVD {how}: {chosen}{tuned}"


@COMPRESSORS.register("int8")
def _int8_entry(model: nn.Module, context: CompressionContext, per_channel: bool = True) -> tuple[nn.Module, str]:
    """Dynamic int8."""
    scales = "per-channel" if per_channel else "per-tensor"
    return quantize_dynamic(model, per_channel), f"dynamic int8 (Linear/LSTM/GRU weights, {scales}), torch.ao eager"


@COMPRESSORS.register("int8-static")
def _int8_static_entry(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, str]:
    """Post-training static int8 calibrated on ``context.calibration``."""
    quantized = quantize_static(model, _need(context.calibration, "calibration batches", "int8-static"))
    return quantized, f"static int8, FX graph mode, {torch.backends.quantized.engine} qconfig, calibrated"


@COMPRESSORS.register("qat")
def _qat_entry(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, str]:
    """Quantisation-aware training with ``context.fine_tune``."""
    quantized = quantize_aware(model, _need(context.fine_tune, "fine_tune", "qat"), context.example)
    return quantized, f"quantisation-aware training, FX graph mode, {torch.backends.quantized.engine} qconfig"


@COMPRESSORS.register("onnx")
def _onnx_entry(model: nn.Module, context: CompressionContext, path: Path | None = None) -> tuple[nn.Module, str]:
    """Export to ``path`` (default ``context.workdir / "model.onnx"``), check parity, run with ONNX Runtime."""
    target = path or _need(context.workdir, "workdir (or the option path)", "onnx") / "model.onnx"
    written = export_onnx(model, context.example, target)
    diff = onnx_parity(model, written, context.example.repeat(4, *([1] * (context.example.ndim - 1))))
    return OnnxModule(written), f"ONNX Runtime CPU, {written.name}, max |Δ| vs torch {diff:.1e}"


@COMPRESSORS.register("distil")
def _distil_entry(model: nn.Module, context: CompressionContext, **options: Any) -> tuple[nn.Module, str]:
    """``context.distil(copy of the model as teacher, **options)`` → the trained student (the options are the
    distil function's: student size, temperature, epochs, ...)."""
    student = _need(context.distil, "distil", "distil")(_copy(model), **options)
    sizes = [sum(p.numel() for p in m.parameters()) for m in (student, model)]
    return student, f"distilled student, {sizes[0]:,} parameters (teacher {sizes[1]:,})"
