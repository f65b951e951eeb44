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
        # from scratch YOLO needs steps more than pixels: 100 frames at 256 px in batches of 8, 20 epochs, one warm-up
        # epoch (0.72 mAP50 in 144 s on 2 cores; 60 frames × 12 epochs at 320 px in batches of 16 stayed at 0)
        detect += ["data.generate.frames=100", "data.generate.val_frames=20", "epochs=20", "imgsz=256", "batch=8"]
        detect += ["options.warmup_epochs=1", "options.close_mosaic=5"]
    detected = train_from_config(load_config(bundled_detection_config(), detect))
    metrics |= {f"vehicles {k}": detected.metrics[k] for k in ("val/mAP50", "val/mAP50-95")}
    notes = [
        f"classifier report: {classified.report}",
        f"ONNX: {exported.describe()}",
        f"detector report: {detected.report}",
    ]
    return DemoResult("vision: digits CNN + YOLO vehicles", metrics, classified.run_dir, notes)
