"""The health part of ``tujie demo``: a 3D UNet segmenting synthetic volumes (Dice, HD95 on whole volumes), and
the same run exported as a MONAI Bundle."""

from __future__ import annotations

from pathlib import Path

from tujie_core.demo import DemoResult


def health_demo(output_dir: Path, quick: bool = False) -> DemoResult:
    from tujie_core import load_config, train_from_config
    from tujie_health.cli import bundled_config
    from tujie_health.imaging.bundle import export_bundle

    overrides = [f"output_dir={output_dir}"]
    if quick:
        overrides += ["data.synthetic={count: 6, size: 32, seed: 0}", "data.patch_size=[16,16,16]"]
        overrides += ["model.channels=[8,16]", "model.strides=[2]", "trainer.max_epochs=1"]
    else:
        overrides += ["trainer.max_epochs=4"]
    segmented = train_from_config(load_config(bundled_config(), overrides))
    bundle = export_bundle(segmented.run_dir, segmented.run_dir / "bundle")
    metrics = {f"segmentation {k}": segmented.metrics[k] for k in ("val/dice", "val/hd95")}
    notes = [f"segmentation report: {segmented.report}", f"MONAI Bundle: {bundle.folder}"]
    return DemoResult("health: 3D UNet on synthetic volumes", metrics, segmented.run_dir, notes)
