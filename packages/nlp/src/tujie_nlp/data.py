"""Labelled text from CSV, TSV, GLUE TSV, JSONL or ``datasets`` files, tokenised into length-grouped batches.

Reading never stops at a bad row: rows with an empty text, a missing field, bytes that are not UTF-8 or a missing
label are collected as :class:`BadRow` (file line, reason) and every good row is kept. Whole-file problems (no such
file, no such column) raise :class:`~tujie_core.DataError` naming the file and column.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from tujie_core import DataError

TextFormat = Literal["auto", "csv", "tsv", "glue", "jsonl", "datasets"]
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "glue", ".tab": "glue", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DATASETS_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow", ".json": "json"}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are legal in one field


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped: its line in the file (row index for ``datasets``) and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class TextTable:
    """Good rows of one file: texts, optional second texts (pairs), labels per row, and the skipped rows."""

    path: Path
    texts: list[str]
    pairs: list[str] | None
    labels: list[list[str]] | None
    lines: list[int]
    bad: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def bad_report(self, limit: int = 10) -> str:
        """One line for the user: how many rows were skipped and the first few reasons."""
        shown = "; ".join(str(b) for b in self.bad[:limit])
        more = f"; … {len(self.bad) - limit} more" if len(self.bad) > limit else ""
        return f"{self.path}: skipped {len(self.bad)} bad row(s): {shown}{more}"


def detect_format(path: Path, format: TextFormat) -> str:
    if format != "auto":
        return format
    if path.is_dir() or path.suffix.lower() in DATASETS_SUFFIXES:
        return "datasets"
    try:
        return SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(
            f"{path}: cannot tell the format from the ending '{path.suffix}'; set format to one of "
            "csv, tsv, glue, jsonl, datasets"
        ) from None


def read_texts(
    path: str | Path,
    *,
    format: TextFormat = "auto",
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    label_separator: str | None = None,
    multi_label: bool = False,
    split: str = "train",
) -> TextTable:
    """Read a text file's good rows; ``label_column=None`` reads unlabelled text (prediction).

    Formats: ``csv`` (RFC 4180 quoting), ``tsv`` (tab, with quoting), ``glue`` (tab, no quoting: GLUE's files
    contain bare quotes), ``jsonl`` (one object per line; a label may be a list for multi-label), ``datasets``
    (a ``save_to_disk`` folder or a parquet/arrow/json file read with Hugging Face ``datasets``; ``split`` picks
    the split of a DatasetDict). ``multi_label``: a row may carry several labels (a JSON list, or a field split at
    ``label_separator``, default ``|``) or none (an empty field means that no label applies).
    """
    path = Path(path)
    columns = [c for c in (text_column, text_pair_column, label_column) if c]
    records = iter_records(path, format=format, columns=columns, split=split)
    table = TextTable(path, [], [] if text_pair_column else None, [] if label_column else None, [])
    for line, record in records:
        if isinstance(record, str):
            table.bad.append(BadRow(line, record))
            continue
        problem = _row_problem(record, columns, text_column, text_pair_column)
        labels = None
        if problem is None and label_column is not None:
            labels = _labels(record.get(label_column), label_separator or ("|" if multi_label else None))
            if not labels and not multi_label:
                problem = f"column '{label_column}': empty label"
        if problem is not None:
            table.bad.append(BadRow(line, problem))
            continue
        table.texts.append(str(record[text_column]))
        if table.pairs is not None:
            table.pairs.append(str(record[text_pair_column]))
        if table.labels is not None and labels is not None:
            table.labels.append(labels)
        table.lines.append(line)
    return table


def iter_records(
    path: str | Path, *, format: TextFormat = "auto", columns: Sequence[str] = (), split: str = "train"
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Stream ``(line, record)`` pairs from a file without reading it whole; a bad row's record is its reason.

    Raises :class:`~tujie_core.DataError` at once (not at the first row) for a missing file, an unknown format or
    a missing column.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    kind = detect_format(path, format)
    if kind == "datasets":
        records = _datasets_records(path, split, list(columns))
    elif kind == "jsonl":
        records = _jsonl_records(path)
    else:
        records = _delimited_records(path, kind, list(columns))
    first = next(records, None)  # header and column checks run here, before the caller starts its job
    return chain([first] if first is not None else [], records)


def _row_problem(record: dict[str, Any], columns: list[str], text: str, pair: str | None) -> str | None:
    missing = [c for c in columns if c not in record or record[c] is None]
    if missing:
        return f"missing field(s) {', '.join(repr(c) for c in missing)}"
    for column in columns:
        value = record[column]
        if isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value):
            return f"column '{column}': bytes that are not UTF-8"
    for column in (text, pair):
        if column and not str(record[column]).strip():
            return f"column '{column}': empty text"
    return None


def _labels(value: Any, separator: str | None) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = "" if value is None else str(value).strip()
    if separator is None:
        return [text] if text else []
    return [part.strip() for part in text.split(separator) if part.strip()]


def _open_text(path: Path) -> io.TextIOWrapper:
    """The file as text, read lazily; bytes that are not UTF-8 become lone surrogates so that only their rows are
    rejected, and a byte-order mark is dropped."""
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


def _delimited_records(path: Path, kind: str, columns: list[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    delimiter = "," if kind == "csv" else "\t"
    quoting = csv.QUOTE_NONE if kind == "glue" else csv.QUOTE_MINIMAL
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise DataError(f"{path}: the file is empty (expected a header row)")
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(
                f"{path}: no column(s) {', '.join(repr(c) for c in missing)} (columns: {', '.join(header)})"
            )
        start = reader.line_num + 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields:
                continue  # blank line
            if len(fields) > len(header):
                yield line, f"expected {len(header)} fields, got {len(fields)}"
                continue
            yield line, dict(zip(header, fields, strict=False))


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with _open_text(path) as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            if any("\udc80" <= ch <= "\udcff" for ch in text):
                yield line, "bytes that are not UTF-8"
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, f"invalid JSON ({exc.msg} at column {exc.colno})"
                continue
            yield line, record if isinstance(record, dict) else f"expected a JSON object, got {type(record).__name__}"


def _datasets_records(path: Path, split: str, columns: list[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    import datasets

    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path}: no split '{split}' (splits: {', '.join(loaded)})")
            loaded = loaded[split]
    else:
        builder = DATASETS_SUFFIXES.get(path.suffix.lower())
        if builder is None:
            raise DataError(f"{path}: 'datasets' format reads folders and {', '.join(DATASETS_SUFFIXES)} files")
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
    missing = [c for c in columns if c not in loaded.column_names]
    if missing:
        raise DataError(
            f"{path}: no column(s) {', '.join(repr(c) for c in missing)} (columns: {', '.join(loaded.column_names)})"
        )
    yield from enumerate(loaded)


# ---- labels -------------------------------------------------------------------------------------------------------
@dataclass
class LabelVocab:
    """The label names in output order; single-label targets are class indices, multi-label ones multi-hot rows."""

    names: list[str]
    multi_label: bool = False

    @classmethod
    def from_labels(cls, labels: Sequence[Sequence[str]], multi_label: bool = False) -> LabelVocab:
        """Sorted label names (numerically when every name is an integer, as GLUE's 0/1)."""
        if not multi_label:
            several = next((ls for ls in labels if len(ls) != 1), None)
            if several is not None:
                raise DataError(f"a row has labels {several}; set multi_label to train a multi-label classifier")
        names = sorted({n for row in labels for n in row}, key=lambda n: (0, int(n), n) if _is_int(n) else (1, 0, n))
        if not names or (len(names) < 2 and not multi_label):
            raise DataError(f"need at least 2 classes to train a classifier, found {names}")
        return cls(names, multi_label)

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: Sequence[Sequence[str]], where: str = "") -> Tensor:
        index = {n: i for i, n in enumerate(self.names)}
        unknown = sorted({n for row in labels for n in row if n not in index})
        if unknown:
            raise DataError(f"{where}label(s) {unknown} not in the training labels {self.names}")
        if not self.multi_label:
            return torch.tensor([index[row[0]] for row in labels], dtype=torch.long)
        target = torch.zeros(len(labels), len(self.names))
        for i, row in enumerate(labels):
            target[i, [index[n] for n in row]] = 1.0
        return target

    def balanced_weights(self, labels: Sequence[Sequence[str]]) -> list[float]:
        """Class weights ``n / (k · count)`` (scikit-learn's "balanced"); multi-label: negatives/positives per label."""
        counts = Counter(n for row in labels for n in row)
        if self.multi_label:
            return [(len(labels) - counts[n]) / max(counts[n], 1) for n in self.names]
        return [len(labels) / (len(self.names) * max(counts[n], 1)) for n in self.names]


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


# ---- tokenised datasets and batches -------------------------------------------------------------------------------
class TokenizedTexts(Dataset):
    """Token ids of each text (special tokens added, truncated to ``max_length``) and optional targets."""

    def __init__(self, input_ids: list[list[int]], targets: Tensor | None = None) -> None:
        if targets is not None and len(targets) != len(input_ids):
            raise ValueError(f"{len(input_ids)} texts but {len(targets)} targets")
        self.input_ids = input_ids
        self.targets = targets

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> tuple[list[int], Tensor] | tuple[list[int]]:
        if self.targets is None:
            return (self.input_ids[index],)
        return self.input_ids[index], self.targets[index]

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


class PadCollator:
    """Dynamic padding: each batch is padded to its own longest sequence, not to ``max_length``."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[Any, ...]]) -> tuple[Tensor, ...]:
        rows = [item[0].tolist() if isinstance(item[0], Tensor) else list(item[0]) for item in items]
        width = max(len(row) for row in rows)
        ids = torch.tensor([row + [self.pad_token_id] * (width - len(row)) for row in rows], dtype=torch.long)
        if len(items[0]) == 1:
            return (ids,)
        return ids, torch.stack([item[1] for item in items])


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so dynamic padding wastes little compute (as Hugging Face's ``group_by_length``).

    With ``shuffle``, each epoch shuffles the indices with ``seed + epoch``, sorts windows of ``50 × batch_size``
    by length and shuffles the batch order: random but compact batches, the same order on resume
    (the Trainer calls :meth:`set_epoch`). Without it, batches follow length order (evaluation, prediction).
    Under ``torch.distributed`` every process takes every ``world_size``-th batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 50,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.window = window
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            batches = [order[i : i + size] for i in range(0, n, size)]
        else:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
            span = size * self.window
            batches = []
            for start in range(0, n, span):
                chunk = sorted(order[start : start + span], key=lambda i: -self.lengths[i])
                batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        if self.drop_last:
            batches = [b for b in batches if len(b) == size]
        return for_rank(batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        n = len(self.lengths) // self.batch_size if self.drop_last else math.ceil(len(self.lengths) / self.batch_size)
        return math.ceil(n / world()[0])


def for_rank(batches: list[list[int]]) -> list[list[int]]:
    """This process's share of ``batches``: every ``world_size``-th, padded so that every process gets as many
    (DDP needs it)."""
    size, rank = world()
    if size == 1:
        return batches
    per_rank = math.ceil(len(batches) / size)
    return (batches * 2)[: per_rank * size][rank::size]


def world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0
