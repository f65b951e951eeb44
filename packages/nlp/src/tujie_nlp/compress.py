"""Smaller, faster text classifiers through ``tujie_core.compress``: dynamic int8 and distillation into a shallower
student, measured as one size / latency / throughput / accuracy table (book ch. 13 on model compression).

Throughput is sentences per second over the whole evaluation file with dynamic padding and length-sorted batches,
the way :meth:`TextClassifier.predict_proba` runs, on the CPU with the current ``torch.get_num_threads()``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tujie_core import ConfigError, Registry, Trainer, TrainerConfig
from tujie_core.compress import CompressionRow, DistillationTask, compression_table, measure, quantize_dynamic
from tujie_core.config import ComponentSpec
from tujie_nlp.classifier import TextClassifier
from tujie_nlp.data import TextTable
from tujie_nlp.modeling import shrink_encoder

TEXT_COMPRESSORS: Registry[Callable[..., tuple[nn.Module, str]]] = Registry("text_compressors")
DEFAULT_TEXT_METHODS = ("int8", "distil")


@dataclass
class TextCompressionRow:
    """A :class:`~tujie_core.compress.CompressionRow` plus whole-file throughput."""

    row: CompressionRow
    sentences_per_s: float


@dataclass
class TextCompressionContext:
    classifier: TextClassifier
    train: TextTable | None
    batch_size: int
    trainer: TrainerConfig
    output_dir: Path


@TEXT_COMPRESSORS.register("int8")
def _int8(model: nn.Module, context: TextCompressionContext, per_channel: bool = True) -> tuple[nn.Module, str]:
    """Dynamic int8: Linear weights stored as int8 (a scale per output channel), activations quantised per batch;
    the embeddings stay fp32 (CPU)."""
    scales = "per-channel" if per_channel else "per-tensor"
    return quantize_dynamic(model, per_channel), f"dynamic int8 Linear layers, {scales}"


@TEXT_COMPRESSORS.register("distil")
def _distil(
    model: nn.Module,
    context: TextCompressionContext,
    layers: int = 2,
    epochs: int = 2,
    temperature: float = 2.0,
    alpha: float = 0.5,
    lr: float = 1e-4,
) -> tuple[nn.Module, str]:
    """A ``layers``-layer student initialised from evenly spaced teacher layers, trained on the teacher's softened
    outputs and the labels; saved as a normal classifier folder in ``<output>/student``."""
    if context.train is None:
        raise ConfigError("compress.distil: needs labelled training text (--train)")
    classifier = context.classifier
    student = shrink_encoder(classifier.model, layers).train()
    trainable = [p.requires_grad for p in model.parameters()]
    task = DistillationTask(
        student,
        model,
        len(classifier.labels),
        temperature=temperature,
        alpha=alpha,
        mode="multilabel" if classifier.labels.multi_label else "multiclass",
        optimizer=ComponentSpec(name="adamw", lr=lr, weight_decay=0.01),
    )
    loader = classifier.loader(
        classifier.dataset(context.train), context.batch_size, shuffle=True, seed=context.trainer.seed
    )
    trainer = Trainer(context.trainer.model_copy(update={"max_epochs": epochs}))
    try:
        trainer.fit(task, loader)
    finally:  # the task froze the teacher in place: hand it back as it came
        for param, flag in zip(model.parameters(), trainable, strict=True):
            param.requires_grad_(flag)
    student.eval()
    distilled = TextClassifier(
        student, classifier.tokenizer, classifier.labels, max_length=classifier.max_length, encoder=classifier.encoder
    )
    distilled.save_pretrained(context.output_dir / "student")
    return student, f"{layers}-layer student, {epochs} epoch(s) T={temperature} α={alpha}"


@torch.inference_mode()
def throughput(model: nn.Module, loader: DataLoader, repeats: int = 1) -> float:
    """Sentences per second over every batch of ``loader`` (one warm-up batch first)."""
    model.eval()
    batches = [batch[0] for batch in loader]
    model(batches[0])
    start = time.perf_counter()
    for _ in range(repeats):
        for ids in batches:
            model(ids)
    elapsed = time.perf_counter() - start
    return repeats * sum(len(ids) for ids in batches) / elapsed


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader, multi_label: bool) -> float:
    """Accuracy (single-label) or exact-match ratio (multi-label, threshold 0.5)."""
    model.eval()
    correct = total = 0
    for ids, target in loader:
        logits = model(ids).float()
        if multi_label:
            correct += int(((logits > 0).float() == target).all(-1).sum())
        else:
            correct += int((logits.argmax(-1) == target).sum())
        total += len(target)
    return correct / max(total, 1)


@dataclass
class TextCompressionResult:
    rows: list[TextCompressionRow]
    table: str
    output_dir: Path


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
) -> TextCompressionResult:
    """Compress a fine-tuned classifier with each method and measure every variant against fp32 on ``eval_table``.

    Writes ``compression.md`` and ``compression.json`` into ``output_dir``. ``options`` maps a method to its keyword
    arguments (``{"distil": {"layers": 3}}``). Everything runs on the CPU (int8 kernels are CPU-only); latencies are
    medians of ``repeats`` timed passes.
    """
    clf = classifier if isinstance(classifier, TextClassifier) else TextClassifier.from_pretrained(classifier)
    options = options or {}
    unknown = [m for m in [*methods, *options] if m not in TEXT_COMPRESSORS]
    if unknown:
        raise ConfigError(f"compress: unknown method(s) {unknown}; choose from {TEXT_COMPRESSORS.names()}")
    if "distil" in methods and train_table is None:
        raise ConfigError("compress.distil: needs labelled training text (--train)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    base = (trainer or TrainerConfig()).model_copy(
        update={"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "precision": "32-true"}
    )
    base = base.model_copy(update={"progress": "none"}) if base.progress == "auto" else base
    context = TextCompressionContext(clf, train_table, batch_size, base, output_dir)
    model = clf.model.cpu().eval()
    loader = clf.loader(clf.dataset(eval_table), batch_size)
    example = next(iter(loader))[0][:1]  # the longest evaluation sentence, batch of one

    def row(variant: nn.Module, name: str, details: str) -> TextCompressionRow:
        measured = measure(
            variant,
            lambda m: accuracy(m, loader, clf.labels.multi_label),
            example,
            name=name,
            details=details,
            repeats=repeats,
            warmup=min(5, repeats),
        )
        return TextCompressionRow(measured, throughput(variant, loader))

    rows = [row(model, "fp32", f"{clf.encoder}, {clf.model.config.num_hidden_layers} layers")]
    for method in methods:
        variant, details = TEXT_COMPRESSORS.create(
            method, where=f"compress.{method}", runtime={"model": model, "context": context}, **options.get(method, {})
        )
        rows.append(row(variant, method, details))
    table = text_compression_table(rows)
    (output_dir / "compression.md").write_text(table + "\n", encoding="utf-8")
    payload = [asdict(r.row) | {"sentences_per_s": r.sentences_per_s} for r in rows]
    (output_dir / "compression.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return TextCompressionResult(rows, table, output_dir)


def text_compression_table(rows: list[TextCompressionRow]) -> str:
    """The core compression table with a whole-file throughput column (sentences/s and × fp32)."""
    lines = compression_table([r.row for r in rows]).splitlines()
    base = rows[0].sentences_per_s
    lines[0] += " sent/s | sent/s × |"
    lines[1] += "---:|---:|"
    for i, r in enumerate(rows, start=2):
        lines[i] += f" {r.sentences_per_s:.1f} | {r.sentences_per_s / base:.2f} |"
    return "\n".join(lines)
