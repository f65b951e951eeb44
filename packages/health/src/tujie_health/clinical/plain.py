"""A trained risk model as a plain function of a float vector: standardise, then affine layers with an activation
between them, giving a logit (or a value). This is the form an encrypted-inference server evaluates (CKKS computes
additions and multiplications only), and :func:`plain_model` refuses any network that is not exactly it.

>>> plain = plain_model(risk.model)             # doctest: +SKIP
>>> plain.describe()                            # doctest: +SKIP
'standardise(30) → linear(30→64) → relu → linear(64→1) → logit'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from tujie_core import DataError
from tujie_core.models import Standardize

ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.GELU: "gelu", nn.Tanh: "tanh", nn.SiLU: "silu"}
NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
}


@dataclass
class PlainModel:
    """``x → (x − mean) / std → W₁·+b₁ → act → … → Wₙ·+bₙ [→ · × target_std + target_mean]``."""

    mean: np.ndarray
    std: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight (out, in), bias (out,))
    activation: str | None  # between affine layers; None for a single (linear/logistic) layer
    output: str  # "logit" (binary), "logits" (multiclass) or "value" (regression)
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        for i, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T + bias
            if i < len(self.layers) - 1 and self.activation is not None:
                h = NUMPY_ACTIVATIONS[self.activation](h)
        if self.target_mean is not None and self.target_std is not None:
            h = h * self.target_std + self.target_mean
        return h

    @property
    def depth(self) -> int:
        """Affine layers in sequence (the multiplicative depth an encrypted evaluation needs grows with it)."""
        return len(self.layers)

    def describe(self) -> str:
        parts = [f"standardise({len(self.mean)})"]
        for i, (weight, _) in enumerate(self.layers):
            parts.append(f"linear({weight.shape[1]}→{weight.shape[0]})")
            if i < len(self.layers) - 1 and self.activation is not None:
                parts.append(self.activation)
        if self.target_mean is not None:
            parts.append("rescale to the target's unit")
        return " → ".join([*parts, self.output])


def plain_model(model: nn.Module, output: str = "logit") -> PlainModel:
    """The plain form of a ``linear``/``mlp`` network with in-model standardisation; DataError naming the first
    layer that has no such form (batch norm, convolutions, ...). Dropout is the identity at inference."""
    modules = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    mean = std = target_mean = target_std = None
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    activations: list[str] = []
    for index, module in enumerate(modules):
        if isinstance(module, (nn.Flatten, nn.Dropout, nn.Identity)):
            continue
        if isinstance(module, Standardize) and not module.inverse and not layers and mean is None:
            mean, std = module.mean.double().numpy(), module.std.double().numpy()
        elif isinstance(module, Standardize) and module.inverse and index == len(modules) - 1:
            target_mean, target_std = module.mean.double().numpy(), module.std.double().numpy()
        elif isinstance(module, nn.Linear):
            bias = module.bias.detach().double().numpy() if module.bias is not None else np.zeros(module.out_features)
            layers.append((module.weight.detach().double().numpy(), bias))
        elif type(module) in ACTIVATIONS and len(layers) == len(activations) + 1:  # one after each hidden layer
            activations.append(ACTIVATIONS[type(module)])
        else:
            raise DataError(
                f"layer {index} ({type(module).__name__}) has no plain form: a risk model's inference must be "
                "standardisation + linear layers with one activation between them"
            )
    if mean is None or std is None or not layers:
        raise DataError("no plain form: the model needs its standardisation inside it and at least one linear layer")
    if len(set(activations)) > 1:
        raise DataError(f"no plain form: mixed activations {sorted(set(activations))}")
    if len(activations) != len(layers) - 1:
        raise DataError(f"no plain form: {len(layers)} linear layers need {len(layers) - 1} activations between them")
    activation = activations[0] if activations else None
    return PlainModel(mean, std, layers, activation, output, target_mean, target_std)
