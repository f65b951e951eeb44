"""Medical imaging with tujie_health: synthetic 3D segmentation in the setting of MONAI's own integration test, and
MedMNIST classification (BreastMNIST, PneumoniaMNIST at 28×28).

1. **Synthetic 3D segmentation** (MONAI ``tests/integration/test_integration_segmentation_3d.py``): 40 volumes of
   128³ from ``create_test_image_3d`` (one foreground class), 20 train / 20 validation, resampled to
   ``[1.2, 0.8, 0.7]`` mm, min–max scaled, 4 random 96³ patches per volume around foreground/background, 90°
   rotations, a 3D UNet (16-32-64-128-256, strides 2, 2 residual units), Adam 5e-4, 6 epochs, batch 2 volumes;
   validation on whole volumes with 96³ sliding windows. Anchor: MONAI's best mean Dice 0.933. Goal ≥ 0.93.
   (Our loss is DiceCE, MONAI's test uses Dice; the metric is the same foreground Dice.)
2. **MedMNIST** (``$TUJIE_DATA_DIR/medmnist``): test ROC-AUC and accuracy on each file's official test split, at
   the decision threshold 0.5 (anchors from the MedMNIST v2 paper at 28×28: ResNet-18 and Google AutoML Vision).
   PneumoniaMNIST's train split here is partial (3,882 of 4,708 images; see its SOURCE.md).

    python benchmarks/health_imaging.py [--quick] [--json PATH] [--parts segmentation,medmnist] [--seeds 0,1,2]
        [--restore-prior]

``--quick``: 12 volumes of 64³ with 48³ patches for 2 epochs, and 3 MedMNIST epochs (≤ 2 min; not for figures).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Row, data_dir, parse_args, report

from tujie_core import train_from_config
from tujie_core.evaluate import ensemble_runs
from tujie_core.runs import parse_config

MEDMNIST = {  # file → (class names, ResNet-18 (28) AUC/ACC, AutoML Vision AUC/ACC), Yang et al. 2023, table 2
    "breastmnist": (["malignant", "normal or benign"], (0.901, 0.863), (0.919, 0.861)),
    "pneumoniamnist": (["normal", "pneumonia"], (0.944, 0.854), (0.991, 0.946)),
}
PAPER = "MedMNIST v2 (Yang et al. 2023), 28×28"


def segmentation_rows(out: Path, quick: bool) -> list[Row]:
    size, count, patch, epochs = (64, 12, 48, 2) if quick else (128, 40, 96, 6)
    config = parse_config(
        {
            "name": "seg3d",
            "output_dir": str(out),
            "data": {
                "name": "volumes",
                "synthetic": {"count": count, "size": size, "seed": 0},
                "spacing": [1.2, 0.8, 0.7],
                "patch_size": [patch] * 3,
                "samples_per_volume": 4,
                "flip": 0.0,
                "rotate90": 0.8,
                "val_fraction": 0.5,
                "batch_size": 2,
                "eval_batch_size": 1,
            },
            "model": {
                "name": "monai/UNet",
                "channels": [16, 32, 64, 128, 256],
                "strides": [2, 2, 2, 2],
                "num_res_units": 2,
            },
            "optimizer": {"name": "adam", "lr": 5e-4},
            "trainer": {"max_epochs": epochs, "progress": "none", "monitor": "val/dice", "mode": "max", "seed": 0},
        }
    )
    start = time.perf_counter()
    result = train_from_config(config)
    seconds = time.perf_counter() - start
    dice = result.metrics["val/dice"]
    name = f"synthetic 3D segmentation, {count} × {size}³, UNet"
    hd95 = result.metrics["val/hd95"]
    print(f"{name}: best val Dice {dice:.4f}, HD95 {hd95:.2f} voxels, {seconds:.0f} s", flush=True)
    anchor = "MONAI integration test (test_integration_segmentation_3d), best mean Dice"
    return [
        Row(name, "best val Dice", dice, 0.933, anchor, 0.93, True, ""),
        Row(name, "val HD95", hd95, None, "", None, False, "voxels"),
        Row(name, "train wall time", seconds, None, "", None, False, "s"),
    ]


# PneumoniaMNIST's train split here lacks 826 of the official 1,214 "normal" images; --restore-prior weights the
# classes by official / present counts (1214/388 for normal) so the loss sees the official class balance
RESTORED_PRIOR = {"pneumoniamnist": [1214 / 388, 1.0]}


def medmnist_run(
    path: Path, names: list[str], out: Path, epochs: int, seed: int, class_weights: list[float] | None = None
) -> tuple[dict[str, float], float, Path]:
    config: dict[str, Any] = {
        "name": path.stem,
        "output_dir": str(out),
        "data": {"name": "medical_images", "path": str(path), "class_names": names, "batch_size": 64},
        "model": {"name": "cnn", "channels": [32, 64, 128], "dropout": 0.3},
        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 0.05},
        "scheduler": {"name": "cosine", "warmup_steps": 50},
        "trainer": {"max_epochs": epochs, "progress": "none", "monitor": "val/roc_auc", "mode": "max", "seed": seed},
    }
    if class_weights is not None:
        config["task"] = {"name": "classification", "class_weights": class_weights}
    start = time.perf_counter()
    result = train_from_config(parse_config(config))
    return result.metrics, time.perf_counter() - start, result.run_dir


def medmnist_rows(root: Path, out: Path, quick: bool, seeds: list[int], restore_prior: bool = False) -> list[Row]:
    rows = []
    for stem, (names, resnet, automl) in MEDMNIST.items():
        aucs, accs, seconds, run_dirs = [], [], 0.0, []
        for seed in seeds[:1] if quick else seeds:
            weights = RESTORED_PRIOR.get(stem) if restore_prior else None
            metrics, took, run_dir = medmnist_run(
                root / "medmnist" / f"{stem}.npz", names, out / stem, 3 if quick else 40, seed, weights
            )
            aucs.append(metrics["test/roc_auc"])
            accs.append(metrics["test/accuracy"])
            seconds += took
            run_dirs.append(run_dir)
            print(f"{stem} seed {seed}: test AUC {aucs[-1]:.4f}, ACC {accs[-1]:.4f}, {took:.0f} s", flush=True)
        auc, acc = sum(aucs) / len(aucs), sum(accs) / len(accs)
        weighted = ", prior restored" if restore_prior and stem in RESTORED_PRIOR else ""
        label = f"{stem} (small CNN{weighted}, mean of {len(aucs)} seed(s))"
        rows += [
            Row(label, "test ROC-AUC", auc, resnet[0], f"{PAPER}: ResNet-18", resnet[0], True, ""),
            Row(label, "test accuracy", acc, resnet[1], f"{PAPER}: ResNet-18", resnet[1], True, ""),
            Row(label, "test ROC-AUC vs AutoML", auc, automl[0], f"{PAPER}: Google AutoML Vision", None, True, ""),
            Row(label, "test accuracy vs AutoML", acc, automl[1], f"{PAPER}: Google AutoML Vision", None, True, ""),
            Row(label, "train wall time", seconds, None, "", None, False, "s"),
        ]
        if len(run_dirs) > 1:  # the seeds' mean probability (core's ensemble_runs), a different model class
            ensemble = ensemble_runs(run_dirs)[0]["ensemble"]
            label = f"{stem} (ensemble of the {len(run_dirs)} small CNNs)"
            print(f"{stem} ensemble: test AUC {ensemble['test/roc_auc']:.4f}, ACC {ensemble['test/accuracy']:.4f}")
            rows += [
                Row(label, "test ROC-AUC", ensemble["test/roc_auc"], resnet[0], f"{PAPER}: ResNet-18", None, True, ""),
                Row(
                    label, "test accuracy", ensemble["test/accuracy"], resnet[1], f"{PAPER}: ResNet-18", None, True, ""
                ),
                Row(
                    label,
                    "test ROC-AUC vs AutoML",
                    ensemble["test/roc_auc"],
                    automl[0],
                    f"{PAPER}: AutoML",
                    None,
                    True,
                    "",
                ),
            ]
    return rows


def main() -> None:
    def options(parser) -> None:
        parser.add_argument("--parts", default="segmentation,medmnist")
        parser.add_argument("--seeds", default="0,1,2", help="MedMNIST seeds (the mean is reported)")
        parser.add_argument("--restore-prior", action="store_true", help="weight PneumoniaMNIST to its official prior")

    args = parse_args(__doc__.splitlines()[0], options)
    parts = args.parts.split(",")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "segmentation" in parts:
            rows += segmentation_rows(Path(tmp) / "seg", args.quick)
        if "medmnist" in parts:
            seeds = [int(s) for s in args.seeds.split(",")]
            rows += medmnist_rows(data_dir(), Path(tmp) / "medmnist", args.quick, seeds, args.restore_prior)
    report("health_imaging", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
