"""Patient tables for risk models: a CSV of one row per patient, or scikit-learn's breast-cancer and diabetes sets.

>>> splits = patients()                                                         # breast cancer, malignant = positive
>>> splits = patients("cohort.csv", target="readmitted", impute="median")      # doctest: +SKIP

Each column becomes model inputs through a :class:`TableSchema` fitted on the training rows only: numeric columns
pass through, non-numeric ones are one-hot encoded (``name=value``), and a missing cell (empty, ``NA``, ``NaN``,
``?``) is either refused, naming the file, row and column (the default: a silent fill can hide a data problem), or
filled with the training split's mean, median or most frequent value (``impute``). The schema is saved with the
model (``model/config.json``), so new patients are encoded exactly as the training ones were. Standardisation is
part of the model itself (``input_mean``/``input_std``, from the training split), so the model takes the encoded
raw vector.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sklearn import datasets as skdatasets
from sklearn.model_selection import KFold, StratifiedKFold
from torch.utils.data import TensorDataset

from tujie_core import DataError, DataInfo, DataSplits
from tujie_core.data import split_arrays

Impute = Literal["refuse", "mean", "median", "most_frequent"]
Kind = Literal["auto", "binary", "multiclass", "regression"]
MISSING = frozenset({"", "na", "n/a", "nan", "null", "?"})  # not "none": a real category in many tables
MAX_CATEGORIES = 50
SHIPPED = ("breast_cancer", "diabetes")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


def _number(value: Any) -> float | None:
    """The value as a finite float, or None when it is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Column:
    """One input column: numeric, or categorical with its one-hot ``categories``; ``fill`` replaces a missing cell
    (None: a missing cell is an error)."""

    name: str
    kind: Literal["numeric", "categorical"]
    fill: float | str | None = None
    categories: list[str] = field(default_factory=list)

    @property
    def encoded_names(self) -> list[str]:
        return [self.name] if self.kind == "numeric" else [f"{self.name}={c}" for c in self.categories]


@dataclass
class TableSchema:
    """How raw patient records become model inputs, and what the target means."""

    columns: list[Column]
    target: str
    kind: Literal["binary", "multiclass", "regression"]
    class_names: list[str] = field(default_factory=list)  # binary: [negative, positive]
    impute: Impute = "refuse"

    @property
    def feature_names(self) -> list[str]:
        return [name for column in self.columns for name in column.encoded_names]

    def encode_row(self, row: Mapping[str, Any], where: str) -> np.ndarray:
        """One record as the model's input vector; DataError naming ``where`` (file and row) and the column."""
        values: list[float] = []
        for column in self.columns:
            if column.name not in row:
                raise DataError(f"{where}: no column '{column.name}'")
            cell = row[column.name]
            if _missing(cell):
                if column.fill is None:
                    raise DataError(
                        f"{where}, column '{column.name}': missing value (the model was trained with impute: "
                        f"{self.impute}; fill it, or train with impute: mean, median or most_frequent)"
                    )
                cell = column.fill
            if column.kind == "numeric":
                number = _number(cell)
                if number is None:
                    raise DataError(f"{where}, column '{column.name}': '{cell}' is not a finite number")
                values.append(number)
            else:
                text = str(cell).strip()
                if text not in column.categories:
                    raise DataError(
                        f"{where}, column '{column.name}': unknown category '{text}' (known: "
                        f"{', '.join(column.categories)})"
                    )
                values += [float(text == c) for c in column.categories]
        return np.asarray(values, dtype=np.float32)

    def encode(self, rows: Sequence[Mapping[str, Any]], where: str, first_row: int = 2) -> np.ndarray:
        """Every record, or DataError at the first bad one (rows numbered as lines of a CSV with a header)."""
        return np.stack([self.encode_row(r, f"{where}: row {i}") for i, r in enumerate(rows, first_row)])

    def target_value(self, row: Mapping[str, Any], where: str) -> float:
        """The encoded target of a labelled record (class index, or the number for regression)."""
        cell = row.get(self.target)
        if _missing(cell):
            raise DataError(f"{where}, column '{self.target}': missing target")
        if self.kind == "regression":
            number = _number(cell)
            if number is None:
                raise DataError(f"{where}, column '{self.target}': '{cell}' is not a finite number")
            return number
        text = _label(cell)
        if text not in self.class_names:
            raise DataError(f"{where}, column '{self.target}': unknown class '{text}' ({', '.join(self.class_names)})")
        return float(self.class_names.index(text))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSchema:
        fields = dict(data)
        fields["columns"] = [Column(**c) for c in fields["columns"]]
        return cls(**fields)


def _label(cell: Any) -> str:
    """A class label as text; 1.0 and 1 are the same class."""
    number = _number(cell)
    return str(int(number)) if number is not None and number.is_integer() else str(cell).strip()


def fit_schema(
    rows: Sequence[Mapping[str, Any]],
    features: Sequence[str],
    target: str,
    kind: Literal["binary", "multiclass", "regression"],
    class_names: list[str],
    categorical: Sequence[str] | None,
    impute: Impute,
    where: str,
) -> TableSchema:
    """Column types, fill values and categories from the training ``rows``."""
    columns = []
    for name in features:
        cells = [r[name] for r in rows if not _missing(r[name])]
        if not cells:
            raise DataError(f"{where}: column '{name}' has no value in the training rows")
        numeric = all(_number(c) is not None for c in cells)
        is_categorical = name in categorical if categorical is not None else not numeric
        if not is_categorical and not numeric:
            bad = next(c for c in cells if _number(c) is None)
            raise DataError(f"{where}: column '{name}': '{bad}' is not a number (list the column in categorical)")
        if is_categorical:
            counts = Counter(str(c).strip() for c in cells)
            if len(counts) > MAX_CATEGORIES:
                raise DataError(
                    f"{where}: column '{name}' has {len(counts)} distinct values; more than {MAX_CATEGORIES} "
                    "categories is likely an identifier or free text (leave it out with features)"
                )
            fill: float | str | None = counts.most_common(1)[0][0] if impute != "refuse" else None
            columns.append(Column(name, "categorical", fill, sorted(counts)))
            continue
        values = np.asarray([_number(c) for c in cells], dtype=np.float64)
        fill = {
            "refuse": None,
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "most_frequent": float(Counter(values.tolist()).most_common(1)[0][0]),
        }[impute]
        columns.append(Column(name, "numeric", fill))
    return TableSchema(columns, target, kind, class_names, impute)


def read_table(path: Path, delimiter: str | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV/TSV file's header and rows (DataError naming the file for an unreadable or ragged one)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    delimiter = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if not header:
        raise DataError(f"{path}: empty file (no header row)")
    for line, row in enumerate(rows, 2):
        if None in row or any(v is None for v in row.values()):
            raise DataError(f"{path}: row {line}: expected {len(header)} fields")
    return header, rows


def shipped_table(name: str) -> tuple[list[str], list[dict[str, Any]], str, str | None]:
    """A scikit-learn table as records: (header, rows, target column, positive class)."""
    if name == "breast_cancer":
        bunch = skdatasets.load_breast_cancer()
        names = [str(n) for n in bunch.feature_names]
        labels = [str(bunch.target_names[t]) for t in bunch.target]
        rows = [
            {**dict(zip(names, map(float, x), strict=True)), "diagnosis": y}
            for x, y in zip(bunch.data, labels, strict=True)
        ]
        return [*names, "diagnosis"], rows, "diagnosis", "malignant"
    if name == "diabetes":  # unscaled (age in years, sex 1/2, ...), target: disease progression after one year
        bunch = skdatasets.load_diabetes(scaled=False)
        names = [str(n) for n in bunch.feature_names]
        rows = [
            {**dict(zip(names, map(float, x), strict=True)), "progression": float(y)}
            for x, y in zip(bunch.data, bunch.target, strict=True)
        ]
        return [*names, "progression"], rows, "progression", None
    raise DataError(f"data.shipped: '{name}' is not one of {', '.join(SHIPPED)}")


def _target_kind(labels: Iterable[Any], kind: Kind) -> Literal["binary", "multiclass", "regression"]:
    values = list(labels)
    if kind != "auto":
        return kind
    numbers = [_number(v) for v in values]
    distinct = {_label(v) for v in values}
    if all(n is not None for n in numbers) and (
        len(distinct) > 20 or not all(n.is_integer() for n in numbers if n is not None)
    ):
        return "regression"
    return "binary" if len(distinct) == 2 else "multiclass"


def _split(
    y: np.ndarray,
    stratify: bool,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int | None,
    fold: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, val and test (test: one fold of ``folds`` when given)."""
    index = np.arange(len(y))
    if folds is not None and (folds < 2 or not 0 <= fold < folds):
        raise DataError(f"data.folds/fold: need folds ≥ 2 and 0 ≤ fold < folds, got folds={folds}, fold={fold}")
    try:
        if folds is None:
            (train, _), (val, _), (test, _) = split_arrays(
                index, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, stratify=stratify
            )
            return train, val, test
        splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed)
        rest, test = list(splitter.split(index, y))[fold]
        (train, _), (val, _), _ = split_arrays(
            rest, y[rest], val_fraction=val_fraction, test_fraction=0.0, seed=seed, stratify=stratify
        )
        return train, val, test
    except ValueError as exc:  # scikit-learn: a split too small for the classes
        raise DataError(f"{len(y)} rows cannot be split so (val {val_fraction}, test {test_fraction}): {exc}") from None


def patients(
    path: Path | None = None,
    target: str | None = None,
    shipped: Literal["breast_cancer", "diabetes"] = "breast_cancer",
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    impute: Impute = "refuse",
    kind: Kind = "auto",
    positive: str | None = None,
    delimiter: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    folds: int | None = None,
    fold: int = 0,
) -> DataSplits:
    """A patient table split into train/val/test (stratified for classes), encoded by a schema fitted on train.

    ``path``: a CSV/TSV with one row per patient (default: the ``shipped`` scikit-learn set). ``target``: the
    outcome column. ``features``: input columns (default: all others). ``categorical``: columns to one-hot
    (default: those with a non-numeric value). ``kind``: binary/multiclass/regression (auto: a numeric target with
    more than 20 values or non-integers is regression). ``positive``: the class a binary risk model predicts (the
    default: ``malignant`` for the shipped breast-cancer set, else the last class in sorted order, e.g. ``1`` or
    ``yes``). ``folds``/``fold``: outer cross-validation: the test split is fold ``fold`` of ``folds`` (stratified,
    shuffled with ``seed``) instead of ``test_fraction``, and validation is ``val_fraction`` of the rest.
    """
    if path is None:
        header, rows, default_target, default_positive = shipped_table(shipped)
        where, source = f"shipped {shipped}", f"sklearn.datasets.load_{shipped}"
        target, positive = target or default_target, positive or default_positive
    else:
        header, rows = read_table(Path(path), delimiter)
        where = source = str(path)
        if target is None:
            raise DataError(f"{path}: name the outcome column with data.target (columns: {', '.join(header)})")
    if target not in header:
        raise DataError(f"{where}: no column '{target}' (columns: {', '.join(header)})")
    features = list(features) if features else [c for c in header if c != target]
    absent = [c for c in [*features, *(categorical or [])] if c not in header]
    if absent:
        raise DataError(f"{where}: no column(s) {', '.join(absent)} (columns: {', '.join(header)})")
    if target in features:
        raise DataError(f"{where}: the target '{target}' cannot also be a feature")
    if not rows:
        raise DataError(f"{where}: no data rows")
    for line, row in enumerate(rows, 2):
        if _missing(row[target]):
            raise DataError(f"{where}: row {line}, column '{target}': missing target (drop the row or fill it)")
    target_kind = _target_kind((r[target] for r in rows), kind)
    class_names: list[str] = []
    if target_kind != "regression":
        labels = sorted({_label(r[target]) for r in rows}, key=lambda v: (_number(v) is None, _number(v) or 0, v))
        if target_kind == "binary":
            if len(labels) != 2:
                raise DataError(f"{where}: column '{target}' has {len(labels)} classes; binary needs 2")
            positive = _label(positive) if positive is not None else labels[1]
            if positive not in labels:
                raise DataError(f"{where}: positive class '{positive}' is not in '{target}' ({', '.join(labels)})")
            labels = [next(v for v in labels if v != positive), positive]
        class_names = labels
    probe = TableSchema([], target, target_kind, class_names)
    y = np.asarray([probe.target_value(r, f"{where}: row {i}") for i, r in enumerate(rows, 2)])
    train_idx, val_idx, test_idx = _split(
        y, target_kind != "regression", val_fraction, test_fraction, seed, folds, fold
    )
    schema = fit_schema(
        [rows[i] for i in train_idx], features, target, target_kind, class_names, categorical, impute, where
    )
    encoded = schema.encode(rows, where)
    train_x = encoded[train_idx]
    std = train_x.std(0)
    model_args: dict[str, Any] = {
        "input_mean": train_x.mean(0).tolist(),
        "input_std": np.where(std > 1e-8, std, 1.0).tolist(),  # constant (e.g. one-hot) columns pass unscaled
    }
    if target_kind == "regression":
        model_args |= {"target_mean": [float(y[train_idx].mean())], "target_std": [float(y[train_idx].std() or 1.0)]}
    target_dtype = torch.long if target_kind == "multiclass" else torch.float32

    def dataset(index: np.ndarray) -> TensorDataset | None:
        if len(index) == 0:
            return None
        return TensorDataset(torch.as_tensor(encoded[index]), torch.as_tensor(y[index], dtype=target_dtype))

    info = DataInfo(
        target_kind,
        (encoded.shape[1],),
        len(class_names) if target_kind == "multiclass" else 1,
        class_names,
        schema.feature_names,
        source=source,
        model_args=model_args,
        metadata={"schema": schema.to_dict()},
    )
    return DataSplits(dataset(train_idx), dataset(val_idx), dataset(test_idx), info)
