"""Datasets for the core trainer: bundled scikit-learn sets and a CSV/TSV loader for real tables.

A dataset builder returns :class:`DataSplits`: train/val/test torch datasets plus :class:`DataInfo`,
which tells the model builder the input shape and the task builder the kind of target.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sklearn import datasets as skdatasets
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from tujie_core.errors import DataError
from tujie_core.registry import Registry

TargetKind = Literal["binary", "multiclass", "multilabel", "regression"]
DATASETS: Registry = Registry("datasets")


@dataclass
class DataInfo:
    kind: TargetKind
    input_shape: tuple[int, ...]
    num_outputs: int
    class_names: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    source: str = ""
    task: str | None = None  # the task a run on this data takes when its config names none (e.g. segmentation)
    # arguments the data gives a model builder that accepts them (a config value wins), saved in the model spec:
    # e.g. the training split's feature mean/std for a standardisation inside the model
    model_args: dict[str, Any] = field(default_factory=dict)
    # what predicting on new raw records needs besides the weights (e.g. a table's column schema): written into
    # ``model/config.json`` beside the model spec
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSplits:
    """Train/val/test datasets, what they hold, how records become a batch and an optional ``collate`` for training
    batches only.

    ``batcher`` collates the records of every split (None: torch's default collate; a PyG ``Collater`` for graphs).
    ``collate`` replaces it for training batches (batch-level augmentation: mixup, cutmix). A collate whose
    ``mixes_samples`` is True lets one record change several training samples, which per-sample privacy (DP-SGD)
    refuses; its ``mixing`` and ``unmix`` attributes say how it mixes them and what setting stops it."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    info: DataInfo
    collate: Callable[[list[Any]], Any] | None = None
    batcher: Callable[[list[Any]], Any] | None = None

    def collate_fn(self, train: bool) -> Callable[[list[Any]], Any] | None:
        """The collate function of a training (``train``) or evaluation loader."""
        return (self.collate or self.batcher) if train else self.batcher


def split_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: bool,
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Split into train/val/test, stratified by class for classification; empty splits are allowed."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) and sum below 1"
        )
    parts = []
    rest_x, rest_y = x, y
    for fraction, remaining in ((test_fraction, 1.0), (val_fraction, 1.0 - test_fraction)):
        if fraction == 0:
            parts.append((rest_x[:0], rest_y[:0]))
            continue
        rest_x, part_x, rest_y, part_y = train_test_split(
            rest_x, rest_y, test_size=fraction / remaining, random_state=seed, stratify=rest_y if stratify else None
        )
        parts.append((part_x, part_y))
    test, val = parts
    return (rest_x, rest_y), val, test


def _tensor_splits(
    x: np.ndarray,
    y: np.ndarray,
    info: DataInfo,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    standardize: bool,
) -> DataSplits:
    classification = info.kind in ("binary", "multiclass")
    train, val, test = split_arrays(
        x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, stratify=classification
    )
    mean, std = (train[0].mean(0), train[0].std(0) + 1e-8) if standardize else (0.0, 1.0)
    if standardize:  # saved with the model (model/config.json): raw features can be scaled the same way later
        info.metadata = {**info.metadata, "input_standardization": {"mean": mean.tolist(), "std": std.tolist()}}
    target_dtype = torch.long if info.kind == "multiclass" else torch.float32

    def to_dataset(part: tuple[np.ndarray, np.ndarray]) -> TensorDataset | None:
        if len(part[0]) == 0:
            return None
        features = torch.as_tensor((part[0] - mean) / std, dtype=torch.float32).reshape(-1, *info.input_shape)
        return TensorDataset(features, torch.as_tensor(part[1], dtype=target_dtype))

    return DataSplits(to_dataset(train), to_dataset(val), to_dataset(test), info)


@DATASETS.register()
def digits(
    val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0, as_image: bool = False
) -> DataSplits:
    """scikit-learn's 1,797 8×8 handwritten digits (10 classes), bundled with scikit-learn."""
    bunch = skdatasets.load_digits()
    shape = (1, 8, 8) if as_image else (64,)
    info = DataInfo("multiclass", shape, 10, [str(c) for c in range(10)], source="sklearn.datasets.load_digits")
    return _tensor_splits(
        bunch.data / 16.0,
        bunch.target,
        info,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        standardize=False,
    )


@DATASETS.register()
def breast_cancer(val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> DataSplits:
    """Wisconsin breast-cancer diagnosis: 569 rows, 30 features, binary (1 = benign), bundled with scikit-learn."""
    bunch = skdatasets.load_breast_cancer()
    info = DataInfo(
        "binary",
        (30,),
        1,
        list(bunch.target_names),
        list(bunch.feature_names),
        source="sklearn.datasets.load_breast_cancer",
    )
    return _tensor_splits(
        bunch.data,
        bunch.target,
        info,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        standardize=True,
    )


@DATASETS.register()
def diabetes(val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> DataSplits:
    """Diabetes progression: 442 rows, 10 features, regression target (standardised), bundled with scikit-learn."""
    bunch = skdatasets.load_diabetes()
    y = (bunch.target - bunch.target.mean()) / bunch.target.std()
    info = DataInfo("regression", (10,), 1, [], list(bunch.feature_names), source="sklearn.datasets.load_diabetes")
    return _tensor_splits(
        bunch.data, y, info, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, standardize=True
    )


def parse_float(value: str, path: Path, row: int, column: str) -> float:
    """A CSV cell as a finite float; DataError naming the file, row and column otherwise."""
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{path}: row {row}, column '{column}': '{value}' is not a number") from None
    if not math.isfinite(number):
        raise DataError(f"{path}: row {row}, column '{column}': value '{value}' is not finite")
    return number


@DATASETS.register()
def table(
    path: Path,
    target: str,
    features: list[str] | None = None,
    kind: TargetKind | Literal["auto"] = "auto",
    delimiter: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    standardize: bool = True,
) -> DataSplits:
    """A CSV/TSV file of numeric features and one target column (the delimiter follows the file's ending).

    ``kind='auto'`` treats a target with only integer values and at most 20 distinct ones as classes,
    anything else as regression. Class labels may also be strings.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    delimiter = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = reader.fieldnames or []
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if target not in header:
        raise DataError(f"{path}: no column '{target}' (columns: {', '.join(header)})")
    features = features or [c for c in header if c != target]
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(missing)} (columns: {', '.join(header)})")
    if not rows:
        raise DataError(f"{path}: no data rows")
    x = np.empty((len(rows), len(features)), dtype=np.float64)
    labels: list[str] = []
    for i, row in enumerate(rows):
        line = i + 2  # header is line 1
        if None in row or any(row[c] is None for c in [*features, target]):
            raise DataError(f"{path}: row {line}: expected {len(header)} fields")
        x[i] = [parse_float(row[c], path, line, c) for c in features]
        if not row[target].strip():
            raise DataError(f"{path}: row {line}, column '{target}': empty target")
        labels.append(row[target].strip())
    numeric = all(_is_number(v) for v in labels)
    if kind == "auto":
        integral = numeric and all(float(v).is_integer() for v in labels)
        kind = "regression" if not integral or len(set(labels)) > 20 else "multiclass"
        if kind == "multiclass" and len(set(labels)) == 2:
            kind = "binary"
        if not numeric:
            kind = "binary" if len(set(labels)) == 2 else "multiclass"
    if kind == "regression":
        y = np.array([parse_float(v, path, i + 2, target) for i, v in enumerate(labels)])
        class_names: list[str] = []
        num_outputs = 1
    elif kind in ("binary", "multiclass"):
        class_names = sorted(set(labels), key=lambda v: (float(v), v) if numeric else (0.0, v))
        index = {name: i for i, name in enumerate(class_names)}
        y = np.array([index[v] for v in labels])
        if kind == "binary" and len(class_names) != 2:
            raise DataError(f"{path}: column '{target}' has {len(class_names)} classes, binary needs 2")
        num_outputs = 1 if kind == "binary" else len(class_names)
    else:
        raise DataError(f"{path}: kind '{kind}' is not supported for tables (use binary, multiclass, regression)")
    info = DataInfo(kind, (len(features),), num_outputs, class_names, features, source=str(path))
    return _tensor_splits(
        x, y, info, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, standardize=standardize
    )


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def dataset_targets(dataset: Dataset) -> np.ndarray:
    """Targets of a map-style ``(x, y)`` dataset: its ``targets`` array when it has one (graph datasets), read
    straight from a TensorDataset, else item by item."""
    if isinstance(getattr(dataset, "targets", None), np.ndarray):
        return dataset.targets  # type: ignore[attr-defined]
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy()
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset)[np.asarray(dataset.indices)]
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([dataset_targets(d) for d in dataset.datasets])
    return np.asarray([np.asarray(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def fold_splits(base: DataSplits, folds: int, stratified: bool, seed: int) -> list[DataSplits]:
    """``folds`` train/validation splits of ``base``'s train + validation data (its test split stays out);
    classification folds keep class proportions when ``stratified``."""
    parts = [d for d in (base.train, base.val) if d is not None]
    pool: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    targets = dataset_targets(pool)
    source = base.info.source
    if len(targets) < folds:
        raise DataError(f"data {source}: {len(targets)} samples cannot make {folds} folds")
    if stratified and base.info.kind in ("binary", "multiclass"):
        counts = np.bincount(targets.astype(int).reshape(-1))
        if counts[counts > 0].min() < folds:
            raise DataError(f"data {source}: a class has fewer than {folds} samples; use fewer folds")
        splitter: Any = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
    labels = targets if targets.ndim == 1 else np.zeros(len(targets))
    return [
        replace(base, train=Subset(pool, train_idx.tolist()), val=Subset(pool, val_idx.tolist()), test=None)
        for train_idx, val_idx in splitter.split(np.zeros(len(targets)), labels)
    ]
