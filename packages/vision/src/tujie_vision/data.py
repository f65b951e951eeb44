"""Image datasets for core's supervised run: one registry entry, ``images``, reads a folder, a CSV or an ``.npz``.

>>> splits = DATASETS.create("images", path="data/signs", image_size=32, augment="light")   # doctest: +SKIP

- a folder: one sub-folder per class (torchvision's ImageFolder layout), or ``train/``, ``val/``, ``test/`` each
  laid out so (then those are the splits);
- a CSV/TSV with a path and a label column (``path_column``, ``label_column``; paths relative to ``root``, default
  the file's folder), e.g. GTSRB's ``GT-final_test.csv`` (``;``-separated ``Filename`` and ``ClassId``);
- an ``.npz`` of arrays: MedMNIST's ``train_images``/``train_labels``/``val_…``/``test_…``, or ``images``/``labels``;
- nothing (``path`` unset): scikit-learn's 1,797 8×8 digits, shipped with scikit-learn.

Pixels are scaled to [-1, 1] per channel (mean 0.5, std 0.5), the same for every source, so a saved model needs
only its input shape to preprocess a new image. Augmentation goes through timm's transform factory (``light``:
random resized crop and colour jitter; ``randaugment``: timm's RandAugment on top), horizontal flips only when
asked (``hflip``: a flipped sign or digit is another class). ``mixup``/``cutmix`` mix training batches with timm's
``Mixup`` (soft targets; DP-SGD refuses them). Splits not given by the source are drawn stratified with ``seed``,
before ``classes`` (keep only these, in this order) and ``per_class`` (at most N training images per class:
few-shot), so every subset of classes sees the same held-out images.

Bad input raises :class:`~tujie_core.DataError` with one line naming the file (and row): unreadable or truncated
images, empty folders, missing columns, labels outside the class range, arrays with a channel count other than 1
or 3.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sklearn import datasets as skdatasets
from timm.data import Mixup, create_transform
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from tujie_core import DataError, DataInfo, DataSplits
from tujie_core.data import split_arrays

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
MEAN, STD = 0.5, 0.5
SPLITS = ("train", "val", "test")
Augment = Literal["none", "light", "randaugment"]
RANDAUGMENT = "rand-m9-mstd0.5-mmax9-inc1"  # magnitude ≤ 9: at 10, posterize keeps 0 bits, which Pillow ≥ 13 refuses


# what Pillow raises on a file it cannot decode (ImportError: a format plugin missing, such as pi_heif)
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, ImportError, Image.DecompressionBombWarning)


@contextmanager
def opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` whose failures (missing, corrupt, truncated, a decompression bomb) are one DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except DataError:
        raise  # raised inside the block, already naming the file
    except UNREADABLE as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read image ({reason})") from None


def read_image(path: Path, channels: int) -> Image.Image:
    """The image at ``path``, decoded and converted to ``channels`` (1: grayscale, 3: RGB); DataError otherwise."""
    with opened(path) as image:
        image.load()
        return image.convert("L" if channels == 1 else "RGB")


def probe(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from an image's header, without decoding it."""
    with opened(path) as image:
        return image.mode, image.size


def image_transform(
    input_shape: Sequence[int], augment: Augment = "none", training: bool = False, hflip: float = 0.0
) -> Callable[[Image.Image], Tensor]:
    """timm's transform for ``(C, H, W)`` inputs: resize + centre crop at evaluation, augmentation in training."""
    channels = int(input_shape[0])
    stats = {"mean": (MEAN,) * channels, "std": (STD,) * channels, "interpolation": "bilinear"}
    shape = tuple(int(v) for v in input_shape)
    if not training or augment == "none":
        return create_transform(shape, is_training=False, crop_pct=1.0, **stats)
    return create_transform(
        shape,
        is_training=True,
        scale=(0.75, 1.0),
        ratio=(0.9, 1.1),
        hflip=hflip,
        color_jitter=0.2,
        auto_augment=RANDAUGMENT if augment == "randaugment" else None,
        **stats,
    )


class ImageDataset(Dataset):
    """Images with integer (or multi-label) targets: uint8 arrays ``(N, H, W, C)`` in memory, or files decoded on
    access; each goes through ``transform`` (a PIL image → a tensor)."""

    def __init__(
        self,
        images: np.ndarray | list[Path],
        targets: np.ndarray,
        channels: int,
        transform: Callable[[Image.Image], Tensor],
    ) -> None:
        self.images, self.targets, self.channels, self.transform = images, targets, channels, transform

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        item = self.images[index]
        if isinstance(item, Path):
            return read_image(item, self.channels)
        return Image.fromarray(item[..., 0] if self.channels == 1 else item)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        target = self.targets[index]
        dtype = torch.float32 if np.ndim(target) else torch.long
        return self.transform(self.image(index)), torch.as_tensor(target, dtype=dtype)


class MixupCollate:
    """Training batches mixed by timm's ``Mixup``/CutMix into soft targets. An odd last sample keeps its own
    (smoothed one-hot) target, since timm mixes pairs."""

    mixes_samples = True  # each mixed sample depends on two records: DP-SGD refuses this collate

    def __init__(self, mixup: float, cutmix: float, num_classes: int, label_smoothing: float = 0.0) -> None:
        self.mix = Mixup(
            mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
        )
        self.num_classes, self.label_smoothing = num_classes, label_smoothing

    def __call__(self, items: list[Any]) -> tuple[Tensor, Tensor]:
        x, y = default_collate(items)
        even = len(x) - len(x) % 2
        if even == 0:
            return x, self._one_hot(y)
        mixed_x, mixed_y = self.mix(x[:even].clone(), y[:even])
        return torch.cat([mixed_x, x[even:]]), torch.cat([mixed_y, self._one_hot(y[even:])])

    def _one_hot(self, y: Tensor) -> Tensor:
        off = self.label_smoothing / self.num_classes
        return torch.full((len(y), self.num_classes), off).scatter_(1, y.view(-1, 1), 1.0 - self.label_smoothing + off)


@dataclass
class Source:
    """What a reader found: images (files or a uint8 array ``(N, H, W, C)``), raw labels (class names, or a 0/1
    matrix for multi-label), the class names in label order, and fixed splits when the source has them."""

    images: np.ndarray | list[Path]
    labels: np.ndarray
    class_names: list[str]
    split_of: np.ndarray | None  # "train"/"val"/"test" per row, or None: draw the splits
    multilabel: bool = False


# ---- readers ---------------------------------------------------------------------------------------------------
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders (expected one sub-folder of images per class)")
    found = []
    for folder in classes:
        files = _image_files(folder)
        if not files:
            raise DataError(f"{folder}: no images in this class folder ({', '.join(IMAGE_SUFFIXES[:4])}, …)")
        found.append((folder.name, files))
    return found


def read_folder(root: Path) -> Source:
    if not any(root.iterdir()):
        raise DataError(f"{root}: the folder is empty")
    split_roots = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if "train" in split_roots:
        per_split = {s: _class_folders(r) for s, r in split_roots.items()}
    else:
        per_split = {"": _class_folders(root)}
    names = sorted({name for folders in per_split.values() for name, _ in folders})
    files, labels, splits = [], [], []
    for split, folders in per_split.items():
        for name, paths in folders:
            files += paths
            labels += [name] * len(paths)
            splits += [split] * len(paths)
    return Source(files, np.array(labels), names, np.array(splits) if "train" in split_roots else None)


def read_table(path: Path, path_column: str, label_column: str, root: Path | None, delimiter: str | None) -> Source:
    delimiter = delimiter or _sniff_delimiter(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = reader.fieldnames or []
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for column in (path_column, label_column):
        if column not in header:
            raise DataError(f"{path}: no column '{column}' (columns: {', '.join(header)})")
    if not rows:
        raise DataError(f"{path}: no data rows")
    base = root if root is not None else path.parent
    files, labels = [], []
    for line, row in enumerate(rows, 2):
        name, label = (row.get(path_column) or "").strip(), (row.get(label_column) or "").strip()
        if not name or not label:
            raise DataError(f"{path}: row {line}: empty '{path_column if not name else label_column}'")
        file = Path(name) if Path(name).is_absolute() else base / name
        if not file.is_file():
            raise DataError(f"{path}: row {line}: {file}: no such image file")
        files.append(file)
        labels.append(label)
    return Source(files, np.array(labels), _sorted_names(labels), None)


def _sniff_delimiter(path: Path) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    return max((",", ";", "\t"), key=first.count)


def _sorted_names(labels: Sequence[str]) -> list[str]:
    """Class names in numeric order when they are all integers (GTSRB's 0…42), else alphabetical."""
    unique = set(labels)
    if all(v.lstrip("-").isdigit() for v in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def read_npz(path: Path, class_names: list[str] | None) -> Source:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read arrays ({str(exc).splitlines()[0]})") from None
    prefixes = [s for s in SPLITS if f"{s}_images" in arrays] or [""]
    images, labels, splits = [], [], []
    for split in prefixes:
        key = f"{split}_images" if split else "images"
        label_key = f"{split}_labels" if split else "labels"
        if key not in arrays or label_key not in arrays:
            found = ", ".join(sorted(arrays)) or "none"
            raise DataError(f"{path}: expected arrays '{key}' and '{label_key}' (MedMNIST layout); found {found}")
        pixels, y = _as_images(arrays[key], path, key), np.asarray(arrays[label_key])
        if len(y) != len(pixels):
            raise DataError(f"{path}: {label_key} has {len(y)} rows but {key} has {len(pixels)}")
        images.append(pixels)
        labels.append(y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y)
        splits += [split] * len(y)
    y = np.concatenate(labels)
    multilabel = y.ndim == 2
    if y.ndim > 2 or not np.issubdtype(y.dtype, np.number) or (y.size and not np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{path}: labels must be integer class ids (N,) or a 0/1 matrix (N, labels)")
    width = y.shape[1] if multilabel else int(y.max()) + 1 if y.size else 0
    names = class_names or [str(i) for i in range(width)]
    if y.size and (y.min() < 0 or (not multilabel and y.max() >= len(names)) or (multilabel and width != len(names))):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{path}: label {bad} is outside the classes 0…{len(names) - 1}")
    labels_out = y.astype(np.float32) if multilabel else np.array([names[int(v)] for v in y])
    return Source(np.concatenate(images), labels_out, names, np.array(splits) if prefixes != [""] else None, multilabel)


def _as_images(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` with C = 1 or 3 from ``(N, H, W)``, ``(N, H, W, C)`` or float pixels in [0, 1]."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DataError(
            f"{path}: {key} has shape {array.shape}; expected (N, H, W) or (N, H, W, C) with 1 or 3 channels"
        )
    if array.dtype != np.uint8:
        peak = float(array.max()) if array.size else 0.0
        array = np.clip(array * (255.0 if peak <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    return array


def read_digits() -> Source:
    bunch = skdatasets.load_digits()
    pixels = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)[..., None]
    names = [str(c) for c in range(10)]
    return Source(pixels, np.array([names[t] for t in bunch.target]), names, None)


# ---- from a source to splits -----------------------------------------------------------------------------------
def _load_pixels(files: list[Path], channels: int, size: tuple[int, int]) -> np.ndarray:
    out = np.empty((len(files), size[0], size[1], channels), dtype=np.uint8)
    for i, file in enumerate(files):
        image = read_image(file, channels)
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        out[i] = np.asarray(image).reshape(size[0], size[1], channels)
    return out


def _shape_of(source: Source, channels: int | None, image_size: int | list[int] | None) -> tuple[int, int, int]:
    """(C, H, W): channels and size as asked, else from the data (all images must then share one size)."""
    if isinstance(source.images, np.ndarray):
        found_channels, sizes = source.images.shape[-1], {source.images.shape[1:3]}
        first = {source.images.shape[1:3]: "the arrays"}
    else:
        probes = [(probe(f), f) for f in source.images]
        found_channels = 1 if all(mode in GRAY_MODES for (mode, _), _ in probes) else 3
        first = {}
        for (_, (w, h)), f in probes:
            first.setdefault((h, w), f)
        sizes = set(first)
    if image_size is None and len(sizes) > 1:
        (a, fa), (b, fb) = list(first.items())[:2]
        raise DataError(f"images differ in size ({a[1]}×{a[0]} in {fa}, {b[1]}×{b[0]} in {fb}); set image_size")
    if isinstance(image_size, int):
        height, width = image_size, image_size
    elif image_size is not None:
        height, width = image_size
    else:
        height, width = next(iter(sizes))
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    return channels or found_channels, height, width


def _draw_splits(labels: np.ndarray, val: float, test: float, seed: int, stratify: bool) -> np.ndarray:
    index = np.arange(len(labels))
    try:
        parts = split_arrays(index, labels, val_fraction=val, test_fraction=test, seed=seed, stratify=stratify)
    except ValueError as exc:  # a class too small to stratify
        raise DataError(f"cannot split the images: {exc}; use smaller val/test fractions") from None
    split_of = np.empty(len(labels), dtype=object)
    for name, (rows, _) in zip(SPLITS, parts, strict=True):
        split_of[rows] = name
    return split_of


def images(
    path: Path | None = None,
    image_size: int | list[int] | None = None,
    channels: int | None = None,
    augment: Augment = "none",
    hflip: float = 0.0,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    mix_label_smoothing: float = 0.0,
    classes: list[str] | None = None,
    per_class: int | dict[str, int] | None = None,
    extra_train: Path | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    cache: bool = True,
    path_column: str = "path",
    label_column: str = "label",
    root: Path | None = None,
    delimiter: str | None = None,
    class_names: list[str] | None = None,
) -> DataSplits:
    """Images for classification from a folder, a CSV/TSV, an ``.npz`` or (``path`` unset) scikit-learn's digits;
    see the module doc. ``per_class``: at most N training images per class, or ``{class: N}`` for the named ones
    only (a rare class); ``extra_train``: more training images (a folder of class folders, e.g. GAN samples) added
    after the split and the caps; ``cache``: decode every file once into memory (and check it) instead of on each
    access; ``class_names``: names for an ``.npz``'s integer labels."""
    source = _read(path, path_column, label_column, root, delimiter, class_names)
    shape = _shape_of(source, channels, image_size)
    if cache and isinstance(source.images, list):
        source.images = _load_pixels(source.images, shape[0], shape[1:])
    elif isinstance(source.images, np.ndarray) and source.images.shape[1:] != (*shape[1:], shape[0]):
        source.images = _resized(source.images, shape)
    where = str(path) if path is not None else "sklearn.datasets.load_digits"
    split_of = source.split_of
    if split_of is None:
        stratify = not source.multilabel
        split_of = _draw_splits(
            source.labels if stratify else np.zeros(len(source.labels)), val_fraction, test_fraction, seed, stratify
        )
    names, keep = _select(source, classes, where)
    targets = _targets(source, names)
    rng = np.random.default_rng(seed)
    rows = {s: np.flatnonzero(keep & (split_of == s)) for s in SPLITS}
    if per_class is not None:
        if isinstance(per_class, dict) and not set(map(str, per_class)) <= set(names):
            raise DataError(
                f"{where}: per_class names classes not in the data: {sorted(set(map(str, per_class)) - set(names))}"
            )
        limits = {names.index(str(c)): n for c, n in per_class.items()} if isinstance(per_class, dict) else per_class
        rows["train"] = _cap(rows["train"], targets, limits, rng, source.multilabel)
    if extra_train is not None:
        source, targets, rows = _with_extra(source, targets, rows, Path(extra_train), names, shape)
    if len(rows["train"]) == 0:
        raise DataError(f"{where}: no training images left (classes, per_class or the split fractions)")
    kind = "multilabel" if source.multilabel else "binary" if len(names) == 2 else "multiclass"
    info = DataInfo(kind, shape, 1 if kind == "binary" else len(names), names, source=where)
    eval_transform = image_transform(shape)
    train_transform = image_transform(shape, augment, training=True, hflip=hflip)

    def subset(split: str, transform: Callable) -> ImageDataset | None:
        chosen = rows[split]
        if len(chosen) == 0:
            return None
        pixels = source.images[chosen] if isinstance(source.images, np.ndarray) else [source.images[i] for i in chosen]
        return ImageDataset(pixels, targets[chosen], shape[0], transform)

    collate = None
    if mixup > 0 or cutmix > 0:
        if kind != "multiclass":
            raise DataError(f"{where}: mixup and cutmix need more than two single-label classes; this data is {kind}")
        collate = MixupCollate(mixup, cutmix, len(names), mix_label_smoothing)
    return DataSplits(
        subset("train", train_transform), subset("val", eval_transform), subset("test", eval_transform), info, collate
    )


def _read(
    path: Path | None,
    path_column: str,
    label_column: str,
    root: Path | None,
    delimiter: str | None,
    class_names: list[str] | None,
) -> Source:
    if path is None:
        return read_digits()
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path, class_names)
    if suffix in (".csv", ".tsv", ".tab", ".txt"):
        return read_table(path, path_column, label_column, root, delimiter)
    raise DataError(f"{path}: expected a folder of class folders, a .csv/.tsv of path,label rows or an .npz")


def _resized(pixels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    channels, height, width = shape
    out = np.empty((len(pixels), height, width, channels), dtype=np.uint8)
    for i, item in enumerate(pixels):
        image = Image.fromarray(item[..., 0] if item.shape[-1] == 1 else item)
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        out[i] = np.asarray(image).reshape(height, width, channels)
    return out


def _select(source: Source, classes: list[str] | None, where: str) -> tuple[list[str], np.ndarray]:
    """The class names kept (``classes``, in its order) and which rows belong to them."""
    if classes is None:
        return source.class_names, np.ones(len(source.labels), dtype=bool)
    classes = [str(c) for c in classes]
    unknown = [c for c in classes if c not in source.class_names]
    if unknown:
        raise DataError(f"{where}: classes {', '.join(unknown)} not in the data (it has {len(source.class_names)})")
    if source.multilabel:
        raise DataError(f"{where}: 'classes' selects single-label classes; this data is multi-label")
    return classes, np.isin(source.labels, classes)


def _targets(source: Source, names: list[str]) -> np.ndarray:
    if source.multilabel:
        return source.labels
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(str(label), -1) for label in source.labels], dtype=np.int64)


def _cap(
    rows: np.ndarray, targets: np.ndarray, limit: int | dict[int, int], rng: np.random.Generator, multilabel: bool
) -> np.ndarray:
    """Training rows with at most ``limit`` per class (a dict: only for the classes it names)."""
    limits = limit if isinstance(limit, dict) else dict.fromkeys(np.unique(targets[rows]).tolist(), limit)
    if any(n < 1 for n in limits.values()):
        raise DataError(f"per_class must be at least 1, got {limit}")
    if multilabel:
        raise DataError("per_class needs single-label classes")
    kept = [
        rng.permutation(rows[targets[rows] == c])[: limits[c]] if c in limits else rows[targets[rows] == c]
        for c in np.unique(targets[rows])
    ]
    return np.sort(np.concatenate(kept))


def _with_extra(
    source: Source,
    targets: np.ndarray,
    rows: dict[str, np.ndarray],
    extra_path: Path,
    names: list[str],
    shape: tuple[int, int, int],
) -> tuple[Source, np.ndarray, dict[str, np.ndarray]]:
    """``source`` with the images of ``extra_path`` appended as training rows (their classes must be ``names``)."""
    extra = _read(extra_path, "path", "label", None, None, names)
    if extra.multilabel or source.multilabel:
        raise DataError(f"{extra_path}: extra_train takes single-label images")
    unknown = sorted(set(map(str, extra.labels)) - set(names))
    if unknown:
        raise DataError(f"{extra_path}: classes {', '.join(unknown[:5])} are not classes of the data")
    if isinstance(source.images, np.ndarray):
        pixels = (
            extra.images if isinstance(extra.images, np.ndarray) else _load_pixels(extra.images, shape[0], shape[1:])
        )
        if pixels.shape[1:] != (*shape[1:], shape[0]):
            pixels = _resized(pixels, shape)
        images: np.ndarray | list[Path] = np.concatenate([source.images, pixels])
    elif isinstance(extra.images, list):
        images = [*source.images, *extra.images]
    else:
        raise DataError(f"{extra_path}: arrays can be added to images in memory only; set cache: true")
    index = {name: i for i, name in enumerate(names)}
    added = np.array([index[str(v)] for v in extra.labels], dtype=np.int64)
    train = np.concatenate([rows["train"], np.arange(len(targets), len(targets) + len(added))])
    merged = Source(images, np.concatenate([source.labels, extra.labels]), source.class_names, None)
    return merged, np.concatenate([targets, added]), {**rows, "train": train}
