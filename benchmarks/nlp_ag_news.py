"""AG News (4 topics): fine-tune MiniLM-L6 on a fixed stratified 80/20 split of ``ag_news/test.csv``.

Only the 7,600-row AG News test file is available, so it is split 80/20 (stratified, seed 0) into a training pool
and a held-out test part (1,520 rows); 10 % of the pool (stratified) picks the best epoch. Text is the title and
the description joined by ". " (the file's ``\\`` line escapes become spaces). Runs a text run through the core.
``--quick`` trains one epoch on a stratified 25 % of the pool.

Anchor: DistilBERT ≈ 94.8 % on the official test set after training on all 120,000 training articles (ours trains on
5,472), and fastText with bigrams 92.5 % (Joulin et al. 2017) — context, not a like-for-like comparison.

    python benchmarks/nlp_ag_news.py [--quick] [--json PATH] [--epochs N]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch
from _common import Row, data_dir, parse_args, report
from sklearn.model_selection import train_test_split

from tujie_core import train_from_config
from tujie_nlp.run import TextRunConfig

DISTILBERT = "DistilBERT, trained on the full AG News train set"
FASTTEXT = "fastText bigrams, Joulin et al. 2017, full train set"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=3)


def split_files(folder: Path, out: Path, pool_share: float) -> tuple[Path, Path]:
    """Write the 80 % pool (optionally subsampled) and the 20 % test part as ``text,label`` CSVs."""
    names = (folder / "classes.txt").read_text(encoding="utf-8").split()
    with (folder / "test.csv").open(newline="", encoding="utf-8") as handle:
        rows = [(f"{title}. {body}".replace("\\", " "), names[int(cls) - 1]) for cls, title, body in csv.reader(handle)]
    labels = [label for _, label in rows]
    pool, test = train_test_split(rows, test_size=0.2, random_state=0, stratify=labels)
    if pool_share < 1:
        pool, _ = train_test_split(pool, train_size=pool_share, random_state=0, stratify=[lab for _, lab in pool])
    paths = []
    for name, part in (("pool", pool), ("test", test)):
        path = out / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(part)
        paths.append(path)
    return paths[0], paths[1]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    with tempfile.TemporaryDirectory() as tmp:
        pool, test = split_files(data_dir() / "ag_news", Path(tmp), 0.25 if args.quick else 1.0)
        config = TextRunConfig.model_validate(
            {
                "name": "ag_news",
                "output_dir": tmp,
                "data": {"train": str(pool), "test": str(test), "val_fraction": 0.1, "max_length": 128},
                "optimizer": {"name": "adamw", "lr": 6e-5, "weight_decay": 0.01},
                "warmup_ratio": 0.06,
                "trainer": {
                    "max_epochs": 1 if args.quick else args.epochs,
                    "monitor": "val/accuracy",
                    "mode": "max",
                    "progress": "plain",
                },
            }
        )
        start = time.perf_counter()
        result = train_from_config(config)
        wall = time.perf_counter() - start
        sizes = {split: len(table) for split, table in result.details["tables"].items() if table is not None}
    accuracy = 100 * result.metrics["test/accuracy"]
    print(f"\nsplit sizes: {sizes}")
    rows = [
        Row("MiniLM-L6 (ours) vs DistilBERT", "test accuracy", accuracy, 94.8, DISTILBERT, None, True, "%"),
        Row("MiniLM-L6 (ours) vs fastText", "test accuracy", accuracy, 92.5, FASTTEXT, None, True, "%"),
        Row("MiniLM-L6 (ours)", "test macro-F1", 100 * result.metrics["test/f1_macro"], None, "", None, True, "%"),
        Row("fine-tuning wall time", f"{torch.get_num_threads()} CPU threads", wall / 60, None, "", None, False, "min"),
    ]
    report("nlp_ag_news: AG News 80/20 split (MiniLM-L6)", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
