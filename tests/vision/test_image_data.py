"""The ``images`` dataset: folders, CSVs, MedMNIST npz, the digits; subsets, few-shot caps, mixup; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tujie_core import DATASETS, DataError


def images(**options):
    return DATASETS.create("images", where="data", **options)


def test_a_folder_of_class_folders_is_split_stratified(class_folder: Path) -> None:
    splits = images(path=class_folder, val_fraction=0.2, test_fraction=0.2)
    assert splits.info.class_names == ["circle", "square", "star"]
    assert splits.info.input_shape == (3, 12, 12) and splits.info.kind == "multiclass"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)
    x, y = splits.test[0]
    assert x.shape == (3, 12, 12) and x.min() >= -1.0 and x.max() <= 1.0 and y.dtype == torch.long
    assert np.bincount(splits.test.targets).tolist() == [2, 2, 2]


def test_train_val_test_subfolders_are_the_splits(tmp_path: Path, write_image) -> None:
    for split, count in (("train", 4), ("val", 2), ("test", 3)):
        for c, name in enumerate(["a", "b"]):
            for i in range(count):
                write_image(tmp_path / split / name / f"{i}.png", c, mode="L")
    splits = images(path=tmp_path, image_size=8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 6)
    assert splits.info.input_shape == (1, 8, 8)  # every image grayscale → one channel
    assert splits.info.kind == "binary" and splits.info.num_outputs == 1


def test_a_csv_of_paths_and_labels_with_a_root(tmp_path: Path, write_image) -> None:
    rows = ["Filename;ClassId"]
    for i in range(12):
        write_image(tmp_path / "Images" / f"{i:05d}.ppm", i % 3)
        rows.append(f"{i:05d}.ppm;{[0, 10, 2][i % 3]}")
    (tmp_path / "GT.csv").write_text("\n".join(rows) + "\n")
    splits = images(
        path=tmp_path / "GT.csv",
        root=tmp_path / "Images",
        path_column="Filename",
        label_column="ClassId",
        val_fraction=0.25,
        test_fraction=0.25,
        cache=False,
    )
    assert splits.info.class_names == ["0", "2", "10"]  # numeric order
    assert len(splits.train) == 6 and isinstance(splits.train.images, list)  # read from disk on access
    assert splits.train[0][0].shape == (3, 12, 12)


def test_medmnist_npz_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 10, 10), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, (n, 1))
    np.savez(tmp_path / "m.npz", **arrays)
    splits = images(path=tmp_path / "m.npz", class_names=["x", "y", "z"])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 6, 8)
    assert splits.info.input_shape == (1, 10, 10) and splits.info.class_names == ["x", "y", "z"]
    assert splits.train.targets.tolist() == arrays["train_labels"].reshape(-1).tolist()


def test_the_default_is_the_digits_and_subsets_keep_the_held_out_images() -> None:
    full = images(image_size=16)
    assert full.info.input_shape == (1, 16, 16) and full.info.num_outputs == 10
    low = images(classes=["0", "1", "2", "3", "4"])
    high = images(classes=["5", "6", "7", "8", "9"], per_class=3)
    assert low.info.class_names == ["0", "1", "2", "3", "4"] and high.info.num_outputs == 5
    assert np.bincount(high.train.targets).tolist() == [3] * 5
    assert len(low.test) + len(high.test) == len(full.test)  # the split is drawn before the subset


def test_mixup_makes_soft_targets_and_says_it_mixes_samples() -> None:
    splits = images(mixup=0.4, cutmix=1.0)
    assert splits.collate is not None and splits.collate.mixes_samples
    x, y = next(iter(DataLoader(splits.train, batch_size=9, collate_fn=splits.collate)))
    assert x.shape == (9, 1, 8, 8) and y.shape == (9, 10)
    assert torch.allclose(y.sum(1), torch.ones(9)) and (y.max(1).values < 1).any()
    with pytest.raises(DataError, match="mixup and cutmix need"):
        images(classes=["0", "1"], mixup=0.2)


def test_augmentation_changes_training_images_only() -> None:
    splits = images(augment="randaugment", val_fraction=0.2)
    torch.manual_seed(0)
    assert not torch.equal(splits.train[0][0], splits.train[0][0])
    assert torch.equal(splits.val[0][0], splits.val[0][0])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p, w: p.mkdir(), r"the folder is empty"),
        (lambda p, w: (p / "a").mkdir(parents=True), r"/a: no images in this class folder"),
        (
            lambda p, w: (w(p / "a" / "0.png", 0), (p / "a" / "1.png").write_bytes(b"junk")),
            r"a/1\.png: cannot read image",
        ),
        (
            lambda p, w: (w(p / "a" / "0.png", 0), w(p / "b" / "0.png", 1, size=(20, 12))),
            r"images differ in size .* set image_size",
        ),
    ],
)
def test_bad_folders_fail_naming_the_file(tmp_path: Path, write_image, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root, write_image)
    with pytest.raises(DataError, match=message):
        images(path=root)


def test_a_truncated_image_names_the_file(tmp_path: Path, write_image) -> None:
    for c in range(2):
        for i in range(4):
            write_image(tmp_path / "d" / str(c) / f"{i}.png", c)
    data = (tmp_path / "d" / "1" / "3.png").read_bytes()
    (tmp_path / "d" / "1" / "3.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"1/3\.png: cannot read image \(image file is truncated"):
        images(path=tmp_path / "d", val_fraction=0, test_fraction=0)


def test_bad_arrays_and_tables_fail_naming_the_field(tmp_path: Path) -> None:
    np.savez(tmp_path / "five.npz", images=np.zeros((4, 8, 8, 5), np.uint8), labels=np.zeros(4))
    with pytest.raises(DataError, match=r"five\.npz: images has shape \(4, 8, 8, 5\); .*1 or 3 channels"):
        images(path=tmp_path / "five.npz")
    np.savez(tmp_path / "range.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2, 5]))
    with pytest.raises(DataError, match=r"range\.npz: label 5 is outside the classes 0…2"):
        images(path=tmp_path / "range.npz", class_names=["a", "b", "c"])
    np.savez(tmp_path / "keys.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"expected arrays 'images' and 'labels' .*found x"):
        images(path=tmp_path / "keys.npz")
    (tmp_path / "t.csv").write_text("file,label\na.png,0\n")
    with pytest.raises(DataError, match=r"t\.csv: no column 'path' \(columns: file, label\)"):
        images(path=tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"t\.csv: row 2: .*a\.png: no such image file"):
        images(path=tmp_path / "t.csv", path_column="file")
    with pytest.raises(DataError, match=r"classes 11 not in the data"):
        images(classes=["11"])
