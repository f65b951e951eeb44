"""The vision part of ``tujie demo`` (quick): a digits classifier with its ONNX export and a YOLO vehicle run."""

from __future__ import annotations

from pathlib import Path

from tujie_vision.demo import vision_demo


def test_quick_vision_demo(tmp_path: Path) -> None:
    result = vision_demo(tmp_path, quick=True)
    m = result.metrics
    assert m["digits test/accuracy"] > 0.8 and m["digits ONNX / PyTorch latency ×"] > 0
    assert 0 <= m["vehicles val/mAP50"] <= 1 and 0 <= m["vehicles val/mAP50-95"] <= m["vehicles val/mAP50"]
    assert (result.run_dir / "model" / "model.onnx").is_file()
    assert any("detector report" in note for note in result.notes) and any("GAN report" in n for n in result.notes)
    assert 0 <= m["GAN samples recognised by the CNN"] <= 1
