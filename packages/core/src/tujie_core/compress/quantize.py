"""int8 quantisation with torch.ao: dynamic, post-training static and quantisation-aware training."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.quantization import (
    default_dynamic_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    per_channel_dynamic_qconfig,
)
from torch.ao.quantization import quantize_dynamic as _ao_quantize_dynamic
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from tujie_core.compress._util import TrainFn, _copy, _inputs, _train


@contextmanager
def _quiet_ao() -> Iterator[None]:
    """torch.ao.quantization (eager and FX) is deprecated in favour of torchao, yet it is what torch 2.14 ships
    for int8 on CPU: silence its deprecation notices, and nothing else, while we call it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "Please use quant_min and quant_max", UserWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel", UserWarning)
        yield


def quantize_dynamic(model: nn.Module, per_channel: bool = True) -> nn.Module:
    """int8 weights, activations quantised on the fly, for Linear/LSTM/GRU layers (CPU inference only).

    ``per_channel``: one weight scale per output channel of each Linear layer (closer to fp32 than one scale per
    tensor: on the MiniLM SST-2 classifier, 0.34 instead of 1.15 accuracy points lost, measured by
    ``benchmarks/nlp_int8.py --model DIR`` with and without ``--per-tensor``).
    """
    quantized = _copy(model).cpu().eval()
    linear = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {nn.Linear: linear, nn.LSTM: default_dynamic_qconfig, nn.GRU: default_dynamic_qconfig}
    with _quiet_ao():
        return _ao_quantize_dynamic(quantized, spec, dtype=torch.qint8, inplace=True)


def quantize_static(model: nn.Module, calibration: Iterable[Any]) -> nn.Module:
    """Post-training static int8 (FX graph mode, the default qconfig of ``torch.backends.quantized.engine``):
    Conv/BatchNorm/ReLU fused, activation ranges observed on ``calibration`` batches (tensors, ``(inputs,
    target)`` tuples or ``{"inputs": ...}`` dicts). Takes and returns float tensors; CPU inference only.
    The model must be symbolically traceable by ``torch.fx``.
    """
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("quantize_static needs at least one calibration batch")
    engine = torch.backends.quantized.engine
    with _quiet_ao():
        example = (_inputs(first).cpu(),)
        prepared = prepare_fx(_copy(model).cpu().eval(), get_default_qconfig_mapping(engine), example)
        with torch.no_grad():
            for batch in itertools.chain([first], batches):
                prepared(_inputs(batch).cpu())
        return convert_fx(prepared)


def quantize_aware(model: nn.Module, train: TrainFn, example: Tensor) -> nn.Module:
    """Quantisation-aware training: insert fake-quantisation (FX graph mode, default QAT qconfig of the current
    engine), let ``train`` fine-tune that model (on any device), then convert it to int8 on the CPU (float in,
    float out; CPU inference)."""
    engine = torch.backends.quantized.engine
    with _quiet_ao():
        prepared = prepare_qat_fx(_copy(model).train(), get_default_qat_qconfig_mapping(engine), (example,))
    trained = _train(train, prepared)
    with _quiet_ao():
        return convert_fx(trained.cpu().eval())
