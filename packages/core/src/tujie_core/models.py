"""Small reference models, registered like timm's: ``create_model("mlp", input_shape=(64,), num_outputs=10)``.

Every builder takes ``input_shape`` and ``num_outputs`` (filled in from the dataset's :class:`DataInfo`) plus
its own options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tujie_core.registry import Registry

MODELS: Registry = Registry("models")


class Square(nn.Module):
    """``x²``: the activation of CryptoNets (Gilad-Bachrach et al. 2016). A polynomial, so a network built with it
    runs exactly under homomorphic encryption (CKKS adds and multiplies only)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "square": Square,
}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name; keyword arguments are checked against the builder's signature."""
    return MODELS.create(name, where="model", **kwargs)


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature (``inverse``: ``x * std + mean``), with the statistics as buffers: saved with
    the weights, so the model takes raw feature vectors (and returns targets in their own unit) and no separate
    scaler can go missing or out of step."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inverse: bool = False) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"{len(mean)} mean values but {len(std)} std values")
        if any(not s > 0 for s in std):
            raise ValueError("std values must all be > 0")
        self.inverse = inverse
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean if self.inverse else (x - self.mean) / self.std


def _scaling(
    features: int, mean: Sequence[float] | None, std: Sequence[float] | None, where: str, inverse: bool = False
) -> list[nn.Module]:
    """A :class:`Standardize` layer when both statistics are given (``where``: their argument prefix)."""
    if (mean is None) != (std is None):
        raise ValueError(f"give both {where}_mean and {where}_std, or neither")
    if mean is None or std is None:
        return []
    if len(mean) != features:
        raise ValueError(f"{where}_mean has {len(mean)} values for {features} {where} features")
    return [Standardize(mean, std, inverse)]


@MODELS.register()
def linear(
    input_shape: tuple[int, ...],
    num_outputs: int,
    input_mean: list[float] | None = None,
    input_std: list[float] | None = None,
    target_mean: list[float] | None = None,
    target_std: list[float] | None = None,
) -> nn.Module:
    """Logistic/linear regression on flattened inputs.

    ``input_mean``/``input_std`` standardise the inputs inside the model, ``target_mean``/``target_std`` scale a
    regression output back to the target's unit; tabular datasets supply both from their training split."""
    features = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        *_scaling(features, input_mean, input_std, "input"),
        nn.Linear(features, num_outputs),
        *_scaling(num_outputs, target_mean, target_std, "target", inverse=True),
    )


@MODELS.register()
def mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    hidden: list[int] = [128, 64],  # noqa: B006 - read only
    dropout: float = 0.1,
    activation: Literal["relu", "gelu", "tanh", "silu", "square"] = "relu",
    batch_norm: bool = False,
    input_mean: list[float] | None = None,
    input_std: list[float] | None = None,
    target_mean: list[float] | None = None,
    target_std: list[float] | None = None,
) -> nn.Module:
    """Multi-layer perceptron on flattened inputs (in-model scaling of inputs and targets as :func:`linear`)."""
    width = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten(), *_scaling(width, input_mean, input_std, "input")]
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers += [ACTIVATIONS[activation](), nn.Dropout(dropout)]
        width = size
    layers += [nn.Linear(width, num_outputs), *_scaling(num_outputs, target_mean, target_std, "target", inverse=True)]
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
