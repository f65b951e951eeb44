"""Post-hoc probability calibration for classifiers, fitted on held-out predictions.

Temperature scaling (Guo et al. 2017) divides the logits by one fitted number: it keeps the ranking (ROC-AUC) and
fixes over- or under-confidence. A binary validation set the model separates perfectly leaves T at 1 (its NLL falls
without bound as T → 0, pushing probabilities to 0 and 1 that do not hold on new patients). Isotonic regression
(Zadrozny & Elkan 2002) fits a monotone map of binary probabilities: more flexible, needs more held-out data.
``calibration_scores`` gives ECE and the Brier score;
``plot_calibration`` a reliability diagram before and after.

>>> calibration = fit_calibration(val_probs, val_targets, "temperature")      # doctest: +SKIP
>>> calibration.apply(test_probs)                                              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression

from tujie_core.errors import ConfigError, DataError
from tujie_core.metrics import CalibrationBins
from tujie_core.report import reliability_axes

Method = Literal["none", "temperature", "isotonic"]
METHODS: tuple[str, ...] = ("none", "temperature", "isotonic")
EPS = 1e-7


@dataclass
class Calibration:
    """A fitted calibration map for binary probabilities ``(N,)`` of the positive class or multiclass ``(N, C)``."""

    method: Method = "none"
    temperature: float = 1.0
    knots_x: list[float] = field(default_factory=list)  # isotonic: increasing probabilities in ...
    knots_y: list[float] = field(default_factory=list)  # ... and the calibrated probabilities out

    def apply(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        if self.method == "none":
            return probs
        if self.method == "isotonic":
            return np.interp(probs, self.knots_x, self.knots_y)
        return _with_temperature(probs, self.temperature)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        if data.get("method", "none") not in METHODS:
            raise ConfigError(f"calibration.method: '{data.get('method')}' is not one of {', '.join(METHODS)}")
        return cls(**data)


def _logits(probs: np.ndarray) -> np.ndarray:
    clipped = np.clip(probs, EPS, 1 - EPS)
    return np.log(clipped / (1 - clipped)) if probs.ndim == 1 else np.log(clipped)


def _with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    scaled = _logits(probs) / temperature
    if probs.ndim == 1:
        return 1 / (1 + np.exp(-scaled))
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, targets: np.ndarray) -> float:
    clipped = np.clip(probs, EPS, 1 - EPS)
    if probs.ndim == 1:
        return float(-np.mean(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)))
    return float(-np.mean(np.log(clipped[np.arange(len(targets)), targets.astype(int)])))


def fit_calibration(probs: np.ndarray, targets: np.ndarray, method: Method = "temperature") -> Calibration:
    """Fit ``method`` on held-out ``probs`` (binary ``(N,)``, multiclass ``(N, C)``) and integer ``targets``."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets).reshape(-1)
    if method not in METHODS:
        raise ConfigError(f"calibration: '{method}' is not one of {', '.join(METHODS)}")
    if len(probs) != len(targets):
        raise DataError(f"calibration: {len(probs)} predictions but {len(targets)} targets")
    if method == "none":
        return Calibration()
    if len(np.unique(targets)) < 2:
        raise DataError("calibration: the held-out split has one class only; it cannot show miscalibration")
    if method == "isotonic":
        if probs.ndim != 1:
            raise ConfigError("calibration: isotonic regression is for binary classifiers; use temperature")
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs, targets.astype(float))
        return Calibration("isotonic", knots_x=iso.X_thresholds_.tolist(), knots_y=iso.y_thresholds_.tolist())
    if probs.ndim == 1 and probs[targets == 1].min() > probs[targets == 0].max():
        return Calibration("temperature", temperature=1.0)  # separated: no evidence for any temperature
    # NLL is convex in 1/T; search log T over [1/100, 100]
    found = minimize_scalar(
        lambda log_t: _nll(_with_temperature(probs, float(np.exp(log_t))), targets),
        bounds=(-np.log(100), np.log(100)),
        method="bounded",
    )
    return Calibration("temperature", temperature=float(np.exp(found.x)))


def calibration_scores(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    """Expected calibration error (15 equal-width bins, as the run metrics) and the Brier score."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets).reshape(-1)
    kind: Literal["binary", "multiclass"] = "binary" if probs.ndim == 1 else "multiclass"
    bins = CalibrationBins(kind, n_bins)
    bins.update(torch.as_tensor(probs), torch.as_tensor(targets))
    if kind == "binary":
        brier = float(np.mean((probs - targets) ** 2))
    else:
        onehot = np.eye(probs.shape[1])[targets.astype(int)]
        brier = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    return {"ece": float(bins.compute()), "brier": brier}


def plot_calibration(curves: dict[str, np.ndarray], targets: np.ndarray, n_bins: int = 10) -> Figure:
    """Reliability diagram of several probability sets (e.g. ``{"before": p, "after": q}``) on the same targets."""
    targets = np.asarray(targets).reshape(-1)
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for label, probs in curves.items():
        probs = np.asarray(probs, dtype=np.float64)
        kind: Literal["binary", "multiclass"] = "binary" if probs.ndim == 1 else "multiclass"
        bins = CalibrationBins(kind, n_bins)
        bins.update(torch.as_tensor(probs), torch.as_tensor(targets))
        table = bins.bins()
        used = table["count"].numpy() > 0
        ece = float(bins.compute())
        ax.plot(
            table["confidence"].numpy()[used],
            table["outcome"].numpy()[used],
            marker="o",
            label=f"{label} (ECE {ece:.3f})",
        )
    reliability_axes(ax, "predicted probability")
    return fig
