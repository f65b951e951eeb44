"""Pruning: unstructured L1 magnitude pruning and structured channel pruning of Linear/Conv layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from tujie_core.compress._util import _copy

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
