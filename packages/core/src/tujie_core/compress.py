"""Model compression for any ``nn.Module`` (book ch. 15): pruning, low-rank factorisation, int8 quantisation,
ONNX export and knowledge distillation, plus one measurement that puts every variant into a comparison table.

Every technique returns a new model and never modifies the one it is given. :data:`COMPRESSORS` names each
technique for the CLI; :func:`compress` calls one with a :class:`CompressionContext` and validated options.

>>> small = prune(model, 0.5)                                   # doctest: +SKIP
>>> rows = [measure(m, evaluate, x[:1], name=n) for n, m in (("fp32", model), ("prune", small))]  # doctest: +SKIP
>>> print(compression_table(rows))                              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.ao.quantization import (
    default_dynamic_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    per_channel_dynamic_qconfig,
)
from torch.ao.quantization import quantize_dynamic as _ao_quantize_dynamic
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader

from tujie_core.errors import ConfigError, TujieError
from tujie_core.models import MODELS, create_model
from tujie_core.registry import Registry, validate_kwargs
from tujie_core.report import replace_section
from tujie_core.run import LoadedRun, cpu_trainer, load_run, loaders
from tujie_core.tasks import ClassificationTask, SpecLike, StepOutput

__all__ = [
    "COMPRESSORS",
    "CompressionContext",
    "CompressionResult",
    "CompressionRow",
    "DistillationTask",
    "OnnxModule",
    "TrainFn",
    "compress",
    "compress_run",
    "compression_table",
    "export_onnx",
    "low_rank",
    "make_permanent",
    "measure",
    "onnx_parity",
    "prune",
    "quantize_aware",
    "quantize_dynamic",
    "quantize_static",
    "rows_to_json",
]

TrainFn = Callable[[nn.Module], Any]
"""Trains the model it is given: returns the trained model, or anything else (None, ``Trainer.fit``'s metrics)
when it trained the given model in place."""


def _copy(model: nn.Module) -> nn.Module:
    """Deep copy, also of a model with pruning masks attached (whose derived weights are non-leaf tensors)."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        for name, _ in module.named_buffers(recurse=False):
            derived = getattr(module, name.removesuffix("_mask"), None) if name.endswith("_mask") else None
            if isinstance(derived, Tensor) and not derived.is_leaf:
                memo[id(derived)] = derived.detach().clone()  # recomputed by the pruning hook at the next forward
    return copy.deepcopy(model, memo)


# ---- measurement --------------------------------------------------------------------------------------------------
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
    points (×100, for metrics in [0, 1] such as accuracy).
    """
    base = baseline or rows[0]
    metric = base.metric_name
    lines = [
        "| method | details | params | nonzero | size MB | size × | b1 ms | b1 × | b32 ms | b32 × "
        f"| {metric} | Δ pts |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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


# ---- pruning ------------------------------------------------------------------------------------------------------
_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# modules that keep the channel/feature axis one-to-one (elementwise or per-channel spatial ops)
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.ELU,
    nn.Hardswish,
    nn.Mish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
_POOLS_2D = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def prune(
    model: nn.Module,
    amount: float,
    *,
    scope: Literal["global", "layer"] = "global",
    structured: bool = False,
    permanent: bool = True,
) -> nn.Module:
    """Remove the fraction ``amount`` of the Linear/Conv weights.

    Unstructured (default): zero the smallest-|w| weights (L1 magnitude), ranked over all layers together
    (``scope="global"``) or within each layer (``"layer"``). Zeros in dense tensors save neither memory nor time.
    ``permanent=False`` keeps torch's pruning masks attached (``weight = weight_orig * weight_mask`` before every
    forward), so fine-tuning cannot regrow pruned weights; call :func:`make_permanent` afterwards.

    Structured (``structured=True``): remove the ``amount`` of output channels/units with the lowest L2 weight
    norm (ranked in the original model) from each Linear/Conv2d layer inside an ``nn.Sequential`` whose next
    weighted layer consumes them directly, physically shrinking both, and any BatchNorm between them. Traced
    chains: Linear → [BatchNorm1d] → activation/Dropout → Linear; Conv2d → [BatchNorm2d] → activation → pool →
    Conv2d; Conv2d → ... → global pool (output size 1) → Flatten → [Dropout] → Linear. Layers whose consumer
    cannot be traced (anything else in between, the last weighted layer of a Sequential, hence the output layer,
    layers outside a Sequential) stay untouched. ``scope`` applies to unstructured pruning only.
    """
    if not 0 <= amount < 1:
        raise ValueError(f"amount must be in [0, 1) (the fraction of weights to remove), got {amount}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if structured and not permanent:
        raise ValueError("permanent=False applies to unstructured pruning; structured pruning removes channels")
    pruned = _copy(model)
    if structured:
        _prune_structured(pruned, amount)
        return pruned
    targets = [(m, "weight") for m in pruned.modules() if isinstance(m, _PRUNABLE)]
    if not targets:
        raise ValueError("the model has no Linear or Conv layer to prune")
    if scope == "global":
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=amount)
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=amount)
    return make_permanent(pruned) if permanent else pruned


def make_permanent(model: nn.Module) -> nn.Module:
    """A copy of a model pruned with ``permanent=False`` whose masks are folded into plain weights."""
    folded = _copy(model)
    for module in folded.modules():
        for name, _ in list(module.named_buffers(recurse=False)):
            if name.endswith("_mask") and hasattr(module, name.removesuffix("_mask") + "_orig"):
                torch_prune.remove(module, name.removesuffix("_mask"))
    return folded


@dataclass
class _ChannelCut:
    producer: nn.Module
    batch_norms: list[nn.Module]
    consumer: nn.Module
    keep: Tensor


def _prune_structured(model: nn.Module, amount: float) -> None:
    """Plan every cut on the original weights, then apply them, in place."""
    cuts = []
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(sequential)
        for i, layer in enumerate(layers):
            if not (isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)):
                continue
            traced = _trace_consumer(layer, layers[i + 1 :])
            if traced is None:
                continue
            width = layer.weight.shape[0]
            scores = layer.weight.detach().flatten(1).norm(dim=1)
            keep = scores.topk(max(1, width - round(amount * width))).indices.sort().values
            cuts.append(_ChannelCut(layer, traced[0], traced[1], keep))
    with torch.no_grad():
        for cut in cuts:
            _select(cut.producer, cut.keep, dim=0)
            for norm in cut.batch_norms:
                _select(norm, cut.keep, dim=0)
            _select(cut.consumer, cut.keep, dim=1)


def _trace_consumer(producer: nn.Module, after: list[nn.Module]) -> tuple[list[nn.Module], nn.Module] | None:
    """(BatchNorms in between, consuming layer) when ``producer``'s channels reach it one-to-one, else None."""
    width = producer.weight.shape[0]
    kind = "conv" if isinstance(producer, nn.Conv2d) else "features"
    batch_norms: list[nn.Module] = []
    pooled_to_one = False
    for layer in after:
        if isinstance(layer, nn.Linear) and kind == "features":
            return (batch_norms, layer) if layer.in_features == width else None
        if isinstance(layer, nn.Conv2d) and kind == "conv":
            return (batch_norms, layer) if layer.in_channels == width and layer.groups == 1 else None
        if isinstance(layer, nn.BatchNorm2d if kind == "conv" else nn.BatchNorm1d) and layer.num_features == width:
            batch_norms.append(layer)
        elif kind == "conv" and isinstance(layer, _POOLS_2D):
            pooled_to_one = getattr(layer, "output_size", None) in (1, (1, 1))
        elif kind == "conv" and pooled_to_one and isinstance(layer, nn.Flatten):
            if (layer.start_dim, layer.end_dim) != (1, -1):
                return None
            kind = "features"
        elif not isinstance(layer, _ELEMENTWISE):
            return None
    return None


def _select(module: nn.Module, index: Tensor, dim: int) -> None:
    """Keep ``index`` along the output (dim 0) or input (dim 1) axis of a Linear/Conv/BatchNorm, in place."""
    names = ("weight", "bias", "running_mean", "running_var") if dim == 0 else ("weight",)
    for name in names:
        tensor = getattr(module, name, None)
        if tensor is None:
            continue
        kept = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
        setattr(module, name, nn.Parameter(kept, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else kept)
    if isinstance(module, nn.Linear):
        setattr(module, ("out_features", "in_features")[dim], len(index))
    elif isinstance(module, nn.Conv2d):
        setattr(module, ("out_channels", "in_channels")[dim], len(index))
    else:
        module.num_features = len(index)


# ---- low-rank factorisation ---------------------------------------------------------------------------------------
def low_rank(model: nn.Module, *, rank: int | None = None, energy: float | None = None) -> nn.Module:
    """Replace ``nn.Linear`` layers by ``Sequential(Linear(in, r, bias=False), Linear(r, out))`` from a truncated
    SVD ``W ≈ (U·S^½)(S^½·Vᵀ)``.

    Give exactly one of ``rank`` (``r = min(rank, in, out)``, applied to every Linear, even where it adds
    parameters, so full rank reproduces the model) or ``energy`` in (0, 1] (per layer, the smallest r keeping
    that fraction of the sum of squared singular values; layers where r·(in + out) ≥ in·out stay as they are).
    Only exact ``nn.Linear`` instances are replaced: subclasses (e.g. attention's ``out_proj``, whose weight
    is read directly) are kept.
    """
    return _low_rank(model, rank, energy)[0]


def _low_rank(model: nn.Module, rank: int | None, energy: float | None) -> tuple[nn.Module, dict[str, tuple[int, int]]]:
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank or energy")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    factorised = _copy(model)
    ranks = {}
    targets = [(name, m) for name, m in factorised.named_modules() if type(m) is nn.Linear]
    for name, linear in targets:
        weight = linear.weight.detach()
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        if rank is not None:
            r = min(rank, len(s))
        else:
            cumulative = (s**2).cumsum(0)
            r = int(torch.searchsorted(cumulative, energy * cumulative[-1] * (1 - 1e-12))) + 1
            if r * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
                continue
        root = s[:r].sqrt()
        first = nn.Linear(linear.in_features, r, bias=False, device=weight.device, dtype=weight.dtype)
        second = nn.Linear(
            r, linear.out_features, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            first.weight.copy_(root[:, None] * vh[:r])
            second.weight.copy_(u[:, :r] * root)
            if linear.bias is not None:
                second.bias.copy_(linear.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(factorised.get_submodule(parent_name), child, nn.Sequential(first, second))
        ranks[name] = (r, len(s))
    return factorised, ranks


# ---- quantisation -------------------------------------------------------------------------------------------------
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


def _inputs(batch: Any) -> Tensor:
    if isinstance(batch, dict):
        return batch["inputs"]
    return batch[0] if isinstance(batch, tuple | list) else batch


def _train(train: TrainFn, model: nn.Module) -> nn.Module:
    trained = train(model)
    return trained if isinstance(trained, nn.Module) else model


# ---- ONNX ---------------------------------------------------------------------------------------------------------
def export_onnx(model: nn.Module, example: Tensor, path: str | Path, *, dynamic_batch: bool = True) -> Path:
    """Write ``model`` (in eval mode) as ONNX to ``path``, input ``input``, output ``output``, with a dynamic
    batch axis unless ``dynamic_batch=False``.

    Uses torch's TorchScript-based exporter (``dynamo=False``; deprecated since torch 2.9 but present in 2.14):
    the default torch.export-based one needs ``onnxscript``, which tujie does not install.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        torch.onnx.export(
            model, (example,), path, dynamo=False, input_names=["input"], output_names=["output"], dynamic_axes=axes
        )
    return path


_NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, callable like the model it came from (tensors in and out),
    so :func:`measure` and evaluation code work on it. It has no torch parameters and cannot be trained."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime

        super().__init__()
        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        feed = {name: x.detach().cpu().numpy() for name, x in zip(self.input_names, inputs, strict=True)}
        outputs = tuple(torch.from_numpy(o).to(inputs[0].device) for o in self.session.run(None, feed))
        return outputs[0] if len(outputs) == 1 else outputs

    def initializers(self) -> list[Tensor]:
        """The graph's stored weights, without BatchNorm running statistics (which torch counts as buffers;
        BatchNorm after a convolution is folded into it by the exporter)."""
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(self.path)).graph
        return [
            torch.from_numpy(numpy_helper.to_array(t).copy())
            for t in graph.initializer
            if not t.name.endswith(_NORM_STATISTICS)
        ]


def onnx_parity(model: nn.Module, path: str | Path, inputs: Tensor, atol: float | None = 1e-4) -> float:
    """Largest absolute difference between ``model`` (eval mode) and the ONNX file at ``path`` on ``inputs``;
    raises ValueError when it exceeds ``atol`` (``atol=None``: only report it)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            diff = float((model(inputs) - OnnxModule(path)(inputs)).abs().max())
    finally:
        model.train(was_training)
    if atol is not None and diff > atol:
        raise ValueError(f"ONNX output differs from PyTorch by {diff:.3g}, more than atol={atol:g} ({path})")
    return diff


# ---- knowledge distillation ---------------------------------------------------------------------------------------
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
    ) -> None:
        super().__init__(
            model,
            num_classes,
            mode=mode,
            class_weights=class_weights,
            label_smoothing=label_smoothing,
            optimizer=optimizer,
            scheduler=scheduler,
        )
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha
        self.teacher = teacher.eval().requires_grad_(False)

    def step(self, batch: Any, with_predictions: bool = True) -> StepOutput:
        inputs, target = self.unpack(batch)
        outputs = self.forward(inputs)
        loss = (1 - self.alpha) * self.loss(outputs, target)
        if self.alpha > 0:
            loss = loss + self.alpha * self.distillation_loss(outputs, self._teacher_outputs(inputs, outputs.device))
        preds = self.predictions(outputs.detach()) if with_predictions else outputs.detach()
        return StepOutput(loss, preds, target.long() if with_predictions else target, int(target.shape[0]))

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
        return self.teacher(inputs)


# ---- registry for the CLI -----------------------------------------------------------------------------------------
COMPRESSORS: Registry = Registry("compressors")


@dataclass
class CompressionContext:
    """What a compressor may need besides the model; its options are keyword arguments of :func:`compress`.

    ``example``: one input batch of size 1 (tracing, export). ``calibration``: input batches for static int8.
    ``fine_tune``: trains a model (see :data:`TrainFn`); used after pruning and low-rank when given, required by
    ``qat``. ``distil``: teacher → trained student (e.g. a :class:`DistillationTask` fitted by the Trainer),
    required by ``distil``. ``workdir``: where file-based variants (ONNX) are written.
    """

    example: Tensor
    calibration: Iterable[Any] = ()
    fine_tune: TrainFn | None = None
    distil: Callable[[nn.Module], nn.Module] | None = None
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
def _distil_entry(model: nn.Module, context: CompressionContext) -> tuple[nn.Module, str]:
    """``context.distil(copy of the model as teacher)`` → the trained student."""
    student = _need(context.distil, "distil", "distil")(_copy(model))
    sizes = [sum(p.numel() for p in m.parameters()) for m in (student, model)]
    return student, f"distilled student, {sizes[0]:,} parameters (teacher {sizes[1]:,})"


# ---- a trained run folder → comparison table ---------------------------------------------------------------------
DEFAULT_METHODS = ("prune", "lowrank", "int8", "distil")
REPORT_SECTION = "## Compression"


@dataclass
class CompressionResult:
    """Every variant of a run's model, its table row, notes on the methods, and where the table was written."""

    rows: list[CompressionRow]
    models: dict[str, nn.Module]
    table: str
    output_dir: Path
    notes: list[str] = field(default_factory=list)


def shrunk_widths(params: dict[str, Any], factor: int = 2, minimum: int = 8) -> dict[str, Any]:
    """Default distillation student: the teacher's registry options with ``hidden``/``channels`` widths ÷ ``factor``."""
    return {
        k: [max(minimum, w // factor) for w in v] if k in ("hidden", "channels") and isinstance(v, list) else v
        for k, v in params.items()
    }


def _check_request(
    run: LoadedRun, methods: Iterable[str] | None, options: dict[str, dict[str, Any]], fine_tune_epochs: int
) -> tuple[list[str], list[str]]:
    """The methods to run and notes on defaults left out; ConfigError for a name, an option or a combination
    that would fail later."""
    regression = run.splits.info.kind == "regression"
    notes = []
    if methods is None:
        names = [m for m in DEFAULT_METHODS if not (regression and m == "distil")]
        if regression:
            notes.append("distil left out: distillation needs a classification run.")
    else:
        names = list(methods)
    if not names:
        raise ConfigError("compress: name at least one method")
    for name in names:
        COMPRESSORS.get(name)  # unknown names fail with the registry's suggestion
    if regression and "distil" in names:
        raise ConfigError("compress.distil: distillation needs a classification run; this one is regression")
    if fine_tune_epochs < 0:
        raise ConfigError(f"fine_tune_epochs must be ≥ 0, got {fine_tune_epochs}")
    if fine_tune_epochs == 0 and "qat" in names:
        raise ConfigError("compress.qat: quantisation-aware training needs fine_tune_epochs ≥ 1, got 0")
    for name, kwargs in options.items():
        if name not in names:
            raise ConfigError(f"compress.{name}: options for a method that is not run ({', '.join(names)})")
        validate_kwargs(COMPRESSORS.get(name), kwargs, where=f"compress.{name}", skip=("model", "context"))
    return names, notes


def compress_run(
    run_dir: str | Path,
    methods: Iterable[str] | None = None,
    *,
    options: dict[str, dict[str, Any]] | None = None,
    fine_tune_epochs: int = 2,
    student: dict[str, Any] | None = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> CompressionResult:
    """Compress a run written by :func:`tujie_core.train_from_config` (a supervised run) with each of ``methods``.

    ``methods``: default :data:`DEFAULT_METHODS`, without ``distil`` for a regression run (said in the notes);
    ``options``: method → its keyword arguments. Names and options are checked before any work.
    Metric: accuracy (classification) or R² (regression) on the run's test split (else validation), on the CPU.
    Fine-tuning (after pruning and low-rank; QAT's training) runs ``fine_tune_epochs`` epochs (0: none, which
    QAT cannot do) with the run's optimizer at a tenth of its learning rate; the distilled student (``student``:
    registry options of the run's model, over the default :func:`shrunk_widths`) trains as long as the run did.
    The table goes to ``<run>/compression/compression.{md,json}`` and replaces the run report's compression
    section.
    """
    run = load_run(run_dir)
    config, info = run.config, run.splits.info
    methods, notes = _check_request(run, methods, options or {}, fine_tune_epochs)
    student_params = {**shrunk_widths(config.model.params), **(student or {})}
    if "distil" in methods:
        where, runtime = "compress.student", ("input_shape", "num_outputs")
        validate_kwargs(MODELS.get(config.model.name), student_params, where=where, skip=runtime)
    elif student:
        raise ConfigError("compress.student: options for the distillation student, but distil is not run")
    split_loaders = loaders(config, run.splits)
    eval_split = "test" if split_loaders["test"] is not None else "val"
    eval_loader, train_loader = split_loaders[eval_split], split_loaders["train"]
    if eval_loader is None or train_loader is None:
        raise ConfigError(f"{run.run_dir}: compression needs a train split and a test or validation split")
    metric_name = "r2" if info.kind == "regression" else "accuracy"
    evaluator = cpu_trainer(config.trainer)

    def task_for(model: nn.Module, **changes: Any) -> Any:
        task = copy.copy(run.task)
        task.model = model
        for key, value in changes.items():
            setattr(task, key, value)
        return task

    def evaluate(model: nn.Module) -> float:
        metrics = evaluator.evaluate(task_for(model), eval_loader, eval_split, curves=False).metrics
        return metrics[f"{eval_split}/{metric_name}"]

    def fit(task: Any, epochs: int) -> None:
        cpu_trainer(config.trainer, max_epochs=epochs, max_steps=None).fit(task, train_loader, split_loaders["val"])

    def fine_tune(model: nn.Module) -> nn.Module:
        spec = run.task.optimizer_spec
        lr = spec.params.get("lr", 1e-3) * 0.1
        fit(task_for(model, optimizer_spec=spec.model_copy(update={"lr": lr}), scheduler_spec=None), fine_tune_epochs)
        return model

    def distil(teacher: nn.Module) -> nn.Module:
        model = create_model(
            config.model.name, input_shape=info.input_shape, num_outputs=info.num_outputs, **student_params
        )
        task = DistillationTask(
            model,
            teacher,
            run.task.num_classes,
            temperature=temperature,
            alpha=alpha,
            mode=run.task.kind,
            optimizer=config.optimizer,
            scheduler=config.scheduler,
        )
        fit(task, config.trainer.max_epochs)
        return model.eval()

    output_dir = run.run_dir / "compression"
    output_dir.mkdir(exist_ok=True)
    sample = next(iter(DataLoader(eval_loader.dataset, batch_size=1)))
    context = CompressionContext(
        example=_inputs(sample).float(),
        calibration=[_inputs(b) for b in itertools.islice(iter(train_loader), 8)],
        fine_tune=fine_tune if fine_tune_epochs else None,
        distil=distil,
        workdir=output_dir,
    )
    baseline = run.task.model.cpu().eval()
    models: dict[str, nn.Module] = {"fp32": baseline}
    rows = [measure(baseline, evaluate, context.example, name="fp32", details="trained model", metric_name=metric_name)]
    for name in methods:
        model, details = compress(name, baseline, context, **(options or {}).get(name, {}))
        models[name] = model
        rows.append(measure(model, evaluate, context.example, name=name, details=details, metric_name=metric_name))
    table = compression_table(rows)
    note = " ".join(
        [
            f"{metric_name} on the {eval_split} split; latency on the CPU with {torch.get_num_threads()} threads "
            "(median of 50 forward passes); size = serialized weights. Ratios against fp32.",
            *notes,
        ]
    )
    (output_dir / "compression.md").write_text(f"# Compression: {config.name}\n\n{note}\n\n{table}\n", "utf-8")
    (output_dir / "compression.json").write_text(rows_to_json(rows), encoding="utf-8")
    report = run.run_dir / "report.md"
    if report.is_file():
        replace_section(report, REPORT_SECTION, f"{note}\n\n{table}\n")
    return CompressionResult(rows, models, table, output_dir, notes)
