"""A trained network compiled for encrypted inference: affine layers with polynomial activations, evaluated on
CKKS ciphertexts that each hold one feature of many samples.

:func:`compile_model` takes any network with a plain form (core's ``linear`` and ``mlp``, with or without in-model
standardisation): standardisation and target scaling are folded into the first and last layers; ``square`` is
exact; any other activation is replaced by a least-squares polynomial fitted on the range its inputs take on
calibration data (the training split), and the compiled network must then agree with the original on that data,
or compilation fails naming the layer. Each activation polynomial is folded into the next layer, so a hidden layer
costs one multiplication plus ⌈log₂ degree⌉ for its powers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts
from safetensors.numpy import load_file, save_file
from torch import nn

from tujie_core import DataError
from tujie_core.plain import NUMPY_ACTIVATIONS, AffineStack, PlainModel, plain_model
from tujie_privacy.he.params import CKKSParameters, choose_parameters

MAX_DEGREE = 4
FIT_POINTS = 1024
CONFIG_NAME = "he_model.json"
WEIGHTS_NAME = "he_model.safetensors"


@dataclass
class Activation:
    """``p(x) = Σ c_k x^k`` standing for ``name`` on [low, high] (an exact polynomial has ``max_error`` 0)."""

    name: str
    coefficients: np.ndarray  # c_0 … c_degree
    low: float = -math.inf
    high: float = math.inf
    max_error: float = 0.0
    where: str = ""  # the layer it follows, for messages

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1

    @property
    def levels(self) -> int:
        """Multiplications in sequence to form the powers x² … x^degree."""
        return math.ceil(math.log2(self.degree)) if self.degree > 1 else 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.polynomial.polynomial.polyval(x, self.coefficients)

    def describe(self) -> str:
        if self.max_error == 0.0:
            return self.name
        return f"{self.name}≈poly{self.degree}[{self.low:.3g}, {self.high:.3g}] (max error {self.max_error:.2g})"


def fit_activation(name: str, low: float, high: float, degree: int = 2, where: str = "") -> Activation:
    """The least-squares polynomial of ``degree`` for activation ``name`` on a uniform grid over [low, high]."""
    if not 2 <= degree <= MAX_DEGREE:
        raise DataError(f"activation degree must be 2 to {MAX_DEGREE}, got {degree}")
    grid = np.linspace(low, high, FIT_POINTS)
    target = NUMPY_ACTIVATIONS[name](grid)
    coefficients = np.polynomial.polynomial.polyfit(grid, target, degree)
    error = float(np.abs(np.polynomial.polynomial.polyval(grid, coefficients) - target).max())
    return Activation(name, coefficients, float(low), float(high), error, where)


@dataclass
class HEModel(AffineStack):
    """Affine layers (standardisation folded in) with one polynomial :class:`Activation` between each pair."""

    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight (out, in), bias (out,)) in float64
    activations: list[Activation]
    output: str  # "logit", "logits" or "value"
    # largest |value| any rescaled product or output takes on calibration data: sizes the first prime, which must
    # hold every value at the last level (a product that overflows it before rescaling decodes to garbage)
    value_bound: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)  # class names, feature names, source run, agreement

    @property
    def depth(self) -> int:
        """Multiplications in sequence: one per affine layer plus the activations' powers."""
        return len(self.layers) + sum(a.levels for a in self.activations)

    @property
    def value_bits(self) -> int:
        return max(1, math.ceil(math.log2(max(self.value_bound, 1.0) * 4)))  # 4×: headroom for unseen inputs

    @property
    def multiplies_ciphertexts(self) -> bool:
        return bool(self.activations)

    def parameters(self, security: int = 128, scale_bits: int = 40) -> CKKSParameters:
        """The CKKS parameters this model needs (what a client should generate keys for)."""
        return choose_parameters(self.depth, self.value_bits, security, scale_bits)

    def describe(self) -> str:
        parts = []
        for i, (weight, _) in enumerate(self.layers):
            parts.append(f"linear({weight.shape[1]}→{weight.shape[0]})")
            if i < len(self.activations):
                parts.append(self.activations[i].describe())
        return " → ".join([*parts, self.output])

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def plain(self, x: np.ndarray) -> np.ndarray:
        """The server's computation in float64 on plaintext ``(n, input_dim)`` (what the ciphertexts should decrypt
        to, up to CKKS noise)."""
        h = np.asarray(x, dtype=np.float64)
        for i, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T + bias
            if i < len(self.activations):
                h = self.activations[i](h)
        return h

    def encrypted(self, x: ts.CKKSTensor) -> ts.CKKSTensor:
        """Evaluate on a batched CKKS tensor of shape ``(input_dim,)`` (each element one feature of many samples);
        returns shape ``(output_dim,)``. Each activation is folded into the next layer:
        ``W·p(h) + b = Σ_k (c_k W)·h^k + (b + c_0 W·1)``."""
        h = x.reshape([1, self.input_dim])
        weight, bias = self.layers[0]
        h = h.mm(weight.T.tolist()) + bias.tolist()
        for activation, (weight, bias) in zip(self.activations, self.layers[1:], strict=True):
            powers = _powers(h, activation.degree)
            out = None
            for k in range(1, activation.degree + 1):
                if activation.coefficients[k] == 0.0:
                    continue
                term = powers[k].mm((activation.coefficients[k] * weight.T).tolist())
                out = term if out is None else out + term
            assert out is not None  # a fitted polynomial has a non-zero power term
            h = out + (bias + activation.coefficients[0] * weight.sum(1)).tolist()
        return h.reshape([self.output_dim])

    # ---- persistence ---------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"layer{i}.weight": w for i, (w, _) in enumerate(self.layers)}
        tensors |= {f"layer{i}.bias": b for i, (_, b) in enumerate(self.layers)}
        tensors |= {f"activation{i}": a.coefficients for i, a in enumerate(self.activations)}
        save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, directory / WEIGHTS_NAME)
        config = {
            "layers": len(self.layers),
            "activations": [
                {"name": a.name, "low": a.low, "high": a.high, "max_error": a.max_error, "where": a.where}
                for a in self.activations
            ],
            "output": self.output,
            "value_bound": self.value_bound,
            "meta": self.meta,
            "function": self.describe(),
        }
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> HEModel:
        directory = Path(directory)
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / WEIGHTS_NAME))
        layers = [(tensors[f"layer{i}.weight"], tensors[f"layer{i}.bias"]) for i in range(config["layers"])]
        activations = [
            Activation(a["name"], tensors[f"activation{i}"], a["low"], a["high"], a["max_error"], a.get("where", ""))
            for i, a in enumerate(config["activations"])
        ]
        return cls(layers, activations, config["output"], config["value_bound"], config.get("meta", {}))


def _powers(h: ts.CKKSTensor, degree: int) -> dict[int, ts.CKKSTensor]:
    """h, h², … h^degree with the fewest multiplications in sequence (h⁴ = (h²)², h³ = h²·h)."""
    powers = {1: h}
    if degree >= 2:
        powers[2] = h.square()
    if degree >= 3:
        powers[3] = powers[2] * h
    if degree >= 4:
        powers[4] = powers[2].square()
    return powers


def _largest_term(h: np.ndarray, weight: np.ndarray) -> float:
    """An upper bound of Σ_i |h_i · W_ki| over samples and outputs k: whether products are rescaled one by one or
    summed first, no value of ``h @ W.T`` on the way exceeds it."""
    return float((np.abs(h).max(0)[None, :] * np.abs(weight)).sum(1).max())


def _decisions(outputs: np.ndarray, output: str) -> np.ndarray:
    return outputs[:, 0] > 0 if output == "logit" else outputs.argmax(1)


def compile_model(
    model: nn.Module | PlainModel,
    calibration: np.ndarray | None = None,
    *,
    output: str = "logit",
    degree: int = 2,
    min_agreement: float = 0.99,
    max_relative_error: float = 0.05,
    meta: dict[str, Any] | None = None,
) -> HEModel:
    """Compile ``model`` (a network with a plain form) for encrypted evaluation.

    ``calibration``: inputs like the training data, ``(n, input_dim)``. Needed to fit a non-polynomial activation
    (on the range its inputs take there, widened by 10 %) and to size the outputs. With an approximation, the
    compiled model must give the same decision (``logit``/``logits``) on at least ``min_agreement`` of the
    calibration inputs, or values within ``max_relative_error`` × their spread (``value``); else DataError naming
    the layer whose approximation is worst.
    """
    plain = model if isinstance(model, PlainModel) else plain_model(model, output)
    output = plain.output
    layers = plain.folded_layers()
    x = None if calibration is None else np.asarray(calibration, dtype=np.float64).reshape(len(calibration), -1)
    if x is not None and x.shape[1] != plain.input_dim:
        raise DataError(f"calibration inputs have {x.shape[1]} features; the model takes {plain.input_dim}")
    activations: list[Activation] = []
    h = x
    bound = 0.0
    for index, (weight, bias) in enumerate(layers[:-1]):
        name = plain.activation or ""
        where = f"hidden layer {index + 1} ({name} after linear({weight.shape[1]}→{weight.shape[0]}))"
        if h is not None:
            bound = max(bound, _largest_term(h, weight))
            h = h @ weight.T + bias
        if name == "square":
            activations.append(Activation("square", np.array([0.0, 0.0, 1.0]), where=where))
        elif h is None:
            raise DataError(
                f"{where} is not a polynomial: give calibration inputs (the training data) to fit one on their "
                "range, or train with activation 'square'"
            )
        else:
            low, high = float(h.min()), float(h.max())
            pad = 0.1 * max(high - low, 1e-6)
            activations.append(fit_activation(name, low - pad, high + pad, degree, where))
        if h is not None:
            powers = [h**k for k in range(1, activations[-1].degree + 1)]
            bound = max(bound, *(float(np.abs(p).max()) for p in powers))
            h = NUMPY_ACTIVATIONS[name](h)
            # the next layer multiplies each power by c_k W
            following = layers[index + 1][0]
            for k, power in enumerate(powers, start=1):
                bound = max(bound, _largest_term(power, activations[-1].coefficients[k] * following))
    if h is not None and not activations:  # a single affine layer
        bound = _largest_term(h, layers[0][0])
    compiled = HEModel(layers, activations, output, meta=dict(meta or {}))
    compiled.meta["function"] = plain.describe()
    if x is None:
        compiled.value_bound = 2.0**12  # unknown: room for logits and standardised values
        return compiled
    original, approximate = plain(x), compiled.plain(x)
    compiled.value_bound = float(max(bound, np.abs(original).max(), np.abs(approximate).max()))
    compiled.meta["calibration_samples"] = len(x)
    compiled.meta["max_abs_error_vs_original"] = float(np.abs(original - approximate).max())
    if output == "value":
        spread = float(original.std()) or 1.0
        relative = compiled.meta["max_abs_error_vs_original"] / spread
        compiled.meta["max_relative_error_vs_original"] = relative
        failed = relative > max_relative_error
        detail = f"moves values by up to {relative:.1%} of their spread (allowed {max_relative_error:.1%})"
    else:
        agreement = float((_decisions(original, output) == _decisions(approximate, output)).mean())
        compiled.meta["agreement_vs_original"] = agreement
        failed = agreement < min_agreement
        detail = f"changes {1 - agreement:.1%} of the calibration decisions (allowed {1 - min_agreement:.1%})"
    if failed:
        worst = max(activations, key=lambda a: a.max_error)
        raise DataError(
            f"{worst.where}: a degree-{worst.degree} polynomial on "
            f"[{worst.low:.3g}, {worst.high:.3g}] errs by up to {worst.max_error:.3g} and {detail}; "
            f"raise the degree (up to {MAX_DEGREE}) or train with activation 'square'"
        )
    return compiled


def compile_run(run_dir: str | Path, *, degree: int = 2, calibration_samples: int = 4096) -> HEModel:
    """Compile a finished supervised run's model, calibrated on (up to ``calibration_samples`` of) its own training
    split; the class and feature names come with it for the client."""
    from tujie_core.run import load_run

    run = load_run(run_dir)
    info = run.splits.info
    output = {"binary": "logit", "multiclass": "logits"}.get(info.kind, "value")
    train = run.splits.train
    inputs = np.stack([train[i][0].numpy().reshape(-1) for i in range(min(len(train), calibration_samples))])
    meta = {
        "name": run.config.name,
        "source": str(run_dir),
        "class_names": list(info.class_names or []),
        "feature_names": list(info.feature_names or []),
    }
    try:
        plain = plain_model(run.task.model, output)
        scaling = run.model_config.get("input_standardization")
        if scaling is not None and plain.mean is None:
            # the data was standardised before the model: fold that in, so clients send raw features
            plain.mean, plain.std = np.asarray(scaling["mean"]), np.asarray(scaling["std"])
            inputs = inputs * plain.std + plain.mean
        return compile_model(plain, inputs, degree=degree, meta=meta)
    except DataError as exc:
        raise DataError(f"{run_dir}: {exc}") from None
