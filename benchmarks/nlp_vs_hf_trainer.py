"""tujie ``TextClassifier.fit`` vs the Hugging Face ``Trainer``: one epoch of MiniLM-L6 on SST-2, like for like.

Both sides fine-tune the shipped MiniLM-L6 (``resolve_encoder("minilm-l6")``, a new 2-class head initialised from
the same seed) on the same seeded sample of SST-2 ``train.tsv`` (3,000 phrases; ``--quick``: 480), for one epoch,
with the same settings: batch 32, max length 64 (dynamic padding to each batch's longest row), random batches
(tujie ``group_by_length=False``, HF ``train_sampling_strategy="random"``), ``[CLS]`` pooling (the HF head), fp32,
``torch.set_num_threads(2)``, AdamW (lr ``--lr``, weight decay 0.01, none on biases and norm weights), a linear
schedule with the same warm-up steps, gradient clipping at global norm ``--max-grad-norm`` (the HF default 1.0; 0:
off on both sides). HF side: ``Trainer`` + ``TrainingArguments`` (no evaluation during training, no saving, no
logging, ``report_to=[]``, ``dataloader_num_workers=0``) with ``DataCollatorWithPadding``; its optimizer is the HF
default (``optim="adamw_torch_fused"`` on torch ≥ 2.8). tujie side: ``TextClassifier.fit`` (the core Trainer on
Lightning Fabric) with its defaults otherwise: training metrics on, AdamW fused (``build_optimizer``'s default; torch's
own CPU default, a loop over parameters, made tujie 1.14× slower here).

The two runs alternate (tujie, HF, tujie, HF, ...; one seed per round, the same on both sides) so that a busy
machine slows both alike. Wall time is that of the training epoch (first to last optimizer step, data loading
included; model loading, tokenisation and evaluation excluded), measured by a callback on each side; we report the
median over rounds of each, the median of the per-round ratio tujie / HF (goal ≤ 1.0) and SST-2 dev accuracy of
both (mean over rounds, the same evaluation code for both models). Padded tokens per epoch are counted on both
sides' own loaders to show that both do the same work.

    python benchmarks/nlp_vs_hf_trainer.py [--quick] [--json PATH] [--rounds N] [--train-size N] [--lr LR]
        [--max-grad-norm G] [--seed S]

Needs ``accelerate`` (the HF ``Trainer`` requires it); set ``TUJIE_DATA_DIR`` if the data are not in ../shared/data.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import Row, data_dir, parse_args, report

from tujie_core import Callback
from tujie_nlp import TextClassifier, read_texts
from tujie_nlp.data import TextTable
from tujie_nlp.encoders import load_tokenizer, quiet_transformers, resolve_encoder

ENCODER = "minilm-l6"
BATCH_SIZE = 32
MAX_LENGTH = 64
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
THREADS = 2
GOAL = 1.0
ANCHOR = "Hugging Face Trainer (transformers {version}), same data, model and settings, this machine"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="alternating tujie/HF rounds (default 3, quick 2)")
    parser.add_argument("--train-size", type=int, help="training sentences (default 3000, quick 480)")
    parser.add_argument("--lr", type=float, default=6e-5)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping on both sides (0: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of round 0 (round r uses seed + r)")


# ---- data ---------------------------------------------------------------------------------------------------------
def sample_rows(source: Path, target: Path, n: int, seed: int = 0) -> Path:
    """The first ``n`` rows of ``source`` after a seeded shuffle (as ``nlp_sst2.py --quick``)."""
    header, *rows = source.read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(rows)
    target.write_text("\n".join([header, *rows[:n]]) + "\n", encoding="utf-8")
    return target


def label_ids(table: TextTable) -> list[int]:
    return [int(row[0]) for row in table.labels or []]


# ---- shared evaluation ------------------------------------------------------------------------------------------
@torch.no_grad()
def dev_accuracy(hf_model: torch.nn.Module, tokenizer: Any, dev: TextTable, batch_size: int = 64) -> float:
    """Accuracy of a ``*ForSequenceClassification`` model ([CLS] head) on ``dev``: the same code for both sides."""
    hf_model.eval()
    labels = torch.tensor(label_ids(dev))
    correct = 0
    for start in range(0, len(dev), batch_size):
        texts = dev.texts[start : start + batch_size]
        inputs = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        logits = hf_model(**inputs).logits
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    return correct / len(dev)


# ---- tujie --------------------------------------------------------------------------------------------------------
class StepClock:
    """Timestamps of the epoch start and of every optimizer step's end, and the intra-op threads in use."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.threads = 0

    def start(self) -> None:
        self.threads = torch.get_num_threads()
        self.times.append(time.perf_counter())

    def tick(self) -> None:
        self.times.append(time.perf_counter())

    def timings(self) -> dict[str, float]:
        steps = [b - a for a, b in itertools.pairwise(self.times)]
        return {
            "epoch_s": self.times[-1] - self.times[0],
            "step_s": statistics.median(steps),
            "steps": len(steps),
            "threads": self.threads,
        }


class EpochTimer(Callback):
    def __init__(self) -> None:
        self.clock = StepClock()

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.clock.start()

    def on_train_step_end(self, trainer: Any, loss: Any) -> None:
        self.clock.tick()


def run_tujie(train: TextTable, dev: TextTable, args: argparse.Namespace, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)  # the new head's initial weights, as on the HF side
    clf = TextClassifier.from_encoder(ENCODER, labels=["0", "1"], max_length=MAX_LENGTH, pooling="cls")
    timer = EpochTimer()
    start = time.perf_counter()
    clf.fit(
        train,
        batch_size=BATCH_SIZE,
        lr=args.lr,
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
        group_by_length=False,
        max_epochs=1,
        accelerator="cpu",
        precision="32-true",
        seed=seed,
        gradient_clip_val=args.max_grad_norm or None,
        callbacks=[timer],
    )
    fit_wall = time.perf_counter() - start
    loader = clf.loader(clf.dataset(train), BATCH_SIZE, shuffle=True, seed=seed, group_by_length=False)
    padded = sum(ids.numel() for ids, _ in loader)  # the order the Trainer used (epoch 0 of the same sampler)
    return {
        **timer.clock.timings(),
        "fit_s": fit_wall,
        "padded_tokens": padded,
        "accuracy": dev_accuracy(clf.model.hf_model, clf.tokenizer, dev),
    }


# ---- Hugging Face -------------------------------------------------------------------------------------------------
def hf_timer() -> Any:
    from transformers import TrainerCallback

    class HFEpochTimer(TrainerCallback):
        def __init__(self) -> None:
            self.clock = StepClock()

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.clock.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.clock.tick()

    return HFEpochTimer()


class CountingCollator:
    """``DataCollatorWithPadding`` that also counts the padded tokens it hands out (batch × width)."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.padded_tokens = 0

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.collator(features)
        self.padded_tokens += batch["input_ids"].numel()
        return batch


def run_hf(train: TextTable, dev: TextTable, args: argparse.Namespace, seed: int, out: Path) -> dict[str, float]:
    import transformers
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = load_tokenizer(ENCODER)
    torch.manual_seed(seed)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_encoder(ENCODER), num_labels=2, local_files_only=True
        )
    encoded = tokenizer(train.texts, truncation=True, max_length=MAX_LENGTH)
    labels = label_ids(train)
    dataset = [{k: encoded[k][i] for k in encoded} | {"labels": labels[i]} for i in range(len(labels))]
    steps_per_epoch = -(-len(dataset) // BATCH_SIZE)
    training_args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=BATCH_SIZE,
        num_train_epochs=1,
        learning_rate=args.lr,
        weight_decay=WEIGHT_DECAY,
        lr_scheduler_type="linear",
        warmup_steps=int(WARMUP_RATIO * steps_per_epoch),  # the same integer as tujie's
        max_grad_norm=args.max_grad_norm,
        train_sampling_strategy="random",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
    )
    timer = hf_timer()
    collator = CountingCollator(DataCollatorWithPadding(tokenizer))
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator, callbacks=[timer])
    start = time.perf_counter()
    trainer.train()
    fit_wall = time.perf_counter() - start
    return {
        **timer.clock.timings(),
        "fit_s": fit_wall,
        "padded_tokens": collator.padded_tokens,
        "accuracy": dev_accuracy(model, tokenizer, dev),
        "optim": str(training_args.optim),
        "version": transformers.__version__,
    }


# ---- main ---------------------------------------------------------------------------------------------------------
def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    torch.set_num_threads(THREADS)
    rounds = args.rounds or (2 if args.quick else 3)
    size = args.train_size or (480 if args.quick else 3000)
    folder = data_dir() / "sst2"
    results: dict[str, list[dict[str, Any]]] = {"tujie": [], "hf": []}
    with tempfile.TemporaryDirectory() as tmp:
        train_path = sample_rows(folder / "train.tsv", Path(tmp) / "train-sample.tsv", size, seed=0)
        train = read_texts(train_path, text_column="sentence", label_column="label")
        dev = read_texts(folder / "dev.tsv", text_column="sentence", label_column="label")
        for r in range(rounds):
            seed = args.seed + r
            results["tujie"].append(run_tujie(train, dev, args, seed))
            results["hf"].append(run_hf(train, dev, args, seed, Path(tmp) / f"hf-{r}"))
            t, h = results["tujie"][-1], results["hf"][-1]
            print(
                f"round {r} (seed {seed}): tujie {t['epoch_s']:.1f} s, acc {100 * t['accuracy']:.2f} % | "
                f"HF {h['epoch_s']:.1f} s, acc {100 * h['accuracy']:.2f} % | ratio {t['epoch_s'] / h['epoch_s']:.3f}",
                flush=True,
            )

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side])

    def mean(side: str, key: str) -> float:
        return statistics.fmean(r[key] for r in results[side])

    ratio = statistics.median(t["epoch_s"] / h["epoch_s"] for t, h in zip(results["tujie"], results["hf"], strict=True))
    hf = results["hf"][0]
    anchor = ANCHOR.format(version=hf["version"])
    what = f"{size} SST-2 sentences, 1 epoch, batch {BATCH_SIZE}, max length {MAX_LENGTH}, [CLS], random batches, fp32"
    rows = [Row("tujie TextClassifier.fit / HF Trainer", "epoch wall time ratio", ratio, 1.0, anchor, GOAL, False, "×")]
    for metric, key, scale, unit, higher, stat in (
        ("epoch wall time", "epoch_s", 1, "s", False, median),
        ("median step time", "step_s", 1e3, "ms", False, median),
        ("fit()/train() wall time (setup included)", "fit_s", 1, "s", False, median),
        ("SST-2 dev accuracy", "accuracy", 100, "%", True, mean),
        ("padded tokens per epoch", "padded_tokens", 1, "tokens", False, mean),
    ):
        for side, name in (("tujie", "tujie TextClassifier.fit"), ("hf", "HF Trainer")):
            rows.append(Row(name, metric, scale * stat(side, key), None, "", None, higher, unit))
    print(
        f"\n{rounds} alternating rounds; {what}; AdamW lr {args.lr:g}, weight decay {WEIGHT_DECAY}, linear schedule "
        f"with {int(WARMUP_RATIO * -(-size // BATCH_SIZE))} warm-up steps, max grad norm {args.max_grad_norm:g}; "
        f"HF optim {hf['optim']}; intra-op threads during training: tujie {results['tujie'][0]['threads']}, "
        f"HF {hf['threads']}; steps per epoch: tujie {results['tujie'][0]['steps']}, HF {hf['steps']}"
    )
    for side in ("tujie", "hf"):
        accs = ", ".join(f"{100 * r['accuracy']:.2f}" for r in results[side])
        times = ", ".join(f"{r['epoch_s']:.1f}" for r in results[side])
        print(f"{side}: epoch s [{times}], dev accuracy % [{accs}]")
    report("nlp_vs_hf_trainer: MiniLM-L6 on SST-2, tujie vs the Hugging Face Trainer", args.quick, rows, args.json)


if __name__ == "__main__":
    main()
