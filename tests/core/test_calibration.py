"""Post-hoc calibration: temperature scaling and isotonic regression lower ECE without changing the ranking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tujie_core.calibration import Calibration, calibration_scores, fit_calibration, plot_calibration
from tujie_core.errors import ConfigError, DataError


def overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities; the 'model' reports those logits × 4 (far too sure)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, n)
    targets = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int)
    return 1 / (1 + np.exp(-4 * logits)), targets


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_calibration_lowers_ece_of_an_overconfident_model(method: str) -> None:
    probs, targets = overconfident()
    calibration = fit_calibration(probs[:2000], targets[:2000], method)
    before = calibration_scores(probs[2000:], targets[2000:])
    after = calibration_scores(calibration.apply(probs[2000:]), targets[2000:])
    assert before["ece"] > 0.1
    assert after["ece"] < before["ece"] / 3
    assert after["brier"] < before["brier"]


def test_temperature_recovers_the_scale_and_keeps_the_ranking() -> None:
    probs, targets = overconfident(20000)
    calibration = fit_calibration(probs, targets, "temperature")
    assert calibration.temperature == pytest.approx(4.0, rel=0.1)
    assert roc_auc_score(targets, calibration.apply(probs)) == pytest.approx(roc_auc_score(targets, probs))


def test_multiclass_temperature_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (3000, 3))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    targets = np.array([rng.choice(3, p=p) for p in true])
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    calibration = fit_calibration(sharp, targets, "temperature")
    assert calibration.temperature == pytest.approx(3.0, rel=0.15)
    calibrated = calibration.apply(sharp)
    np.testing.assert_allclose(calibrated.sum(1), 1.0)
    assert calibration_scores(calibrated, targets)["ece"] < calibration_scores(sharp, targets)["ece"]
    again = Calibration.from_dict(calibration.to_dict())
    np.testing.assert_array_equal(again.apply(sharp), calibrated)


def test_calibration_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(DataError, match="one class"):
        fit_calibration(np.array([0.2, 0.9]), np.array([1, 1]))
    with pytest.raises(ConfigError, match="binary"):
        fit_calibration(np.full((4, 3), 1 / 3), np.array([0, 1, 2, 0]), "isotonic")
    with pytest.raises(ConfigError, match="platt"):
        fit_calibration(np.array([0.2, 0.9]), np.array([0, 1]), "platt")  # type: ignore[arg-type]
    assert fit_calibration(np.array([0.2, 0.9]), np.array([0, 1]), "none").apply(np.array([0.3]))[0] == 0.3


def test_reliability_diagram_draws_each_curve() -> None:
    probs, targets = overconfident(500)
    fig = plot_calibration({"before": probs, "after": np.clip(probs, 0.2, 0.8)}, targets)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels[0].startswith("before (ECE") and labels[1].startswith("after (ECE")
    assert labels[-1] == "perfect calibration"


def test_a_perfectly_separated_validation_set_does_not_sharpen_to_certainty() -> None:
    """Plain NLL would push T towards 0 here (probabilities of 0 and 1); a separated set keeps T = 1."""
    targets = np.array([0] * 40 + [1] * 40)
    probs = np.r_[np.linspace(0.05, 0.4, 40), np.linspace(0.6, 0.95, 40)]
    calibration = fit_calibration(probs, targets, "temperature")
    assert calibration.temperature == 1.0
    np.testing.assert_allclose(calibration.apply(probs), probs)
