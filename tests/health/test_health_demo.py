"""The health part of ``tujie demo`` (quick): a segmentation run with its MONAI Bundle and a risk model."""

from __future__ import annotations

from pathlib import Path

from tujie_health.demo import health_demo


def test_quick_health_demo(tmp_path: Path) -> None:
    result = health_demo(tmp_path, quick=True)
    assert 0 <= result.metrics["segmentation val/dice"] <= 1 and result.metrics["segmentation val/hd95"] >= 0
    assert (result.run_dir / "bundle" / "configs" / "inference.json").is_file()
    assert any("MONAI Bundle" in note for note in result.notes)
    assert 0 <= result.metrics["lesions test/roc_auc"] <= 1 and any("lesion classifier" in n for n in result.notes)
    assert result.metrics["risk test/roc_auc"] > 0.9  # breast cancer is an easy table: 10 epochs reach ~0.99
    assert result.metrics["risk test/ece calibrated"] >= 0 and any("risk model report" in n for n in result.notes)
