"""2D medical image classification data: MedMNIST ``.npz`` files (``train_images``, ``train_labels``, ``val_*``,
``test_*``) or synthetic lesion images, with MONAI array transforms for augmentation.

>>> splits = medical_images(path="breastmnist.npz", class_names=["malignant", "benign or normal"])  # doctest: +SKIP

Batches are ``(image, label)`` pairs, so a run uses the core classification task unchanged: ROC-AUC,
sensitivity/specificity, calibration, decision thresholds (``tujie evaluate --threshold-for recall=0.9``), the DP
plugin. Two classes make a binary task (one logit); labels of shape ``(N, K)`` with K > 1 make a multi-label one.
Augmentation (flips, small rotations and zooms) is seeded by (seed, epoch, image): resumes are exact.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import create_test_image_2d
from monai.transforms import Compose, RandFlip, RandRotate, RandZoom, Resize
from torch import Tensor
from torch.utils.data import Dataset

from tujie_core import DataError, DataInfo, DataSplits
from tujie_core.data import split_arrays
from tujie_health.imaging.data import item_seed


@dataclass
class Lesions:
    """Synthetic 2D scans: noisy tissue with or without a bright lesion (``prevalence`` of positives); the label is
    whether one is present. A stand-in for screening data, shipped so that everything runs offline."""

    count: int = 600
    size: int = 28
    prevalence: float = 0.4
    noise: float = 0.6
    seed: int = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.RandomState(self.seed)
        labels = (rng.rand(self.count) < self.prevalence).astype(np.int64)
        images = np.empty((self.count, self.size, self.size), np.float32)
        for i, positive in enumerate(labels):
            tissue, _ = create_test_image_2d(
                self.size,
                self.size,
                num_objs=8,
                rad_max=max(3, self.size // 5),
                rad_min=2,
                noise_max=self.noise,
                num_seg_classes=1,
                random_state=rng,
            )
            if positive:  # one small, brighter spot
                r = rng.randint(2, max(3, self.size // 8) + 1)
                y, x = rng.randint(r, self.size - r, size=2)
                yy, xx = np.ogrid[: self.size, : self.size]
                tissue = tissue * 0.6 + 0.8 * ((yy - y) ** 2 + (xx - x) ** 2 <= r * r)
            images[i] = tissue * 0.6
        return images, labels


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a MedMNIST-layout ``.npz`` (no pickle), each split's images and labels checked."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read the .npz ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if "train_images" not in arrays or "train_labels" not in arrays:
        raise DataError(f"{path}: needs train_images and train_labels (MedMNIST layout); has {', '.join(arrays)}")
    for split in ("train", "val", "test"):
        images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if (images is None) != (labels is None):
            raise DataError(f"{path}: {split}_images and {split}_labels come together")
        if images is None:
            continue
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise DataError(f"{path}: {split}_images must be (N, H, W) or (N, H, W, 1|3), got {images.shape}")
        if len(images) != len(labels):
            raise DataError(f"{path}: {len(images)} {split}_images but {len(labels)} {split}_labels")
    return arrays


def label_matrix(labels: np.ndarray, path: Path, split: str) -> np.ndarray:
    labels = labels.reshape(len(labels), -1)
    if not np.all(np.isfinite(labels)) or not np.array_equal(labels, labels.round()) or labels.min() < 0:
        raise DataError(f"{path}: {split}_labels must be whole numbers ≥ 0")
    return labels.astype(np.int64)


class Images(Dataset):
    """``(C, H, W)`` float images in [0, 1] and their labels; ``augment`` reseeded per (seed, epoch, index)."""

    def __init__(self, images: Tensor, labels: Tensor, augment: Compose | None = None, seed: int = 0) -> None:
        self.images, self.labels, self.augment, self.seed, self.epoch = images, labels, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.augment is not None:
            self.augment.set_random_state(seed=item_seed(self.seed, self.epoch, index))
            image = torch.as_tensor(self.augment(image)).float()
        return image, self.labels[index]


def image_tensor(images: np.ndarray, size: int | None) -> Tensor:
    x = torch.as_tensor(images.astype(np.float32))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if images.dtype == np.uint8 or (x.numel() and float(x.max()) > 1.0):
        x = x / 255.0
    if size is not None and tuple(x.shape[2:]) != (size, size):
        resize = Resize((size, size), mode="bilinear")
        x = torch.stack([torch.as_tensor(resize(img)) for img in x])
    return x


def medical_images(
    path: str | None = None,
    synthetic: dict[str, Any] | None = None,
    image_size: int | None = None,
    augment: bool = True,
    rotate_degrees: float = 15.0,
    class_names: list[str] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataSplits:
    """Medical images for a classification run (``data: {name: medical_images, path: breastmnist.npz}``).

    ``path``: a MedMNIST ``.npz`` (its val/test splits are used when present, else split off the training
    images, stratified); none: synthetic lesions (options in ``synthetic``: count, size, prevalence, noise, seed).
    ``image_size`` resizes; ``augment``: horizontal flips, rotations up to ``rotate_degrees`` and ±10 % zoom.
    """
    if path is None:
        spec = Lesions(**(synthetic or {}))
        images, labels = spec.arrays()
        arrays = {"train_images": images, "train_labels": labels}
        where, source = f"synthetic lesions ({spec.count} images, seed {spec.seed})", Path("synthetic")
        class_names = class_names or ["no lesion", "lesion"]
    else:
        if synthetic is not None:
            raise DataError("data.synthetic: only without data.path")
        source = Path(path).expanduser()
        arrays = read_npz(source)
        where = str(source)
    splits = {
        s: (arrays[f"{s}_images"], label_matrix(arrays[f"{s}_labels"], source, s))
        for s in ("train", "val", "test")
        if f"{s}_images" in arrays
    }
    if "val" not in splits or "test" not in splits:
        x, y = splits["train"]
        stratify = y.shape[1] == 1
        (tx, ty), (vx, vy), (sx, sy) = split_arrays(
            x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, stratify=stratify
        )
        splits = {"train": (tx, ty), "val": (vx, vy), "test": (sx, sy)} | {
            k: v for k, v in splits.items() if k != "train"
        }
    width = {y.shape[1] for _, y in splits.values()}
    if len(width) != 1:
        raise DataError(f"{source}: label columns differ between splits ({sorted(width)})")
    multilabel = width.pop() > 1
    top = max(int(y.max(initial=0)) for _, y in splits.values())
    if multilabel:
        if top > 1:
            raise DataError(f"{source}: multi-label columns must be 0/1, found {top}")
        num_classes = splits["train"][1].shape[1]
    else:
        num_classes = len(class_names) if class_names else top + 1
        if top >= num_classes:
            raise DataError(f"{source}: label {top} outside the {num_classes} class names")
    names = class_names or [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise DataError(f"data.class_names: {len(names)} names for {num_classes} classes")
    kind = "multilabel" if multilabel else ("binary" if num_classes == 2 else "multiclass")
    channels = {x.shape[-1] if x.ndim == 4 else 1 for x, _ in splits.values()}
    if len(channels) != 1:
        raise DataError(f"{source}: image channels differ between splits ({sorted(channels)})")
    transform = None
    if augment:
        transform = Compose(
            [
                RandFlip(prob=0.5, spatial_axis=1),
                RandRotate(range_x=np.deg2rad(rotate_degrees), prob=0.5, padding_mode="border"),
                RandZoom(min_zoom=0.9, max_zoom=1.1, prob=0.5, padding_mode="edge"),
            ]
        )

    def dataset(split: str, train: bool) -> Images | None:
        if split not in splits or len(splits[split][0]) == 0:
            return None
        x, y = splits[split]
        target = torch.as_tensor(y if multilabel else y[:, 0])
        target = target.float() if kind in ("binary", "multilabel") else target.long()
        return Images(image_tensor(x, image_size), target, transform if train else None, seed)

    train = dataset("train", True)
    assert train is not None
    info = DataInfo(kind, tuple(train.images.shape[1:]), 1 if kind == "binary" else num_classes, names, source=where)
    return DataSplits(train, dataset("val", False), dataset("test", False), info)
