"""Domain-adaptive pre-training (book ch. 13; Gururangan et al. 2020): continue masked-language-model training of
an encoder on plain domain text, then fine-tune from the result (``encoder: <output>/model``).

Masking follows BERT: 15 % of the non-special tokens are chosen (at least one per line); of those 80 % become
``[MASK]``, 10 % a random token and 10 % stay. Training masks are drawn fresh each batch from torch's RNG (saved in
checkpoints, so a resumed run masks exactly as an uninterrupted one); validation masks are drawn once with a fixed
seed, so the validation loss before and after training is measured on the same masked tokens.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.fabric import seed_everything
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tujie_core import DataError, StepOutput, Task, Trainer, TrainerConfig
from tujie_core.config import ComponentSpec
from tujie_nlp.data import BadRow, LengthGroupedBatchSampler, TokenizedTexts
from tujie_nlp.encoders import (
    DEFAULT_ENCODER,
    POOLING_CONFIG,
    hub_options,
    load_tokenizer,
    quiet_transformers,
    resolve_encoder,
)

IGNORE = -100


class MaskedLM(nn.Module):
    """``AutoModelForMaskedLM`` behind ``forward(input_ids) → token logits`` (mask from the padding id)."""

    def __init__(self, hf_model: nn.Module, pad_token_id: int) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.pad_token_id = int(pad_token_id)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.hf_model(input_ids=input_ids, attention_mask=input_ids.ne(self.pad_token_id).long()).logits


class MaskingCollator:
    """Pad a batch and mask it BERT-style; returns ``(masked input_ids, labels)`` with ``-100`` where not masked."""

    def __init__(self, tokenizer: Any, probability: float = 0.15, generator: torch.Generator | None = None) -> None:
        if not 0 < probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {probability}")
        self.pad = int(tokenizer.pad_token_id)
        self.mask = int(tokenizer.mask_token_id)
        self.vocab = len(tokenizer)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.probability = probability
        self.generator = generator

    def __call__(self, items: list[tuple[list[int]]]) -> tuple[Tensor, Tensor]:
        width = max(len(item[0]) for item in items)
        ids = torch.full((len(items), width), self.pad, dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item[0])] = torch.as_tensor(item[0])
        g = self.generator
        candidates = ~torch.isin(ids, self.special)
        scores = torch.rand(ids.shape, generator=g).masked_fill(~candidates, 2.0)
        chosen = (scores < self.probability) & candidates
        empty = ~chosen.any(-1) & candidates.any(-1)  # short lines: mask at least one token each
        chosen[empty, scores[empty].argmin(-1)] = True
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        draw = torch.rand(ids.shape, generator=g)
        masked = ids.clone()
        masked[chosen & (draw < 0.8)] = self.mask
        swap = chosen & (draw >= 0.8) & (draw < 0.9)
        masked[swap] = torch.randint(self.vocab, ids.shape, generator=g)[swap]
        return masked, labels


class MaskedLMTask(Task):
    """Cross-entropy over the masked positions (perplexity is ``exp`` of it)."""

    kind = "mlm"

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(outputs.flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE)

    def num_items(self, batch: Any) -> int:
        """Masked tokens: the loss is their mean, so accumulation and processes weight batches by them."""
        return int(self.unpack(batch)[1].ne(IGNORE).sum())

    def step(self, batch: Any, with_predictions: bool = True, sample_losses: bool = False) -> StepOutput:
        inputs, target = self.unpack(batch)  # no per-sample losses: the loss is a mean over masked tokens
        outputs = self.forward(inputs)
        return StepOutput(self.loss(outputs, target), outputs.detach()[:0], target[:0], self.num_items(batch))


def keep_pooling(source: str | Path, model_dir: Path) -> None:
    """Copy a sentence-transformers pooling config (``1_Pooling/config.json``) from a local encoder folder, so that
    ``pooling: auto`` treats the adapted encoder as it treated the original (mean pooling for the default MiniLM)."""
    config = Path(source) / POOLING_CONFIG
    if config.is_file():
        (model_dir / POOLING_CONFIG).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config, model_dir / POOLING_CONFIG)


def read_lines(path: str | Path) -> tuple[list[str], list[BadRow]]:
    """Non-empty lines of a UTF-8 text file; lines with bytes that are not UTF-8 are skipped and reported."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    lines, bad = [], []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            bad.append(BadRow(number, "bytes that are not UTF-8"))
            continue
        if text:
            lines.append(text)
    if not lines:
        raise DataError(f"{path}: no text lines")
    return lines, bad


@dataclass
class PretrainResult:
    output_dir: Path
    model_dir: Path
    val_loss_before: float
    val_loss_after: float
    steps: int
    bad_rows: list[BadRow]

    @property
    def perplexity_before(self) -> float:
        return math.exp(self.val_loss_before)

    @property
    def perplexity_after(self) -> float:
        return math.exp(self.val_loss_after)


def pretrain_mlm(
    text_file: str | Path,
    output_dir: str | Path,
    *,
    encoder: str | Path = DEFAULT_ENCODER,
    max_length: int = 128,
    mlm_probability: float = 0.15,
    batch_size: int = 32,
    lr: float = 5e-5,
    weight_decay: float = 0.01,
    val_fraction: float = 0.1,
    resume: bool = False,
    trainer: TrainerConfig | None = None,
    **trainer_options: Any,
) -> PretrainResult:
    """Continue MLM training of ``encoder`` on the lines of ``text_file``; the adapted encoder is saved to
    ``<output_dir>/model`` (safetensors + tokenizer), checkpoints to ``<output_dir>/checkpoints``.

    ``resume=True`` continues from ``<output_dir>/checkpoints/last.ckpt``. ``trainer_options`` are
    :class:`~tujie_core.TrainerConfig` fields (``max_epochs``, ``max_steps``, ``accelerator``, ...).
    """
    from transformers import AutoModelForMaskedLM

    output_dir = Path(output_dir)
    runner = Trainer(trainer or TrainerConfig(max_epochs=1), run_dir=output_dir, **trainer_options)
    config = runner.config
    seed_everything(config.seed, workers=True, verbose=False)
    lines, bad = read_lines(text_file)
    tokenizer = load_tokenizer(encoder)
    if tokenizer.mask_token_id is None:
        raise DataError(f"encoder '{encoder}': its tokenizer has no mask token, so it cannot do masked-LM training")
    with quiet_transformers():
        hf = AutoModelForMaskedLM.from_pretrained(resolve_encoder(encoder), **hub_options())
    model = MaskedLM(hf, tokenizer.pad_token_id)

    ids = tokenizer(lines, truncation=True, max_length=max_length)["input_ids"]
    n_val = round(len(ids) * val_fraction) if len(ids) > 1 else 0
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(config.seed)).tolist()
    train_ids = [ids[i] for i in order[n_val:]]
    val_ids = [ids[i] for i in order[:n_val]] or train_ids  # tiny files: measure on the training lines
    train_data, val_data = TokenizedTexts(train_ids), TokenizedTexts(val_ids)
    collate = MaskingCollator(tokenizer, mlm_probability)
    fixed = MaskingCollator(tokenizer, mlm_probability, torch.Generator().manual_seed(config.seed + 1))
    masked = [fixed([val_data[i] for i in index]) for index in LengthGroupedBatchSampler(val_data.lengths, 64)]
    # loaders with their own generators: making an iterator must not draw from the global RNG (exact resume)
    val_batches = DataLoader(masked, batch_size=None, generator=torch.Generator())  # batched and masked once
    train_loader = DataLoader(
        train_data,
        batch_sampler=LengthGroupedBatchSampler(train_data.lengths, batch_size, seed=config.seed),
        collate_fn=collate,
        generator=torch.Generator().manual_seed(config.seed),
    )
    steps = min(config.max_epochs * len(train_loader), config.max_steps or 10**12)
    task = MaskedLMTask(
        model,
        optimizer=ComponentSpec(name="adamw", lr=lr, weight_decay=weight_decay),
        scheduler=ComponentSpec(name="linear", warmup_steps=int(0.06 * steps)),
    )
    before = runner.validate(task, val_batches)["val/loss"]
    ckpt = output_dir / "checkpoints" / "last.ckpt"
    if resume and not ckpt.is_file():
        raise DataError(f"{output_dir}: nothing to resume (no checkpoints/last.ckpt)")
    runner.fit(task, train_loader, val_batches, ckpt_path=ckpt if resume else None)
    after = runner.validate(task, val_batches)["val/loss"]
    model_dir = output_dir / "model"
    if runner.fabric.is_global_zero:
        with quiet_transformers():
            hf.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        keep_pooling(resolve_encoder(encoder), model_dir)
        summary = {"val_loss_before": before, "val_loss_after": after, "steps": runner.state.step}
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return PretrainResult(output_dir, model_dir, before, after, runner.state.step, bad)
