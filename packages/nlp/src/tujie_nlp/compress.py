"""Smaller, faster text classifiers through core's compression loop (``tujie_core.compress.compress_model``):
every technique of core's ``COMPRESSORS`` registry (int8, pruning, low-rank, ONNX, distillation into a shallower
student), measured as one size / latency / throughput / accuracy table (book ch. 13 on model compression).

Throughput is sentences per second over the whole evaluation file with dynamic padding and length-sorted batches,
the way :meth:`TextClassifier.predict_proba` runs, on the CPU with the current ``torch.get_num_threads()``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tujie_core import ConfigError, Trainer, TrainerConfig
from tujie_core.compress import CompressionContext, CompressionResult, DistillationTask, compress_model
from tujie_core.config import ComponentSpec
from tujie_nlp.classifier import TextClassifier
from tujie_nlp.data import TextTable
from tujie_nlp.modeling import shrink_encoder

DEFAULT_TEXT_METHODS = ("int8", "distil")


def _inputs(batch: Any) -> tuple[Any, ...]:
    """The model's arguments in a batch: token ids, or a windowed batch's ids and document index."""
    return (batch["input_ids"], batch["doc_index"]) if isinstance(batch, dict) else (batch[0],)


def _target(batch: Any) -> Any:
    return batch["target"] if isinstance(batch, dict) else batch[1]


@torch.inference_mode()
def throughput(model: nn.Module, loader: DataLoader, repeats: int = 1) -> float:
    """Texts per second over every batch of ``loader`` (one warm-up batch first)."""
    model.eval()
    batches = [(_inputs(batch), len(_target(batch))) for batch in loader]
    model(*batches[0][0])
    start = time.perf_counter()
    for _ in range(repeats):
        for inputs, _ in batches:
            model(*inputs)
    elapsed = time.perf_counter() - start
    return repeats * sum(count for _, count in batches) / elapsed


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader, multi_label: bool) -> float:
    """Accuracy (single-label) or exact-match ratio (multi-label, threshold 0.5)."""
    model.eval()
    correct = total = 0
    for batch in loader:
        target = _target(batch)
        logits = model(*_inputs(batch)).float()
        if multi_label:
            correct += int(((logits > 0).float() == target).all(-1).sum())
        else:
            correct += int((logits.argmax(-1) == target).sum())
        total += len(target)
    return correct / max(total, 1)


def compress_text(
    classifier: TextClassifier | str | Path,
    eval_table: TextTable,
    output_dir: str | Path,
    *,
    methods: Sequence[str] = DEFAULT_TEXT_METHODS,
    options: dict[str, dict[str, Any]] | None = None,
    train_table: TextTable | None = None,
    batch_size: int = 32,
    trainer: TrainerConfig | None = None,
    repeats: int = 50,
    report: Path | None = None,
) -> CompressionResult:
    """Compress a fine-tuned classifier with each method and measure every variant against fp32 on ``eval_table``.

    Writes ``compression.md`` and ``compression.json`` into ``output_dir`` (and the compression section of
    ``report``). ``options`` maps a method to its keyword arguments; ``distil`` takes ``layers`` (default 2),
    ``epochs`` (2), ``temperature`` (2.0), ``alpha`` (0.5) and ``lr`` (1e-4), trains on ``train_table`` and saves
    the student as a classifier folder in ``<output_dir>/student``. Everything runs on the CPU (int8 kernels are
    CPU-only); latencies are medians of ``repeats`` timed passes.
    """
    clf = classifier if isinstance(classifier, TextClassifier) else TextClassifier.from_pretrained(classifier)
    if clf.windows is not None and "onnx" in methods:
        raise ConfigError("compress.onnx: the export reads one window per text; a windowed classifier pools several")
    if "distil" in methods and train_table is None:
        raise ConfigError("compress.distil: needs labelled training text (--train)")
    output_dir = Path(output_dir)
    base = (trainer or TrainerConfig()).model_copy(
        update={"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32-true"}
    )
    base = base.model_copy(update={"progress": "none"}) if base.progress == "auto" else base
    loader = clf.loader(clf.dataset(eval_table), batch_size)

    def distil(
        teacher: nn.Module,
        layers: int = 2,
        epochs: int = 2,
        temperature: float = 2.0,
        alpha: float = 0.5,
        lr: float = 1e-4,
    ) -> nn.Module:
        """A ``layers``-layer student initialised from evenly spaced teacher layers, trained on the teacher's
        softened outputs and the labels."""
        student = shrink_encoder(clf.model, layers).train()
        task = DistillationTask(
            student,
            teacher,
            len(clf.labels),
            temperature=temperature,
            alpha=alpha,
            mode="multilabel" if clf.labels.multi_label else "multiclass",
            optimizer=ComponentSpec(name="adamw", lr=lr, weight_decay=0.01),
            input_key=None,  # windowed batches are mappings of keyword arguments
        )
        train = clf.loader(clf.dataset(train_table), batch_size, shuffle=True, seed=base.seed)
        Trainer(base.model_copy(update={"max_epochs": epochs})).fit(task, train)
        student.eval()
        distilled = TextClassifier(
            student,
            clf.tokenizer,
            clf.labels,
            max_length=clf.max_length,
            encoder=clf.encoder,
            truncation=clf.truncation,
            windows=clf.windows,
        )
        distilled.save_pretrained(output_dir / "student")
        return student

    context = CompressionContext(
        example=_inputs(next(iter(loader)))[0][:1],  # the longest text (or window), a batch of one
        distil=distil if train_table is not None else None,
        workdir=output_dir,
    )
    return compress_model(
        clf.model,
        lambda m: accuracy(m, loader, clf.labels.multi_label),
        context,
        output_dir,
        methods=methods,
        options=options,
        title=f"{clf.encoder} text classifier",
        baseline_details=f"{clf.encoder}, {clf.model.config.num_hidden_layers} layers",
        note=f"accuracy on {eval_table.path.name} ({len(eval_table)} rows); sent/s over the whole file.",
        throughput=lambda m: throughput(m, loader),
        throughput_unit="sent/s",
        repeats=repeats,
        report=report,
    )
