"""SST-2: fine-tune the default MiniLM-L6 on GLUE's train.tsv and report dev accuracy and wall time on this machine.

Runs ``tujie_nlp.run.train_text`` (the code behind ``tujie nlp train``) with train = ``sst2/train.tsv`` (67,349
phrases) and val = ``sst2/dev.tsv`` (872 sentences); dev accuracy is that of the best epoch's checkpoint.
``--quick`` fine-tunes on a fixed random 3,000-row sample for one epoch. ``--save-model DIR`` keeps the fine-tuned
classifier (input of ``benchmarks/nlp_int8.py --model DIR``).

Anchors (SST-2 dev accuracy): MiniLM 6×384 91.3 (Wang et al. 2020), DistilBERT 91.3 (Sanh et al. 2019),
BERT-small 89.7 and BERT-tiny 83.2 (Turc et al. 2019).

    python benchmarks/nlp_sst2.py [--quick] [--json PATH] [--epochs N] [--lr LR] [--pooling P]
        [--layer-lr-decay D] [--save-model DIR]
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

from tujie_nlp.run import TextRunConfig, train_text

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


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--pooling", choices=["auto", "cls", "mean"], default="auto")
    parser.add_argument("--layer-lr-decay", type=float, default=1.0, help="lr × decay per layer below the head")
    parser.add_argument("--save-model", type=Path, help="copy the fine-tuned classifier here")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    folder = data_dir() / "sst2"
    with tempfile.TemporaryDirectory() as tmp:
        train = folder / "train.tsv"
        if args.quick:
            train = sample_rows(train, Path(tmp) / "train-sample.tsv", 3000)
        config = TextRunConfig.model_validate(
            {
                "name": "sst2",
                "output_dir": tmp,
                "encoder": "minilm-l6",
                "pooling": args.pooling,
                "transfer": {"layer_lr_decay": args.layer_lr_decay},
                "data": {
                    "train": str(train),
                    "val": str(folder / "dev.tsv"),
                    "text_column": "sentence",
                    "max_length": 66,
                    "batch_size": 32,
                },
                "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 0.01},
                "warmup_ratio": 0.06,
                "trainer": {
                    "max_epochs": 1 if args.quick else args.epochs,
                    "monitor": "val/accuracy",
                    "mode": "max",
                    "progress": "plain",
                    "log_every_n_steps": 200,
                },
            }
        )
        start = time.perf_counter()
        result = train_text(config)
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
    threads = torch.get_num_threads()
    rows.append(Row("fine-tuning wall time", f"{threads} CPU threads", wall / 60, None, "", None, False, "min"))
    report("nlp_sst2: SST-2 fine-tuning (MiniLM-L6)", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
