"""Long documents as overlapping windows: each document is cut into windows of ``size`` tokens that start every
``stride`` tokens; the encoder reads every window and the classifier pools the windows' representations into one
prediction per document (mean, max, or learned attention weights).

Batches are bounded by windows, not documents: :class:`WindowBatchSampler` packs whole documents into batches of at
most ``batch_size`` windows, so memory does not depend on how long the documents are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from tujie_core import ConfigError
from tujie_nlp.data import for_rank, world

WINDOW_POOLS = ("mean", "max", "attention")


@dataclass(frozen=True)
class Windows:
    """How a document is cut: windows of ``size`` tokens (special tokens included, as ``max_length``), each
    starting ``stride`` text tokens after the previous one, at most ``max_windows`` per document (evenly spaced
    over the document when it has more), pooled by ``pool``."""

    size: int = 128
    stride: int = 96
    max_windows: int = 8
    pool: str = "mean"

    def check(self, specials: int, limit: int | None) -> None:
        """Raise :class:`~tujie_core.ConfigError` with one line for options that cannot work."""
        if self.pool not in WINDOW_POOLS:
            raise ConfigError(f"windows.pool must be one of {', '.join(WINDOW_POOLS)}, got '{self.pool}'")
        if limit is not None and self.size > limit:
            raise ConfigError(f"windows.size {self.size} is above the encoder's limit of {limit} tokens")
        if self.size <= specials + 1:
            raise ConfigError(f"windows.size must be above {specials + 1} tokens, got {self.size}")
        if not 1 <= self.stride < self.size:
            raise ConfigError(f"windows.stride must be in [1, windows.size = {self.size}), got {self.stride}")
        if self.stride > self.size - specials:
            raise ConfigError(
                f"windows.stride {self.stride} skips text: a window holds {self.size - specials} text tokens "
                f"besides its {specials} special tokens, so stride may be at most {self.size - specials}"
            )
        if self.max_windows < 1:
            raise ConfigError(f"windows.max_windows must be at least 1, got {self.max_windows}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_spans(length: int, budget: int, stride: int, max_windows: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each window over ``length`` text tokens, ``budget`` text tokens per window: one every
    ``stride`` tokens until a window reaches the end (that last one may be shorter, as Hugging Face's overflowing
    windows); above ``max_windows``, that many evenly spaced ones, the first and the last included."""
    starts = [0]
    while starts[-1] + budget < length:
        starts.append(starts[-1] + stride)
    if len(starts) > max_windows:
        last = len(starts) - 1
        picks = [round(i * last / (max_windows - 1)) for i in range(max_windows)] if max_windows > 1 else [0]
        starts = [starts[i] for i in picks]
    return [(s, min(s + budget, length)) for s in starts]


class WindowedTexts(Dataset):
    """Each document's windows (token ids with special tokens) and optional targets, one item per document."""

    def __init__(self, windows: list[list[list[int]]], targets: Tensor | None = None) -> None:
        if targets is not None and len(targets) != len(windows):
            raise ValueError(f"{len(windows)} documents but {len(targets)} targets")
        self.windows = windows
        self.targets = targets

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        if self.targets is None:
            return (self.windows[index],)
        return self.windows[index], self.targets[index]

    @property
    def counts(self) -> list[int]:
        return [len(w) for w in self.windows]


class WindowCollator:
    """A batch of documents → ``{"input_ids": (windows, width), "doc_index": (windows,), "target": (docs, …)}``,
    padded to the batch's longest window."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[Any, ...]]) -> dict[str, Tensor]:
        rows = [window for item in items for window in item[0]]
        width = max(len(row) for row in rows)
        batch = {
            "input_ids": torch.tensor([row + [self.pad_token_id] * (width - len(row)) for row in rows]),
            "doc_index": torch.tensor([d for d, item in enumerate(items) for _ in item[0]]),
        }
        if len(items[0]) > 1:
            batch["target"] = torch.stack([item[1] for item in items])
        return batch


class WindowBatchSampler(Sampler[list[int]]):
    """Whole documents packed into batches of at most ``batch_size`` windows.

    The batches' shapes are fixed once: documents sorted by window count (most first) and packed greedily, so every
    epoch has the same number of batches and a batch's windows have similar lengths. With ``shuffle``, each epoch
    (``seed + epoch``) deals documents of equal window count randomly into those slots and shuffles the batch
    order: random batches, the same order on resume. Under ``torch.distributed`` every process takes every
    ``world_size``-th batch.
    """

    def __init__(self, counts: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__()
        too_many = max(counts, default=0)
        if too_many > batch_size:
            raise ConfigError(f"batch size {batch_size} holds fewer windows than one document has ({too_many})")
        self.counts = list(counts)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        order = sorted(range(len(self.counts)), key=lambda i: (-self.counts[i], i))
        self.slots: list[list[int]] = []  # positions in ``order``
        used = batch_size
        for position, index in enumerate(order):
            if used + self.counts[index] > batch_size:
                self.slots.append([])
                used = 0
            self.slots[-1].append(position)
            used += self.counts[index]
        self.order = order

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        order = list(self.order)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            start = 0
            while start < len(order):  # a run of equal window counts: shuffled among its slots
                end = start
                while end < len(order) and self.counts[order[end]] == self.counts[order[start]]:
                    end += 1
                run = order[start:end]
                order[start:end] = [run[i] for i in torch.randperm(len(run), generator=g).tolist()]
                start = end
        batches = [[order[p] for p in slot] for slot in self.slots]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return for_rank(batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return math.ceil(len(self.slots) / world()[0])


def pool_windows(features: Tensor, doc_index: Tensor, pool: str, scores: Tensor | None = None) -> Tensor:
    """One row per document from its windows' feature rows: their mean, element-wise max, or softmax(``scores``)-
    weighted sum (``scores``: one per window, the attention pool's logits)."""
    docs = int(doc_index.max()) + 1 if len(doc_index) else 0
    index = doc_index.unsqueeze(-1).expand_as(features)
    if pool == "max":
        out = features.new_full((docs, features.shape[-1]), float("-inf"))
        return out.scatter_reduce(0, index, features, "amax", include_self=True)
    if pool == "mean":
        weights = torch.ones_like(doc_index, dtype=features.dtype)
    else:
        assert scores is not None
        scores = scores.float()
        top = scores.new_full((docs,), float("-inf")).scatter_reduce(0, doc_index, scores, "amax")
        weights = (scores - top[doc_index]).exp()
    totals = weights.new_zeros(docs).index_add(0, doc_index, weights)
    weights = (weights / totals[doc_index]).to(features.dtype)
    return features.new_zeros(docs, features.shape[-1]).index_add(0, doc_index, features * weights.unsqueeze(-1))
