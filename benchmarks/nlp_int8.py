"""Inference of a fine-tuned MiniLM-L6 SST-2 classifier: fp32 vs dynamic int8 vs a distilled 3-layer student.

Runs ``tujie_nlp.compress.compress_text`` (the code behind ``tujie nlp compress``) on SST-2 dev (872 sentences):
throughput is sentences/s over the whole dev set (dynamic padding, length-sorted batches of 32) on this CPU, size is
the saved state dict. ``--model DIR`` takes a classifier saved by ``benchmarks/nlp_sst2.py --save-model DIR``;
without it the script first fine-tunes MiniLM-L6 on a fixed sample of SST-2 train (3,000 rows with ``--quick``,
else 12,000) for one epoch. The student is distilled on 12,000 training rows (3,000 with ``--quick``).

Anchor: PyTorch's tutorial "Dynamic quantization on BERT" (BERT-base, MRPC): 438 → 181 MB, F1 unchanged, ≈ 1.8×
faster. Goal: int8 ≥ 1.6× the fp32 throughput with at most 1 point of accuracy lost.

    python benchmarks/nlp_int8.py [--quick] [--json PATH] [--model DIR] [--per-tensor]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import Row, data_dir, parse_args, report
from nlp_sst2 import sample_rows

from tujie_core import train_from_config
from tujie_nlp.classifier import TextClassifier
from tujie_nlp.compress import compress_text
from tujie_nlp.data import read_texts
from tujie_nlp.run import TextRunConfig

ANCHOR = "PyTorch tutorial 'Dynamic quantization on BERT' (BERT-base, MRPC)"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="a fine-tuned SST-2 classifier folder")
    parser.add_argument("--per-tensor", action="store_true", help="one int8 scale per weight tensor, not per channel")


def fine_tune(train: Path, dev: Path, output: Path) -> TextClassifier:
    config = TextRunConfig.model_validate(
        {
            "name": "sst2-int8",
            "output_dir": str(output),
            "data": {"train": str(train), "val": str(dev), "text_column": "sentence", "max_length": 66},
            "optimizer": {"name": "adamw", "lr": 6e-5, "weight_decay": 0.01},
            "warmup_ratio": 0.06,
            "trainer": {"max_epochs": 1, "monitor": "val/accuracy", "mode": "max", "progress": "none"},
        }
    )
    return train_from_config(config).model


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    folder = data_dir() / "sst2"
    rows_used = 3000 if args.quick else 12000
    with tempfile.TemporaryDirectory() as tmp:
        sample = sample_rows(folder / "train.tsv", Path(tmp) / "train-sample.tsv", rows_used)
        if args.model is not None:
            classifier = TextClassifier.from_pretrained(args.model)
        else:
            classifier = fine_tune(sample, folder / "dev.tsv", Path(tmp))
        dev = read_texts(folder / "dev.tsv", text_column="sentence")
        train = read_texts(sample, text_column="sentence")
        result = compress_text(
            classifier,
            dev,
            Path(tmp) / "compression",
            methods=["int8", "distil"],
            options={"int8": {"per_channel": not args.per_tensor}, "distil": {"layers": 3, "epochs": 1, "lr": 1e-4}},
            train_table=train,
            repeats=20 if args.quick else 50,
        )
    print(f"\n### SST-2 dev, {torch.get_num_threads()} torch threads\n\n{result.table}")
    fp32, int8, distil = result.rows
    base_acc = 100 * fp32.metric
    rows = [
        Row("fp32", "SST-2 dev accuracy", base_acc, None, "", None, True, "%"),
        Row("int8", "accuracy change", 100 * int8.metric - base_acc, 0.0, ANCHOR, -1.0, True, "pts"),
        Row("int8", "throughput × fp32", int8.throughput / fp32.throughput, 1.8, ANCHOR, 1.6, True, "×"),
        Row("int8", "size × smaller", fp32.size_mb / int8.size_mb, 438 / 181, ANCHOR, None, True, "×"),
        Row("fp32", "throughput", fp32.throughput, None, "", None, True, "sent/s"),
        Row("int8", "throughput", int8.throughput, None, "", None, True, "sent/s"),
        Row("distil 3-layer", "accuracy change", 100 * distil.metric - base_acc, None, "", None, True, "pts"),
        Row("distil 3-layer", "throughput × fp32", distil.throughput / fp32.throughput, None, "", None, True, "×"),
    ]
    report("nlp_int8: MiniLM-L6 SST-2 inference, fp32 vs int8 vs distilled", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
