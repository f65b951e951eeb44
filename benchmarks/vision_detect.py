"""Vehicle detection on generated driving scenes: YOLO11n trained from scratch through tujie's detection run, and
its CPU latency in PyTorch and ONNX Runtime.

1. **Accuracy**: the bundled detection config (``tujie_vision/configs/vehicles_yolo.yaml``): 200 highway-env
   frames (400×200, every vehicle labelled from simulator state) for training, 50 validation frames from episodes
   with other seeds; YOLO11n built from yaml (random init), 30 epochs at 416 px. mAP50 and mAP50-95 of the best
   weights on the validation frames, and on 50 more frames from unseen seeds at a denser traffic setting
   (``vehicles_density`` 2.5). Goal: mAP50 ≥ 0.95. Anchor: YOLO11n on COCO, mAP50-95 39.5 (80 classes of real
   photographs: not comparable, quoted for scale).
2. **Latency**: median batch-1 forward time at the training size, PyTorch (the fused model, as ultralytics
   predicts) against the ONNX export in ONNX Runtime, same CPU threads; parity of the raw outputs checked. Goal:
   ONNX ≤ 0.7× PyTorch. Anchor: ultralytics' YOLO11n CPU ONNX 56 ms at 640 px.

    python benchmarks/vision_detect.py [--quick] [--json PATH] [--epochs 30] [--frames 200]

``--quick``: 8 + 4 frames, 2 epochs at 128 px (a smoke test: the figures mean nothing).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import Row, parse_args, report

from tujie_core import train_from_config
from tujie_core.runs import load_config
from tujie_vision.cli import bundled_detection_config
from tujie_vision.detection import WEIGHTS, evaluate_weights
from tujie_vision.export import export_run
from tujie_vision.scenes import make_driving_data

COCO = (39.5, "ultralytics: YOLO11n on COCO val2017, mAP50-95 (real photos, 80 classes; for scale only)")
ONNX_640 = (56.1, "ultralytics: YOLO11n CPU ONNX latency at 640 px")


def options(parser) -> None:
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--frames", type=int, default=200)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        overrides = [f"output_dir={out}", f"epochs={2 if args.quick else args.epochs}"]
        overrides += [f"data.generate.frames={8 if args.quick else args.frames}"]
        overrides += ["data.generate.val_frames=4", "imgsz=128"] if args.quick else []
        config = load_config(bundled_detection_config(), overrides)
        start = time.perf_counter()
        result = train_from_config(config)
        seconds = time.perf_counter() - start
        name = f"YOLO11n from scratch, {config.data.generate.frames} frames, {config.epochs} epochs, {config.imgsz} px"
        m = result.metrics
        print(f"{name}: mAP50 {m['val/mAP50']:.3f}, mAP50-95 {m['val/mAP50-95']:.3f}, {seconds:.0f} s (incl. data)")
        rows.append(Row(f"{name}: held-out seeds", "mAP50", m["val/mAP50"], None, "", 0.95, True, ""))
        rows.append(
            Row(f"{name}: held-out seeds", "mAP50-95", m["val/mAP50-95"], COCO[0] / 100, COCO[1], None, True, "")
        )
        rows.append(Row(name, "train wall time (with data generation)", seconds, None, "", None, False, "s"))
        dense = make_driving_data(
            out / "dense", frames_count=1, val_frames=4 if args.quick else 50, seed=777, vehicles_density=2.5
        )
        d = evaluate_weights(result.run_dir / WEIGHTS / "best.pt", dense, "val", config.imgsz)
        print(f"denser traffic, unseen seeds: mAP50 {d['val/mAP50']:.3f}, mAP50-95 {d['val/mAP50-95']:.3f}")
        rows.append(
            Row(f"{name}: denser traffic (2.5), unseen seeds", "mAP50", d["val/mAP50"], None, "", None, True, "")
        )
        rows.append(
            Row(f"{name}: denser traffic (2.5), unseen seeds", "mAP50-95", d["val/mAP50-95"], None, "", None, True, "")
        )
        exported = export_run(result.run_dir, out / "yolo.onnx", repeats=10 if args.quick else 100)
        print(exported.describe())
        size = f"YOLO11n CPU batch 1 at {config.imgsz} px"
        rows.append(Row(size, "PyTorch latency", exported.torch_ms, None, "", None, False, "ms"))
        rows.append(Row(size, "ONNX Runtime latency", exported.onnx_ms, ONNX_640[0], ONNX_640[1], None, False, "ms"))
        rows.append(Row(size, "ONNX / PyTorch latency", exported.ratio, None, "", 0.7, False, "×"))
        rows.append(Row(size, "max abs diff, ONNX vs PyTorch", exported.max_abs_diff, None, "", 1e-3, False, ""))
    report("vision_detect", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
