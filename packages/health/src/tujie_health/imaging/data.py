"""Segmentation data: volumes and label maps from NIfTI/DICOM files, a Decathlon ``dataset.json``, a folder of
image/label pairs, a CSV, or synthetic volumes (the shipped default), through MONAI dictionary transforms.

>>> splits = volumes(source="synthetic", patch_size=[48, 48, 48])                                  # doctest: +SKIP
>>> splits = volumes(source="Task09_Spleen/dataset.json", spacing=[1.5, 1.5, 2.0])                # doctest: +SKIP

Each record is read once, checked (image and label shapes agree, the voxel spacing is valid, the label is not
empty and its values name known classes), reoriented, resampled and scaled, and cached (in memory with MONAI's
``CacheDataset``, on disk with ``PersistentDataset``), so later epochs redo no I/O. Training samples are random
patches drawn around foreground and background voxels (``RandCropByPosNegLabeld``) with flips and 90° rotations;
their randomness is a function of (seed, epoch, record), so a resumed run draws exactly the same patches.
Validation and test volumes are whole (a task evaluates them with sliding windows). A bad file stops the build
with one line naming it.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset, create_test_image_2d, create_test_image_3d
from monai.data.utils import list_data_collate
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImage,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    ScaleIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from torch.utils.data import Dataset as TorchDataset

from tujie_core import DataError, DataInfo, DataSplits

KEYS = ("image", "label")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".tif", ".tiff")
Cache = Literal["memory", "disk", "none"]


# ---- records: where the volumes are ----------------------------------------------------------------------------
@dataclass
class Synthetic:
    """Random spheres (circles in 2D) on noise, MONAI's ``create_test_image_3d``/``_2d``; the same seed gives the
    same volumes. ``classes``: foreground classes (1: a binary mask). Radii default to MONAI's (5–30 voxels),
    capped at a quarter of ``size``."""

    count: int = 24
    size: int = 64
    spatial_dims: int = 3
    objects: int = 12
    radius_min: int | None = None
    radius_max: int | None = None
    noise: float = 0.0
    classes: int = 1
    seed: int = 0

    def labels(self) -> dict[str, str]:
        """Class names by label value: background, then foreground (or object 1, object 2, ...)."""
        objects = ["foreground"] if self.classes == 1 else [f"object{c}" for c in range(1, self.classes + 1)]
        return {str(c): name for c, name in enumerate(["background", *objects])}

    def records(self) -> list[dict[str, Any]]:
        if self.spatial_dims not in (2, 3) or self.count < 1 or self.classes < 1:
            raise DataError("data.synthetic: needs spatial_dims 2 or 3, count ≥ 1 and classes ≥ 1")
        rng = np.random.RandomState(self.seed)
        make = create_test_image_3d if self.spatial_dims == 3 else create_test_image_2d
        rad_max = self.radius_max or min(30, self.size // 4)
        rad_min = self.radius_min or min(5, max(1, rad_max // 2))
        out = []
        for i in range(self.count):
            sizes = (self.size,) * self.spatial_dims
            try:
                image, label = make(
                    *sizes,
                    num_objs=self.objects,
                    rad_max=rad_max,
                    rad_min=rad_min,
                    noise_max=self.noise,
                    num_seg_classes=self.classes,
                    random_state=rng,
                )
            except ValueError as exc:
                raise DataError(f"data.synthetic: {exc}") from None
            meta = {"filename_or_obj": f"synthetic-{i:03d}"}
            out.append(
                {
                    "image": MetaTensor(image[None].astype(np.float32), affine=torch.eye(4), meta=dict(meta)),
                    "label": MetaTensor(label[None].astype(np.float32), affine=torch.eye(4), meta=dict(meta)),
                    "name": meta["filename_or_obj"],
                }
            )
        return out


def volume_name(path: Path) -> str:
    """A scan's name without its image suffix (``case1.nii.gz`` → ``case1``)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_synthetic(folder: str | Path, spec: Synthetic | None = None, labels: dict[str, str] | None = None) -> Path:
    """Write synthetic volumes as a Decathlon-style dataset: ``imagesTr/``, ``labelsTr/`` (NIfTI) and
    ``dataset.json``; a folder any of this package's loaders (and MONAI's) reads like real data."""
    import nibabel as nib

    folder, spec = Path(folder), spec or Synthetic()
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for record in spec.records():
        name = f"{record['name']}.nii.gz"
        for key, sub in (("image", "imagesTr"), ("label", "labelsTr")):
            array = np.asarray(record[key][0], dtype=np.float32 if key == "image" else np.uint8)
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(folder / sub / name))
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    names = labels or spec.labels()
    meta = {"name": "synthetic", "description": f"tujie synthetic volumes, seed {spec.seed}", "labels": names}
    meta |= {"modality": {"0": "synthetic"}, "numTraining": len(entries), "training": entries}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return folder


def folder_records(root: Path) -> list[dict[str, Any]]:
    """``images/`` and ``labels/`` (or nnU-Net's ``imagesTr``/``labelsTr``) holding files (or DICOM series
    folders) with the same names."""
    for images_name, labels_name in (("images", "labels"), ("imagesTr", "labelsTr")):
        images, labels = root / images_name, root / labels_name
        if images.is_dir() and labels.is_dir():
            break
    else:
        raise DataError(f"{root}: expected images/ and labels/ folders (or imagesTr/ and labelsTr/), or dataset.json")
    by_name = {volume_name(p): p for p in sorted(labels.iterdir()) if not p.name.startswith(".")}
    records = []
    for image in sorted(p for p in images.iterdir() if not p.name.startswith(".")):
        label = by_name.get(volume_name(image))
        if label is None:
            raise DataError(f"{image}: no label with the same name in {labels}")
        records.append({"image": str(image), "label": str(label), "name": volume_name(image)})
    if not records:
        raise DataError(f"{images}: no images")
    return records


def decathlon_records(path: Path, split: str = "training") -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The Medical Segmentation Decathlon layout: ``dataset.json`` with ``training: [{image, label}]`` (paths
    relative to its folder) and ``labels: {"0": "background", ...}``."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the dataset description ({exc})") from None
    entries = meta.get(split) if isinstance(meta, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: no '{split}' list of {{image, label}} entries")
    records = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise DataError(f"{path}: {split}[{i}] needs 'image' and 'label'")
        image, label = ((path.parent / entry[key]).resolve() for key in KEYS)
        records.append({"image": str(image), "label": str(label), "name": volume_name(image)})
    labels = meta.get("labels") or {}
    return records, {str(k): str(v) for k, v in labels.items()}


def csv_records(path: Path) -> list[dict[str, Any]]:
    """A CSV with ``image`` and ``label`` columns (paths relative to the CSV's folder or absolute)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))} (need image,label)")
        records = []
        for row_number, row in enumerate(reader, start=2):
            if not row["image"] or not row["label"]:
                raise DataError(f"{path}: row {row_number}: empty image or label")
            image, label = (path.parent / row["image"], path.parent / row["label"])
            records.append({"image": str(image), "label": str(label), "name": volume_name(image)})
    if not records:
        raise DataError(f"{path}: no rows")
    return records


def file_records(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Records and class names (from dataset.json) of a labelled source: a Decathlon ``dataset.json`` (or a folder
    holding one), a CSV of image,label paths, or a folder of images/ + labels/."""
    if path.is_file() and path.suffix == ".json":
        return decathlon_records(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        return csv_records(path), {}
    if path.is_dir() and (path / "dataset.json").is_file():
        return decathlon_records(path / "dataset.json")
    if path.is_dir():
        return folder_records(path), {}
    raise DataError(f"{path}: not a dataset.json, a CSV of image,label paths, or a folder")


# ---- transforms ------------------------------------------------------------------------------------------------
class ReadVolumed(MapTransform):
    """Read each key's file (or DICOM series folder) with MONAI's ``LoadImage``, channel first; a file that
    cannot be read is a DataError naming it. Entries that are already arrays (synthetic data) pass through."""

    def __init__(self, keys: Sequence[str] = KEYS) -> None:
        super().__init__(keys)
        self.loader = LoadImage(image_only=True, ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            value = out[key]
            if isinstance(value, str | Path):
                if not Path(value).exists():
                    raise DataError(f"{value}: no such file or folder")
                try:
                    out[key] = self.loader(value)
                except Exception as exc:  # every reader's own error type: nibabel, pydicom, PIL, ITK
                    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    raise DataError(f"{value}: cannot read {key} ({reason[:200]})") from None
        return out


def _source(data: Mapping[Hashable, Any], key: str) -> str:
    value = data[key]
    meta = getattr(value, "meta", {}) or {}
    return str(meta.get("filename_or_obj") or data.get("name") or key)


def spacing_problem(volume: Any, spatial: int) -> str | None:
    """Why a volume's voxel spacing cannot be trusted, or None: a NIfTI header with neither qform nor sform (its
    pixdim is a guess; nibabel silently turns zeros into 1), a DICOM slice without PixelSpacing, or an affine
    whose spacing is zero or not finite."""
    meta = getattr(volume, "meta", None) or {}
    if "sform_code" in meta and "qform_code" in meta and int(meta["sform_code"]) == 0 == int(meta["qform_code"]):
        return "NIfTI qform_code and sform_code are both 0"
    if "00200037" in meta and "00280030" not in meta:  # DICOM orientation present, PixelSpacing missing
        return "DICOM PixelSpacing missing"
    affine = getattr(volume, "affine", None)
    if affine is None:
        return "no affine"
    block = np.asarray(affine, dtype=np.float64)[:spatial, :spatial]
    zooms = np.sqrt((block**2).sum(axis=0))
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        return f"spacing {zooms.round(4).tolist()}"
    return None


class CheckPaird(MapTransform):
    """Refuse, naming the file: image and label shapes that differ, a voxel spacing that is missing, zero or not
    finite (when ``spacing`` is needed), an empty label (when ``require_foreground``), label values that are not
    whole numbers in ``[0, num_classes)``."""

    def __init__(self, num_classes: int | None, need_spacing: bool, require_foreground: bool = True) -> None:
        super().__init__(KEYS)
        self.num_classes = num_classes
        self.need_spacing = need_spacing
        self.require_foreground = require_foreground

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        image, label = data["image"], data["label"]
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise DataError(
                f"{_source(data, 'label')}: label shape {tuple(label.shape[1:])} differs from the image's "
                f"{tuple(image.shape[1:])} ({_source(data, 'image')})"
            )
        if label.shape[0] != 1:
            raise DataError(f"{_source(data, 'label')}: a label map has one channel, this one has {label.shape[0]}")
        if self.need_spacing:
            for key in KEYS:
                problem = spacing_problem(data[key], image.ndim - 1)
                if problem:
                    raise DataError(
                        f"{_source(data, key)}: no valid voxel spacing in its header ({problem}); "
                        "fix the header or set data.spacing to null"
                    )
        values = torch.as_tensor(label).float()
        if not torch.isfinite(values).all() or not torch.equal(values, values.round()) or values.min() < 0:
            raise DataError(f"{_source(data, 'label')}: label values must be whole numbers ≥ 0")
        top = int(values.max())
        if self.num_classes is not None and top >= self.num_classes:
            raise DataError(
                f"{_source(data, 'label')}: label value {top} outside the {self.num_classes} classes "
                f"(0–{self.num_classes - 1})"
            )
        if self.require_foreground and top == 0:
            raise DataError(f"{_source(data, 'label')}: empty label (no foreground voxel)")
        return dict(data)


def preprocessing(
    keys: Sequence[str],
    *,
    spacing: Sequence[float] | None,
    orientation: str | None,
    intensity_range: Sequence[float] | None,
) -> Compose:
    """Orientation → spacing (labels nearest) → intensity (a CT window, or min–max to [0, 1]): what every volume
    gets before the network, in training and in prediction alike."""
    steps: list[Callable] = []
    if orientation:
        steps.append(Orientationd(keys=keys, axcodes=orientation))
    if spacing is not None:
        modes = ["nearest" if key == "label" else "bilinear" for key in keys]
        steps.append(Spacingd(keys=keys, pixdim=list(spacing), mode=modes, dtype=np.float32))
    if intensity_range is not None:
        a_min, a_max, b_min, b_max = intensity_range
        steps.append(ScaleIntensityRanged("image", a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True))
    else:
        steps.append(ScaleIntensityd("image"))
    return Compose(steps)


def deterministic_transforms(
    *,
    num_classes: int | None,
    spacing: Sequence[float] | None,
    orientation: str | None,
    intensity_range: Sequence[float] | None,
    patch_size: Sequence[int] | None,
) -> Compose:
    """Read → check → :func:`preprocessing` → pad to the patch → plain tensors (cached once per record)."""
    steps: list[Callable] = [ReadVolumed(), CheckPaird(num_classes, need_spacing=spacing is not None)]
    steps += preprocessing(KEYS, spacing=spacing, orientation=orientation, intensity_range=intensity_range).transforms
    if patch_size is not None:
        steps.append(SpatialPadd(keys=KEYS, spatial_size=list(patch_size)))
    steps.append(EnsureTyped(keys=KEYS, dtype=torch.float32, track_meta=False))
    return Compose(steps)


def augment_transforms(
    patch_size: Sequence[int], samples: int, positive: float, negative: float, flip: float, rotate90: float
) -> Compose:
    """Random patches around foreground/background voxels, then flips along every axis and 90° rotations."""
    steps: list[Callable] = [
        RandCropByPosNegLabeld(
            keys=KEYS,
            label_key="label",
            spatial_size=list(patch_size),
            pos=positive,
            neg=negative,
            num_samples=samples,
            allow_smaller=False,
        )
    ]
    if flip > 0:
        steps += [RandFlipd(keys=KEYS, prob=flip, spatial_axis=axis) for axis in range(len(patch_size))]
    if rotate90 > 0:
        steps.append(RandRotate90d(keys=KEYS, prob=rotate90, spatial_axes=(0, 1)))
    return Compose(steps)


# ---- datasets --------------------------------------------------------------------------------------------------
def item_seed(seed: int, epoch: int, index: int) -> int:
    """The random state of one item's augmentation: a function of (seed, epoch, index) only."""
    return zlib.crc32(f"{seed}/{epoch}/{index}".encode())


class AugmentedVolumes(TorchDataset):
    """Cached volumes with random patches drawn per item; the transforms' random state is reseeded from
    (seed, epoch, index) before every item, so the samples do not depend on workers or on a resume."""

    def __init__(self, base: TorchDataset, augment: Compose, seed: int) -> None:
        self.base, self.augment, self.seed, self.epoch = base, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        self.augment.set_random_state(seed=item_seed(self.seed, self.epoch, index))
        item = self.augment(dict(self.base[index]))
        return item if isinstance(item, list) else [item]


class PatchCollate:
    """MONAI's ``list_data_collate``: every patch of every volume becomes a row of the batch."""

    def __init__(self, samples_per_volume: int) -> None:
        self.samples_per_volume = samples_per_volume
        # several rows of one batch come from one patient: per-sample privacy (DP-SGD) would not bound them
        self.mixes_samples = samples_per_volume > 1
        self.mixing = f"{samples_per_volume} patches of each volume"
        self.unmix = "set data.samples_per_volume: 1"

    def __call__(self, items: list[list[dict[str, Any]]]) -> dict[str, Any]:
        return list_data_collate(items)


def cached(records: list[dict[str, Any]], transform: Compose, cache: Cache, cache_dir: str | None) -> TorchDataset:
    """The deterministic part, computed once: every record read and checked now, a bad one named."""
    try:
        if cache == "memory":
            return CacheDataset(records, transform, num_workers=0, progress=False, copy_cache=False)
        dataset = (
            PersistentDataset(records, transform, cache_dir=cache_dir, weights_only=True)
            if cache == "disk"
            else Dataset(records, transform)
        )
        for i in range(len(dataset)):  # read and check every file now (disk: fills the cache)
            dataset[i]
        return dataset
    except Exception as exc:
        raise unwrap_data_error(exc) from None


def unwrap_data_error(exc: BaseException) -> BaseException:
    """The DataError inside MONAI's ``applying transform`` wrappers, when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DataError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _split(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    order = np.random.RandomState(seed).permutation(n).tolist()
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if n - n_val - n_test < 1 or (val_fraction > 0 and n_val < 1):
        raise DataError(f"{n} volumes cannot be split into train/val/test at {val_fraction}/{test_fraction}")
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def volumes(
    source: str = "synthetic",
    synthetic: dict[str, Any] | None = None,
    patch_size: list[int] | None = None,
    samples_per_volume: int = 2,
    positive: float = 1.0,
    negative: float = 1.0,
    spacing: list[float] | None = None,
    orientation: str | None = None,
    intensity_range: list[float] | None = None,
    flip: float = 0.5,
    rotate90: float = 0.0,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    cache: Cache = "memory",
    cache_dir: str | None = None,
    val_fraction: float = 0.25,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> DataSplits:
    """Segmentation volumes for a run (``data: {name: volumes, ...}``).

    ``source``: ``synthetic`` (options in ``synthetic``: count, size, spatial_dims, objects, radius_min/max, noise,
    classes, seed), a Decathlon ``dataset.json``, a folder of ``images/`` + ``labels/``, or a CSV of image,label
    paths. ``patch_size``: training patches (default: 96³, or the synthetic size ¾, in 2D or 3D as the data);
    ``samples_per_volume`` patches per volume per epoch, centred on foreground with odds ``positive:negative``.
    ``spacing`` (mm, resampled to), ``orientation`` (axis codes such as ``RAS``) and ``intensity_range``
    (``[a_min, a_max, b_min, b_max]``, a CT window; default min–max scaling to [0, 1]). ``num_classes`` counts
    background (default: the dataset.json labels, else the largest label value + 1). ``cache``: ``memory``,
    ``disk`` (under ``cache_dir``) or ``none``.
    """
    names: dict[str, str] = {}
    if synthetic is not None and source != "synthetic":
        raise DataError("data.synthetic: only with source: synthetic")
    if source == "synthetic":
        spec = Synthetic(**(synthetic or {}))
        records, names = spec.records(), spec.labels()
        num_classes = num_classes or spec.classes + 1
        default_patch = [max(16, (spec.size * 3 // 4) // 16 * 16)] * spec.spatial_dims
        where = f"synthetic ({spec.count} volumes of {spec.size}^{spec.spatial_dims}, seed {spec.seed})"
    else:
        path = Path(source).expanduser()
        records, names = file_records(path)
        num_classes = num_classes or (len(names) if names else None)
        default_patch = None
        where = str(path)
    if samples_per_volume < 1:
        raise DataError(f"data.samples_per_volume must be ≥ 1, got {samples_per_volume}")
    base_transform = deterministic_transforms(
        num_classes=num_classes,
        spacing=spacing,
        orientation=orientation,
        intensity_range=intensity_range,
        patch_size=patch_size or default_patch,
    )
    base = cached(records, base_transform, cache, cache_dir)
    first = base[0]
    spatial_dims = first["image"].ndim - 1
    patch = list(patch_size or default_patch or [96] * spatial_dims)
    if len(patch) != spatial_dims:
        raise DataError(f"data.patch_size {patch} has {len(patch)} axes; the volumes have {spatial_dims}")
    if num_classes is None:
        num_classes = 1 + max(int(base[i]["label"].max()) for i in range(len(base)))
    channels = int(first["image"].shape[0])
    for i in range(len(base)):
        if int(base[i]["image"].shape[0]) != channels:
            raise DataError(f"{records[i]['name']}: {base[i]['image'].shape[0]} image channels, others {channels}")
    train_idx, val_idx, test_idx = _split(len(records), val_fraction, test_fraction, seed)
    augment = augment_transforms(patch, samples_per_volume, positive, negative, flip, rotate90)
    train = AugmentedVolumes(torch.utils.data.Subset(base, train_idx), augment, seed)
    val = torch.utils.data.Subset(base, val_idx) if val_idx else None
    test = torch.utils.data.Subset(base, test_idx) if test_idx else None
    labels = class_names or [names.get(str(c), str(c)) for c in range(num_classes)]
    if len(labels) != num_classes:
        raise DataError(f"data.class_names: {len(labels)} names for {num_classes} classes")
    info = DataInfo("multiclass", (channels, *patch), num_classes, labels, source=where, task="segmentation")
    return DataSplits(train, val, test, info, collate=PatchCollate(samples_per_volume))
