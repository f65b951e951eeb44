"""2D medical image classification data: MedMNIST .npz files (their own splits, label layouts), synthetic lesions,
augmentation seeded per (seed, epoch, image), and bad files named in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tujie_core import DataError
from tujie_health.imaging.classify import medical_images


def medmnist(path: Path, n: int = 40, rgb: bool = False, labels_2d: bool = True) -> Path:
    rng = np.random.RandomState(0)
    arrays = {}
    for split, count in (("train", n), ("val", n // 4), ("test", n // 4)):
        shape = (count, 28, 28, 3) if rgb else (count, 28, 28)
        arrays[f"{split}_images"] = rng.randint(0, 256, shape).astype(np.uint8)
        labels = np.arange(count) % 2
        arrays[f"{split}_labels"] = labels[:, None] if labels_2d else labels
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("labels_2d", [True, False])  # PneumoniaMNIST (N, 1), this BreastMNIST copy (N,)
def test_a_medmnist_file_keeps_its_splits_and_makes_a_binary_task(tmp_path: Path, labels_2d: bool) -> None:
    splits = medical_images(path=str(medmnist(tmp_path / "b.npz", labels_2d=labels_2d)), class_names=["m", "b"])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 10)
    assert splits.info.kind == "binary" and splits.info.num_outputs == 1 and splits.info.input_shape == (1, 28, 28)
    image, label = splits.val[0]
    assert image.dtype == torch.float32 and float(image.min()) >= 0 and float(image.max()) <= 1
    assert label.dtype == torch.float32 and float(label) in (0.0, 1.0)
    rgb = medical_images(path=str(medmnist(tmp_path / "c.npz", rgb=True)), image_size=32)
    assert rgb.info.input_shape == (3, 32, 32)


def test_augmentation_is_a_function_of_seed_epoch_and_image_and_evaluation_is_untouched() -> None:
    splits = medical_images(synthetic={"count": 60})
    first = [splits.train[i][0] for i in range(5)]
    assert all(torch.equal(a, splits.train[i][0]) for i, a in enumerate(first))
    splits.train.set_epoch(1)
    assert not all(torch.equal(a, splits.train[i][0]) for i, a in enumerate(first))
    assert torch.equal(splits.test[0][0], splits.test[0][0]) and splits.test.augment is None
    assert splits.info.class_names == ["no lesion", "lesion"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((4, 28, 28))}, "needs train_images and train_labels"),
        ({"train_images": np.zeros((4, 28, 28)), "train_labels": np.zeros(3)}, "4 train_images but 3 train_labels"),
        ({"train_images": np.zeros((4, 28, 28, 5)), "train_labels": np.zeros(4)}, r"\(N, H, W, 1\|3\)"),
        ({"train_images": np.zeros((4, 28, 28)), "train_labels": np.full(4, 0.5)}, "whole numbers"),
    ],
)
def test_bad_npz_files_are_named_in_one_line(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as error:
        medical_images(path=str(tmp_path / "bad.npz"))
    assert "bad.npz" in str(error.value) and "\n" not in str(error.value)
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(DataError, match=r"torn\.npz: cannot read"):
        medical_images(path=str(tmp_path / "torn.npz"))


def test_classify_images_train_threshold_evaluate_predict_explain(tujie, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.RandomState(1)
    arrays = {}
    for split, count in (("train", 120), ("val", 40), ("test", 40)):
        labels = np.arange(count) % 2
        images = rng.randint(0, 60, (count, 28, 28)).astype(np.float32)
        images[labels == 1, 10:18, 10:18] += 150  # positives carry a bright square
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images.astype(np.uint8), labels[:, None]
    np.savez(tmp_path / "toy.npz", **arrays)
    done = tujie(
        "health", "classify-images", "train", "--data", str(tmp_path / "toy.npz"), "--epochs", "6",
        "--target-sensitivity", "0.95", "-s", f"output_dir={tmp_path}", "-s", "model.channels=[8,16]", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "for sensitivity ≥ 0.95" in done.stdout
    run = next((tmp_path / "lesions-cnn").iterdir())
    done = tujie("health", "classify-images", "evaluate", str(run), str(tmp_path / "toy.npz"), cwd=tmp_path)
    assert done.returncode == 0 and "eval/roc_auc" in done.stdout, done.stderr
    roc = float(next(line for line in done.stdout.splitlines() if "eval/roc_auc" in line).split("│")[2])
    assert roc > 0.9

    arrays["test_images"] = arrays["test_images"].astype(np.float32)
    arrays["test_images"][3] = np.nan
    np.savez(tmp_path / "with_nan.npz", **arrays)
    out = tmp_path / "p.csv"
    nan_file = str(tmp_path / "with_nan.npz")
    done = tujie("health", "classify-images", "predict", str(run), nan_file, str(out), cwd=tmp_path)
    assert done.returncode == 0 and "predicted 39 image(s)" in done.stdout, done.stderr
    assert "3,image has NaN" in (tmp_path / "p.csv.rejects.csv").read_text()
    png = tmp_path / "why.png"
    done = tujie("health", "classify-images", "explain", str(run), str(tmp_path / "toy.npz"), str(png), cwd=tmp_path)
    assert done.returncode == 0 and Image.open(png).size == (224, 224), done.stderr
    done = tujie("health", "classify-images", "evaluate", str(run), str(tmp_path / "none.npz"), cwd=tmp_path)
    assert done.returncode == 2 and "none.npz: no such file" in done.stderr
