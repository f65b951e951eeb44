"""Optimizer and learning-rate schedule registries."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from tujie_core.registry import Registry

OPTIMIZERS: Registry = Registry("optimizers")
SCHEDULERS: Registry = Registry("schedulers")

for _name, _cls in {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}.items():
    OPTIMIZERS.register(_name)(_cls)


FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")  # devices with torch's fused optimizer kernels


def build_optimizer(name: str, params: Any, *, where: str = "optimizer", **options: Any) -> Optimizer:
    """``OPTIMIZERS[name](params, **options)``, checked against its signature, with the fused kernel by default.

    When the optimizer has a ``fused`` option (AdamW, Adam, SGD, Adagrad), the config sets neither ``fused`` nor
    ``foreach`` and every parameter is floating point on a device with fused kernels, it is built fused: one kernel
    for all parameters, as the Hugging Face Trainer's default ``adamw_torch_fused``. Otherwise torch's default
    applies; on CPU that is a Python loop over the parameters, several times slower for a transformer.
    """
    params = [_listed(p) if isinstance(p, dict) else p for p in ([params] if isinstance(params, Tensor) else params)]
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    fusable = all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in tensors)
    runtime: dict[str, Any] = {"params": params}
    if (
        fusable
        and "fused" in inspect.signature(OPTIMIZERS.get(name)).parameters
        and not {"fused", "foreach"} & set(options)
    ):
        runtime["fused"] = True
    return OPTIMIZERS.create(name, where=where, runtime=runtime, **options)


def _listed(group: dict[str, Any]) -> dict[str, Any]:
    tensors = group["params"]
    return {**group, "params": [tensors] if isinstance(tensors, Tensor) else list(tensors)}


@dataclass
class Schedule:
    """A scheduler and when to step it: every optimizer step, every epoch, or on a validation metric."""

    scheduler: LRScheduler | ReduceLROnPlateau
    interval: Literal["step", "epoch"] = "step"
    monitor: str | None = None


def _warmup_then(decay: Any, warmup_steps: int, total_steps: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return decay(min(1.0, progress))

    return factor


@SCHEDULERS.register()
def cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> Schedule:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` × lr at the last step."""
    decay = lambda p: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))  # noqa: E731
    return Schedule(LambdaLR(optimizer, _warmup_then(decay, warmup_steps, total_steps)))


@SCHEDULERS.register()
def linear(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """Linear warm-up, then linear decay to zero (the Hugging Face default)."""
    return Schedule(LambdaLR(optimizer, _warmup_then(lambda p: 1.0 - p, warmup_steps, total_steps)))


@SCHEDULERS.register()
def step(optimizer: Optimizer, total_steps: int, step_epochs: int = 10, gamma: float = 0.1) -> Schedule:
    """Multiply lr by ``gamma`` every ``step_epochs`` epochs."""
    return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, step_epochs, gamma), interval="epoch")


@SCHEDULERS.register()
def plateau(
    optimizer: Optimizer,
    total_steps: int,
    monitor: str = "val/loss",
    mode: Literal["min", "max"] = "min",
    factor: float = 0.1,
    patience: int = 3,
) -> Schedule:
    """Reduce lr by ``factor`` when ``monitor`` stops improving for ``patience`` validations."""
    return Schedule(ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience), "epoch", monitor)
