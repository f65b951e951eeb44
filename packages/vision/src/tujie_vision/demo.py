"""The vision part of ``tujie demo``: the small CNN on the shipped digits (with an ONNX export), and YOLO11n
trained from scratch to find vehicles in freshly generated highway-env frames."""

from __future__ import annotations

from pathlib import Path

from tujie_core.demo import DemoResult


def vision_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    from tujie_core import load_config, train_from_config
    from tujie_vision.cli import bundled_config, bundled_detection_config
    from tujie_vision.export import export_run

    overrides = [f"output_dir={output_dir}"] + (["trainer.max_epochs=3"] if quick else ["trainer.max_epochs=15"])
    classified = train_from_config(load_config(bundled_config("digits_cnn"), overrides))
    metrics = {f"digits {k}": classified.metrics[k] for k in ("test/accuracy", "test/f1_macro", "test/ece")}
    exported = export_run(classified.run_dir, repeats=20)
    metrics["digits ONNX / PyTorch latency ×"] = exported.ratio
    detect = [f"output_dir={output_dir}"]
    if quick:
        detect += ["data.generate.frames=12", "data.generate.val_frames=4", "epochs=1", "imgsz=128"]
    else:
        detect += ["data.generate.frames=60", "data.generate.val_frames=20", "epochs=12", "imgsz=320"]
    detected = train_from_config(load_config(bundled_detection_config(), detect))
    metrics |= {f"vehicles {k}": detected.metrics[k] for k in ("val/mAP50", "val/mAP50-95")}
    notes = [
        f"classifier report: {classified.report}",
        f"ONNX: {exported.describe()}",
        f"detector report: {detected.report}",
    ]
    return DemoResult("vision: digits CNN + YOLO vehicles", metrics, classified.run_dir, notes)
