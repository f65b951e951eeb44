"""A trained network as a plain function of a float vector: optional standardisation, then affine layers with one
activation between them, giving a logit, logits or a value. This is the form an encrypted-inference server
evaluates (CKKS computes additions and multiplications only), and :func:`plain_model` refuses any network that is
not exactly it, naming the first layer that is not.

>>> plain = plain_model(create_model("mlp", input_shape=(30,), num_outputs=1, hidden=[32]))   # doctest: +SKIP
>>> plain.describe()                                                                         # doctest: +SKIP
'linear(30→32) → relu → linear(32→1) → logit'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from tujie_core.errors import DataError
from tujie_core.models import ACTIVATIONS, Standardize

ACTIVATION_NAMES: dict[type[nn.Module], str] = {module: name for name, module in ACTIVATIONS.items()}
NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    "square": np.square,
}
OUTPUTS = ("logit", "logits", "value")


class AffineStack:
    """Sizes of a network given as ``layers``: a list of (weight (out, in), bias (out,)) arrays."""

    layers: list[tuple[np.ndarray, np.ndarray]]

    @property
    def input_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.layers[-1][0].shape[0])


@dataclass
class PlainModel(AffineStack):
    """``x → [(x − mean) / std] → W₁·+b₁ → act → … → Wₙ·+bₙ [→ · × target_std + target_mean]`` in float64."""

    mean: np.ndarray | None  # None: the network takes its inputs as they are
    std: np.ndarray | None
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight (out, in), bias (out,))
    activation: str | None  # between affine layers; None for a single (linear/logistic) layer
    output: str  # "logit" (binary), "logits" (multiclass) or "value" (regression)
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float64)
        if self.mean is not None and self.std is not None:
            h = (h - self.mean) / self.std
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

    def folded_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The affine layers with the input standardisation folded into the first and the target scaling into the
        last: the same function with no separate scaling steps (one multiplication less under encryption)."""
        layers = [(w.copy(), b.copy()) for w, b in self.layers]
        if self.mean is not None and self.std is not None:
            w, b = layers[0]
            layers[0] = (w / self.std, b - (w / self.std) @ self.mean)
        if self.target_mean is not None and self.target_std is not None:
            w, b = layers[-1]
            layers[-1] = (w * self.target_std[:, None], b * self.target_std + self.target_mean)
        return layers

    def describe(self) -> str:
        parts = [] if self.mean is None else [f"standardise({len(self.mean)})"]
        for i, (weight, _) in enumerate(self.layers):
            parts.append(f"linear({weight.shape[1]}→{weight.shape[0]})")
            if i < len(self.layers) - 1 and self.activation is not None:
                parts.append(self.activation)
        if self.target_mean is not None:
            parts.append("rescale to the target's unit")
        return " → ".join([*parts, self.output])


def plain_model(model: nn.Module, output: str = "logit", require_standardisation: bool = False) -> PlainModel:
    """The plain form of a ``linear``/``mlp`` network (core's registry or any ``nn.Sequential`` of the same
    layers); DataError naming the first layer that has no such form (batch norm, convolutions, ...). Dropout is the
    identity at inference. ``require_standardisation``: refuse a network that takes pre-scaled inputs."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got '{output}'")
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
        elif type(module) in ACTIVATION_NAMES and len(layers) == len(activations) + 1:  # one after each hidden layer
            activations.append(ACTIVATION_NAMES[type(module)])
        else:
            raise DataError(
                f"layer {index} ({type(module).__name__}) has no plain form: the network must be "
                "[standardisation +] linear layers with one activation between them"
            )
    if require_standardisation and mean is None:
        raise DataError("no plain form: the model needs its standardisation inside it")
    if not layers:
        raise DataError("no plain form: the model has no linear layer")
    if len(set(activations)) > 1:
        raise DataError(f"no plain form: mixed activations {sorted(set(activations))}")
    if len(activations) != len(layers) - 1:
        raise DataError(f"no plain form: {len(layers)} linear layers need {len(layers) - 1} activations between them")
    activation = activations[0] if activations else None
    return PlainModel(mean, std, layers, activation, output, target_mean, target_std)
