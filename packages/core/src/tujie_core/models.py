"""Small reference models, registered like timm's: ``create_model("mlp", input_shape=(64,), num_outputs=10)``.

Every builder takes ``input_shape`` and ``num_outputs`` (filled in from the dataset's :class:`DataInfo`) plus
its own options.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import nn

from tujie_core.registry import Registry

MODELS: Registry = Registry("models")

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name; keyword arguments are checked against the builder's signature."""
    return MODELS.create(name, where="model", **kwargs)


@MODELS.register()
def linear(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Logistic/linear regression on flattened inputs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))


@MODELS.register()
def mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    hidden: list[int] = [128, 64],  # noqa: B006 - read only
    dropout: float = 0.1,
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu",
    batch_norm: bool = False,
) -> nn.Module:
    """Multi-layer perceptron on flattened inputs."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers += [ACTIVATIONS[activation](), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


@MODELS.register()
def cnn(
    input_shape: tuple[int, ...],
    num_outputs: int,
    channels: list[int] = [32, 64],  # noqa: B006 - read only
    dropout: float = 0.1,
    norm: Literal["batch", "group"] = "batch",
) -> nn.Module:
    """Small conv net for (C, H, W) inputs: conv-norm-ReLU-pool blocks, global average pool, linear head.

    ``norm="group"``: GroupNorm with min(32, C) groups, independent of the batch (small batches, DP-SGD)."""
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs (channels, height, width) inputs, got shape {tuple(input_shape)}")
    layers: list[nn.Module] = []
    width = input_shape[0]
    for size in channels:
        layers += [
            nn.Conv2d(width, size, 3, padding=1),
            nn.BatchNorm2d(size) if norm == "batch" else nn.GroupNorm(min(32, size), size),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        width = size
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_outputs)]
    return nn.Sequential(*layers)
