"""Medical image segmentation: MONAI networks from the core registry, the volumes dataset (files, DICOM series,
Decathlon json, synthetic), aligned augmentation, sliding windows, Dice/HD95, DiceCE, runs that resume exactly."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from safetensors.torch import load_file

from tujie_core import ConfigError, DataError, RunConfig, create_model, train_from_config
from tujie_health.imaging import Dice, Hausdorff95, SegmentationTask, volumes


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def write_dicom_series(folder: Path, volume: np.ndarray, spacing=(0.8, 0.6), thickness: float = 2.5) -> Path:
    """One CT slice per file along the first axis, as a scanner writes a series."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for k, plane in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = study, series, "CT", k + 1
        ds.Rows, ds.Columns = plane.shape
        ds.PixelSpacing, ds.SliceThickness = list(spacing), thickness
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, k * thickness], [1, 0, 0, 0, 1, 0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = plane.astype(np.int16).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return folder


def cube(shape=(12, 10, 8), box=(slice(3, 7), slice(2, 6), slice(2, 5))) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(shape, np.float32)
    label[box] = 1
    return (label * 100 + 10).astype(np.float32), label


def pair_folder(root: Path, count: int = 2, **kw) -> Path:
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        image, label = cube(**kw)
        write_nifti(root / "images" / f"case{i}.nii.gz", image)
        write_nifti(root / "labels" / f"case{i}.nii.gz", label)
    return root


# ---- networks ---------------------------------------------------------------------------------------------------
def test_monai_networks_are_sized_by_the_run() -> None:
    unet = create_model("monai/UNet", input_shape=(1, 32, 32, 32), num_outputs=3, channels=[4, 8], strides=[2])
    assert unet(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    flat = create_model("monai/UNet", input_shape=(2, 32, 32), num_outputs=2, channels=[4, 8], strides=[2])
    assert flat(torch.zeros(1, 2, 32, 32)).shape == (1, 2, 32, 32)
    segres = create_model("monai/SegResNet", input_shape=(1, 16, 16, 16), num_outputs=2, init_filters=8)
    assert segres(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
    small = {"feature_size": 4, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}
    unetr = create_model("monai/UNETR", input_shape=(1, 32, 32, 32), num_outputs=2, **small)
    assert unetr(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)  # img_size came from the patch
    with pytest.raises(ConfigError, match="not downloaded"):
        create_model("monai/DenseNet121", input_shape=(1, 32, 32), num_outputs=2, pretrained=True)
    with pytest.raises(ConfigError, match="did you mean 'SegResNet'"):
        create_model("monai/SegResnet", input_shape=(1, 32, 32), num_outputs=2)
    with pytest.raises(ConfigError, match=r"model\.in_channels: set by the run"):
        create_model("monai/UNet", input_shape=(1, 32, 32), num_outputs=2, in_channels=3, channels=[4], strides=[])


# ---- loss, metrics, sliding windows -----------------------------------------------------------------------------
def test_the_loss_is_dice_ce_and_per_case_losses_average_to_it() -> None:
    task = SegmentationTask(torch.nn.Identity(), num_classes=3)
    outputs, target = torch.randn(4, 3, 6, 6, 6), torch.randint(0, 3, (4, 1, 6, 6, 6)).float()
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(outputs, target)
    torch.testing.assert_close(task.loss(outputs, target), expected)
    per_case = task.sample_losses(outputs, target)
    assert per_case.shape == (4,)
    torch.testing.assert_close(per_case.mean(), expected)
    with pytest.raises(DataError, match="2 channels for 3 classes"):
        task.loss(outputs[:, :2], target)


def test_dice_and_hausdorff_of_perfect_and_shifted_masks() -> None:
    label = torch.zeros(2, 1, 16, 16, 16)
    label[:, :, 4:10, 4:10, 4:10] = 1
    perfect = torch.cat([1 - label, label], 1)
    dice, hd = Dice(2), Hausdorff95(2)
    dice.update(perfect, label)
    hd.update(perfect, label)
    assert float(dice.compute()) == pytest.approx(1.0) and float(hd.compute()) == pytest.approx(0.0)
    shifted = torch.roll(perfect, 3, dims=2)
    dice.reset(), hd.reset()
    dice.update(shifted, label)
    hd.update(shifted, label)
    assert float(dice.compute()) == pytest.approx(0.5) and float(hd.compute()) == pytest.approx(3.0)
    empty = Dice(3)  # class 2 absent from prediction and label: skipped, not counted as 0 or 1
    empty.update(torch.cat([1 - label, label, torch.zeros_like(label)], 1), label)
    assert float(empty.compute()) == pytest.approx(1.0) and int(empty.count) == 2


def test_evaluation_slides_windows_over_a_volume_larger_than_the_patch() -> None:
    seen: list[tuple[int, ...]] = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return torch.cat([x, -x], 1)

    task = SegmentationTask(Probe(), num_classes=2, input_shape=(1, 8, 8, 8))
    task.model.eval()
    volume = torch.randn(1, 1, 20, 13, 9)
    out = task.predict_step({"image": volume})
    assert out.shape == (1, 2, 20, 13, 9) and set(seen) == {(8, 8, 8)}
    torch.testing.assert_close(out, torch.cat([volume, -volume], 1).softmax(1), atol=1e-5, rtol=0)


# ---- data ---------------------------------------------------------------------------------------------------------
def test_patches_keep_image_and_label_aligned_and_are_a_function_of_seed_epoch_and_case() -> None:
    splits = volumes(
        synthetic={"count": 4, "size": 32, "objects": 4}, patch_size=[16, 16, 16], samples_per_volume=3, rotate90=0.8
    )
    assert splits.info.task == "segmentation" and splits.info.input_shape == (1, 16, 16, 16)
    assert splits.info.num_outputs == 2 and len(splits.train) == 3 and len(splits.val) == 1
    train = splits.train
    patches = train[0]
    assert len(patches) == 3
    for patch in patches:
        assert patch["image"].shape == patch["label"].shape == (1, 16, 16, 16)
        assert torch.equal(patch["image"] > 0, patch["label"] > 0)  # noise-free spheres: intensity ⇔ label
    again = train[0]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(patches, again, strict=True))
    train.set_epoch(1)
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(patches, train[0], strict=True))
    batch = splits.collate([train[0], train[1]])
    assert batch["image"].shape == (6, 1, 16, 16, 16) and splits.collate.mixes_samples


def test_nifti_files_are_reoriented_and_resampled(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    image, label = cube(shape=(10, 8, 6), box=(slice(0, 2), slice(0, 8), slice(0, 6)))  # first two rows
    flipped = np.diag([-2.0, 1.0, 1.0, 1.0])  # axis 0 runs right-to-left at 2 mm
    for name in ("a", "b"):
        write_nifti(root / "images" / f"{name}.nii.gz", image, flipped)
        write_nifti(root / "labels" / f"{name}.nii.gz", label, flipped)
    resample = {"spacing": [1.0, 1.0, 1.0], "orientation": "RAS", "patch_size": [8, 8, 6]}
    splits = volumes(source=str(root), val_fraction=0.5, **resample)
    volume = splits.val[0]
    assert volume["image"].shape == (1, 19, 8, 6)  # voxel centres 0–18 mm at 2 mm → 19 voxels of 1 mm
    rows = volume["label"][0, :, 0, 0]
    assert rows[-3:].eq(1).all() and rows[:-4].eq(0).all()  # RAS: the labelled rows moved to the end
    intensity = volume["image"][0, :, 0, 0]  # bilinear, so only the boundary row is in between
    assert intensity[-3:].gt(0.99).all() and intensity[:-4].lt(0.01).all()


def test_dicom_series_and_dataset_json_and_csv_sources(tmp_path: Path) -> None:
    volume = np.zeros((6, 12, 10), np.int16)
    volume[2:4, 3:9, 2:8] = 100
    for case in ("c1", "c2"):
        write_dicom_series(tmp_path / "dicom" / case / "image", volume + 20)
        write_dicom_series(tmp_path / "dicom" / case / "label", (volume > 0).astype(np.int16))
    rows = "image,label\n" + "".join(f"{c}/image,{c}/label\n" for c in ("c1", "c2"))
    (tmp_path / "dicom" / "cases.csv").write_text(rows)
    splits = volumes(source=str(tmp_path / "dicom" / "cases.csv"), patch_size=[8, 8, 4], val_fraction=0.5)
    loaded = splits.val[0]
    assert loaded["image"].shape == (1, 10, 12, 6)  # columns, rows, slices
    assert torch.equal(loaded["image"] > loaded["image"].min(), loaded["label"] > 0)

    pairs = pair_folder(tmp_path / "msd", count=3)
    entries = [{"image": f"./images/case{i}.nii.gz", "label": f"./labels/case{i}.nii.gz"} for i in range(3)]
    (pairs / "dataset.json").write_text(json.dumps({"training": entries, "labels": {"0": "background", "1": "tumour"}}))
    splits = volumes(source=str(pairs), patch_size=[8, 8, 4], val_fraction=0.34)
    assert splits.info.class_names == ["background", "tumour"] and len(splits.train) == 2


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("shape", r"b\.nii\.gz: label shape \(12, 10, 7\) differs"),
        ("spacing", r"a\.nii\.gz: no valid voxel spacing"),
        ("empty", r"b\.nii\.gz: empty label"),
        ("range", r"b\.nii\.gz: label value 3 outside the 2 classes"),
        ("truncated", r"a\.nii\.gz: cannot read image"),
        ("unpaired", r"c\.nii\.gz: no label with the same name"),
    ],
)
def test_bad_volumes_stop_with_one_line_naming_the_file(tmp_path: Path, case: str, message: str) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image, label = cube()
    for name in ("a", "b"):
        write_nifti(tmp_path / "images" / f"{name}.nii.gz", image)
        write_nifti(tmp_path / "labels" / f"{name}.nii.gz", label)
    bad_label = tmp_path / "labels" / "b.nii.gz"
    if case == "shape":
        write_nifti(bad_label, label[:, :, :7])
    elif case == "spacing":  # an ANALYZE-style header: neither qform nor sform, pixdim 0
        unplaced = nib.Nifti1Image(image, None)
        unplaced.header.set_zooms((0, 0, 0))
        unplaced.header.set_sform(None, code=0)
        unplaced.header.set_qform(None, code=0)
        nib.save(unplaced, str(tmp_path / "images" / "a.nii.gz"))
    elif case == "empty":
        write_nifti(bad_label, np.zeros_like(label))
    elif case == "range":
        write_nifti(bad_label, label * 3)
    elif case == "truncated":
        data = gzip.decompress((tmp_path / "images" / "a.nii.gz").read_bytes())
        (tmp_path / "images" / "a.nii.gz").write_bytes(gzip.compress(data[: len(data) // 3]))
    elif case == "unpaired":
        write_nifti(tmp_path / "images" / "c.nii.gz", image)
    spacing = [1.0, 1.0, 1.0] if case == "spacing" else None
    with pytest.raises(DataError, match=message) as error:
        volumes(source=str(tmp_path), patch_size=[8, 8, 4], num_classes=2, spacing=spacing, val_fraction=0.5)
    assert "\n" not in str(error.value)


# ---- runs ---------------------------------------------------------------------------------------------------------
def _run(tmp_path: Path, **extra) -> RunConfig:
    raw = {
        "name": "seg",
        "output_dir": str(tmp_path),
        "data": {
            "name": "volumes",
            "synthetic": {"count": 6, "size": 24, "objects": 4},
            "patch_size": [16, 16, 16],
            "batch_size": 2,
            "eval_batch_size": 1,
        },
        "model": {"name": "monai/UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1},
        "optimizer": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 2, "progress": "none", "monitor": "val/dice", "mode": "max"},
    }
    for key, value in extra.items():
        raw[key] = raw[key] | value if isinstance(value, dict) and key in raw else value
    return RunConfig.model_validate(raw)


def test_a_segmentation_run_learns_reports_and_resumes_exactly(tmp_path: Path) -> None:
    whole = train_from_config(_run(tmp_path / "whole", trainer={"max_epochs": 4}))
    assert whole.metrics["val/dice"] > 0.5 and whole.metrics["val/hd95"] >= 0
    assert "dice" in (whole.run_dir / "report.md").read_text()
    first = train_from_config(_run(tmp_path / "part", trainer={"max_epochs": 2}))
    resumed = train_from_config(_run(tmp_path / "part", trainer={"max_epochs": 4}), resume=first.run_dir)
    a = load_file(str(whole.run_dir / "model" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_dp_plugin_trains_a_segmentation_model_with_one_patch_per_volume(tmp_path: Path) -> None:
    pytest.importorskip("tujie_privacy")
    dp = [{"name": "dp", "epsilon": 8.0}]
    result = train_from_config(_run(tmp_path, data={"samples_per_volume": 1}, plugins=dp))
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert 0 < logged[-1]["dp/epsilon"] <= 8.0 and np.isfinite(result.metrics["val/dice"])
    with pytest.raises(ConfigError, match=r"2 patches of each volume.*samples_per_volume: 1"):
        train_from_config(_run(tmp_path, plugins=dp))
