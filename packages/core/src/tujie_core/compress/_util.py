"""Helpers shared by the compression techniques: copying a model, a batch's inputs, running a TrainFn."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

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


def _inputs(batch: Any) -> Tensor:
    if isinstance(batch, dict):
        return batch["inputs"]
    return batch[0] if isinstance(batch, tuple | list) else batch


def _train(train: TrainFn, model: nn.Module) -> nn.Module:
    trained = train(model)
    return trained if isinstance(trained, nn.Module) else model
