"""SST-2: fine-tune the default MiniLM-L6 on GLUE's train.tsv and report dev accuracy and wall time on this machine.

Runs a text run (the code behind ``tujie nlp train``) with train = ``sst2/train.tsv`` (67,349
phrases) and val = ``sst2/dev.tsv`` (872 sentences); dev accuracy is that of the best epoch's checkpoint.
``--tapt-epochs N`` first runs task-adaptive pre-training (Gururangan et al. 2020: ``pretrain_mlm``, the code behind
``tujie nlp pretrain``, masked-LM on the training sentences without their labels) and fine-tunes from its output.
``--quick`` uses a fixed random 3,000-row sample for one epoch of each stage. ``--save-model DIR`` keeps the
fine-tuned classifier (input of ``benchmarks/nlp_int8.py --model DIR``).

Anchors (SST-2 dev accuracy): MiniLM 6×384 91.3 (Wang et al. 2020), DistilBERT 91.3 (Sanh et al. 2019),
BERT-small 89.7 and BERT-tiny 83.2 (Turc et al. 2019).

``--precision bf16-mixed`` trains under bfloat16 autocast (1.7× faster on CPUs with AVX-512 BF16); ``--rdrop A``
adds R-Drop; ``--ema-decay D`` evaluates and keeps an exponential moving average of the weights;
``--no-group-by-length`` trains on random batches instead of length-grouped ones; ``--encoder E`` starts from another
encoder (short name or folder).

    python benchmarks/nlp_sst2.py [--quick] [--json PATH] [--epochs N] [--lr LR] [--pooling P]
        [--layer-lr-decay D] [--precision P] [--rdrop A] [--label-smoothing E] [--ema-decay D]
        [--no-group-by-length] [--seed S] [--encoder E] [--tapt-epochs N] [--save-model DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import Row, data_dir, parse_args, report

from tujie_core import train_from_config
from tujie_nlp.pretrain import pretrain_mlm
from tujie_nlp.run import TextRunConfig

ANCHORS = [
    ("MiniLM 6×384", 91.3, "Wang et al. 2020 (MiniLM), SST-2 dev"),
    ("DistilBERT", 91.3, "Sanh et al. 2019, SST-2 dev"),
    ("BERT-small", 89.7, "Turc et al. 2019, SST-2 dev"),
    ("BERT-tiny", 83.2, "Turc et al. 2019, SST-2 dev"),
]
GOAL = 91.0


def sample_rows(source: Path, target: Path, n: int, seed: int = 0) -> Path:
    header, *rows = source.read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(rows)
    target.write_text("\n".join([header, *rows[:n]]) + "\n", encoding="utf-8")
    return target


def adapt(args: argparse.Namespace, train: Path, out: Path) -> Path:
    """Task-adaptive pre-training (Gururangan et al. 2020): masked-LM on the training sentences (no labels, no dev
    text), then fine-tuning starts from the adapted encoder."""
    text = out.with_suffix(".txt")
    rows = train.read_text(encoding="utf-8").splitlines()[1:]
    text.write_text("\n".join(row.split("\t")[0] for row in rows) + "\n", encoding="utf-8")
    result = pretrain_mlm(
        text,
        out,
        encoder=args.encoder,
        max_length=66,
        batch_size=32,
        lr=1e-4,
        val_fraction=0.02,
        max_epochs=args.tapt_epochs,
        precision=args.precision,
        seed=args.seed,
        progress="plain",
        log_every_n_steps=500,
    )
    print(f"masked-LM validation loss {result.val_loss_before:.3f} → {result.val_loss_after:.3f}")
    return result.model_dir


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="minilm-l6", help="short name or folder (a pretrain output)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--pooling", choices=["auto", "cls", "mean"], default="auto")
    parser.add_argument("--layer-lr-decay", type=float, default=1.0, help="lr × decay per layer below the head")
    parser.add_argument("--precision", default="32-true", help="Fabric precision, e.g. bf16-mixed")
    parser.add_argument("--rdrop", type=float, default=0.0, help="R-Drop weight (0: off)")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--no-group-by-length", action="store_true", help="random training batches (more padding)")
    parser.add_argument("--ema-decay", type=float, help="validate and keep an EMA of the weights (e.g. 0.999)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tapt-epochs", type=int, default=0, help="masked-LM epochs on the training sentences first")
    parser.add_argument("--save-model", type=Path, help="copy the fine-tuned classifier here")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    folder = data_dir() / "sst2"
    with tempfile.TemporaryDirectory() as tmp:
        train = folder / "train.tsv"
        if args.quick:
            train = sample_rows(train, Path(tmp) / "train-sample.tsv", 3000)
        encoder, tapt_wall = args.encoder, None
        if args.tapt_epochs:
            start = time.perf_counter()
            encoder = adapt(args, train, Path(tmp) / "tapt")
            tapt_wall = time.perf_counter() - start
        config = TextRunConfig.model_validate(
            {
                "name": "sst2",
                "output_dir": tmp,
                "encoder": str(encoder),
                "pooling": args.pooling,
                "transfer": {"layer_lr_decay": args.layer_lr_decay},
                "rdrop": args.rdrop,
                "label_smoothing": args.label_smoothing,
                "data": {
                    "train": str(train),
                    "val": str(folder / "dev.tsv"),
                    "text_column": "sentence",
                    "max_length": 66,
                    "batch_size": 32,
                    "group_by_length": not args.no_group_by_length,
                },
                "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 0.01},
                "warmup_ratio": 0.06,
                "trainer": {
                    "max_epochs": 1 if args.quick else args.epochs,
                    "precision": args.precision,
                    "ema_decay": args.ema_decay,
                    "seed": args.seed,
                    "monitor": "val/accuracy",
                    "mode": "max",
                    "progress": "plain",
                    "log_every_n_steps": 200,
                },
            }
        )
        start = time.perf_counter()
        result = train_from_config(config)
        wall = time.perf_counter() - start
        if args.save_model is not None:
            shutil.copytree(result.run_dir / "model", args.save_model, dirs_exist_ok=True)
        history = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    print("\nper-epoch history:\n" + "\n".join(history))
    accuracy = 100 * result.metrics["val/accuracy"]
    rows = [
        Row(f"MiniLM-L6 (ours) vs {name}", "SST-2 dev accuracy", accuracy, anchor, source, GOAL, True, "%")
        for name, anchor, source in ANCHORS
    ]
    threads = f"{torch.get_num_threads()} CPU threads"
    if tapt_wall is not None:
        rows.append(Row("masked-LM pre-training wall time", threads, tapt_wall / 60, None, "", None, False, "min"))
    rows.append(Row("fine-tuning wall time", threads, wall / 60, None, "", None, False, "min"))
    report("nlp_sst2: SST-2 fine-tuning (MiniLM-L6)", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
