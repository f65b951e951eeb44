"""Image classification with tujie_vision: GTSRB (small CNN, ResNet, small ViT from scratch), transfer learning
across GTSRB's classes, and scikit-learn's digits.

1. **GTSRB** (``$TUJIE_DATA_DIR/gtsrb``: the first 4,000 official test images at 32×32, 43 classes), one fixed
   stratified split (70 / 15 / 15 %, seed 0): test accuracy of ch. 6's small CNN (core ``cnn``), ``timm/resnet10t``
   and a small ViT (``timm/vit_tiny_patch16_224`` with 4×4 patches, 4 blocks), all from random initialisation.
   Anchors (full 12,630-image test set at native resolution, Stallkamp et al. 2012): human 98.84 %, committee of
   CNNs 99.46 %. Goal ≥ 97 % on this subset.
2. **Transfer** (book ch. 14.3.1): the small CNN pre-trained on classes 0–20, then trained on classes 21–42 with 5,
   10 and 20 images per class, (a) from those weights (head alone for 10 epochs, then everything at 0.1× lr) and
   (b) from scratch, same images and epochs; accuracy on every held-out test image of classes 21–42.
3. **Digits** (scikit-learn's 1,797 8×8 images, shipped): the bundled default config (small CNN at 16×16). Goal
   ≥ 98.5 % test accuracy.

    python benchmarks/vision_classify.py [--quick] [--json PATH] [--parts gtsrb,transfer,digits]
        [--models cnn,resnet,vit]

``--quick``: few epochs, the CNN only, one shot count (≤ 2 min; not for the figures). Wall time per model is printed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import Row, data_dir, parse_args, report

from tujie_core import train_from_config
from tujie_core.runs import load_config, parse_config

HUMAN = (98.84, "Stallkamp et al. 2012: human, full GTSRB test set at native resolution")
COMMITTEE = (99.46, "Stallkamp et al. 2012: IDSIA committee of CNNs, full test set, native resolution")
FIRST_HALF = [str(c) for c in range(21)]
SECOND_HALF = [str(c) for c in range(21, 43)]
VIT = {"name": "timm/vit_tiny_patch16_224", "patch_size": 4, "depth": 4, "drop_path_rate": 0.1}


@dataclass
class Recipe:
    """One GTSRB model: its label, model section, epochs, data options, and whether the CNN teaches it."""

    label: str
    model: dict[str, Any]
    epochs: int
    data: dict[str, Any] = field(default_factory=dict)
    distil: bool = False


RECIPES: dict[str, Recipe] = {
    "cnn": Recipe("small CNN (core cnn 64-128-256)", {"name": "cnn", "channels": [64, 128, 256]}, 60),
    "resnet": Recipe("ResNet (timm/resnet10t)", {"name": "timm/resnet10t"}, 30),
    "vit": Recipe("ViT (timm/vit_tiny, patch 4, 4 blocks)", VIT, 30),
    "vit-strong": Recipe(
        "ViT, RandAugment + mixup/cutmix, 60 epochs", VIT, 60, {"augment": "randaugment", "mixup": 0.8, "cutmix": 1.0}
    ),
    "vit-distil": Recipe("ViT distilled from the small CNN (DeiT recipe)", VIT, 30, distil=True),
    "vit-distil-long": Recipe("ViT distilled from the small CNN, 60 epochs", VIT, 60, distil=True),
}


def gtsrb_data(root: Path, **extra: Any) -> dict[str, Any]:
    folder = root / "gtsrb" / "Final_Test"
    return {
        "name": "images",
        "path": str(folder / "GT-final_test_subset_00000-03999.csv"),
        "root": str(folder / "Images"),
        "path_column": "Filename",
        "label_column": "ClassId",
        "augment": "light",
        "batch_size": 64,
        "seed": 0,
        **extra,
    }


def run(
    data: dict[str, Any],
    model: dict[str, Any],
    epochs: int,
    out: Path,
    seed: int = 0,
    task: dict[str, Any] | None = None,
    **extra: Any,
):
    config = parse_config(
        {
            "name": "bench",
            "output_dir": str(out),
            "data": data,
            "model": model,
            "optimizer": {"name": "adamw", "lr": 3e-3 if model["name"] == "cnn" else 1e-3, "weight_decay": 0.05},
            "scheduler": {"name": "cosine", "warmup_steps": 50},
            "task": {"name": "classification", "label_smoothing": 0.1, **(task or {})},
            "trainer": {
                "max_epochs": epochs,
                "progress": "none",
                "monitor": "val/accuracy",
                "mode": "max",
                "seed": seed,
            },
            **extra,
        }
    )
    start = time.perf_counter()
    result = train_from_config(config)
    return result, time.perf_counter() - start


def gtsrb_rows(root: Path, out: Path, quick: bool, keys: list[str]) -> list[Row]:
    rows = []
    teacher: Path | None = None
    for key in ["cnn"] if quick else keys:
        recipe = RECIPES[key]
        task = None
        if recipe.distil:
            if teacher is None:  # the CNN of this invocation teaches; trained here when it was not asked for
                teacher = run(gtsrb_data(root), RECIPES["cnn"].model, RECIPES["cnn"].epochs, out)[0].run_dir
            task = {"name": "distillation", "teacher": str(teacher), "alpha": 0.5, "temperature": 2.0}
        result, seconds = run(
            gtsrb_data(root, **recipe.data), recipe.model, 3 if quick else recipe.epochs, out, task=task
        )
        if key == "cnn":
            teacher = result.run_dir
        accuracy = 100 * result.metrics["test/accuracy"]
        print(f"GTSRB {recipe.label}: {accuracy:.2f} % test accuracy, {seconds:.0f} s", flush=True)
        rows.append(
            Row(f"GTSRB 4k@32px: {recipe.label}", "test accuracy", accuracy, HUMAN[0], HUMAN[1], 97.0, True, "%")
        )
        rows.append(Row(f"GTSRB 4k@32px: {recipe.label}", "train wall time", seconds, None, "", None, False, "s"))
    rows.append(Row("GTSRB reference", "test accuracy", COMMITTEE[0], COMMITTEE[0], COMMITTEE[1], None, True, "%"))
    return rows


def transfer_rows(root: Path, out: Path, quick: bool) -> list[Row]:
    cnn = RECIPES["cnn"].model
    source, seconds = run(gtsrb_data(root, classes=FIRST_HALF), cnn, 3 if quick else 40, out / "source")
    print(f"transfer source: classes 0–20, {100 * source.metrics['test/accuracy']:.2f} %, {seconds:.0f} s")
    rows = []
    epochs = 4 if quick else 40
    for shots in [5] if quick else [5, 10, 20]:
        data = gtsrb_data(root, classes=SECOND_HALF, per_class=shots, batch_size=32)
        transfer = {"init": str(source.run_dir), "freeze_epochs": 1 if quick else 10, "backbone_lr_scale": 0.1}
        tuned, _ = run(data, cnn, epochs, out / f"tuned{shots}", transfer=transfer)
        scratch, _ = run(data, cnn, epochs, out / f"scratch{shots}")
        a, b = 100 * tuned.metrics["test/accuracy"], 100 * scratch.metrics["test/accuracy"]
        print(f"transfer {shots}/class: from classes 0–20 {a:.2f} %, from scratch {b:.2f} %")
        label = f"GTSRB classes 21–42, {shots} images/class"
        rows.append(Row(label, "accuracy, transferred", a, b, "ours from scratch, same images", None, True, "%"))
        rows.append(Row(label, "accuracy, from scratch", b, None, "", None, True, "%"))
    return rows


def digits_rows(out: Path, quick: bool) -> list[Row]:
    from tujie_vision.cli import bundled_config

    overrides = [f"output_dir={out}", "trainer.progress=none"] + (["trainer.max_epochs=3"] if quick else [])
    start = time.perf_counter()
    result = train_from_config(load_config(bundled_config("digits_cnn"), overrides))
    seconds = time.perf_counter() - start
    accuracy = 100 * result.metrics["test/accuracy"]
    print(f"digits: {accuracy:.2f} %, {seconds:.0f} s")
    return [
        Row("digits (sklearn, 8×8→16×16): small CNN", "test accuracy", accuracy, None, "", 98.5, True, "%"),
        Row("digits (sklearn, 8×8→16×16): small CNN", "train wall time", seconds, None, "", None, False, "s"),
    ]


def main() -> None:
    def options(parser) -> None:
        parser.add_argument("--parts", default="gtsrb,transfer,digits")
        parser.add_argument("--models", default="cnn,resnet,vit,vit-distil", help=f"GTSRB models: {', '.join(RECIPES)}")

    args = parse_args(__doc__.splitlines()[0], options)
    parts = args.parts.split(",")
    root = data_dir()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "digits" in parts:
            rows += digits_rows(out / "digits", args.quick)
        if "gtsrb" in parts:
            rows += gtsrb_rows(root, out / "gtsrb", args.quick, args.models.split(","))
        if "transfer" in parts:
            rows += transfer_rows(root, out / "transfer", args.quick)
    report("vision_classify", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
