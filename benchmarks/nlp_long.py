"""Long documents: AG News "digests" of six articles, where only the majority topic is the label.

No long-document corpus lies in ``$TUJIE_DATA_DIR``, so one is built reproducibly from ``ag_news/test.csv``: the
7,600 articles are split 80/10/10 (stratified, seed 0) first, so no article appears in two splits; each split's
articles are then dealt into digests of 6 articles in random order, 4 from one topic (the label) and 2 from the
others (seed 0), until a topic runs out. A digest is ~300 MiniLM tokens: reading the first 128 sees about two
articles, which may be the two off-topic ones.

Rows (accuracy, macro-F1, wall time of fit + evaluate; prediction throughput in documents/s):

- the TF-IDF + logistic-regression baseline every text run now fits (``--baseline-only``);
- MiniLM-L6 fine-tuned with head-128 truncation (the default) and with head+tail truncation;
- the same encoder reading every digest as windows of 128 tokens every 112 (``data.windows``), pooled by mean and
  by max; and a cheaper variant with at most 2 windows (the first and the last) per digest.

Goals (issue 17): windows ≥ 5 points above head-128 and above the baseline; prediction with windows ≥ 0.5× the
documents/s of head-128. Throughput is measured after every model is trained, each model's whole test file
predicted in turn, twice (the better pass counts), so the models compete under the same machine load.

    python benchmarks/nlp_long.py [--quick] [--json PATH] [--epochs N] [--parts baseline,head,...] [--set K=V]

``--parts`` also takes ``windows-attention``; ``--set`` passes config overrides to every encoder run
(``--set optimizer.lr=1e-4``).

``--quick``: a quarter of the training digests, one epoch, the baseline, head and windows-mean only.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

from _common import Row, data_dir, parse_args, report
from sklearn.model_selection import train_test_split

from tujie_core import train_from_config
from tujie_nlp.run import load_text_config, predict_file

ARTICLES, MAJORITY = 6, 4
WINDOWS = ["data.windows.size=128", "data.windows.stride=112"]
PARTS: dict[str, tuple[str, list[str]]] = {  # name → (row label, config overrides)
    "baseline": ("TF-IDF + logistic regression", ["baseline_only=true"]),
    "head": ("MiniLM-L6, head-128 truncation", ["data.truncation=head"]),
    "head+tail": ("MiniLM-L6, head+tail truncation, 128 tokens", ["data.truncation=head+tail"]),
    "windows-mean": ("MiniLM-L6, windows 128/112, mean pooling", [*WINDOWS, "data.windows.pool=mean"]),
    "windows-max": ("MiniLM-L6, windows 128/112, max pooling", [*WINDOWS, "data.windows.pool=max"]),
    "windows-mean-2": (
        "MiniLM-L6, at most 2 windows (first, last), mean pooling",
        [*WINDOWS, "data.windows.pool=mean", "data.windows.max_windows=2"],
    ),
}
PARTS["windows-attention"] = (
    "MiniLM-L6, windows 128/112, attention pooling",
    [*WINDOWS, "data.windows.pool=attention"],
)
DEFAULT_PARTS = [p for p in PARTS if p != "windows-attention"]
QUICK_PARTS = "baseline,head,windows-mean"
GOAL_POINTS = 5.0  # windows over head-128, in accuracy points
GOAL_SPEED = 0.5  # windows' documents/s over head-128's


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS))
    parser.add_argument("--set", action="append", default=[], help="a config override for the encoder runs")


def read_articles(folder: Path) -> list[tuple[str, str]]:
    names = (folder / "classes.txt").read_text(encoding="utf-8").split()
    with (folder / "test.csv").open(newline="", encoding="utf-8") as handle:
        return [(f"{title}. {body}".replace("\\", " "), names[int(c) - 1]) for c, title, body in csv.reader(handle)]


def digests(articles: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
    """Deal ``articles`` into digests: 4 of the label's topic + 2 of others, shuffled, until a topic runs out."""
    rng = random.Random(seed)
    queues: dict[str, list[str]] = {}
    for text, label in articles:
        queues.setdefault(label, []).append(text)
    for queue in queues.values():
        rng.shuffle(queue)
    topics = sorted(queues)
    out = []
    while True:
        label = topics[len(out) % len(topics)]
        others = [t for t in topics if t != label]
        picks = [(label, MAJORITY)] + [(t, 1) for t in rng.sample(others, ARTICLES - MAJORITY)]
        if any(len(queues[t]) < n for t, n in picks):
            return out
        parts = [queues[t].pop() for t, n in picks for _ in range(n)]
        rng.shuffle(parts)
        out.append((" ".join(parts), label))


def write(rows: list[tuple[str, str]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def build(folder: Path, out: Path, train_share: float) -> dict[str, Path]:
    articles = read_articles(folder)
    labels = [label for _, label in articles]
    train, rest = train_test_split(articles, test_size=0.2, random_state=0, stratify=labels)
    val, test = train_test_split(rest, test_size=0.5, random_state=0, stratify=[label for _, label in rest])
    splits = {"train": digests(train, 0), "val": digests(val, 1), "test": digests(test, 2)}
    if train_share < 1:
        splits["train"] = splits["train"][: int(len(splits["train"]) * train_share)]
    return {name: write(rows, out / f"{name}.csv") for name, rows in splits.items()}


def run(files: dict[str, Path], out: Path, epochs: int, *extra: str):
    overrides = [
        f"data.train={files['train']}",
        f"data.val={files['val']}",
        f"data.test={files['test']}",
        f"trainer.max_epochs={epochs}",
        "trainer.progress=none",
        f"output_dir={out}",
        *extra,
    ]
    started = time.perf_counter()
    result = train_from_config(load_text_config(None, overrides))
    return result, time.perf_counter() - started


def throughput(model: object, files: dict[str, Path], out: Path) -> float:
    summary = predict_file(model, files["test"], out / "predictions.csv", resume=False)  # type: ignore[arg-type]
    return summary.rows_per_second


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    chosen = QUICK_PARTS if args.quick and args.parts == ",".join(DEFAULT_PARTS) else args.parts
    parts = [p.strip() for p in chosen.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    epochs = 1 if args.quick else args.epochs
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = build(data_dir() / "ag_news", root, 0.25 if args.quick else 1.0)
        counts = {name: sum(1 for _ in path.open()) - 1 for name, path in files.items()}
        print(f"digests: {counts}", flush=True)
        results, models = {}, {}
        for part in parts:
            label, overrides = PARTS[part]
            extra = overrides if part == "baseline" else [*overrides, "baseline=false", *args.set]
            result, seconds = run(files, root / part, epochs, *extra)
            if part == "baseline":
                from tujie_nlp.baseline import TextBaseline

                models[part] = TextBaseline.load(result.run_dir / "baseline")
            else:
                models[part] = result.model
            results[part] = (result.metrics, seconds)
            shown = {k: round(v, 4) for k, v in result.metrics.items() if k.endswith(("/accuracy", "/f1_macro"))}
            print(f"{label}: {shown}; {seconds:.0f} s", flush=True)
        speeds: dict[str, float] = {}
        for _ in range(2):  # interleaved passes: every model meets the same machine load
            for part, model in models.items():
                speeds[part] = max(speeds.get(part, 0.0), throughput(model, files, root / part))
        print("documents/s: " + ", ".join(f"{p} {v:.1f}" for p, v in speeds.items()), flush=True)
        head = results.get("head")
        for part in parts:
            metrics, seconds = results[part]
            label = PARTS[part][0] + ("" if part == "baseline" else f", {epochs} epoch(s)")
            if args.set and part != "baseline":
                label += ", " + ", ".join(args.set)
            windowed = part.startswith("windows")
            goal_accuracy = None
            if windowed and head is not None:
                goal_accuracy = 100 * head[0]["test/accuracy"] + GOAL_POINTS
                if "baseline" in results:
                    goal_accuracy = max(goal_accuracy, 100 * results["baseline"][0]["test/accuracy"])
            goal_speed = GOAL_SPEED * speeds["head"] if windowed and "head" in speeds else None
            rows += [
                Row(label, "test accuracy", 100 * metrics["test/accuracy"], None, "", goal_accuracy, True, "%"),
                Row(label, "test macro-F1", metrics["test/f1_macro"], None, "", None, True, ""),
                Row(label, "wall time (fit + evaluate)", seconds, None, "", None, False, "s"),
                Row(label, "prediction throughput", speeds[part], None, "", goal_speed, True, "documents/s"),
            ]
    report("nlp_long", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
