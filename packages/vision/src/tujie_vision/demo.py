"""The vision part of ``tujie demo``: the small CNN on the shipped digits (with an ONNX export), YOLO11n trained
from scratch to find vehicles in freshly generated highway-env frames, and a conditional GAN on the digits whose
samples the CNN is asked to recognise."""

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
    gan_overrides = [f"output_dir={output_dir}"] + (["epochs=3"] if quick else [])
    generated = train_from_config(load_config(bundled_config("digits_gan"), gan_overrides))
    metrics["GAN samples recognised by the CNN"] = recognised(generated.run_dir, classified.run_dir)
    notes = [
        f"classifier report: {classified.report}",
        f"ONNX: {exported.describe()}",
        f"detector report: {detected.report}",
        f"GAN report: {generated.report}",
    ]
    return DemoResult("vision: digits CNN + YOLO vehicles", metrics, classified.run_dir, notes)


def recognised(gan_run: Path, classifier_run: Path, per_class: int = 20) -> float:
    """The share of a GAN's samples (``per_class`` of each class, seed 1) that a classifier labels as the class
    they were drawn for: a check that the generator draws the class it is asked for."""
    from PIL import Image

    from tujie_vision.classifier import ImageClassifier
    from tujie_vision.gan import ConditionalGAN

    generator, judge = ConditionalGAN.load(gan_run), ImageClassifier.load(classifier_run)
    hits = 0
    for label in generator.class_names:
        samples = generator.sample(label, per_class, seed=1)
        images = [Image.fromarray(s[..., 0] if s.shape[-1] == 1 else s) for s in samples]
        hits += sum(p.label == label for p in judge.predict(images))
    return hits / (per_class * len(generator.class_names))
