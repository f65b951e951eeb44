"""``TextClassifier``: a Hugging Face encoder with a classification head, its tokenizer and its label vocabulary.

>>> clf = TextClassifier.from_encoder("minilm-l6", labels=["negative", "positive"])     # doctest: +SKIP
>>> clf.fit(train_table, val_table, max_epochs=2)                                      # doctest: +SKIP
>>> clf.predict(["a gripping, beautifully shot film"])                                 # doctest: +SKIP
['positive']
>>> clf.save_pretrained("sentiment/"); TextClassifier.from_pretrained("sentiment/")    # doctest: +SKIP

A saved folder is a regular ``save_pretrained`` folder (``model.safetensors``, ``config.json`` with ``id2label``,
tokenizer files) plus ``tujie_nlp.json`` (labels, multi-label flag, ``max_length``, encoder), so plain
``transformers`` can load it too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from tujie_core import ConfigError, DataError, Evaluation, Trainer
from tujie_core.config import ComponentSpec
from tujie_nlp.data import LabelVocab, LengthGroupedBatchSampler, PadCollator, TextTable, TokenizedTexts
from tujie_nlp.encoders import (
    DEFAULT_ENCODER,
    default_pooling,
    hub_options,
    load_tokenizer,
    quiet_transformers,
    resolve_encoder,
)
from tujie_nlp.modeling import SequenceClassifier, TextClassificationTask
from tujie_nlp.windows import (
    WindowBatchSampler,
    WindowCollator,
    WindowedTexts,
    Windows,
    pool_windows,
    window_spans,
)

METADATA_NAME = "tujie_nlp.json"
WINDOW_POOL_NAME = "window_pooling.safetensors"  # the attention pool's weights (not part of the HF model)
TRUNCATIONS = ("head", "tail", "head+tail")
HEAD_SHARE = 0.25  # head+tail: a quarter head, the rest tail (Sun et al. 2019: 128 + 382 of BERT's 510 was best)


class TextClassifier:
    """Single-label (softmax) or multi-label (one sigmoid per label) text classification."""

    def __init__(
        self,
        model: SequenceClassifier,
        tokenizer: Any,
        labels: LabelVocab,
        *,
        max_length: int = 128,
        encoder: str = DEFAULT_ENCODER,
        truncation: str = "head",
        windows: Windows | None = None,
    ) -> None:
        if truncation not in TRUNCATIONS:
            raise ConfigError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got '{truncation}'")
        if windows is not None:
            if truncation != "head":
                raise ConfigError("truncation applies to one window per text; windows read the whole text, drop one")
            windows.check(len(tokenizer("")["input_ids"]), position_limit(tokenizer, model.config))
        if model.window_pool != (windows.pool if windows is not None else None):
            raise ConfigError(f"the model pools windows by {model.window_pool}, the options say {windows}")
        self.model = model
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.encoder = encoder
        self.truncation = truncation
        self.windows = windows

    # ---- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_encoder(
        cls,
        encoder: str | Path = DEFAULT_ENCODER,
        labels: Sequence[str] | LabelVocab = ("0", "1"),
        *,
        multi_label: bool = False,
        max_length: int = 128,
        dropout: float | None = None,
        pooling: str = "auto",
        truncation: str = "head",
        windows: Windows | dict[str, Any] | None = None,
    ) -> TextClassifier:
        """A pre-trained encoder with a new, randomly initialised head for ``labels``.

        ``encoder``: a registered short name (``minilm-l6``, the default, ships with the package), a local
        folder, or a hub id. ``dropout`` overrides the head's dropout. ``pooling``: ``cls``, ``mean``, or
        ``auto`` (mean for sentence-transformers encoders that were trained with it, such as the default).
        ``truncation``: which ``max_length`` tokens of a longer text the model reads: ``head`` (the first),
        ``tail`` (the last) or ``head+tail`` (the first quarter and the last three quarters of the budget).
        ``windows`` (a :class:`~tujie_nlp.windows.Windows` or its fields as a dict) reads every text as overlapping
        windows pooled into one prediction instead (long documents).
        """
        from transformers import AutoModelForSequenceClassification

        vocab = labels if isinstance(labels, LabelVocab) else LabelVocab(list(labels), multi_label)
        where = resolve_encoder(encoder)
        tokenizer = load_tokenizer(encoder)
        options: dict[str, Any] = {"classifier_dropout": dropout} if dropout is not None else {}
        try:
            with quiet_transformers():
                hf = AutoModelForSequenceClassification.from_pretrained(
                    where,
                    num_labels=len(vocab),
                    id2label=dict(enumerate(vocab.names)),
                    label2id={n: i for i, n in enumerate(vocab.names)},
                    problem_type="multi_label_classification" if vocab.multi_label else "single_label_classification",
                    **options,
                    **hub_options(),
                )
        except OSError as exc:
            raise ConfigError(f"encoder '{encoder}': cannot load it offline ({exc})") from None
        # in eval mode like a loaded model (the Trainer switches to train mode while it trains)
        pooling = default_pooling(where) if pooling == "auto" else pooling
        if isinstance(windows, dict):
            windows = Windows(**windows)
        pool = windows.pool if windows is not None else None
        try:
            model = SequenceClassifier(hf, tokenizer.pad_token_id, tokenizer.sep_token_id, pooling, pool).eval()
        except ValueError as exc:
            raise ConfigError(f"encoder '{encoder}': {exc}") from None
        length = _max_length(max_length, tokenizer, hf.config)
        return cls(
            model, tokenizer, vocab, max_length=length, encoder=str(encoder), truncation=truncation, windows=windows
        )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextClassifier:
        """Load a folder written by :meth:`save_pretrained` (safetensors only: nothing is unpickled)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta_path = path / METADATA_NAME
        if not meta_path.is_file():
            raise DataError(f"{path}: not a tujie text classifier folder (no {METADATA_NAME})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with quiet_transformers():
            hf = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(path)
        pooling = meta.get("pooling", "cls")
        windows = Windows(**meta["windows"]) if meta.get("windows") else None
        pool = windows.pool if windows is not None else None
        model = SequenceClassifier(hf, tokenizer.pad_token_id, tokenizer.sep_token_id, pooling, pool).eval()
        if model.window_attention is not None:
            from safetensors.torch import load_file

            model.window_attention.load_state_dict(load_file(path / WINDOW_POOL_NAME))
        labels = LabelVocab(meta["labels"], meta["multi_label"])
        return cls(
            model,
            tokenizer,
            labels,
            max_length=meta["max_length"],
            encoder=meta.get("encoder", ""),
            truncation=meta.get("truncation", "head"),
            windows=windows,
        )

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.model.hf_model.save_pretrained(path)  # safetensors
            self.tokenizer.save_pretrained(path)
        meta = {
            "labels": self.labels.names,
            "multi_label": self.labels.multi_label,
            "max_length": self.max_length,
            "truncation": self.truncation,
            "encoder": self.encoder,
            "pooling": self.model.pooling,  # plain transformers always uses the [CLS] head
            "windows": self.windows.to_dict() if self.windows is not None else None,
        }
        if self.model.window_attention is not None:
            from safetensors.torch import save_file

            weights = {k: v.detach().cpu().contiguous() for k, v in self.model.window_attention.state_dict().items()}
            save_file(weights, path / WINDOW_POOL_NAME)
        (path / METADATA_NAME).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return path

    # ---- data -------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Any]:
        """Token ids with special tokens, cut to ``max_length`` as ``truncation`` says (pairs: longest first,
        from the end); with ``windows``, each text's list of windows."""
        if not texts:
            return []
        if self.windows is not None:
            if pairs is not None:
                raise ConfigError("windows read single texts; text pairs are not supported with windows")
            return [[ids for _, ids in self.window_tokens(text)] for text in self._whole(texts)]
        if self.truncation == "head" or pairs is not None:
            encoded = self.tokenizer(
                list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=self.max_length
            )
            return encoded["input_ids"]
        start, end = self._template
        budget = self.max_length - len(start) - len(end)
        return [start + _cut(ids, budget, self.truncation) + end for ids in self._whole(texts)]

    @cached_property
    def _template(self) -> tuple[list[int], list[int]]:
        """The special tokens before and after a text: [CLS] / [SEP], <s> / </s> (the tokenizer's, computed once)."""
        template = self.tokenizer("")["input_ids"]
        return template[:1], template[1:]

    def _whole(self, texts: Sequence[str]) -> list[list[int]]:
        with quiet_transformers():  # whole documents are longer than the encoder's limit, on purpose
            return self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]

    def window_tokens(self, whole: list[int]) -> list[tuple[int, list[int]]]:
        """``(start, ids)`` of each window over a text's token ids (no special tokens): the first text token's
        position and the window's ids with special tokens."""
        assert self.windows is not None
        start, end = self._template
        w = self.windows
        spans = window_spans(len(whole), w.size - len(start) - len(end), w.stride, w.max_windows)
        return [(a, start + whole[a:b] + end) for a, b in spans]

    def dataset(self, table: TextTable) -> TokenizedTexts | WindowedTexts:
        """Tokenised rows of ``table`` with encoded targets (when it has labels)."""
        targets = None
        if table.labels is not None:
            targets = self.labels.encode(table.labels, where=f"{table.path}: ")
        ids = self.tokenize(table.texts, table.pairs)
        return WindowedTexts(ids, targets) if self.windows is not None else TokenizedTexts(ids, targets)

    def loader(
        self,
        data: TokenizedTexts | WindowedTexts,
        batch_size: int = 32,
        *,
        shuffle: bool = False,
        seed: int = 0,
        group_by_length: bool = True,
    ) -> DataLoader:
        """Dynamic-padded batches: with ``shuffle``, length-grouped windows (``group_by_length``) or plain random
        batches; without it, length order. Windowed documents: whole documents packed into batches of at most
        ``batch_size`` windows, or of one document's ``max_windows`` if that is more
        (:class:`~tujie_nlp.windows.WindowBatchSampler`)."""
        pad = self.tokenizer.pad_token_id
        sampler: Sampler
        if isinstance(data, WindowedTexts):
            budget = max(batch_size, max(data.counts, default=1))
            sampler = WindowBatchSampler(data.counts, budget, shuffle=shuffle, seed=seed)
            collate: Any = WindowCollator(pad)
        else:
            window = 50 if group_by_length else 1  # a window of one batch: a random batch, sorted inside
            sampler = LengthGroupedBatchSampler(data.lengths, batch_size, shuffle=shuffle, seed=seed, window=window)
            collate = PadCollator(pad)
        # its own generator: creating an iterator must not draw from torch's global RNG (exact resume)
        return DataLoader(
            data, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator().manual_seed(seed)
        )

    def task(self, **options: Any) -> TextClassificationTask:
        """The core task that trains this classifier (options: optimizer, scheduler, class_weights, ...)."""
        mode = "multilabel" if self.labels.multi_label else "multiclass"
        return TextClassificationTask(self.model, len(self.labels), mode=mode, **options)

    # ---- training and inference -------------------------------------------------------------------------------
    def fit(
        self,
        train: TextTable,
        val: TextTable | None = None,
        *,
        batch_size: int = 32,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        layer_lr_decay: float = 1.0,
        rdrop: float = 0.0,
        class_weights: list[float] | None = None,
        group_by_length: bool = True,
        **trainer_options: Any,
    ) -> Trainer:
        """Fine-tune with the core Trainer (AdamW, linear warm-up and decay); returns the trainer (history, state).

        ``trainer_options`` are :class:`~tujie_core.TrainerConfig` fields (``max_epochs``, ``accelerator``, ...).
        """
        trainer_options.setdefault("progress", "none")
        trainer = Trainer(**trainer_options)
        train_loader = self.loader(
            self.dataset(train), batch_size, shuffle=True, seed=trainer.config.seed, group_by_length=group_by_length
        )
        val_loader = self.loader(self.dataset(val), batch_size * 2) if val is not None else None
        steps = trainer.config.max_epochs * len(train_loader)
        task = self.task(
            optimizer=ComponentSpec(name="adamw", lr=lr, weight_decay=weight_decay),
            scheduler=ComponentSpec(name="linear", warmup_steps=int(warmup_ratio * steps)),
            class_weights=class_weights,
            layer_lr_decay=layer_lr_decay,
            rdrop=rdrop,
        )
        trainer.fit(task, train_loader, val_loader)
        self.model.eval()
        return trainer

    def evaluate(self, table: TextTable, batch_size: int = 64, trainer: Trainer | None = None) -> Evaluation:
        """Loss, metrics and curves on a labelled table."""
        trainer = trainer or Trainer(progress="none")
        return trainer.evaluate(self.task(), self.loader(self.dataset(table), batch_size), "test")

    def predict_proba(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Class probabilities (softmax) or per-label probabilities (sigmoid), one row per text, in input order."""
        return self.predict_ids(self.tokenize(texts, pairs), batch_size=batch_size, device=device)

    @torch.no_grad()
    def predict_ids(
        self, input_ids: Sequence[Any], *, batch_size: int = 64, device: str | torch.device | None = None
    ) -> Tensor:
        """:meth:`predict_proba` on texts already tokenised by :meth:`tokenize` (batch jobs tokenise on workers);
        with windows, ``batch_size`` counts windows."""
        device = torch.device(device) if device is not None else next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        if self.windows is not None:
            logits = self._window_logits(list(input_ids), batch_size, device)
        else:
            data = TokenizedTexts(list(input_ids))
            loader = self.loader(data, batch_size)
            logits = torch.empty(len(data), len(self.labels))
            for index, (ids,) in zip(loader.batch_sampler, loader, strict=True):
                logits[index] = self.model(ids.to(device)).float().cpu()
        self.model.train(was_training)
        return logits.sigmoid() if self.labels.multi_label else logits.softmax(-1)

    def _window_logits(self, documents: list[list[list[int]]], batch_size: int, device: torch.device) -> Tensor:
        """Every window of every document through the encoder in length order, ``batch_size`` windows at a time,
        each batch padded only to its own longest window; then each document's windows pooled and classified.
        The logits of document batches (as training reads them) without padding short last windows to full ones.
        """
        rows = [(doc, ids) for doc, windows in enumerate(documents) for ids in windows]
        if not rows:
            return torch.empty(0, len(self.labels))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][1]))
        collate = PadCollator(self.tokenizer.pad_token_id)
        features: Tensor | None = None
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            (ids,) = collate([(rows[i][1],) for i in chunk])
            out = self.model.features(ids.to(device))
            if features is None:
                features = out.new_empty(len(rows), out.shape[-1])
            features[chunk] = out
        assert features is not None
        doc_index = torch.tensor([doc for doc, _ in rows], device=device)
        pooled = pool_windows(features, doc_index, self.model.window_pool, self.model.window_scores(features))
        return self.model.head(pooled).float().cpu()

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None, threshold: float = 0.5) -> list[Any]:
        """The label of each text, or for multi-label the list of labels whose probability exceeds ``threshold``."""
        probs = self.predict_proba(texts, pairs)
        names = self.labels.names
        if self.labels.multi_label:
            return [[names[j] for j in torch.nonzero(row > threshold).flatten().tolist()] for row in probs]
        return [names[i] for i in probs.argmax(-1).tolist()]


def _cut(ids: list[int], budget: int, truncation: str) -> list[int]:
    """``budget`` tokens of ``ids``: the last ones (``tail``) or the first quarter and the last three quarters."""
    if len(ids) <= budget:
        return ids
    if truncation == "tail":
        return ids[len(ids) - budget :]
    head = int(budget * HEAD_SHARE)
    return ids[:head] + ids[len(ids) - (budget - head) :]


def position_limit(tokenizer: Any, config: Any) -> int | None:
    """The longest sequence the encoder reads: its tokenizer's ``model_max_length`` and its position embeddings
    (RoBERTa's table reserves 2 rows for padding), whichever is smaller and known."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int):
        limits.append(positions - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta") else positions)
    known = [limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(known) if known else None


def _max_length(requested: int, tokenizer: Any, config: Any) -> int:
    """``requested``, capped at the encoder's position limit (a longer window could not be encoded)."""
    if requested < 8:
        raise ConfigError(f"max_length must be at least 8 tokens, got {requested}")
    limit = position_limit(tokenizer, config)
    return min(requested, limit) if limit is not None else requested
